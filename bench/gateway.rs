//! Gateway ingest benchmark (run it with `bench/gateway.sh`, which builds in release mode).
//! Closed-loop load at a fixed concurrency against a real `substrate serve --roles=gateway` per
//! backend (single-event and batch POSTs, JWT + Avro validation, durable at 202) and against a
//! bare axum "hello" server in its own process (this machine's HTTP ceiling); prints one JSON.
//! `--compare "before=PATH after=PATH"` measures several builds in the same run, interleaved
//! (`--rounds` times each, the bare ceiling again every round), so before/after figures share
//! the machine's state; the summary holds the median of each build's rounds.
//! `--seed000 BROKER` adds the seed-000 pattern (bench/seed000/app.py: FastAPI + aiokafka under
//! two uvicorn workers, 202 after the broker's ack, on the Kafka broker at BROKER) as a peer,
//! measured every round with the same single-event load; substrate's single-event rate is then
//! also given as a ratio to it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{SECRET, drop_db, token};

const ROUTES: &str =
    "routes:\n  message:\n    topic: public.user.message.events\n    allow: [user]\n";

struct Args {
    /// The builds under test: (label, path of `substrate`).
    bins: Vec<(String, PathBuf)>,
    rounds: usize,
    backends: Vec<String>,
    concurrency: usize,
    secs: u64,
    warmup_secs: u64,
    batch: usize,
    pg: String,
    /// The Kafka broker (host:port) of the seed-000 peer; `None` leaves the peer out.
    seed000: Option<String>,
    /// The Python that runs the seed-000 peer.
    python: String,
}

fn args() -> Args {
    let mut a = Args {
        bins: vec![(
            "substrate".into(),
            PathBuf::from("target/release/substrate"),
        )],
        rounds: 1,
        backends: vec!["sqlite".into(), "postgres".into()],
        concurrency: 64,
        secs: 5,
        warmup_secs: 1,
        batch: 100,
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        seed000: None,
        python: "python3".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--bin" => a.bins = vec![("substrate".into(), val.into())],
            "--compare" => {
                a.bins = val
                    .split_whitespace()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("--compare label=path ...");
                        (k.to_string(), PathBuf::from(v))
                    })
                    .collect()
            }
            "--rounds" => a.rounds = val.parse().expect("--rounds"),
            "--backends" => a.backends = val.split_whitespace().map(str::to_string).collect(),
            "--concurrency" => a.concurrency = val.parse().expect("--concurrency"),
            "--secs" => a.secs = val.parse().expect("--secs"),
            "--warmup-secs" => a.warmup_secs = val.parse().expect("--warmup-secs"),
            "--batch" => a.batch = val.parse().expect("--batch"),
            "--pg" => a.pg = val,
            "--seed000" => a.seed000 = Some(val),
            "--python" => a.python = val,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The HTTP ceiling: axum answering every POST with a fixed body after reading the request
/// body, on a multi-threaded runtime like substrate's. Runs as `gateway_bench --hello PORT`.
async fn serve_hello(port: u16) {
    use axum::routing::post;
    async fn hello(_body: Bytes) -> (axum::http::StatusCode, &'static str) {
        (axum::http::StatusCode::ACCEPTED, "{\"hello\":\"world\"}")
    }
    let app = axum::Router::new().route("/{*path}", post(hello));
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind hello");
    axum::serve(l, app).await.expect("serve hello");
}

/// A process under test.
struct Server {
    child: std::process::Child,
    port: u16,
    store_url: String,
    _dir: tempfile::TempDir,
    pg_db: Option<(String, String)>,
    /// The child leads a process group of its own (uvicorn and its workers): kill the group.
    group: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.group {
            // SAFETY: kill(2) on the process group this benchmark created for the child.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(child: &mut std::process::Child, port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_hello() -> Server {
    let port = free_port();
    let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(["--hello", &port.to_string()])
        .spawn()
        .expect("spawn hello server");
    // Any answer means it is up (GET / is 405).
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hello server exited: {status}");
        }
        assert!(Instant::now() < deadline, "hello server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        child,
        port,
        store_url: String::new(),
        _dir: tempfile::tempdir().expect("tempdir"),
        pg_db: None,
        group: false,
    }
}

