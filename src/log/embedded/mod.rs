//! The embedded log: the store's `outbox` table read by offset (`outbox.id`), one partition
//! per topic. Group positions live in `consumer_offsets` and commit in the same transaction as
//! the effects. An append wakes readers in this process at once (and in other processes via
//! NOTIFY on PostgreSQL); a poll interval covers the rest. One member per group is active at a
//! time: the holder of the group's fenced lease (`store::lease`, named `consumer.{group}`),
//! kept alive by a keeper task while the member keeps polling. Offsets are written only under
//! the lease's epoch, and a member that gets the lease with a new epoch (another member held it
//! meanwhile, perhaps applying a rebuild or a replay) reloads its cursors from the store.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;

use super::{EventLog, LogConsumer, LogError, LogRecord, PartitionLag, Position, SeekTo};
use crate::outbox::{COLUMNS, OutboxRow, OutboxSignal};
use crate::store::lease::{Fence, Keeper, Lease};
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

/// How a group's lease is held.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// How long the lease lasts without renewal (`consumers.lease_ttl_ms`).
    pub ttl: Duration,
    /// How long a member may stay away from polling (a long batch) before its keeper stops
    /// renewing (`consumers.max_poll_interval_ms`).
    pub max_poll_interval: Duration,
}

impl LeaseSettings {
    /// Renewals (and a standby member's attempts to take over) come this often.
    fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }

    /// A grant is used only while this much of it is left, so a member stops before the
    /// lease could lapse under it.
    fn margin(&self) -> Duration {
        self.ttl / 3
    }
}

pub struct EmbeddedLog {
    store: Store,
    signal: OutboxSignal,
    poll: Duration,
    lease: LeaseSettings,
}

impl EmbeddedLog {
    pub fn new(store: Store, signal: OutboxSignal, poll: Duration, lease: LeaseSettings) -> Self {
        Self {
            store,
            signal,
            poll,
            lease,
        }
    }
}

/// The lease name of a consumer group.
pub fn lease_name(group: &str) -> String {
    format!("consumer.{group}")
}

async fn load_offsets(store: &Store, group: &str) -> Result<HashMap<String, i64>, StoreError> {
    let rows: Vec<(String, i64)> = on_read!(store, p => {
        sqlx::query_as("SELECT topic, next_offset FROM consumer_offsets WHERE group_name = $1 AND partition_no = 0")
            .bind(group)
            .fetch_all(p)
            .await?
    });
    Ok(rows.into_iter().collect())
}

