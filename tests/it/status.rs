//! The probe and the status page on both columns: a successful round trip and an all-green
//! page; the projections going down while no consumer runs and recovering when one starts;
//! one probe at a time across instances (a lease) with takeover; uptime history and its
//! retention; a configured but unreachable analytics store; nothing internal on the page; a
//! PostgreSQL outage turning `/readyz` 503 and back; a stopped Kafka broker turning the log
//! down and back (waiting for the Kafka backend). Also: `promtool` validates (and unit-tests) the shipped alert rules, and every query of the
//! shipped dashboard and rules names a metric `/metrics` really exports.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use substrate::app::AppContext;
use substrate::config::Config;
use substrate::consumers::{Emitter, Envelope, Handler, HandlerError, runtime};
use substrate::roles::Role;
use substrate::server::Running;
use substrate::status::history;
use substrate::store::{Tx, now_micros};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A second process on the same store.
struct Instance {
    ctx: AppContext,
    base: String,
    running: Running,
}

impl Instance {
    async fn start(app: &TestApp, roles: Vec<Role>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = test_config(&app.store);
        tweak(&mut cfg);
        let ctx = AppContext::build(cfg).await.expect("build");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running =
            substrate::server::start(ctx.clone(), roles, listener, CancellationToken::new())
                .unwrap();
        let base = format!("http://{}", running.addr);
        Instance { ctx, base, running }
    }

    async fn stop(self) {
        self.running.stop().await.expect("clean stop");
    }
}

fn fast_probe(c: &mut Config) {
    c.probe.interval_secs = 1;
    c.probe.timeout_secs = 2;
}

async fn text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// The value of one sample (`name{labels}` exactly as exported) in Prometheus text.
fn sample(metrics: &str, key: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn component<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("component {name} missing: {doc}"))
}

async fn status_json(app: &TestApp) -> Value {
    let (s, doc) = app.get_json("/status.json", None).await;
    assert_eq!(s, 200);
    doc
}

/// Fails when the text shows where or how substrate runs.
fn assert_no_internals(app: &TestApp, body: &str) {
    let url = &app.store.url;
    let db = url.rsplit('/').next().unwrap_or(url);
    for secret in [
        db,
        url.as_str(),
        &app.store.dir.path().display().to_string(),
        "127.0.0.1",
        "localhost",
        "postgres",
        "sqlite",
        SECRET,
    ] {
        assert!(!body.contains(secret), "the status page shows {secret:?}");
    }
}

const COMPONENTS: [&str; 7] = [
    "gateway",
    "store",
    "log",
    "relay",
    "projections",
    "sagas",
    "objects",
];

