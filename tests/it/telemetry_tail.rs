//! Live tails and Loki's protobuf push, on both backends. Tails: a line accepted after the
//! client connected arrives (native JSON and OTLP, SSE and WebSocket), filters mean what the
//! log search means, one org's tail never carries another's lines, an alert transition
//! appended through the outbox reaches the alert tail, a client that stops reading gets
//! `lagged` with exact counts while the server stays healthy, and bad filters and missing
//! credentials are refused. Loki protobuf: a push is stored and queryable, a bad snappy block
//! or protobuf is a 400 naming it and stores nothing, random bytes leave the server up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use prost::Message;
use serde_json::{Value, json};
use substrate::roles::Role;
use substrate::telemetry::ingest::loki::{
    EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp,
};
use substrate::telemetry::store::read::LogFilter;
use tokio_tungstenite::tungstenite;

use crate::analytics::{analytics_backend, stop};
use crate::realtime::{Sse, SseEvent};
use crate::stats::caught_up;
use crate::support::*;
use crate::telemetry::post_key;

/// Opens an SSE tail; `Err` holds the refusal's status and body.
async fn tail(app: &TestApp, path: &str, key: Option<&str>) -> Result<Sse, (u16, Value)> {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let r = req.send().await.expect("request");
    if r.status() != 200 {
        let s = r.status().as_u16();
        return Err((s, r.json().await.unwrap_or(Value::Null)));
    }
    Ok(Sse::from_response(r))
}

/// The next named event (`log`, `alert`, `lagged`), skipping heartbeats.
async fn next_event(s: &mut Sse) -> (String, Value) {
    loop {
        let ev: SseEvent = s.next().await.expect("the tail ended");
        if let Some(name) = ev.event {
            return (name, serde_json::from_str(&ev.data).expect("json data"));
        }
    }
}

/// The next log line's message.
async fn next_line(s: &mut Sse) -> Value {
    let (name, data) = next_event(s).await;
    assert_eq!(name, "log", "{data}");
    data
}

async fn log(app: &TestApp, key: &str, service: &str, level: &str, msg: &str, labels: Value) {
    let (s, r) = post_key(
        app,
        "/api/v1/ingest/logs",
        key,
        &json!({"service": service, "level": level, "message": msg, "labels": labels}),
    )
    .await;
    assert_eq!(s, 202, "{r}");
}

