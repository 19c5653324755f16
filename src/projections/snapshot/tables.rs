//! Copying a read model's tables to and from JSON, written once for both stores: each table is
//! described by its columns and their kinds, rows become arrays in column order, and an id
//! sequence (e.g. `notifications.id`) is carried along so ids continue where they did.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::Row;

use crate::on_tx;
use crate::store::{StoreError, Tx, dialect, now_micros};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Int,
    OptInt,
    Text,
    OptText,
}

pub struct TableSpec {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
    pub order_by: &'static str,
    /// The column whose id sequence is saved and restored.
    pub serial: Option<&'static str>,
}

use Col::*;

pub const NOTIFICATIONS: &[TableSpec] = &[TableSpec {
    name: "notifications",
    columns: &[
        ("id", Int),
        ("event_id", Text),
        ("user_id", Text),
        ("event_type", Text),
        ("payload", Text),
        ("visibility", Text),
        ("recipient_id", OptText),
        ("event_time", Int),
        ("created_at", Int),
    ],
    order_by: "id",
    serial: Some("id"),
}];

pub const STATS: &[TableSpec] = &[
    TableSpec {
        name: "user_stats",
        columns: &[
            ("user_id", Text),
            ("first_login_at", OptInt),
            ("last_login_at", OptInt),
            ("messages_sent", Int),
            ("first_event_at", Int),
            ("last_event_at", Int),
        ],
        order_by: "user_id",
        serial: None,
    },
    TableSpec {
        name: "user_event_counts",
        columns: &[("user_id", Text), ("event_type", Text), ("count", Int)],
        order_by: "user_id, event_type",
        serial: None,
    },
];

pub const COUNTS: &[TableSpec] = &[TableSpec {
    name: "event_counts",
    columns: &[
        ("topic", Text),
        ("event_type", Text),
        ("minute", Int),
        ("count", Int),
    ],
    order_by: "topic, event_type, minute",
    serial: None,
}];

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Shape(String),
}

impl From<sqlx::Error> for TablesError {
    fn from(e: sqlx::Error) -> Self {
        TablesError::Store(e.into())
    }
}

/// Rows per multi-row INSERT (at most 9 binds each).
const CHUNK: usize = 500;

fn column_list(spec: &TableSpec) -> String {
    spec.columns
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every row of `specs` as `{"tables": {name: [[…], …]}, "sequences": {name: last|null}}`,
/// and the row count.
pub async fn dump(tx: &mut Tx, specs: &[TableSpec]) -> Result<(Value, i64), StoreError> {
    let mut tables = BTreeMap::new();
    let mut sequences = BTreeMap::new();
    let mut count = 0i64;
    for spec in specs {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            column_list(spec),
            spec.name,
            spec.order_by
        );
        let rows: Vec<Value> = on_tx!(tx, c => {
            let raw = sqlx::query(&sql).fetch_all(&mut *c).await?;
            let mut out = Vec::with_capacity(raw.len());
            for r in raw {
                let mut vals = Vec::with_capacity(spec.columns.len());
                for (i, (_, kind)) in spec.columns.iter().enumerate() {
                    vals.push(match kind {
                        Int => json!(r.try_get::<i64, _>(i)?),
                        OptInt => json!(r.try_get::<Option<i64>, _>(i)?),
                        Text => json!(r.try_get::<String, _>(i)?),
                        OptText => json!(r.try_get::<Option<String>, _>(i)?),
                    });
                }
                out.push(Value::Array(vals));
            }
            out
        });
        count += rows.len() as i64;
        tables.insert(spec.name.to_string(), Value::Array(rows));
        if let Some(col) = spec.serial {
            sequences.insert(
                spec.name.to_string(),
                json!(dialect::last_id(tx, spec.name, col).await?),
            );
        }
    }
    Ok((json!({ "tables": tables, "sequences": sequences }), count))
}

fn cell_int(v: &Value, opt: bool) -> Result<Option<i64>, TablesError> {
    match v {
        Value::Null if opt => Ok(None),
        v => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| TablesError::Shape(format!("expected an integer, got {v}"))),
    }
}

fn cell_text(v: &Value, opt: bool) -> Result<Option<String>, TablesError> {
    match v {
        Value::Null if opt => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        v => Err(TablesError::Shape(format!("expected a string, got {v}"))),
    }
}

/// Loads `data` (from `dump`) into the (emptied) tables of `specs`.
pub async fn restore(tx: &mut Tx, specs: &[TableSpec], data: &Value) -> Result<(), TablesError> {
    for spec in specs {
        let rows = data["tables"][spec.name]
            .as_array()
            .ok_or_else(|| TablesError::Shape(format!("no rows for {}", spec.name)))?;
        for chunk in rows.chunks(CHUNK) {
            // Check every cell before building the statement.
            let mut parsed: Vec<Vec<(Option<i64>, Option<String>)>> =
                Vec::with_capacity(chunk.len());
            for row in chunk {
                let cells = row
                    .as_array()
                    .filter(|a| a.len() == spec.columns.len())
                    .ok_or_else(|| TablesError::Shape(format!("bad row in {}", spec.name)))?;
                let mut vals = Vec::with_capacity(cells.len());
                for ((_, kind), v) in spec.columns.iter().zip(cells) {
                    vals.push(match kind {
                        Int => (cell_int(v, false)?, None),
                        OptInt => (cell_int(v, true)?, None),
                        Text => (None, cell_text(v, false)?),
                        OptText => (None, cell_text(v, true)?),
                    });
                }
                parsed.push(vals);
            }
            on_tx!(tx, c => {
                let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO {} ({}) ", spec.name, column_list(spec)));
                qb.push_values(parsed.iter(), |mut b, vals| {
                    for ((_, kind), (i, s)) in spec.columns.iter().zip(vals) {
                        match kind {
                            Int | OptInt => { b.push_bind(*i); }
                            Text | OptText => { b.push_bind(s.clone()); }
                        }
                    }
                });
                qb.build().execute(&mut *c).await?;
            });
        }
        if let Some(col) = spec.serial {
            let last = data["sequences"][spec.name].as_i64();
            dialect::set_last_id(tx, spec.name, col, last).await?;
        }
    }
    Ok(())
}

/// Makes `ids` the group's inbox.
pub async fn replace_inbox(tx: &mut Tx, group: &str, ids: &[String]) -> Result<(), StoreError> {
    crate::consumers::inbox::clear(tx, group).await?;
    let now = now_micros();
    for chunk in ids.chunks(CHUNK) {
        on_tx!(tx, c => {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO inbox (group_name, event_id, processed_at) ");
            qb.push_values(chunk.iter(), |mut b, id| {
                b.push_bind(group).push_bind(id.as_str()).push_bind(now);
            });
            qb.build().execute(&mut *c).await?;
        });
    }
    Ok(())
}
