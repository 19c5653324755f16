//! The embedded column's telemetry tables (migration 0010), written inside the consumer's
//! transaction so the inbox record, the rows and the log position commit together. Every
//! write is idempotent: series, samples and log lines are inserted with `ON CONFLICT DO
//! NOTHING`, and only the samples an insert actually added (its `RETURNING` rows) are folded
//! into the 1m/5m/1h buckets and merged into the stored ones (`rollup.rs` says why that is
//! exact), so a replayed or retried batch changes nothing and late samples land in their
//! buckets. Each statement is one bulk insert per table (`store::bulk`: one `UNNEST`
//! statement on PostgreSQL), so a batch costs a handful of statements, not one per row.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::store::bulk::{self, Column};
use crate::store::{Store, StoreError, Tx, dialect, now_micros};
use crate::telemetry::model::{self, Batch};
use crate::{on_read, on_tx};

use super::metric;
use super::read::{
    Bucket, LastTotals, LogEntry, LogFilter, Point, SeriesInfo, label_pattern, like_escape,
};
use super::rollup::{self, Agg};

/// Series ids per read statement.
const IDS_CHUNK: usize = 400;

/// Inserts the batch's series, samples and log lines, then merges the new samples into the
/// rollups.
pub async fn write(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    // Each series' id (a hash of its labels), computed once for both tables.
    let ids: Vec<i64> = batch
        .timeseries
        .iter()
        .map(|s| model::series_id(&s.labels))
        .collect();
    write_series(tx, org, batch, &ids).await?;
    let fresh = write_samples(tx, org, batch, &ids).await?;
    write_logs(tx, org, batch).await?;
    let aggs = rollup::fold(&fresh);
    merge_rollups(tx, org, &aggs).await?;
    metric::touch(tx, org, &metric_keys(batch, &ids, &aggs)).await
}

/// The (metric name, resolution, bucket) keys of folded buckets (`ids`: the batch's series'
/// ids, in order), distinct and sorted.
fn metric_keys<'b>(batch: &'b Batch, ids: &[i64], aggs: &[Agg]) -> BTreeSet<(&'b str, i64, i64)> {
    let names: HashMap<i64, &str> = ids
        .iter()
        .zip(&batch.timeseries)
        .map(|(id, s)| (*id, model::metric_name(&s.labels)))
        .collect();
    aggs.iter()
        .filter_map(|a| {
            let name = names.get(&a.series_id)?;
            Some((*name, a.resolution_ms, a.bucket_ms))
        })
        .collect()
}

/// Inserts the batch's series (`ids`: theirs, in order) that are not stored yet, each once
/// (a batch merged from several requests names a series in each).
async fn write_series(
    tx: &mut Tx,
    org: &str,
    batch: &Batch,
    ids: &[i64],
) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    let first: Vec<usize> = (0..ids.len()).filter(|&i| seen.insert(ids[i])).collect();
    let n = first.len();
    let labels: Vec<String> = first
        .iter()
        .map(|&i| model::labels_json(&batch.timeseries[i].labels))
        .collect();
    let names = first
        .iter()
        .map(|&i| model::metric_name(&batch.timeseries[i].labels))
        .collect();
    let columns = [
        ("org", Column::Text(vec![org; n])),
        (
            "series_id",
            Column::BigInt(first.iter().map(|&i| ids[i]).collect()),
        ),
        ("name", Column::Text(names)),
        (
            "labels",
            Column::Text(labels.iter().map(String::as_str).collect()),
        ),
        ("created_at", Column::BigInt(vec![now_micros(); n])),
    ];
    bulk::insert_columns_tail(
        tx,
        "telemetry_series",
        &columns,
        " ON CONFLICT (org, series_id) DO NOTHING",
    )
    .await
}

