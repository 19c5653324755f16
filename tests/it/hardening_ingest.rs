//! Ingest hardening (issue 10): what the gateway accepts, every consumer can store on both
//! backends, and everything else gets a JSON 4xx naming the problem; one client's bad input
//! or load never fails another client's request; error answers are always JSON; a lost store
//! is reported and fails requests fast; start-up names an unreachable PostgreSQL; a panicking
//! group-commit writer never leaves anyone waiting.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

/// Posts `body` as-is (it may not be valid JSON for serde_json's writer, e.g. duplicate keys).
async fn post_raw(app: &TestApp, path: &str, auth: Auth<'_>, body: &str) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    req = match auth {
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::ApiKey(k) => req.header("x-api-key", k),
    };
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

fn hook_headers(msg_id: &str, body: &str) -> Vec<(&'static str, String)> {
    let ts = chrono::Utc::now().timestamp();
    let sig = substrate::gateway::webhooks::sign(WEBHOOK_SECRET, msg_id, ts, body.as_bytes());
    vec![
        ("webhook-id", msg_id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

async fn post_hook(app: &TestApp, msg_id: &str, body: &str) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/webhooks/login"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in hook_headers(msg_id, body) {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// GET with a bearer token; the body as JSON (`Null` when it is not JSON).
async fn get(app: &TestApp, path: &str, bearer: &str) -> (u16, Value) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn assert_nul_refused(what: &str, (s, body): (u16, Value), code: &str, field: &str) {
    assert_eq!(s, 400, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    assert_eq!(body["field"], field, "{what}: {body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("NUL")),
        "{what}: {body}"
    );
}

both!(nul_characters_are_refused_naming_the_field);
async fn nul_characters_are_refused_naming_the_field(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    let key = app.api_key("svc", &["events:write"]).await;
    // A payload field.
    let r = app
        .post_json("/api/v1/events/message", &alice, &message("a\u{0}b"))
        .await;
    assert_nul_refused("message field", r, "invalid_event", "message");
    // What becomes the event key (a service's payload user_id).
    let mut m = message("hello");
    m["user_id"] = json!("bob\u{0}");
    m["email"] = json!("bob@example.com");
    let body = m.to_string();
    let r = post_raw(&app, "/api/v1/events/message", Auth::ApiKey(&key), &body).await;
    assert_nul_refused("service key", r, "invalid_event", "user_id");
    // In a batch: the index and the field.
    let batch = json!([message("fine"), message("x\u{0}")]);
    let (s, e) = app
        .post_json("/api/v1/events/message/batch", &alice, &batch)
        .await;
    assert_eq!((s, e["index"].as_u64()), (400, Some(1)), "{e}");
    assert_nul_refused("batch", (s, e), "invalid_event", "message");
    // A webhook's key field.
    let body = r#"{"user_id":"u\u0000","email":"u@example.com","login_time":1}"#;
    let r = post_hook(&app, "msg-nul", body).await;
    assert_nul_refused("webhook", r, "invalid_event", "user_id");
    // A media intent.
    let r = app
        .post_json(
            "/api/v1/media/download-intent",
            &alice,
            &json!({"file_path": "files/alice/x\u{0}"}),
        )
        .await;
    assert_nul_refused("download intent", r, "invalid_request", "file_path");
    // Another JSON body (an admin one): its field is named too.
    let admin = app.admin_token();
    let r = app
        .post_json(
            "/api/v1/admin/apikeys",
            &admin,
            &json!({"name": "k\u{0}", "scopes": []}),
        )
        .await;
    assert_nul_refused("admin body", r, "invalid_request", "name");
    // URLs: a %00 in the path or the query never reaches a query.
    for path in [
        "/subjects/a%00b/versions",
        "/api/v1/admin/dlq?group=g%00",
        "/api/v1/media/uploads/r%00",
    ] {
        let (s, e) = get(&app, path, &admin).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (400, Some("invalid_request")),
            "{path}: {e}"
        );
    }
    assert_eq!(app.outbox_count(None).await, 0);
    app.stop().await;
}

both!(nul_requests_do_not_fail_concurrent_valid_ones);
async fn nul_requests_do_not_fail_concurrent_valid_ones(b: Backend) {
    let app = TestApp::start(b).await;
    let key = app.api_key("svc", &["events:write"]).await;
    let body = |user: &str| {
        json!({"user_id": user, "email": "x@example.com", "message": "m",
               "timestamp": "2026-01-01T00:00:00Z"})
        .to_string()
    };
    let mut valid = 0;
    for wave in 0..3 {
        let futs = (0..80).map(|i| {
            let (app, key) = (&app, &key);
            let user = if i % 2 == 0 {
                format!("user-{wave}-{i}")
            } else {
                format!("bad\u{0}-{wave}-{i}")
            };
            let body = body(&user);
            async move {
                let r = post_raw(app, "/api/v1/events/message", Auth::ApiKey(key), &body).await;
                (i % 2 == 0, r)
            }
        });
        for (ok, (s, e)) in futures::future::join_all(futs).await {
            if ok {
                assert_eq!(s, 202, "a valid request next to NUL ones: {e}");
                valid += 1;
            } else {
                assert_eq!(s, 400, "{e}");
            }
        }
    }
    assert_eq!(app.outbox_count(None).await, valid);
    app.stop().await;
}

both!(direct_message_without_recipient_is_refused_at_ingest);
async fn direct_message_without_recipient_is_refused_at_ingest(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    for recipient in [None, Some(json!(null)), Some(json!(""))] {
        let mut m = message("psst");
        m["visibility"] = json!("direct");
        if let Some(r) = recipient {
            m["recipient_id"] = r;
        }
        let (s, e) = app.post_json("/api/v1/events/message", &alice, &m).await;
        assert_eq!(
            (s, e["error"].as_str(), e["field"].as_str()),
            (400, Some("invalid_event"), Some("recipient_id")),
            "{m} → {e}"
        );
    }
    let mut bad = message("psst");
    bad["visibility"] = json!("direct");
    let (s, e) = app
        .post_json(
            "/api/v1/events/message/batch",
            &alice,
            &json!([message("ok"), bad]),
        )
        .await;
    assert_eq!((s, e["index"].as_u64()), (400, Some(1)), "{e}");
    // An id an index cannot hold is refused as well (a consumer would dead-letter it).
    let mut long = message("hi");
    long["visibility"] = json!("direct");
    long["recipient_id"] = json!("r".repeat(3000));
    let (s, e) = app.post_json("/api/v1/events/message", &alice, &long).await;
    assert_eq!((s, e["field"].as_str()), (400, Some("recipient_id")), "{e}");
    assert_eq!(app.outbox_count(None).await, 0);
    // A proper direct message passes the same rule in the consumer.
    let mut ok = message("psst bob");
    ok["visibility"] = json!("direct");
    ok["recipient_id"] = json!("bob");
    let (s, e) = app.post_json("/api/v1/events/message", &alice, &ok).await;
    assert_eq!(s, 202, "{e}");
    let row = eventually(30, || async {
        substrate::projections::notifications::all(&app.ctx.store)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        (row.visibility.as_str(), row.recipient_id.as_deref()),
        ("direct", Some("bob"))
    );
    let dead = substrate::consumers::dlq::depth(&app.ctx.store)
        .await
        .expect("dlq");
    assert!(dead.is_empty(), "{dead:?}");
    app.stop().await;
}

both!(timestamps_out_of_range_are_refused_and_the_edges_are_stored);
async fn timestamps_out_of_range_are_refused_and_the_edges_are_stored(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    for t in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(253_402_300_800_000_i64),
    ] {
        let m = json!({"message": "when?", "timestamp": t});
        let (s, e) = app.post_json("/api/v1/events/message", &alice, &m).await;
        assert_eq!(
            (s, e["error"].as_str(), e["field"].as_str()),
            (400, Some("invalid_event"), Some("timestamp")),
            "{t} → {e}"
        );
    }
    assert_eq!(app.outbox_count(None).await, 0);
    // The last millisecond of year 9999 is accepted, and projected without overflow.
    let last = 253_402_300_799_999_i64;
    let m = json!({"message": "far future", "timestamp": last});
    let (s, e) = app.post_json("/api/v1/events/message", &alice, &m).await;
    assert_eq!(s, 202, "{e}");
    let row = eventually(30, || async {
        substrate::projections::notifications::all(&app.ctx.store)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(row.event_time, last * 1000);
    app.stop().await;
}

both!(duplicate_keys_are_refused_naming_the_key);
async fn duplicate_keys_are_refused_naming_the_key(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    let dup = r#"{"message":"a","message":"b","timestamp":"2026-01-01T00:00:00Z"}"#;
    let (s, e) = post_raw(&app, "/api/v1/events/message", Auth::Bearer(&alice), dup).await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (400, Some("duplicate_key"), Some("message")),
        "{e}"
    );
    let batch = r#"{"events":[{"message":"ok","timestamp":1},{"message":"x","timestamp":1,"timestamp":2}]}"#;
    let (s, e) = post_raw(
        &app,
        "/api/v1/events/message/batch",
        Auth::Bearer(&alice),
        batch,
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (400, Some("duplicate_key"), Some("events[1].timestamp")),
        "{e}"
    );
    let hook = r#"{"user_id":"u1","user_id":"u2","email":"u@example.com","login_time":1}"#;
    let (s, e) = post_hook(&app, "msg-dup", hook).await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (400, Some("duplicate_key"), Some("user_id")),
        "{e}"
    );
    let intent = r#"{"file_path":"files/a","file_path":"files/b"}"#;
    let (s, e) = post_raw(
        &app,
        "/api/v1/media/delete-intent",
        Auth::Bearer(&alice),
        intent,
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("duplicate_key")),
        "{e}"
    );
    let admin = app.admin_token();
    let key = r#"{"name":"a","name":"b"}"#;
    let (s, e) = post_raw(&app, "/api/v1/admin/apikeys", Auth::Bearer(&admin), key).await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (400, Some("duplicate_key"), Some("name")),
        "{e}"
    );
    // The registry answers in its own (Confluent) format.
    let schema = r#"{"schema":"\"string\"","schema":"\"long\""}"#;
    let (s, e) = post_raw(
        &app,
        "/subjects/dup-value/versions",
        Auth::Bearer(&admin),
        schema,
    )
    .await;
    assert_eq!((s, e["error_code"].as_i64()), (422, Some(42201)), "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("schema")),
        "{e}"
    );
    assert_eq!(app.outbox_count(None).await, 0);
    app.stop().await;
}

both!(an_event_the_log_cannot_carry_is_413);
async fn an_event_the_log_cannot_carry_is_413(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    let limit = app.ctx.config.gateway.body_limit_bytes;
    // The body fits the body limit; the encoded record (with headers) does not fit the log.
    let big = message(&"x".repeat(limit - 100));
    assert!(big.to_string().len() <= limit);
    let (s, e) = app.post_json("/api/v1/events/message", &alice, &big).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (413, Some("event_too_large")),
        "{e}"
    );
    // The default log limit (`log.max_message_bytes`) is the default body limit, 1 MiB.
    assert_eq!(e["limit_bytes"].as_u64(), Some(1024 * 1024), "{e}");
    assert!(e["size_bytes"].as_u64() > e["limit_bytes"].as_u64(), "{e}");
    assert_eq!(app.outbox_count(None).await, 0);
    // Well below the limit is fine.
    let fits = message(&"x".repeat(limit - 8 * 1024));
    let (s, e) = app.post_json("/api/v1/events/message", &alice, &fits).await;
    assert_eq!(s, 202, "{e}");
    app.stop().await;
}

