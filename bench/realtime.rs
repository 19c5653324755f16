//! Realtime benchmark (run it with `bench/realtime.sh`, which builds in release mode). Starts a
//! real `substrate serve` per backend and measures, printing JSON:
//! - end-to-end latency from the gateway's 202 to delivery on an SSE stream, at a fixed
//!   offered load (open loop: one request every 1/rate s, whatever the answers do), p50/p99/max,
//!   with the POST round trip of the same run as the baseline;
//! - how many concurrent SSE clients one process holds, its memory per client, and how long a
//!   broadcast takes to reach all of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

#[path = "common.rs"]
mod common;

use common::{SECRET, drop_db, token};

const ROUTES: &str =
    "routes:\n  message:\n    topic: public.user.message.events\n    allow: [user]\n";

struct Args {
    bin: PathBuf,
    backend: String,
    rate: u64,
    secs: u64,
    clients: usize,
    pg: String,
    /// `embedded` or `kafka://host:port` (the relay then runs in the same process).
    log: String,
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::from("target/release/substrate"),
        backend: "sqlite".into(),
        rate: 1000,
        secs: 10,
        clients: 5000,
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        log: "embedded".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--bin" => a.bin = val.into(),
            "--backend" => a.backend = val,
            "--rate" => a.rate = val.parse().expect("--rate"),
            "--secs" => a.secs = val.parse().expect("--secs"),
            "--clients" => a.clients = val.parse().expect("--clients"),
            "--pg" => a.pg = val,
            "--log" => a.log = val,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn quantiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] * 100.0).round() / 100.0
    };
    json!({ "n": v.len(), "p50": q(0.50), "p99": q(0.99), "max": q(1.0) })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A process under test.
struct Server {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
    pg_db: Option<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(a: &Args) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).expect("routes");
    let (url, pg_db) = if a.backend == "postgres" {
        let (url, db) = common::create_db(&a.pg, "bench").await;
        (url, Some(db))
    } else {
        (format!("sqlite://{}/bench.db", dir.path().display()), None)
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = std::process::Command::new(&a.bin)
        .args(["serve", "--roles", "all"])
        .env("SUBSTRATE_STORE__URL", &url)
        .env("SUBSTRATE_STORE__MIGRATE_ON_START", "true")
        .env("SUBSTRATE_LOG__URL", &a.log)
        .env("SUBSTRATE_LOG__POLL_INTERVAL_MS", "100")
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_SCHEMAS__DIR", "avro")
        .env("SUBSTRATE_GATEWAY__ROUTES_FILE", &routes)
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env("SUBSTRATE_GATEWAY__RATE_LIMIT__ENABLED", "false")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
        .env("SUBSTRATE_REALTIME__SLOW_CLIENT_TIMEOUT_MS", "30000")
        .spawn()
        .expect("spawn substrate");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("substrate exited during start-up: {status}");
        }
        assert!(Instant::now() < deadline, "substrate did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        child,
        base,
        _dir: dir,
        pg_db,
    }
}

/// The payload's `message` of a notification's JSON, found without parsing it all (the
/// client shares the machine with the server; it should cost as little as possible).
fn message_of(data: &str) -> &str {
    data.split_once("\"message\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(m, _)| m)
        .unwrap_or("")
}

/// Reads an SSE response; calls `on` with each notification's (id, message text).
async fn read_sse(resp: reqwest::Response, mut on: impl FnMut(i64, &str) -> bool) {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    // The cursor is `<epoch>:<id>`; a plain id is the initial epoch's.
                    id = v.rsplit(':').next().and_then(|n| n.parse::<i64>().ok());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_string());
                }
            }
            if let (Some(id), Some(d)) = (id, data)
                && !on(id, message_of(&d))
            {
                return;
            }
        }
    }
}

async fn open_sse(http: &reqwest::Client, base: &str, user: &str, after: i64) -> reqwest::Response {
    let r = http
        .get(format!("{base}/api/v1/notifications/stream?after={after}"))
        .bearer_auth(token(user))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    r
}

