//! The event log behind one interface, chosen by `log.url`: `embedded` (the store's outbox
//! table is the log, read by offset) or `kafka://…` (rdkafka; the relay role fills it from the
//! outbox). Consumer groups read through `LogConsumer`; the consumer runtime
//! (`crate::consumers`) is written once against these traits.

pub mod embedded;
pub mod kafka;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::outbox::Headers;
use crate::store::Tx;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("{0}")]
    Config(String),
    #[error("this consumer does not hold the group's lease")]
    NotLeader,
}

impl LogError {
    /// This member lost its group's lease (another member was granted it): whatever it was
    /// writing is refused and rolled back; it must go back to polling.
    pub fn is_fenced(&self) -> bool {
        match self {
            LogError::NotLeader => true,
            LogError::Store(e) => e.is_fenced(),
            _ => false,
        }
    }
}

/// One record as a consumer sees it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Confluent-framed Avro.
    pub value: Vec<u8>,
    pub headers: Headers,
    /// Unix microseconds (the append time).
    pub timestamp: i64,
}

/// Where a consumer group should continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Beginning,
    Offset(i64),
    /// Unix microseconds: the first record at or after this time.
    Time(i64),
}

/// The next offset to read for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Next offset the group will read (its committed position).
    pub committed: i64,
    /// Next offset that will be written.
    pub end: i64,
}

impl PartitionLag {
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

#[async_trait]
pub trait EventLog: Send + Sync {
    /// `embedded` or `kafka`.
    fn name(&self) -> &'static str;

    /// Joins `group` on `topics`. New groups start at the beginning of the log.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn LogConsumer>, LogError>;

    /// Committed and end offsets of `group` on each partition of `topics`.
    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>, LogError>;

    /// Whether the log answers (the broker is reachable).
    async fn ping(&self) -> Result<(), LogError>;
}

#[async_trait]
pub trait LogConsumer: Send {
    /// Up to `max` records, waiting at most `wait` for the first.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// True when offsets live in the store, so they commit in the same transaction as the
    /// effects (`commit_in`); otherwise they are committed after it (`commit`).
    fn offsets_in_store(&self) -> bool;

    async fn commit_in(&mut self, tx: &mut Tx, positions: &[Position]) -> Result<(), LogError>;

    /// Commits the positions of records this member has processed. A failure is reported,
    /// never repaired by leaving and rejoining the group (the records come again, and the
    /// inbox absorbs them).
    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError>;

    /// Commits positions chosen by a replay request, which may lie outside what this member
    /// was assigned (it may not even have joined yet).
    async fn commit_rewind(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.commit(positions).await
    }

    /// The positions `to` means on `topic`, for every partition this member owns.
    async fn resolve(&mut self, topic: &str, to: SeekTo) -> Result<Vec<Position>, LogError>;

    /// Moves this member's read position (after the positions were committed).
    async fn seek(&mut self, positions: &[Position]) -> Result<(), LogError>;

    /// Times this member left its group and joined again (rewinds; never a failed commit),
    /// for `substrate_consumer_rejoins_total`.
    fn rejoins(&self) -> u64 {
        0
    }

    /// Leaves the group cleanly (hands over leases and partitions at once).
    async fn close(&mut self) {}

    /// Whether this member may process now (the embedded log lets one member per group run).
    async fn ensure_active(&mut self) -> Result<bool, LogError> {
        Ok(true)
    }
}

/// Opens the configured log.
pub async fn open(
    cfg: &crate::config::Config,
    store: &crate::store::Store,
    signal: &crate::outbox::OutboxSignal,
) -> Result<Arc<dyn EventLog>, LogError> {
    if cfg.is_embedded_log() {
        Ok(Arc::new(embedded::EmbeddedLog::new(
            store.clone(),
            signal.clone(),
            Duration::from_millis(cfg.log.poll_interval_ms),
            embedded::LeaseSettings {
                ttl: Duration::from_millis(cfg.consumers.lease_ttl_ms.max(1)),
                max_poll_interval: Duration::from_millis(cfg.consumers.max_poll_interval_ms),
            },
        )))
    } else {
        Ok(Arc::new(kafka::KafkaLog::connect(&cfg.log).await?))
    }
}