/// Inserts the batch's samples (`series_ids`: their series' ids, in order); returns those
/// that were not stored before (series id, unix ms, value).
async fn write_samples(
    tx: &mut Tx,
    org: &str,
    batch: &Batch,
    series_ids: &[i64],
) -> Result<Vec<(i64, i64, f64)>, StoreError> {
    let (mut ids, mut times, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (s, &id) in batch.timeseries.iter().zip(series_ids) {
        for x in &s.samples {
            ids.push(id);
            times.push(x.timestamp);
            values.push(x.value);
        }
    }
    let n = ids.len();
    let columns = [
        ("org", Column::Text(vec![org; n])),
        ("series_id", Column::BigInt(ids)),
        ("ts_ms", Column::BigInt(times)),
        ("value", Column::Float(values)),
    ];
    bulk::insert_columns_returning(
        tx,
        "telemetry_samples",
        &columns,
        " ON CONFLICT (org, series_id, ts_ms) DO NOTHING RETURNING series_id, ts_ms, value",
    )
    .await
}

async fn write_logs(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    let logs = &batch.logs;
    let n = logs.len();
    let labels: Vec<String> = logs.iter().map(|l| model::labels_json(&l.labels)).collect();
    let columns = [
        ("org", Column::Text(vec![org; n])),
        (
            "line_id",
            Column::BigInt(logs.iter().map(model::line_id).collect()),
        ),
        (
            "ts_ns",
            Column::BigInt(logs.iter().map(|l| l.ts_ns).collect()),
        ),
        (
            "service",
            Column::Text(logs.iter().map(|l| l.service.as_str()).collect()),
        ),
        (
            "level",
            Column::Text(logs.iter().map(|l| l.level.as_str()).collect()),
        ),
        (
            "message",
            Column::Text(logs.iter().map(|l| l.message.as_str()).collect()),
        ),
        (
            "labels",
            Column::Text(labels.iter().map(String::as_str).collect()),
        ),
        (
            "attributes",
            Column::Text(logs.iter().map(|l| l.attributes.as_str()).collect()),
        ),
    ];
    bulk::insert_columns_tail(
        tx,
        "telemetry_logs",
        &columns,
        " ON CONFLICT (org, line_id) DO NOTHING",
    )
    .await
}

/// Merges folded buckets into the stored ones: a new bucket is inserted, an existing one
/// takes the smaller min, the larger max, both sums and counts, and the later last.
async fn merge_rollups(tx: &mut Tx, org: &str, aggs: &[Agg]) -> Result<(), StoreError> {
    if aggs.is_empty() {
        return Ok(());
    }
    let (greatest, least) = dialect::greatest_least(tx.backend());
    let t = "telemetry_rollups";
    let tail = format!(
        " ON CONFLICT (org, series_id, resolution_ms, bucket_ms) DO UPDATE SET \
         min_v = {least}({t}.min_v, excluded.min_v), max_v = {greatest}({t}.max_v, excluded.max_v), \
         sum_v = {t}.sum_v + excluded.sum_v, count_v = {t}.count_v + excluded.count_v, \
         last_ts_ms = {greatest}({t}.last_ts_ms, excluded.last_ts_ms), \
         last_v = CASE WHEN excluded.last_ts_ms > {t}.last_ts_ms THEN excluded.last_v \
         ELSE {t}.last_v END"
    );
    let col = |f: fn(&Agg) -> i64| Column::BigInt(aggs.iter().map(f).collect());
    let fcol = |f: fn(&Agg) -> f64| Column::Float(aggs.iter().map(f).collect());
    let columns = [
        ("org", Column::Text(vec![org; aggs.len()])),
        ("series_id", col(|a| a.series_id)),
        ("resolution_ms", col(|a| a.resolution_ms)),
        ("bucket_ms", col(|a| a.bucket_ms)),
        ("min_v", fcol(|a| a.min)),
        ("max_v", fcol(|a| a.max)),
        ("sum_v", fcol(|a| a.sum)),
        ("count_v", col(|a| a.count)),
        ("last_ts_ms", col(|a| a.last_ts)),
        ("last_v", fcol(|a| a.last)),
    ];
    bulk::insert_columns_tail(tx, t, &columns, &tail).await
}

/// Deletes what is older than each table's retention (`cutoff_*` in unix milliseconds).
pub async fn expire(
    tx: &mut Tx,
    raw_ms: i64,
    rollups: &[(i64, i64)],
    logs_ms: i64,
) -> Result<u64, StoreError> {
    let mut n = 0;
    on_tx!(tx, c => {
        n += sqlx::query("DELETE FROM telemetry_samples WHERE ts_ms < $1")
            .bind(raw_ms)
            .execute(&mut *c)
            .await?
            .rows_affected();
        for (res, cutoff) in rollups {
            for t in ["telemetry_rollups", "telemetry_metric_rollups"] {
                let sql = format!("DELETE FROM {t} WHERE resolution_ms = $1 AND bucket_ms < $2");
                n += sqlx::query(&sql)
                    .bind(*res)
                    .bind(*cutoff)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
            }
        }
        n += sqlx::query("DELETE FROM telemetry_logs WHERE ts_ns < $1")
            .bind(logs_ms.saturating_mul(1_000_000))
            .execute(&mut *c)
            .await?
            .rows_affected();
    });
    Ok(n)
}

/// Empties every telemetry table (a rebuild by replay).
pub async fn reset(tx: &mut Tx) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        for t in [
            "telemetry_series",
            "telemetry_samples",
            "telemetry_rollups",
            "telemetry_metric_rollups",
            "telemetry_logs",
        ] {
            sqlx::query(&format!("DELETE FROM {t}")).execute(&mut *c).await?;
        }
    });
    Ok(())
}

