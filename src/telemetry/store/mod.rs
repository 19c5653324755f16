//! The `telemetry` consumer group: reads `internal.telemetry.batches` (one event per accepted
//! ingest request), fetches a claim-checked batch from the object store, and writes series,
//! samples, 1m/5m/1h rollups and log lines of the event's org: into the store's tables on the
//! embedded column (`embedded.rs`, inside the consumer's transaction), or into ClickHouse when
//! `analytics.clickhouse_url` is set (`clickhouse.rs`). Both writers are idempotent, so a
//! replayed batch changes nothing, and `replay --rebuild` empties the tables and rebuilds
//! them (rollups included) from the log. Retention (`telemetry.storage`) and the settling
//! of whole-metric rollups (`metric.rs`, embedded column) run beside the group in the
//! `consumers` role.

pub mod clickhouse;
pub mod config;
pub mod embedded;
pub mod metric;
pub mod read;
pub mod rollup;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use prost::Message;
use tokio_util::sync::CancellationToken;

pub use config::StorageConfig;

use self::clickhouse::ChTelemetry;
use crate::app::AppContext;
use crate::consumers::{BatchApply, Emitter, Envelope, Handler, HandlerError};
use crate::store::{Store, StoreError, Tx};
use crate::telemetry::ingest::TOPIC;
use crate::telemetry::model::Batch;
use read::{Bucket, LastTotals, LogEntry, LogFilter, Point, SeriesInfo};

pub const GROUP: &str = "telemetry";

/// Rollup resolutions in milliseconds, finest first.
pub const RESOLUTIONS: [i64; 3] = [60_000, 300_000, 3_600_000];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
}

/// What a batch touched: its series (sorted, distinct) and the span of its sample times.
pub struct Touched {
    pub series: Vec<i64>,
    pub range: Option<(i64, i64)>,
}

impl Touched {
    pub fn of(batch: &Batch) -> Self {
        let mut series: Vec<i64> = batch
            .timeseries
            .iter()
            .map(|s| crate::telemetry::model::series_id(&s.labels))
            .collect();
        series.sort_unstable();
        series.dedup();
        let times = batch
            .timeseries
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.timestamp));
        let range = times.fold(None, |acc: Option<(i64, i64)>, t| {
            Some(acc.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
        });
        Self { series, range }
    }
}

/// Where telemetry is kept: the store, or ClickHouse. The one seam between the columns.
pub struct Telemetry {
    store: Store,
    clickhouse: Option<ChTelemetry>,
}

impl Telemetry {
    pub fn new(store: Store, analytics: &crate::analytics::Analytics) -> Self {
        Self {
            store,
            clickhouse: analytics.clickhouse().map(|c| ChTelemetry::new(c.clone())),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn clickhouse(&self) -> Option<&ChTelemetry> {
        self.clickhouse.as_ref()
    }

    /// Writes one batch of `org` (in `tx` on the embedded column).
    pub async fn write(&self, tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), TelemetryError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch.write(org, batch).await?),
            None => Ok(embedded::write(tx, org, batch).await?),
        }
    }

    /// Applies `cfg`'s retention as of `now_ms`.
    pub async fn expire(&self, cfg: &StorageConfig, now_ms: i64) -> Result<u64, TelemetryError> {
        let day = 86_400_000i64;
        let cut = |days: u64| now_ms.saturating_sub((days as i64).saturating_mul(day));
        let rollups: Vec<(i64, i64)> = RESOLUTIONS
            .iter()
            .map(|r| (*r, cut(cfg.rollup_retention_days(*r))))
            .collect();
        let (raw, logs) = (cut(cfg.raw_retention_days), cut(cfg.logs_retention_days));
        match &self.clickhouse {
            Some(ch) => Ok(ch.expire(raw, &rollups, logs).await?),
            None => {
                let mut tx = self.store.begin().await?;
                let n = embedded::expire(&mut tx, raw, &rollups, logs).await?;
                tx.commit().await?;
                Ok(n)
            }
        }
    }
}