/// The topic the seed-000 peer produces to.
const SEED000_TOPIC: &str = "seed000.events";

/// The seed-000 peer: bench/seed000/app.py under `uvicorn --workers 2`, producing to `broker`
/// (the topic is created first: the broker does not create topics on first use).
async fn start_seed000(a: &Args, broker: &str) -> Server {
    let cfg = substrate::config::LogConfig {
        url: format!("kafka://{broker}"),
        ..substrate::config::LogConfig::default()
    };
    substrate::log::kafka::topics::create(&cfg, &[SEED000_TOPIC.to_string()])
        .await
        .expect("seed-000 topic");
    let port = free_port();
    let app_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/seed000");
    let mut child = std::process::Command::new(&a.python)
        .args([
            "-m",
            "uvicorn",
            "--app-dir",
            app_dir,
            "app:app",
            "--workers",
            "2",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warning", "--no-access-log"])
        .env("SEED000_BROKER", broker)
        .env("SEED000_TOPIC", SEED000_TOPIC)
        .process_group(0)
        .spawn()
        .expect("spawn uvicorn (python3 -m uvicorn; scripts/setup.sh installs it)");
    wait_ready(&mut child, port, "/healthz").await;
    Server {
        child,
        port,
        store_url: String::new(),
        _dir: tempfile::tempdir().expect("tempdir"),
        pg_db: None,
        group: true,
    }
}

async fn start_gateway(a: &Args, bin: &std::path::Path, backend: &str) -> Server {
    // routes.yaml in a folder of its own: the gateway watches that folder, and must not be
    // woken by every write to the SQLite files (as in production: config/ apart from data/).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("config")).expect("config dir");
    let routes = dir.path().join("config/routes.yaml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let (url, pg_db) = if backend == "postgres" {
        let (url, db) = common::create_db(&a.pg, "bench_gw").await;
        (url, Some(db))
    } else {
        (format!("sqlite://{}/bench.db", dir.path().display()), None)
    };
    let port = free_port();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--roles", "gateway"])
        .env("SUBSTRATE_STORE__URL", &url)
        .env("SUBSTRATE_STORE__MIGRATE_ON_START", "true")
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_SCHEMAS__DIR", "avro")
        .env("SUBSTRATE_GATEWAY__ROUTES_FILE", &routes)
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env("SUBSTRATE_GATEWAY__RATE_LIMIT__ENABLED", "false")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
        .spawn()
        .expect("spawn substrate");
    wait_ready(&mut child, port, "/readyz").await;
    Server {
        child,
        port,
        store_url: url,
        _dir: dir,
        pg_db,
        group: false,
    }
}

/// Outbox rows, read with a connection of our own: every 202 must have stored its events.
async fn stored(url: &str) -> i64 {
    use sqlx::Connection;
    let sql = "SELECT COUNT(*) FROM outbox";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    }
}

/// What one load run saw.
struct Run {
    ok: u64,
    /// Answered with 202 over the whole run, warm-up included.
    ok_all: u64,
    errors: u64,
    secs: f64,
    /// Latencies of answered requests in the measured window, microseconds.
    lat_us: Vec<u32>,
}

/// Closed loop: `concurrency` connections, each sending the next request when the last one
/// is answered, for `warmup + secs`; only the last `secs` are counted.
async fn drive(
    port: u16,
    path: &str,
    bodies: Arc<Vec<(String, Bytes)>>,
    concurrency: usize,
    warmup: Duration,
    secs: Duration,
) -> Run {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + secs;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let bodies = bodies.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let (auth, body) = bodies[i % bodies.len()].clone();
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let (mut ok, mut errors, mut ok_all) = (0u64, 0u64, 0u64);
            let mut lat = Vec::with_capacity(1 << 14);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let req = Request::post(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let good = match send.send_request(req).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let drained = r.into_body().collect().await.is_ok();
                        status == 202 && drained
                    }
                    Err(e) => panic!("request failed: {e}"),
                };
                let done = Instant::now();
                if good {
                    ok_all += 1;
                }
                if sent >= measure_from {
                    if good {
                        ok += 1;
                        lat.push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (ok, errors, ok_all, lat)
        }));
    }
    let mut run = Run {
        ok: 0,
        ok_all: 0,
        errors: 0,
        secs: secs.as_secs_f64(),
        lat_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, ok_all, lat) = t.await.expect("load task");
        run.ok += ok;
        run.ok_all += ok_all;
        run.errors += errors;
        run.lat_us.extend(lat);
    }
    run
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`; utime and stime are the 14th and 15th overall.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let u: f64 = rest.get(11)?.parse().ok()?;
            let st: f64 = rest.get(12)?.parse().ok()?;
            Some((u + st) / ticks)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of `pid` and its direct children (uvicorn's workers are its children).
fn tree_cpu_secs(pid: u32) -> f64 {
    let children = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| parent_of(*p) == Some(pid))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    cpu_secs(pid) + children.into_iter().map(cpu_secs).sum::<f64>()
}

/// The parent pid of `pid`, from /proc (the field after the state, after `(comm)`).
fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `drive`, plus the server's CPU time per request over the whole run: a figure that holds
/// up better than rates on a machine shared with other work.
async fn drive_measured(
    pid: u32,
    port: u16,
    path: &str,
    bodies: Arc<Vec<(String, Bytes)>>,
    concurrency: usize,
    warmup: Duration,
    secs: Duration,
) -> (Run, f64) {
    let cpu0 = tree_cpu_secs(pid);
    let run = drive(port, path, bodies, concurrency, warmup, secs).await;
    let cpu = tree_cpu_secs(pid) - cpu0;
    let per_request_us = cpu / run.ok_all.max(1) as f64 * 1e6;
    (run, per_request_us)
}

fn q_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    (f64::from(sorted[i]) / 10.0).round() / 100.0
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn report(run: &mut Run, events_per_request: usize) -> Value {
    run.lat_us.sort_unstable();
    let rps = run.ok as f64 / run.secs;
    json!({
        "requests_per_s": r2(rps),
        "events_per_s": r2(rps * events_per_request as f64),
        "p50_ms": q_ms(&run.lat_us, 0.50),
        "p99_ms": q_ms(&run.lat_us, 0.99),
        "requests": run.ok,
        "errors": run.errors,
    })
}

fn single_body(i: usize) -> Bytes {
    Bytes::from(
        json!({ "message": format!("bench message {i}"), "timestamp": 1_767_225_600_000i64 })
            .to_string(),
    )
}

fn batch_body(i: usize, n: usize) -> Bytes {
    let items: Vec<Value> = (0..n)
        .map(|k| json!({ "message": format!("bench message {i}.{k}"), "timestamp": 1_767_225_600_000i64 }))
        .collect();
    Bytes::from(Value::Array(items).to_string())
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--hello") {
        let port = raw
            .get(2)
            .and_then(|p| p.parse().ok())
            .expect("--hello PORT");
        serve_hello(port).await;
        return;
    }
    let a = args();
    let warmup = Duration::from_secs(a.warmup_secs);
    let secs = Duration::from_secs(a.secs);
    // One user per connection, each with its own token.
    let singles: Arc<Vec<(String, Bytes)>> = Arc::new(
        (0..a.concurrency)
            .map(|i| {
                (
                    format!("Bearer {}", token(&format!("user{i}"))),
                    single_body(i),
                )
            })
            .collect(),
    );
    let batches: Arc<Vec<(String, Bytes)>> = Arc::new(
        (0..a.concurrency)
            .map(|i| {
                (
                    format!("Bearer {}", token(&format!("user{i}"))),
                    batch_body(i, a.batch),
                )
            })
            .collect(),
    );

    let mut bare_runs = Vec::new();
    let mut seed_runs = Vec::new();
    let mut results = Vec::new();
    for round in 0..a.rounds {
        // The ceiling again every round: the machine's state drifts between rounds.
        let mut bare = measure_hello(&singles, &a, warmup, secs).await;
        bare["round"] = json!(round);
        let bare_rps = bare["requests_per_s"].as_f64().unwrap_or(0.0).max(1.0);
        bare_runs.push(bare);
        if let Some(broker) = &a.seed000 {
            let mut seed = measure_seed000(&singles, &a, broker, warmup, secs).await;
            seed["round"] = json!(round);
            seed_runs.push(seed);
        }
        for backend in &a.backends {
            for (label, bin) in &a.bins {
                for mut r in
                    measure_gateway(&a, bin, backend, &singles, &batches, warmup, secs).await
                {
                    r["build"] = json!(label);
                    r["round"] = json!(round);
                    r["ratio_to_bare_axum"] = json!(
                        (r["requests_per_s"].as_f64().unwrap_or(0.0) / bare_rps * 1000.0).round()
                            / 1000.0
                    );
                    results.push(r);
                }
            }
        }
    }
    let out = summary(&a, bare_runs, seed_runs, results);
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}

/// One run of the bare-axum ceiling.
async fn measure_hello(
    singles: &Arc<Vec<(String, Bytes)>>,
    a: &Args,
    warmup: Duration,
    secs: Duration,
) -> Value {
    let hello = start_hello().await;
    let (mut ceiling, hello_cpu_us) = drive_measured(
        hello.child.id(),
        hello.port,
        "/api/v1/events/message",
        singles.clone(),
        a.concurrency,
        warmup,
        secs,
    )
    .await;
    drop(hello);
    let mut bare = report(&mut ceiling, 1);
    bare["server_cpu_us_per_request"] = json!(r2(hello_cpu_us));
    bare
}

/// One run of the seed-000 peer (single events only: the pattern has no batch endpoint).
async fn measure_seed000(
    singles: &Arc<Vec<(String, Bytes)>>,
    a: &Args,
    broker: &str,
    warmup: Duration,
    secs: Duration,
) -> Value {
    let peer = start_seed000(a, broker).await;
    let (mut run, cpu_us) = drive_measured(
        peer.child.id(),
        peer.port,
        "/api/v1/events/message",
        singles.clone(),
        a.concurrency,
        warmup,
        secs,
    )
    .await;
    drop(peer);
    let mut r = report(&mut run, 1);
    r["server_cpu_us_per_request"] = json!(r2(cpu_us));
    r
}

/// Single and batch ingest against one fresh gateway of build `bin` on `backend`.
async fn measure_gateway(
    a: &Args,
    bin: &std::path::Path,
    backend: &str,
    singles: &Arc<Vec<(String, Bytes)>>,
    batches: &Arc<Vec<(String, Bytes)>>,
    warmup: Duration,
    secs: Duration,
) -> Vec<Value> {
    let s = start_gateway(a, bin, backend).await;
    let mut out = Vec::new();
    for (mode, path, bodies, per) in [
        ("single", "/api/v1/events/message", singles.clone(), 1),
        (
            "batch",
            "/api/v1/events/message/batch",
            batches.clone(),
            a.batch,
        ),
    ] {
        let before = stored(&s.store_url).await;
        let (mut run, cpu_us) = drive_measured(
            s.child.id(),
            s.port,
            path,
            bodies,
            a.concurrency,
            warmup,
            secs,
        )
        .await;
        let after = stored(&s.store_url).await;
        let mut r = report(&mut run, per);
        r["backend"] = json!(backend);
        r["mode"] = json!(mode);
        r["events_per_request"] = json!(per);
        r["server_cpu_us_per_request"] = json!(r2(cpu_us));
        r["server_cpu_us_per_event"] = json!(r2(cpu_us / per as f64));
        // Includes the warm-up: a sanity check that 202 meant stored, not a rate.
        r["stored_events_incl_warmup"] = json!(after - before);
        out.push(r);
    }
    let pg_db = s.pg_db.clone();
    drop(s);
    drop_db(pg_db).await;
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The JSON document: every run, and per build the median of its rounds with the ratios
/// (single-event req/s over the median bare-axum req/s) and the targets.
fn summary(a: &Args, bare_runs: Vec<Value>, seed_runs: Vec<Value>, results: Vec<Value>) -> Value {
    let field = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    let bare_rps = median(
        bare_runs
            .iter()
            .map(|r| field(r, "requests_per_s"))
            .collect(),
    );
    let seed_rps = median(
        seed_runs
            .iter()
            .map(|r| field(r, "requests_per_s"))
            .collect(),
    );
    let mut builds = serde_json::Map::new();
    for (label, _) in &a.bins {
        let mut rows = serde_json::Map::new();
        let (mut single_ratio, mut batch_eps) = (f64::INFINITY, f64::INFINITY);
        for backend in &a.backends {
            for mode in ["single", "batch"] {
                let runs: Vec<&Value> = results
                    .iter()
                    .filter(|r| {
                        r["build"] == label.as_str()
                            && r["backend"] == backend.as_str()
                            && r["mode"] == mode
                    })
                    .collect();
                let med = |k: &str| r2(median(runs.iter().map(|r| field(r, k)).collect()));
                let ratio = (med("requests_per_s") / bare_rps.max(1.0) * 1000.0).round() / 1000.0;
                // Against the seed-000 peer (single events; absent without the peer).
                let to_seed = (mode == "single" && seed_rps > 0.0)
                    .then(|| (med("requests_per_s") / seed_rps * 100.0).round() / 100.0);
                if mode == "single" {
                    single_ratio = single_ratio.min(ratio);
                } else {
                    batch_eps = batch_eps.min(med("events_per_s"));
                }
                rows.insert(
                    format!("{backend}_{mode}"),
                    json!({
                        "events_per_s": med("events_per_s"),
                        "requests_per_s": med("requests_per_s"),
                        "p50_ms": med("p50_ms"),
                        "p99_ms": med("p99_ms"),
                        "server_cpu_us_per_event": med("server_cpu_us_per_event"),
                        "ratio_to_bare_axum": ratio,
                        "ratio_to_seed000": to_seed,
                        "errors": runs.iter().map(|r| r["errors"].as_u64().unwrap_or(0)).sum::<u64>(),
                    }),
                );
            }
        }
        rows.insert(
            "targets".into(),
            json!({
                "single_ratio_to_bare_axum_min": { "sqlite": 0.5, "postgres": 0.4 },
                "single_ratio_worst": single_ratio,
                "batch_events_per_s_min": { "sqlite": 200_000, "postgres": 150_000 },
                "batch_events_per_s_worst": batch_eps,
                "single_ratio_to_seed000_min": 10,
            }),
        );
        builds.insert(label.clone(), Value::Object(rows));
    }
    json!({
        "bench": "gateway",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "concurrency": a.concurrency,
        "measure_secs": a.secs,
        "warmup_secs": a.warmup_secs,
        "batch_size": a.batch,
        "rounds": a.rounds,
        "durability": { "sqlite": "synchronous=full (fsync per group commit)", "postgres": "synchronous_commit as the server is set (on by default)" },
        "bare_axum": {
            "requests_per_s_median": r2(bare_rps),
            "runs": bare_runs,
        },
        "seed000": {
            "what": "FastAPI + aiokafka (bench/seed000/app.py), 2 uvicorn workers, idempotent acks=all producer, 202 after the broker ack; no JWT, no schema",
            "broker": a.seed000,
            "requests_per_s_median": (!seed_runs.is_empty()).then_some(r2(seed_rps)),
            "runs": seed_runs,
        },
        "summary": builds,
        "runs": results,
    })
}
