//! Telemetry benchmark (run by bench/telemetry.sh): Prometheus remote-write ingest in
//! samples/s, durable at the 2xx (several concurrent clients, each request `--per-request`
//! samples over `--series` series, the shape Prometheus sends), then the time until the
//! `telemetry` group has stored them all (end-to-end samples/s), then the latency (p50/p99) of
//! a 24 h `query_range` at a 1 m step over the same series, on each column: the embedded store
//! (SQLite), PostgreSQL, and PostgreSQL + ClickHouse when `--clickhouse` answers. Baselines from
//! the same run: a bare axum handler that only snappy- and protobuf-decodes the same bodies,
//! and a raw multi-row insert of the same samples into the same table. Prints one JSON object.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Value, json};
use substrate::app::AppContext;
use substrate::config::{Config, Secret};
use substrate::roles::Role;
use substrate::telemetry::model::{Batch, Label, Sample, TimeSeries};
use tokio_util::sync::CancellationToken;

#[path = "common.rs"]
mod common;

struct Args {
    pg: String,
    clickhouse: Option<String>,
    columns: Vec<String>,
    secs: u64,
    clients: usize,
    series: usize,
    per_request: usize,
    rounds: usize,
    /// Send the rest of a day of data (untimed) before the query part.
    fill_day: bool,
}

fn args() -> Args {
    let mut a = Args {
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        clickhouse: None,
        columns: vec!["sqlite".into(), "postgres".into(), "clickhouse".into()],
        secs: 10,
        clients: 8,
        series: 1000,
        per_request: 500,
        rounds: 50,
        fill_day: true,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < v.len() {
        let x = v[i + 1].clone();
        match v[i].as_str() {
            "--pg" => a.pg = x,
            "--clickhouse" => a.clickhouse = Some(x).filter(|s| !s.is_empty()),
            "--columns" => a.columns = x.split_whitespace().map(String::from).collect(),
            "--secs" => a.secs = x.parse().expect("--secs N"),
            "--clients" => a.clients = x.parse().expect("--clients N"),
            "--series" => a.series = x.parse().expect("--series N"),
            "--per-request" => a.per_request = x.parse().expect("--per-request N"),
            "--rounds" => a.rounds = x.parse().expect("--rounds N"),
            "--fill-day" => a.fill_day = x != "0",
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// Request `k` of the run: `per_request` samples, one per series, cycling through the series;
/// each full pass over the series is one minute later, starting 24 h ago, so the run leaves a
/// day (or what it reached of one) of 1-minute data for the query part.
fn body(k: u64, series: usize, per_request: usize, start_ms: i64) -> Vec<u8> {
    let first = k as usize * per_request;
    let timeseries = (first..first + per_request)
        .map(|n| {
            let s = n % series;
            let minute = (n / series) as i64;
            TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "bench_metric".into(),
                    },
                    Label {
                        name: "instance".into(),
                        value: format!("i-{s}"),
                    },
                    Label {
                        name: "job".into(),
                        value: "bench".into(),
                    },
                ],
                samples: vec![Sample {
                    value: (s as f64) + minute as f64,
                    timestamp: start_ms + (minute % (DAY / MINUTE)) * MINUTE,
                }],
            }
        })
        .collect();
    let raw = Batch {
        timeseries,
        logs: vec![],
    }
    .encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

/// `clients` concurrent senders POST requests `next..last` for at most `secs`; returns
/// (requests, seconds).
async fn drive(
    url: &str,
    key: &str,
    a: &Args,
    start_ms: i64,
    next: Arc<AtomicU64>,
    (secs, last): (u64, u64),
) -> (u64, f64) {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let stop = t + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (http, url, key, next) = (http.clone(), url.to_string(), key.to_string(), next.clone());
        let (series, per) = (a.series, a.per_request);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= last {
                    break;
                }
                let r = http
                    .post(&url)
                    .header("x-api-key", &key)
                    .header("content-encoding", "snappy")
                    .header("content-type", "application/x-protobuf")
                    .body(body(k, series, per, start_ms))
                    .send()
                    .await
                    .expect("request");
                assert!(
                    r.status().is_success(),
                    "{}: {:?}",
                    r.status(),
                    r.text().await
                );
                done += 1;
            }
            done
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.expect("client");
    }
    (n, t.elapsed().as_secs_f64())
}

