//! The durable state of alerts (`alert_state`: one row per pending or firing alert) and the
//! commit of a transition. A transition is ONE transaction: the lease fence is checked (a
//! stale evaluator's write is refused), the state row is written or removed, the alert's
//! sequence number is drawn (`alert_sequences`, never reused, also after a resolve), the
//! history row is inserted and the `internal.alerts.transitions` event appended to the
//! outbox. So a crash anywhere leaves either all of it or none of it, and a restarted
//! evaluator reads exactly the state the events describe: no re-fire, no lost transition.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alerts::event::{self, Transition};
use crate::app::AppContext;
use crate::events::EventMeta;
use crate::outbox::Headers;
use crate::store::lease::Fence;
use crate::store::{Store, StoreError, Tx};
use crate::{on_read, on_tx};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("building the transition event: {0}")]
    Event(String),
}

/// One pending or firing alert, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Active {
    pub fingerprint: String,
    pub org: String,
    pub rule: String,
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub severity: String,
    pub targets: Vec<String>,
    pub public: bool,
    pub value: Option<f64>,
    /// Unix ms: when the condition first held.
    pub active_since: i64,
    /// Unix ms: when it started firing.
    pub fired_at: Option<i64>,
    /// Unix ms: when the condition last held (for `keep_firing_for`).
    pub last_true_at: i64,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    bool,
    Option<f64>,
    i64,
    Option<i64>,
    i64,
);

const COLS: &str = "fingerprint, org, rule, state, labels, annotations, severity, targets, \
                    public, value, active_since, fired_at, last_true_at";

fn from_row(r: Row) -> Active {
    let (fingerprint, org, rule, state, labels, annotations, severity, targets, public) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8);
    Active {
        fingerprint,
        org,
        rule,
        state,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
        severity,
        targets: serde_json::from_str(&targets).unwrap_or_default(),
        public,
        value: r.9,
        active_since: r.10,
        fired_at: r.11,
        last_true_at: r.12,
    }
}

/// Every active alert (`org`: of one org only), oldest first.
pub async fn active(store: &Store, org: Option<&str>) -> Result<Vec<Active>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM alert_state WHERE ($1 = '' OR org = $1) ORDER BY active_since, fingerprint"
    );
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org.unwrap_or("")).fetch_all(p).await?
    });
    Ok(rows.into_iter().map(from_row).collect())
}

/// Firing alerts of public rules (the `/status` page), oldest first.
pub async fn public_firing(store: &Store) -> Result<Vec<Active>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM alert_state WHERE state = 'firing' AND public = $1 \
         ORDER BY fired_at, fingerprint"
    );
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(true).fetch_all(p).await?
    });
    Ok(rows.into_iter().map(from_row).collect())
}

/// One transition of one alert: `alert` is its state after (`to`), or, for `resolved` and
/// `inactive`, its last state (the event carries its labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub from: &'static str,
    pub to: &'static str,
    pub alert: Active,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