/// Every error answer is JSON with an `error` code, including the router's own 404 and 405
/// and axum's extractor rejections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_json() {
    let app = TestApp::start(Backend::Sqlite).await;
    let admin = app.admin_token();
    let check = |what: &str, r: &reqwest::Response, status: u16| {
        assert_eq!(r.status().as_u16(), status, "{what}");
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.contains("json"), "{what}: content-type {ct:?}");
    };
    let r = app.http.get(app.url("/no/such/path")).send().await.unwrap();
    check("404", &r, 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = app
        .http
        .get(app.url("/api/v1/events/message"))
        .send()
        .await
        .unwrap();
    check("405", &r, 405);
    assert!(r.headers().get("allow").is_some(), "405 keeps Allow");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    // Extractor rejections: a bad path parameter, a bad query, a missing content type.
    let r = app
        .http
        .get(app.url("/api/v1/admin/dlq/not-a-number"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    check("bad path", &r, 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = app
        .http
        .get(app.url("/api/v1/admin/dlq?limit=many"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    check("bad query", &r, 400);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = app
        .http
        .post(app.url("/api/v1/admin/apikeys"))
        .bearer_auth(&admin)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    check("no content type", &r, 415);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}

/// Holds the outbox so no group commit can finish: on SQLite a second connection holds the
/// write lock; on PostgreSQL a transaction locks the outbox table against inserts.
struct Blocker {
    sqlite: Option<sqlx::SqliteConnection>,
    pg: Option<sqlx::PgConnection>,
}

impl Blocker {
    async fn hold(app: &TestApp) -> Blocker {
        use sqlx::Connection;
        if app.store.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&app.store.url)
                .await
                .expect("connect");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .expect("lock");
            Blocker {
                sqlite: Some(c),
                pg: None,
            }
        } else {
            let mut c = sqlx::PgConnection::connect(&app.store.url)
                .await
                .expect("connect");
            sqlx::query("BEGIN").execute(&mut c).await.expect("begin");
            sqlx::query("LOCK TABLE outbox IN EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .expect("lock");
            Blocker {
                sqlite: None,
                pg: Some(c),
            }
        }
    }

    async fn release(mut self) {
        if let Some(c) = self.sqlite.as_mut() {
            sqlx::query("ROLLBACK").execute(c).await.expect("unlock");
        }
        if let Some(c) = self.pg.as_mut() {
            sqlx::query("ROLLBACK").execute(c).await.expect("unlock");
        }
    }
}

/// Sends `n` messages of `text_len` bytes at once while the store is blocked. Requests that
/// cannot be queued must be answered at once (`503 overloaded`); the first such answer
/// releases the store, and every answer is collected.
async fn send_while_blocked(app: &TestApp, n: usize, text_len: usize) -> Vec<(u16, bool, Value)> {
    let alice = app.token("alice");
    let blocker = Blocker::hold(app).await;
    let send = |i: usize| {
        let alice = &alice;
        async move {
            let m = message(&format!("{i}{}", "x".repeat(text_len)));
            let r = app
                .http
                .post(app.url("/api/v1/events/message"))
                .bearer_auth(alice)
                .json(&m)
                .send()
                .await
                .expect("request");
            let retry_after = r.headers().get("retry-after").is_some();
            let status = r.status().as_u16();
            (
                status,
                retry_after,
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut pending: futures::stream::FuturesUnordered<_> = (0..n).map(send).collect();
    let mut blocker = Some(blocker);
    let mut answers = Vec::new();
    loop {
        let next = if blocker.is_some() {
            tokio::time::timeout(Duration::from_secs(20), pending.next())
                .await
                .expect("a full queue answers at once, without waiting for the store")
        } else {
            pending.next().await
        };
        let Some(a) = next else { break };
        if a.0 == 503
            && a.2["error"] == "overloaded"
            && let Some(b) = blocker.take()
        {
            b.release().await;
        }
        answers.push(a);
    }
    if let Some(b) = blocker.take() {
        b.release().await;
    }
    drop(pending);
    answers
}

/// Every answer is 202 or a 503 with `Retry-After`, some were shed as `overloaded` (for
/// `reason`), and what was accepted is stored.
async fn assert_shed(app: &TestApp, answers: &[(u16, bool, Value)], reason: &str) {
    let mut accepted = 0;
    let mut overloaded = 0;
    for (s, retry_after, e) in answers {
        match s {
            202 => accepted += 1,
            503 => {
                assert!(retry_after, "503 carries Retry-After: {e}");
                if e["error"] == "overloaded" {
                    assert!(
                        e["reason"].as_str().is_some_and(|r| r.contains(reason)),
                        "{e}"
                    );
                    overloaded += 1;
                }
            }
            other => panic!("unexpected {other}: {e}"),
        }
    }
    assert!(overloaded > 0, "{answers:?}");
    assert!(accepted > 0, "{answers:?}");
    assert_eq!(app.outbox_count(None).await, accepted);
}

both!(a_full_group_commit_queue_sheds_load_with_503);
async fn a_full_group_commit_queue_sheds_load_with_503(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.gateway.group_commit.queue_depth = 2;
        c.gateway.group_commit.writers = 1;
        // The blocked store must not fail the queued requests before they are released.
        c.gateway.group_commit.store_timeout_ms = 60_000;
    })
    .await;
    let answers = send_while_blocked(&app, 12, 10).await;
    assert_shed(&app, &answers, "requests").await;
    app.stop().await;
}

both!(queued_bytes_are_bounded);
async fn queued_bytes_are_bounded(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.gateway.group_commit.max_queued_bytes = 64 * 1024;
        c.gateway.group_commit.writers = 1;
        c.gateway.group_commit.store_timeout_ms = 60_000;
    })
    .await;
    // 10 × 20 KB: about three fit in 64 KiB of queued work.
    let answers = send_while_blocked(&app, 10, 20 * 1024).await;
    assert_shed(&app, &answers, "bytes").await;
    assert_eq!(app.ctx.appender.queued(), (0, 0));
    app.stop().await;
}

both!(one_bad_job_fails_alone_in_a_group_commit);
async fn one_bad_job_fails_alone_in_a_group_commit(b: Backend) {
    use substrate::outbox::{AppendError, AppendOutcome, AppendRequest, Appender};
    let app = TestApp::start(b).await;
    let mut cfg = app.ctx.config.gateway.group_commit.clone();
    cfg.writers = 1;
    cfg.store_timeout_ms = 60_000;
    let appender = Appender::start(app.ctx.store.clone(), app.ctx.outbox.clone(), &cfg);
    let meta = substrate::events::EventMeta {
        source: "/test".into(),
        ..Default::default()
    };
    // A NUL in the key bypasses validation (the key is not a payload field here): PostgreSQL
    // cannot store it, SQLite can.
    let job = |key: &str| {
        let payload = json!({"user_id": "u", "email": "u@example.com", "message": "m",
                             "timestamp": 1});
        let ev = substrate::events::build(
            &app.ctx.schemas,
            "public.user.message.events",
            key,
            &payload,
            &meta,
        )
        .expect("build");
        AppendRequest {
            events: vec![ev],
            guard: None,
        }
    };
    let blocker = Blocker::hold(&app).await;
    // The first job occupies the writer (blocked); the others queue up behind it and are then
    // taken as one batch.
    let first = tokio::spawn({
        let (a, r) = (appender.clone(), job("first"));
        async move { a.append(r).await }
    });
    eventually(20, || async {
        let (jobs, bytes) = appender.queued();
        (jobs == 0 && bytes > 0).then_some(())
    })
    .await;
    let keys = ["good-1", "good-2", "bad\u{0}key", "good-3", "good-4"];
    let rest: Vec<_> = keys
        .iter()
        .map(|k| {
            let (a, r) = (appender.clone(), job(k));
            tokio::spawn(async move { a.append(r).await })
        })
        .collect();
    eventually(20, || async {
        (appender.queued().0 == keys.len()).then_some(())
    })
    .await;
    blocker.release().await;
    assert_eq!(
        first.await.expect("join").expect("first"),
        AppendOutcome::Committed
    );
    for (k, h) in keys.iter().zip(rest) {
        let r = h.await.expect("join");
        if k.contains('\u{0}') && b == Backend::Postgres {
            assert!(matches!(r, Err(AppendError::Rejected(_))), "{k:?}: {r:?}");
        } else {
            assert_eq!(
                r.expect("a good job commits"),
                AppendOutcome::Committed,
                "{k:?}"
            );
        }
    }
    let stored = if b == Backend::Postgres { 5 } else { 6 };
    assert_eq!(app.outbox_count(None).await, stored);
    appender.close().await;
    app.stop().await;
}

both!(a_panicking_writer_answers_and_does_not_hold_up_shutdown);
async fn a_panicking_writer_answers_and_does_not_hold_up_shutdown(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.gateway.group_commit.inject_writer_panics = 1;
        c.gateway.group_commit.writers = 1;
    })
    .await;
    let alice = app.token("alice");
    let (s, e) = app
        .post_json("/api/v1/events/message", &alice, &message("first"))
        .await;
    assert_eq!((s, e["error"].as_str()), (500, Some("internal")), "{e}");
    let (s, e) = app
        .post_json("/api/v1/events/message", &alice, &message("second"))
        .await;
    assert_eq!(s, 202, "the writer survives its panic: {e}");
    tokio::time::timeout(Duration::from_secs(60), app.stop())
        .await
        .expect("shutdown completes after a writer panicked");
}

both!(a_slow_request_is_cut_but_streams_are_not);
async fn a_slow_request_is_cut_but_streams_are_not(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.http.request_timeout_secs = 1;
        c.realtime.heartbeat_secs = 1;
        c.gateway.group_commit.store_timeout_ms = 60_000;
    })
    .await;
    let alice = app.token("alice");
    // A stream outlives the request timeout: three heartbeats arrive, a second apart.
    let mut stream = app
        .http
        .get(app.url("/api/v1/notifications/stream"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    let mut text = String::new();
    while text.matches("heartbeat").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream keeps going")
            .expect("the stream is not cut")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // An ingest request that cannot finish (the store is blocked) is cut, with JSON.
    let blocker = Blocker::hold(&app).await;
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .bearer_auth(&alice)
        .json(&message("slow"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"], "timeout", "{e}");
    blocker.release().await;
    drop(stream);
    app.stop().await;
}

/// Readiness says the store is down (at once), and ingest fails with 503 within seconds, not
/// after the pool's 30 s acquire timeout or SQLite's busy timeout.
async fn assert_store_lost(app: &TestApp, who: &str) {
    let r = app
        .http
        .get(app.url("/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{who}: /readyz must answer while the store is lost: {e}"));
    assert_eq!(r.status().as_u16(), 503, "{who}: /readyz");
    let v: Value = r.json().await.expect("json");
    assert!(
        v["checks"]["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("down")),
        "{who}: {v}"
    );
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .bearer_auth(app.token("alice"))
        .json(&message("while the store is lost"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{who}: ingest must fail fast while the store is lost: {e}"));
    assert_eq!(r.status().as_u16(), 503, "{who}: ingest");
    assert!(r.headers().get("retry-after").is_some(), "{who}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "unavailable", "{who}: {v}");
}

/// Once the store is back, readiness and ingest recover on their own.
async fn assert_store_back(app: &TestApp, who: &str) {
    eventually(60, || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let alice = app.token("alice");
    eventually(60, || async {
        let (s, _) = app
            .post_json("/api/v1/events/message", &alice, &message(who))
            .await;
        (s == 202).then_some(())
    })
    .await;
}

/// A TCP proxy in front of PostgreSQL that can be cut (connections dropped, the port refusing
/// new ones: the server is "gone") and restored on the same port.
struct Proxy {
    port: u16,
    target: std::net::SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let p = Proxy {
            port,
            target,
            cut: tokio_util::sync::CancellationToken::new(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (cut, target) = (self.cut.clone(), self.target);
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = cut.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                };
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }

    fn cut(&self) {
        self.cut.cancel();
    }

    async fn restore(&mut self) {
        self.cut = tokio_util::sync::CancellationToken::new();
        let listener = eventually(10, || async {
            tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .ok()
        })
        .await;
        self.serve(listener);
    }
}

both!(a_lost_store_is_reported_and_ingest_fails_fast);
async fn a_lost_store_is_reported_and_ingest_fails_fast(b: Backend) {
    match b {
        Backend::Sqlite => sqlite_store_lost().await,
        Backend::Postgres => postgres_store_lost().await,
    }
}

/// SQLite: another process holds the database's write lock.
async fn sqlite_store_lost() {
    let app = TestApp::start(Backend::Sqlite).await;
    assert_store_back(&app, "before").await;
    let blocker = Blocker::hold(&app).await;
    assert_store_lost(&app, "sqlite locked by another process").await;
    blocker.release().await;
    assert_store_back(&app, "sqlite unlocked").await;
    app.stop().await;
}

/// PostgreSQL: the server goes away (connections dropped, the port refuses new ones); then
/// the database refuses connections (`ALLOW_CONNECTIONS false` + `pg_terminate_backend`).
async fn postgres_store_lost() {
    use sqlx::Connection;
    let store = TestStore::new(Backend::Postgres).await;
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let mut proxy = Proxy::start(pg).await;
    let mut cfg = test_config(&store);
    let direct = store.url.clone();
    let db = direct.rsplit('/').next().expect("db name").to_string();
    cfg.store.url = substrate::config::Secret::new(direct.replacen(
        "127.0.0.1:5432",
        &format!("127.0.0.1:{}", proxy.port),
        1,
    ));
    let app = TestApp::start_on(store, cfg, substrate::roles::ALL.to_vec()).await;
    assert_store_back(&app, "before").await;

    proxy.cut();
    assert_store_lost(&app, "postgres gone").await;
    proxy.restore().await;
    assert_store_back(&app, "postgres back").await;

    let mut admin = sqlx::PgConnection::connect(&pg::admin_url())
        .await
        .expect("admin");
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .expect("alter");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db)
    .execute(&mut admin)
    .await
    .expect("terminate");
    assert_store_lost(&app, "postgres refusing connections").await;
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("alter");
    assert_store_back(&app, "postgres accepting again").await;
    app.stop().await;
}

/// `substrate serve` and `substrate migrate` against a closed port: they give up within
/// seconds, naming the address, the cause and where the URL comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_is_named_at_start_up() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    for cmd in ["serve", "migrate"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_substrate"))
            .arg(cmd)
            .current_dir(dir.path())
            .env("SUBSTRATE_STORE__URL", &url)
            .env("SUBSTRATE_HTTP__LISTEN", "127.0.0.1:0")
            .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn substrate");
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .unwrap_or_else(|_| {
                panic!("`substrate {cmd}` still waiting after 20 s for an unreachable store")
            })
            .expect("wait");
        assert!(!out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in [
            format!("127.0.0.1:{port}"),
            "connection refused".to_string(),
            "SUBSTRATE_STORE__URL".to_string(),
        ] {
            assert!(
                err.contains(&want),
                "`substrate {cmd}`: {want:?} not in {err}"
            );
        }
    }
}
