//! Fenced leases: "one holder at a time" for embedded consumer groups, relay lanes and the
//! probe, as rows of the `leases` table (migration 0007). Saga timers keep per-row claims in
//! `saga_timers` but follow the same rules (`media::timers`).
//!
//! - **The database's clock.** A grant lasts `ttl` from the database's "now"
//!   (`dialect::now_micros`), and only the database decides whether a lease has lapsed, so
//!   instances whose clocks disagree still agree on who holds what. Locally a holder counts
//!   its grant valid until `valid_until`: the instant *before* it asked, plus the TTL, which
//!   is never later than the database's expiry.
//! - **Epochs.** Every grant to a new holder increments the lease's `epoch`; a renewal by the
//!   holder keeps it. So "the epoch I was granted is still the lease's epoch" means "nobody
//!   else has held this lease since". Rows are never deleted (a release only expires them),
//!   so epochs only grow.
//! - **Fencing.** Every write made under a lease calls [`Fence::check`] inside its own
//!   transaction. It reads the lease row and locks it against change until the transaction
//!   ends (`FOR SHARE` on PostgreSQL; SQLite's write transactions are exclusive anyway). If
//!   the epoch moved on, the check fails with [`StoreError::Fenced`] and the caller rolls
//!   back: a stale holder's write is refused, never applied. Because the row stays locked, no
//!   new grant can slip in between the check and the commit; the next holder is granted only
//!   after the write committed, and then sees it. An expired lease that nobody else took is
//!   not stale: its holder's writes are still the only ones.
//! - **Renewal versus long work**, decided per user:
//!   - *Embedded consumer groups* keep their lease alive with a [`Keeper`] task, so a handler
//!     that runs longer than the TTL does not lose it; but the keeper renews only while the
//!     member keeps coming back for batches (`consumers.max_poll_interval_ms`, as Kafka's
//!     `max.poll.interval.ms`). A member stuck longer than that lets the lease lapse; another
//!     member takes over, and the stuck member's commit is refused by the fence.
//!   - *Relay lanes* are renewed between batches, and a batch's sends are cut (the producer's
//!     queue purged) at the lease's deadline, a safety margin before it could lapse: a relay
//!     waiting on a stalled broker stops sending before its lanes can be granted elsewhere,
//!     and its late marks are fenced.
//!   - *The probe* renews once per run; its TTL outlasts a whole run by construction, and
//!     its writes (run records, status history) are fenced.
//!   - *Saga timers* are claimed per row for `media.timer_lease_secs`; the step's I/O (safe to
//!     repeat) is not renewed, so a step slower than its claim may be started again by
//!     another instance, but only the holder of the current claim epoch can complete it.
//!
//! Membership (which instances are alive, for relays splitting lanes fairly) uses
//! `lease_members` rows with the same clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, Tx, dialect};
use crate::{on_tx, on_write};

/// One grant as its holder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Increases with every grant to a new holder.
    pub epoch: i64,
    /// When the database lets the lease lapse (unix micros, database clock).
    pub expires_at: i64,
    /// Until when the holder may count on it (local monotonic clock; never after
    /// `expires_at`).
    pub valid_until: Instant,
}

impl Grant {
    /// Whether the holder may still act on it, keeping `margin` in hand.
    pub fn valid_for(&self, margin: Duration) -> bool {
        Instant::now() + margin < self.valid_until
    }
}

fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 4)
}

/// Takes lease `name` for `owner`, or renews it when `owner` holds it already. `None` when
/// another owner holds it and it has not lapsed (by the database's clock).
pub async fn acquire(
    store: &Store,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Grant>, StoreError> {
    let asked = Instant::now();
    let now = dialect::now_micros(store.backend());
    // Every SET expression sees the row as it was, so `owner` is compared before it changes.
    let sql = format!(
        "INSERT INTO leases (name, owner, epoch, expires_at, granted_at) VALUES ($1, $2, 1, {now} + $3, {now}) \
         ON CONFLICT (name) DO UPDATE SET \
           epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END, \
           granted_at = CASE WHEN leases.owner = excluded.owner THEN leases.granted_at ELSE excluded.granted_at END, \
           owner = excluded.owner, expires_at = excluded.expires_at \
         WHERE leases.owner = excluded.owner OR leases.expires_at <= {now} \
         RETURNING epoch, expires_at"
    );
    let row: Option<(i64, i64)> = on_write!(store, p => {
        sqlx::query_as(&sql).bind(name).bind(owner).bind(ttl_micros(ttl)).fetch_optional(p).await?
    });
    Ok(row.map(|(epoch, expires_at)| Grant {
        epoch,
        expires_at,
        valid_until: asked + ttl,
    }))
}

/// Renews the leases among `names` that `owner` still holds (expired ones included, as long
/// as nobody took them); returns them with their grants. Leases held by others are left out.
pub async fn renew(
    store: &Store,
    names: &[String],
    owner: &str,
    ttl: Duration,
) -> Result<Vec<(String, Grant)>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let asked = Instant::now();
    let now = dialect::now_micros(store.backend());
    let sql = format!(
        "UPDATE leases SET expires_at = {now} + $1 WHERE owner = $2 AND name IN ({}) \
         RETURNING name, epoch, expires_at",
        placeholders(3, names.len())
    );
    let rows: Vec<(String, i64, i64)> = on_write!(store, p => {
        let mut q = sqlx::query_as(&sql).bind(ttl_micros(ttl)).bind(owner);
        for n in names {
            q = q.bind(n);
        }
        q.fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|(name, epoch, expires_at)| {
            let g = Grant {
                epoch,
                expires_at,
                valid_until: asked + ttl,
            };
            (name, g)
        })
        .collect())
}