both!(probe_round_trip_and_status);
async fn probe_round_trip_and_status(b: Backend) {
    let app = TestApp::start_with(b, fast_probe).await;
    let doc = eventually(30, || async {
        let d = status_json(&app).await;
        (d["probe"]["last"]["ok"] == true && d["status"] == "operational").then_some(d)
    })
    .await;
    let names: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, COMPONENTS, "analytics only when configured");
    for c in COMPONENTS {
        assert_eq!(component(&doc, c)["state"], "operational", "{c}: {doc}");
        assert_eq!(component(&doc, c)["days"].as_array().unwrap().len(), 90);
    }
    assert!(doc["probe"]["last"]["round_trip_ms"].as_f64().unwrap() > 0.0);
    assert!(doc["probe"]["last_hour"]["runs"].as_u64().unwrap() >= 1);
    assert!(doc["probe"]["last_hour"]["p50_ms"].as_f64().is_some());

    // The run is in the store: sent, projected by the probe's consumer group, timed.
    let (outcome, projected, rtt): (String, Option<i64>, Option<i64>) = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as("SELECT outcome, projected_at, round_trip_us FROM probe_runs WHERE outcome = 'ok' ORDER BY sent_at DESC LIMIT 1")
            .fetch_one(p).await.unwrap()
    });
    assert_eq!(outcome, "ok");
    assert!(projected.is_some() && rtt.unwrap() > 0);

    // Today's uptime bar has data once the probe recorded an evaluation.
    let doc = eventually(20, || async {
        let d = status_json(&app).await;
        (component(&d, "projections")["days"][89]["state"] == "operational").then_some(d)
    })
    .await;
    assert_eq!(component(&doc, "store")["uptime_percent"], 100.0);

    let m = text(&app.http, &app.url("/metrics")).await;
    assert!(sample(&m, "substrate_probe_round_trip_seconds_count").unwrap() >= 1.0);
    assert_eq!(
        sample(&m, "substrate_probe_failures_total{reason=\"timeout\"}"),
        Some(0.0)
    );
    assert!(sample(&m, "substrate_probe_last_success_timestamp_seconds").unwrap() > 1e9);
    for c in COMPONENTS {
        assert_eq!(
            sample(
                &m,
                &format!("substrate_status_component_up{{component=\"{c}\"}}")
            ),
            Some(1.0),
            "{c}"
        );
    }

    let (s, ready) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(ready["checks"]["log"], "ok");

    let r = app.http.get(app.url("/status")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.headers().contains_key("x-request-id"));
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"name="viewport""#) && html.contains(r#"http-equiv="refresh""#));
    assert!(html.contains("All systems operational"));
    for c in COMPONENTS {
        assert!(
            html.contains(&format!(r#"data-component="{c}" data-state="operational""#)),
            "{c}"
        );
    }
    assert!(html.contains("<polyline"), "the latency chart has a line");
    assert_no_internals(&app, &html);
    assert_no_internals(&app, &text(&app.http, &app.url("/status.json")).await);
    app.stop().await;
}

both!(projections_go_down_without_consumers_and_recover);
async fn projections_go_down_without_consumers_and_recover(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay, Role::Probe], |c| {
        fast_probe(c);
        c.probe.timeout_secs = 1;
    })
    .await;
    let doc = eventually(30, || async {
        let d = status_json(&app).await;
        (component(&d, "projections")["state"] == "down").then_some(d)
    })
    .await;
    assert_eq!(component(&doc, "projections")["reason"], "probe_failed");
    assert_eq!(doc["status"], "down");
    assert_eq!(doc["probe"]["last"]["ok"], false);
    assert_eq!(component(&doc, "store")["state"], "operational");
    // Readiness is about this instance's own dependencies, which answer.
    assert_eq!(app.get_json("/readyz", None).await.0, 200);
    // The page evaluates on request; the gauges are exported by the probe after its run.
    let m = eventually(30, || async {
        let m = text(&app.http, &app.url("/metrics")).await;
        (sample(
            &m,
            "substrate_status_component_up{component=\"projections\"}",
        ) == Some(0.0))
        .then_some(m)
    })
    .await;
    assert!(sample(&m, "substrate_probe_failures_total{reason=\"timeout\"}").unwrap() >= 1.0);
    let html = text(&app.http, &app.url("/status")).await;
    assert!(html.contains(r#"data-component="projections" data-state="down""#));
    assert!(html.contains("Some systems are down"));

    // A consumer process starts: the probe goes through again and the page recovers.
    let consumers = Instance::start(&app, vec![Role::Consumers], fast_probe).await;
    let doc = eventually(30, || async {
        let d = status_json(&app).await;
        (d["status"] == "operational").then_some(d)
    })
    .await;
    assert_eq!(doc["probe"]["last"]["ok"], true);
    assert!(doc["probe"]["last_hour"]["failures"].as_u64().unwrap() >= 1);
    let m = text(&app.http, &app.url("/metrics")).await;
    assert_eq!(
        sample(
            &m,
            "substrate_status_component_up{component=\"projections\"}"
        ),
        Some(1.0)
    );
    consumers.stop().await;
    app.stop().await;
}

async fn runs_by_instance(app: &TestApp) -> Vec<(String, i64, String)> {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as("SELECT instance, sent_at, outcome FROM probe_runs ORDER BY sent_at")
            .fetch_all(p).await.unwrap()
    })
}