/// An OTLP/HTTP protobuf logs request with one record of `service`.
fn otlp_log(service: &str, msg: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let s = |v: &str| AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("now") as u64;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(s(service)),
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now,
                    severity_text: "WARN".into(),
                    body: Some(s(msg)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post_bytes(app: &TestApp, path: &str, key: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .header("x-api-key", key)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

both!(tails_follow_new_lines_filtered_and_per_org);
async fn tails_follow_new_lines_filtered_and_per_org(b: Backend) {
    let app = TestApp::start(b).await;
    let acme = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let reader = app.api_key("acme-r", &["telemetry:read", "org:acme"]).await;
    let globex = app
        .api_key("globex", &["telemetry:write", "org:globex"])
        .await;
    // Lines from before the tail opened are not replayed.
    log(&app, &acme, "api", "info", "before", json!({})).await;
    let mut all = tail(&app, "/api/v1/tail/logs", Some(&reader))
        .await
        .expect("tail");
    let mut errors = tail(
        &app,
        "/api/v1/tail/logs?service=api&level=ERROR&label=env%3Dprod&q=disk",
        Some(&reader),
    )
    .await
    .expect("filtered tail");
    let mut other = tail(&app, "/api/v1/tail/logs", Some(&globex))
        .await
        .expect("globex tail");
    // Native JSON, then OTLP protobuf.
    log(
        &app,
        &acme,
        "api",
        "error",
        "disk full",
        json!({"env": "prod"}),
    )
    .await;
    let l = next_line(&mut all).await;
    assert_eq!(
        (l["service"].as_str(), l["level"].as_str()),
        (Some("api"), Some("error"))
    );
    assert_eq!(
        (l["message"].as_str(), &l["labels"]),
        (Some("disk full"), &json!({"env": "prod"}))
    );
    assert!(
        l["ts_ns"].as_i64().is_some() && l["time"].is_string(),
        "{l}"
    );
    let (s, r) = post_bytes(
        &app,
        "/v1/logs",
        &acme,
        "application/x-protobuf",
        otlp_log("checkout", "otlp says hi"),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let l = next_line(&mut all).await;
    assert_eq!(
        (l["service"].as_str(), l["message"].as_str()),
        (Some("checkout"), Some("otlp says hi"))
    );
    // Filters: each of these misses one condition; the last line passes them all.
    for (svc, lvl, msg, env) in [
        ("web", "error", "disk full", "prod"),
        ("api", "info", "disk full", "prod"),
        ("api", "error", "disk full", "dev"),
        ("api", "error", "cpu hot", "prod"),
        ("api", "Error", "disk gone", "prod"),
    ] {
        log(&app, &acme, svc, lvl, msg, json!({"env": env})).await;
    }
    let first = next_line(&mut errors).await;
    assert_eq!(first["message"], "disk full", "{first}");
    let second = next_line(&mut errors).await;
    assert_eq!(
        second["message"], "disk gone",
        "the filter let another line through: {second}"
    );
    for want in [
        "disk full",
        "disk full",
        "disk full",
        "cpu hot",
        "disk gone",
    ] {
        assert_eq!(next_line(&mut all).await["message"], want);
    }
    // The other org's tail: acme's lines came first in the log, so had any reached it, it
    // would be read before globex's own line.
    log(&app, &globex, "api", "error", "globex only", json!({})).await;
    assert_eq!(next_line(&mut other).await["message"], "globex only");
    // The WebSocket variant.
    let mut ws = ws_tail(&app, "/api/v1/tail/logs/ws?service=ws", &reader).await;
    log(&app, &acme, "ws", "info", "over websocket", json!({})).await;
    let m = ws_event(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["data"]["message"].as_str()),
        (Some("log"), Some("over websocket")),
        "{m}"
    );
    drop((all, errors, other, ws));
    app.stop().await;
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_tail(app: &TestApp, path: &str, key: &str) -> WsStream {
    use tungstenite::client::IntoClientRequest;
    let mut req = app
        .url(path)
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("ws request");
    req.headers_mut()
        .insert("x-api-key", key.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    let hello = ws_event(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    ws
}

/// The next JSON message other than a heartbeat.
async fn ws_event(ws: &mut WsStream) -> Value {
    loop {
        match ws.next().await.expect("ws open").expect("ws message") {
            tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                if v["type"] != "heartbeat" {
                    return v;
                }
            }
            tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

both!(alert_transitions_reach_the_alert_tail);
async fn alert_transitions_reach_the_alert_tail(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway], |_| {}).await;
    let acme = app.api_key("acme", &["telemetry:read", "org:acme"]).await;
    let globex = app
        .api_key("globex", &["telemetry:read", "org:globex"])
        .await;
    let mut a = tail(&app, "/api/v1/tail/alerts", Some(&acme))
        .await
        .expect("tail");
    let mut g = tail(&app, "/api/v1/tail/alerts", Some(&globex))
        .await
        .expect("tail");
    let emit = |org: &'static str, rule: &'static str| {
        let ctx = app.ctx.clone();
        async move {
            let t = json!({"version": 1, "id": format!("{org}-{rule}"), "org": org, "rule": rule,
                "fingerprint": "f1", "sequence": 1, "from": "pending", "to": "firing",
                "at": chrono::Utc::now().timestamp_millis(), "active_since": null, "value": null,
                "severity": "critical", "labels": {"alertname": rule}, "annotations": {},
                "targets": [], "public": false});
            let key = format!("{org}/{rule}");
            let ev = substrate::events::build(
                &ctx.schemas,
                substrate::alerts::event::TOPIC,
                &key,
                &t,
                &Default::default(),
            )
            .expect("event");
            let mut tx = ctx.store.begin().await.expect("begin");
            ctx.outbox.append(&mut tx, &[&ev]).await.expect("append");
            tx.commit().await.expect("commit");
        }
    };
    emit("acme", "high_cpu").await;
    emit("globex", "disk").await;
    let (name, t) = next_event(&mut a).await;
    assert_eq!(name, "alert", "{t}");
    assert_eq!(
        (t["org"].as_str(), t["rule"].as_str(), t["to"].as_str()),
        (Some("acme"), Some("high_cpu"), Some("firing"))
    );
    let (_, t) = next_event(&mut g).await;
    assert_eq!(
        t["rule"], "disk",
        "globex sees only its own transition first: {t}"
    );
    // Log tails and alert tails are apart: the alert tail takes no filters.
    let (s, body) = tail(&app, "/api/v1/tail/alerts?level=error", Some(&acme))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (s, body["error"].as_str(), body["parameter"].as_str()),
        (400, Some("invalid_query"), Some("level"))
    );
    drop((a, g));
    app.stop().await;
}

/// A telemetry batch event of `org` with one log line, built as the ingest builds it (inline).
fn line_event(app: &TestApp, org: &str, msg: &str) -> substrate::outbox::NewEvent {
    use base64::Engine;
    use substrate::telemetry::model::{Batch, LogLine};
    let batch = Batch {
        timeseries: Vec::new(),
        logs: vec![LogLine {
            ts_ns: chrono::Utc::now().timestamp_nanos_opt().expect("now"),
            service: "api".into(),
            level: "info".into(),
            message: msg.into(),
            labels: Vec::new(),
            attributes: String::new(),
        }],
    };
    let payload = json!({
        "version": 1, "org": org, "source": "test", "series": 0, "samples": 0, "lines": 1,
        "batch": base64::engine::general_purpose::STANDARD.encode(batch.encode_to_vec()),
        "claim": null,
    });
    substrate::events::build(
        &app.ctx.schemas,
        substrate::telemetry::ingest::TOPIC,
        org,
        &payload,
        &Default::default(),
    )
    .expect("event")
}

/// The outbox id of the event `event_id`.
async fn outbox_id(app: &TestApp, event_id: &str) -> i64 {
    substrate::on_read!(&app.ctx.store, p => {
        sqlx::query_scalar::<_, i64>("SELECT id FROM outbox WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(p)
            .await
            .expect("outbox row")
    })
}

/// PostgreSQL with the Kafka log commits outbox ids out of order: a line whose append drew its
/// id first but committed last becomes visible after the tail's reader passed that id. The
/// reader looks below its cursor until PostgreSQL's horizon says nothing more can fill, so the
/// late line arrives, once; a rolled-back append leaves a hole that is dropped, and the ids
/// kept for it are let go once no transaction that could fill it is running. (The embedded log
/// serializes appends, and SQLite has one writer: the race cannot happen there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_committed_late_below_the_tails_cursor_arrives_once() {
    if !kafka_column() {
        // The held append would hold the ingest behind it (appends take turns).
        return;
    }
    let app = TestApp::start_roles(Backend::Postgres, vec![Role::Gateway], |_| {}).await;
    let key = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let mut t = tail(&app, "/api/v1/tail/logs", Some(&key))
        .await
        .expect("tail");
    let hub = app.ctx.realtime.tail.clone();
    let message = |l: Value| l["message"].as_str().unwrap_or_default().to_string();
    // The slow append draws its id and holds its transaction open; a later line is accepted
    // and reaches the tail, so the reader's cursor is past the slow line's id.
    let first = line_event(&app, "acme", "first");
    let mut slow = app.ctx.store.begin().await.expect("begin");
    app.ctx
        .outbox
        .append(&mut slow, &[&first])
        .await
        .expect("append");
    log(&app, &key, "api", "info", "second", json!({})).await;
    assert_eq!(message(next_line(&mut t).await), "second");
    // While the slow transaction runs, the reader keeps what it delivered below its cursor.
    eventually(10, || async { (hub.gap_ids() > 0).then_some(()) }).await;
    slow.commit().await.expect("commit");
    assert!(
        outbox_id(&app, &first.event_id).await < outbox_id_of_message(&app, "second").await,
        "the slow line did not draw the lower id"
    );
    assert_eq!(message(next_line(&mut t).await), "first");
    // A rolled-back append leaves a hole below a delivered line: nothing comes of it.
    let mut gone = app.ctx.store.begin().await.expect("begin");
    app.ctx
        .outbox
        .append(&mut gone, &[&line_event(&app, "acme", "rolled back")])
        .await
        .expect("append");
    log(&app, &key, "api", "info", "third", json!({})).await;
    assert_eq!(message(next_line(&mut t).await), "third");
    gone.rollback().await.expect("rollback");
    log(&app, &key, "api", "info", "fourth", json!({})).await;
    // Each line once, in the order it became visible: nothing twice, nothing rolled back.
    assert_eq!(message(next_line(&mut t).await), "fourth");
    // Once no transaction that could fill a hole is running, the reader keeps nothing (the
    // horizon is the server's: other tests' transactions may delay it a little).
    eventually(30, || async { (hub.gap_ids() == 0).then_some(()) }).await;
    log(&app, &key, "api", "info", "fifth", json!({})).await;
    assert_eq!(message(next_line(&mut t).await), "fifth");
    drop(t);
    app.stop().await;
}

/// The outbox id of the batch that carries the line `msg` (ingested through HTTP).
async fn outbox_id_of_message(app: &TestApp, msg: &str) -> i64 {
    let ids: Vec<(i64, Vec<u8>)> = substrate::on_read!(&app.ctx.store, p => {
        sqlx::query_as("SELECT id, payload FROM outbox WHERE topic = 'internal.telemetry.batches' ORDER BY id")
            .fetch_all(p)
            .await
            .expect("outbox rows")
    });
    for (id, payload) in ids {
        let v = app.ctx.schemas.decode_json(&payload).await.expect("decode");
        let batch = substrate::telemetry::store::load_batch(&app.ctx.objects, &v)
            .await
            .expect("batch");
        if batch.logs.iter().any(|l| l.message == msg) {
            return id;
        }
    }
    panic!("no batch holds {msg:?}")
}

both!(refusals_and_a_slow_reader);
async fn refusals_and_a_slow_reader(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway], |c| {
        c.telemetry.tail.client_buffer = 2;
        c.telemetry.tail.max_subscribers_per_org = 3;
        c.realtime.heartbeat_secs = 1;
    })
    .await;
    let acme = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let no_scope = app.api_key("x", &["org:acme"]).await;
    for (path, key, status, code) in [
        ("/api/v1/tail/logs", None, 401, None),
        ("/api/v1/tail/alerts", None, 401, None),
        ("/api/v1/tail/logs", Some(&no_scope), 403, Some("forbidden")),
        (
            "/api/v1/tail/logs?label=env",
            Some(&acme),
            400,
            Some("invalid_query"),
        ),
        (
            "/api/v1/tail/logs?since=5m",
            Some(&acme),
            400,
            Some("invalid_query"),
        ),
        (
            "/api/v1/tail/logs?service=a&service=b",
            Some(&acme),
            400,
            Some("invalid_query"),
        ),
    ] {
        let (s, body) = tail(&app, path, key.map(String::as_str))
            .await
            .err()
            .expect("refused");
        assert_eq!(s, status, "{path}: {body}");
        assert!(body["error"].is_string(), "a JSON error body: {body}");
        if let Some(c) = code {
            assert_eq!(body["error"], c, "{path}: {body}");
        }
    }
    // The slow reader: it stops reading while ~24 MB of lines go by. The server never waits
    // for it: what does not fit its buffer is counted and reported as `lagged`.
    let mut slow = tail(&app, "/api/v1/tail/logs", Some(&acme))
        .await
        .expect("tail");
    let line = "x".repeat(4000);
    let (requests, per) = (6, 1000);
    for r in 0..requests {
        let logs: Vec<Value> = (0..per)
            .map(|i| json!({"service": "bulk", "level": "info", "message": format!("{r}-{i} {line}")}))
            .collect();
        let (s, body) =
            post_key(&app, "/api/v1/ingest/logs", &acme, &json!({ "logs": logs })).await;
        assert_eq!(s, 202, "{body}");
    }
    // Limits: the org may have 3 tails; `slow` is one.
    let t2 = tail(&app, "/api/v1/tail/logs", Some(&acme))
        .await
        .expect("second");
    let mut t3 = tail(&app, "/api/v1/tail/logs?service=marker", Some(&acme))
        .await
        .expect("third");
    let (s, body) = tail(&app, "/api/v1/tail/logs", Some(&acme))
        .await
        .err()
        .expect("over the limit");
    assert_eq!(
        (s, body["error"].as_str(), body["scope"].as_str()),
        (429, Some("too_many_tails"), Some("org"))
    );
    drop(t2);
    // Markers keep coming until the slow reader sees one; then every line up to it was either
    // delivered or counted as dropped.
    let markers = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (base, key, markers, done) = (
            app.base.clone(),
            acme.clone(),
            markers.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !done.load(Ordering::SeqCst) {
                let k = markers.load(Ordering::SeqCst);
                let r = http
                    .post(format!("{base}/api/v1/ingest/logs"))
                    .header("x-api-key", &key)
                    .json(&json!({"service": "marker", "level": "info", "message": format!("marker {k}")}))
                    .send()
                    .await
                    .expect("marker");
                assert_eq!(r.status(), 202);
                markers.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    let (mut bulk, mut marks, mut dropped, mut lagged) = (0u64, 0u64, 0u64, 0);
    let seen = loop {
        let (name, data) = next_event(&mut slow).await;
        match name.as_str() {
            "lagged" => {
                lagged += 1;
                dropped += data["dropped"].as_u64().expect("count");
            }
            "log" if data["service"] == "bulk" => bulk += 1,
            "log" => {
                marks += 1;
                let k: u64 = data["message"]
                    .as_str()
                    .and_then(|m| m.strip_prefix("marker "))
                    .and_then(|n| n.parse().ok())
                    .expect("marker");
                break k;
            }
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    done.store(true, Ordering::SeqCst);
    sender.await.expect("sender");
    assert!(
        lagged >= 1 && dropped > 0,
        "the slow reader was told it lagged"
    );
    let total = (requests * per) as u64 + seen + 1;
    assert_eq!(
        bulk + marks + dropped,
        total,
        "delivered + dropped = offered, up to marker {seen}"
    );
    // The server is healthy, and the other tail (which kept reading) got the markers.
    let (s, _) = app.get_json("/healthz", None).await;
    assert_eq!(s, 200);
    assert_eq!(next_line(&mut t3).await["message"], "marker 0");
    drop((slow, t3));
    app.stop().await;
}

/// A Loki protobuf push body: a snappy block of `PushRequest`.
fn loki_body(labels: &str, lines: &[(i64, &str)]) -> Vec<u8> {
    let req = PushRequest {
        streams: vec![StreamAdapter {
            labels: labels.into(),
            entries: lines
                .iter()
                .map(|(ns, l)| EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: ns / 1_000_000_000,
                        nanos: (ns % 1_000_000_000) as i32,
                    }),
                    line: l.to_string(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "t-1".into(),
                    }],
                })
                .collect(),
            hash: 0,
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

async fn batches(app: &TestApp) -> i64 {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE topic = 'internal.telemetry.batches'")
            .fetch_one(p)
            .await
            .expect("count")
    })
}

both!(loki_protobuf_push);
async fn loki_protobuf_push(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let acme = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("now");
    let pb = "application/x-protobuf";
    let body = loki_body(
        r#"{job="worker", level="WARN", env="prod"}"#,
        &[(now - 1000, "slow queue"), (now, "full queue")],
    );
    let (s, r) = post_bytes(&app, "/loki/api/v1/push", &acme, pb, body).await;
    assert_eq!((s, r["lines"].as_i64()), (202, Some(2)), "{r}");
    // Refusals name the problem and store nothing.
    let before = batches(&app).await;
    let junk = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff")
        .expect("snappy");
    for (body, code) in [
        (b"\xff\xff\xff\xff".to_vec(), "invalid_snappy"),
        (junk, "invalid_protobuf"),
        (loki_body("job=worker", &[(now, "x")]), "invalid_telemetry"),
        (
            loki_body(r#"{job="w"}"#, &[(now - 30 * 86_400_000_000_000, "old")]),
            "timestamp_out_of_range",
        ),
    ] {
        let (s, r) = post_bytes(&app, "/loki/api/v1/push", &acme, pb, body).await;
        assert_eq!((s, r["error"].as_str()), (400, Some(code)), "{r}");
    }
    assert_eq!(batches(&app).await, before, "a refused push stores nothing");
    // Random bytes: always a 4xx, never a crash.
    for n in 0..200usize {
        let len = rand::random::<usize>() % (1 + n * 8);
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let (s, r) = post_bytes(&app, "/loki/api/v1/push", &acme, pb, bytes).await;
        assert!(s == 202 || (400..500).contains(&s), "{s} {r}");
    }
    let (s, _) = app.get_json("/healthz", None).await;
    assert_eq!(s, 200);
    // The accepted push is queryable.
    caught_up(&app).await;
    let got = eventually(30, || async {
        let f = LogFilter {
            service: Some("worker".into()),
            from_ns: 0,
            to_ns: i64::MAX,
            limit: 10,
            ..Default::default()
        };
        let lines = app.ctx.telemetry.logs("acme", &f).await.ok()?;
        (lines.len() == 2).then_some(lines)
    })
    .await;
    assert_eq!(got[0].message, "full queue");
    assert_eq!(
        (got[0].level.as_str(), got[0].attributes.as_str()),
        ("warn", r#"{"trace_id":"t-1"}"#)
    );
    stop(app).await;
}
