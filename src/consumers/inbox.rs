//! The inbox: which events a consumer group has applied. Recording an event id and applying
//! its effects share a transaction, so a redelivered event has no second effect.

use std::collections::HashSet;

use crate::on_tx;
use crate::store::{StoreError, Tx, now_micros};

const CHUNK: usize = 500;

/// Records `ids` for `group`; returns the ones not seen before.
pub async fn claim(tx: &mut Tx, group: &str, ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    let mut fresh = HashSet::with_capacity(ids.len());
    let now = now_micros();
    for chunk in ids.chunks(CHUNK) {
        let got: Vec<String> = on_tx!(tx, c => {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO inbox (group_name, event_id, processed_at) ");
            qb.push_values(chunk.iter(), |mut b, id| {
                b.push_bind(group).push_bind(*id).push_bind(now);
            });
            qb.push(" ON CONFLICT (group_name, event_id) DO NOTHING RETURNING event_id");
            qb.build_query_scalar::<String>().fetch_all(&mut *c).await?
        });
        fresh.extend(got);
    }
    Ok(fresh)
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
