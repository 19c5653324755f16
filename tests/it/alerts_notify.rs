//! Alert notifications end to end, on both backends: transitions are appended to
//! `internal.alerts.transitions` through the outbox (as the evaluator commits them), the alerts
//! role's `alert-notifications` group turns them into deliveries, and its sender POSTs them to
//! a real HTTP receiver in the test, which checks every Standard Webhooks signature with the
//! target's secret on its own (HMAC-SHA256 over `{id}.{timestamp}.{body}`) and records what it
//! got. Failing, throttling and hanging receivers, a `kill -9` of a child-process alerts role
//! mid-retry, the target API's refusals and tenant isolation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use substrate::alerts::event::{TOPIC, Transition};
use substrate::config::Config;
use substrate::events::EventMeta;
use substrate::roles::Role;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// The receiver

/// How a receiver path answers.
#[derive(Clone, Debug)]
enum Behaviour {
    Ok,
    /// This status for the first `n` requests, then 200.
    FailFirst(u16, usize),
    /// Always this status.
    Always(u16),
    /// 429 with `Retry-After: secs` for the first request, then 200.
    Throttle(u64),
    /// Never answers.
    Hang,
}

#[derive(Clone, Debug)]
struct Got {
    id: String,
    status: u16,
    body: Value,
    at: Instant,
}

#[derive(Default)]
struct Recv {
    behaviour: HashMap<String, Behaviour>,
    secrets: HashMap<String, Vec<u8>>,
    got: HashMap<String, Vec<Got>>,
    bad_signatures: usize,
    hanging: usize,
}

#[derive(Clone)]
struct Receiver {
    base: String,
    state: Arc<Mutex<Recv>>,
}

fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (id, ts, sig) = (
        h("webhook-id")?,
        h("webhook-timestamp")?,
        h("webhook-signature")?,
    );
    let now = chrono::Utc::now().timestamp();
    if (now - ts.parse::<i64>().ok()?).abs() > 300 {
        return None;
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let ok = sig
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
    (ok && h("content-type").as_deref() == Some("application/json")).then_some(id)
}

async fn receive(
    State(st): State<Arc<Mutex<Recv>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (behaviour, id, seen) = {
        let mut s = st.lock().unwrap();
        let key = s.secrets.get(&name).cloned().unwrap_or_default();
        let Some(id) = verify(&key, &headers, &body) else {
            s.bad_signatures += 1;
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let seen = s.got.get(&name).map_or(0, Vec::len);
        let b = s.behaviour.get(&name).cloned().unwrap_or(Behaviour::Ok);
        if matches!(b, Behaviour::Hang) {
            s.hanging += 1;
        }
        (b, id, seen)
    };
    let (status, retry_after) = match behaviour {
        Behaviour::Ok => (200, None),
        Behaviour::FailFirst(code, n) if seen < n => (code, None),
        Behaviour::FailFirst(..) => (200, None),
        Behaviour::Always(code) => (code, None),
        Behaviour::Throttle(secs) if seen == 0 => (429, Some(secs)),
        Behaviour::Throttle(_) => (200, None),
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            (200, None)
        }
    };
    let got = Got {
        id,
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    st.lock().unwrap().got.entry(name).or_default().push(got);
    let mut r = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    r
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(Recv::default()));
        let app = axum::Router::new()
            .route("/hook/{name}", axum::routing::post(receive))
            .with_state(state.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        Receiver { base, state }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/hook/{name}", self.base)
    }

    fn set(&self, name: &str, b: Behaviour) {
        self.state.lock().unwrap().behaviour.insert(name.into(), b);
    }

    fn got(&self, name: &str) -> Vec<Got> {
        self.state
            .lock()
            .unwrap()
            .got
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `name` got at least `n` requests (answered), and returns them.
    async fn wait(&self, name: &str, n: usize) -> Vec<Got> {
        eventually(60, || async {
            let g = self.got(name);
            (g.len() >= n).then_some(g)
        })
        .await
    }

    fn delivered(&self, name: &str) -> Vec<Got> {
        self.got(name)
            .into_iter()
            .filter(|g| g.status < 300)
            .collect()
    }

    fn bad_signatures(&self) -> usize {
        self.state.lock().unwrap().bad_signatures
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn tweak(c: &mut Config) {
    let n = &mut c.alerts.notify;
    n.backoff_base_ms = 100;
    n.backoff_max_ms = 3_000;
    n.max_attempts = 3;
    n.group_wait_ms = 400;
    n.poll_interval_ms = 50;
    n.claim_margin_ms = 1_000;
}

async fn start(backend: Backend) -> TestApp {
    TestApp::start_with(backend, tweak).await
}

/// A bearer token with the `roles` and `scope` claims given.
fn jwt(roles: &[&str], scope: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": "operator", "exp": now + 600, "iat": now, "nbf": now,
        "roles": roles, "scope": scope, "email": "ops@example.com",
    });
    sign_hs256(&claims, SECRET.as_bytes())
}

/// An admin of `org` (the org from the token's `org:<id>` scope).
async fn admin_key(_app: &TestApp, org: &str) -> String {
    jwt(&["admin"], &format!("org:{org}"))
}

/// Creates target `name` of the org behind `key` pointing at the receiver, which learns its
/// secret.
async fn target(app: &TestApp, key: &str, rx: &Receiver, name: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "url": rx.url(name) });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, v) = app.post_json("/api/v1/alerts/targets", key, &body).await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().expect("secret on create").to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_"))
        .unwrap();
    rx.state.lock().unwrap().secrets.insert(name.into(), raw);
    secret
}

