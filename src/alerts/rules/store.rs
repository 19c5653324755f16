//! The `alert_rules` table: rules per org with where they came from (`api`, `file`,
//! `builtin`). The rule itself is kept as its JSON, the same shape the API takes, so what an
//! admin stored reads back unchanged.

use super::model::{Rule, Source};
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_tx};

/// A stored rule.
#[derive(Debug, Clone)]
pub struct Stored {
    pub org: String,
    pub rule: Rule,
    pub source: Source,
    pub created_at: i64,
    pub updated_at: i64,
}

type Row = (String, String, String, String, i64, i64);

fn from_row((org, _name, source, spec, created_at, updated_at): Row) -> Option<Stored> {
    match serde_json::from_str::<Rule>(&spec) {
        Ok(rule) => Some(Stored {
            org,
            rule,
            source: Source::parse(&source),
            created_at,
            updated_at,
        }),
        Err(e) => {
            // Only this code writes the column; a row it cannot read is skipped, not fatal.
            tracing::error!(org, error = %e, "an alert rule row does not parse; skipped");
            None
        }
    }
}

const COLS: &str = "org, name, source, spec, created_at, updated_at";

/// The rules of `org`, by name.
pub async fn list(store: &Store, org: &str) -> Result<Vec<Stored>, StoreError> {
    let sql = format!("SELECT {COLS} FROM alert_rules WHERE org = $1 ORDER BY name");
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org).fetch_all(p).await?
    });
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Every org's rules (the evaluator).
pub async fn all(store: &Store) -> Result<Vec<Stored>, StoreError> {
    let sql = format!("SELECT {COLS} FROM alert_rules ORDER BY org, name");
    let rows: Vec<Row> = on_read!(store, p => { sqlx::query_as(&sql).fetch_all(p).await? });
    Ok(rows.into_iter().filter_map(from_row).collect())
}

pub async fn get(store: &Store, org: &str, name: &str) -> Result<Option<Stored>, StoreError> {
    let sql = format!("SELECT {COLS} FROM alert_rules WHERE org = $1 AND name = $2");
    let row: Option<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org).bind(name).fetch_optional(p).await?
    });
    Ok(row.and_then(from_row))
}

fn spec(rule: &Rule) -> Result<String, StoreError> {
    serde_json::to_string(rule).map_err(|e| StoreError::Data(e.to_string()))
}

/// What an insert found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    Duplicate,
    /// The org has `max` rules already.
    Full(usize),
}

/// Adds an API rule unless the name is taken or the org is at `max` rules.
pub async fn insert(
    store: &Store,
    org: &str,
    rule: &Rule,
    max: usize,
) -> Result<Inserted, StoreError> {
    let spec = spec(rule)?;
    let now = now_micros();
    let mut tx = store.begin().await?;
    let n: i64 = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT COUNT(*) FROM alert_rules WHERE org = $1")
            .bind(org)
            .fetch_one(&mut *c)
            .await?
    });
    if n as usize >= max {
        return Ok(Inserted::Full(max));
    }
    let done: u64 = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO alert_rules (org, name, source, spec, created_at, updated_at) \
             VALUES ($1, $2, 'api', $3, $4, $4) ON CONFLICT (org, name) DO NOTHING",
        )
        .bind(org)
        .bind(&rule.alert)
        .bind(&spec)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(if done == 1 {
        Inserted::Created
    } else {
        Inserted::Duplicate
    })
}

/// Replaces an API rule's definition; false when no API rule of that name exists.
pub async fn update(store: &Store, org: &str, rule: &Rule) -> Result<bool, StoreError> {
    let spec = spec(rule)?;
    let mut tx = store.begin().await?;
    let n: u64 = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE alert_rules SET spec = $3, updated_at = $4 \
             WHERE org = $1 AND name = $2 AND source = 'api'",
        )
        .bind(org)
        .bind(&rule.alert)
        .bind(&spec)
        .bind(now_micros())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(n == 1)
}

/// Deletes an API rule; false when no API rule of that name exists. Its active alerts are
/// resolved by the evaluator's next round.
pub async fn delete(store: &Store, org: &str, name: &str) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let n: u64 = on_tx!(tx, c => {
        sqlx::query("DELETE FROM alert_rules WHERE org = $1 AND name = $2 AND source = 'api'")
            .bind(org)
            .bind(name)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    tx.commit().await?;
    Ok(n == 1)
}

/// Makes `org`'s rules from `source` exactly `rules` (the rules file, the built-in rules):
/// upserts them and deletes that source's rules no longer listed, in one transaction.
/// An API rule of the same name is replaced: the file is the operator's word.
pub async fn sync(
    store: &Store,
    org: &str,
    source: Source,
    rules: &[Rule],
) -> Result<(), StoreError> {
    let now = now_micros();
    let specs: Vec<String> = rules.iter().map(spec).collect::<Result<_, _>>()?;
    let mut tx = store.begin().await?;
    let existing: Vec<String> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT name FROM alert_rules WHERE org = $1 AND source = $2")
            .bind(org)
            .bind(source.as_str())
            .fetch_all(&mut *c)
            .await?
    });
    for name in existing
        .iter()
        .filter(|n| !rules.iter().any(|r| &r.alert == *n))
    {
        on_tx!(tx, c => {
            sqlx::query("DELETE FROM alert_rules WHERE org = $1 AND name = $2")
                .bind(org)
                .bind(name)
                .execute(&mut *c)
                .await?;
        });
    }
    for (rule, spec) in rules.iter().zip(&specs) {
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO alert_rules (org, name, source, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (org, name) DO UPDATE SET \
                 source = excluded.source, spec = excluded.spec, updated_at = excluded.updated_at",
            )
            .bind(org)
            .bind(&rule.alert)
            .bind(source.as_str())
            .bind(spec)
            .bind(now)
            .execute(&mut *c)
            .await?;
        });
    }
    tx.commit().await
}
