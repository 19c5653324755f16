//! Dead letters. An event that keeps failing (or cannot be decoded) is recorded in
//! `dead_letters` and appended to the dead-letter topic `{topic}.dlq` with error headers
//! (`dlq_reason`, `dlq_attempts`, `dlq_original_topic`, `dlq_original_partition`,
//! `dlq_original_offset`, `dlq_consumer_group`), in the same transaction that moves the
//! group past it. Redrive republishes the original record — same id, key, payload and
//! headers — to its topic, marked for the failed group only (`substrate_redrive_group`), so
//! other groups are not touched and the failed group applies it once.

use serde::Serialize;
use sqlx::Row;

use crate::log::LogRecord;
use crate::outbox::{Headers, NewEvent, Outbox};
use crate::schema::wire;
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

/// Header naming the only group a redriven record is for.
pub const REDRIVE_GROUP: &str = "substrate_redrive_group";
/// Header with the dead-letter id a record was redriven from.
pub const REDRIVE_OF: &str = "substrate_redrive_of";

pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub event_id: String,
    pub group: String,
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Headers,
    pub error: String,
    pub attempts: i64,
    pub failed_at: i64,
    pub redriven_at: Option<i64>,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ids: Vec<i64>,
    pub group: Option<String>,
    pub topic: Option<String>,
    /// Unix micros, inclusive.
    pub since: Option<i64>,
    /// Unix micros, exclusive.
    pub until: Option<i64>,
    /// Also list entries already redriven.
    pub include_redriven: bool,
    pub limit: Option<i64>,
}

/// Records a dead letter and appends it to `{topic}.dlq`, inside `tx`. Idempotent per group
/// and event: when the event already has an open dead letter of this group (a redelivery after
/// the offset commit failed), nothing is written and `false` comes back; a redriven one that
/// failed again is reopened with the new error.
pub async fn write(
    tx: &mut Tx,
    outbox: &Outbox,
    group: &str,
    event_id: &str,
    rec: &LogRecord,
    error: &str,
    attempts: u32,
) -> Result<bool, StoreError> {
    let now = now_micros();
    let mut headers = rec.headers.clone();
    headers.remove(REDRIVE_GROUP);
    headers.remove(REDRIVE_OF);
    let stored_headers = serde_json::to_string(&headers).unwrap_or_else(|_| "{}".into());
    let written = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO dead_letters (event_id, group_name, topic, partition_no, log_offset, event_key, payload, headers, error, attempts, failed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET topic = excluded.topic, partition_no = excluded.partition_no, \
             log_offset = excluded.log_offset, event_key = excluded.event_key, payload = excluded.payload, headers = excluded.headers, \
             error = excluded.error, attempts = excluded.attempts, failed_at = excluded.failed_at, redriven_at = NULL \
             WHERE dead_letters.redriven_at IS NOT NULL",
        )
        .bind(event_id)
        .bind(group)
        .bind(&rec.topic)
        .bind(i64::from(rec.partition))
        .bind(rec.offset)
        .bind(rec.key.as_deref())
        .bind(rec.value.as_slice())
        .bind(&stored_headers)
        .bind(error)
        .bind(i64::from(attempts))
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
            > 0
    });
    if !written {
        return Ok(false);
    }
    let mut dlq_headers = headers;
    dlq_headers.insert("dlq_reason".into(), error.to_string());
    dlq_headers.insert("dlq_attempts".into(), attempts.to_string());
    dlq_headers.insert("dlq_original_topic".into(), rec.topic.clone());
    dlq_headers.insert("dlq_original_partition".into(), rec.partition.to_string());
    dlq_headers.insert("dlq_original_offset".into(), rec.offset.to_string());
    dlq_headers.insert("dlq_consumer_group".into(), group.to_string());
    dlq_headers.insert("dlq_failed_at".into(), crate::events::rfc3339_micros(now));
    let schema_id = wire::unframe(&rec.value)
        .map(|(id, _)| i64::from(id))
        .unwrap_or(0);
    let ev = NewEvent {
        event_id: event_id.to_string(),
        topic: dlq_topic(&rec.topic),
        key: rec.key.clone().unwrap_or_default(),
        event_type: dlq_headers
            .get("ce_type")
            .cloned()
            .unwrap_or_else(|| crate::schema::event_type_of(&rec.topic)),
        schema_id,
        payload: rec.value.clone(),
        headers: dlq_headers,
        created_at: now,
    };
    outbox.append(tx, &[&ev]).await?;
    Ok(true)
}

const SELECT: &str = "SELECT id, event_id, group_name, topic, partition_no, log_offset, event_key, payload, headers, error, attempts, failed_at, redriven_at FROM dead_letters";

