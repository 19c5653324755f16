//! Log benchmark (run by bench/log.sh, which starts a nisshi broker per part): relay throughput
//! outbox → Kafka against a raw rdkafka producer sending the same records to the same broker in
//! the same run, then projection throughput of the notifications group alone on each backend
//! column (`--part relay`); and the whole `consumers` role — every projection group
//! running, as `--roles consumers` runs them — draining the same events, next to each group
//! alone (`--part consumers`). Prints JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use substrate::app::AppContext;
use substrate::config::{Config, LogConfig, Secret};
use substrate::events::{EventMeta, build};
use substrate::outbox::NewEvent;
use tokio_util::sync::CancellationToken;

#[path = "common.rs"]
mod common;

struct Args {
    broker: String,
    pg: String,
    events: usize,
    /// `relay` (relay, then the notifications group alone) or `consumers` (the whole role).
    part: String,
}

fn args() -> Args {
    let mut a = Args {
        broker: "127.0.0.1:9092".into(),
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        events: 50_000,
        part: "relay".into(),
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--broker" => a.broker = v[i + 1].clone(),
            "--pg" => a.pg = v[i + 1].clone(),
            "--events" => a.events = v[i + 1].parse().expect("--events N"),
            "--part" => a.part = v[i + 1].clone(),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn config(dir: &std::path::Path, store: &str, log: &str) -> Config {
    let mut c = Config::default();
    c.store.url = Secret::new(store.to_string());
    c.store.migrate_on_start = Some(true);
    c.schemas.dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("avro");
    let routes = dir.join("routes.yaml");
    std::fs::write(&routes, "routes: {}\n").expect("routes");
    c.gateway.routes_file = routes;
    c.auth.hs256_secret = Some(Secret::new(common::SECRET));
    c.auth.dev_secret_file = dir.join("jwt-secret");
    c.objects.url = format!("file://{}/objects", dir.display());
    c.telemetry.log_filter = "error".into();
    c.probe.interval_secs = 3600;
    c.log.url = log.to_string();
    c
}

/// `n` message events over 1,000 keys, as the gateway would build them.
fn events(ctx: &AppContext, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let user = format!("user{}", i % 1000);
            let body = json!({"user_id": user, "email": "u@example.com", "message": format!("message number {i}"), "timestamp": "2026-01-01T00:00:00Z"});
            let meta = EventMeta {
                source: "/bench".into(),
                ..EventMeta::default()
            };
            build(&ctx.schemas, "public.user.message.events", &user, &body, &meta).expect("event")
        })
        .collect()
}

async fn append(ctx: &AppContext, evs: &[NewEvent]) {
    for chunk in evs.chunks(2000) {
        let refs: Vec<&NewEvent> = chunk.iter().collect();
        let mut tx = ctx.store.begin().await.expect("tx");
        ctx.outbox.append(&mut tx, &refs).await.expect("append");
        tx.commit().await.expect("commit");
    }
}

