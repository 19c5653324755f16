//! The event log and consumer runtime, on both columns (SQLite + embedded log, PostgreSQL +
//! Kafka): the notifications
//! projection, poison events to the DLQ and redrive, replay that rebuilds an identical
//! table, and no duplicate effects across a crash of the consumer process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use substrate::consumers::{Emitter, Envelope, Handler, HandlerError, dlq, runtime};
use substrate::projections::notifications::{self, NotificationsProjection};
use substrate::roles::Role;
use substrate::store::Tx;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn direct(text: &str, to: &str) -> Value {
    json!({ "message": text, "timestamp": "2026-01-01T00:00:00Z", "visibility": "direct", "recipient_id": to })
}

async fn login(app: &TestApp, key: &str, user: &str) {
    let body = json!({ "user_id": user, "email": format!("{user}@example.com"), "login_time": "2026-01-01T10:00:00Z" });
    let r = app
        .http
        .post(app.url("/api/v1/events/login"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

async fn rows(app: &TestApp) -> Vec<notifications::NotificationRow> {
    notifications::all(&app.ctx.store).await.unwrap()
}

async fn wait_rows(app: &TestApp, n: usize) -> Vec<notifications::NotificationRow> {
    eventually(20, || async {
        let r = rows(app).await;
        (r.len() >= n).then_some(r)
    })
    .await
}

both!(notifications_projection_and_visibility);
async fn notifications_projection_and_visibility(b: Backend) {
    let app = TestApp::start(b).await;
    let svc = app.api_key("identity", &["identity:write"]).await;
    login(&app, &svc, "alice").await;
    let (a, bb) = (app.token("alice"), app.token("bob"));
    assert_eq!(
        app.post_json("/api/v1/events/message", &a, &message("hello all"))
            .await
            .0,
        202
    );
    assert_eq!(
        app.post_json(
            "/api/v1/events/message",
            &bb,
            &direct("psst carol", "carol")
        )
        .await
        .0,
        202
    );
    assert_eq!(
        app.post_json("/api/v1/events/message", &bb, &direct("hi alice", "alice"))
            .await
            .0,
        202
    );
    let mut all = wait_rows(&app, 4).await;
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    if app.store.kafka.is_some() {
        // Kafka keeps each key's order on a topic, not the order across topics and keys: put
        // the rows in posting order (the event ids are time-ordered UUIDv7s).
        all.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    }
    assert_eq!(all[0].event_type, "identity.login");
    assert_eq!(all[0].visibility, "private");
    assert_eq!(
        all[0].event_time,
        chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .timestamp_micros()
    );
    assert_eq!(all[1].event_type, "user.message");
    assert_eq!(all[1].payload["message"], "hello all");
    assert_eq!(
        (all[2].visibility.as_str(), all[2].recipient_id.as_deref()),
        ("direct", Some("carol"))
    );
    let kafka = app.store.kafka.is_some();
    let seen = |u: &'static str| {
        let store = app.ctx.store.clone();
        async move {
            let mut rows = notifications::visible_after(&store, u, 0, 100)
                .await
                .unwrap();
            if kafka {
                rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            }
            rows.into_iter()
                .map(|r| r.payload["message"].as_str().unwrap_or("login").to_string())
                .collect::<Vec<_>>()
        }
    };
    // Alice: her login, the broadcast, and the direct message to her — not bob→carol.
    assert_eq!(seen("alice").await, vec!["login", "hello all", "hi alice"]);
    assert_eq!(seen("carol").await, vec!["hello all", "psst carol"]);
    assert_eq!(
        seen("bob").await,
        vec!["hello all", "psst carol", "hi alice"]
    );
    assert_eq!(seen("dave").await, vec!["hello all"]);
    app.stop().await;
}

/// The notifications projection with a fault that can be switched on: it fails on the
/// message "poison" while `broken` is set.
struct Flaky {
    inner: NotificationsProjection,
    broken: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Flaky {
    fn group(&self) -> &str {
        self.inner.group()
    }
    fn topics(&self) -> Vec<String> {
        self.inner.topics()
    }
    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        if ev.str_field("message") == Some("poison") {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.broken.load(Ordering::SeqCst) {
                return Err(HandlerError::Retry("injected fault".into()));
            }
        }
        self.inner.handle(ev, tx, out).await
    }
}

both!(poison_goes_to_dlq_and_redrive_applies_it_once);
async fn poison_goes_to_dlq_and_redrive_applies_it_once(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |c| {
        c.consumers.max_retries = 2;
        c.consumers.backoff_initial_ms = 5;
    })
    .await;
    let broken = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(Flaky {
        inner: NotificationsProjection::new(app.ctx.clone()),
        broken: broken.clone(),
        calls: calls.clone(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(runtime::run_handlers(
        app.ctx.clone(),
        vec![flaky.clone()],
        stop.clone(),
    ));
    let t = app.token("alice");
    for m in ["before", "poison", "after-1", "after-2"] {
        let mut body = message(m);
        body["timestamp"] = json!(1_700_000_000_000i64);
        assert_eq!(
            app.post_json("/api/v1/events/message", &t, &body).await.0,
            202
        );
    }
    // The events after the poison one are projected; the poison one is dead-lettered.
    let got = wait_rows(&app, 3).await;
    let texts: Vec<&str> = got
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["before", "after-1", "after-2"]);
    let dead = eventually(20, || async {
        let d = dlq::list(&app.ctx.store, &dlq::Filter::default())
            .await
            .unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        (d.group.as_str(), d.topic.as_str()),
        ("notifications", "public.user.message.events")
    );
    if app.store.kafka.is_none() {
        assert_eq!(
            d.partition, 0,
            "the embedded log has one partition per topic"
        );
    }
    assert_eq!(d.attempts, 3, "first try + 2 retries");
    assert_eq!(d.error, "injected fault");
    assert_eq!(d.headers["ce_type"], "user.message.events");
    assert!(d.headers.contains_key("traceparent"));
    // …and on the dead-letter topic, with error headers.
    let dlq_row: (String, String) = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as("SELECT event_key, headers FROM outbox WHERE topic = $1").bind("public.user.message.events.dlq").fetch_one(p).await.unwrap()
    });
    let h: Value = serde_json::from_str(&dlq_row.1).unwrap();
    assert_eq!(dlq_row.0, "alice");
    assert_eq!(h["dlq_reason"], "injected fault");
    assert_eq!(h["dlq_attempts"], "3");
    assert_eq!(h["dlq_original_topic"], "public.user.message.events");
    assert_eq!(h["dlq_original_offset"], d.offset.to_string());
    assert_eq!(h["dlq_original_partition"], d.partition.to_string());
    assert_eq!(h["dlq_consumer_group"], "notifications");
    // The metrics show it.
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("substrate_dlq_depth{group=\"notifications\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("substrate_consumer_events_dead_lettered_total{group=\"notifications\"} 1")
    );

    // Fix the fault and redrive through the admin API: applied exactly once.
    broken.store(false, Ordering::SeqCst);
    let (s, r) = app
        .post_json(
            "/api/v1/admin/dlq/redrive",
            &app.admin_token(),
            &json!({"topic": "public.user.message.events"}),
        )
        .await;
    assert_eq!(
        (s, r["redriven"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{r}"
    );
    let got = wait_rows(&app, 4).await;
    assert_eq!(got.last().unwrap().payload["message"], "poison");
    assert_eq!(
        got.last().unwrap().event_id,
        d.event_id,
        "same event id and payload"
    );
    // A second redrive finds nothing open; the row is not duplicated.
    let (_, r) = app
        .post_json(
            "/api/v1/admin/dlq/redrive",
            &app.admin_token(),
            &json!({"topic": "public.user.message.events"}),
        )
        .await;
    assert_eq!(r["redriven"].as_array().map(Vec::len), Some(0));
    // Redrive again by id of an already redriven entry through the store: still applied once.
    dlq::redrive(
        &app.ctx.store,
        &app.ctx.outbox,
        &dlq::Filter {
            ids: vec![d.id],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rows(&app).await.len(), 4);
    stop.cancel();
    task.await.unwrap().unwrap();
    app.stop().await;
}

both!(undecodable_bytes_go_straight_to_the_dlq);
async fn undecodable_bytes_go_straight_to_the_dlq(b: Backend) {
    let app = TestApp::start(b).await;
    // A record a foreign producer wrote without the Confluent framing.
    let junk = substrate::outbox::NewEvent {
        event_id: "junk-1".into(),
        topic: "public.user.message.events".into(),
        key: "mallory".into(),
        event_type: "user.message.events".into(),
        schema_id: 0,
        payload: b"not avro at all".to_vec(),
        headers: Default::default(),
        created_at: substrate::store::now_micros(),
    };
    let mut tx = app.ctx.store.begin().await.unwrap();
    app.ctx.outbox.append(&mut tx, &[&junk]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        app.post_json(
            "/api/v1/events/message",
            &app.token("alice"),
            &message("fine")
        )
        .await
        .0,
        202
    );
    wait_rows(&app, 1).await;
    let dead = eventually(20, || async {
        let d = dlq::list(&app.ctx.store, &dlq::Filter::default())
            .await
            .unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0].attempts, 0);
    assert!(dead[0].error.contains("undecodable"), "{}", dead[0].error);
    app.stop().await;
}

both!(replay_rebuilds_an_identical_table);
async fn replay_rebuilds_an_identical_table(b: Backend) {
    let app = TestApp::start(b).await;
    let svc = app.api_key("identity", &["identity:write"]).await;
    for i in 0..30 {
        let user = format!("u{}", i % 4);
        if i % 5 == 0 {
            login(&app, &svc, &user).await;
        } else if i % 3 == 0 {
            assert_eq!(
                app.post_json(
                    "/api/v1/events/message",
                    &app.token(&user),
                    &direct(&format!("d{i}"), "u1")
                )
                .await
                .0,
                202
            );
        } else {
            assert_eq!(
                app.post_json(
                    "/api/v1/events/message",
                    &app.token(&user),
                    &message(&format!("m{i}"))
                )
                .await
                .0,
                202
            );
        }
    }
    let before = wait_rows(&app, 30).await;
    // Rebuild through the CLI, as an operator would.
    let out = tokio::process::Command::from(substrate_cmd(&app))
        .args([
            "replay",
            "--topic",
            "public.user.message.events",
            "--group",
            "notifications",
            "--from-beginning",
            "--rebuild",
            "--wait",
            "20",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("applied"), "{stdout}");
    let after = eventually(20, || async {
        let r = rows(&app).await;
        (r.len() == before.len()).then_some(r)
    })
    .await;
    if app.store.kafka.is_none() {
        assert!(before == after, "the rebuilt table differs");
    } else {
        // Kafka interleaves partitions and topics differently on each read, so the surrogate
        // ids may be handed out in another order; every row is the same, and each user's rows
        // keep their order.
        assert_eq!(
            by_event(&before),
            by_event(&after),
            "the rebuilt table differs"
        );
        assert_eq!(per_user(&before), per_user(&after));
    }
    app.stop().await;
}

/// Rows keyed by event id, without the surrogate id.
fn by_event(rows: &[notifications::NotificationRow]) -> Vec<notifications::NotificationRow> {
    let mut v: Vec<_> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            r.id = 0;
            r
        })
        .collect();
    v.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    v
}

/// Each user's event ids per event type (a key's order on one topic), in id order.
fn per_user(
    rows: &[notifications::NotificationRow],
) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut m: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for r in rows {
        m.entry((r.user_id.clone(), r.event_type.clone()))
            .or_default()
            .push(r.event_id.clone());
    }
    m
}

/// SIGKILL the consumer process in the middle of a drain and restart it: every event is
/// projected exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crash_has_no_duplicate_effects_sqlite() {
    consumer_crash(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crash_has_no_duplicate_effects_postgres() {
    consumer_crash(Backend::Postgres).await
}

async fn consumer_crash(b: Backend) {
    // The relay (Kafka) runs here; the consumers run in the process that is killed.
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |c| {
        c.gateway.batch_max_events = 1000
    })
    .await;
    let t = app.token("alice");
    let n = 3000;
    for chunk in 0..(n / 500) {
        let batch: Vec<Value> = (0..500)
            .map(|i| message(&format!("m{}", chunk * 500 + i)))
            .collect();
        assert_eq!(
            app.post_json("/api/v1/events/message/batch", &t, &json!(batch))
                .await
                .0,
            202
        );
    }
    let spawn = || {
        substrate_cmd(&app)
            .args(["serve", "--roles", "consumers"])
            .env("SUBSTRATE_CONSUMERS__BATCH_SIZE", "50")
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    // Kill it once it is part-way through.
    eventually(30, || async {
        let c = rows(&app).await.len();
        (c > 200).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mid = rows(&app).await.len();
    assert!(mid < n, "killed before the end ({mid})");
    let mut child = spawn();
    let all = eventually(60, || async {
        let r = rows(&app).await;
        (r.len() >= n).then_some(r)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(all.len(), n);
    let mut texts: Vec<String> = all
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap().to_string())
        .collect();
    // Order per key: one user, so the projection follows the accepted order.
    let expected: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    texts.dedup();
    assert_eq!(texts.len(), n);
    app.stop().await;
}
