//! Lane leases. The outbox is split into `log.relay_lanes` lanes by key hash; each lane is
//! leased by one relay instance at a time (a `relay_leases` row with an expiry), so every key
//! is published by one instance, in outbox order. Live instances (`relay_members`) split the
//! lanes evenly: an instance holding more than its share hands the rest back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::on_write;
use crate::store::{Store, StoreError, now_micros};

/// A lease lasts this long without renewal.
pub const TTL: Duration = Duration::from_secs(10);
/// Leases are renewed this often.
pub const RENEW: Duration = Duration::from_secs(2);
/// An instance stops publishing this long before its lease could expire, so the next holder
/// never overlaps with it.
const MARGIN: Duration = Duration::from_secs(4);

pub struct Lanes {
    store: Store,
    owner: String,
    lanes: u32,
    held: BTreeSet<i64>,
    valid_until: Option<Instant>,
}

impl Lanes {
    pub fn new(store: Store, lanes: u32) -> Self {
        Self {
            store,
            owner: uuid::Uuid::new_v4().to_string(),
            lanes: lanes.max(1),
            held: BTreeSet::new(),
            valid_until: None,
        }
    }

    /// The lanes this instance may publish now (empty when its leases may have lapsed).
    pub fn held(&self) -> Vec<i64> {
        match self.valid_until {
            Some(t) if Instant::now() < t => self.held.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Announces this instance, renews its leases, hands back lanes above its share and
    /// claims free or expired lanes up to it.
    pub async fn refresh(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let now = now_micros();
        let until = now + TTL.as_micros() as i64;
        let owner = self.owner.clone();
        let members: i64 = on_write!(self.store, p => {
            sqlx::query(
                "INSERT INTO relay_members (owner, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(&owner)
            .bind(until)
            .execute(p)
            .await?;
            sqlx::query("DELETE FROM relay_members WHERE expires_at < $1")
                .bind(now)
                .execute(p)
                .await?;
            sqlx::query_scalar("SELECT COUNT(*) FROM relay_members")
                .fetch_one(p)
                .await?
        });
        let share = (i64::from(self.lanes) + members.max(1) - 1) / members.max(1);
        let renewed: Vec<i64> = on_write!(self.store, p => {
            sqlx::query_scalar(
                "UPDATE relay_leases SET expires_at = $1 WHERE owner = $2 AND expires_at >= $3 RETURNING lane",
            )
            .bind(until)
            .bind(&owner)
            .bind(now)
            .fetch_all(p)
            .await?
        });
        let mut held: BTreeSet<i64> = renewed.into_iter().collect();
        while held.len() as i64 > share {
            let Some(lane) = held.pop_last() else { break };
            on_write!(self.store, p => {
                sqlx::query("DELETE FROM relay_leases WHERE lane = $1 AND owner = $2")
                    .bind(lane)
                    .bind(&owner)
                    .execute(p)
                    .await?;
            });
        }
        // Start the search at a point of our own, so instances do not race for the same lanes.
        let start = (crate::outbox::key_hash(&owner) % u64::from(self.lanes)) as i64;
        let lanes = i64::from(self.lanes);
        for i in 0..lanes {
            if held.len() as i64 >= share {
                break;
            }
            let lane = (start + i) % lanes;
            if held.contains(&lane) {
                continue;
            }
            let n = on_write!(self.store, p => {
                sqlx::query(
                    "INSERT INTO relay_leases (lane, owner, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (lane) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                     WHERE relay_leases.expires_at < $4",
                )
                .bind(lane)
                .bind(&owner)
                .bind(until)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
            });
            if n > 0 {
                held.insert(lane);
            }
        }
        self.held = held;
        self.valid_until = Some(started + TTL - MARGIN);
        Ok(())
    }

    /// Forgets the leases locally (after a failed renewal: they may lapse any moment).
    pub fn drop_local(&mut self) {
        self.held.clear();
        self.valid_until = None;
    }

    /// Hands every lease back at once (clean shutdown).
    pub async fn release(&mut self) {
        self.drop_local();
        let owner = self.owner.clone();
        for sql in [
            "DELETE FROM relay_leases WHERE owner = $1",
            "DELETE FROM relay_members WHERE owner = $1",
        ] {
            let r = on_write!(self.store, p => {
                sqlx::query(sql).bind(&owner).execute(p).await.map(|_| ())
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "releasing relay leases failed");
            }
        }
    }
}
