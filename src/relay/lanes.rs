//! Lane leases. The outbox is split into `log.relay_lanes` lanes by key hash; each lane is a
//! fenced lease (`store::lease`, named `relay.lane.{n}`) held by one relay instance at a time,
//! so every key is published by one instance, in outbox order. Live instances announce
//! themselves (`lease_members`, scope `relay`) and split the lanes evenly: an instance holding
//! more than its share hands the rest back.
//!
//! Renewal happens between batches, and a batch may not outlive its lanes: its sends are cut
//! (the producer's queue and in-flight requests purged) at the lanes' deadline, a margin
//! before the leases could lapse, so a relay stuck on a stalled broker stops sending before
//! its lanes can be granted elsewhere. Marks (`published_at`) are written only for lanes whose
//! epoch is still the one they were sent under; a stale relay's late marks are refused. Every
//! record carries a `relay_lease` header (`{lane}/{epoch}`) naming the grant it was sent
//! under.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::publish;
use crate::app::AppContext;
use crate::outbox::OutboxRow;
use crate::store::lease::{self, Fence, Grant, members};
use crate::store::{Store, StoreError};

/// The membership scope of relay instances.
const SCOPE: &str = "relay";

/// The header naming the lane lease (`{lane}/{epoch}`) a record was sent under.
pub const LEASE_HEADER: &str = "relay_lease";

/// The lease name of a lane.
pub fn lease_name(lane: i64) -> String {
    format!("relay.lane.{lane}")
}

pub struct Lanes {
    store: Store,
    owner: String,
    lanes: u32,
    ttl: Duration,
    held: BTreeMap<i64, Grant>,
    /// Lanes whose last batch was cut: requests the broker received but has not answered may
    /// still be appended. Such a lane is not handed back to another relay until a batch on it
    /// is acknowledged in full.
    unsettled: BTreeSet<i64>,
    /// Lanes of the batch in flight (renewals happen while it waits for acknowledgements):
    /// never handed back to another relay while their sends are outstanding.
    busy: BTreeSet<i64>,
}

impl Lanes {
    /// `ttl`: how long a lane lease lasts without renewal (`log.relay_lease_ttl_ms`).
    pub fn new(store: Store, lanes: u32, ttl: Duration) -> Self {
        Self {
            store,
            owner: uuid::Uuid::new_v4().to_string(),
            lanes: lanes.max(1),
            ttl: ttl.max(Duration::from_millis(10)),
            held: BTreeMap::new(),
            unsettled: BTreeSet::new(),
            busy: BTreeSet::new(),
        }
    }

    /// How often the leases are renewed.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// How long before a lease could lapse its holder stops sending on it: room for a renewal
    /// that is late by a renewal interval, and for the purge to take effect.
    fn margin(&self) -> Duration {
        self.ttl * 3 / 10
    }

    /// The lanes this instance may publish now (those whose leases are not near their end).
    pub fn held(&self) -> Vec<i64> {
        let margin = self.margin();
        self.held
            .iter()
            .filter(|(_, g)| g.valid_for(margin))
            .map(|(l, _)| *l)
            .collect()
    }

    /// When sends on `rows`' lanes must stop: the earliest of their leases' deadlines.
    pub fn deadline(&self, rows: &[OutboxRow]) -> Instant {
        let lanes: BTreeSet<i64> = rows.iter().map(|r| r.lane).collect();
        self.deadline_of(lanes.iter())
    }

    /// When sends on any held lane must stop.
    pub fn deadline_all(&self) -> Instant {
        self.deadline_of(self.held.keys())
    }

