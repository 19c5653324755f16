//! Consumer robustness, on both columns: a dead letter is written once even when the offset
//! commit after it fails; a schema registry that answers 5xx blocks decoding visibly (metrics,
//! /status) and the group goes on once it recovers, each event processed once; and embedded
//! retention never deletes records a known group has not read yet; a batch whose set-based
//! apply fails is applied again one event at a time, the failing event dead-lettered once; an
//! undecodable record inside a batch is dead-lettered once per group, and a replay of the
//! batch changes no read model.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use substrate::consumers::{BatchApply, Emitter, Envelope, Handler, HandlerError, runtime};
use substrate::log::{LogConsumer, LogError, LogRecord, Position, SeekTo};
use substrate::projections::notifications;
use substrate::roles::Role;
use substrate::store::Tx;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TOPIC: &str = "public.user.message.events";

/// Rejects the event whose message is `poison`; counts what it sees.
struct RejectsPoison {
    seen: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for RejectsPoison {
    fn group(&self) -> &str {
        "commit-test"
    }
    fn topics(&self) -> Vec<String> {
        vec![TOPIC.into()]
    }
    async fn handle(
        &self,
        ev: &Envelope,
        _: &mut Tx,
        _: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if ev.payload["message"] == "poison" {
            return Err(HandlerError::Reject("poison".into()));
        }
        Ok(())
    }
}

/// A consumer whose offsets are committed after the effects (as with Kafka) and whose first
/// `fail` commits fail. (Over the embedded log a failed commit also means the records are
/// read again, as after a Kafka rebalance.)
struct FailingCommits {
    inner: Box<dyn LogConsumer>,
    fail: Arc<AtomicUsize>,
}

#[async_trait]
impl LogConsumer for FailingCommits {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        self.inner.poll(max, wait).await
    }
    fn offsets_in_store(&self) -> bool {
        false
    }
    async fn commit_in(&mut self, _: &mut Tx, _: &[Position]) -> Result<(), LogError> {
        Ok(())
    }
    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(LogError::Broker("injected commit failure".into()));
        }
        self.inner.commit(positions).await
    }
    async fn resolve(&mut self, topic: &str, to: SeekTo) -> Result<Vec<Position>, LogError> {
        self.inner.resolve(topic, to).await
    }
    async fn seek(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.inner.seek(positions).await
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
    async fn ensure_active(&mut self) -> Result<bool, LogError> {
        self.inner.ensure_active().await
    }
    fn rejoins(&self) -> u64 {
        self.inner.rejoins()
    }
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar(sql).bind(bind).fetch_one(p).await.unwrap()
    })
}