both!(one_probe_at_a_time);
async fn one_probe_at_a_time(b: Backend) {
    let app = TestApp::start_with(b, fast_probe).await;
    // Once the first instance has probed it holds the lease; a second one joins.
    let first = eventually(30, || async {
        runs_by_instance(&app)
            .await
            .into_iter()
            .find(|r| r.2 == "ok")
            .map(|r| r.0)
    })
    .await;
    let other = Instance::start(&app, substrate::roles::ALL.to_vec(), fast_probe).await;
    let joined = now_micros();
    let runs = eventually(30, || async {
        let r = runs_by_instance(&app).await;
        (r.iter().filter(|x| x.1 > joined && x.2 == "ok").count() >= 4).then_some(r)
    })
    .await;
    let probers: BTreeSet<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        probers,
        BTreeSet::from([first.as_str()]),
        "two probes ran: {runs:?}"
    );

    // The lease holder stops cleanly: the other instance takes over.
    let store = app.stop_keep_store().await;
    let runs: Vec<(String, i64, String)> = eventually(30, || async {
        let r: Vec<(String, i64, String)> = substrate::on_read!(other.ctx.store, p => {
            sqlx::query_as("SELECT instance, sent_at, outcome FROM probe_runs ORDER BY sent_at")
                .fetch_all(p).await.unwrap()
        });
        r.iter().any(|x| x.0 != first && x.2 == "ok").then_some(r)
    })
    .await;
    let probers: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    let switch = probers.iter().position(|p| *p != first).unwrap();
    assert!(
        probers[switch..].iter().all(|p| *p != first),
        "runs interleave after the hand-over: {probers:?}"
    );
    assert_eq!(
        probers[switch..].iter().collect::<BTreeSet<_>>().len(),
        1,
        "{probers:?}"
    );
    let (s, doc) = reqwest::get(format!("{}/status.json", other.base))
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        doc.json::<Value>().await.unwrap()["probe"]["last"]["ok"],
        true
    );
    other.stop().await;
    store.drop_db().await;
}

async fn insert_day(app: &TestApp, component: &str, day: i64, counts: (i64, i64, i64)) {
    substrate::on_write!(app.ctx.store, p => {
        sqlx::query("INSERT INTO status_daily (component, day, operational_n, degraded_n, down_n) VALUES ($1, $2, $3, $4, $5)")
            .bind(component).bind(day).bind(counts.0).bind(counts.1).bind(counts.2)
            .execute(p).await.unwrap();
    });
}

async fn insert_run(app: &TestApp, id: &str, sent_at: i64) {
    substrate::on_write!(app.ctx.store, p => {
        sqlx::query("INSERT INTO probe_runs (probe_id, instance, sent_at, outcome, round_trip_us) VALUES ($1, 'seeded', $2, 'ok', 1500)")
            .bind(id).bind(sent_at)
            .execute(p).await.unwrap();
    });
}

both!(uptime_history_and_retention);
async fn uptime_history_and_retention(b: Backend) {
    let app = TestApp::start_with(b, |c| c.probe.history_days = 30).await;
    let today = history::day_of(now_micros());
    insert_day(&app, "store", today - 1, (10, 0, 990)).await;
    insert_day(&app, "store", today - 2, (999, 1, 0)).await;
    insert_day(&app, "store", today - 5, (1000, 0, 0)).await;
    insert_day(&app, "store", today - 40, (0, 0, 1000)).await;
    insert_run(&app, "recent", now_micros() - 60_000_000).await;
    insert_run(&app, "old", now_micros() - 72 * 3_600_000_000).await;

    let doc = status_json(&app).await;
    let store = component(&doc, "store");
    let days = store["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["state"], "no_data", "no probe ran today");
    assert_eq!(days[28]["state"], "down");
    assert_eq!(days[28]["uptime_percent"], 1.0);
    assert_eq!(days[27]["state"], "degraded");
    assert_eq!(days[24]["state"], "operational");
    assert_eq!(days[0]["state"], "no_data");
    // Uptime over the shown days only: 2010 of 3000 evaluations were up.
    assert_eq!(store["uptime_percent"], 67.0);
    assert_eq!(
        days[28]["date"],
        chrono::DateTime::from_timestamp((today - 1) * 86_400, 0)
            .unwrap()
            .date_naive()
            .to_string()
    );
    assert_eq!(component(&doc, "gateway")["uptime_percent"], Value::Null);
    assert_eq!(doc["probe"]["last_hour"]["runs"], 1);
    assert_eq!(doc["probe"]["last"]["round_trip_ms"], 1.5);
    let html = text(&app.http, &app.url("/status")).await;
    assert!(html.contains(r#"class="bar d-down""#) && html.contains(r#"class="bar d-degraded""#));
    assert!(html.contains("67.00% uptime"));

    // Retention: daily counts beyond history_days, probe runs beyond two days.
    assert_eq!(history::prune(&app.ctx.store, 30).await.unwrap(), 2);
    let (days, runs): (i64, i64) = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM status_daily), (SELECT COUNT(*) FROM probe_runs)")
            .fetch_one(p).await.unwrap()
    });
    assert_eq!((days, runs), (3, 1));
    app.stop().await;
}

