//! The relay's lane layout, kept in the store (`relay_layout`): how many key-hash lanes the
//! outbox is split into. A row's lane is `outbox.key_hash % lanes`, computed when the relay
//! reads, so every pending row is in exactly one existing lane and all rows of a key are in
//! the same one, whatever `log.relay_lanes` says in each process. The first relay seeds the
//! count from its configuration; after that only `substrate relay set-lanes N` changes it.
//!
//! `set_lanes` is safe while relays run: in one transaction it changes the count and replaces
//! every lane lease by a fence that no relay can claim before the old leases could have
//! expired. Old holders find their leases gone at their next renewal and stop; they had to
//! stop before their own lease expired anyway (`lanes.rs`), so no two relays publish one key
//! under different layouts at the same time. (Per-key order does not even depend on that:
//! see docs/log.md, "Order under failure".)

use crate::on_write;
use crate::outbox::stored_key_hash;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_tx};

/// The owner name of the fence leases `set_lanes` writes.
pub const FENCE_OWNER: &str = "substrate relay set-lanes";

/// The lane count in the store, seeded with `seed` if the store has none yet.
pub async fn current(store: &Store, seed: u32) -> Result<u32, StoreError> {
    let seed = i64::from(seed.max(1));
    let lanes: i64 = on_write!(store, p => {
        sqlx::query("INSERT INTO relay_layout (id, lanes, changed_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(seed)
            .bind(now_micros())
            .execute(p)
            .await?;
        sqlx::query_scalar("SELECT lanes FROM relay_layout WHERE id = 1")
            .fetch_one(p)
            .await?
    });
    Ok(u32::try_from(lanes).unwrap_or(1).max(1))
}

/// The lane count in the store, if one was fixed yet.
pub async fn stored(store: &Store) -> Result<Option<u32>, StoreError> {
    let lanes: Option<i64> = on_read!(store, p => {
        sqlx::query_scalar("SELECT lanes FROM relay_layout WHERE id = 1")
            .fetch_optional(p)
            .await?
    });
    Ok(lanes.map(|n| u32::try_from(n).unwrap_or(1).max(1)))
}

/// What `set_lanes` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LanesChanged {
    pub before: Option<u32>,
    pub after: u32,
    /// Unix micros until which no relay can claim a lane of the new layout.
    pub fenced_until: i64,
}

/// Changes the lane count to `lanes`, fencing every current lease (see the module comment).
pub async fn set_lanes(store: &Store, lanes: u32) -> Result<LanesChanged, StoreError> {
    let lanes = lanes.max(1);
    let ttl = super::lanes::TTL.as_micros() as i64;
    let mut tx = store.begin().await?;
    let before: Option<i64> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT lanes FROM relay_layout WHERE id = 1")
            .fetch_optional(&mut *c)
            .await?
    });
    let expiries: Vec<i64> = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO relay_layout (id, lanes, changed_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET lanes = excluded.lanes, changed_at = excluded.changed_at",
        )
        .bind(i64::from(lanes))
        .bind(now_micros())
        .execute(&mut *c)
        .await?;
        sqlx::query_scalar("DELETE FROM relay_leases RETURNING expires_at")
            .fetch_all(&mut *c)
            .await?
    });
    // Taken after the old leases are gone, so a renewal that slipped in before is covered.
    let fenced_until = expiries.into_iter().fold(now_micros() + ttl, i64::max);
    for lane in 0..i64::from(lanes) {
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO relay_leases (lane, owner, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (lane) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
            )
            .bind(lane)
            .bind(FENCE_OWNER)
            .bind(fenced_until)
            .execute(&mut *c)
            .await?;
        });
    }
    tx.commit().await?;
    Ok(LanesChanged {
        before: before.map(|n| u32::try_from(n).unwrap_or(1)),
        after: lanes,
        fenced_until,
    })
}

/// Gives pending rows written before migration 0008 (or by an older process during a rolling
/// upgrade) their key hash, so they get a lane. Returns how many rows it filled in.
pub async fn fill_key_hashes(store: &Store) -> Result<u64, StoreError> {
    let mut filled = 0u64;
    loop {
        let rows: Vec<(i64, String)> = on_read!(store, p => {
            sqlx::query_as(
                "SELECT id, event_key FROM outbox WHERE published_at IS NULL AND key_hash IS NULL ORDER BY id LIMIT 500",
            )
            .fetch_all(p)
            .await?
        });
        if rows.is_empty() {
            return Ok(filled);
        }
        let mut tx = store.begin().await?;
        for (id, key) in &rows {
            on_tx!(tx, c => {
                sqlx::query("UPDATE outbox SET key_hash = $1 WHERE id = $2")
                    .bind(stored_key_hash(key))
                    .bind(*id)
                    .execute(&mut *c)
                    .await?;
            });
        }
        tx.commit().await?;
        filled += rows.len() as u64;
    }
}