async fn write_state(tx: &mut Tx, c: &Change) -> Result<(), StoreError> {
    let a = &c.alert;
    if matches!(c.to, event::RESOLVED | event::INACTIVE) {
        on_tx!(tx, conn => {
            sqlx::query("DELETE FROM alert_state WHERE fingerprint = $1")
                .bind(&a.fingerprint)
                .execute(&mut *conn)
                .await?;
        });
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO alert_state ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (fingerprint) DO UPDATE SET state = excluded.state, labels = excluded.labels, \
         annotations = excluded.annotations, severity = excluded.severity, targets = excluded.targets, \
         public = excluded.public, value = excluded.value, active_since = excluded.active_since, \
         fired_at = excluded.fired_at, last_true_at = excluded.last_true_at"
    );
    on_tx!(tx, conn => {
        sqlx::query(&sql)
            .bind(&a.fingerprint)
            .bind(&a.org)
            .bind(&a.rule)
            .bind(c.to)
            .bind(json(&a.labels))
            .bind(json(&a.annotations))
            .bind(&a.severity)
            .bind(json(&a.targets))
            .bind(a.public)
            .bind(a.value)
            .bind(a.active_since)
            .bind(a.fired_at)
            .bind(a.last_true_at)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// The alert's next sequence number (1, 2, …), kept across resolves.
async fn next_sequence(tx: &mut Tx, fingerprint: &str) -> Result<i64, StoreError> {
    let n: i64 = on_tx!(tx, conn => {
        sqlx::query_scalar(
            "INSERT INTO alert_sequences (fingerprint, last_seq) VALUES ($1, 1) \
             ON CONFLICT (fingerprint) DO UPDATE SET last_seq = alert_sequences.last_seq + 1 \
             RETURNING last_seq",
        )
        .bind(fingerprint)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(n)
}

async fn write_history(tx: &mut Tx, t: &Transition) -> Result<(), StoreError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO alert_history (transition_id, org, rule, fingerprint, sequence, \
             from_state, to_state, at_ms, value, severity, labels, annotations) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&t.id)
        .bind(&t.org)
        .bind(&t.rule)
        .bind(&t.fingerprint)
        .bind(t.sequence)
        .bind(&t.from)
        .bind(&t.to)
        .bind(t.at)
        .bind(t.value)
        .bind(&t.severity)
        .bind(json(&t.labels))
        .bind(json(&t.annotations))
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

fn transition(c: &Change, sequence: i64, at: i64) -> Transition {
    let a = &c.alert;
    let ended = matches!(c.to, event::RESOLVED | event::INACTIVE);
    Transition {
        version: 1,
        id: uuid::Uuid::now_v7().to_string(),
        org: a.org.clone(),
        rule: a.rule.clone(),
        fingerprint: a.fingerprint.clone(),
        sequence,
        from: c.from.to_string(),
        to: c.to.to_string(),
        at,
        active_since: (!ended).then_some(a.active_since),
        value: if ended { None } else { a.value },
        severity: a.severity.clone(),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        targets: a.targets.clone(),
        public: a.public,
    }
}

/// Commits one transition under `fence` (see the module doc); returns its event.
pub async fn commit(
    ctx: &AppContext,
    fence: &Fence,
    c: &Change,
    at: i64,
) -> Result<Transition, StateError> {
    let mut tx = ctx.store.begin().await?;
    fence.check(&mut tx).await?;
    write_state(&mut tx, c).await?;
    let seq = next_sequence(&mut tx, &c.alert.fingerprint).await?;
    let t = transition(c, seq, at);
    write_history(&mut tx, &t).await?;
    let payload = serde_json::to_value(&t).map_err(|e| StateError::Event(e.to_string()))?;
    let meta = EventMeta {
        source: "/alerts/rules".into(),
        traceparent: None,
        correlation_id: Some(t.id.clone()),
        idempotency_key: None,
        extra: Headers::new(),
    };
    let mut ev = crate::events::build(&ctx.schemas, event::TOPIC, &t.key(), &payload, &meta)
        .map_err(|e| StateError::Event(e.to_string()))?;
    // The event's id is the transition's, so history, event and webhook-id agree.
    ev.event_id = t.id.clone();
    ev.headers.insert("ce_id".into(), t.id.clone());
    ctx.outbox.append(&mut tx, &[&ev]).await?;
    tx.commit().await?;
    Ok(t)
}

/// Records that a firing alert's condition still holds (for `keep_firing_for`), fenced.
pub async fn touch(
    ctx: &AppContext,
    fence: &Fence,
    fingerprint: &str,
    at: i64,
    value: Option<f64>,
) -> Result<(), StoreError> {
    let mut tx = ctx.store.begin().await?;
    fence.check(&mut tx).await?;
    on_tx!(tx, conn => {
        sqlx::query("UPDATE alert_state SET last_true_at = $2, value = $3 WHERE fingerprint = $1")
            .bind(fingerprint)
            .bind(at)
            .bind(value)
            .execute(&mut *conn)
            .await?;
    });
    tx.commit().await
}
