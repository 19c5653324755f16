//! The ClickHouse sink (runs in the `consumers` role when `analytics.clickhouse_url` is set):
//! consumer group `analytics-clickhouse` reads every topic with a schema and writes one row per
//! event, in batches of up to `analytics.batch_rows` rows or every `analytics.flush_ms`. The
//! group's log positions are committed only after ClickHouse acknowledged the batch, so a crash
//! in between redelivers the batch; its rows repeat rows already written and the
//! ReplacingMergeTree collapses them (queries read `FINAL`). Replay requests rewind it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::clickhouse::{ClickHouse, EventRow};
use crate::app::AppContext;
use crate::consumers::{dlq, seeks};
use crate::log::{LogConsumer, LogError, LogRecord, Position};
use crate::schema::SchemaError;
use crate::store::StoreError;

pub const GROUP: &str = "analytics-clickhouse";

#[derive(Debug, thiserror::Error)]
enum SinkError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("shutting down")]
    Shutdown,
}

/// Runs the sink until `shutdown`; returns at once when ClickHouse is not configured.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(ch) = ctx.analytics.clickhouse().cloned() else {
        return Ok(());
    };
    let topics = crate::projections::counts::counted_topics(&ctx);
    let mut s = Sink {
        batch_rows: ctx.config.analytics.batch_rows.max(1),
        flush_every: Duration::from_millis(ctx.config.analytics.flush_ms.max(1)),
        seen_seek: seeks::max_id(&ctx.store, GROUP).await.unwrap_or(0),
        ctx,
        ch,
        topics,
        shutdown,
        rows: Vec::new(),
        positions: BTreeMap::new(),
        since: None,
    };
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = s.ch.ensure_schema().await {
        tracing::warn!(error = %e, "cannot create the ClickHouse table; retrying");
        if s.nap(backoff).await.is_err() {
            return Ok(());
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    let mut consumer = loop {
        match s.ctx.log.subscribe(GROUP, &s.topics).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "the analytics sink cannot join its group; retrying");
                if s.nap(Duration::from_secs(1)).await.is_err() {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(
        group = GROUP,
        database = s.ch.database(),
        "analytics sink started"
    );
    let res = s.run(consumer.as_mut()).await;
    consumer.close().await;
    match res {
        Ok(()) | Err(SinkError::Shutdown) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("analytics sink failed: {e}")),
    }
}

struct Sink {
    ctx: AppContext,
    ch: ClickHouse,
    topics: Vec<String>,
    shutdown: CancellationToken,
    batch_rows: usize,
    flush_every: Duration,
    seen_seek: i64,
    rows: Vec<EventRow>,
    /// Next offset per (topic, partition) covered by `rows`.
    positions: BTreeMap<(String, i32), i64>,
    /// When the oldest unflushed record arrived.
    since: Option<Instant>,
}

impl Sink {
    async fn nap(&self, d: Duration) -> Result<(), SinkError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.shutdown.cancelled() => Err(SinkError::Shutdown),
        }
    }

    async fn run(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), SinkError> {
        let mut next_seeks = Instant::now();
        let mut lag = crate::consumers::lag::LagReporter::new(&self.ctx, GROUP, &self.topics);
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.shutdown.is_cancelled() {
                // Best effort: what is not flushed is redelivered after the restart.
                let _ = tokio::time::timeout(Duration::from_secs(2), self.write_batch()).await;
                let _ = self.commit(consumer).await;
                return Ok(());
            }
            if Instant::now() >= next_seeks {
                next_seeks = Instant::now() + Duration::from_millis(500);
                if let Err(e) = self.apply_seeks(consumer).await {
                    tracing::warn!(group = GROUP, error = %e, "applying replay requests failed");
                }
            }
            lag.tick();
            let wait = match self.since {
                None => Duration::from_millis(500),
                Some(t) => (t + self.flush_every).saturating_duration_since(Instant::now()),
            };
            let room = self.batch_rows.saturating_sub(self.rows.len()).max(1);
            let polled = tokio::select! {
                r = consumer.poll(room, wait) => r,
                _ = self.shutdown.cancelled() => continue,
            };
            match polled {
                Ok(records) => {
                    backoff = Duration::from_millis(100);
                    for r in &records {
                        self.add(r).await?;
                    }
                    if !records.is_empty() && consumer.offsets_in_store() {
                        // The embedded log reads from its committed position until a commit
                        // or seek moves it; move it past what is buffered so the next poll
                        // continues (a Kafka consumer's poll does this by itself).
                        consumer.seek(&self.pending_positions()).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!(group = GROUP, error = %e, "poll failed; backing off");
                    self.nap(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            let due = self.since.is_some_and(|t| t.elapsed() >= self.flush_every);
            if self.rows.len() >= self.batch_rows || due {
                self.flush(consumer).await?;
            }
        }
    }

    /// Turns a record into a row (a payload that cannot be decoded is stored empty: the event
    /// still counts).
    async fn add(&mut self, rec: &LogRecord) -> Result<(), SinkError> {
        let e = self
            .positions
            .entry((rec.topic.clone(), rec.partition))
            .or_insert(rec.offset + 1);
        *e = (*e).max(rec.offset + 1);
        self.since.get_or_insert_with(Instant::now);
        // A redriven record is a copy meant for one other group.
        if rec.headers.contains_key(dlq::REDRIVE_GROUP) {
            return Ok(());
        }
        let mut backoff = Duration::from_millis(100);
        let payload = loop {
            match self.ctx.schemas.decode_json(&rec.value).await {
                Ok(v) => break v.to_string(),
                Err(SchemaError::Lookup(e)) if e.code().0 >= 500 => {
                    tracing::warn!(error = %e, "registry unavailable; retrying decode");
                    self.nap(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(_) => break String::new(),
            }
        };
        let time = rec
            .headers
            .get("ce_time")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
            .unwrap_or(rec.timestamp);
        self.rows.push(EventRow {
            event_id: rec
                .headers
                .get("ce_id")
                .cloned()
                .unwrap_or_else(|| format!("{}/{}/{}", rec.topic, rec.partition, rec.offset)),
            topic: rec.topic.clone(),
            event_type: rec
                .headers
                .get("ce_type")
                .cloned()
                .unwrap_or_else(|| crate::schema::event_type_of(&rec.topic)),
            event_key: rec.key.clone().unwrap_or_default(),
            event_time: (time.max(0) / 1_000_000).min(i64::from(u32::MAX)) as u32,
            event_time_us: time,
            log_partition: rec.partition,
            log_offset: rec.offset,
            payload,
            ingested_at: (chrono::Utc::now().timestamp().max(0)).min(i64::from(u32::MAX)) as u32,
        });
        Ok(())
    }

    /// Writes the batch, retrying until ClickHouse takes it (or shutdown).
    async fn write_batch(&mut self) -> Result<(), SinkError> {
        let mut backoff = Duration::from_millis(100);
        let m = &self.ctx.metrics;
        while !self.rows.is_empty() {
            let started = Instant::now();
            match self.ch.insert(&self.rows).await {
                Ok(()) => {
                    m.analytics_flush_seconds
                        .with_label_values(&["clickhouse"])
                        .observe(started.elapsed().as_secs_f64());
                    m.analytics_rows
                        .with_label_values(&["clickhouse"])
                        .inc_by(self.rows.len() as u64);
                    self.rows.clear();
                }
                Err(e) => {
                    m.analytics_errors.with_label_values(&["clickhouse"]).inc();
                    tracing::warn!(error = %e, rows = self.rows.len(), "ClickHouse insert failed; retrying");
                    self.nap(backoff).await?;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        Ok(())
    }

    fn pending_positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .map(|((topic, partition), next_offset)| Position {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next_offset,
            })
            .collect()
    }

    /// Commits the positions of what has been written.
    async fn commit(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), SinkError> {
        if !self.rows.is_empty() || self.positions.is_empty() {
            return Ok(());
        }
        let positions = self.pending_positions();
        self.positions.clear();
        self.since = None;
        if let Err(e) = consumer.commit(&positions).await {
            // The rows are in ClickHouse; a redelivery collapses into them.
            tracing::warn!(group = GROUP, error = %e, "offset commit failed");
        }
        Ok(())
    }

    async fn flush(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), SinkError> {
        self.write_batch().await?;
        self.commit(consumer).await
    }

    /// Rewinds on replay requests (after flushing, so no buffered position moves it back on).
    /// ClickHouse rows are not deleted: a rewind only rewrites rows that collapse.
    async fn apply_seeks(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), SinkError> {
        let due = seeks::due(&self.ctx.store, GROUP, self.seen_seek).await?;
        if due.is_empty() {
            return Ok(());
        }
        self.flush(consumer).await?;
        for req in due {
            self.seen_seek = self.seen_seek.max(req.id);
            if !self.topics.contains(&req.topic) || !consumer.ensure_active().await? {
                continue;
            }
            let positions = consumer.resolve(&req.topic, req.target()).await?;
            if !consumer.offsets_in_store() {
                consumer.commit(&positions).await?;
            }
            let mut tx = self.ctx.store.begin().await?;
            if consumer.offsets_in_store() {
                consumer.commit_in(&mut tx, &positions).await?;
            }
            seeks::mark_applied(&mut tx, req.id).await?;
            tx.commit().await?;
            consumer.seek(&positions).await?;
            tracing::info!(group = GROUP, topic = %req.topic, mode = %req.mode, "replay applied");
        }
        Ok(())
    }
}
