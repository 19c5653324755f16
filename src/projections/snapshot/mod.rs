//! Projection snapshots, for rebuilding a read model without replaying the whole log.
//! A snapshot holds the group's committed log positions (read first), then — in one
//! consistent read — the read model's tables and the group's inbox. Restoring is a replay
//! request (`mode = snapshot`) that the group's running consumer applies between batches:
//! it empties the read model, loads the tables and the inbox, and moves the group to the
//! snapshot's positions, so the tail of the log is applied on top. Events applied after the
//! positions were read but before the tables were are in the snapshot's inbox, so nothing
//! is applied twice. Admin API in `api.rs`.

pub mod api;
pub mod tables;

use serde::Serialize;
use serde_json::Value;

use crate::app::AppContext;
use crate::consumers::seeks::{self, SeekRequest};
use crate::consumers::{Handler, HandlerError, registry};
use crate::log::{LogConsumer, LogError, Position};
use crate::store::{Store, StoreError, dialect, now_micros};
use crate::{on_read, on_tx};
use tables::TableSpec;

/// The `consumer_seeks.mode` of a restore; `position` holds the snapshot id.
pub const SEEK_MODE: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("no consumer group named {0}")]
    UnknownGroup(String),
    #[error("group {0} has no snapshot support")]
    NotSnapshottable(String),
    #[error("no snapshot {0}")]
    NotFound(i64),
    #[error("the read model could not be emptied: {0}")]
    Reset(String),
    #[error("snapshot {0} is unreadable: {1}")]
    Corrupt(i64, String),
}

impl From<sqlx::Error> for SnapshotError {
    fn from(e: sqlx::Error) -> Self {
        SnapshotError::Store(e.into())
    }
}

impl From<HandlerError> for SnapshotError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Store(s) => SnapshotError::Store(s),
            other => SnapshotError::Reset(other.to_string()),
        }
    }
}

/// The tables of each group that can be snapshotted.
pub fn tables_of(group: &str) -> Option<&'static [TableSpec]> {
    match group {
        crate::projections::notifications::GROUP => Some(tables::NOTIFICATIONS),
        crate::projections::stats::GROUP => Some(tables::STATS),
        crate::projections::counts::GROUP => Some(tables::COUNTS),
        _ => None,
    }
}

/// A snapshot without its data (what the API lists).
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub id: i64,
    pub group: String,
    pub created_at: i64,
    pub positions: Vec<PositionJson>,
    pub row_count: i64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PositionJson {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

struct Loaded {
    info: SnapshotInfo,
    inbox: Vec<String>,
    data: Value,
}

fn projection(ctx: &AppContext, group: &str) -> Result<std::sync::Arc<dyn Handler>, SnapshotError> {
    registry::projection_handlers(ctx)
        .into_iter()
        .find(|h| h.group() == group)
        .ok_or_else(|| SnapshotError::UnknownGroup(group.to_string()))
}

/// Takes a snapshot of `group`'s read model.
pub async fn take(ctx: &AppContext, group: &str) -> Result<SnapshotInfo, SnapshotError> {
    let handler = projection(ctx, group)?;
    let specs =
        tables_of(group).ok_or_else(|| SnapshotError::NotSnapshottable(group.to_string()))?;
    // Positions first: the tables read afterwards are at least as far along (effects commit
    // before or with offsets); the inbox covers the difference.
    let positions: Vec<PositionJson> = ctx
        .log
        .lag(group, &handler.topics())
        .await?
        .into_iter()
        .map(|p| PositionJson {
            topic: p.topic,
            partition: p.partition,
            next_offset: p.committed,
        })
        .collect();
    let mut tx = ctx.store.begin().await?;
    dialect::repeatable_read(&mut tx).await?;
    let (data, row_count) = tables::dump(&mut tx, specs).await?;
    let inbox: Vec<String> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT event_id FROM inbox WHERE group_name = $1 ORDER BY event_id")
            .bind(group)
            .fetch_all(&mut *c)
            .await?
    });
    let created_at = now_micros();
    let id: i64 = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO projection_snapshots (group_name, created_at, positions, inbox, data, row_count) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(group)
        .bind(created_at)
        .bind(json_text(&positions))
        .bind(json_text(&inbox))
        .bind(data.to_string())
        .bind(row_count)
        .fetch_one(&mut *c)
        .await?
    });
    tx.commit().await?;
    tracing::info!(group, id, rows = row_count, "snapshot taken");
    Ok(SnapshotInfo {
        id,
        group: group.to_string(),
        created_at,
        positions,
        row_count,
    })
}

/// Plain data as JSON text (serialising it cannot fail).
fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    group_name: String,
    created_at: i64,
    positions: String,
    row_count: i64,
}

