//! The production column's telemetry tables in ClickHouse (the server of
//! `analytics.clickhouse_url`): series, samples, rollups and log lines, each a
//! ReplacingMergeTree keyed by the row's identity so a redelivered batch collapses into the
//! rows it repeats (reads use `FINAL`). Samples and logs are partitioned by day, rollups by
//! (resolution, day), so retention drops whole partitions: ClickHouse 18.16 has no table
//! TTL. Rollup buckets are recomputed from their source with `INSERT … SELECT` and a rising
//! version, the newest computation winning. The DDL keeps to what 18.16 understands (no
//! DateTime64, no LowCardinality) and still runs on current releases.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::read::{Bucket, LastTotals, LogEntry, LogFilter, Point, SeriesInfo};
use super::{RESOLUTIONS, Touched};
use crate::analytics::clickhouse::{ChError, ClickHouse};
use crate::store::now_micros;
use crate::telemetry::model::{self, Batch};

pub type ChResult<T> = Result<T, clickhouse::error::Error>;

const DDL: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS telemetry_series (org String, series_id Int64, name String, \
     labels String) ENGINE = ReplacingMergeTree() ORDER BY (org, series_id)",
    "CREATE TABLE IF NOT EXISTS telemetry_samples (org String, series_id Int64, ts_ms Int64, \
     day Date, value Float64) ENGINE = ReplacingMergeTree() PARTITION BY day \
     ORDER BY (org, series_id, ts_ms)",
    "CREATE TABLE IF NOT EXISTS telemetry_rollups (org String, series_id Int64, \
     resolution_ms Int64, bucket_ms Int64, day Date, min_v Float64, max_v Float64, \
     sum_v Float64, count_v UInt64, last_ts_ms Int64, last_v Float64, version UInt64) \
     ENGINE = ReplacingMergeTree(version) PARTITION BY (resolution_ms, day) \
     ORDER BY (org, series_id, resolution_ms, bucket_ms)",
    "CREATE TABLE IF NOT EXISTS telemetry_logs (org String, line_id Int64, ts_ns Int64, \
     day Date, service String, level String, message String, labels String, \
     attributes String) ENGINE = ReplacingMergeTree() PARTITION BY day \
     ORDER BY (org, ts_ns, line_id)",
];

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct SeriesRow {
    org: String,
    series_id: i64,
    name: String,
    labels: String,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct SampleRow {
    org: String,
    series_id: i64,
    ts_ms: i64,
    /// Days since 1970-01-01 (`Date` in RowBinary).
    day: u16,
    value: f64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct LogRow {
    org: String,
    line_id: i64,
    ts_ns: i64,
    day: u16,
    service: String,
    level: String,
    message: String,
    labels: String,
    attributes: String,
}

/// The day of a unix-millisecond time, as ClickHouse's `Date` (clamped to its range).
fn day_of(ms: i64) -> u16 {
    ms.div_euclid(86_400_000).clamp(0, i64::from(u16::MAX)) as u16
}

pub struct ChTelemetry {
    /// The analytics server and database.
    ch: ClickHouse,
    /// Bound to the database.
    client: Client,
    schema: OnceCell<()>,
}

impl ChTelemetry {
    pub fn new(ch: ClickHouse) -> Self {
        Self {
            client: ch.client().clone(),
            ch,
            schema: OnceCell::new(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the tables once per process (the database exists: `ensure_database`).
    pub async fn ensure_schema(&self) -> ChResult<()> {
        self.schema
            .get_or_try_init(|| async {
                self.ch.ensure_database().await.map_err(|e| match e {
                    ChError::Client(c) => c,
                    other => clickhouse::error::Error::Custom(other.to_string()),
                })?;
                for ddl in DDL {
                    self.client.query(ddl).execute().await?;
                }
                Ok::<(), clickhouse::error::Error>(())
            })
            .await?;
        Ok(())
    }

    pub async fn write(&self, org: &str, batch: &Batch) -> ChResult<()> {
        self.ensure_schema().await?;
        if !batch.timeseries.is_empty() {
            let mut ins = self.client.insert::<SeriesRow>("telemetry_series").await?;
            for s in &batch.timeseries {
                ins.write(&SeriesRow {
                    org: org.to_string(),
                    series_id: model::series_id(&s.labels),
                    name: model::metric_name(&s.labels).to_string(),
                    labels: model::labels_json(&s.labels),
                })
                .await?;
            }
            ins.end().await?;
            let mut ins = self.client.insert::<SampleRow>("telemetry_samples").await?;
            for s in &batch.timeseries {
                let id = model::series_id(&s.labels);
                for x in &s.samples {
                    ins.write(&SampleRow {
                        org: org.to_string(),
                        series_id: id,
                        ts_ms: x.timestamp,
                        day: day_of(x.timestamp),
                        value: x.value,
                    })
                    .await?;
                }
            }
            ins.end().await?;
        }
        self.write_logs(org, batch).await?;
        self.refresh_rollups(org, &Touched::of(batch)).await
    }

    async fn write_logs(&self, org: &str, batch: &Batch) -> ChResult<()> {
        if batch.logs.is_empty() {
            return Ok(());
        }
        let mut ins = self.client.insert::<LogRow>("telemetry_logs").await?;
        for l in &batch.logs {
            ins.write(&LogRow {
                org: org.to_string(),
                line_id: model::line_id(l),
                ts_ns: l.ts_ns,
                day: day_of(l.ts_ns.div_euclid(1_000_000)),
                service: l.service.clone(),
                level: l.level.clone(),
                message: l.message.clone(),
                labels: model::labels_json(&l.labels),
                attributes: l.attributes.clone(),
            })
            .await?;
        }
        ins.end().await
    }

    /// Recomputes the touched buckets of every resolution, finest first.
    async fn refresh_rollups(&self, org: &str, t: &Touched) -> ChResult<()> {
        let Some((min_ts, max_ts)) = t.range else {
            return Ok(());
        };
        let version = now_micros().max(0) as u64;
        let mut finer: Option<i64> = None;
        for res in RESOLUTIONS {
            let from = min_ts - min_ts.rem_euclid(res);
            let to = max_ts - max_ts.rem_euclid(res) + res;
            for ids in t.series.chunks(1000) {
                // Integers only: formatting them into the statement is safe. `intDiv` rather
                // than `%`: 18.16 types `Int64 % 60000` by the small constant and wraps.
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                let source = match finer {
                    None => format!(
                        "SELECT org, series_id, intDiv(ts_ms, toInt64({res})) * toInt64({res}) AS b, min(value) AS mn, \
                         max(value) AS mx, sum(value) AS sm, count() AS n, max(ts_ms) AS lt, \
                         argMax(value, ts_ms) AS lv FROM telemetry_samples FINAL \
                         WHERE org = ? AND ts_ms >= {from} AND ts_ms < {to} \
                         AND series_id IN ({list}) GROUP BY org, series_id, b"
                    ),
                    Some(f) => format!(
                        "SELECT org, series_id, intDiv(bucket_ms, toInt64({res})) * toInt64({res}) AS b, \
                         min(min_v) AS mn, max(max_v) AS mx, sum(sum_v) AS sm, \
                         sum(count_v) AS n, max(last_ts_ms) AS lt, \
                         argMax(last_v, last_ts_ms) AS lv FROM telemetry_rollups FINAL \
                         WHERE org = ? AND resolution_ms = {f} AND bucket_ms >= {from} \
                         AND bucket_ms < {to} AND series_id IN ({list}) \
                         GROUP BY org, series_id, b"
                    ),
                };
                let sql = format!(
                    "INSERT INTO telemetry_rollups (org, series_id, resolution_ms, bucket_ms, day, \
                     min_v, max_v, sum_v, count_v, last_ts_ms, last_v, version) \
                     SELECT org, series_id, toInt64({res}), b, \
                     toDate(toDateTime(intDiv(b, 1000))), mn, mx, sm, toUInt64(n), lt, lv, \
                     toUInt64({version}) FROM ({source})"
                );
                self.client.query(&sql).bind(org).execute().await?;
            }
            finer = Some(res);
        }
        Ok(())
    }

    /// Drops the day partitions wholly older than each table's cutoff (unix milliseconds).
    pub async fn expire(&self, raw_ms: i64, rollups: &[(i64, i64)], logs_ms: i64) -> ChResult<u64> {
        self.ensure_schema().await?;
        let mut dropped = 0;
        for table in ["telemetry_samples", "telemetry_rollups", "telemetry_logs"] {
            let parts: Vec<String> = self
                .client
                .query(
                    "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() \
                     AND table = ? AND active",
                )
                .bind(table)
                .fetch_all::<String>()
                .await?;
            for p in parts {
                let Some((res, day)) = parse_partition(&p) else {
                    continue;
                };
                let cutoff = match (table, res) {
                    ("telemetry_samples", _) => raw_ms,
                    ("telemetry_logs", _) => logs_ms,
                    (_, Some(r)) => rollups
                        .iter()
                        .find(|(res, _)| *res == r)
                        .map_or(i64::MIN, |(_, c)| *c),
                    _ => continue,
                };
                // The whole day must lie before the cutoff.
                if (day + 1) * 86_400_000 <= cutoff {
                    // Written out from the parsed parts: 18.16 lists a Date key unquoted.
                    let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default();
                    let expr = match res {
                        Some(r) => format!("({r}, '{date}')"),
                        None => format!("'{date}'"),
                    };
                    self.client
                        .query(&format!("ALTER TABLE {table} DROP PARTITION {expr}"))
                        .execute()
                        .await?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Empties every table (a rebuild by replay).
    pub async fn reset(&self) -> ChResult<()> {
        self.ensure_schema().await?;
        for t in [
            "telemetry_series",
            "telemetry_samples",
            "telemetry_rollups",
            "telemetry_logs",
        ] {
            self.client
                .query(&format!("TRUNCATE TABLE {t}"))
                .execute()
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Row, Deserialize)]
struct SeriesLabels {
    series_id: i64,
    labels: String,
}

/// `1,2,3` (integers only, so formatting them into a statement is safe).
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

impl ChTelemetry {
    pub async fn series(&self, org: &str, name: Option<&str>) -> ChResult<Vec<SeriesInfo>> {
        self.ensure_schema().await?;
        let filter = if name.is_some() { "AND name = ?" } else { "" };
        let mut q = self
            .client
            .query(&format!(
                "SELECT series_id, labels FROM telemetry_series FINAL WHERE org = ? {filter} \
                 ORDER BY labels"
            ))
            .bind(org);
        if let Some(n) = name {
            q = q.bind(n);
        }
        let rows = q.fetch_all::<SeriesLabels>().await?;
        Ok(rows
            .iter()
            .map(|r| SeriesInfo::from_json(r.series_id, &r.labels))
            .collect())
    }

    pub async fn samples(
        &self,
        org: &str,
        ids: &[i64],
        from: i64,
        to: i64,
    ) -> ChResult<Vec<Point>> {
        self.ensure_schema().await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT series_id, ts_ms, value FROM telemetry_samples FINAL WHERE org = ? \
                 AND ts_ms >= {from} AND ts_ms < {to} AND series_id IN ({}) \
                 ORDER BY series_id, ts_ms",
                id_list(chunk)
            );
            out.extend(
                self.client
                    .query(&sql)
                    .bind(org)
                    .fetch_all::<Point>()
                    .await?,
            );
        }
        Ok(out)
    }

    pub async fn buckets(
        &self,
        org: &str,
        ids: &[i64],
        res: i64,
        from: i64,
        to: i64,
    ) -> ChResult<Vec<Bucket>> {
        self.ensure_schema().await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT series_id, bucket_ms, min_v, max_v, sum_v, toInt64(count_v) AS count_v, \
                 last_ts_ms, last_v FROM telemetry_rollups FINAL WHERE org = ? \
                 AND resolution_ms = {res} AND bucket_ms >= {from} AND bucket_ms < {to} \
                 AND series_id IN ({}) ORDER BY series_id, bucket_ms",
                id_list(chunk)
            );
            out.extend(
                self.client
                    .query(&sql)
                    .bind(org)
                    .fetch_all::<Bucket>()
                    .await?,
            );
        }
        Ok(out)
    }

    /// [`super::Telemetry::last_totals`] in ClickHouse (`FINAL`: a replayed batch's rows
    /// count once).
    pub async fn last_totals(
        &self,
        org: &str,
        ids: &[i64],
        res: i64,
        (from, to): (i64, i64),
        fresh_ms: i64,
    ) -> ChResult<Vec<LastTotals>> {
        self.ensure_schema().await?;
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT bucket_ms, sum(last_v) AS sum_v, toInt64(count()) AS count_v, \
                 min(last_v) AS min_v, max(last_v) AS max_v FROM telemetry_rollups FINAL \
                 WHERE org = ? AND resolution_ms = {res} AND bucket_ms >= {from} \
                 AND bucket_ms < {to} AND last_ts_ms > bucket_ms + {fresh_ms} \
                 AND series_id IN ({}) GROUP BY bucket_ms",
                id_list(chunk)
            );
            out.extend(
                self.client
                    .query(&sql)
                    .bind(org)
                    .fetch_all::<LastTotals>()
                    .await?,
            );
        }
        Ok(out)
    }

    /// Log lines of `org` matching `f`, newest first. The day bounds let ClickHouse skip
    /// partitions outside the range.
    pub async fn logs(&self, org: &str, f: &LogFilter) -> ChResult<Vec<LogEntry>> {
        self.ensure_schema().await?;
        let (cur_ts, cur_id) = f.before.unwrap_or((i64::MAX, i64::MAX));
        let mut sql = format!(
            "SELECT line_id, ts_ns, service, level, message, labels, attributes \
             FROM telemetry_logs FINAL WHERE org = ? AND ts_ns >= {} AND ts_ns < {} \
             AND (ts_ns < {cur_ts} OR (ts_ns = {cur_ts} AND line_id < {cur_id}))",
            f.from_ns, f.to_ns
        );
        if f.service.is_some() {
            sql.push_str(" AND service = ?");
        }
        if f.level.is_some() {
            sql.push_str(" AND level = ?");
        }
        if f.text.is_some() {
            sql.push_str(" AND position(message, ?) > 0");
        }
        for _ in &f.labels {
            sql.push_str(" AND position(labels, ?) > 0");
        }
        sql.push_str(&format!(
            " ORDER BY ts_ns DESC, line_id DESC LIMIT {}",
            f.limit.max(1)
        ));
        let mut q = self.client.query(&sql).bind(org);
        for v in [&f.service, &f.level, &f.text].into_iter().flatten() {
            q = q.bind(v.as_str());
        }
        for (k, v) in &f.labels {
            let pair = format!(
                "{}:{}",
                serde_json::to_string(k).unwrap_or_default(),
                serde_json::to_string(v).unwrap_or_default()
            );
            q = q.bind(pair);
        }
        q.fetch_all::<LogEntry>().await
    }
}

/// `2026-12-01` or `'2026-12-01'` → (None, day) and `(60000,'2026-12-01')` → (Some(60000),
/// day), the day in
/// days since 1970-01-01; anything else (a partition this code did not make) → None.
fn parse_partition(p: &str) -> Option<(Option<i64>, i64)> {
    let (res, date) = match p.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        Some(inner) => {
            let (r, d) = inner.split_once(',')?;
            (Some(r.trim().parse::<i64>().ok()?), d.trim())
        }
        None => (None, p.trim()),
    };
    // Quoted inside a tuple, bare on its own (as 18.16 lists them).
    let date = date.trim_matches('\'');
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((res, (d - epoch).num_days()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn partitions_parse() {
        assert_eq!(super::parse_partition("'1970-01-02'"), Some((None, 1)));
        assert_eq!(super::parse_partition("1970-01-02"), Some((None, 1)));
        assert_eq!(
            super::parse_partition("(60000,'1970-01-03')"),
            Some((Some(60000), 2))
        );
        assert_eq!(super::parse_partition("202612"), None);
        assert_eq!(super::day_of(86_400_000 * 3 + 5), 3);
    }
}
