//! The consumer runtime every read model, saga and sink runs on. A `Handler` belongs to a
//! consumer group and receives decoded `Envelope`s; the runtime (`runtime.rs`) gives it a
//! store transaction in which the inbox record, the handler's writes and the events it emits
//! commit together, before the log offset. Failures are retried with backoff, then
//! dead-lettered (`dlq.rs`) so the partition keeps flowing; groups can be rewound
//! (`seeks.rs`).

pub mod admin;
pub mod dlq;
pub mod inbox;
pub mod lag;
pub mod registry;
pub mod runtime;
pub mod seeks;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::events::{self, EventMeta};
use crate::outbox::{Headers, NewEvent};
use crate::schema::SchemaCatalog;
use crate::store::{StoreError, Tx};

pub use registry::{projection_handlers, saga_handlers};

/// Why a group cannot go on (`consumer_blocked{group,reason}`, /status): the schema registry
/// does not answer, so its records cannot be decoded.
pub const BLOCKED_REGISTRY: &str = "registry_unavailable";
pub const BLOCKED_REASONS: [&str; 1] = [BLOCKED_REGISTRY];

/// The groups of this process that are blocked now, with the reason.
pub fn blocked_groups(metrics: &crate::telemetry::Metrics) -> Vec<(String, &'static str)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for family in metrics.consumer_blocked.collect() {
        for m in family.get_metric() {
            if m.get_gauge().value() <= 0.0 {
                continue;
            }
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            let reason =
                label("reason").and_then(|r| BLOCKED_REASONS.iter().copied().find(|x| *x == r));
            if let (Some(g), Some(r)) = (label("group"), reason) {
                out.push((g, r));
            }
        }
    }
    out
}

/// A decoded event as a handler sees it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The event id (`ce_id`; `topic/partition/offset` for records without one).
    pub id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// `ce_type`, e.g. `identity.login.events`.
    pub event_type: String,
    /// Unix microseconds (`ce_time`, else the log time).
    pub time: i64,
    pub headers: Headers,
    /// The Avro payload as JSON.
    pub payload: Value,
}

impl Envelope {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The payload as a typed struct.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            HandlerError::Reject(format!(
                "payload does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.payload.get(name).and_then(Value::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Transient: retried with backoff, then dead-lettered.
    #[error("{0}")]
    Retry(String),
    /// Permanent: dead-lettered at once.
    #[error("{0}")]
    Reject(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl HandlerError {
    /// A short kind for spans and metrics (never the message).
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Retry(_) => "retry",
            HandlerError::Reject(_) => "reject",
            HandlerError::Store(_) => "store",
        }
    }
}

#[async_trait]
pub trait Handler: Send + Sync {
    /// The consumer group (also the scope of the inbox).
    fn group(&self) -> &str;

    fn topics(&self) -> Vec<String>;

    /// Applies the event's effects inside `tx`; emits follow-up events through `out`.
    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError>;

    /// The set-based form of this handler, when it has one (projections whose effects are
    /// rows): the runtime then applies every fresh event of a batch with one call to it instead
    /// of one `handle` per event. Sagas and sinks, which emit events, have none.
    fn batch(&self) -> Option<&dyn BatchApply> {
        None
    }

    /// The most events one transaction of this group applies, when fewer than
    /// `consumers.batch_size`: a handler whose events are heavy (a telemetry batch holds
    /// thousands of samples) keeps each transaction short, since on SQLite every other writer,
    /// the gateway's group commit included, waits for it.
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// Empties the read model for a rebuild (`replay --rebuild`). Returns false when the
    /// handler's effects cannot be rebuilt from the log (sagas, sinks).
    async fn reset(&self, _tx: &mut Tx) -> Result<bool, HandlerError> {
        Ok(false)
    }
}

/// Applies a run of events at once: the fresh events of a batch (in log order, the inbox
/// already claimed for them) become a few multi-row statements (`crate::store::bulk`) in the
/// batch's transaction. It cannot emit events. When it fails, the runtime rolls the batch back
/// and applies it again one event at a time through `Handler::handle` (a batch handler's
/// `handle` is `apply_batch` of one event), so the failing event is found, retried and
/// dead-lettered exactly as without batching.
#[async_trait]
pub trait BatchApply: Send + Sync {
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError>;
}

/// Collects the events a handler emits; the runtime appends them to the outbox in the
/// handler's transaction. They continue the cause's trace and correlation.
pub struct Emitter<'a> {
    schemas: &'a SchemaCatalog,
    cause: &'a Envelope,
    group: &'a str,
    /// The handler span's trace context; emitted events name it as their parent.
    traceparent: Option<String>,
    pub(crate) events: Vec<NewEvent>,
}

impl<'a> Emitter<'a> {
    pub fn new(schemas: &'a SchemaCatalog, cause: &'a Envelope, group: &'a str) -> Self {
        Self {
            schemas,
            cause,
            group,
            traceparent: None,
            events: Vec::new(),
        }
    }

    /// Emitted events continue this trace context (the handler's span) instead of a fresh
    /// child of the cause's.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn cause(&self) -> &Envelope {
        self.cause
    }

    /// Validates `payload` against `topic`'s schema and queues it. A payload that does not
    /// fit is a bug in the handler, so it rejects the cause.
    pub fn emit<T: Serialize>(
        &mut self,
        topic: &str,
        key: &str,
        payload: &T,
    ) -> Result<String, HandlerError> {
        let json =
            serde_json::to_value(payload).map_err(|e| HandlerError::Reject(e.to_string()))?;
        self.emit_json(topic, key, &json)
    }

    pub fn emit_json(
        &mut self,
        topic: &str,
        key: &str,
        payload: &Value,
    ) -> Result<String, HandlerError> {
        let mut extra = Headers::new();
        extra.insert("causation_id".into(), self.cause.id.clone());
        let meta = EventMeta {
            source: format!("/consumers/{}", self.group),
            traceparent: self.traceparent.clone().or_else(|| {
                self.cause
                    .header("traceparent")
                    .map(events::child_traceparent)
            }),
            correlation_id: self
                .cause
                .header("correlation_id")
                .map(str::to_string)
                .or_else(|| Some(self.cause.id.clone())),
            idempotency_key: None,
            extra,
        };
        let ev = events::build(self.schemas, topic, key, payload, &meta)
            .map_err(|e| HandlerError::Reject(format!("emitting to {topic}: {e}")))?;
        let id = ev.event_id.clone();
        self.events.push(ev);
        Ok(id)
    }
}

/// Runs the projection handlers (the `consumers` role).
pub async fn run(
    ctx: crate::app::AppContext,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let handlers = projection_handlers(&ctx);
    runtime::run_handlers(ctx, handlers, shutdown).await
}