/// The baseline server: a bare axum handler that snappy- and protobuf-decodes the body.
async fn bare() -> String {
    use axum::routing::post;
    async fn decode(body: axum::body::Bytes) -> axum::http::StatusCode {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        let b = Batch::decode(raw.as_slice()).expect("protobuf");
        std::hint::black_box(b.samples());
        axum::http::StatusCode::NO_CONTENT
    }
    let app = axum::Router::new().route("/write", post(decode));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/write", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn config(dir: &std::path::Path, store: &str, clickhouse: Option<&str>) -> Config {
    let mut c = Config::default();
    c.store.url = Secret::new(store.to_string());
    c.store.migrate_on_start = Some(true);
    c.schemas.dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("avro");
    let routes = dir.join("routes.yaml");
    std::fs::write(&routes, "routes: {}\n").expect("routes");
    c.gateway.routes_file = routes;
    c.gateway.rate_limit.enabled = false;
    c.auth.hs256_secret = Some(Secret::new(common::SECRET));
    c.auth.dev_secret_file = dir.join("jwt-secret");
    c.objects.url = format!("file://{}/objects", dir.display());
    c.telemetry.log_filter = "error".into();
    c.probe.interval_secs = 3600;
    if let Some(ch) = clickhouse {
        c.analytics.clickhouse_url = Some(ch.to_string());
        c.analytics.clickhouse_database = format!("bench_{}", uuid::Uuid::new_v4().simple());
    }
    c
}

