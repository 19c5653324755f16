//! Alert rules on both backends: CRUD and every validation refusal (storing nothing), admin
//! and tenant scoping, a rule that fires on data ingested through the native JSON API and
//! resolves (history and events: each transition exactly once), a `kill -9` of a child
//! process evaluating while an alert fires, two evaluators at once, the rules file, the
//! built-in rules, and public alerts on `/status`.

use serde_json::{Value, json};
use substrate::config::Config;
use substrate::roles::Role;

use crate::support::*;

const TOPIC: &str = "internal.alerts.transitions";

/// An HS256 token for `org`, with the admin role when `admin`.
fn token(org: &str, admin: bool) -> String {
    let now = chrono::Utc::now().timestamp();
    let roles: Vec<&str> = if admin { vec!["admin"] } else { vec![] };
    sign_hs256(
        &json!({"sub": format!("{org}-op"), "exp": now + 600, "iat": now, "nbf": now,
                "roles": roles, "scope": format!("org:{org}")}),
        SECRET.as_bytes(),
    )
}

/// Creates the webhook target `name` for the org of `bearer` (its URL answers nothing: these
/// tests look at rules and transitions, not deliveries).
async fn make_target(app: &TestApp, bearer: &str, name: &str) {
    let body = json!({"name": name, "url": "http://127.0.0.1:9/hook"});
    let (s, v) = app.post_json("/api/v1/alerts/targets", bearer, &body).await;
    assert_eq!(s, 201, "{v}");
}

fn fast(c: &mut Config) {
    c.alerts.rules.interval_secs = 1;
    c.alerts.rules.lease_ttl_secs = 3;
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn rule_names(app: &TestApp, bearer: &str) -> Vec<String> {
    let (s, v) = app.get_json("/api/v1/alerts/rules", Some(bearer)).await;
    assert_eq!(s, 200, "{v}");
    v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["alert"].as_str().expect("alert").to_string())
        .collect()
}

/// Sends one sample of `name` (label job=`job`) for the org of `key`, now.
async fn ingest(app: &TestApp, key: &str, name: &str, job: &str, value: f64) {
    let r = app
        .http
        .post(app.url("/api/v1/ingest/metrics"))
        .header("x-api-key", key)
        .json(&json!({"metric_name": name, "value": value, "labels": {"job": job}}))
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status().as_u16(), 202);
}

/// The org's history of `rule`, oldest first, as (from, to).
async fn history(app: &TestApp, bearer: &str, rule: &str) -> Vec<(String, String)> {
    let (s, v) = app
        .get_json(
            &format!("/api/v1/alerts/history?rule={rule}&limit=1000"),
            Some(bearer),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(String, String)> = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or("").to_string(),
                h["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.reverse();
    out
}

/// The event ids of every transition event in the outbox, in order.
async fn transition_events(app: &TestApp) -> Vec<String> {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE topic = $1 ORDER BY id")
            .bind(TOPIC)
            .fetch_all(p)
            .await
            .expect("outbox")
    })
}