impl Row {
    fn info(self) -> Result<SnapshotInfo, SnapshotError> {
        let positions = serde_json::from_str(&self.positions)
            .map_err(|e| SnapshotError::Corrupt(self.id, e.to_string()))?;
        Ok(SnapshotInfo {
            id: self.id,
            group: self.group_name,
            created_at: self.created_at,
            positions,
            row_count: self.row_count,
        })
    }
}

/// Snapshots, newest first (optionally of one group).
pub async fn list(store: &Store, group: Option<&str>) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(
            "SELECT id, group_name, created_at, positions, row_count FROM projection_snapshots \
             WHERE ($1 = '' OR group_name = $1) ORDER BY id DESC",
        )
        .bind(group.unwrap_or(""))
        .fetch_all(p)
        .await?
    });
    rows.into_iter().map(Row::info).collect()
}

async fn load(store: &Store, id: i64) -> Result<Loaded, SnapshotError> {
    let row: Option<(i64, String, i64, String, i64, String, String)> = on_read!(store, p => {
        sqlx::query_as(
            "SELECT id, group_name, created_at, positions, row_count, inbox, data \
             FROM projection_snapshots WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await?
    });
    let (id, group_name, created_at, positions, row_count, inbox, data) =
        row.ok_or(SnapshotError::NotFound(id))?;
    let corrupt = |e: serde_json::Error| SnapshotError::Corrupt(id, e.to_string());
    let info = Row {
        id,
        group_name,
        created_at,
        positions,
        row_count,
    }
    .info()?;
    Ok(Loaded {
        info,
        inbox: serde_json::from_str(&inbox).map_err(corrupt)?,
        data: serde_json::from_str(&data).map_err(corrupt)?,
    })
}

/// Asks `group`'s running consumer to restore snapshot `id`; returns the replay request id.
pub async fn request_restore(ctx: &AppContext, id: i64) -> Result<(String, i64), SnapshotError> {
    let snap = list(&ctx.store, None)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(SnapshotError::NotFound(id))?;
    let handler = projection(ctx, &snap.group)?;
    let topic = handler.topics().into_iter().next().unwrap_or_default();
    let mut tx = ctx.store.begin().await?;
    let req: i64 = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO consumer_seeks (group_name, topic, mode, position, rebuild, requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&snap.group)
        .bind(&topic)
        .bind(SEEK_MODE)
        .bind(id)
        .bind(true)
        .bind(now_micros())
        .fetch_one(&mut *c)
        .await?
    });
    tx.commit().await?;
    Ok((snap.group, req))
}

/// Applies a restore request (called by the consumer runtime, for the group's active member,
/// between batches): empty the read model, load the snapshot's tables and inbox, and move the
/// group to the snapshot's positions — in one transaction with marking the request applied.
pub async fn apply(
    ctx: &AppContext,
    handler: &dyn Handler,
    consumer: &mut dyn LogConsumer,
    req: &SeekRequest,
) -> Result<(), SnapshotError> {
    let group = handler.group();
    let snap = match load(&ctx.store, req.position).await {
        Ok(s) if s.info.group == group => Some(s),
        Ok(_) | Err(SnapshotError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let (Some(snap), Some(specs)) = (snap, tables_of(group)) else {
        // Nothing this group can restore: settle the request so it is not retried forever.
        tracing::error!(
            group,
            snapshot = req.position,
            "restore request names no snapshot of this group; ignored"
        );
        let mut tx = ctx.store.begin().await?;
        seeks::mark_applied(&mut tx, req.id).await?;
        tx.commit().await?;
        return Ok(());
    };
    let positions: Vec<Position> = snap
        .info
        .positions
        .iter()
        .map(|p| Position {
            topic: p.topic.clone(),
            partition: p.partition,
            next_offset: p.next_offset,
        })
        .collect();
    if !consumer.offsets_in_store() {
        consumer.commit(&positions).await?;
    }
    let mut tx = ctx.store.begin().await?;
    if !handler.reset(&mut tx).await? {
        let _ = tx.rollback().await;
        return Err(SnapshotError::Reset(format!("{group} cannot be reset")));
    }
    tables::restore(&mut tx, specs, &snap.data)
        .await
        .map_err(|e| match e {
            tables::TablesError::Store(s) => SnapshotError::Store(s),
            tables::TablesError::Shape(s) => SnapshotError::Corrupt(snap.info.id, s),
        })?;
    tables::replace_inbox(&mut tx, group, &snap.inbox).await?;
    if consumer.offsets_in_store() {
        consumer.commit_in(&mut tx, &positions).await?;
    }
    seeks::mark_applied(&mut tx, req.id).await?;
    tx.commit().await?;
    consumer.seek(&positions).await?;
    tracing::info!(
        group,
        snapshot = snap.info.id,
        rows = snap.info.row_count,
        "snapshot restored; applying the tail of the log"
    );
    Ok(())
}