    fn deadline_of<'a>(&self, lanes: impl Iterator<Item = &'a i64>) -> Instant {
        lanes
            .filter_map(|l| self.held.get(l))
            .map(|g| {
                g.valid_until
                    .checked_sub(self.margin())
                    .unwrap_or_else(Instant::now)
            })
            .min()
            .unwrap_or_else(Instant::now)
    }

    /// Announces this instance, renews its leases, hands back lanes above its share and
    /// claims free or lapsed lanes up to it.
    pub async fn refresh(&mut self) -> Result<(), StoreError> {
        let members = members::announce(&self.store, SCOPE, &self.owner, self.ttl).await?;
        let share = (i64::from(self.lanes) + members.max(1) - 1) / members.max(1);
        let names: Vec<String> = self.held.keys().map(|l| lease_name(*l)).collect();
        let renewed = lease::renew(&self.store, &names, &self.owner, self.ttl).await?;
        let mut held: BTreeMap<i64, Grant> = self
            .held
            .keys()
            .filter_map(|l| {
                let name = lease_name(*l);
                renewed
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, g)| (*l, *g))
            })
            .collect();
        // Hand back the lanes above the share, settled ones only.
        let surplus = (held.len() as i64 - share).max(0) as usize;
        let give: Vec<i64> = held
            .keys()
            .rev()
            .filter(|l| !self.unsettled.contains(l) && !self.busy.contains(l))
            .take(surplus)
            .copied()
            .collect();
        for lane in give {
            held.remove(&lane);
            lease::release(&self.store, &[lease_name(lane)], &self.owner).await?;
        }
        // Start the search at a point of our own, so instances do not race for the same lanes.
        let start = (crate::outbox::key_hash(&self.owner) % u64::from(self.lanes)) as i64;
        let lanes = i64::from(self.lanes);
        for i in 0..lanes {
            if held.len() as i64 >= share {
                break;
            }
            let lane = (start + i) % lanes;
            if held.contains_key(&lane) {
                continue;
            }
            if let Some(g) =
                lease::acquire(&self.store, &lease_name(lane), &self.owner, self.ttl).await?
            {
                held.insert(lane, g);
            }
        }
        self.unsettled.retain(|l| held.contains_key(l));
        self.held = held;
        Ok(())
    }

    /// Forgets the leases locally (after a failed renewal: they may lapse any moment).
    pub fn drop_local(&mut self) {
        self.held.clear();
        self.unsettled.clear();
        self.busy.clear();
    }

    /// Hands every lease back at once (clean shutdown, after the producer has flushed).
    pub async fn release(&mut self) {
        let names: Vec<String> = self.held.keys().map(|l| lease_name(*l)).collect();
        self.drop_local();
        if let Err(e) = lease::release(&self.store, &names, &self.owner).await {
            tracing::warn!(error = %e, "releasing relay lanes failed");
        }
        if let Err(e) = members::leave(&self.store, SCOPE, &self.owner).await {
            tracing::warn!(error = %e, "leaving the relay members failed");
        }
    }

    /// Adds the `relay_lease` header (`{lane}/{epoch}`) to each row about to be sent (to its
    /// `send_headers`: the stored JSON is parsed here once, and not written back).
    pub fn stamp(&self, rows: &mut [OutboxRow]) {
        for r in rows {
            if let Some(g) = self.held.get(&r.lane) {
                let mut h = r.headers();
                h.insert(LEASE_HEADER.into(), format!("{}/{}", r.lane, g.epoch));
                r.send_headers = Some(h);
            }
        }
    }

    /// A batch on `rows`' lanes is in flight until `end_batch`: renewals meanwhile keep those
    /// lanes (a relay waiting on a stalled broker keeps them; nobody else sends them).
    pub fn begin_batch(&mut self, rows: &[OutboxRow]) {
        self.busy = rows.iter().map(|r| r.lane).collect();
    }

    /// The batch in flight has ended (acknowledged, failed or cut).
    pub fn end_batch(&mut self) {
        self.busy.clear();
    }

    /// A batch on `rows`' lanes was cut (its sends abandoned): requests the broker received but
    /// has not answered may still be appended, so those lanes are not handed back to another
    /// relay until a later batch on them is acknowledged in full.
    pub fn cut(&mut self, rows: &[OutboxRow]) {
        self.unsettled.extend(rows.iter().map(|r| r.lane));
    }

    /// The fence for a write under `lane`'s lease (a parked row), if this relay holds it.
    pub fn fence_for(&self, lane: i64) -> Option<Fence> {
        self.held.get(&lane).map(|g| Fence {
            name: lease_name(lane),
            owner: self.owner.clone(),
            epoch: g.epoch,
        })
    }

    /// Marks the acknowledged rows among `rows` published, in one transaction, for the lanes
    /// whose lease is still held with the epoch they were sent under; the marks of lanes that
    /// passed to another relay are refused (that relay sends those rows again). Returns how
    /// many marks were refused. (`marks` + `Marks::write` + `settle`, in one go.)
    pub async fn mark_published(
        &mut self,
        ctx: &AppContext,
        rows: &[OutboxRow],
        acked: &[i64],
    ) -> Result<usize, StoreError> {
        let marks = self.marks(rows, acked);
        let written = marks.write(&self.store).await?;
        Ok(self.settle(ctx, &written))
    }

    /// The marks of a batch, fenced by the epochs the rows were sent under, ready to be written
    /// (`Marks::write`) off the send path: the relay writes them while it reads and sends the
    /// next batch, which leaves these ids out (`Marks::ids`).
    pub fn marks(&self, rows: &[OutboxRow], acked: &[i64]) -> Marks {
        let lane_of: BTreeMap<i64, i64> = rows.iter().map(|r| (r.id, r.lane)).collect();
        let mut by_lane: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for id in acked {
            if let Some(l) = lane_of.get(id) {
                by_lane.entry(*l).or_default().push(*id);
            }
        }
        let mut sent: BTreeMap<i64, usize> = BTreeMap::new();
        for r in rows {
            *sent.entry(r.lane).or_default() += 1;
        }
        let lanes = by_lane
            .into_iter()
            .map(|(lane, ids)| LaneMarks {
                lane,
                fence: self.fence_for(lane),
                all_of_batch: sent.get(&lane) == Some(&ids.len()),
                ids,
            })
            .collect();
        Marks {
            owner: self.owner.clone(),
            lanes,
        }
    }

    /// Takes in the outcome of written marks: a lane whose marks were refused has passed to
    /// another relay (stop sending on it at once); a lane whose rows of the batch were all
    /// acknowledged has nothing left in flight. Marks planned by an earlier `Lanes` (a lane
    /// count change since) change nothing here. Returns how many marks were refused.
    pub fn settle(&mut self, ctx: &AppContext, written: &Written) -> usize {
        if written.owner != self.owner {
            return written.refused;
        }
        for lane in &written.lost {
            self.held.remove(lane);
            self.unsettled.remove(lane);
        }
        for lane in &written.complete {
            self.unsettled.remove(lane);
        }
        if written.refused > 0 {
            tracing::warn!(
                refused = written.refused,
                "marks of lanes that passed to another relay were refused"
            );
            ctx.metrics
                .lease_writes_refused
                .with_label_values(&["relay"])
                .inc_by(written.refused as u64);
        }
        written.refused
    }
}