fn transition(org: &str, rule: &str, fp: &str, seq: i64, to: &str, targets: &[&str]) -> Transition {
    let from = match to {
        "firing" => "pending",
        "resolved" => "firing",
        _ => "inactive",
    };
    Transition {
        version: 1,
        id: uuid::Uuid::now_v7().to_string(),
        org: org.into(),
        rule: rule.into(),
        fingerprint: fp.into(),
        sequence: seq,
        from: from.into(),
        to: to.into(),
        at: chrono::Utc::now().timestamp_millis(),
        active_since: Some(chrono::Utc::now().timestamp_millis() - 60_000),
        value: (to == "firing").then_some(42.0),
        severity: "critical".into(),
        labels: BTreeMap::from([("alertname".into(), rule.into()), ("fp".into(), fp.into())]),
        annotations: BTreeMap::from([("summary".into(), format!("{rule} {fp}"))]),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        public: false,
    }
}

/// Appends transitions through the outbox in one transaction, as the evaluator commits them.
async fn emit(app: &TestApp, ts: &[&Transition]) {
    let meta = EventMeta {
        source: "/tests/alerts".into(),
        ..Default::default()
    };
    let evs: Vec<_> = ts
        .iter()
        .map(|t| {
            let payload = serde_json::to_value(t).unwrap();
            substrate::events::build(&app.ctx.schemas, TOPIC, &t.key(), &payload, &meta)
                .expect("a transition fits its schema")
        })
        .collect();
    let mut tx = app.ctx.store.begin().await.unwrap();
    app.ctx
        .outbox
        .append(&mut tx, &evs.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn deliveries(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (status, v) = app
        .get_json(&format!("/api/v1/alerts/deliveries{query}"), Some(key))
        .await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().cloned().unwrap_or_default()
}

fn fingerprints(g: &Got) -> Vec<(String, i64)> {
    g.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["fingerprint"].as_str().unwrap().to_string(),
                a["sequence"].as_i64().unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Firing, then resolved: exactly one signed notification each, in order, with the transition
/// id as webhook-id; a replayed event and a repeated transition (same alert and sequence) are
/// not sent again.
async fn firing_then_resolved_once_each(backend: Backend) {
    let app = start(backend).await;
    let rx = Receiver::start().await;
    let key = admin_key(&app, "acme").await;
    target(&app, &key, &rx, "ops", json!({})).await;

    let firing = transition("acme", "HighLatency", "a1", 1, "firing", &["ops"]);
    emit(&app, &[&firing]).await;
    let got = rx.wait("ops", 1).await;
    assert_eq!(got[0].id, firing.id, "the webhook-id is the transition id");
    let b = &got[0].body;
    assert_eq!(b["type"], "alert.firing");
    assert_eq!(b["version"], 1);
    assert_eq!(b["org"], "acme");
    assert_eq!(b["rule"], "HighLatency");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["groupKey"], "acme/HighLatency");
    let a = &b["alerts"][0];
    assert_eq!(a["fingerprint"], "a1");
    assert_eq!(a["status"], "firing");
    assert_eq!(a["from"], "pending");
    assert_eq!(a["sequence"], 1);
    assert_eq!(a["labels"]["alertname"], "HighLatency");
    assert_eq!(a["annotations"]["summary"], "HighLatency a1");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["value"], 42.0);
    assert!(a["startsAt"].is_string() && a["endsAt"].is_null());

    let resolved = transition("acme", "HighLatency", "a1", 2, "resolved", &["ops"]);
    emit(&app, &[&resolved]).await;
    let got = rx.wait("ops", 2).await;
    assert_eq!(got[1].id, resolved.id);
    assert_eq!(got[1].body["type"], "alert.resolved");
    assert!(got[1].body["alerts"][0]["endsAt"].is_string());

    // The same event again, and the same transition under a new id: neither is sent. A
    // sentinel of the same rule (same key, so consumed after them) shows they were handled.
    emit(&app, &[&firing]).await;
    let mut again = resolved.clone();
    again.id = uuid::Uuid::now_v7().to_string();
    let pending = transition("acme", "HighLatency", "p1", 1, "pending", &["ops"]);
    let sentinel = transition("acme", "HighLatency", "z9", 1, "firing", &["ops"]);
    emit(&app, &[&again, &pending, &sentinel]).await;
    let got = rx.wait("ops", 3).await;
    assert_eq!(got[2].id, sentinel.id);
    // Recorded as delivered once the receiver's 2xx came back to the sender.
    let all = eventually(30, || async {
        let d = deliveries(&app, &key, "").await;
        d.iter().all(|d| d["state"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(
        all.len(),
        3,
        "one delivery per notified transition: {all:?}"
    );
    assert_eq!(rx.got("ops").len(), 3);
    assert_eq!(rx.bad_signatures(), 0);
    app.stop().await;
}
both!(firing_then_resolved_once_each);

/// 500 twice then 200: delivered on the third attempt under one webhook-id. Always 500: dead
/// after `max_attempts`, visible through the API with its last error; a redrive delivers it
/// with the same id and body. 429 with `Retry-After` delays the retry by that long.
async fn retries_dead_letters_and_redrive(backend: Backend) {
    let app = start(backend).await;
    let rx = Receiver::start().await;
    let key = admin_key(&app, "acme").await;
    target(&app, &key, &rx, "flaky", json!({})).await;
    target(&app, &key, &rx, "down", json!({})).await;
    target(&app, &key, &rx, "busy", json!({})).await;
    rx.set("flaky", Behaviour::FailFirst(500, 2));
    rx.set("down", Behaviour::Always(500));
    rx.set("busy", Behaviour::Throttle(2));

    let t1 = transition("acme", "R1", "f1", 1, "firing", &["flaky"]);
    let t2 = transition("acme", "R2", "d1", 1, "firing", &["down"]);
    let t3 = transition("acme", "R3", "b1", 1, "firing", &["busy"]);
    emit(&app, &[&t1, &t2, &t3]).await;

    let flaky = rx.wait("flaky", 3).await;
    assert_eq!(
        flaky.iter().map(|g| g.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert!(
        flaky.iter().all(|g| g.id == t1.id),
        "same webhook-id on every attempt"
    );
    assert!(
        flaky.iter().all(|g| g.body == flaky[0].body),
        "same body on every attempt"
    );

    let busy = rx.wait("busy", 2).await;
    assert_eq!(busy[0].status, 429);
    assert!(
        busy[1].at.duration_since(busy[0].at) >= Duration::from_millis(1_900),
        "Retry-After: 2 honoured, retried after {:?}",
        busy[1].at.duration_since(busy[0].at)
    );

    // The dead letter, through the API.
    let dead = eventually(60, || async {
        let d = deliveries(&app, &key, "?state=dead&target=down").await;
        (d.len() == 1).then_some(d)
    })
    .await;
    assert_eq!(rx.got("down").len(), 3, "max_attempts = 3");
    assert_eq!(dead[0]["transition_id"], t2.id.as_str());
    assert_eq!(dead[0]["reason"], "HTTP 500");
    assert_eq!(dead[0]["attempts"], 3);
    // flaky and busy: delivered (recorded once their 200 came back).
    eventually(30, || async {
        let d = deliveries(&app, &key, "?state=delivered").await;
        (d.len() == 2).then_some(())
    })
    .await;

    // Redrive once the receiver is back.
    rx.set("down", Behaviour::Ok);
    let id = dead[0]["id"].as_i64().unwrap();
    let (s, v) = app
        .post_json(
            &format!("/api/v1/alerts/deliveries/{id}/redrive"),
            &key,
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["redriven"], json!([id]));
    let down = rx.wait("down", 4).await;
    assert_eq!(down[3].status, 200);
    assert!(down.iter().all(|g| g.id == t2.id && g.body == down[0].body));
    eventually(30, || async {
        let d = deliveries(&app, &key, "?state=delivered&target=down").await;
        (d.len() == 1).then_some(())
    })
    .await;
    // Not dead any more: a second redrive is refused.
    let (s, v) = app
        .post_json(
            &format!("/api/v1/alerts/deliveries/{id}/redrive"),
            &key,
            &json!({}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("not_dead")));
    assert!(
        app.metrics()
            .await
            .contains("substrate_alert_notifications_total")
    );
    app.stop().await;
}
both!(retries_dead_letters_and_redrive);

/// A rate-limited target gets its burst at once and the rest spaced by the rate, none dropped;
/// alerts of one rule due together go in one notification, but never two transitions of the
/// same alert, and each alert's transitions arrive in order.
async fn rate_limit_and_grouping(backend: Backend) {
    let app = start(backend).await;
    let rx = Receiver::start().await;
    let key = admin_key(&app, "acme").await;
    target(
        &app,
        &key,
        &rx,
        "slowrate",
        json!({ "rate_per_minute": 60.0, "burst": 2 }),
    )
    .await;
    target(&app, &key, &rx, "grouped", json!({})).await;

    // Four rules: four notifications (nothing to group), at most 2 at once, then 1 per second.
    let ts: Vec<Transition> = (0..4)
        .map(|i| {
            transition(
                "acme",
                &format!("Rate{i}"),
                &format!("r{i}"),
                1,
                "firing",
                &["slowrate"],
            )
        })
        .collect();
    emit(&app, &ts.iter().collect::<Vec<_>>()).await;

    // One rule, three alerts and a second transition of one of them, all at once.
    let a1 = transition("acme", "Disk", "a", 1, "firing", &["grouped"]);
    let b1 = transition("acme", "Disk", "b", 1, "firing", &["grouped"]);
    let c1 = transition("acme", "Disk", "c", 1, "firing", &["grouped"]);
    let a2 = transition("acme", "Disk", "a", 2, "resolved", &["grouped"]);
    emit(&app, &[&a1, &b1, &c1, &a2]).await;

    let got = rx.wait("grouped", 2).await;
    let first = fingerprints(&got[0]);
    assert_eq!(
        first,
        vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)],
        "three alerts of one rule in one notification"
    );
    assert_eq!(got[0].body["type"], "alert.firing");
    assert_eq!(fingerprints(&got[1]), vec![("a".into(), 2)]);
    assert_eq!(got[1].body["type"], "alert.resolved");
    assert_eq!(
        got[0].id, a1.id,
        "a group's webhook-id is its first transition's"
    );

    let limited = rx.wait("slowrate", 4).await;
    assert_eq!(limited.len(), 4, "none dropped");
    let mut ids: Vec<&str> = limited.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = ts.iter().map(|t| t.id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want);
    // The third and fourth waited for tokens (1 per second after the burst of 2).
    let gap = |i: usize, j: usize| limited[j].at.duration_since(limited[i].at);
    assert!(gap(0, 2) >= Duration::from_millis(800), "{:?}", gap(0, 2));
    assert!(gap(1, 3) >= Duration::from_millis(1_600), "{:?}", gap(1, 3));
    app.stop().await;
}
both!(rate_limit_and_grouping);

/// A target that never answers holds every send slot it has, and another target's
/// notifications still go out.
async fn hanging_target_does_not_delay_another(backend: Backend) {
    let app = start(backend).await;
    let rx = Receiver::start().await;
    let key = admin_key(&app, "acme").await;
    target(&app, &key, &rx, "hang", json!({ "timeout_ms": 60_000 })).await;
    target(&app, &key, &rx, "fast", json!({})).await;
    rx.set("hang", Behaviour::Hang);
    let ts: Vec<Transition> = (0..6)
        .map(|i| {
            transition(
                "acme",
                &format!("H{i}"),
                &format!("h{i}"),
                1,
                "firing",
                &["hang", "fast"],
            )
        })
        .collect();
    emit(&app, &ts.iter().collect::<Vec<_>>()).await;
    let fast = rx.wait("fast", 6).await;
    assert_eq!(fast.len(), 6);
    let (hanging, answered) = {
        let st = rx.state.lock().unwrap();
        (st.hanging, st.got.contains_key("hang"))
    };
    assert!(hanging >= 1, "the hanging target was tried");
    assert!(!answered, "and has not answered");
    app.stop().await;
}
both!(hanging_target_does_not_delay_another);

/// `kill -9` of a child-process alerts role while a notification is being retried: after a
/// restart it is delivered exactly once to the (now healthy) receiver, under the same id; the
/// resolved transition that follows is delivered once too.
async fn kill9_while_retrying(backend: Backend) {
    let app = TestApp::start_roles(
        backend,
        vec![Role::Gateway, Role::Relay, Role::Consumers],
        tweak,
    )
    .await;
    let rx = Receiver::start().await;
    let key = admin_key(&app, "acme").await;
    target(&app, &key, &rx, "ops", json!({})).await;
    rx.set("ops", Behaviour::Always(500));
    let spawn = || {
        Proc(
            substrate_cmd(&app)
                .args(["serve", "--roles", "alerts"])
                .env("SUBSTRATE_ALERTS__NOTIFY__BACKOFF_BASE_MS", "200")
                .env("SUBSTRATE_ALERTS__NOTIFY__BACKOFF_MAX_MS", "400")
                .env("SUBSTRATE_ALERTS__NOTIFY__MAX_ATTEMPTS", "1000")
                .env("SUBSTRATE_ALERTS__NOTIFY__POLL_INTERVAL_MS", "50")
                .env("SUBSTRATE_ALERTS__NOTIFY__GROUP_WAIT_MS", "100")
                .env("SUBSTRATE_ALERTS__NOTIFY__CLAIM_MARGIN_MS", "1000")
                .env("SUBSTRATE_CONSUMERS__LEASE_TTL_MS", "2000")
                .spawn()
                .expect("spawn the alerts role"),
        )
    };
    let mut child = spawn();
    let firing = transition("acme", "Crash", "k1", 1, "firing", &["ops"]);
    emit(&app, &[&firing]).await;
    rx.wait("ops", 2).await;
    child.kill();
    let before = rx.got("ops").len();
    assert!(rx.got("ops").iter().all(|g| g.status == 500));
    // Nothing lost: the delivery is still pending.
    let d = deliveries(&app, &key, "?state=pending").await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["transition_id"], firing.id.as_str());

    rx.set("ops", Behaviour::Ok);
    let mut child = spawn();
    let got = rx.wait("ops", before + 1).await;
    assert!(
        got.iter().all(|g| g.id == firing.id),
        "one id across processes"
    );
    let resolved = transition("acme", "Crash", "k1", 2, "resolved", &["ops"]);
    emit(&app, &[&resolved]).await;
    eventually(60, || async {
        rx.delivered("ops")
            .iter()
            .any(|g| g.id == resolved.id)
            .then_some(())
    })
    .await;
    eventually(30, || async {
        let d = deliveries(&app, &key, "?state=delivered").await;
        (d.len() == 2).then_some(())
    })
    .await;
    let ok = rx.delivered("ops");
    assert_eq!(
        ok.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        vec![firing.id.as_str(), resolved.id.as_str()],
        "each delivered exactly once, in order"
    );
    assert_eq!(rx.bad_signatures(), 0);
    child.kill();
    app.stop().await;
}
both!(kill9_while_retrying);

/// The target API: refusals naming the field, the secret answered once and never on reads,
/// no access across orgs or without admin, and a rule naming an unknown target gets a dead
/// delivery with reason `unknown_target`.
async fn target_api_and_isolation(backend: Backend) {
    let app = start(backend).await;
    let acme = admin_key(&app, "acme").await;
    let beta = admin_key(&app, "beta").await;
    let plain = jwt(&[], "org:acme");
    let no_org = jwt(&["admin"], "");
    let post = |key: String, body: Value| {
        let app = &app;
        async move { app.post_json("/api/v1/alerts/targets", &key, &body).await }
    };
    for (body, field) in [
        (json!({"name": "t", "url": "ftp://example.com/x"}), "url"),
        (
            json!({"name": "t", "url": "https://user:pw@example.com/x"}),
            "url",
        ),
        (json!({"name": "t", "url": "not a url"}), "url"),
        (json!({"url": "https://example.com/x"}), "name"),
        (
            json!({"name": "a b", "url": "https://example.com/x"}),
            "name",
        ),
        (
            json!({"name": "t", "url": "https://example.com/x", "secret": "plain"}),
            "secret",
        ),
        (
            json!({"name": "t", "url": "https://example.com/x", "burst": 0}),
            "burst",
        ),
        (
            json!({"name": "t", "url": "https://example.com/x", "timeout_ms": 1}),
            "timeout_ms",
        ),
        (
            json!({"name": "t", "url": "https://example.com/x", "headers": {"webhook-id": "x"}}),
            "headers",
        ),
    ] {
        let (s, v) = post(acme.clone(), body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"], "invalid_target");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let (s, v) = post(
        acme.clone(),
        json!({"name": "t", "url": "https://example.com/x", "bogus": 1}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = post(
        plain.clone(),
        json!({"name": "t", "url": "https://example.com/x"}),
    )
    .await;
    assert_eq!(s, 403, "admin only");
    let (s, _) = post(
        no_org.clone(),
        json!({"name": "t", "url": "https://example.com/x"}),
    )
    .await;
    assert_eq!(s, 403, "an org is needed");
    // Nothing was stored by the refusals.
    let (_, v) = app.get_json("/api/v1/alerts/targets", Some(&acme)).await;
    assert_eq!(v["targets"], json!([]));

    let given = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";
    let (s, v) = post(acme.clone(), json!({"name": "ops", "url": "https://example.com/x", "secret": given, "headers": {"x-team": "sre"}})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["secret"], given);
    let (s, v) = post(
        acme.clone(),
        json!({"name": "gen", "url": "http://127.0.0.1:9/x"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["secret"].as_str().unwrap().starts_with("whsec_"));
    let (s, v) = post(
        acme.clone(),
        json!({"name": "ops", "url": "https://example.com/y"}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("target_exists")));

    let (s, list) = app.get_json("/api/v1/alerts/targets", Some(&acme)).await;
    assert_eq!(s, 200);
    assert_eq!(list["targets"].as_array().unwrap().len(), 2);
    let (s, one) = app
        .get_json("/api/v1/alerts/targets/ops", Some(&acme))
        .await;
    assert_eq!(s, 200);
    assert_eq!(one["headers"]["x-team"], "sre");
    for v in [&list, &one] {
        assert!(!v.to_string().contains("whsec_"), "no secret on reads: {v}");
    }
    // PUT keeps the secret, validates, and cannot rename.
    let put = |key: &str, name: &str, body: Value| {
        app.http
            .put(app.url(&format!("/api/v1/alerts/targets/{name}")))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let r = put(
        &acme,
        "ops",
        json!({"url": "https://example.com/z", "burst": 5}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["url"].as_str(), v["burst"].as_i64()),
        (Some("https://example.com/z"), Some(5))
    );
    assert!(v.get("secret").is_none());
    let r = put(&acme, "ops", json!({"url": "gopher://x"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = put(
        &acme,
        "ops",
        json!({"name": "other", "url": "https://example.com/z"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Tenant isolation.
    let (s, v) = app.get_json("/api/v1/alerts/targets", Some(&beta)).await;
    assert_eq!((s, &v["targets"]), (200, &json!([])));
    let (s, _) = app
        .get_json("/api/v1/alerts/targets/ops", Some(&beta))
        .await;
    assert_eq!(s, 404);
    let r = put(&beta, "ops", json!({"url": "https://evil.example/"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = app
        .http
        .delete(app.url("/api/v1/alerts/targets/ops"))
        .bearer_auth(&beta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        substrate::alerts::notify::target_exists(&app.ctx, "acme", "ops")
            .await
            .unwrap()
    );
    assert!(
        !substrate::alerts::notify::target_exists(&app.ctx, "beta", "ops")
            .await
            .unwrap()
    );

    // A rule naming a target its org does not have (beta has no "ops"): dead at once.
    let t = transition("beta", "Orphan", "o1", 1, "firing", &["ops"]);
    emit(&app, &[&t]).await;
    let dead = eventually(60, || async {
        let (_, v) = app
            .get_json("/api/v1/alerts/deliveries?state=dead", Some(&beta))
            .await;
        let d = v["deliveries"].as_array().cloned().unwrap_or_default();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0]["reason"], "unknown_target");
    assert_eq!(dead[0]["transition_id"], t.id.as_str());
    assert!(
        deliveries(&app, &acme, "").await.is_empty(),
        "acme sees none of beta's"
    );
    let id = dead[0]["id"].as_i64().unwrap();
    let (s, _) = app
        .post_json(
            &format!("/api/v1/alerts/deliveries/{id}/redrive"),
            &acme,
            &json!({}),
        )
        .await;
    assert_eq!(s, 404, "another org's delivery");
    let (s, v) = app
        .get_json("/api/v1/alerts/deliveries?state=nope", Some(&acme))
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("state")));

    let r = app
        .http
        .delete(app.url("/api/v1/alerts/targets/ops"))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, _) = app
        .get_json("/api/v1/alerts/targets/ops", Some(&acme))
        .await;
    assert_eq!(s, 404);
    app.stop().await;
}
both!(target_api_and_isolation);

/// The end-to-end case, evaluator and notifier together in a child process: a rule
/// fires on ingested data and the receiver gets exactly one signed `firing` notification; the
/// alerts role is killed with SIGKILL (after it recorded the delivery) and started again; the data clears, and the receiver gets
/// exactly one signed `resolved` notification. No duplicate, nothing lost.
async fn rule_fires_to_webhook_across_kill9(backend: Backend) {
    let app = TestApp::start_roles(
        backend,
        vec![Role::Gateway, Role::Relay, Role::Consumers],
        tweak,
    )
    .await;
    let rx = Receiver::start().await;
    let admin = admin_key(&app, "acme").await;
    target(&app, &admin, &rx, "oncall", json!({})).await;
    let rule = json!({"alert": "OvenHot", "expr": "max by (job) (temp) > 50", "for": "1s",
                      "severity": "critical", "targets": ["oncall"],
                      "annotations": {"summary": "{{ $labels.job }} at {{ $value }}"}});
    let (s, v) = app.post_json("/api/v1/alerts/rules", &admin, &rule).await;
    assert_eq!(s, 201, "{v}");
    let agent = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let spawn = || {
        Proc(
            substrate_cmd(&app)
                .args(["serve", "--roles", "alerts"])
                .env("SUBSTRATE_ALERTS__RULES__INTERVAL_SECS", "1")
                .env("SUBSTRATE_ALERTS__RULES__LEASE_TTL_SECS", "2")
                .env("SUBSTRATE_ALERTS__NOTIFY__POLL_INTERVAL_MS", "50")
                .env("SUBSTRATE_ALERTS__NOTIFY__GROUP_WAIT_MS", "100")
                .env("SUBSTRATE_ALERTS__NOTIFY__CLAIM_MARGIN_MS", "1000")
                .env("SUBSTRATE_CONSUMERS__LEASE_TTL_MS", "2000")
                .spawn()
                .expect("spawn the alerts role"),
        )
    };
    let send = |value: f64| {
        let (app, agent) = (&app, &agent);
        async move {
            let r = app
                .http
                .post(app.url("/api/v1/ingest/metrics"))
                .header("x-api-key", agent.as_str())
                .json(&json!({"metric_name": "temp", "value": value, "labels": {"job": "oven"}}))
                .send()
                .await
                .expect("ingest");
            assert_eq!(r.status().as_u16(), 202);
        }
    };
    let mut child = spawn();
    send(80.0).await;
    let first = rx.wait("oncall", 1).await;
    assert_eq!(first[0].status, 200);
    assert_eq!(first[0].body["status"], "firing", "{}", first[0].body);
    assert_eq!(first[0].body["alerts"][0]["labels"]["job"], "oven");
    assert_eq!(
        first[0].body["alerts"][0]["annotations"]["summary"],
        "oven at 80"
    );
    // Killed once the role has recorded the answer. (Killed in the instants between the
    // receiver's 2xx and that record, the restarted role sends the notification again, under
    // the same webhook-id and with the same body: delivery is at least once, and the
    // redelivery case is kill9_while_retrying's and is documented.)
    eventually(30, || async {
        let d = deliveries(&app, &admin, "?state=delivered").await;
        (d.len() == 1).then_some(())
    })
    .await;
    child.kill();

    let mut child = spawn();
    send(10.0).await;
    let got = rx.wait("oncall", 2).await;
    assert_eq!(got[1].body["status"], "resolved", "{}", got[1].body);
    // The restarted role goes on evaluating (the alert stays resolved) and sending (nothing
    // is waiting): wait until every notification the store knows of is delivered, then a
    // few more evaluation rounds, and count.
    eventually(30, || async {
        let d = deliveries(&app, &admin, "?state=delivered").await;
        (d.len() == 2).then_some(())
    })
    .await;
    // Two more evaluation rounds of the restarted role, and nothing else arrives.
    alert_rounds_pass(&app).await;
    let (s, v) = app
        .get_json("/api/v1/alerts/history?rule=OvenHot", Some(&admin))
        .await;
    assert_eq!(s, 200, "{v}");
    let steps: Vec<(&str, &str)> = v["history"]
        .as_array()
        .expect("history")
        .iter()
        .rev()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or(""),
                h["to"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("inactive", "pending"),
            ("pending", "firing"),
            ("firing", "resolved")
        ]
    );
    let got = rx.got("oncall");
    assert_eq!(got.len(), 2, "exactly one firing and one resolved: {got:?}");
    assert_ne!(got[0].id, got[1].id);
    assert!(got.iter().all(|g| g.status == 200));
    assert_eq!(rx.bad_signatures(), 0);
    child.kill();
    app.stop().await;
}
both!(rule_fires_to_webhook_across_kill9);
