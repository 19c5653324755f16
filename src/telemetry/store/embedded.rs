//! The embedded column's telemetry tables (migration 0010), written inside the consumer's
//! transaction so the inbox record, the rows and the log position commit together. Every
//! write is idempotent: series and samples are inserted with `ON CONFLICT DO NOTHING`, and a
//! rollup bucket is recomputed whole from its source (raw samples for 1m, 1m rows for 5m, 5m
//! rows for 1h) for the buckets a batch touched, so a replayed or retried batch, or samples
//! arriving late, leave exactly the rollups a full rebuild would.

use crate::store::{Store, StoreError, Tx, now_micros};
use crate::telemetry::model::{self, Batch};
use crate::{on_read, on_tx};

use super::read::{Bucket, LogEntry, LogFilter, Point, SeriesInfo, label_pattern, like_escape};
use super::{RESOLUTIONS, Touched};

/// Rows per multi-row INSERT (bind parameters stay far below both drivers' limits).
const CHUNK: usize = 200;
/// Series ids per rollup statement.
const IDS_CHUNK: usize = 400;

/// `($k+1, …, $k+n), …` for `rows` rows of `cols` parameters, starting after `first`.
fn placeholders(rows: usize, cols: usize, first: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push_str(&format!("${}", first + r * cols + c + 1));
        }
        s.push(')');
    }
    s
}

/// Inserts the batch's series, samples and log lines, then refreshes the touched rollups.
pub async fn write(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    let touched = Touched::of(batch);
    write_series(tx, org, batch).await?;
    write_samples(tx, org, batch).await?;
    write_logs(tx, org, batch).await?;
    refresh_rollups(tx, org, &touched).await
}

async fn write_series(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    let now = now_micros();
    for chunk in batch.timeseries.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO telemetry_series (org, series_id, name, labels, created_at) VALUES {} \
             ON CONFLICT (org, series_id) DO NOTHING",
            placeholders(chunk.len(), 5, 0)
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(org)
                    .bind(model::series_id(&s.labels))
                    .bind(model::metric_name(&s.labels))
                    .bind(model::labels_json(&s.labels))
                    .bind(now);
            }
            q.execute(&mut *c).await?;
        });
    }
    Ok(())
}

async fn write_samples(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    let rows: Vec<(i64, i64, f64)> = batch
        .timeseries
        .iter()
        .flat_map(|s| {
            let id = model::series_id(&s.labels);
            s.samples.iter().map(move |x| (id, x.timestamp, x.value))
        })
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO telemetry_samples (org, series_id, ts_ms, value) VALUES {} \
             ON CONFLICT (org, series_id, ts_ms) DO NOTHING",
            placeholders(chunk.len(), 4, 0)
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(&sql);
            for (id, t, v) in chunk {
                q = q.bind(org).bind(*id).bind(*t).bind(*v);
            }
            q.execute(&mut *c).await?;
        });
    }
    Ok(())
}

