//! Ingest: durability at 202, the allowlist, schema errors, idempotency, batches, body
//! limits, rate limits, webhooks and routes.yaml hot reload.

use serde_json::{Value, json};

use crate::support::*;

both!(accepted_event_is_durable_when_202_arrives);
async fn accepted_event_is_durable_when_202_arrives(b: Backend) {
    let app = TestApp::start(b).await;
    let (status, body) = app
        .post_json(
            "/api/v1/events/message",
            &app.token("alice"),
            &message("hello"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["topic"], "public.user.message.events");
    let id = body["event_id"].as_str().expect("event_id");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        7
    );
    // Read with a connection of our own: the row is committed before the answer.
    assert_eq!(app.outbox_count(Some(id)).await, 1);
    app.stop().await;
}

both!(unknown_route_404_forbidden_route_403);
async fn unknown_route_404_forbidden_route_403(b: Backend) {
    let app = TestApp::start(b).await;
    let t = app.token("alice");
    let (s, body) = app
        .post_json("/api/v1/events/nope", &t, &message("x"))
        .await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_route")));
    // `login` is for services only.
    let login = json!({"user_id":"alice","email":"a@x","login_time":1});
    let (s, body) = app.post_json("/api/v1/events/login", &t, &login).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // An API key without the route's scope is refused; with it, accepted.
    let weak = app.api_key("weak", &["events:write"]).await;
    let r = app
        .http
        .post(app.url("/api/v1/events/login"))
        .header("x-api-key", &weak)
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let strong = app.api_key("strong", &["identity:write"]).await;
    let r = app
        .http
        .post(app.url("/api/v1/events/login"))
        .header("authorization", format!("ApiKey {strong}"))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(app.outbox_count(None).await, 1);
    app.stop().await;
}

both!(schema_errors_name_the_field_and_store_nothing);
async fn schema_errors_name_the_field_and_store_nothing(b: Backend) {
    let app = TestApp::start(b).await;
    let t = app.token("alice");
    let mut m = message("x");
    m["visibility"] = json!("everyone");
    let (s, body) = app.post_json("/api/v1/events/message", &t, &m).await;
    assert_eq!(s, 400);
    assert_eq!(
        body,
        json!({"error":"invalid_event","field":"visibility","reason":"expected one of broadcast,direct"})
    );
    let (s, body) = app
        .post_json("/api/v1/events/message", &t, &json!({"timestamp": 1}))
        .await;
    assert_eq!(
        (s, body["field"].as_str(), body["reason"].as_str()),
        (400, Some("message"), Some("required field missing"))
    );
    let mut m = message("x");
    m["colour"] = json!("red");
    let (s, body) = app.post_json("/api/v1/events/message", &t, &m).await;
    assert_eq!(
        (s, body["field"].as_str(), body["reason"].as_str()),
        (400, Some("colour"), Some("unknown field"))
    );
    let mut m = message("x");
    m["timestamp"] = json!("yesterday");
    let (s, body) = app.post_json("/api/v1/events/message", &t, &m).await;
    assert_eq!((s, body["field"].as_str()), (400, Some("timestamp")));
    // Malformed JSON is a 400 of its own kind.
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .bearer_auth(&t)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "malformed_json");
    assert_eq!(app.outbox_count(None).await, 0);
    app.stop().await;
}

both!(users_act_only_on_their_own_data);
async fn users_act_only_on_their_own_data(b: Backend) {
    let app = TestApp::start(b).await;
    let mut m = message("spoof");
    m["user_id"] = json!("bob");
    let (s, body) = app
        .post_json("/api/v1/events/message", &app.token("alice"), &m)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // Missing user_id is filled in from the token, and the key is the caller.
    let (s, body) = app
        .post_json(
            "/api/v1/events/message",
            &app.token("alice"),
            &message("mine"),
        )
        .await;
    assert_eq!(s, 202);
    let id = body["event_id"].as_str().unwrap();
    let row = substrate::on_read!(app.ctx.store, p => {
        let r: (String, Vec<u8>) = sqlx::query_as("SELECT event_key, payload FROM outbox WHERE event_id = $1").bind(id).fetch_one(p).await.unwrap();
        r
    });
    assert_eq!(row.0, "alice");
    let decoded = app.ctx.schemas.decode_json(&row.1).await.unwrap();
    assert_eq!(decoded["user_id"], "alice");
    assert_eq!(decoded["visibility"], "broadcast");
    app.stop().await;
}