/// `$first+1, …` for `n` parameters.
fn list(n: usize, first: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The series of `org`, optionally only those named `name`.
pub async fn series(
    store: &Store,
    org: &str,
    name: Option<&str>,
) -> Result<Vec<SeriesInfo>, StoreError> {
    let filter = if name.is_some() {
        "AND name = $2"
    } else {
        "AND $2 = $2"
    };
    let sql = format!(
        "SELECT series_id, labels FROM telemetry_series WHERE org = $1 {filter} ORDER BY labels"
    );
    let rows: Vec<(i64, String)> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org).bind(name.unwrap_or("")).fetch_all(p).await?
    });
    Ok(rows
        .iter()
        .map(|(id, l)| SeriesInfo::from_json(*id, l))
        .collect())
}

/// Raw samples of `ids` over `[from, to)` ms, by series and time.
pub async fn samples(
    store: &Store,
    org: &str,
    ids: &[i64],
    from: i64,
    to: i64,
) -> Result<Vec<Point>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IDS_CHUNK) {
        let sql = format!(
            "SELECT series_id, ts_ms, value FROM telemetry_samples WHERE org = $1 AND ts_ms >= $2 \
             AND ts_ms < $3 AND series_id IN ({}) ORDER BY series_id, ts_ms",
            list(chunk.len(), 3)
        );
        let rows: Vec<Point> = on_read!(store, p => {
            let mut q = sqlx::query_as::<_, Point>(&sql).bind(org).bind(from).bind(to);
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// Rollup buckets of `ids` at `res` whose start lies in `[from, to)` ms.
pub async fn buckets(
    store: &Store,
    org: &str,
    ids: &[i64],
    res: i64,
    from: i64,
    to: i64,
) -> Result<Vec<Bucket>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IDS_CHUNK) {
        let sql = format!(
            "SELECT series_id, bucket_ms, min_v, max_v, sum_v, count_v, last_ts_ms, last_v \
             FROM telemetry_rollups WHERE org = $1 AND resolution_ms = $2 AND bucket_ms >= $3 \
             AND bucket_ms < $4 AND series_id IN ({}) ORDER BY series_id, bucket_ms",
            list(chunk.len(), 4)
        );
        let rows: Vec<Bucket> = on_read!(store, p => {
            let mut q = sqlx::query_as::<_, Bucket>(&sql).bind(org).bind(res).bind(from).bind(to);
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// [`super::Telemetry::last_totals`] on the store, one statement per chunk of series.
pub async fn last_totals(
    store: &Store,
    org: &str,
    ids: &[i64],
    res: i64,
    (from, to): (i64, i64),
    fresh_ms: i64,
) -> Result<Vec<LastTotals>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IDS_CHUNK) {
        let sql = format!(
            "SELECT bucket_ms, SUM(last_v) AS sum_v, COUNT(*) AS count_v, MIN(last_v) AS min_v, \
             MAX(last_v) AS max_v FROM telemetry_rollups WHERE org = $1 AND resolution_ms = $2 \
             AND bucket_ms >= $3 AND bucket_ms < $4 AND last_ts_ms > bucket_ms + $5 \
             AND series_id IN ({}) GROUP BY bucket_ms",
            list(chunk.len(), 5)
        );
        let rows: Vec<LastTotals> = on_read!(store, p => {
            let mut q = sqlx::query_as::<_, LastTotals>(&sql)
                .bind(org).bind(res).bind(from).bind(to).bind(fresh_ms);
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// Log lines of `org` matching `f`, newest first.
pub async fn logs(store: &Store, org: &str, f: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
    // Absent filters become always-true comparisons so the parameters stay numbered alike.
    let mut sql = String::from(
        "SELECT line_id, ts_ns, service, level, message, labels, attributes FROM telemetry_logs \
         WHERE org = $1 AND ts_ns >= $2 AND ts_ns < $3 \
         AND ($4 = '' OR service = $4) AND ($5 = '' OR level = $5) \
         AND ($6 = '' OR message LIKE $6 ESCAPE '\\') \
         AND (ts_ns < $7 OR (ts_ns = $7 AND line_id < $8))",
    );
    for i in 0..f.labels.len() {
        sql.push_str(&format!(" AND labels LIKE ${} ESCAPE '\\'", 9 + i));
    }
    sql.push_str(&format!(
        " ORDER BY ts_ns DESC, line_id DESC LIMIT {}",
        f.limit.max(1)
    ));
    let text = f
        .text
        .as_deref()
        .map(|t| format!("%{}%", like_escape(t)))
        .unwrap_or_default();
    let (cur_ts, cur_id) = f.before.unwrap_or((i64::MAX, i64::MAX));
    let rows = on_read!(store, p => {
        let mut q = sqlx::query_as::<_, LogEntry>(&sql)
            .bind(org)
            .bind(f.from_ns)
            .bind(f.to_ns)
            .bind(f.service.as_deref().unwrap_or(""))
            .bind(f.level.as_deref().unwrap_or(""))
            .bind(&text)
            .bind(cur_ts)
            .bind(cur_id);
        for (k, v) in &f.labels {
            q = q.bind(label_pattern(k, v));
        }
        q.fetch_all(p).await?
    });
    Ok(rows)
}
