//! The transactional outbox. Every accepted or emitted event is a row here, written in the
//! same transaction as whatever caused it. In embedded mode the table *is* the log (its id is
//! the offset); with Kafka the relay publishes pending rows and marks them.

pub mod appender;
pub mod signal;

use std::collections::BTreeMap;

use sqlx::Row;

use crate::store::bulk::{self, Column};
use crate::store::{StoreError, Tx, dialect};

pub use appender::{AppendError, AppendOutcome, AppendRequest, Appender, Guard};
pub use signal::OutboxSignal;

/// String headers carried with an event (CloudEvents `ce_*`, `traceparent`, …).
pub type Headers = BTreeMap<String, String>;

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub schema_id: i64,
    /// Confluent-framed Avro.
    pub payload: Vec<u8>,
    pub headers: Headers,
    /// Unix microseconds.
    pub created_at: i64,
}

/// A stored outbox row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub topic: String,
    pub event_key: String,
    pub event_type: String,
    pub schema_id: i64,
    pub payload: Vec<u8>,
    pub headers: String,
    pub lane: i64,
    pub created_at: i64,
    pub published_at: Option<i64>,
    /// The headers the relay sends: the stored ones parsed once, with its `relay_lease` stamp
    /// (`crate::relay::lanes::Lanes::stamp`), so a relayed row's JSON is parsed once, not once
    /// per use. Not a column.
    #[sqlx(skip)]
    pub send_headers: Option<Headers>,
}

impl OutboxRow {
    pub fn headers(&self) -> Headers {
        serde_json::from_str(&self.headers).unwrap_or_default()
    }

    /// The headers to send: `send_headers` when the relay stamped the row, else the stored
    /// ones.
    pub fn header_map(&self) -> std::borrow::Cow<'_, Headers> {
        match &self.send_headers {
            Some(h) => std::borrow::Cow::Borrowed(h),
            None => std::borrow::Cow::Owned(self.headers()),
        }
    }
}

/// The columns of `OutboxRow`, for SELECTs.
pub const COLUMNS: &str = "id, event_id, topic, event_key, event_type, schema_id, payload, headers, lane, created_at, published_at";

/// Stable FNV-1a hash of a key, so every process maps a key to the same lane.
pub fn key_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The key hash an outbox row stores (`outbox.key_hash`, never negative): the relay's lane of
/// a row is `key_hash % lanes`, with the lane count kept in the store (`crate::relay::layout`).
pub fn stored_key_hash(key: &str) -> i64 {
    (key_hash(key) >> 1) as i64
}

/// How rows are appended: the lane count, whether rows count as published at once
/// (embedded log), and the wake-up signal.
#[derive(Clone)]
pub struct Outbox {
    pub lanes: u32,
    /// Embedded log: a committed row is already "in the log".
    pub embedded_log: bool,
    pub signal: OutboxSignal,
}

/// PostgreSQL channel that announces new outbox rows to other processes.
pub const PG_CHANNEL: &str = "substrate_outbox";

/// Lock key that serialises appends when the outbox is the log on PostgreSQL.
const ORDER_LOCK: i64 = 72_530_001;

impl Outbox {
    pub fn new(lanes: u32, embedded_log: bool) -> Self {
        Self {
            lanes: lanes.max(1),
            embedded_log,
            signal: OutboxSignal::new(),
        }
    }

    pub fn lane_of(&self, key: &str) -> i64 {
        (key_hash(key) % u64::from(self.lanes)) as i64
    }

    /// Appends `events` inside `tx`; wakes the relay, consumers and streams once `tx`
    /// commits (in this process directly, in others through NOTIFY on PostgreSQL).
    pub async fn append(&self, tx: &mut Tx, events: &[&NewEvent]) -> Result<(), StoreError> {
        let headers: Vec<String> = events.iter().map(|e| headers_json(&e.headers)).collect();
        let rows: Vec<(&NewEvent, &str)> = events
            .iter()
            .zip(&headers)
            .map(|(e, h)| (*e, h.as_str()))
            .collect();
        self.append_rows(tx, &rows).await
    }

    /// `append` with each event's headers already serialized (`headers_json`), so group
    /// commit's writer does not spend its serial time on it.
    pub async fn append_rows(
        &self,
        tx: &mut Tx,
        rows: &[(&NewEvent, &str)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.embedded_log {
            // With the outbox as the log, readers go by id: ids must become visible in
            // order, so appenders take turns (ids are drawn after the lock; PostgreSQL only,
            // SQLite has a single writer).
            tx.advisory_lock(ORDER_LOCK).await?;
        }
        // Announced before the insert (NOTIFY is sent at commit either way), in a statement
        // that also gives the transaction its id before it draws row ids: otherwise (Kafka
        // mode, where appends commit out of id order) a reader's horizon could miss a
        // transaction that holds a drawn id (`dialect::notify_holding_xid`, the live tail's
        // gap filling: `crate::telemetry::tail::gaps`).
        dialect::notify_holding_xid(tx, PG_CHANNEL).await?;
        // Column by column: one statement on PostgreSQL whatever the row count (`bulk`).
        let col = |f: fn(&NewEvent) -> &str| Column::Text(rows.iter().map(|(e, _)| f(e)).collect());
        let columns = [
            ("event_id", col(|e| &e.event_id)),
            ("topic", col(|e| &e.topic)),
            ("event_key", col(|e| &e.key)),
            ("event_type", col(|e| &e.event_type)),
            (
                "schema_id",
                Column::BigInt(rows.iter().map(|(e, _)| e.schema_id).collect()),
            ),
            (
                "payload",
                Column::Bytes(rows.iter().map(|(e, _)| e.payload.as_slice()).collect()),
            ),
            (
                "headers",
                Column::Text(rows.iter().map(|(_, h)| *h).collect()),
            ),
            (
                "lane",
                Column::BigInt(rows.iter().map(|(e, _)| self.lane_of(&e.key)).collect()),
            ),
            (
                "key_hash",
                Column::BigInt(rows.iter().map(|(e, _)| stored_key_hash(&e.key)).collect()),
            ),
            (
                "created_at",
                Column::BigInt(rows.iter().map(|(e, _)| e.created_at).collect()),
            ),
            (
                "published_at",
                Column::OptBigInt(
                    rows.iter()
                        .map(|(e, _)| self.embedded_log.then_some(e.created_at))
                        .collect(),
                ),
            ),
        ];
        bulk::insert_columns(tx, "outbox", &columns).await?;
        let signal = self.signal.clone();
        tx.after_commit(move || signal.notify());
        Ok(())
    }
}

/// The `headers` column: the event's headers as a JSON object.
pub fn headers_json(h: &Headers) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| "{}".into())
}

/// Outbox rows not yet acknowledged by the broker, and the age of the oldest (seconds). Rows
/// held behind a parked row (`crate::relay::parked`) count, but not towards the age: they
/// wait for an operator, and the parked-rows alert says so.
pub async fn backlog(store: &crate::store::Store) -> Result<(i64, f64), StoreError> {
    let sql = format!(
        "SELECT COUNT(*), MIN(CASE WHEN {} THEN created_at END) FROM outbox WHERE published_at IS NULL",
        crate::relay::parked::NOT_HELD
    );
    let (n, oldest): (i64, Option<i64>) = crate::on_read!(store, p => {
        let row = sqlx::query(&sql)
            .fetch_one(p)
            .await?;
        (row.try_get(0)?, row.try_get(1)?)
    });
    let age = oldest
        .map(|t| ((crate::store::now_micros() - t) as f64 / 1e6).max(0.0))
        .unwrap_or(0.0);
    Ok((n, age))
}
