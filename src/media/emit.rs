//! Emitting from saga steps that have no cause event (timers, detection) and counting saga
//! steps. Events continue the saga's trace (the intent's `traceparent`); metrics are counted
//! after the step's transaction commits, so a rolled-back step is never counted.

use std::sync::Arc;

use serde::Serialize;

use super::MediaError;
use crate::events::{self, EventMeta};
use crate::outbox::{Headers, NewEvent, Outbox};
use crate::schema::SchemaCatalog;
use crate::store::{StoreError, Tx, now_micros};
use crate::telemetry::Metrics;

/// Events one step emits, appended to the outbox in the step's transaction.
pub struct Outgoing<'a> {
    schemas: &'a SchemaCatalog,
    meta: EventMeta,
    pub events: Vec<NewEvent>,
}

impl<'a> Outgoing<'a> {
    pub fn new(
        schemas: &'a SchemaCatalog,
        source: &str,
        traceparent: Option<&str>,
        correlation_id: Option<&str>,
    ) -> Self {
        Self {
            schemas,
            meta: EventMeta {
                source: source.to_string(),
                traceparent: traceparent.map(events::child_traceparent),
                correlation_id: correlation_id.map(str::to_string),
                idempotency_key: None,
                extra: Headers::new(),
            },
            events: Vec::new(),
        }
    }

    pub fn emit<T: Serialize>(
        &mut self,
        topic: &str,
        key: &str,
        payload: &T,
    ) -> Result<(), MediaError> {
        let json = serde_json::to_value(payload).map_err(|e| MediaError::Event(e.to_string()))?;
        let ev = events::build(self.schemas, topic, key, &json, &self.meta)
            .map_err(|e| MediaError::Event(format!("emitting to {topic}: {e}")))?;
        self.events.push(ev);
        Ok(())
    }

    pub async fn append(self, tx: &mut Tx, outbox: &Outbox) -> Result<(), StoreError> {
        let refs: Vec<&NewEvent> = self.events.iter().collect();
        outbox.append(tx, &refs).await
    }
}

/// Counts `saga`'s `step` once `tx` commits.
pub fn step(tx: &mut Tx, metrics: &Arc<Metrics>, saga: &'static str, step: &'static str) {
    let m = metrics.clone();
    tx.after_commit(move || m.saga_steps.with_label_values(&[saga, step]).inc());
}

/// Records `saga`'s end with `outcome` (and counts it as a step) once `tx` commits.
pub fn finished(
    tx: &mut Tx,
    metrics: &Arc<Metrics>,
    saga: &'static str,
    outcome: &'static str,
    started_at_micros: i64,
) {
    step(tx, metrics, saga, outcome);
    let m = metrics.clone();
    let secs = ((now_micros() - started_at_micros).max(0)) as f64 / 1e6;
    tx.after_commit(move || {
        m.saga_duration
            .with_label_values(&[saga, outcome])
            .observe(secs)
    });
}