impl Telemetry {
    /// The series of `org` (only those named `name`, when given).
    pub async fn series(
        &self,
        org: &str,
        name: Option<&str>,
    ) -> Result<Vec<SeriesInfo>, TelemetryError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch.series(org, name).await?),
            None => Ok(embedded::series(&self.store, org, name).await?),
        }
    }

    /// Raw samples of `ids` over `[from, to)` ms.
    pub async fn samples(
        &self,
        org: &str,
        ids: &[i64],
        from: i64,
        to: i64,
    ) -> Result<Vec<Point>, TelemetryError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch.samples(org, ids, from, to).await?),
            None => Ok(embedded::samples(&self.store, org, ids, from, to).await?),
        }
    }

    /// Rollup buckets of `ids` at resolution `res` ms starting in `[from, to)`.
    pub async fn buckets(
        &self,
        org: &str,
        ids: &[i64],
        res: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<Bucket>, TelemetryError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch.buckets(org, ids, res, from, to).await?),
            None => Ok(embedded::buckets(&self.store, org, ids, res, from, to).await?),
        }
    }

    /// Per `res` bucket starting in `[from, to)`: the sum, count, min and max of the `last`
    /// values of `ids`' buckets whose last sample is later than `bucket + fresh_ms` (an
    /// aggregation over an instant selector, pushed down to the store: one row per bucket
    /// leaves it instead of one per series and bucket). Buckets without any are absent.
    pub async fn last_totals(
        &self,
        org: &str,
        ids: &[i64],
        res: i64,
        (from, to): (i64, i64),
        fresh_ms: i64,
    ) -> Result<Vec<LastTotals>, TelemetryError> {
        let parts = match &self.clickhouse {
            Some(ch) => ch.last_totals(org, ids, res, (from, to), fresh_ms).await?,
            None => embedded::last_totals(&self.store, org, ids, res, (from, to), fresh_ms).await?,
        };
        Ok(read::merge_totals(parts))
    }

    /// The whole-metric totals of `name` at `res` for buckets starting in `[from, to)`
    /// (`metric.rs`): what `sum(name)` and its kin read per step. `None` on ClickHouse, which
    /// keeps no such table (its own scans are columnar); callers then use [`Self::last_totals`].
    pub async fn metric_totals(
        &self,
        org: &str,
        name: &str,
        res: i64,
        span: (i64, i64),
    ) -> Result<Option<Vec<metric::MetricTotals>>, TelemetryError> {
        match &self.clickhouse {
            Some(_) => Ok(None),
            None => Ok(Some(
                metric::totals(&self.store, org, name, res, span).await?,
            )),
        }
    }

    /// Log lines of `org` by filter, newest first.
    pub async fn logs(&self, org: &str, f: &LogFilter) -> Result<Vec<LogEntry>, TelemetryError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch.logs(org, f).await?),
            None => Ok(embedded::logs(&self.store, org, f).await?),
        }
    }
}

/// The consumer group's handler.
pub struct TelemetryWriter {
    ctx: AppContext,
}

impl TelemetryWriter {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }

    /// The event's org and batch (fetched from the object store when claim-checked).
    async fn batch_of(&self, ev: &Envelope) -> Result<(String, Batch), HandlerError> {
        let org = ev
            .str_field("org")
            .ok_or_else(|| HandlerError::Reject("a telemetry batch without an org".into()))?
            .to_string();
        Ok((org, load_batch(&self.ctx.objects, &ev.payload).await?))
    }
}

/// The batch an `internal.telemetry.batches` payload (its JSON form) carries: inline, or
/// fetched from the object store when claim-checked. Shared by the writer and the live tail.
pub async fn load_batch(
    objects: &crate::objects::Objects,
    payload: &serde_json::Value,
) -> Result<Batch, HandlerError> {
    let field = |name: &str| payload.get(name).and_then(serde_json::Value::as_str);
    let bytes: Vec<u8> = match field("claim") {
        Some(key) => objects
            .get(key)
            .await
            .map_err(|e| HandlerError::Retry(format!("fetching claim {key}: {e}")))?
            .ok_or_else(|| HandlerError::Reject(format!("claim {key} is missing")))?
            .to_vec(),
        None => base64::engine::general_purpose::STANDARD
            .decode(field("batch").unwrap_or(""))
            .map_err(|e| HandlerError::Reject(format!("batch is not base64: {e}")))?,
    };
    Batch::decode(bytes.as_slice())
        .map_err(|e| HandlerError::Reject(format!("batch does not decode: {e}")))
}