/// Hands `names` back at once (a clean stop or a rebalance): they expire now, keeping their
/// owner and epoch, so the next holder gets a higher epoch.
pub async fn release(store: &Store, names: &[String], owner: &str) -> Result<(), StoreError> {
    if names.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE leases SET expires_at = 0 WHERE owner = $1 AND name IN ({})",
        placeholders(2, names.len())
    );
    on_write!(store, p => {
        let mut q = sqlx::query(&sql).bind(owner);
        for n in names {
            q = q.bind(n);
        }
        q.execute(p).await?;
    });
    Ok(())
}

/// `$first, $first+1, …` (`n` of them).
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a write made under a lease checks: the lease, its holder and the epoch it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub owner: String,
    pub epoch: i64,
}

impl Fence {
    /// Fails with [`StoreError::Fenced`] unless the lease still has this epoch, and keeps it
    /// from being granted anew until `tx` ends. Call it inside the transaction that makes the
    /// write; on an error, roll back (dropping `tx` does).
    pub async fn check(&self, tx: &mut Tx) -> Result<(), StoreError> {
        let held = still_held(tx, std::slice::from_ref(self)).await?;
        if held.first().copied().unwrap_or(false) {
            Ok(())
        } else {
            Err(StoreError::Fenced(self.name.clone()))
        }
    }
}

/// For each fence, whether its lease still has its epoch (and so may be written under);
/// locks those lease rows until `tx` ends. For holders of several leases (relay lanes) that
/// refuse only the writes of the leases they lost.
pub async fn still_held(tx: &mut Tx, fences: &[Fence]) -> Result<Vec<bool>, StoreError> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT name, owner, epoch FROM leases WHERE name IN ({}){}",
        placeholders(1, fences.len()),
        dialect::for_share(tx.backend())
    );
    let rows: Vec<(String, String, i64)> = on_tx!(tx, c => {
        let mut q = sqlx::query_as(&sql);
        for f in fences {
            q = q.bind(&f.name);
        }
        q.fetch_all(&mut *c).await?
    });
    Ok(fences
        .iter()
        .map(|f| {
            rows.iter()
                .any(|(n, o, e)| n == &f.name && o == &f.owner && *e == f.epoch)
        })
        .collect())
}

/// One named lease as its holder sees it.
pub struct Lease {
    store: Store,
    name: String,
    owner: String,
    ttl: Duration,
    grant: Option<Grant>,
}

