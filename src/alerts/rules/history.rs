//! Alert history: every transition of an org's alerts, newest first, filtered by rule and
//! time, paged with an opaque cursor (the last row's id), read from `alert_history`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::on_read;
use crate::store::{Store, StoreError};

/// Which transitions.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub org: String,
    pub rule: Option<String>,
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, inclusive.
    pub to: Option<i64>,
    /// Only rows older than this id (the cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

/// One transition as the API shows it (the event's fields).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(skip)]
    pub row: i64,
    pub id: String,
    pub rule: String,
    pub fingerprint: String,
    pub sequence: i64,
    pub from: String,
    pub to: String,
    /// Unix ms.
    pub at: i64,
    pub value: Option<f64>,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

type Row = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<f64>,
    String,
    String,
    String,
);

fn entry(r: Row) -> Entry {
    Entry {
        row: r.0,
        id: r.1,
        rule: r.2,
        fingerprint: r.3,
        sequence: r.4,
        from: r.5,
        to: r.6,
        at: r.7,
        value: r.8,
        severity: r.9,
        labels: serde_json::from_str(&r.10).unwrap_or_default(),
        annotations: serde_json::from_str(&r.11).unwrap_or_default(),
    }
}

/// One page of transitions, newest first.
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<Entry>, StoreError> {
    let sql = "SELECT id, transition_id, rule, fingerprint, sequence, from_state, to_state, \
               at_ms, value, severity, labels, annotations FROM alert_history \
               WHERE org = $1 AND ($2 = '' OR rule = $2) AND at_ms >= $3 AND at_ms <= $4 \
               AND id < $5 ORDER BY id DESC LIMIT $6";
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(sql)
            .bind(&f.org)
            .bind(f.rule.as_deref().unwrap_or(""))
            .bind(f.from.unwrap_or(i64::MIN))
            .bind(f.to.unwrap_or(i64::MAX))
            .bind(f.before.unwrap_or(i64::MAX))
            .bind(f.limit)
            .fetch_all(p)
            .await?
    });
    Ok(rows.into_iter().map(entry).collect())
}