async fn scalar(ctx: &AppContext, sql: &str) -> i64 {
    match ctx.store.pg_pool() {
        Some(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("query"),
        None => {
            let url = ctx.config.store.url.expose().to_string();
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("query")
        }
    }
}

/// Time until `sql` reaches `want`. Checked every 50 ms: a count is not free, and checking
/// more often would slow down what is being measured.
async fn wait_for(ctx: &AppContext, sql: &str, want: i64) -> Duration {
    let t = Instant::now();
    while scalar(ctx, sql).await < want {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

/// The raw producer: the relay's producer settings, the same records, one batch in flight.
async fn raw(broker: &str, evs: &[NewEvent]) -> f64 {
    let cfg = LogConfig {
        url: format!("kafka://{broker}"),
        ..LogConfig::default()
    };
    substrate::log::kafka::topics::create(&cfg, &["bench.raw".to_string()])
        .await
        .expect("topic");
    let producer: FutureProducer = substrate::log::kafka::client::producer(&cfg)
        .expect("config")
        .create()
        .expect("producer");
    let t = Instant::now();
    for chunk in evs.chunks(cfg.relay_batch) {
        let mut futs = Vec::with_capacity(chunk.len());
        for e in chunk {
            let mut h = OwnedHeaders::new_with_capacity(e.headers.len());
            for (k, v) in &e.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let rec = FutureRecord::to("bench.raw")
                .key(&e.key)
                .payload(&e.payload)
                .headers(h)
                .timestamp(e.created_at / 1000);
            futs.push(
                producer
                    .send_result(rec)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for f in futs {
            f.await.expect("delivery").expect("acked");
        }
    }
    evs.len() as f64 / t.elapsed().as_secs_f64()
}

async fn relay(cfg: Config, n: usize) -> (f64, AppContext) {
    let ctx = AppContext::build(cfg).await.expect("build");
    let evs = events(&ctx, n);
    append(&ctx, &evs).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(substrate::relay::run(ctx.clone(), stop.clone()));
    let took = wait_for(
        &ctx,
        "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL",
        n as i64,
    )
    .await;
    stop.cancel();
    let _ = task.await;
    (n as f64 / took.as_secs_f64(), ctx)
}

async fn projection(ctx: &AppContext, n: usize, fill: bool) -> f64 {
    if fill {
        let evs = events(ctx, n);
        append(ctx, &evs).await;
    }
    let stop = CancellationToken::new();
    let h =
        Arc::new(substrate::projections::notifications::NotificationsProjection::new(ctx.clone()));
    let task = tokio::spawn(substrate::consumers::runtime::run_group(
        ctx.clone(),
        h,
        stop.clone(),
    ));
    let took = wait_for(ctx, "SELECT COUNT(*) FROM notifications", n as i64).await;
    stop.cancel();
    let _ = task.await;
    n as f64 / took.as_secs_f64()
}

/// The projection groups of the `consumers` role that read these events (the probe's group
/// reads none of them).
const GROUPS: [&str; 3] = ["notifications", "stats", "event-counts"];

/// Runs the `consumers` role as `--roles consumers` does (`consumers.only` = `only`; empty:
/// every group) until each group of `GROUPS` it runs has applied `n` events (its inbox rows).
/// Returns events/s per group and for the whole role (the slowest group).
async fn role(ctx: &AppContext, only: &[&str], n: usize) -> serde_json::Value {
    let mut cfg = ctx.config.as_ref().clone();
    cfg.consumers.only = only.iter().map(|g| g.to_string()).collect();
    let ctx = AppContext::build(cfg).await.expect("build");
    let running: Vec<&str> = GROUPS
        .iter()
        .copied()
        .filter(|g| only.is_empty() || only.contains(g))
        .collect();
    let stop = CancellationToken::new();
    let task = tokio::spawn(substrate::consumers::run(ctx.clone(), stop.clone()));
    let t = Instant::now();
    let mut took = serde_json::Map::new();
    while took.len() < running.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for g in &running {
            let sql = format!("SELECT COUNT(*) FROM inbox WHERE group_name = '{g}'");
            if !took.contains_key(*g) && scalar(&ctx, &sql).await >= n as i64 {
                took.insert(g.to_string(), json!(t.elapsed().as_secs_f64()));
            }
        }
    }
    stop.cancel();
    let _ = task.await;
    let slowest = took
        .values()
        .filter_map(|v| v.as_f64())
        .fold(0.0f64, f64::max);
    let mut out: serde_json::Map<_, _> = took
        .iter()
        .map(|(g, s)| {
            (
                g.clone(),
                json!((n as f64 / s.as_f64().unwrap_or(1.0)).round()),
            )
        })
        .collect();
    out.insert(
        "role_events_per_sec".into(),
        json!((n as f64 / slowest).round()),
    );
    json!(out)
}

/// A fresh store holding `n` appended events: SQLite in `dir`, or a new PostgreSQL database.
async fn filled(
    a: &Args,
    dir: &std::path::Path,
    pg: bool,
    dbs: &mut Vec<(String, String)>,
) -> AppContext {
    let url = if pg {
        let (url, db) = common::create_db(&a.pg, "bench_log").await;
        dbs.push(db);
        url
    } else {
        format!(
            "sqlite://{}/c{}.db",
            dir.display(),
            uuid::Uuid::new_v4().simple()
        )
    };
    let ctx = AppContext::build(config(dir, &url, "embedded"))
        .await
        .expect("build");
    let evs = events(&ctx, a.events);
    append(&ctx, &evs).await;
    ctx
}

/// The `consumers` role against each group alone, on each column; Kafka → PostgreSQL runs
/// the role once (a group's Kafka offsets outlive its database, so a group drains a broker
/// once); `--broker none` leaves it out.
async fn consumers_part(a: &Args, dbs: &mut Vec<(String, String)>) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = serde_json::Map::new();
    for (name, pg) in [("embedded_sqlite", false), ("embedded_postgres", true)] {
        let mut col = serde_json::Map::new();
        let all = filled(a, dir.path(), pg, dbs).await;
        col.insert("all_groups".into(), role(&all, &[], a.events).await);
        for g in GROUPS {
            let ctx = filled(a, dir.path(), pg, dbs).await;
            col.insert(format!("{g}_alone"), role(&ctx, &[g], a.events).await);
        }
        out.insert(name.into(), json!(col));
    }
    if a.broker == "none" {
        return json!(out);
    }
    let (url, db) = common::create_db(&a.pg, "bench_log").await;
    dbs.push(db);
    let (_, ctx) = relay(
        config(dir.path(), &url, &format!("kafka://{}", a.broker)),
        a.events,
    )
    .await;
    out.insert(
        "kafka_postgres".into(),
        json!({ "all_groups": role(&ctx, &[], a.events).await }),
    );
    json!(out)
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut out = serde_json::Map::new();
    let mut dbs = Vec::new();
    match a.part.as_str() {
        "relay" => relay_part(&a, &mut dbs, &mut out).await,
        "consumers" => {
            out.insert("consumers".into(), consumers_part(&a, &mut dbs).await);
        }
        other => panic!("--part relay|consumers, not {other}"),
    }
    out.insert("events".into(), json!(a.events));
    for db in dbs {
        common::drop_db(Some(db)).await;
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

/// Relay vs the raw producer, then the notifications group alone on each column (the Kafka
/// column reads what the relay sent).
async fn relay_part(
    a: &Args,
    dbs: &mut Vec<(String, String)>,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = a.events;
    let kafka = format!("kafka://{}", a.broker);

    // Relay vs raw producer, same broker, same records, same run.
    let probe_ctx = AppContext::build(config(
        dir.path(),
        &format!("sqlite://{}/probe.db", dir.path().display()),
        "embedded",
    ))
    .await
    .expect("build");
    let evs = events(&probe_ctx, n);
    let raw_rate = raw(&a.broker, &evs).await;
    let mut relay_json = serde_json::Map::new();
    relay_json.insert("raw_rdkafka_events_per_sec".into(), json!(raw_rate.round()));
    let (pg_rate, pg_ctx) = relay(
        config(
            dir.path(),
            &{
                let (url, db) = common::create_db(&a.pg, "bench_log").await;
                dbs.push(db);
                url
            },
            &kafka,
        ),
        n,
    )
    .await;
    relay_json.insert("postgres_events_per_sec".into(), json!(pg_rate.round()));
    relay_json.insert(
        "postgres_ratio".into(),
        json!((pg_rate / raw_rate * 100.0).round() / 100.0),
    );
    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let (sq_rate, _) = relay(
        config(
            sqlite_dir.path(),
            &format!("sqlite://{}/relay.db", sqlite_dir.path().display()),
            &kafka,
        ),
        n,
    )
    .await;
    relay_json.insert("sqlite_events_per_sec".into(), json!(sq_rate.round()));
    relay_json.insert(
        "sqlite_ratio".into(),
        json!((sq_rate / raw_rate * 100.0).round() / 100.0),
    );
    out.insert("relay".into(), json!(relay_json));

    // Projection throughput: the notifications group draining n events.
    let mut proj = serde_json::Map::new();
    let e_dir = tempfile::tempdir().expect("tempdir");
    let sq = AppContext::build(config(
        e_dir.path(),
        &format!("sqlite://{}/p.db", e_dir.path().display()),
        "embedded",
    ))
    .await
    .expect("build");
    proj.insert(
        "embedded_sqlite_events_per_sec".into(),
        json!(projection(&sq, n, true).await.round()),
    );
    let pg = AppContext::build(config(
        dir.path(),
        &{
            let (url, db) = common::create_db(&a.pg, "bench_log").await;
            dbs.push(db);
            url
        },
        "embedded",
    ))
    .await
    .expect("build");
    proj.insert(
        "embedded_postgres_events_per_sec".into(),
        json!(projection(&pg, n, true).await.round()),
    );
    // The relayed topic above: the group reads n events from Kafka into PostgreSQL.
    proj.insert(
        "kafka_postgres_events_per_sec".into(),
        json!(projection(&pg_ctx, n, false).await.round()),
    );
    out.insert("projection".into(), json!(proj));
}
