//! One relay batch: pending outbox rows of the held lanes, in id order, handed to a producer
//! session (`producer.rs`: key = event key, value = the Confluent-framed payload, headers = the
//! row's CloudEvents headers with the `send` span's `traceparent`), then marked published —
//! only once acknowledged, and never past an earlier failed row of the same key.
//!
//! Per-key order under failure (the argument is in docs/log.md, "Order under failure"): a
//! session lands, per partition, a prefix of what it was handed, so when a row fails, the
//! later rows of its key that were already handed over do not land either; the relay then
//! stops handing over rows of that key, ends the session, and starts the next round with a new
//! one. A row that failed is tried *alone* first in the next round, so a refusal is only held
//! against the row that caused it; a row refused alone `log.relay_park_after` times, or too
//! large to ever send, is parked (`parked.rs`) and its key waits for an operator.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::producer::{Connect, Delivery, EnqueueError, Producer, SendError};
use crate::log::LogError;
use crate::outbox::{COLUMNS, OutboxRow};
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::telemetry::Metrics;
use crate::telemetry::tracing::{context, spans};
use crate::{on_read, on_tx};

/// Pending rows of `held` lanes (of `lanes` in all), oldest first, leaving out the keys that
/// wait behind a parked row and the rows `except` (acknowledged, their marks being written).
pub async fn pending(
    store: &Store,
    lanes: u32,
    held: &[i64],
    limit: usize,
    except: &[i64],
) -> Result<Vec<OutboxRow>, StoreError> {
    let list = held
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // `lane` is the row's lane in the stored layout (`key_hash % lanes`), not the legacy
    // column: the lane leases, marks and `relay_lease` headers go by it.
    let lanes = lanes.max(1);
    let cols = COLUMNS.replace(" lane,", &format!(" key_hash % {lanes} AS lane,"));
    // Exactly these ids, not a range: a row below the batch's highest id may have become
    // visible since (PostgreSQL commits out of id order), and it must go out before the later
    // rows of its key.
    let except = if except.is_empty() {
        String::new()
    } else {
        let ids = except
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        format!(" AND id NOT IN ({ids})")
    };
    let sql = format!(
        "SELECT {cols} FROM outbox WHERE published_at IS NULL AND key_hash % {lanes} IN ({list}){except} AND {} ORDER BY id LIMIT {}",
        super::parked::NOT_HELD,
        limit.max(1)
    );
    let rows = on_read!(store, p => {
        sqlx::query_as::<_, OutboxRow>(&sql).fetch_all(p).await?
    });
    Ok(rows)
}

/// Marks rows acknowledged by the broker, inside `tx` (which the caller has fenced with the
/// rows' lane leases: `Lanes::mark_published`).
pub async fn mark_published(tx: &mut Tx, ids: &[i64]) -> Result<(), StoreError> {
    let now = now_micros();
    for chunk in ids.chunks(1000) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("UPDATE outbox SET published_at = $1 WHERE id IN ({list})");
        on_tx!(tx, c => {
            sqlx::query(&sql).bind(now).execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// The producer session in use; a new one is opened after any failure.
pub struct Session {
    connect: Connect,
    current: Option<Arc<dyn Producer>>,
}

impl Session {
    pub fn new(connect: Connect) -> Self {
        Self {
            connect,
            current: None,
        }
    }

    /// The current session, opened if there is none.
    pub fn get(&mut self) -> Result<Arc<dyn Producer>, LogError> {
        if let Some(p) = &self.current {
            return Ok(p.clone());
        }
        let p: Arc<dyn Producer> = Arc::from((self.connect)()?);
        self.current = Some(p.clone());
        Ok(p)
    }

    /// Ends the session: what it has not delivered is given up, and nothing more is handed to
    /// it. (Closing a producer blocks, so it is dropped off the async threads.)
    pub fn end(&mut self) {
        if let Some(p) = self.current.take() {
            p.abandon();
            tokio::task::spawn_blocking(move || drop(p));
        }
    }

    /// Delivers what is queued (up to `timeout`), then closes (clean shutdown).
    pub async fn close(&mut self, timeout: std::time::Duration) {
        if let Some(p) = self.current.take() {
            let _ = tokio::task::spawn_blocking(move || {
                p.flush(timeout);
                drop(p)
            })
            .await;
        }
    }
}

/// Rows that failed in an earlier round, with how often the broker refused each one when it
/// was sent alone. Kept in memory: a restarted relay starts the counts again.
#[derive(Debug, Default)]
pub struct Suspects(HashMap<i64, u32>);

impl Suspects {
    pub fn contains(&self, id: i64) -> bool {
        self.0.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn suspect(&mut self, id: i64) {
        self.0.entry(id).or_insert(0);
    }

    /// Counts one more refusal of the row sent alone; returns the count.
    fn refused_alone(&mut self, id: i64) -> u32 {
        let n = self.0.entry(id).or_insert(0);
        *n += 1;
        *n
    }

    fn clear(&mut self, id: i64) {
        self.0.remove(&id);
    }

    /// Forgets rows that are no longer pending here (published, parked, or another lane's).
    fn keep_only(&mut self, rows: &[OutboxRow]) {
        let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        self.0.retain(|id, _| ids.contains(id));
    }
}

/// A row to park: it can never be sent, or the broker refused it alone too often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    pub row_id: i64,
    pub error: String,
    pub attempts: u32,
}

/// What a batch achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows to mark published.
    pub acked: Vec<i64>,
    /// Rows to park.
    pub park: Vec<Park>,
    /// Rows that failed (they and their key's later rows are sent again next round).
    pub failed: usize,
}

/// How a batch is sent: the metrics to count into, and when to park.
pub struct Batch<'a> {
    pub metrics: &'a Metrics,
    /// `log.relay_park_after`.
    pub park_after: u32,
    /// Cancelled when the relay must let go (shutdown, lanes lost): what is in flight is
    /// abandoned and nothing more is sent.
    pub stop: &'a CancellationToken,
}

/// A (topic, event key): the unit whose order the relay keeps.
type Key<'r> = (&'r str, &'r str);

fn key_of(row: &OutboxRow) -> Key<'_> {
    (row.topic.as_str(), row.event_key.as_str())
}