/// Until the telemetry group has read everything appended so far.
async fn stored(ctx: &AppContext) {
    let topics = vec![substrate::telemetry::ingest::TOPIC.to_string()];
    loop {
        let lag = ctx.log.lag("telemetry", &topics).await.expect("lag");
        if lag.iter().all(|p| p.lag() == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50/p99 (ms) of `rounds` 24 h range queries at a 1 m step over every series.
async fn query(base: &str, key: &str, a: &Args, start_ms: i64) -> Value {
    let http = reqwest::Client::new();
    let q = "sum(bench_metric)";
    let (start, end) = (start_ms / 1000, (start_ms + DAY) / 1000);
    let mut ms = Vec::new();
    let mut points = 0;
    for _ in 0..a.rounds.max(1) {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/prometheus/api/v1/query_range"))
            .header("x-api-key", key)
            .query(&[
                ("query", q),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
                ("step", "60"),
            ])
            .send()
            .await
            .expect("query");
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.expect("json");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        points = v["data"]["result"][0]["values"]
            .as_array()
            .map_or(0, Vec::len);
    }
    ms.sort_by(f64::total_cmp);
    json!({"query": q, "range": "24h", "step": "1m", "series": a.series, "points": points,
           "p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "rounds": ms.len()})
}

/// The raw baseline: the same samples inserted into `telemetry_samples` with multi-row
/// INSERTs (1,000 rows each) in one transaction per request's worth; samples/s.
async fn raw_insert(ctx: &AppContext, a: &Args, requests: u64, start_ms: i64) -> f64 {
    let t = Instant::now();
    for k in 0..requests {
        let b = Batch::decode(
            snap::raw::Decoder::new()
                .decompress_vec(&body(k, a.series, a.per_request, start_ms))
                .expect("snappy")
                .as_slice(),
        )
        .expect("decode");
        let mut tx = ctx.store.begin().await.expect("tx");
        let rows: Vec<(i64, i64, f64)> = b
            .timeseries
            .iter()
            .flat_map(|s| {
                let id = substrate::telemetry::model::series_id(&s.labels);
                s.samples.iter().map(move |x| (id, x.timestamp, x.value))
            })
            .collect();
        for chunk in rows.chunks(1000) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("('raw', ${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO telemetry_samples (org, series_id, ts_ms, value) VALUES {} ON CONFLICT DO NOTHING",
                values.join(",")
            );
            substrate::on_tx!(tx, c => {
                let mut q = sqlx::query(&sql);
                for (id, ts, v) in chunk {
                    q = q.bind(*id).bind(*ts).bind(*v);
                }
                q.execute(&mut *c).await.expect("insert");
            });
        }
        tx.commit().await.expect("commit");
    }
    (requests as usize * a.per_request) as f64 / t.elapsed().as_secs_f64()
}

/// One column: ingest, end-to-end, query, raw insert.
async fn column(name: &str, a: &Args, bare_url: &str) -> Option<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg_db) = match name {
        "sqlite" => (format!("sqlite://{}/bench.db", dir.path().display()), None),
        _ => {
            let (u, db) = common::create_db(&a.pg, "bench_tel").await;
            (u, Some(db))
        }
    };
    let ch = if name == "clickhouse" {
        let ch = a.clickhouse.as_deref()?;
        let up = reqwest::get(format!("{ch}/ping"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if !up {
            common::drop_db(pg_db).await;
            return None;
        }
        Some(ch)
    } else {
        None
    };
    let ctx = AppContext::build(config(dir.path(), &url, ch))
        .await
        .expect("build");
    let key = ctx
        .auth
        .api_keys
        .create("bench", &["telemetry:write".into(), "org:bench".into()])
        .await
        .expect("key")
        .0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let running = substrate::server::start(
        ctx.clone(),
        vec![Role::Gateway, Role::Consumers],
        listener,
        stop,
    )
    .expect("start");
    let base = format!("http://{}", running.addr);
    let start_ms = {
        let now = chrono::Utc::now().timestamp_millis();
        now - now.rem_euclid(MINUTE) - DAY
    };
    let t0 = Instant::now();
    let write = format!("{base}/prometheus/api/v1/write");
    let next = Arc::new(AtomicU64::new(0));
    let (requests, secs) = drive(&write, &key, a, start_ms, next.clone(), (a.secs, u64::MAX)).await;
    stored(&ctx).await;
    let e2e = t0.elapsed().as_secs_f64();
    let samples = requests as usize * a.per_request;
    // The query part needs a full day of 1-minute data: the rest of it is sent untimed.
    let day = (a.series as u64 * (DAY / MINUTE) as u64).div_ceil(a.per_request as u64);
    if a.fill_day && requests < day {
        next.store(requests, Ordering::Relaxed);
        drive(&write, &key, a, start_ms, next, (86_400, day)).await;
        stored(&ctx).await;
    }
    let q = query(&base, &key, a, start_ms).await;
    // The raw baseline writes the store's table; with ClickHouse the samples live elsewhere.
    let raw = match ch {
        None => json!(raw_insert(&ctx, a, requests, start_ms).await),
        Some(_) => Value::Null,
    };
    let ceiling = drive(
        bare_url,
        &key,
        a,
        start_ms,
        Arc::new(AtomicU64::new(0)),
        (a.secs, u64::MAX),
    )
    .await;
    running.stop().await.expect("stop");
    if let Some(c) = ctx.analytics.clickhouse() {
        let _ = c.drop_database().await;
    }
    common::drop_db(pg_db).await;
    Some(json!({
        "ingest": {"requests": requests, "samples": samples, "secs": secs,
                   "samples_per_sec": samples as f64 / secs},
        "end_to_end": {"secs": e2e, "samples_per_sec": samples as f64 / e2e},
        "query_range": q,
        "baseline": {
            "bare_decode_samples_per_sec": (ceiling.0 as usize * a.per_request) as f64 / ceiling.1,
            "raw_insert_samples_per_sec": raw,
        },
    }))
}

#[tokio::main]
async fn main() {
    let a = args();
    let bare_url = bare().await;
    let mut out = serde_json::Map::new();
    out.insert(
        "shape".into(),
        json!({"series": a.series, "samples_per_request": a.per_request, "clients": a.clients, "secs": a.secs}),
    );
    for c in a.columns.clone() {
        match column(&c, &a, &bare_url).await {
            Some(v) => out.insert(c, v),
            None => out.insert(c, json!({"skipped": "ClickHouse is not reachable"})),
        };
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(out)).expect("json")
    );
}