/// Writes the group's positions inside `tx`, fenced: refused (`StoreError::Fenced`) when the
/// group's lease was granted to another member since `fence` was taken.
async fn save_offsets(
    tx: &mut Tx,
    fence: &Fence,
    group: &str,
    positions: &[Position],
) -> Result<(), StoreError> {
    fence.check(tx).await?;
    let now = now_micros();
    for p in positions {
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO consumer_offsets (group_name, topic, partition_no, next_offset, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_name, topic, partition_no) \
                 DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            )
            .bind(group)
            .bind(&p.topic)
            .bind(i64::from(p.partition))
            .bind(p.next_offset)
            .bind(now)
            .execute(&mut *c)
            .await?;
        });
    }
    Ok(())
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = Lease::new(
            self.store.clone(),
            lease_name(group),
            owner.clone(),
            self.lease.ttl,
        );
        Ok(Box::new(EmbeddedConsumer {
            store: self.store.clone(),
            signal: self.signal.clone(),
            poll: self.poll,
            group: group.to_string(),
            topics: topics.to_vec(),
            cursors: HashMap::new(),
            fence: None,
            owner,
            keeper: Keeper::start(
                lease,
                self.lease.renew_every(),
                self.lease.max_poll_interval,
            ),
            lease: self.lease,
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>, LogError> {
        let offsets = load_offsets(&self.store, group).await?;
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            let committed = offsets.get(t).copied().unwrap_or(0);
            let pending: i64 = on_read!(self.store, p => {
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE topic = $1 AND id >= $2")
                    .bind(t)
                    .bind(committed)
                    .fetch_one(p)
                    .await
                    .map_err(StoreError::from)?
            });
            out.push(PartitionLag {
                topic: t.clone(),
                partition: 0,
                committed,
                end: committed + pending,
            });
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), LogError> {
        self.store.ping().await?;
        Ok(())
    }
}

pub struct EmbeddedConsumer {
    store: Store,
    signal: OutboxSignal,
    poll: Duration,
    group: String,
    topics: Vec<String>,
    /// Next offset per topic; loaded from the store under the grant `fence` names.
    cursors: HashMap<String, i64>,
    /// The grant this member's cursors belong to; every offset write checks it.
    fence: Option<Fence>,
    owner: String,
    /// The group's lease, renewed in the background while this member keeps polling.
    keeper: Keeper,
    lease: LeaseSettings,
}

impl EmbeddedConsumer {
    /// The next `max` records of the group's topics, in id order. One branch per topic, each
    /// an index range scan (`outbox_topic_id`) that stops after `max` rows, merged: a single
    /// `WHERE (topic = … AND id >= …) OR …` made both stores collect and sort every row still
    /// ahead of the group on every poll (SQLite's multi-index OR, PostgreSQL's bitmap OR), so
    /// each poll cost as much as the backlog.
    async fn fetch(&self, max: usize) -> Result<Vec<LogRecord>, StoreError> {
        let max = max.max(1);
        let branches: Vec<String> = (0..self.topics.len())
            .map(|i| {
                format!(
                    "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM outbox WHERE topic = ${} AND id >= ${} ORDER BY id LIMIT {max}) t{i}",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect();
        let sql = format!("{} ORDER BY id LIMIT {max}", branches.join(" UNION ALL "));
        let rows: Vec<OutboxRow> = on_read!(self.store, p => {
            let mut q = sqlx::query_as::<_, OutboxRow>(&sql);
            for t in &self.topics {
                q = q.bind(t).bind(self.cursors.get(t).copied().unwrap_or(0));
            }
            q.fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|r| LogRecord {
                headers: r.headers(),
                topic: r.topic,
                partition: 0,
                offset: r.id,
                key: Some(r.event_key),
                value: r.payload,
                timestamp: r.created_at,
            })
            .collect())
    }
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn ensure_active(&mut self) -> Result<bool, LogError> {
        match self.keeper.hold(self.lease.margin()).await? {
            Some(g) => {
                if self.fence.as_ref().map(|f| f.epoch) != Some(g.epoch) {
                    // A new grant: another member may have held the group meanwhile and moved
                    // it on, or applied a rebuild or replay that moved it back. The store's
                    // positions are the truth; what this member had in memory is not.
                    self.fence = None;
                    self.cursors = load_offsets(&self.store, &self.group).await?;
                    self.fence = Some(Fence {
                        name: lease_name(&self.group),
                        owner: self.owner.clone(),
                        epoch: g.epoch,
                    });
                }
                Ok(true)
            }
            None => {
                self.fence = None;
                Ok(false)
            }
        }
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.signal.subscribe();
        loop {
            if !self.ensure_active().await? {
                let retry = tokio::time::Instant::now() + self.lease.renew_every();
                tokio::time::sleep_until(deadline.min(retry)).await;
                return Ok(Vec::new());
            }
            rx.borrow_and_update();
            let recs = self.fetch(max).await?;
            if !recs.is_empty() {
                return Ok(recs);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = (deadline - now).min(self.poll);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    fn offsets_in_store(&self) -> bool {
        true
    }

    async fn commit_in(&mut self, tx: &mut Tx, positions: &[Position]) -> Result<(), LogError> {
        let Some(fence) = &self.fence else {
            return Err(LogError::NotLeader);
        };
        save_offsets(tx, fence, &self.group, positions).await?;
        for p in positions {
            self.cursors.insert(p.topic.clone(), p.next_offset);
        }
        Ok(())
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        let mut tx = self.store.begin().await?;
        self.commit_in(&mut tx, positions).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(&mut self) {
        // Hand the lease over at once on a clean stop, instead of letting it expire.
        if let Err(e) = self.keeper.release().await {
            tracing::warn!(group = %self.group, error = %e, "releasing the consumer lease failed");
        }
        self.fence = None;
    }

    async fn resolve(&mut self, topic: &str, to: SeekTo) -> Result<Vec<Position>, LogError> {
        let next = match to {
            SeekTo::Beginning => 0,
            SeekTo::Offset(n) => n,
            SeekTo::Time(t) => {
                let first: Option<i64> = on_read!(self.store, p => {
                    let r = sqlx::query("SELECT MIN(id) FROM outbox WHERE topic = $1 AND created_at >= $2")
                        .bind(topic)
                        .bind(t)
                        .fetch_one(p)
                        .await
                        .map_err(StoreError::from)?;
                    r.try_get(0).map_err(StoreError::from)?
                });
                match first {
                    Some(id) => id,
                    None => {
                        let max: Option<i64> = on_read!(self.store, p => {
                            let r = sqlx::query("SELECT MAX(id) FROM outbox")
                                .fetch_one(p)
                                .await
                                .map_err(StoreError::from)?;
                            r.try_get(0).map_err(StoreError::from)?
                        });
                        max.unwrap_or(0) + 1
                    }
                }
            }
        };
        Ok(vec![Position {
            topic: topic.to_string(),
            partition: 0,
            next_offset: next,
        }])
    }

    async fn seek(&mut self, positions: &[Position]) -> Result<(), LogError> {
        for p in positions {
            self.cursors.insert(p.topic.clone(), p.next_offset);
        }
        Ok(())
    }
}