async fn write_logs(tx: &mut Tx, org: &str, batch: &Batch) -> Result<(), StoreError> {
    for chunk in batch.logs.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO telemetry_logs (org, line_id, ts_ns, service, level, message, labels, \
             attributes) VALUES {} ON CONFLICT (org, line_id) DO NOTHING",
            placeholders(chunk.len(), 8, 0)
        );
        on_tx!(tx, c => {
            let mut q = sqlx::query(&sql);
            for l in chunk {
                q = q
                    .bind(org)
                    .bind(model::line_id(l))
                    .bind(l.ts_ns)
                    .bind(&l.service)
                    .bind(&l.level)
                    .bind(&l.message)
                    .bind(model::labels_json(&l.labels))
                    .bind(&l.attributes);
            }
            q.execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// The statement recomputing `res` buckets of the series `$4…` over `[$2, $3)` from the
/// source one step finer (raw samples for the first resolution).
fn rollup_sql(res: i64, finer: Option<i64>, ids: usize) -> String {
    let list = (0..ids)
        .map(|i| format!("${}", i + 4))
        .collect::<Vec<_>>()
        .join(",");
    let (source, last) = match finer {
        None => (
            format!(
                "SELECT org, series_id, ts_ms - (ts_ms % {res}) AS bucket, MIN(value) AS mn, \
                 MAX(value) AS mx, SUM(value) AS sm, COUNT(*) AS n, MAX(ts_ms) AS lt \
                 FROM telemetry_samples WHERE org = $1 AND ts_ms >= $2 AND ts_ms < $3 \
                 AND series_id IN ({list}) GROUP BY 1, 2, 3"
            ),
            "(SELECT s.value FROM telemetry_samples s WHERE s.org = g.org \
             AND s.series_id = g.series_id AND s.ts_ms = g.lt)"
                .to_string(),
        ),
        Some(f) => (
            format!(
                "SELECT org, series_id, bucket_ms - (bucket_ms % {res}) AS bucket, \
                 MIN(min_v) AS mn, MAX(max_v) AS mx, SUM(sum_v) AS sm, \
                 CAST(SUM(count_v) AS BIGINT) AS n, MAX(last_ts_ms) AS lt \
                 FROM telemetry_rollups WHERE org = $1 AND resolution_ms = {f} \
                 AND bucket_ms >= $2 AND bucket_ms < $3 AND series_id IN ({list}) \
                 GROUP BY 1, 2, 3"
            ),
            format!(
                "(SELECT r.last_v FROM telemetry_rollups r WHERE r.org = g.org \
                 AND r.series_id = g.series_id AND r.resolution_ms = {f} \
                 AND r.last_ts_ms = g.lt ORDER BY r.bucket_ms DESC LIMIT 1)"
            ),
        ),
    };
    // `WHERE true` keeps SQLite from reading ON CONFLICT as a join constraint.
    format!(
        "INSERT INTO telemetry_rollups (org, series_id, resolution_ms, bucket_ms, min_v, max_v, \
         sum_v, count_v, last_ts_ms, last_v) \
         SELECT g.org, g.series_id, {res}, g.bucket, g.mn, g.mx, g.sm, g.n, g.lt, {last} \
         FROM ({source}) g WHERE true \
         ON CONFLICT (org, series_id, resolution_ms, bucket_ms) DO UPDATE SET \
         min_v = excluded.min_v, max_v = excluded.max_v, sum_v = excluded.sum_v, \
         count_v = excluded.count_v, last_ts_ms = excluded.last_ts_ms, last_v = excluded.last_v"
    )
}

/// Recomputes every resolution's buckets the batch touched, finest first (each coarser one
/// reads the finer rows just written).
async fn refresh_rollups(tx: &mut Tx, org: &str, t: &Touched) -> Result<(), StoreError> {
    let Some((min_ts, max_ts)) = t.range else {
        return Ok(());
    };
    let mut finer = None;
    for res in RESOLUTIONS {
        let from = min_ts - min_ts.rem_euclid(res);
        let to = max_ts - max_ts.rem_euclid(res) + res;
        for ids in t.series.chunks(IDS_CHUNK) {
            let sql = rollup_sql(res, finer, ids.len());
            on_tx!(tx, c => {
                let mut q = sqlx::query(&sql).bind(org).bind(from).bind(to);
                for id in ids {
                    q = q.bind(*id);
                }
                q.execute(&mut *c).await?;
            });
        }
        finer = Some(res);
    }
    Ok(())
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
            n += sqlx::query("DELETE FROM telemetry_rollups WHERE resolution_ms = $1 AND bucket_ms < $2")
                .bind(*res)
                .bind(*cutoff)
                .execute(&mut *c)
                .await?
                .rows_affected();
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
        for t in ["telemetry_series", "telemetry_samples", "telemetry_rollups", "telemetry_logs"] {
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

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows() {
        assert_eq!(super::placeholders(2, 2, 0), "($1,$2),($3,$4)");
        assert_eq!(super::placeholders(1, 3, 3), "($4,$5,$6)");
    }
}