impl Lease {
    /// A lease `name` for a holder that calls itself `owner` (unique per holder: a process,
    /// or one consumer of a process).
    pub fn new(
        store: Store,
        name: impl Into<String>,
        owner: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            name: name.into(),
            owner: owner.into(),
            ttl,
            grant: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes or renews the lease; `None` when another holder has it.
    pub async fn acquire(&mut self) -> Result<Option<Grant>, StoreError> {
        let g = acquire(&self.store, &self.name, &self.owner, self.ttl).await?;
        self.grant = g;
        Ok(g)
    }

    /// Renews the lease if this holder still has it (never takes it from anyone); `None`
    /// when it was lost.
    pub async fn renew(&mut self) -> Result<Option<Grant>, StoreError> {
        let names = [self.name.clone()];
        let g = renew(&self.store, &names, &self.owner, self.ttl)
            .await?
            .pop()
            .map(|(_, g)| g);
        self.grant = g;
        Ok(g)
    }

    /// The last grant, if this holder believes it holds the lease (it may have lapsed; check
    /// `valid_for`).
    pub fn grant(&self) -> Option<Grant> {
        self.grant
    }

    /// The fence for writes under the current grant.
    pub fn fence(&self) -> Option<Fence> {
        self.grant.map(|g| Fence {
            name: self.name.clone(),
            owner: self.owner.clone(),
            epoch: g.epoch,
        })
    }

    /// Forgets the grant locally (after an error: it may lapse any moment).
    pub fn forget(&mut self) {
        self.grant = None;
    }

    /// Hands the lease over at once (a clean stop).
    pub async fn release(&mut self) -> Result<(), StoreError> {
        if self.grant.take().is_some() {
            release(&self.store, std::slice::from_ref(&self.name), &self.owner).await?;
        }
        Ok(())
    }
}

/// A lease renewed by a task of its own, so long work does not lose it — but only while the
/// holder shows it is alive (`touch`) at least every `max_idle`: a holder stuck longer lets
/// the lease lapse, and the fence refuses its late writes.
pub struct Keeper {
    lease: Arc<tokio::sync::Mutex<Lease>>,
    seen: Arc<parking_lot::Mutex<Instant>>,
    stop: CancellationToken,
}

impl Keeper {
    /// Starts renewing every `every` (a third of the TTL or less is sensible).
    pub fn start(lease: Lease, every: Duration, max_idle: Duration) -> Keeper {
        let k = Keeper {
            lease: Arc::new(tokio::sync::Mutex::new(lease)),
            seen: Arc::new(parking_lot::Mutex::new(Instant::now())),
            stop: CancellationToken::new(),
        };
        let (lease, seen, stop) = (k.lease.clone(), k.seen.clone(), k.stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if seen.lock().elapsed() > max_idle {
                    continue;
                }
                let mut l = lease.lock().await;
                if l.grant().is_none() {
                    continue;
                }
                if let Err(e) = l.renew().await {
                    tracing::warn!(lease = %l.name(), error = %e, "renewing a lease failed");
                }
            }
        });
        k
    }

    /// The holder is alive: renewal goes on for another `max_idle`.
    pub fn touch(&self) {
        *self.seen.lock() = Instant::now();
    }

    /// The current grant when it is still valid (`margin` in hand); otherwise takes or renews
    /// the lease now. `None` when another holder has it.
    pub async fn hold(&self, margin: Duration) -> Result<Option<Grant>, StoreError> {
        self.touch();
        let mut l = self.lease.lock().await;
        if let Some(g) = l.grant()
            && g.valid_for(margin)
        {
            return Ok(Some(g));
        }
        match l.acquire().await {
            Ok(g) => Ok(g),
            Err(e) => {
                l.forget();
                Err(e)
            }
        }
    }

    /// The fence for writes under the current grant (`None` when not holding).
    pub async fn fence(&self) -> Option<Fence> {
        self.lease.lock().await.fence()
    }

    /// Stops renewing and hands the lease over at once.
    pub async fn release(&self) -> Result<(), StoreError> {
        self.stop.cancel();
        self.lease.lock().await.release().await
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Live members of a `scope` (e.g. the relays sharing the lanes), each announcing itself with
/// an expiry on the database's clock.
pub mod members {
    use std::time::Duration;

    use super::{Store, StoreError, dialect, ttl_micros};
    use crate::on_write;

    /// Announces `owner` in `scope` for `ttl`, forgets members whose announcement lapsed, and
    /// returns how many are alive (this one included).
    pub async fn announce(
        store: &Store,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let now = dialect::now_micros(store.backend());
        let upsert = format!(
            "INSERT INTO lease_members (scope, owner, expires_at) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (scope, owner) DO UPDATE SET expires_at = excluded.expires_at"
        );
        let prune = format!("DELETE FROM lease_members WHERE scope = $1 AND expires_at < {now}");
        let n: i64 = on_write!(store, p => {
            sqlx::query(&upsert).bind(scope).bind(owner).bind(ttl_micros(ttl)).execute(p).await?;
            sqlx::query(&prune).bind(scope).execute(p).await?;
            sqlx::query_scalar("SELECT COUNT(*) FROM lease_members WHERE scope = $1")
                .bind(scope)
                .fetch_one(p)
                .await?
        });
        Ok(n)
    }

    /// Leaves `scope` at once (a clean stop).
    pub async fn leave(store: &Store, scope: &str, owner: &str) -> Result<(), StoreError> {
        on_write!(store, p => {
            sqlx::query("DELETE FROM lease_members WHERE scope = $1 AND owner = $2")
                .bind(scope)
                .bind(owner)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
