//! Where SQLite and PostgreSQL differ, in one place: the database's clock, row locks
//! (`FOR UPDATE SKIP LOCKED`, `FOR SHARE`), advisory locks, `NOTIFY`, isolation levels,
//! transaction-id horizons (ids that commit out of order) and the identity/sequence resets a
//! rebuild or a snapshot restore needs. Everything else is
//! written once with `on_read!`/`on_write!`/`on_tx!`; callers use these helpers instead of
//! matching on the backend themselves.

use super::{Backend, Db, RawTx, Store, StoreError, Tx};
use crate::on_tx;

/// SQL for "now" on the database's clock, in unix microseconds (the unit of every stored
/// time). Leases are measured with it, so instances whose clocks disagree still agree on
/// when a lease lapses. PostgreSQL's `clock_timestamp()` moves during a transaction (unlike
/// `now()`); SQLite's `unixepoch('subsec')` has millisecond precision.
pub fn now_micros(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
        Backend::Sqlite => "CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
    }
}

/// The two-argument scalar maximum (`GREATEST` on PostgreSQL, `MAX` on SQLite) and minimum,
/// as the names of functions.
pub fn greatest_least(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Postgres => ("GREATEST", "LEAST"),
        Backend::Sqlite => ("MAX", "MIN"),
    }
}

/// Suffix of a `SELECT` that claims rows other transactions are not holding (work queues).
/// SQLite has a single writer, so a claim there never meets a locked row.
pub fn skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

/// Suffix of a `SELECT` that keeps the rows it read from being updated until the transaction
/// ends (a fence: no lease can be granted anew between the check and the commit). SQLite
/// write transactions are exclusive already.
pub fn for_share(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR SHARE",
        Backend::Sqlite => "",
    }
}

/// Takes a transaction-level advisory lock on PostgreSQL; nothing on SQLite, whose write
/// transactions are exclusive. (`Tx::advisory_lock` calls this once per key and transaction.)
pub(super) async fn advisory_xact_lock(raw: &mut RawTx, key: i64) -> Result<(), StoreError> {
    if let RawTx::Postgres(t) = raw {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// `NOTIFY channel` when `tx` commits (PostgreSQL, so other processes wake up; SQLite has no
/// such thing, its processes poll), and on PostgreSQL the transaction takes its transaction id now if it has none
/// (`pg_current_xact_id()`, in the same statement: no extra round trip). Called before a
/// transaction draws ids from a sequence that readers follow (the outbox, Kafka mode), so a
/// transaction holding a drawn id is always among the ones `xid_horizon` waits for; left to
/// itself PostgreSQL would draw the first row's id a moment before assigning the transaction
/// id, and a reader's snapshot in that moment would not count the transaction as running.
pub async fn notify_holding_xid(tx: &mut Tx, channel: &str) -> Result<(), StoreError> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, c => {
            sqlx::query("SELECT pg_notify($1, ''), pg_current_xact_id()::text")
                .bind(channel)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(())
}

/// Where PostgreSQL's transactions stand in one snapshot: every transaction id below `xmin`
/// has ended (committed or rolled back), and none at or above `xmax` had been assigned yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidHorizon {
    pub xmin: i64,
    pub xmax: i64,
}

/// The current snapshot's horizon (`pg_current_snapshot()`), for a reader that follows a
/// serial id on PostgreSQL, where ids are drawn in one order and committed in another: a row
/// whose id was drawn by a transaction that had an id below `xmax` here can still appear until
/// a later horizon's `xmin` passes that `xmax`; after that it is visible or never will be.
/// `None` on SQLite: one writer at a time, so ids become visible in the order drawn.
pub async fn xid_horizon(store: &Store) -> Result<Option<XidHorizon>, StoreError> {
    let Db::Postgres(p) = store.db() else {
        return Ok(None);
    };
    // xid8 has no cast to bigint; its text form is the 64-bit (epoch-qualified) number.
    let (xmin, xmax): (i64, i64) = sqlx::query_as(
        "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint \
         FROM pg_current_snapshot() AS s",
    )
    .fetch_one(p)
    .await?;
    Ok(Some(XidHorizon { xmin, xmax }))
}

/// Makes `tx` see one snapshot of the whole database (PostgreSQL's `REPEATABLE READ`; must
/// come before the first query). A SQLite transaction is a snapshot already.
pub async fn repeatable_read(tx: &mut Tx) -> Result<(), StoreError> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, c => {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// Empties `table` and restarts its id sequence, so a rebuild hands out the same ids again.
/// `table` must be a trusted identifier (it is spliced into the SQL).
pub async fn truncate_restart_identity(tx: &mut Tx, table: &str) -> Result<(), StoreError> {
    match tx.backend() {
        Backend::Postgres => on_tx!(tx, c => {
            sqlx::query(&format!("TRUNCATE {table} RESTART IDENTITY")).execute(&mut *c).await?;
        }),
        Backend::Sqlite => on_tx!(tx, c => {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *c).await?;
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1").bind(table).execute(&mut *c).await?;
        }),
    }
    Ok(())
}

/// The last id the sequence of `table.col` handed out (`None`: none yet).
pub async fn last_id(tx: &mut Tx, table: &str, col: &str) -> Result<Option<i64>, StoreError> {
    let v: Option<i64> = match tx.backend() {
        Backend::Postgres => on_tx!(tx, c => {
            sqlx::query_scalar("SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass)")
                .bind(table)
                .bind(col)
                .fetch_one(&mut *c)
                .await?
        }),
        Backend::Sqlite => on_tx!(tx, c => {
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                .bind(table)
                .fetch_optional(&mut *c)
                .await?
        }),
    };
    Ok(v)
}

/// Sets the sequence of `table.col` so the next id is `last + 1` (or the first id when
/// `last` is `None`).
pub async fn set_last_id(
    tx: &mut Tx,
    table: &str,
    col: &str,
    last: Option<i64>,
) -> Result<(), StoreError> {
    match tx.backend() {
        Backend::Postgres => on_tx!(tx, c => {
            sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)")
                .bind(table)
                .bind(col)
                .bind(last.unwrap_or(1))
                .bind(last.is_some())
                .execute(&mut *c)
                .await?;
        }),
        Backend::Sqlite => on_tx!(tx, c => {
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1").bind(table).execute(&mut *c).await?;
            if let Some(v) = last {
                sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                    .bind(table)
                    .bind(v)
                    .execute(&mut *c)
                    .await?;
            }
        }),
    }
    Ok(())
}
