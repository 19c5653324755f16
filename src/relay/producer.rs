//! The relay's producer behind a small trait, so the publish logic (`publish.rs`) can be tested
//! with a fake. One `Producer` value is one *session*: the records handed to it reach the
//! broker, per partition, as a prefix of the order they were handed over, and once one of them
//! fails nothing handed over after it lands (docs/log.md, "Order under failure"). The Kafka
//! session keeps that promise with librdkafka's idempotent producer, its gap-less guarantee and
//! no local message timeout (`crate::log::kafka::client::producer`); after any failure the relay
//! opens a new session.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _, PurgeConfig};

use crate::config::LogConfig;
use crate::log::LogError;
use crate::log::kafka::client;
use crate::outbox::OutboxRow;

/// The broker's answer for one record.
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send>>;

/// Why a record could not be handed to the producer (known at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    /// It can never be sent with this configuration (larger than `log.max_message_bytes`).
    Never(String),
    /// The producer refused this record (unknown topic or partition, …): it may be its fault.
    Refused(String),
    /// Nothing wrong with the record: try again in a later round (queue full, …).
    Later(String),
    /// The session is out of service: open a new one.
    Broken(String),
}

/// Why a handed-over record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The broker (or the client) refused this record's batch: it may be the record's fault,
    /// or that of another record in the same batch.
    Refused(String),
    /// It failed because the session ended (an earlier failure, a purge, shutdown).
    Collateral(String),
}

impl SendError {
    pub fn reason(&self) -> &str {
        match self {
            SendError::Refused(r) | SendError::Collateral(r) => r,
        }
    }
}

/// One producer session (see the module comment for its promise).
pub trait Producer: Send + Sync {
    /// Hands one outbox row over; `traceparent` is the relay's send span.
    fn enqueue(&self, row: &OutboxRow, traceparent: Option<&str>)
    -> Result<Delivery, EnqueueError>;

    /// Gives up on every record not yet acknowledged: their deliveries fail soon. The session
    /// is not used again.
    fn abandon(&self);

    /// Waits up to `timeout` for queued records (clean shutdown).
    fn flush(&self, _timeout: Duration) {}
}

/// Opens new sessions.
pub type Connect = Box<dyn Fn() -> Result<Box<dyn Producer>, LogError> + Send + Sync>;

/// The Kafka session: an rdkafka `FutureProducer` with the relay's settings.
pub struct KafkaProducer {
    inner: FutureProducer,
}

impl KafkaProducer {
    pub fn open(cfg: &LogConfig) -> Result<Self, LogError> {
        let inner = client::producer(cfg)?
            .create()
            .map_err(client::broker_err)?;
        Ok(Self { inner })
    }

    /// Opens Kafka sessions for `cfg`.
    pub fn connect(cfg: &LogConfig) -> Connect {
        let cfg = cfg.clone();
        Box::new(move || Ok(Box::new(Self::open(&cfg)?) as Box<dyn Producer>))
    }
}

fn headers_of(map: &crate::outbox::Headers, traceparent: Option<&str>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(map.len() + 1);
    for (k, v) in map {
        if k == "traceparent" {
            continue;
        }
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    if let Some(tp) = traceparent.or(map.get("traceparent").map(String::as_str)) {
        h = h.insert(Header {
            key: "traceparent",
            value: Some(tp.as_bytes()),
        });
    }
    h
}

impl Producer for KafkaProducer {
    fn enqueue(
        &self,
        row: &OutboxRow,
        traceparent: Option<&str>,
    ) -> Result<Delivery, EnqueueError> {
        let map = row.header_map();
        let rec = FutureRecord::to(&row.topic)
            .key(&row.event_key)
            .payload(&row.payload)
            .headers(headers_of(&map, traceparent))
            .timestamp(row.created_at / 1000);
        match self.inner.send_result(rec) {
            Ok(fut) => Ok(Box::pin(async move {
                match fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(delivery_error(&e)),
                    // The producer went away with the record (abandoned session).
                    Err(_) => Err(SendError::Collateral("producer closed".into())),
                }
            })),
            Err((e, _)) => Err(enqueue_error(&e)),
        }
    }

    fn abandon(&self) {
        self.inner.purge(PurgeConfig::default().queue().inflight());
    }

    fn flush(&self, timeout: Duration) {
        let _ = self.inner.flush(timeout);
    }
}

/// Sorts a synchronous `produce()` failure.
fn enqueue_error(e: &KafkaError) -> EnqueueError {
    use RDKafkaErrorCode as C;
    let text = e.to_string();
    match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge) => EnqueueError::Never(text),
        Some(C::QueueFull) => EnqueueError::Later(text),
        Some(C::Fatal) => EnqueueError::Broken(text),
        Some(C::UnknownTopic | C::UnknownPartition | C::InvalidMessage | C::InvalidRecord) => {
            EnqueueError::Refused(text)
        }
        _ => EnqueueError::Later(text),
    }
}

/// Sorts a failed delivery report: errors that say the session ended (this record may be
/// innocent) are collateral; anything else is a refusal of the record's batch.
fn delivery_error(e: &KafkaError) -> SendError {
    use RDKafkaErrorCode as C;
    let text = e.to_string();
    match e.rdkafka_error_code() {
        Some(
            C::PurgeQueue
            | C::PurgeInflight
            | C::Fatal
            | C::GaplessGuarantee
            | C::OutOfOrderSequenceNumber
            | C::InvalidProducerEpoch
            | C::UnknownProducerId
            | C::MessageTimedOut,
        ) => SendError::Collateral(text),
        _ => SendError::Refused(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        let e = |c| KafkaError::MessageProduction(c);
        assert!(matches!(
            enqueue_error(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            EnqueueError::Never(_)
        ));
        assert!(matches!(
            enqueue_error(&e(RDKafkaErrorCode::QueueFull)),
            EnqueueError::Later(_)
        ));
        assert!(matches!(
            enqueue_error(&e(RDKafkaErrorCode::Fatal)),
            EnqueueError::Broken(_)
        ));
        assert!(matches!(
            delivery_error(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            SendError::Refused(_)
        ));
        assert!(matches!(
            delivery_error(&e(RDKafkaErrorCode::PurgeQueue)),
            SendError::Collateral(_)
        ));
        assert!(matches!(
            delivery_error(&e(RDKafkaErrorCode::OutOfOrderSequenceNumber)),
            SendError::Collateral(_)
        ));
    }
}