fn where_clause(f: &Filter) -> (String, Vec<Bind>) {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    if !f.include_redriven {
        parts.push("redriven_at IS NULL".to_string());
    }
    if !f.ids.is_empty() {
        let mut ps = Vec::new();
        for id in &f.ids {
            binds.push(Bind::I(*id));
            ps.push(format!("${}", binds.len()));
        }
        parts.push(format!("id IN ({})", ps.join(", ")));
    }
    if let Some(g) = &f.group {
        binds.push(Bind::S(g.clone()));
        parts.push(format!("group_name = ${}", binds.len()));
    }
    if let Some(t) = &f.topic {
        binds.push(Bind::S(t.clone()));
        parts.push(format!("topic = ${}", binds.len()));
    }
    if let Some(s) = f.since {
        binds.push(Bind::I(s));
        parts.push(format!("failed_at >= ${}", binds.len()));
    }
    if let Some(u) = f.until {
        binds.push(Bind::I(u));
        parts.push(format!("failed_at < ${}", binds.len()));
    }
    let w = if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    };
    (w, binds)
}

enum Bind {
    I(i64),
    S(String),
}

macro_rules! fetch_dead_letters {
    ($conn:expr, $sql:expr, $binds:expr) => {{
        let mut q = sqlx::query($sql);
        for b in $binds {
            q = match b {
                Bind::I(i) => q.bind(*i),
                Bind::S(s) => q.bind(s.clone()),
            };
        }
        q.fetch_all($conn)
            .await?
            .iter()
            .map(|r| -> Result<DeadLetter, sqlx::Error> {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    group: r.try_get(2)?,
                    topic: r.try_get(3)?,
                    partition: r.try_get(4)?,
                    offset: r.try_get(5)?,
                    key: r.try_get(6)?,
                    payload: r.try_get(7)?,
                    headers: serde_json::from_str(&r.try_get::<String, _>(8)?).unwrap_or_default(),
                    error: r.try_get(9)?,
                    attempts: r.try_get(10)?,
                    failed_at: r.try_get(11)?,
                    redriven_at: r.try_get(12)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    }};
}

pub async fn list(store: &Store, f: &Filter) -> Result<Vec<DeadLetter>, StoreError> {
    let (w, binds) = where_clause(f);
    let sql = format!(
        "{SELECT}{w} ORDER BY id LIMIT {}",
        f.limit.unwrap_or(1000).max(1)
    );
    let rows = on_read!(store, p => { fetch_dead_letters!(p, &sql, &binds) });
    Ok(rows)
}

/// Republishes the matching open dead letters to their topics for their group and marks
/// them redriven, in one transaction. Returns how many were redriven.
pub async fn redrive(
    store: &Store,
    outbox: &Outbox,
    f: &Filter,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut f = f.clone();
    f.include_redriven = false;
    let (w, binds) = where_clause(&f);
    let sql = format!("{SELECT}{w} ORDER BY id");
    let mut tx = store.begin().await?;
    let letters = on_tx!(tx, c => fetch_dead_letters!(&mut *c, &sql, &binds));
    let now = now_micros();
    let mut events = Vec::with_capacity(letters.len());
    for d in &letters {
        let mut headers = d.headers.clone();
        headers.insert(REDRIVE_GROUP.into(), d.group.clone());
        headers.insert(REDRIVE_OF.into(), d.id.to_string());
        let schema_id = wire::unframe(&d.payload)
            .map(|(id, _)| i64::from(id))
            .unwrap_or(0);
        events.push(NewEvent {
            event_id: d.event_id.clone(),
            topic: d.topic.clone(),
            key: d.key.clone().unwrap_or_default(),
            event_type: headers
                .get("ce_type")
                .cloned()
                .unwrap_or_else(|| crate::schema::event_type_of(&d.topic)),
            schema_id,
            payload: d.payload.clone(),
            headers,
            created_at: now,
        });
        on_tx!(tx, c => {
            sqlx::query("UPDATE dead_letters SET redriven_at = $1 WHERE id = $2")
                .bind(now)
                .bind(d.id)
                .execute(&mut *c)
                .await?;
        });
    }
    let refs: Vec<&NewEvent> = events.iter().collect();
    outbox.append(&mut tx, &refs).await?;
    tx.commit().await?;
    Ok(letters)
}

/// Open dead letters per group (the DLQ depth).
pub async fn depth(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    let rows: Vec<(String, i64)> = on_read!(store, p => {
        sqlx::query_as("SELECT group_name, COUNT(*) FROM dead_letters WHERE redriven_at IS NULL GROUP BY group_name")
            .fetch_all(p)
            .await?
    });
    Ok(rows)
}