/// Waits for a delivery; abandons the session if the relay must stop meanwhile.
async fn settle(d: Delivery, p: &dyn Producer, stop: &CancellationToken) -> Result<(), SendError> {
    tokio::pin!(d);
    tokio::select! {
        r = &mut d => r,
        _ = stop.cancelled() => {
            p.abandon();
            d.await
        }
    }
}

impl Batch<'_> {
    /// Sends `rows` (pending rows in id order) and waits for every acknowledgement.
    pub async fn send(
        &self,
        session: &mut Session,
        suspects: &mut Suspects,
        rows: &[OutboxRow],
    ) -> Outcome {
        let started = Instant::now();
        let mut out = Outcome::default();
        let mut stopped: HashSet<Key<'_>> = HashSet::new();
        suspects.keep_only(rows);
        let probed = self
            .probe_suspects(session, suspects, rows, &mut stopped, &mut out)
            .await;
        let rest: Vec<&OutboxRow> = rows
            .iter()
            .filter(|r| !probed.contains(&r.id) && !stopped.contains(&key_of(r)))
            .collect();
        if !rest.is_empty() && !self.stop.is_cancelled() {
            self.pipeline(session, suspects, &rest, &mut out).await;
        }
        self.metrics
            .relay_publish_seconds
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// Sends each suspect row on its own (the first pending row of its key; nothing else is in
    /// flight), so the broker's answer is about that row alone. Returns the rows tried.
    async fn probe_suspects<'r>(
        &self,
        session: &mut Session,
        suspects: &mut Suspects,
        rows: &'r [OutboxRow],
        stopped: &mut HashSet<Key<'r>>,
        out: &mut Outcome,
    ) -> HashSet<i64> {
        let mut tried = HashSet::new();
        let mut seen: HashSet<Key<'r>> = HashSet::new();
        for row in rows {
            let first_of_key = seen.insert(key_of(row));
            if !first_of_key || !suspects.contains(row.id) || self.stop.is_cancelled() {
                continue;
            }
            tried.insert(row.id);
            if !self.send_alone(session, suspects, row, out).await {
                stopped.insert(key_of(row));
            }
        }
        tried
    }

    /// One row on its own; true when the broker acknowledged it.
    async fn send_alone(
        &self,
        session: &mut Session,
        suspects: &mut Suspects,
        row: &OutboxRow,
        out: &mut Outcome,
    ) -> bool {
        let p = match session.get() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot open a producer");
                out.failed += 1;
                return false;
            }
        };
        let span = send_span(row);
        let tp = context::traceparent(&span);
        let res = match p.enqueue(row, tp.as_deref()) {
            Ok(d) => settle(d, p.as_ref(), self.stop).await,
            Err(e) => {
                self.enqueue_failed(session, suspects, row, e, out);
                return false;
            }
        };
        match res {
            Ok(()) => {
                suspects.clear(row.id);
                self.acked(row, out);
                true
            }
            Err(e) => {
                session.end();
                self.failed(row, &e, &span, out);
                if let SendError::Refused(reason) = &e {
                    let n = suspects.refused_alone(row.id);
                    self.maybe_park(suspects, row, reason, n, out);
                }
                false
            }
        }
    }

    /// The other rows, all handed over before the first acknowledgement is awaited. A key whose
    /// row cannot be handed over stops at once (enqueue order is the broker's order).
    async fn pipeline(
        &self,
        session: &mut Session,
        suspects: &mut Suspects,
        rows: &[&OutboxRow],
        out: &mut Outcome,
    ) {
        let p = match session.get() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot open a producer");
                out.failed += rows.len();
                return;
            }
        };
        let mut stopped: HashSet<Key<'_>> = HashSet::new();
        let mut inflight = Vec::with_capacity(rows.len());
        for row in rows {
            if self.stop.is_cancelled() {
                break;
            }
            if stopped.contains(&key_of(row)) {
                continue;
            }
            let span = send_span(row);
            let tp = context::traceparent(&span);
            match p.enqueue(row, tp.as_deref()) {
                Ok(d) => inflight.push((*row, d, span)),
                Err(e) => {
                    stopped.insert(key_of(row));
                    let broken = matches!(e, EnqueueError::Broken(_));
                    self.enqueue_failed(session, suspects, row, e, out);
                    if broken {
                        break;
                    }
                }
            }
        }
        let mut failed_keys: HashSet<Key<'_>> = HashSet::new();
        for (row, d, span) in inflight {
            let res = settle(d, p.as_ref(), self.stop).await;
            match res {
                Ok(()) if !failed_keys.contains(&key_of(row)) => self.acked(row, out),
                Ok(()) => {
                    // The session broke its promise: this row landed after an earlier row of
                    // its key failed. Not marked, so it is sent again after that row.
                    tracing::error!(topic = %row.topic, event_id = %row.event_id, "relay order breach: a row was acknowledged after an earlier row of its key failed");
                }
                Err(e) => {
                    if failed_keys.is_empty() {
                        // End the session at the first failure: what is still queued or in
                        // flight resolves at once as collateral (librdkafka may otherwise keep
                        // a later row of this partition pending for ever, with no message
                        // timeout). Nothing handed over after the failure can land: the
                        // broker's idempotent sequence check refuses it (docs/log.md).
                        p.abandon();
                    }
                    failed_keys.insert(key_of(row));
                    if matches!(e, SendError::Refused(_)) {
                        suspects.suspect(row.id);
                    }
                    self.failed(row, &e, &span, out);
                }
            }
        }
        if !failed_keys.is_empty() || self.stop.is_cancelled() {
            session.end();
        }
    }

    /// A row the producer would not take: park it, count it, or leave it for the next round.
    fn enqueue_failed(
        &self,
        session: &mut Session,
        suspects: &mut Suspects,
        row: &OutboxRow,
        e: EnqueueError,
        out: &mut Outcome,
    ) {
        tracing::warn!(topic = %row.topic, event_id = %row.event_id, error = ?e, "relay could not enqueue");
        out.failed += 1;
        self.metrics
            .relay_errors
            .with_label_values(&[&row.topic])
            .inc();
        match e {
            EnqueueError::Never(reason) => {
                suspects.clear(row.id);
                out.park.push(Park {
                    row_id: row.id,
                    error: reason,
                    attempts: 1,
                });
            }
            EnqueueError::Refused(reason) => {
                let n = suspects.refused_alone(row.id);
                self.maybe_park(suspects, row, &reason, n, out);
            }
            EnqueueError::Later(_) => {}
            EnqueueError::Broken(_) => session.end(),
        }
    }

    fn maybe_park(
        &self,
        suspects: &mut Suspects,
        row: &OutboxRow,
        reason: &str,
        refusals: u32,
        out: &mut Outcome,
    ) {
        if refusals >= self.park_after.max(1) {
            suspects.clear(row.id);
            out.park.push(Park {
                row_id: row.id,
                error: reason.to_string(),
                attempts: refusals,
            });
        }
    }

    fn acked(&self, row: &OutboxRow, out: &mut Outcome) {
        out.acked.push(row.id);
        self.metrics
            .relay_published
            .with_label_values(&[&row.topic])
            .inc();
    }

    fn failed(&self, row: &OutboxRow, e: &SendError, span: &tracing::Span, out: &mut Outcome) {
        out.failed += 1;
        if let SendError::Refused(reason) = e {
            tracing::warn!(parent: span, topic = %row.topic, event_id = %row.event_id, error = %reason, "broker refused a relayed event");
        }
        spans::fail(span, "broker");
        self.metrics
            .relay_errors
            .with_label_values(&[&row.topic])
            .inc();
    }
}

/// The `send` span of one row, continuing the request's trace.
fn send_span(row: &OutboxRow) -> tracing::Span {
    let headers = row.header_map();
    let parent = headers.get("traceparent").map(String::as_str);
    spans::relay_send("kafka", &row.topic, &row.event_id, parent)
}

#[cfg(test)]
mod tests;