/// One lane's acknowledged rows of a batch.
#[derive(Debug, Clone)]
struct LaneMarks {
    lane: i64,
    /// The lease the rows were sent under (none: the lane was lost before the marks).
    fence: Option<Fence>,
    /// Every row of the batch on this lane was acknowledged.
    all_of_batch: bool,
    ids: Vec<i64>,
}

/// A batch's marks, planned by `Lanes::marks`; owns what it needs, so it can be written on a
/// task of its own while the relay goes on.
#[derive(Debug, Clone)]
pub struct Marks {
    owner: String,
    lanes: Vec<LaneMarks>,
}

/// What writing `Marks` did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    owner: String,
    /// Lanes whose marks were refused (their lease passed on).
    lost: Vec<i64>,
    /// Lanes whose rows of the batch were all acknowledged and marked.
    complete: Vec<i64>,
    refused: usize,
}

impl Marks {
    /// The ids to be marked: pending in the store until `write` commits.
    pub fn ids(&self) -> Vec<i64> {
        self.lanes
            .iter()
            .flat_map(|l| l.ids.iter().copied())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Writes the marks in one transaction, only for the lanes whose lease is still held with
    /// the epoch the rows were sent under (checked in the same transaction, the lease rows
    /// locked against a concurrent grant).
    pub async fn write(&self, store: &Store) -> Result<Written, StoreError> {
        let mut written = Written {
            owner: self.owner.clone(),
            ..Written::default()
        };
        if self.lanes.is_empty() {
            return Ok(written);
        }
        let fences: Vec<Fence> = self.lanes.iter().filter_map(|l| l.fence.clone()).collect();
        let mut tx = store.begin().await?;
        let ok = lease::still_held(&mut tx, &fences).await?;
        let mut ids = Vec::new();
        for l in &self.lanes {
            let name = lease_name(l.lane);
            let held = fences.iter().zip(&ok).any(|(f, ok)| f.name == name && *ok);
            if held {
                ids.extend_from_slice(&l.ids);
                if l.all_of_batch {
                    written.complete.push(l.lane);
                }
            } else {
                written.refused += l.ids.len();
                written.lost.push(l.lane);
            }
        }
        publish::mark_published(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(written)
    }
}