/// The transition ids in the org's history of `rule`, oldest first.
async fn history_ids(app: &TestApp, bearer: &str, rule: &str) -> Vec<String> {
    let (_, v) = app
        .get_json(
            &format!("/api/v1/alerts/history?rule={rule}&limit=1000"),
            Some(bearer),
        )
        .await;
    let mut ids: Vec<String> = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect();
    ids.reverse();
    ids
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

fn full_cycle() -> Vec<(String, String)> {
    vec![
        pair("inactive", "pending"),
        pair("pending", "firing"),
        pair("firing", "resolved"),
    ]
}

async fn wait_history(app: &TestApp, bearer: &str, rule: &str, n: usize) {
    eventually(60, || async {
        (history(app, bearer, rule).await.len() >= n).then_some(())
    })
    .await;
}

async fn crud_and_validation(backend: Backend) {
    let app = TestApp::start_with(backend, fast).await;
    let a = token("acme", true);
    let rule = json!({"alert": "HighTemp", "expr": "temp > 50", "for": "1m",
                      "labels": {"team": "ops"}, "annotations": {"summary": "hot {{ $labels.job }}"},
                      "targets": ["ops-hook"]});
    // A rule naming a target the org does not have is refused, naming it; nothing stored.
    let (s, v) = app.post_json("/api/v1/alerts/rules", &a, &rule).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("targets")), "{v}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("ops-hook"),
        "{v}"
    );
    assert!(rule_names(&app, &a).await.is_empty());
    make_target(&app, &a, "ops-hook").await;
    let (s, v) = app.post_json("/api/v1/alerts/rules", &a, &rule).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["source"].as_str(), v["for"].as_str()),
        (Some("api"), Some("1m"))
    );
    let (s, v) = app.post_json("/api/v1/alerts/rules", &a, &rule).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("duplicate_rule")),
        "{v}"
    );
    // Every refusal names the field and stores nothing.
    let bad = [
        (json!({"alert": "B", "expr": "temp >"}), "expr"),
        (json!({"alert": "B", "expr": "absent(temp)"}), "expr"),
        (json!({"alert": "B", "expr": "1 + 1"}), "expr"),
        (
            json!({"alert": "B", "expr": "temp > 1", "for": "soon"}),
            "for",
        ),
        (
            json!({"alert": "B", "expr": "temp > 1", "for": "900d"}),
            "for",
        ),
        (
            json!({"alert": "B", "expr": "temp > 1", "labels": {"bad-name": "x"}}),
            "labels.bad-name",
        ),
        (json!({"alert": "no/slash", "expr": "temp > 1"}), "alert"),
        (
            json!({"alert": "B", "expr": "temp > 1", "targets": ["a b"]}),
            "targets",
        ),
        (json!({"alert": "B"}), "$"),
        (json!({"alert": "B", "expr": "temp > 1", "bogus": 1}), "$"),
    ];
    for (body, field) in bad {
        let (s, v) = app.post_json("/api/v1/alerts/rules", &a, &body).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{body} → {v}");
    }
    assert_eq!(rule_names(&app, &a).await, vec!["HighTemp"]);
    // Replace, read back.
    let mut changed = rule.clone();
    changed["for"] = json!("2m");
    let put = reqwest::Method::PUT;
    let (s, v) = call(
        &app,
        put.clone(),
        "/api/v1/alerts/rules/HighTemp",
        &a,
        Some(&changed),
    )
    .await;
    assert_eq!((s, v["for"].as_str()), (200, Some("2m")), "{v}");
    let (s, v) = call(
        &app,
        put.clone(),
        "/api/v1/alerts/rules/Other",
        &a,
        Some(&changed),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("alert")), "{v}");
    let mut other = changed.clone();
    other["alert"] = json!("Nope");
    let (s, _) = call(
        &app,
        put.clone(),
        "/api/v1/alerts/rules/Nope",
        &a,
        Some(&other),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = app
        .get_json("/api/v1/alerts/rules/HighTemp", Some(&a))
        .await;
    assert_eq!((s, v["for"].as_str()), (200, Some("2m")));
    let (s, _) = app.get_json("/api/v1/alerts/rules/Nope", Some(&a)).await;
    assert_eq!(s, 404);
    // Not an admin; an admin without an org.
    for t in [token("acme", false), app.admin_token()] {
        let (s, _) = app.get_json("/api/v1/alerts/rules", Some(&t)).await;
        assert_eq!(s, 403);
        let (s, _) = app.post_json("/api/v1/alerts/rules", &t, &rule).await;
        assert_eq!(s, 403);
    }
    // Another tenant sees and changes nothing of acme's.
    let g = token("globex", true);
    assert!(rule_names(&app, &g).await.is_empty());
    let (s, _) = app
        .get_json("/api/v1/alerts/rules/HighTemp", Some(&g))
        .await;
    assert_eq!(s, 404);
    // (Without the targets: globex has no `ops-hook`, which would be refused first.)
    let mut theirs = changed.clone();
    theirs["targets"] = json!([]);
    let (s, _) = call(
        &app,
        put,
        "/api/v1/alerts/rules/HighTemp",
        &g,
        Some(&theirs),
    )
    .await;
    assert_eq!(s, 404);
    let del = reqwest::Method::DELETE;
    let (s, _) = call(&app, del.clone(), "/api/v1/alerts/rules/HighTemp", &g, None).await;
    assert_eq!(s, 404);
    let (s, v) = app
        .get_json("/api/v1/alerts/history?from=0&to=2000000000", Some(&g))
        .await;
    assert_eq!((s, v["history"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, v) = app
        .get_json("/api/v1/alerts/history?from=yesterday", Some(&a))
        .await;
    assert_eq!((s, v["parameter"].as_str()), (400, Some("from")), "{v}");
    // The org may hold the same name as another org.
    let (s, v) = app.post_json("/api/v1/alerts/rules", &g, &theirs).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(&app, del.clone(), "/api/v1/alerts/rules/HighTemp", &a, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&app, del, "/api/v1/alerts/rules/HighTemp", &a, None).await;
    assert_eq!(s, 404);
    assert!(rule_names(&app, &a).await.is_empty());
    assert_eq!(rule_names(&app, &g).await, vec!["HighTemp"]);
    app.stop().await;
}
both!(crud_and_validation);

async fn fires_and_resolves_once(backend: Backend) {
    let app = TestApp::start_with(backend, fast).await;
    let a = token("acme", true);
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let rule = json!({"alert": "HighTemp", "expr": "max by (job) (temp) > 50", "for": "1s",
                      "severity": "critical", "annotations": {"summary": "{{ $labels.job }} at {{ $value }}"},
                      "targets": ["ops"], "public": true});
    make_target(&app, &a, "ops").await;
    assert_eq!(
        app.post_json("/api/v1/alerts/rules", &a, &rule).await.0,
        201
    );
    let private = json!({"alert": "SecretTemp", "expr": "temp > 50"});
    assert_eq!(
        app.post_json("/api/v1/alerts/rules", &a, &private).await.0,
        201
    );
    ingest(&app, &key, "temp", "oven", 80.0).await;
    wait_history(&app, &a, "HighTemp", 2).await;
    // Firing: active for acme only, and on /status — the public rule only.
    let (_, v) = app.get_json("/api/v1/alerts/active", Some(&a)).await;
    let firing: Vec<&Value> = v["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|x| x["rule"] == "HighTemp")
        .collect();
    assert_eq!(firing.len(), 1, "{v}");
    assert_eq!(firing[0]["state"], "firing");
    assert_eq!(firing[0]["annotations"]["summary"], "oven at 80");
    let (_, v) = app
        .get_json("/api/v1/alerts/active", Some(&token("globex", true)))
        .await;
    assert_eq!(v["alerts"].as_array().map(Vec::len), Some(0));
    let doc = eventually(30, || async {
        let (_, d) = app.get_json("/status.json", None).await;
        let n = d["alerts"].as_array().map(Vec::len).unwrap_or(0);
        (n > 0).then_some(d)
    })
    .await;
    let shown = &doc["alerts"];
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(
        (
            shown[0]["rule"].as_str(),
            shown[0]["severity"].as_str(),
            shown[0]["summary"].as_str()
        ),
        (Some("HighTemp"), Some("critical"), Some("oven at 80"))
    );
    let page = app
        .http
        .get(app.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("HighTemp") && !page.contains("SecretTemp"));
    // Deleting a rule resolves its firing alert.
    let del = reqwest::Method::DELETE;
    let (s, _) = call(&app, del, "/api/v1/alerts/rules/SecretTemp", &a, None).await;
    assert_eq!(s, 204);
    wait_history(&app, &a, "SecretTemp", 2).await;
    assert_eq!(
        history(&app, &a, "SecretTemp").await,
        vec![pair("inactive", "firing"), pair("firing", "resolved")]
    );
    // Cool down: resolved, once.
    ingest(&app, &key, "temp", "oven", 10.0).await;
    wait_history(&app, &a, "HighTemp", 3).await;
    // More rounds change nothing.
    alert_rounds_pass(&app).await;
    assert_eq!(history(&app, &a, "HighTemp").await, full_cycle());
    let ids = history_ids(&app, &a, "HighTemp").await;
    let events = transition_events(&app).await;
    for id in &ids {
        assert_eq!(events.iter().filter(|e| *e == id).count(), 1, "{id}");
    }
    let all_ids = [ids, history_ids(&app, &a, "SecretTemp").await].concat();
    assert_eq!(events.len(), all_ids.len(), "one event per transition");
    // Pagination: newest first with a cursor.
    let (_, p1) = app
        .get_json("/api/v1/alerts/history?rule=HighTemp&limit=2", Some(&a))
        .await;
    let cursor = p1["next_cursor"].as_str().expect("cursor").to_string();
    assert_eq!(p1["history"][0]["to"], "resolved");
    let (_, p2) = app
        .get_json(
            &format!("/api/v1/alerts/history?rule=HighTemp&limit=2&cursor={cursor}"),
            Some(&a),
        )
        .await;
    assert_eq!(p2["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (
            p2["history"][0]["to"].as_str(),
            p2["history"][0]["sequence"].as_i64()
        ),
        (Some("pending"), Some(1))
    );
    assert!(p2["next_cursor"].is_null());
    assert!(
        app.metrics()
            .await
            .contains("substrate_alerts_evaluation_duration_seconds")
    );
    // It heats up again: a new cycle whose sequence goes on from 3.
    ingest(&app, &key, "temp", "oven", 90.0).await;
    wait_history(&app, &a, "HighTemp", 4).await;
    let (_, v) = app
        .get_json("/api/v1/alerts/history?rule=HighTemp&limit=1", Some(&a))
        .await;
    assert_eq!(
        (
            v["history"][0]["to"].as_str(),
            v["history"][0]["sequence"].as_i64()
        ),
        (Some("pending"), Some(4))
    );
    app.stop().await;
}

/// A rule whose evaluation fails (here: it selects more series than the engine allows) is
/// counted, keeps failing alone, and the other rules still fire.
async fn failing_rule_does_not_stop_others(backend: Backend) {
    let app = TestApp::start_with(backend, |c| {
        fast(c);
        c.telemetry.query.max_series = 2;
    })
    .await;
    let a = token("acme", true);
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    for job in ["a", "b", "c"] {
        ingest(&app, &key, "load", job, 5.0).await;
    }
    ingest(&app, &key, "temp", "oven", 99.0).await;
    // The rules are added once all three series are stored, so Broad never sees fewer.
    eventually(30, || async {
        let r = app
            .http
            .get(app.url("/prometheus/api/v1/series?match[]=load"))
            .header("x-api-key", &key)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["data"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;
    let broad = json!({"alert": "Broad", "expr": "load > 1"});
    let (s, v) = app.post_json("/api/v1/alerts/rules", &a, &broad).await;
    assert_eq!(s, 201, "{v}");
    let hot = json!({"alert": "Hot", "expr": "temp > 50"});
    assert_eq!(app.post_json("/api/v1/alerts/rules", &a, &hot).await.0, 201);
    wait_history(&app, &a, "Hot", 1).await;
    eventually(30, || async {
        let m = app.metrics().await;
        m.lines()
            .any(|l| {
                l.starts_with("substrate_alerts_rule_failures_total")
                    && l.contains("rule=\"Broad\"")
            })
            .then_some(())
    })
    .await;
    alert_rounds_pass(&app).await;
    assert!(history(&app, &a, "Broad").await.is_empty());
    assert_eq!(
        history(&app, &a, "Hot").await,
        vec![pair("inactive", "firing")]
    );
    app.stop().await;
}
both!(failing_rule_does_not_stop_others);
both!(fires_and_resolves_once);

fn without_alerts() -> Vec<Role> {
    substrate::roles::ALL
        .iter()
        .copied()
        .filter(|r| *r != Role::Alerts)
        .collect()
}

fn alerts_process(app: &TestApp) -> Proc {
    let mut c = substrate_cmd(app);
    c.args(["serve", "--roles", "alerts"])
        .env("SUBSTRATE_ALERTS__RULES__INTERVAL_SECS", "1")
        .env("SUBSTRATE_ALERTS__RULES__LEASE_TTL_SECS", "2");
    Proc(c.spawn().expect("spawn"))
}

async fn kill_while_firing(backend: Backend) {
    let app = TestApp::start_roles(backend, without_alerts(), fast).await;
    let a = token("acme", true);
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let rule = json!({"alert": "HighTemp", "expr": "temp > 50", "for": "1s"});
    assert_eq!(
        app.post_json("/api/v1/alerts/rules", &a, &rule).await.0,
        201
    );
    let mut child = alerts_process(&app);
    ingest(&app, &key, "temp", "oven", 80.0).await;
    wait_history(&app, &a, "HighTemp", 2).await;
    child.kill();
    // A fresh process takes the shard over once the dead one's lease lapses; the alert is
    // still firing there, so nothing is re-sent.
    let _child = alerts_process(&app);
    ingest(&app, &key, "temp", "oven", 10.0).await;
    wait_history(&app, &a, "HighTemp", 3).await;
    let before = transition_events(&app).await.len();
    ingest(&app, &key, "temp", "oven", 12.0).await;
    // The new process keeps evaluating without new events.
    alert_rounds_pass(&app).await;
    assert_eq!(history(&app, &a, "HighTemp").await, full_cycle());
    assert_eq!(transition_events(&app).await.len(), before);
    assert_eq!(before, 3);
    app.stop().await;
}
both!(kill_while_firing);

async fn two_evaluators(backend: Backend) {
    let app = TestApp::start_with(backend, fast).await;
    let second = Instance::start(&app, vec![Role::Alerts], fast).await;
    let a = token("acme", true);
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    for (name, job) in [("A", "x"), ("B", "y"), ("C", "z")] {
        let rule = json!({"alert": name, "expr": format!("temp{{job=\"{job}\"}} > 50")});
        assert_eq!(
            app.post_json("/api/v1/alerts/rules", &a, &rule).await.0,
            201
        );
        ingest(&app, &key, "temp", job, 99.0).await;
    }
    for name in ["A", "B", "C"] {
        wait_history(&app, &a, name, 1).await;
    }
    for job in ["x", "y", "z"] {
        ingest(&app, &key, "temp", job, 1.0).await;
    }
    for name in ["A", "B", "C"] {
        wait_history(&app, &a, name, 2).await;
    }
    second.stop().await;
    for name in ["A", "B", "C"] {
        assert_eq!(
            history(&app, &a, name).await,
            vec![pair("inactive", "firing"), pair("firing", "resolved")]
        );
    }
    assert_eq!(transition_events(&app).await.len(), 6);
    app.stop().await;
}
both!(two_evaluators);

const FILE: &str = r#"
groups:
  - name: ops
    interval: 30s
    rules:
      - alert: FileRule
        expr: temp > 100
        for: 5m
        labels: {severity: critical}
        annotations: {summary: too hot}
        targets: [pager]
        public: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_file_loads_and_is_read_only() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("rules.yml");
    write_file(&path, FILE);
    let p = path.clone();
    let app = TestApp::start_with(Backend::Sqlite, move |c| {
        fast(c);
        c.alerts.rules.file = Some(p);
        c.alerts.rules.file_org = "ops".into();
    })
    .await;
    let t = token("ops", true);
    let v = eventually(30, || async {
        let (_, v) = app
            .get_json("/api/v1/alerts/rules/FileRule", Some(&t))
            .await;
        (v["source"] == "file").then_some(v)
    })
    .await;
    assert_eq!(v["targets"], json!(["pager"]));
    let body = json!({"alert": "FileRule", "expr": "temp > 1"});
    let (s, v) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/alerts/rules/FileRule",
        &t,
        Some(&body),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("rule_read_only")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap_or("").contains("rules file"));
    let (s, _) = call(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/alerts/rules/FileRule",
        &t,
        None,
    )
    .await;
    assert_eq!(s, 409);
    // Bad files are refused naming the rule and the problem.
    let cfg = app.ctx.config.alerts.rules.clone();
    let cases = [
        (
            "groups: [{name: g, rules: [{alert: Bad, expr: 'rate(x[5m]'}]}]",
            "Bad",
            "expr",
        ),
        (
            "groups: [{name: g, rules: [{alert: Bad, expr: 'absent(x)'}]}]",
            "Bad",
            "unsupported",
        ),
        (
            "groups: [{name: g, rules: [{alert: Bad, expr: 'x > 1', for: later}]}]",
            "Bad",
            "for",
        ),
        (
            "groups: [{name: g, rules: [{record: job:x:sum, expr: 'sum(x)'}]}]",
            "job:x:sum",
            "recording",
        ),
        (
            "groups: [{name: g, rules: [{alert: D, expr: 'x'}, {alert: D, expr: 'y'}]}]",
            "D",
            "twice",
        ),
        ("not: [a rule file", "", "rule file"),
    ];
    for (text, rule, problem) in cases {
        write_file(&path, text);
        let e = substrate::alerts::rules::file::load(&app.ctx, &path, &cfg)
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.contains(rule) && e.contains(problem), "{text}: {e}");
    }
    app.stop().await;
    // A bad file stops the role's start-up.
    let store = TestStore::new(Backend::Sqlite).await;
    let mut cfg = test_config(&store);
    cfg.alerts.rules.file = Some(path);
    let ctx = substrate::app::AppContext::build(cfg).await.expect("build");
    let e = substrate::alerts::rules::load_configured(&ctx)
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("rule file"), "{e}");
    store.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_rules_load_validate_and_self_scrape() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        fast(c);
        c.alerts.rules.builtin = true;
    })
    .await;
    let cfg = app.ctx.config.alerts.rules.clone();
    let b = substrate::alerts::rules::builtin::load(&app.ctx, &cfg)
        .await
        .expect("builtin");
    let loaded: Vec<&str> = b.rules.iter().map(|r| r.alert.as_str()).collect();
    // All nine rules of deploy/prometheus/alerts.yml are inside the PromQL subset.
    assert_eq!(
        loaded,
        vec![
            "SubstrateProbeFailing",
            "SubstrateProbeStale",
            "SubstrateOutboxOldestPendingHigh",
            "SubstrateRelayParkedRows",
            "SubstrateConsumerLagGrowing",
            "SubstrateDLQGrowing",
            "SubstrateHigh5xxRate",
            "SubstrateHighP99Latency",
            "SubstrateComponentDown",
        ]
    );
    assert!(b.skipped.is_empty(), "{:?}", b.skipped);
    // Loaded into _system, read-only, and fed by the self-scrape.
    let t = token("_system", true);
    let names = eventually(30, || async {
        let (_, v) = app.get_json("/api/v1/alerts/rules", Some(&t)).await;
        let n = v["rules"].as_array().map(Vec::len).unwrap_or(0);
        (n == 9).then_some(v)
    })
    .await;
    assert!(
        names["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == "builtin")
    );
    let reader = app.api_key("r", &["telemetry:read", "org:_system"]).await;
    eventually(60, || async {
        let r = app
            .http
            .get(app.url("/prometheus/api/v1/query?query=substrate_http_requests_total"))
            .header("x-api-key", &reader)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        (v["data"]["result"].as_array().map(Vec::len).unwrap_or(0) > 0).then_some(())
    })
    .await;
    app.stop().await;
}
