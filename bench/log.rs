//! Log benchmark (run by bench/log.sh, which starts a nisshi broker per part): relay throughput
//! outbox → Kafka against a raw rdkafka producer sending the same records to the same broker in
//! the same run, then projection throughput of the notifications group alone on each backend
//! column (`--part relay`); and the whole `consumers` role — every projection group
//! running, as `--roles consumers` runs them — draining the same events, next to each group
//! alone (`--part consumers`); and how cost grows (`--part sweep`): relay throughput at several
//! backlogs, the notifications group with rows already in its table, and outbox appends with
//! relayed rows already in the outbox. Each figure comes with its same-run baseline: the raw
//! producer for the relay, a raw multi-row `INSERT` of the same rows into the same table for
//! the projection. Prints JSON.

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
    /// `relay` (relay, then the notifications group alone), `consumers` (the whole role) or
    /// `sweep` (how cost grows).
    part: String,
    /// Sweep: the outbox backlogs the relay drains.
    sweep_pending: Vec<usize>,
    /// Sweep: rows already in the read model / relayed rows already in the outbox.
    sweep_rows: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        broker: "127.0.0.1:9092".into(),
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        events: 50_000,
        part: "relay".into(),
        sweep_pending: vec![10_000, 100_000],
        sweep_rows: vec![0, 1_000_000],
    };
    let sizes = |v: &str| -> Vec<usize> {
        v.split([' ', ','])
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().expect("a size"))
            .collect()
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--broker" => a.broker = v[i + 1].clone(),
            "--pg" => a.pg = v[i + 1].clone(),
            "--events" => a.events = v[i + 1].parse().expect("--events N"),
            "--part" => a.part = v[i + 1].clone(),
            "--sweep-pending" => a.sweep_pending = sizes(&v[i + 1]),
            "--sweep-rows" => a.sweep_rows = sizes(&v[i + 1]),
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
    // The group's inbox, not the table: the table may hold rows from before (the sweep), and
    // counting a large table every 50 ms would slow down what is measured.
    let took = wait_for(
        ctx,
        "SELECT COUNT(*) FROM inbox WHERE group_name = 'notifications'",
        n as i64,
    )
    .await;
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
        // The baseline of this column: as many rows by raw multi-row INSERTs into the
        // notifications table of a fresh store (Kafka → PostgreSQL shares PostgreSQL's).
        let ctx = filled(a, dir.path(), pg, dbs).await;
        col.insert(
            "raw_insert_rows_per_sec".into(),
            json!(
                raw_insert(&ctx, a.events, PROJECTION_BATCH, "raw")
                    .await
                    .round()
            ),
        );
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
        "sweep" => {
            out.insert("sweep".into(), sweep_part(&a, &mut dbs).await);
        }
        other => panic!("--part relay|consumers|sweep, not {other}"),
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
    // The baseline: the same number of rows, by raw multi-row INSERTs in the projection's
    // batch size, into the same table of another fresh store.
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw_sq = AppContext::build(config(
        raw_dir.path(),
        &format!("sqlite://{}/raw.db", raw_dir.path().display()),
        "embedded",
    ))
    .await
    .expect("build");
    let raw_sq_rate = raw_insert(&raw_sq, n, PROJECTION_BATCH, "raw").await;
    proj.insert(
        "raw_insert_sqlite_rows_per_sec".into(),
        json!(raw_sq_rate.round()),
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
    let raw_pg = AppContext::build(config(
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
    let raw_pg_rate = raw_insert(&raw_pg, n, PROJECTION_BATCH, "raw").await;
    proj.insert(
        "raw_insert_postgres_rows_per_sec".into(),
        json!(raw_pg_rate.round()),
    );
    // The relayed topic above: the group reads n events from Kafka into PostgreSQL.
    proj.insert(
        "kafka_postgres_events_per_sec".into(),
        json!(projection(&pg_ctx, n, false).await.round()),
    );
    out.insert("projection".into(), json!(proj));
}

/// The consumer runtime's batch size (`consumers.batch`'s default): the raw baseline inserts
/// in transactions of this many rows.
const PROJECTION_BATCH: usize = 500;

/// The projection's baseline: `n` notification rows like the group writes (same table, same
/// columns), by raw multi-row INSERTs of `batch` rows per transaction, with no inbox, no
/// decoding and no consumer runtime. Returns rows/s. `tag` keeps event ids unique per call.
async fn raw_insert(ctx: &AppContext, n: usize, batch: usize, tag: &str) -> f64 {
    use substrate::store::bulk::{self, Val};
    let now = substrate::store::now_micros();
    let rows: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            (
                format!("{tag}-{i}-{}", uuid::Uuid::now_v7()),
                format!("user{}", i % 1000),
                json!({"user_id": format!("user{}", i % 1000), "message": format!("message number {i}")})
                    .to_string(),
            )
        })
        .collect();
    let t = Instant::now();
    for chunk in rows.chunks(batch.max(1)) {
        let vals: Vec<Vec<Val>> = chunk
            .iter()
            .map(|(id, user, payload)| {
                vec![
                    Val::Str(id),
                    Val::Str(user),
                    Val::Str("user.message"),
                    Val::Str(payload),
                    Val::Str("private"),
                    Val::OptStr(None),
                    Val::I64(now),
                    Val::I64(now),
                ]
            })
            .collect();
        let mut tx = ctx.store.begin().await.expect("tx");
        bulk::insert(
            &mut tx,
            "INSERT INTO notifications (event_id, user_id, event_type, payload, visibility, recipient_id, event_time, created_at) ",
            &vals,
            "",
        )
        .await
        .expect("raw insert");
        tx.commit().await.expect("commit");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Runs one statement (no result) on the store of `ctx`.
async fn exec(ctx: &AppContext, sql: &str) {
    match ctx.store.pg_pool() {
        Some(p) => {
            sqlx::query(sql).execute(p).await.expect("statement");
        }
        None => {
            use sqlx::Connection;
            let url = ctx.config.store.url.expose().to_string();
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query(sql).execute(&mut c).await.expect("statement");
        }
    }
}

/// Appends `n` message events to the outbox, built and appended 10,000 at a time (a million
/// built events at once would hold gigabytes).
async fn fill_outbox(ctx: &AppContext, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        append(ctx, &events(ctx, k)).await;
        left -= k;
    }
}

/// A fresh store (SQLite in `dir` or a new PostgreSQL database) with log `log`.
async fn fresh(
    a: &Args,
    dir: &std::path::Path,
    pg: bool,
    log: &str,
    dbs: &mut Vec<(String, String)>,
) -> AppContext {
    let url = if pg {
        let (url, db) = common::create_db(&a.pg, "bench_log").await;
        dbs.push(db);
        url
    } else {
        format!(
            "sqlite://{}/s{}.db",
            dir.display(),
            uuid::Uuid::new_v4().simple()
        )
    };
    AppContext::build(config(dir, &url, log))
        .await
        .expect("build")
}

/// Relay throughput with `pending` rows waiting in a fresh outbox (the relay starts after
/// they are all appended).
async fn relay_at(ctx: &AppContext, pending: usize) -> f64 {
    fill_outbox(ctx, pending).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(substrate::relay::run(ctx.clone(), stop.clone()));
    let took = wait_for(
        ctx,
        "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL",
        pending as i64,
    )
    .await;
    stop.cancel();
    let _ = task.await;
    pending as f64 / took.as_secs_f64()
}

/// Outbox appends (transactions of 100 events, as a batch POST stores them) per second,
/// `n` events, on a store whose outbox already holds `relayed` published rows.
async fn append_with_relayed(ctx: &AppContext, relayed: usize, n: usize) -> f64 {
    if relayed > 0 {
        fill_outbox(ctx, relayed).await;
        exec(
            ctx,
            "UPDATE outbox SET published_at = created_at WHERE published_at IS NULL",
        )
        .await;
    }
    let evs = events(ctx, n);
    let t = Instant::now();
    for chunk in evs.chunks(100) {
        let refs: Vec<&NewEvent> = chunk.iter().collect();
        let mut tx = ctx.store.begin().await.expect("tx");
        ctx.outbox.append(&mut tx, &refs).await.expect("append");
        tx.commit().await.expect("commit");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// How cost grows, per store: the relay at each backlog of `--sweep-pending` (next to the raw
/// producer, measured once: it has no backlog), the notifications group draining `--events`
/// events with each count of `--sweep-rows` rows already in its table (next to a raw INSERT
/// of as many rows into that same table), and outbox appends with that many relayed rows.
async fn sweep_part(a: &Args, dbs: &mut Vec<(String, String)>) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = serde_json::Map::new();
    let kafka = (a.broker != "none").then(|| format!("kafka://{}", a.broker));
    if let Some(kafka) = &kafka {
        let probe = fresh(a, dir.path(), false, "embedded", dbs).await;
        let biggest = a
            .sweep_pending
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .min(100_000);
        let raw_rate = raw(&a.broker, &events(&probe, biggest)).await;
        out.insert("raw_rdkafka_events_per_sec".into(), json!(raw_rate.round()));
        out.insert("raw_rdkafka_events".into(), json!(biggest));
        for (name, pg) in [("sqlite", false), ("postgres", true)] {
            let mut rows = Vec::new();
            for &pending in &a.sweep_pending {
                let ctx = fresh(a, dir.path(), pg, kafka, dbs).await;
                let rate = relay_at(&ctx, pending).await;
                rows.push(json!({
                    "pending": pending,
                    "events_per_sec": rate.round(),
                    "ratio_to_raw": (rate / raw_rate * 100.0).round() / 100.0,
                }));
            }
            out.insert(format!("relay_{name}"), json!(rows));
        }
    }
    for (name, pg) in [("sqlite", false), ("postgres", true)] {
        let mut proj = Vec::new();
        let mut ingest = Vec::new();
        for &rows in &a.sweep_rows {
            let ctx = fresh(a, dir.path(), pg, "embedded", dbs).await;
            if rows > 0 {
                raw_insert(&ctx, rows, 5_000, "prefill").await;
            }
            let rate = projection(&ctx, a.events, true).await;
            // The baseline next, into the same table (now holding rows + events rows).
            let raw_rate = raw_insert(&ctx, a.events, PROJECTION_BATCH, "raw").await;
            proj.push(json!({
                "rows_before": rows,
                "events_per_sec": rate.round(),
                "raw_insert_rows_per_sec": raw_rate.round(),
                "raw_insert_rows_before": rows + a.events,
                "ratio_to_raw_insert": (rate / raw_rate * 100.0).round() / 100.0,
            }));
            let ctx = fresh(a, dir.path(), pg, "embedded", dbs).await;
            ingest.push(json!({
                "relayed_rows_before": rows,
                "append_events_per_sec": append_with_relayed(&ctx, rows, a.events).await.round(),
            }));
        }
        out.insert(format!("projection_{name}"), json!(proj));
        out.insert(format!("outbox_append_{name}"), json!(ingest));
    }
    json!(out)
}
