//! The embedded log: the store's `outbox` table read by offset (`outbox.id`), one partition
//! per topic. Group positions live in `consumer_offsets` and commit in the same transaction as
//! the effects. An append wakes readers in this process at once (and in other processes via
//! NOTIFY on PostgreSQL); a poll interval covers the rest. One member per group is active at a
//! time, by a lease row.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;

use super::{EventLog, LogConsumer, LogError, LogRecord, PartitionLag, Position, SeekTo};
use crate::outbox::{COLUMNS, OutboxRow, OutboxSignal};
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx, on_write};

/// How long a lease lasts without renewal, and how often it is renewed.
const LEASE_TTL: Duration = Duration::from_secs(10);
const LEASE_RENEW: Duration = Duration::from_secs(3);

pub struct EmbeddedLog {
    store: Store,
    signal: OutboxSignal,
    poll: Duration,
}

impl EmbeddedLog {
    pub fn new(store: Store, signal: OutboxSignal, poll: Duration) -> Self {
        Self {
            store,
            signal,
            poll,
        }
    }
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

async fn save_offsets(tx: &mut Tx, group: &str, positions: &[Position]) -> Result<(), StoreError> {
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
        Ok(Box::new(EmbeddedConsumer {
            store: self.store.clone(),
            signal: self.signal.clone(),
            poll: self.poll,
            group: group.to_string(),
            topics: topics.to_vec(),
            cursors: HashMap::new(),
            owner: uuid::Uuid::new_v4().to_string(),
            active_until: None,
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
    /// Next offset per topic; loaded when the lease is (re)acquired.
    cursors: HashMap<String, i64>,
    owner: String,
    /// When the lease must be renewed; `None` = not holding it.
    active_until: Option<Instant>,
}

impl EmbeddedConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<LogRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM outbox WHERE ");
        for (i, _) in self.topics.iter().enumerate() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!(
                "(topic = ${} AND id >= ${})",
                2 * i + 1,
                2 * i + 2
            ));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", max.max(1)));
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

    async fn try_lease(&self) -> Result<bool, StoreError> {
        let now = now_micros();
        let until = now + LEASE_TTL.as_micros() as i64;
        let n = on_write!(self.store, p => {
            sqlx::query(
                "INSERT INTO consumer_leases (group_name, owner, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE consumer_leases.owner = excluded.owner OR consumer_leases.expires_at < $4",
            )
            .bind(&self.group)
            .bind(&self.owner)
            .bind(until)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn ensure_active(&mut self) -> Result<bool, LogError> {
        if let Some(t) = self.active_until
            && Instant::now() < t
        {
            return Ok(true);
        }
        let was_active = self.active_until.is_some();
        if self.try_lease().await? {
            if !was_active {
                // Another member may have moved the group on while we were not leading.
                self.cursors = load_offsets(&self.store, &self.group).await?;
            }
            self.active_until = Some(Instant::now() + LEASE_RENEW);
            Ok(true)
        } else {
            self.active_until = None;
            Ok(false)
        }
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.signal.subscribe();
        loop {
            if !self.ensure_active().await? {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LEASE_RENEW))
                    .await;
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
        save_offsets(tx, &self.group, positions).await?;
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
        if self.active_until.take().is_some() {
            let res = on_write!(self.store, p => {
                sqlx::query("DELETE FROM consumer_leases WHERE group_name = $1 AND owner = $2")
                    .bind(&self.group)
                    .bind(&self.owner)
                    .execute(p)
                    .await
                    .map(|_| ())
            });
            if let Err(e) = res {
                tracing::warn!(group = %self.group, error = %e, "releasing the consumer lease failed");
            }
        }
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