#[async_trait]
impl Handler for TelemetryWriter {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        vec![TOPIC.to_string()]
    }

    fn max_batch(&self) -> Option<usize> {
        Some(self.ctx.config.telemetry.storage.events_per_transaction)
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        _out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        self.apply_batch(&[ev], tx).await
    }

    fn batch(&self) -> Option<&dyn BatchApply> {
        Some(self)
    }

    async fn reset(&self, tx: &mut Tx) -> Result<bool, HandlerError> {
        match self.ctx.telemetry.clickhouse() {
            Some(ch) => ch
                .reset()
                .await
                .map_err(|e| HandlerError::Retry(e.to_string()))?,
            None => embedded::reset(tx).await?,
        }
        Ok(true)
    }
}

#[async_trait]
impl BatchApply for TelemetryWriter {
    /// The run's requests of each org written as one batch, in log order: a table gets one
    /// statement per org and run instead of one per request, a series named by several
    /// requests is inserted once, and a bucket they share is folded in memory and merged once.
    /// The result is the one request-by-request writing gives (every write is an idempotent
    /// insert or an order-independent merge; of two samples with one timestamp the earlier in
    /// the log is kept either way). An event that cannot be read fails the run, and the
    /// runtime then applies the events one by one to dead-letter it alone.
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError> {
        let mut by_org: Vec<(String, Batch)> = Vec::new();
        for ev in evs {
            let (org, batch) = self.batch_of(ev).await?;
            match by_org.iter_mut().find(|(o, _)| *o == org) {
                Some((_, all)) => {
                    all.timeseries.extend(batch.timeseries);
                    all.logs.extend(batch.logs);
                }
                None => by_org.push((org, batch)),
            }
        }
        for (org, batch) in &by_org {
            self.ctx
                .telemetry
                .write(tx, org, batch)
                .await
                .map_err(|e| match e {
                    TelemetryError::Store(s) => HandlerError::Store(s),
                    // ClickHouse away: retried with backoff, then dead-lettered for a redrive.
                    TelemetryError::ClickHouse(c) => HandlerError::Retry(c.to_string()),
                })?;
        }
        Ok(())
    }
}

/// Applies retention every `telemetry.storage.expire_every_secs` and settles whole-metric
/// rollups every `telemetry.storage.settle_every_ms` (embedded column) until `shutdown`.
pub async fn run_upkeep(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cfg = ctx.config.telemetry.storage.clone();
    let mut expire = tokio::time::interval(Duration::from_secs(cfg.expire_every_secs.max(1)));
    let mut settle = tokio::time::interval(Duration::from_millis(cfg.settle_every_ms.max(10)));
    settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let embedded = ctx.telemetry.clickhouse().is_none();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = expire.tick() => {
                let now = chrono::Utc::now().timestamp_millis();
                match ctx.telemetry.expire(&cfg, now).await {
                    Ok(n) => tracing::debug!(removed = n, "telemetry retention applied"),
                    Err(e) => tracing::warn!(error = %e, "telemetry retention failed; retrying later"),
                }
            }
            _ = settle.tick(), if embedded => settle_all(ctx.telemetry.store(), &shutdown).await,
        }
    }
}

/// Settling rounds while they come back full (a backlog), at most 16 per tick so a writer
/// that keeps touching buckets does not keep the settler going.
async fn settle_all(store: &Store, shutdown: &CancellationToken) {
    for _ in 0..16 {
        if shutdown.is_cancelled() {
            return;
        }
        match metric::settle(store).await {
            Ok(n) => {
                tracing::debug!(rows = n, "whole-metric rollups settled");
                if n < metric::SETTLE_ROWS {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "settling whole-metric rollups failed; retrying later");
                return;
            }
        }
    }
}

/// The writer for the registry (an `Arc<dyn Handler>`).
pub fn handler(ctx: &AppContext) -> Arc<dyn Handler> {
    Arc::new(TelemetryWriter::new(ctx.clone()))
}
