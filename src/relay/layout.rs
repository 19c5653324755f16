//! The relay's lane layout, kept in the store (`relay_layout`): how many key-hash lanes the
//! outbox is split into. A row's lane is `outbox.key_hash % lanes`, computed when the relay
//! reads, so every pending row is in exactly one existing lane and all rows of a key are in
//! the same one, whatever `log.relay_lanes` says in each process. The first relay seeds the
//! count from its configuration; after that only `substrate relay set-lanes N` changes it.
//!
//! `set_lanes` is safe while relays run: in one transaction it changes the count and gives
//! every lane lease (`store::lease`, `relay.lane.{n}`) to a fence holder with a new epoch,
//! until after the old leases could have expired. Old holders find their leases gone at their
//! next renewal, and their marks are refused by the epoch check; they had to stop before their
//! own lease expired anyway (`lanes.rs`), so no two relays publish one key under different
//! layouts at the same time. (Per-key order does not even depend on that:
//! see docs/log.md, "Order under failure".)

use crate::on_write;
use crate::outbox::stored_key_hash;
use std::time::Duration;

use crate::store::{Store, StoreError, dialect, now_micros};
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

/// Changes the lane count to `lanes`, fencing every lane lease of the old and the new layout
/// (see the module comment): each becomes held by `FENCE_OWNER` with a new epoch until the
/// latest moment any current lease could still be in force (and at least a lease lifetime
/// `ttl` from now, on the database's clock). Old holders' renewals and marks are refused from
/// this commit on (the epochs moved), and no relay can take a lane before the fences lapse.
pub async fn set_lanes(
    store: &Store,
    lanes: u32,
    ttl: Duration,
) -> Result<LanesChanged, StoreError> {
    let lanes = lanes.max(1);
    let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 4);
    let now = dialect::now_micros(store.backend());
    let mut tx = store.begin().await?;
    let before: Option<i64> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT lanes FROM relay_layout WHERE id = 1")
            .fetch_optional(&mut *c)
            .await?
    });
    let latest_sql = format!(
        "SELECT COALESCE(MAX(expires_at), 0), {now} FROM leases WHERE name LIKE 'relay.lane.%'"
    );
    let (latest, db_now): (i64, i64) = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO relay_layout (id, lanes, changed_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET lanes = excluded.lanes, changed_at = excluded.changed_at",
        )
        .bind(i64::from(lanes))
        .bind(now_micros())
        .execute(&mut *c)
        .await?;
        sqlx::query_as(&latest_sql).fetch_one(&mut *c).await?
    });
    let fenced_until = latest.max(db_now + ttl);
    let old = before.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    for lane in 0..i64::from(lanes.max(old)) {
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO leases (name, owner, epoch, expires_at, granted_at) VALUES ($1, $2, 1, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, epoch = leases.epoch + 1, \
                 expires_at = excluded.expires_at, granted_at = excluded.granted_at",
            )
            .bind(super::lanes::lease_name(lane))
            .bind(FENCE_OWNER)
            .bind(fenced_until)
            .bind(db_now)
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