both!(a_failed_offset_commit_does_not_write_the_dead_letter_twice);
async fn a_failed_offset_commit_does_not_write_the_dead_letter_twice(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |_| {}).await;
    let t = app.token("alice");
    let mut ids = HashMap::new();
    for m in ["ok-1", "poison", "ok-2"] {
        let (s, body) = app
            .post_json("/api/v1/events/message", &t, &message(m))
            .await;
        assert_eq!(s, 202);
        ids.insert(m, body["event_id"].as_str().unwrap().to_string());
    }
    wait_relayed(&app).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(RejectsPoison { seen: seen.clone() });
    let inner = app
        .ctx
        .log
        .subscribe(handler.group(), &handler.topics())
        .await
        .unwrap();
    let fail = Arc::new(AtomicUsize::new(3));
    let consumer = Box::new(FailingCommits {
        inner,
        fail: fail.clone(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(runtime::run_group_on(
        app.ctx.clone(),
        handler,
        consumer,
        stop.clone(),
    ));
    // Both good events are applied and every injected failure was hit.
    eventually(60, || async {
        let applied = count(
            &app,
            "SELECT COUNT(*) FROM inbox WHERE group_name = $1",
            "commit-test",
        )
        .await;
        (applied == 2 && fail.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
    // Let a redelivery (embedded log) come round once more, then count.
    eventually(30, || async {
        let n = count(
            &app,
            "SELECT COUNT(*) FROM dead_letters WHERE group_name = $1",
            "commit-test",
        )
        .await;
        (n >= 1).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let letters = count(
        &app,
        "SELECT COUNT(*) FROM dead_letters WHERE event_id = $1",
        &ids["poison"],
    )
    .await;
    assert_eq!(letters, 1, "one dead letter per group and event");
    let on_dlq_topic = count(
        &app,
        "SELECT COUNT(*) FROM outbox WHERE topic = 'public.user.message.events.dlq' AND event_id = $1",
        &ids["poison"],
    )
    .await;
    assert_eq!(on_dlq_topic, 1, "one record on the dead-letter topic");
    assert!(seen.load(Ordering::SeqCst) >= 3);
    app.stop().await;
}

/// The notifications projection, set-based, except that a batch holding the message
/// `poison` fails as a whole and the event itself is rejected; counts both kinds of call.
struct PoisonInBatch {
    inner: notifications::NotificationsProjection,
    batches: Arc<AtomicUsize>,
    singles: Arc<AtomicUsize>,
}

fn is_poison(ev: &Envelope) -> bool {
    ev.payload["message"] == "poison"
}

#[async_trait]
impl Handler for PoisonInBatch {
    fn group(&self) -> &str {
        "batch-test"
    }
    fn topics(&self) -> Vec<String> {
        vec![TOPIC.into()]
    }
    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        self.singles.fetch_add(1, Ordering::SeqCst);
        if is_poison(ev) {
            return Err(HandlerError::Reject("poison".into()));
        }
        self.inner.handle(ev, tx, out).await
    }
    fn batch(&self) -> Option<&dyn BatchApply> {
        Some(self)
    }
}

#[async_trait]
impl BatchApply for PoisonInBatch {
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        if evs.iter().any(|e| is_poison(e)) {
            return Err(HandlerError::Retry("poison in the batch".into()));
        }
        self.inner.apply_batch(evs, tx).await
    }
}

both!(a_failed_batch_apply_falls_back_to_one_event_at_a_time);
async fn a_failed_batch_apply_falls_back_to_one_event_at_a_time(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |_| {}).await;
    let t = app.token("alice");
    let mut ids = HashMap::new();
    for m in ["ok-1", "poison", "ok-2"] {
        let (s, body) = app
            .post_json("/api/v1/events/message", &t, &message(m))
            .await;
        assert_eq!(s, 202);
        ids.insert(m, body["event_id"].as_str().unwrap().to_string());
    }
    wait_relayed(&app).await;
    let (batches, singles) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = Arc::new(PoisonInBatch {
        inner: notifications::NotificationsProjection::new(app.ctx.clone()),
        batches: batches.clone(),
        singles: singles.clone(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(runtime::run_group(app.ctx.clone(), handler, stop.clone()));
    let inbox = "SELECT COUNT(*) FROM inbox WHERE group_name = $1";
    let letters = "SELECT COUNT(*) FROM dead_letters WHERE group_name = $1";
    eventually(60, || async {
        let applied = count(&app, inbox, "batch-test").await;
        let dead = count(&app, letters, "batch-test").await;
        (applied == 2 && dead == 1).then_some(())
    })
    .await;
    let rows = "SELECT COUNT(*) FROM notifications WHERE event_id = $1";
    assert_eq!(count(&app, rows, &ids["ok-1"]).await, 1);
    assert_eq!(count(&app, rows, &ids["ok-2"]).await, 1);
    assert_eq!(count(&app, rows, &ids["poison"]).await, 0);
    let dead = "SELECT COUNT(*) FROM dead_letters WHERE event_id = $1";
    assert_eq!(count(&app, dead, &ids["poison"]).await, 1);
    assert!(
        batches.load(Ordering::SeqCst) >= 1,
        "the set-based form was tried"
    );
    assert!(
        singles.load(Ordering::SeqCst) >= 2,
        "then one event at a time"
    );
    // Past the poison, batches are set-based again: a clean event takes no single call.
    let before = singles.load(Ordering::SeqCst);
    let (s, body) = app
        .post_json("/api/v1/events/message", &t, &message("ok-3"))
        .await;
    assert_eq!(s, 202);
    let ok3 = body["event_id"].as_str().unwrap().to_string();
    eventually(60, || async {
        (count(&app, rows, &ok3).await == 1).then_some(())
    })
    .await;
    assert_eq!(singles.load(Ordering::SeqCst), before);
    stop.cancel();
    task.await.unwrap().unwrap();
    app.stop().await;
}

/// A Confluent-compatible schema registry of the test's own: it keeps what is registered in
/// memory and answers 503 while `down` is set.
#[derive(Clone, Default)]
struct FakeRegistry {
    schemas: Arc<parking_lot::Mutex<Vec<(String, String)>>>,
    down: Arc<AtomicBool>,
    by_id_calls: Arc<AtomicUsize>,
}

impl FakeRegistry {
    async fn serve(self) -> String {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        async fn register(
            State(r): State<FakeRegistry>,
            Path(subject): Path<String>,
            body: String,
        ) -> (StatusCode, axum::Json<Value>) {
            let schema = serde_json::from_str::<Value>(&body).unwrap()["schema"]
                .as_str()
                .unwrap()
                .to_string();
            let mut all = r.schemas.lock();
            let id = match all.iter().position(|(s, x)| *s == subject && *x == schema) {
                Some(i) => i + 1,
                None => {
                    all.push((subject, schema));
                    all.len()
                }
            };
            (StatusCode::OK, axum::Json(json!({ "id": id })))
        }
        async fn latest(
            State(r): State<FakeRegistry>,
            Path((subject, _v)): Path<(String, String)>,
        ) -> (StatusCode, axum::Json<Value>) {
            let all = r.schemas.lock();
            match all.iter().rposition(|(s, _)| *s == subject) {
                Some(i) => (
                    StatusCode::OK,
                    axum::Json(
                        json!({"subject": subject, "version": 1, "id": i + 1, "schema": all[i].1}),
                    ),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"error_code": 40401, "message": "no subject"})),
                ),
            }
        }
        async fn by_id(
            State(r): State<FakeRegistry>,
            Path(id): Path<usize>,
        ) -> (StatusCode, axum::Json<Value>) {
            r.by_id_calls.fetch_add(1, Ordering::SeqCst);
            if r.down.load(Ordering::SeqCst) {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error_code": 50301, "message": "down for maintenance"})),
                );
            }
            let all = r.schemas.lock();
            (
                StatusCode::OK,
                axum::Json(json!({ "schema": all[id - 1].1 })),
            )
        }
        let app = axum::Router::new()
            .route("/subjects/{s}/versions", post(register))
            .route("/subjects/{s}/versions/{v}", get(latest))
            .route("/schemas/ids/{id}", get(by_id))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

/// A component's state and reason, evaluated now (the status service's own evaluation).
pub async fn component(app: &TestApp, name: &str) -> (String, Option<String>) {
    let r = app.ctx.status.evaluate(&app.ctx).await;
    let c = r
        .components
        .iter()
        .find(|c| c.component.name() == name)
        .unwrap_or_else(|| panic!("no component {name}"));
    (c.state.as_str().to_string(), c.reason.map(str::to_string))
}

both!(a_registry_outage_blocks_decoding_visibly_and_then_recovers);
async fn a_registry_outage_blocks_decoding_visibly_and_then_recovers(b: Backend) {
    let registry = FakeRegistry::default();
    let url = registry.clone().serve().await;
    let app = TestApp::start_with(b, |c| {
        c.schemas.registry_url = Some(url.clone());
        c.consumers.backoff_initial_ms = 20;
        c.consumers.backoff_max_ms = 200;
    })
    .await;
    registry.down.store(true, Ordering::SeqCst);
    let t = app.token("alice");
    for m in ["one", "two"] {
        assert_eq!(
            app.post_json("/api/v1/events/message", &t, &message(m))
                .await
                .0,
            202
        );
    }
    // The groups cannot decode: they wait, and say so.
    let metric =
        "substrate_consumer_blocked{group=\"notifications\",reason=\"registry_unavailable\"} 1";
    eventually(60, || async {
        let m = app.metrics().await;
        (m.contains(metric) && registry.by_id_calls.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let (state, reason) = component(&app, "projections").await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("degraded", Some("registry_unavailable"))
    );
    assert!(notifications::all(&app.ctx.store).await.unwrap().is_empty());
    let dead: i64 = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(p).await.unwrap()
    });
    assert_eq!(dead, 0, "an unreachable registry is not the events' fault");
    // The registry is back: each event is processed once, and the state recovers.
    registry.down.store(false, Ordering::SeqCst);
    let rows = eventually(60, || async {
        let r = notifications::all(&app.ctx.store).await.unwrap();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let texts: Vec<&str> = rows
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"]);
    eventually(30, || async {
        let m = app.metrics().await;
        let unblocked = !m.contains("reason=\"registry_unavailable\"} 1");
        let (state, _) = component(&app, "projections").await;
        (unblocked && state == "operational").then_some(())
    })
    .await;
    assert_eq!(notifications::all(&app.ctx.store).await.unwrap().len(), 2);
    app.stop().await;
}

/// Ages every outbox row past the retention period.
async fn age_outbox(app: &TestApp) {
    let old = substrate::store::now_micros() - 200 * 3_600_000_000;
    substrate::on_write!(app.ctx.store, p => {
        sqlx::query("UPDATE outbox SET created_at = $1").bind(old).execute(p).await.unwrap();
    });
}

async fn texts(app: &TestApp) -> Vec<String> {
    notifications::all(&app.ctx.store)
        .await
        .unwrap()
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap().to_string())
        .collect()
}

both!(retention_keeps_what_a_stopped_group_has_not_read);
async fn retention_keeps_what_a_stopped_group_has_not_read(b: Backend) {
    // The embedded log on both stores.
    let store = TestStore::with_broker(b, None).await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg.clone(), substrate::roles::ALL.to_vec()).await;
    let t = app.token("alice");
    for m in ["read-1", "read-2"] {
        assert_eq!(
            app.post_json("/api/v1/events/message", &t, &message(m))
                .await
                .0,
            202
        );
    }
    eventually(30, || async {
        (texts(&app).await.len() == 2).then_some(())
    })
    .await;
    // Every group that reads the topic has moved past both records.
    eventually(30, || async {
        let behind: i64 = substrate::on_read!(app.ctx.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM consumer_offsets WHERE topic = $1 AND next_offset <= (SELECT MAX(id) FROM outbox WHERE topic = $1)")
                .bind(TOPIC)
                .fetch_one(p)
                .await
                .unwrap()
        });
        (behind == 0).then_some(())
    })
    .await;
    let store = app.stop_keep_store().await;
    // The consumers are stopped while more events arrive, and stay stopped past retention.
    let app = TestApp::start_on(store, cfg.clone(), vec![Role::Gateway]).await;
    for m in ["unread-1", "unread-2"] {
        assert_eq!(
            app.post_json("/api/v1/events/message", &t, &message(m))
                .await
                .0,
            202
        );
    }
    age_outbox(&app).await;
    substrate::relay::enforce_retention(&app.ctx).await.unwrap();
    let left: Vec<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT event_key || ':' || id FROM outbox WHERE topic = $1 ORDER BY id")
            .bind(TOPIC)
            .fetch_all(p)
            .await
            .unwrap()
    });
    assert_eq!(
        left.len(),
        2,
        "what every group read is gone, the rest is kept: {left:?}"
    );
    // It says so: the log is degraded, the gauge names the groups holding it back.
    let held = substrate::relay::retention::held(&app.ctx).await.unwrap();
    assert!(
        held.iter()
            .any(|h| h.group == "notifications" && h.rows == 2),
        "{held:?}"
    );
    let (state, reason) = component(&app, "log").await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("degraded", Some("retention_held"))
    );
    let m = app.metrics().await;
    assert!(
        m.contains("substrate_retention_held_rows{group=\"notifications\"} 2"),
        "{m}"
    );
    let store = app.stop_keep_store().await;
    // The consumers come back and read what was kept.
    let app = TestApp::start_on(store, cfg.clone(), substrate::roles::ALL.to_vec()).await;
    let got = eventually(30, || async {
        let t = texts(&app).await;
        (t.len() == 4).then_some(t)
    })
    .await;
    assert_eq!(got, ["read-1", "read-2", "unread-1", "unread-2"]);
    // Once read, retention may take them; a decommissioned group can be forgotten.
    eventually(30, || async {
        substrate::relay::retention::held(&app.ctx)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let forgot = substrate::relay::retention::forget_group(&app.ctx.store, "no-such-group")
        .await
        .unwrap();
    assert_eq!(forgot, 0);
    app.stop().await;
}

both!(forgetting_a_removed_group_lets_retention_go_on);
async fn forgetting_a_removed_group_lets_retention_go_on(b: Backend) {
    let store = TestStore::with_broker(b, None).await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway]).await;
    let t = app.token("alice");
    assert_eq!(
        app.post_json("/api/v1/events/message", &t, &message("x"))
            .await
            .0,
        202
    );
    // A group that read nothing and will never run again.
    substrate::on_write!(app.ctx.store, p => {
        sqlx::query("INSERT INTO consumer_offsets (group_name, topic, partition_no, next_offset, updated_at) VALUES ('retired', $1, 0, 0, 0)")
            .bind(TOPIC)
            .execute(p)
            .await
            .unwrap();
    });
    age_outbox(&app).await;
    substrate::relay::enforce_retention(&app.ctx).await.unwrap();
    assert_eq!(app.outbox_count(None).await, 1, "held by the retired group");
    let out = substrate_cmd(&app)
        .args(["consumers", "forget", "--group", "retired"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    substrate::relay::enforce_retention(&app.ctx).await.unwrap();
    assert_eq!(app.outbox_count(None).await, 0);
    app.stop().await;
}

/// Counts the records a consumer hands out (to know a replay has gone past the end).
struct CountsPolls {
    inner: Box<dyn LogConsumer>,
    polled: Arc<AtomicUsize>,
}

#[async_trait]
impl LogConsumer for CountsPolls {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let recs = self.inner.poll(max, wait).await?;
        self.polled.fetch_add(recs.len(), Ordering::SeqCst);
        Ok(recs)
    }
    fn offsets_in_store(&self) -> bool {
        self.inner.offsets_in_store()
    }
    async fn commit_in(&mut self, tx: &mut Tx, positions: &[Position]) -> Result<(), LogError> {
        self.inner.commit_in(tx, positions).await
    }
    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.inner.commit(positions).await
    }
    async fn commit_rewind(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.inner.commit_rewind(positions).await
    }
    async fn resolve(&mut self, topic: &str, to: SeekTo) -> Result<Vec<Position>, LogError> {
        self.inner.resolve(topic, to).await
    }
    async fn seek(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.inner.seek(positions).await
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
    async fn ensure_active(&mut self) -> Result<bool, LogError> {
        self.inner.ensure_active().await
    }
    fn rejoins(&self) -> u64 {
        self.inner.rejoins()
    }
}

/// What the three projections hold, as text rows (notifications without their ids and
/// creation times, which are not the events').
async fn read_models(app: &TestApp) -> Vec<Vec<String>> {
    let q = |sql: &'static str| async move {
        let rows: Vec<String> = substrate::on_read!(app.ctx.store, p => {
            sqlx::query_scalar(sql).fetch_all(p).await.unwrap()
        });
        rows
    };
    vec![
        q("SELECT event_id || '|' || user_id || '|' || event_type || '|' || payload || '|' || visibility || '|' || COALESCE(recipient_id, '-') || '|' || CAST(event_time AS TEXT) FROM notifications ORDER BY id").await,
        q("SELECT user_id || '|' || COALESCE(CAST(first_login_at AS TEXT), '-') || '|' || CAST(messages_sent AS TEXT) || '|' || CAST(first_event_at AS TEXT) || '|' || CAST(last_event_at AS TEXT) FROM user_stats ORDER BY user_id").await,
        q("SELECT user_id || '|' || event_type || '|' || CAST(count AS TEXT) FROM user_event_counts ORDER BY user_id, event_type").await,
        q("SELECT topic || '|' || event_type || '|' || CAST(minute AS TEXT) || '|' || CAST(count AS TEXT) FROM event_counts ORDER BY topic, event_type, minute").await,
    ]
}

both!(a_replayed_batch_with_a_poison_record_changes_nothing);
/// The three projection groups of the `consumers` role on real consumers, each counting what
/// it is handed. Batches hold many events (25 posted at once), an undecodable record among
/// them: each group dead-letters exactly that record once, applies every other event once
/// (per key in log order), and a replay of everything from the beginning (no rebuild)
/// changes no row and writes no second dead letter.
async fn a_replayed_batch_with_a_poison_record_changes_nothing(b: Backend) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |_| {}).await;
    let mut posted: Vec<(String, String)> = Vec::new();
    for i in 0..24 {
        let user = ["alice", "bob", "carol"][i % 3];
        let body = if i % 4 == 0 {
            json!({ "message": format!("m{i}"), "timestamp": 1_767_225_600_000i64 + i as i64,
                    "visibility": "direct", "recipient_id": "bob" })
        } else {
            json!({ "message": format!("m{i}"), "timestamp": 1_767_225_600_000i64 + i as i64 })
        };
        let (s, r) = app
            .post_json("/api/v1/events/message", &app.token(user), &body)
            .await;
        assert_eq!(s, 202, "{r}");
        posted.push((
            user.to_string(),
            r["event_id"].as_str().unwrap().to_string(),
        ));
        if i == 11 {
            // An undecodable record (a valid event, its Avro datum cut short) mid-stream.
            let mut ev = substrate::events::build(
                &app.ctx.schemas,
                TOPIC,
                "alice",
                &json!({ "user_id": "alice", "email": "a@example.com", "message": "cut",
                         "timestamp": 1_767_225_600_000i64 }),
                &substrate::events::EventMeta::default(),
            )
            .unwrap();
            ev.payload.truncate(8);
            posted.push(("poison".into(), ev.event_id.clone()));
            let mut tx = app.ctx.store.begin().await.unwrap();
            app.ctx.outbox.append(&mut tx, &[&ev]).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    let poison = posted
        .iter()
        .find(|(u, _)| u == "poison")
        .unwrap()
        .1
        .clone();
    wait_relayed(&app).await;
    let groups = ["notifications", "stats", "event-counts"];
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut polled = Vec::new();
    for h in substrate::consumers::projection_handlers(&app.ctx) {
        if !groups.contains(&h.group()) {
            continue;
        }
        let inner = app.ctx.log.subscribe(h.group(), &h.topics()).await.unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        polled.push(n.clone());
        let consumer = Box::new(CountsPolls { inner, polled: n });
        tasks.push(tokio::spawn(runtime::run_group_on(
            app.ctx.clone(),
            h,
            consumer,
            stop.clone(),
        )));
    }
    let total = posted.len();
    let settled = || async {
        for g in groups {
            let applied = count(&app, "SELECT COUNT(*) FROM inbox WHERE group_name = $1", g).await;
            let dead = count(
                &app,
                "SELECT COUNT(*) FROM dead_letters WHERE group_name = $1",
                g,
            )
            .await;
            if applied != (total - 1) as i64 || dead != 1 {
                return None;
            }
        }
        Some(())
    };
    eventually(60, settled).await;
    let before = read_models(&app).await;
    assert_eq!(
        before[0].len(),
        total - 1,
        "one notification per good event"
    );
    // Per key, notification ids follow the log order.
    let ids: Vec<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT event_id FROM notifications ORDER BY id").fetch_all(p).await.unwrap()
    });
    for user in ["alice", "bob", "carol"] {
        let want: Vec<&String> = posted
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, e)| e)
            .collect();
        let got: Vec<&String> = ids.iter().filter(|e| want.contains(e)).collect();
        assert_eq!(got, want, "{user}'s notifications in log order");
    }
    let dead_for_poison = "SELECT COUNT(*) FROM dead_letters WHERE event_id = $1";
    assert_eq!(
        count(&app, dead_for_poison, &poison).await,
        3,
        "one per group"
    );
    // Replay every group from the beginning, without a rebuild.
    let seen: Vec<usize> = polled.iter().map(|n| n.load(Ordering::SeqCst)).collect();
    for g in groups {
        substrate::consumers::seeks::request(&app.ctx.store, g, TOPIC, SeekTo::Beginning, false)
            .await
            .unwrap();
    }
    eventually(60, || async {
        let again = polled
            .iter()
            .zip(&seen)
            .all(|(n, s)| n.load(Ordering::SeqCst) >= s + total);
        again.then_some(())
    })
    .await;
    // One more poll round for batches in hand to commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settled().await.expect("inbox and dead letters unchanged");
    assert_eq!(read_models(&app).await, before, "a replay changes nothing");
    assert_eq!(count(&app, dead_for_poison, &poison).await, 3);
    let on_dlq_topic = count(
        &app,
        "SELECT COUNT(*) FROM outbox WHERE topic = 'public.user.message.events.dlq' AND event_id = $1",
        &poison,
    )
    .await;
    assert_eq!(
        on_dlq_topic, 3,
        "one record per group on the dead-letter topic"
    );
    stop.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    app.stop().await;
}
