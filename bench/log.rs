//! Log benchmark (run by bench/log.sh, which starts a nisshi broker): relay throughput outbox →
//! Kafka against a raw rdkafka producer sending the same records to the same broker in the same
//! run, and projection throughput (the notifications group) on each backend column. Prints JSON.

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
}

fn args() -> Args {
    let mut a = Args {
        broker: "127.0.0.1:9092".into(),
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        events: 50_000,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--broker" => a.broker = v[i + 1].clone(),
            "--pg" => a.pg = v[i + 1].clone(),
            "--events" => a.events = v[i + 1].parse().expect("--events N"),
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

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = a.events;
    let kafka = format!("kafka://{}", a.broker);
    let mut out = serde_json::Map::new();
    let mut dbs = Vec::new();

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
    out.insert("events".into(), json!(n));
    for db in dbs {
        common::drop_db(Some(db)).await;
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