both!(unreachable_analytics_is_down_without_leaking_its_address);
async fn unreachable_analytics_is_down_without_leaking_its_address(b: Backend) {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = TestApp::start_with(b, |c| {
        c.analytics.clickhouse_url = Some(format!("http://127.0.0.1:{closed}"));
    })
    .await;
    let doc = status_json(&app).await;
    let a = component(&doc, "analytics");
    assert_eq!(
        (a["state"].as_str(), a["reason"].as_str()),
        (Some("down"), Some("unreachable"))
    );
    assert_eq!(doc["status"], "down");
    assert_eq!(component(&doc, "store")["state"], "operational");
    // Not a dependency of this instance's readiness.
    assert_eq!(app.get_json("/readyz", None).await.0, 200);
    let html = text(&app.http, &app.url("/status")).await;
    assert!(html.contains(r#"data-component="analytics" data-state="down""#));
    assert!(html.contains("Not responding"));
    assert!(!html.contains(&closed.to_string()) && !html.contains("clickhouse"));
    assert_no_internals(&app, &html);
    assert_no_internals(&app, &text(&app.http, &app.url("/status.json")).await);
    app.stop().await;
}

fn repo_file(path: &str) -> std::path::PathBuf {
    repo().join(path)
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package `prometheus`, installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let tests = repo_file("deploy/prometheus/alerts_test.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&["test", "rules", tests.to_str().unwrap()]);
}

/// Metric names (`substrate_…`) in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("substrate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` of a Grafana dashboard, with its panel's title.
fn dashboard_queries(v: &Value, out: &mut Vec<(String, String)>) {
    if let Some(panels) = v["panels"].as_array() {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            dashboard_queries(p, out);
        }
    }
}

/// A handler that always fails, so the failure and dead-letter series exist.
struct AlwaysFails;

#[async_trait]
impl Handler for AlwaysFails {
    fn group(&self) -> &str {
        "always-fails"
    }
    fn topics(&self) -> Vec<String> {
        vec!["public.user.message.events".into()]
    }
    async fn handle(
        &self,
        _: &Envelope,
        _: &mut Tx,
        _: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        Err(HandlerError::Retry("injected".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_name_exported_metrics() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        fast_probe(c);
        c.consumers.max_retries = 1;
        c.consumers.backoff_initial_ms = 5;
    })
    .await;
    let stop = CancellationToken::new();
    let failing = tokio::spawn(runtime::run_handlers(
        app.ctx.clone(),
        vec![Arc::new(AlwaysFails) as Arc<dyn Handler>],
        stop.clone(),
    ));
    // Some work: accepted and refused events, a dead letter, probe runs.
    let t = app.token("alice");
    assert_eq!(
        app.post_json("/api/v1/events/message", &t, &message("hi"))
            .await
            .0,
        202
    );
    assert_eq!(
        app.post_json(
            "/api/v1/events/message",
            &t,
            &serde_json::json!({"message": 1})
        )
        .await
        .0,
        400
    );
    // A download of a file that does not exist: a saga that runs and ends at once.
    let (s, _) = app
        .post_json(
            "/api/v1/media/download-intent",
            &t,
            &serde_json::json!({"file_path": "files/alice/none/x.png"}),
        )
        .await;
    assert_eq!(s, 202);
    let metrics = eventually(30, || async {
        let m = text(&app.http, &app.url("/metrics")).await;
        (m.contains("substrate_dlq_depth{group=\"always-fails\"} 1")
            && m.contains("substrate_saga_duration_seconds_count{")
            && m.contains("substrate_probe_round_trip_seconds_count")
            && m.contains("substrate_status_component_up{")
            && m.contains("substrate_consumer_lag{"))
        .then_some(m)
    })
    .await;
    stop.cancel();
    let _ = failing.await;
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let mut queries = Vec::new();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/substrate.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    dashboard_queries(&dash, &mut queries);
    let rows: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        [
            "Overview",
            "Gateway",
            "Log and relay",
            "Consumers and DLQ",
            "Sagas",
            "Probe"
        ]
    );
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            queries.push((
                format!("alert {}", r["alert"].as_str().unwrap_or("?")),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no substrate metric in {expr}");
        for n in names {
            assert!(
                exported.contains(n.as_str()),
                "{title}: {n} is not exported by /metrics"
            );
        }
    }
    app.stop().await;
}

/// The production column with a real broker: stopping it turns the log component down
/// within a bounded time (a check times out after `probe.check_timeout_ms`, the document is
/// cached two seconds); starting it again brings it and the probe back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stop_turns_the_log_down_and_back() {
    let store = TestStore::with_broker(
        Backend::Postgres,
        Some(crate::support::kafka::Broker::start_durable()),
    )
    .await;
    let mut cfg = test_config(&store);
    fast_probe(&mut cfg);
    cfg.probe.check_timeout_ms = 1000;
    let mut app = TestApp::start_on(store, cfg, substrate::roles::ALL.to_vec()).await;
    eventually(60, || async {
        let d = status_json(&app).await;
        (d["probe"]["last"]["ok"] == true && component(&d, "log")["state"] == "operational")
            .then_some(())
    })
    .await;
    app.store.kafka.as_mut().unwrap().stop();
    // Bounded: the log check fails within its timeout, plus the document's cache.
    let doc = eventually(15, || async {
        let d = status_json(&app).await;
        (component(&d, "log")["state"] == "down").then_some(d)
    })
    .await;
    let reason = component(&doc, "log")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ["unreachable", "timeout"].contains(&reason.as_str()),
        "{reason}"
    );
    assert_eq!(component(&doc, "store")["state"], "operational");
    assert_no_internals(&app, &text(&app.http, &app.url("/status")).await);
    app.store.kafka.as_mut().unwrap().start_again();
    eventually(90, || async {
        let d = status_json(&app).await;
        (component(&d, "log")["state"] == "operational" && d["probe"]["last"]["ok"] == true)
            .then_some(())
    })
    .await;
    app.stop().await;
}

/// Runs one statement on the PostgreSQL server as the admin user.
async fn pg_admin(sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&crate::support::pg::admin_url())
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// The production store goes away (its database refuses connections and the open ones are
/// cut): `/readyz` answers 503 naming the store, the status page shows it down without error
/// text; when the database is back, both recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_makes_readyz_503_and_recovers() {
    let app = TestApp::start_roles(Backend::Postgres, vec![Role::Gateway], |c| {
        c.probe.check_timeout_ms = 1000;
    })
    .await;
    assert_eq!(app.get_json("/readyz", None).await.0, 200);
    let db = app.store.url.rsplit('/').next().unwrap().to_string();
    pg_admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    let ready = eventually(30, || async {
        let (s, r) = app.get_json("/readyz", None).await;
        (s == 503).then_some(r)
    })
    .await;
    assert_eq!(ready["ready"], false);
    let store = ready["checks"]["store"].as_str().unwrap();
    assert!(
        store == "down: unreachable" || store == "down: timeout",
        "{ready}"
    );
    let doc = eventually(30, || async {
        let d = status_json(&app).await;
        (component(&d, "store")["state"] == "down").then_some(d)
    })
    .await;
    assert_eq!(doc["status"], "down");
    if app.store.kafka.is_none() {
        assert_eq!(
            component(&doc, "log")["state"],
            "down",
            "the embedded log is the store"
        );
    } else {
        assert_eq!(
            component(&doc, "log")["state"],
            "operational",
            "the broker does not depend on the store"
        );
    }
    let html = text(&app.http, &app.url("/status")).await;
    assert!(html.contains(r#"data-component="store" data-state="down""#));
    assert!(!html.to_lowercase().contains("error") && !html.contains("connection"));
    assert_no_internals(&app, &html);

    pg_admin(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    eventually(60, || async {
        let (s, _) = app.get_json("/readyz", None).await;
        (s == 200).then_some(())
    })
    .await;
    eventually(30, || async {
        let d = status_json(&app).await;
        (component(&d, "store")["state"] == "operational").then_some(())
    })
    .await;
    app.stop().await;
}