/// Offered load → latency from 202 to SSE delivery. Returns the JSON and the last id seen.
async fn latency(a: &Args, s: &Server) -> (Value, i64) {
    let http = reqwest::Client::new();
    let total = (a.rate * a.secs) as usize;
    let delivered: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let last_id = Arc::new(Mutex::new(0i64));
    let resp = open_sse(&http, &s.base, "watcher", 0).await;
    let reader = {
        let delivered = delivered.clone();
        let last_id = last_id.clone();
        tokio::spawn(read_sse(resp, move |id, msg| {
            let now = Instant::now();
            *last_id.lock() = id;
            if let Some(seq) = msg.strip_prefix("seq:").and_then(|n| n.parse().ok()) {
                let mut d = delivered.lock();
                d.insert(seq, now);
                return d.len() < total;
            }
            true
        }))
    };
    let tokens: Vec<String> = (0..50).map(|i| token(&format!("producer{i}"))).collect();
    let accepted: Arc<Mutex<Vec<(usize, Instant, Instant)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / a.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for seq in 0..total {
        tick.tick().await;
        let http = http.clone();
        let url = format!("{}/api/v1/events/message", s.base);
        let tok = tokens[seq % tokens.len()].clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = http
                .post(url)
                .bearer_auth(tok)
                .json(
                    &json!({ "message": format!("seq:{seq}"), "timestamp": 1_767_225_600_000i64 }),
                )
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().as_u16() == 202) {
                accepted.lock().push((seq, sent, Instant::now()));
            }
        }));
    }
    let offered_secs = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), reader).await;
    let delivered = delivered.lock().clone();
    let accepted = accepted.lock().clone();
    let mut e2e = Vec::new();
    let mut early = 0;
    let mut post_rtt = Vec::new();
    for (seq, sent, ok) in &accepted {
        post_rtt.push(ok.duration_since(*sent).as_secs_f64() * 1e3);
        if let Some(d) = delivered.get(seq) {
            if d < ok {
                early += 1;
            }
            e2e.push(d.saturating_duration_since(*ok).as_secs_f64() * 1e3);
        }
    }
    let v = json!({
        "offered_rate_per_s": a.rate,
        "offered_secs": (offered_secs * 100.0).round() / 100.0,
        "events": total,
        "accepted": accepted.len(),
        "delivered": delivered.len(),
        "delivered_before_202_seen": early,
        "latency_202_to_sse_ms": quantiles(e2e),
        "baseline_post_round_trip_ms": quantiles(post_rtt),
    });
    let last = *last_id.lock();
    (v, last)
}

/// Holds `n` SSE clients on the server, then times one broadcast reaching all of them.
async fn fanout(a: &Args, s: &Server, after: i64) -> Value {
    let pid = s.child.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let rss_before = rss_kb(pid);
    let got: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut readers = Vec::with_capacity(a.clients);
    let opened = Instant::now();
    let ids: Vec<usize> = (0..a.clients).collect();
    for chunk in ids.chunks(250) {
        let mut opening = Vec::new();
        for &i in chunk {
            let http = http.clone();
            let base = s.base.clone();
            opening.push(tokio::spawn(async move {
                open_sse(&http, &base, &format!("fan{i}"), after).await
            }));
        }
        for o in opening {
            let resp = o.await.expect("open");
            let got = got.clone();
            readers.push(tokio::spawn(read_sse(resp, move |_, msg| {
                if msg == "fanout" {
                    got.lock().push(Instant::now());
                    return false;
                }
                true
            })));
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    // Let the server settle, then read its memory and its own connection count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = rss_kb(pid);
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let held: i64 = metrics
        .lines()
        .find(|l| l.starts_with("substrate_realtime_connections{transport=\"sse\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let r = http
        .post(format!("{}/api/v1/events/message", s.base))
        .bearer_auth(token("announcer"))
        .json(&json!({ "message": "fanout", "timestamp": 1_767_225_600_000i64 }))
        .send()
        .await
        .expect("post");
    let accepted = Instant::now();
    let status = r.status().as_u16();
    assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().len() < a.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let times: Vec<f64> = got
        .lock()
        .iter()
        .map(|t| t.saturating_duration_since(accepted).as_secs_f64() * 1e3)
        .collect();
    for r in readers {
        r.abort();
    }
    json!({
        "clients": a.clients,
        "held_by_server": held,
        "open_secs": (open_secs * 100.0).round() / 100.0,
        "server_rss_mb_before": rss_before / 1024,
        "server_rss_mb_holding": rss_held / 1024,
        "server_kb_per_client": ((rss_held.saturating_sub(rss_before)) as f64 / a.clients as f64 * 10.0).round() / 10.0,
        "broadcast_202_to_all_clients_ms": quantiles(times),
    })
}

#[tokio::main]
async fn main() {
    let a = args();
    let server = start(&a).await;
    let (lat, last) = latency(&a, &server).await;
    let fan = fanout(&a, &server, last).await;
    let pg_db = server.pg_db.clone();
    drop(server);
    drop_db(pg_db).await;
    let out = json!({
        "bench": "realtime",
        "backend": a.backend,
        "log": if a.log == "embedded" { "embedded" } else { "kafka" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "latency": lat,
        "fanout": fan,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
