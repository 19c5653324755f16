//! The inbox: which events a consumer group has applied. Recording an event id and applying
//! its effects share a transaction, so a redelivered event has no second effect.

use std::collections::HashSet;

use crate::on_tx;
use crate::store::bulk::{self, Val};
use crate::store::{StoreError, Tx, now_micros};

/// Records `ids` for `group` with one multi-row statement (per bind limit); returns the ones
/// not seen before.
pub async fn claim(tx: &mut Tx, group: &str, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    let now = now_micros();
    let rows: Vec<Vec<Val>> = ids
        .iter()
        .map(|id| vec![Val::Str(group), Val::Str(id), Val::I64(now)])
        .collect();
    let fresh = bulk::insert(
        tx,
        "INSERT INTO inbox (group_name, event_id, processed_at) ",
        &rows,
        " ON CONFLICT (group_name, event_id) DO NOTHING RETURNING event_id",
    )
    .await?;
    Ok(fresh.into_iter().collect())
}

/// Forgets every event of `group` (a rebuild re-applies them).
pub async fn clear(tx: &mut Tx, group: &str) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query("DELETE FROM inbox WHERE group_name = $1").bind(group).execute(&mut *c).await?;
    });
    Ok(())
}

/// Drops inbox records older than `before` (beyond the log's retention nothing can be
/// redelivered).
pub async fn prune(store: &crate::store::Store, before: i64) -> Result<u64, StoreError> {
    let n = crate::on_write!(store, p => {
        sqlx::query("DELETE FROM inbox WHERE processed_at < $1").bind(before).execute(p).await?.rows_affected()
    });
    Ok(n)
}