both!(idempotency_key_replays_and_conflicts);
async fn idempotency_key_replays_and_conflicts(b: Backend) {
    let app = TestApp::start(b).await;
    let t = app.token("alice");
    let send = |body: Value| {
        let app = &app;
        let t = t.clone();
        async move {
            let r = app
                .http
                .post(app.url("/api/v1/events/message"))
                .bearer_auth(t)
                .header("idempotency-key", "k-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, b1) = send(message("once")).await;
    let (s2, b2) = send(message("once")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1["event_id"], b2["event_id"]);
    assert_eq!(app.outbox_count(None).await, 1);
    let (s3, b3) = send(message("different")).await;
    assert_eq!(
        (s3, b3["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(app.outbox_count(None).await, 1);
    // Concurrent retries with one key still store one event.
    let futs: Vec<_> = (0..8)
        .map(|_| {
            let app = &app;
            let t = t.clone();
            async move {
                app.http
                    .post(app.url("/api/v1/events/message"))
                    .bearer_auth(t)
                    .header("idempotency-key", "k-2")
                    .json(&message("race"))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        })
        .collect();
    let all = futures::future::join_all(futs).await;
    assert!(all.iter().all(|v| v["event_id"] == all[0]["event_id"]));
    assert_eq!(app.outbox_count(None).await, 2);
    app.stop().await;
}

both!(batch_is_all_or_nothing);
async fn batch_is_all_or_nothing(b: Backend) {
    let app = TestApp::start_with(b, |c| c.gateway.batch_max_events = 50).await;
    let t = app.token("alice");
    let good: Vec<Value> = (0..20).map(|i| message(&format!("m{i}"))).collect();
    let (s, body) = app
        .post_json("/api/v1/events/message/batch", &t, &json!(good))
        .await;
    assert_eq!((s, body["count"].as_u64()), (202, Some(20)), "{body}");
    assert_eq!(body["event_ids"].as_array().unwrap().len(), 20);
    let mut bad = good.clone();
    bad[7]["visibility"] = json!("nobody");
    let (s, body) = app
        .post_json("/api/v1/events/message/batch", &t, &json!({"events": bad}))
        .await;
    assert_eq!(
        (s, body["index"].as_u64(), body["field"].as_str()),
        (400, Some(7), Some("visibility"))
    );
    let many: Vec<Value> = (0..51).map(|i| message(&format!("m{i}"))).collect();
    let (s, body) = app
        .post_json("/api/v1/events/message/batch", &t, &json!(many))
        .await;
    assert_eq!((s, body["error"].as_str()), (413, Some("batch_too_large")));
    assert_eq!(app.outbox_count(None).await, 20);
    app.stop().await;
}

both!(body_limit_413_and_rate_limit_429);
async fn body_limit_413_and_rate_limit_429(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.gateway.body_limit_bytes = 1024;
        c.gateway.rate_limit.user_per_sec = 1.0;
        c.gateway.rate_limit.burst_factor = 3.0;
    })
    .await;
    let big = message(&"x".repeat(2000));
    let (s, body) = app
        .post_json("/api/v1/events/message", &app.token("big"), &big)
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let t = app.token("chatty");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let r = app
            .http
            .post(app.url("/api/v1/events/message"))
            .bearer_auth(&t)
            .json(&message("x"))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(statuses, vec![202, 202, 202, 429, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another principal has its own bucket.
    let (s, _) = app
        .post_json("/api/v1/events/message", &app.token("quiet"), &message("x"))
        .await;
    assert_eq!(s, 202);
    app.stop().await;
}

fn signed(msg_id: &str, ts: i64, body: &str, secret: &[u8]) -> Vec<(&'static str, String)> {
    let sig = substrate::gateway::webhooks::sign(secret, msg_id, ts, body.as_bytes());
    vec![
        ("webhook-id", msg_id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

async fn post_hook(
    app: &TestApp,
    headers: Vec<(&'static str, String)>,
    body: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url("/webhooks/login"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

both!(webhooks_verify_signature_time_and_replay);
async fn webhooks_verify_signature_time_and_replay(b: Backend) {
    let app = TestApp::start(b).await;
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"user_id":"u-1","email":"u1@example.com","login_time":"2026-01-01T00:00:00Z"}"#;
    let (s, ok) = post_hook(&app, signed("msg-1", now, body, WEBHOOK_SECRET), body).await;
    assert_eq!(s, 202, "{ok}");
    let (s, e) = post_hook(&app, signed("msg-1", now, body, WEBHOOK_SECRET), body).await;
    assert_eq!((s, e["error"].as_str()), (409, Some("replayed_message")));
    let (s, e) = post_hook(
        &app,
        signed("msg-2", now, body, b"wrong-secret-wrong-secret"),
        body,
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_signature")));
    // A signature over another id does not carry over (the id is signed).
    let mut h = signed("msg-3", now, body, WEBHOOK_SECRET);
    h[0].1 = "msg-4".into();
    assert_eq!(post_hook(&app, h, body).await.0, 401);
    let (s, e) = post_hook(
        &app,
        signed("msg-5", now - 3600, body, WEBHOOK_SECRET),
        body,
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (401, Some("timestamp_out_of_tolerance"))
    );
    let (s, e) = post_hook(&app, vec![], body).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("missing_signature")));
    let r = app
        .http
        .post(app.url("/webhooks/unknown"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(app.outbox_count(None).await, 1);
    assert_eq!(app.outbox_count(ok["event_id"].as_str()).await, 1);
    app.stop().await;
}

both!(routes_reload_and_broken_file_keeps_last_good);
async fn routes_reload_and_broken_file_keeps_last_good(b: Backend) {
    let app = TestApp::start(b).await;
    let t = app.token("alice");
    let path = app.ctx.config.gateway.routes_file.clone();
    assert_eq!(
        app.post_json("/api/v1/events/chat", &t, &message("x"))
            .await
            .0,
        404
    );
    let text = ROUTES.replacen(
        "routes:\n",
        "routes:\n  chat:\n    topic: public.user.message.events\n    allow: [user]\n",
        1,
    );
    // The served OpenAPI document is cached; it must follow the reload.
    let documents_chat = || async {
        let (_, doc) = app.get_json("/openapi.json", None).await;
        doc["paths"].get("/api/v1/events/chat").is_some()
    };
    assert!(!documents_chat().await);
    write_file(&path, &text);
    eventually(10, || async {
        (app.post_json("/api/v1/events/chat", &t, &message("x"))
            .await
            .0
            == 202)
            .then_some(())
    })
    .await;
    assert!(
        documents_chat().await,
        "the document lists the reloaded route"
    );
    // A broken file is rejected: the last good routes stay, and the reason is reported.
    write_file(&path, "routes: [this is: not valid");
    let admin = app.admin_token();
    let reason = eventually(10, || async {
        let (_, v) = app.get_json("/api/v1/admin/routes", Some(&admin)).await;
        v["last_error"].as_str().map(str::to_string)
    })
    .await;
    assert!(!reason.is_empty());
    assert_eq!(
        app.post_json("/api/v1/events/chat", &t, &message("still"))
            .await
            .0,
        202
    );
    // A route pointing at a topic without a schema is refused the same way.
    write_file(&path, "routes:\n  bad:\n    topic: public.no.such.topic\n");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.post_json("/api/v1/events/chat", &t, &message("still"))
            .await
            .0,
        202
    );
    app.stop().await;
}
