//! Smoke runs of the benchmark programs (bench/*.rs, built as examples in this test's profile),
//! so they never rot: each runs for a second or two with tiny sizes against the real parts
//! (substrate, PostgreSQL, a nisshi broker, the seed-000 peer under uvicorn), and its JSON must
//! parse with every figure it reports > 0 and no failed request. Those are assertions that the
//! benchmark measured something, never on how fast: no timed assertions. They never run
//! scripts/services.sh (it drops the databases of tests running in parallel).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The example `name`, built first (`cargo build --example`, a no-op when it is fresh: the
/// suite may have been built with `--test it`, which builds no examples) in the profile of
/// this test binary (target/<profile>/deps/it-… → target/<profile>/examples/name).
async fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(repo().join("Cargo.toml"));
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd.status().await.expect("run cargo build");
    assert!(status.success(), "cargo build --example {name} failed");
    profile_dir.join("examples").join(name)
}

/// Runs a benchmark program to the end (at most 4 minutes: it is meant to take seconds) and
/// parses what it printed.
async fn run_json(bin: &Path, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args).current_dir(repo()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("benchmark did not finish within 4 minutes")
        .expect("run benchmark");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "benchmark printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `v[path…]` as a number > 0, or a failure naming the path.
fn positive(v: &Value, path: &[&str]) -> f64 {
    let x = path.iter().fold(v, |v, k| &v[*k]);
    let n = x.as_f64().unwrap_or(0.0);
    assert!(n > 0.0, "{path:?} should be a figure > 0, is {x} in\n{v:#}");
    n
}

/// Fails (never skips) without the seed-000 peer's Python modules: scripts/setup.sh installs
/// them.
async fn require_seed000_python() {
    let out = tokio::process::Command::new("python3")
        .args(["-c", "import fastapi, uvicorn, aiokafka"])
        .output()
        .await
        .expect("python3 is not installed; run scripts/setup.sh");
    assert!(
        out.status.success(),
        "python3 lacks fastapi, uvicorn or aiokafka; run scripts/setup.sh\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn gateway_bench_smoke() {
    require_seed000_python().await;
    let bin = example("gateway_bench").await;
    let broker = kafka::Broker::start();
    let substrate = env!("CARGO_BIN_EXE_substrate");
    let pg = pg::admin_url();
    let v = run_json(
        &bin,
        &[
            "--bin",
            substrate,
            "--backends",
            "sqlite postgres",
            "--concurrency",
            "4",
            "--secs",
            "1",
            "--warmup-secs",
            "0",
            "--batch",
            "5",
            "--pg",
            &pg,
            "--seed000",
            &broker.bootstrap(),
        ],
    )
    .await;
    positive(&v, &["bare_axum", "requests_per_s_median"]);
    positive(&v, &["seed000", "requests_per_s_median"]);
    for row in [
        "sqlite_single",
        "sqlite_batch",
        "postgres_single",
        "postgres_batch",
    ] {
        positive(&v, &["summary", "substrate", row, "events_per_s"]);
        positive(&v, &["summary", "substrate", row, "ratio_to_bare_axum"]);
        assert_eq!(v["summary"]["substrate"][row]["errors"], 0, "{row}: {v:#}");
    }
    positive(
        &v,
        &["summary", "substrate", "sqlite_single", "ratio_to_seed000"],
    );
    // Every 202 stored its events (the runs include the warm-up in this count).
    for run in v["runs"].as_array().expect("runs") {
        let stored = run["stored_events_incl_warmup"].as_i64().unwrap_or(0);
        let answered =
            run["requests"].as_i64().unwrap_or(0) * run["events_per_request"].as_i64().unwrap_or(0);
        assert!(
            stored >= answered && stored > 0,
            "stored {stored} < answered {answered}: {run}"
        );
    }
}

#[tokio::test]
async fn log_bench_relay_smoke() {
    let bin = example("log_bench").await;
    let broker = kafka::Broker::start();
    let pg = pg::admin_url();
    let v = run_json(
        &bin,
        &[
            "--broker",
            &broker.bootstrap(),
            "--events",
            "300",
            "--part",
            "relay",
            "--pg",
            &pg,
        ],
    )
    .await;
    for k in [
        "raw_rdkafka_events_per_sec",
        "postgres_events_per_sec",
        "sqlite_events_per_sec",
        "postgres_ratio",
        "sqlite_ratio",
    ] {
        positive(&v, &["relay", k]);
    }
    for k in [
        "embedded_sqlite_events_per_sec",
        "raw_insert_sqlite_rows_per_sec",
        "embedded_postgres_events_per_sec",
        "raw_insert_postgres_rows_per_sec",
        "kafka_postgres_events_per_sec",
    ] {
        positive(&v, &["projection", k]);
    }
}

#[tokio::test]
async fn log_bench_consumers_smoke() {
    let bin = example("log_bench").await;
    let broker = kafka::Broker::start();
    let pg = pg::admin_url();
    let v = run_json(
        &bin,
        &[
            "--broker",
            &broker.bootstrap(),
            "--events",
            "300",
            "--part",
            "consumers",
            "--pg",
            &pg,
        ],
    )
    .await;
    for col in ["embedded_sqlite", "embedded_postgres", "kafka_postgres"] {
        positive(&v, &["consumers", col, "all_groups", "role_events_per_sec"]);
        positive(&v, &["consumers", col, "all_groups", "notifications"]);
    }
    positive(
        &v,
        &["consumers", "embedded_sqlite", "stats_alone", "stats"],
    );
}

#[tokio::test]
async fn log_bench_sweep_smoke() {
    let bin = example("log_bench").await;
    let broker = kafka::Broker::start();
    let pg = pg::admin_url();
    let v = run_json(
        &bin,
        &[
            "--broker",
            &broker.bootstrap(),
            "--events",
            "200",
            "--part",
            "sweep",
            "--sweep-pending",
            "200 400",
            "--sweep-rows",
            "0 500",
            "--pg",
            &pg,
        ],
    )
    .await;
    positive(&v, &["sweep", "raw_rdkafka_events_per_sec"]);
    for store in ["sqlite", "postgres"] {
        let relay = v["sweep"][format!("relay_{store}")]
            .as_array()
            .expect("relay rows");
        assert_eq!(relay.len(), 2, "{v:#}");
        for row in relay {
            positive(row, &["events_per_sec"]);
        }
        for key in ["projection", "outbox_append"] {
            let rows = v["sweep"][format!("{key}_{store}")]
                .as_array()
                .expect("rows");
            assert_eq!(rows.len(), 2, "{v:#}");
        }
        positive(
            &v["sweep"][format!("projection_{store}")][1],
            &["events_per_sec"],
        );
        positive(
            &v["sweep"][format!("projection_{store}")][1],
            &["raw_insert_rows_per_sec"],
        );
        positive(
            &v["sweep"][format!("outbox_append_{store}")][1],
            &["append_events_per_sec"],
        );
    }
}

#[tokio::test]
async fn realtime_bench_smoke() {
    let bin = example("realtime_bench").await;
    let substrate = env!("CARGO_BIN_EXE_substrate");
    let pg = pg::admin_url();
    let v = run_json(
        &bin,
        &[
            "--bin",
            substrate,
            "--backend",
            "sqlite",
            "--log",
            "embedded",
            "--rate",
            "20",
            "--secs",
            "1",
            "--clients",
            "10",
            "--pg",
            &pg,
        ],
    )
    .await;
    positive(&v, &["latency", "accepted"]);
    positive(&v, &["latency", "delivered"]);
    positive(&v, &["latency", "latency_202_to_sse_ms", "p99"]);
    positive(&v, &["latency", "baseline_post_round_trip_ms", "p99"]);
    positive(&v, &["fanout", "held_by_server"]);
}
