//! The per-user stats and per-minute event-count read models on both backends: they match
//! hand-computed expectations (late events in their own minute) before and after a rebuild
//! from the log, and a rebuild from a snapshot plus the tail of the log equals a full replay —
//! even once the events before the snapshot have left the log.

use serde_json::{Value, json};
use substrate::consumers::registry;
use substrate::events::{EventMeta, rfc3339_micros};
use substrate::projections::{counts, notifications};

use crate::realtime::{direct, login, login_at, post};
use crate::support::*;

pub const LOGIN: &str = "public.identity.login.events";
pub const SIGNUP: &str = "public.identity.signup.events";
pub const MESSAGE: &str = "public.user.message.events";

pub fn micros(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("rfc3339")
        .timestamp_micros()
}

/// Appends an event whose own time (`ce_time`) is `at`, as a producer writing to the log
/// directly would (e.g. one that reports late).
pub async fn append_at(app: &TestApp, topic: &str, key: &str, payload: Value, at: &str) -> String {
    let meta = EventMeta {
        source: "/tests/producer".into(),
        ..Default::default()
    };
    let mut ev = substrate::events::build(&app.ctx.schemas, topic, key, &payload, &meta)
        .expect("valid event");
    ev.headers
        .insert("ce_time".into(), rfc3339_micros(micros(at)));
    let mut tx = app.ctx.store.begin().await.unwrap();
    app.ctx.outbox.append(&mut tx, &[&ev]).await.unwrap();
    tx.commit().await.unwrap();
    ev.event_id
}

pub fn login_body(user: &str, time: &str) -> Value {
    json!({ "user_id": user, "email": format!("{user}@example.com"), "login_time": time })
}

pub fn message_body(user: &str, text: &str) -> Value {
    json!({ "user_id": user, "email": format!("{user}@example.com"), "message": text, "timestamp": 1_767_261_600_000i64 })
}

/// Waits until every projection group has read everything in the log.
pub async fn caught_up(app: &TestApp) {
    wait_relayed(app).await;
    eventually(30, || async {
        for h in registry::projection_handlers(&app.ctx) {
            let lag = app.ctx.log.lag(h.group(), &h.topics()).await.ok()?;
            if lag.iter().any(|p| p.lag() > 0) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Posts a replay request through the admin API and waits until it is applied.
pub async fn rebuild(app: &TestApp, group: &str, topic: &str) {
    let (s, r) = app
        .post_json(
            "/api/v1/admin/replay",
            &app.admin_token(),
            &json!({ "topic": topic, "group": group, "from_beginning": true, "rebuild": true }),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let id = r["requests"][0]["request_id"].as_i64().unwrap();
    eventually(30, || async {
        let req = substrate::consumers::seeks::get(&app.ctx.store, id)
            .await
            .ok()??;
        req.applied_at.map(|_| ())
    })
    .await;
}

/// A `user_stats` row: user, first and last login, messages, first and last event.
type StatsRow = (String, Option<i64>, Option<i64>, i64, i64, i64);

/// The three read models, as comparable values.
#[derive(Debug, PartialEq)]
struct State {
    notifications: Vec<notifications::NotificationRow>,
    stats: Vec<StatsRow>,
    stat_counts: Vec<(String, String, i64)>,
    counts: Vec<(String, String, i64, i64)>,
}

async fn state(app: &TestApp) -> State {
    let store = &app.ctx.store;
    let stats = substrate::on_read!(store, p => {
        sqlx::query_as("SELECT user_id, first_login_at, last_login_at, messages_sent, first_event_at, last_event_at FROM user_stats ORDER BY user_id")
            .fetch_all(p).await.unwrap()
    });
    let stat_counts = substrate::on_read!(store, p => {
        sqlx::query_as("SELECT user_id, event_type, count FROM user_event_counts ORDER BY user_id, event_type")
            .fetch_all(p).await.unwrap()
    });
    let mut notifications = notifications::all(store).await.unwrap();
    if app.store.kafka.is_some() {
        // Kafka interleaves partitions differently on each read: the rows are the same, their
        // surrogate ids may be handed out in another order (each key keeps its order).
        for n in &mut notifications {
            n.id = 0;
        }
        notifications.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    }
    State {
        notifications,
        stats,
        stat_counts,
        counts: counts::all(store).await.unwrap(),
    }
}

async fn stats_of(app: &TestApp, user: &str) -> Value {
    let (s, v) = app
        .get_json(
            &format!("/api/v1/users/{user}/stats"),
            Some(&app.admin_token()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn event_counts(app: &TestApp, query: &str) -> Value {
    let (s, v) = app
        .get_json(
            &format!("/api/v1/analytics/event-counts?{query}"),
            Some(&app.admin_token()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn bucket_counts(v: &Value) -> Vec<i64> {
    v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .collect()
}

both!(stats_and_counts_match_hand_computed_after_replay);
async fn stats_and_counts_match_hand_computed_after_replay(b: Backend) {
    let app = TestApp::start(b).await;
    // alice: three logins (payload times 09:30, 10:00, 11:00), three messages.
    // bob: a signup and two messages. Own times (ce_time) between 10:00 and 11:00.
    append_at(
        &app,
        LOGIN,
        "alice",
        login_body("alice", "2026-01-01T10:00:00Z"),
        "2026-01-01T10:00:10Z",
    )
    .await;
    append_at(
        &app,
        LOGIN,
        "alice",
        login_body("alice", "2026-01-01T09:30:00Z"),
        "2026-01-01T10:00:50Z",
    )
    .await;
    append_at(
        &app,
        MESSAGE,
        "alice",
        message_body("alice", "m1"),
        "2026-01-01T10:01:00Z",
    )
    .await;
    append_at(
        &app,
        MESSAGE,
        "bob",
        message_body("bob", "m2"),
        "2026-01-01T10:04:59Z",
    )
    .await;
    append_at(
        &app,
        MESSAGE,
        "alice",
        message_body("alice", "m3"),
        "2026-01-01T10:05:00Z",
    )
    .await;
    append_at(
        &app,
        SIGNUP,
        "bob",
        json!({ "user_id": "bob", "email": "bob@example.com", "signup_time": "2026-01-01T09:00:00Z" }),
        "2026-01-01T10:07:00Z",
    )
    .await;
    append_at(
        &app,
        LOGIN,
        "alice",
        login_body("alice", "2026-01-01T11:00:00Z"),
        "2026-01-01T11:00:00Z",
    )
    .await;
    append_at(
        &app,
        MESSAGE,
        "bob",
        message_body("bob", "m4"),
        "2026-01-01T11:59:59Z",
    )
    .await;
    caught_up(&app).await;
    // A late event: processed after its minute's neighbours, counted in its own minute.
    append_at(
        &app,
        MESSAGE,
        "alice",
        message_body("alice", "late"),
        "2026-01-01T10:02:30Z",
    )
    .await;
    caught_up(&app).await;

    let check = || async {
        let alice = stats_of(&app, "alice").await;
        assert_eq!(
            alice["counts"],
            json!({ "identity.login.events": 3, "user.message.events": 3 })
        );
        assert_eq!(alice["first_login"], "2026-01-01T09:30:00.000000Z");
        assert_eq!(alice["last_login"], "2026-01-01T11:00:00.000000Z");
        assert_eq!(alice["messages_sent"], 3);
        // No credit account yet: the starting balance it will open with.
        assert_eq!(alice["credits"], app.ctx.config.media.starting_credits);
        assert_eq!(alice["first_event"], "2026-01-01T10:00:10.000000Z");
        assert_eq!(alice["last_event"], "2026-01-01T11:00:00.000000Z");
        let bob = stats_of(&app, "bob").await;
        assert_eq!(
            bob["counts"],
            json!({ "identity.signup.events": 1, "user.message.events": 2 })
        );
        assert_eq!(
            (bob["first_login"].clone(), bob["last_login"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(bob["messages_sent"], 2);

        let m = event_counts(
            &app,
            "from=2026-01-01T10:00:00Z&to=2026-01-01T10:08:00Z&step=1m",
        )
        .await;
        assert_eq!(bucket_counts(&m), vec![2, 1, 1, 0, 1, 1, 0, 1]);
        let logins = m["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["topic"] == LOGIN)
            .unwrap();
        assert_eq!(logins["counts"], json!([2, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(logins["event_type"], "identity.login.events");
        let five = event_counts(
            &app,
            "from=2026-01-01T10:00:00Z&to=2026-01-01T10:15:00Z&step=5m",
        )
        .await;
        assert_eq!(bucket_counts(&five), vec![5, 2, 0]);
        let hour = event_counts(
            &app,
            "from=2026-01-01T09:00:00Z&to=2026-01-01T12:00:00Z&step=1h",
        )
        .await;
        assert_eq!(bucket_counts(&hour), vec![0, 7, 2]);
        let msgs = event_counts(
            &app,
            &format!("from=2026-01-01T09:00:00Z&to=2026-01-01T12:00:00Z&step=1h&topic={MESSAGE}"),
        )
        .await;
        assert_eq!(bucket_counts(&msgs), vec![0, 4, 1]);
        assert_eq!(msgs["series"].as_array().unwrap().len(), 1);
    };
    check().await;
    let before = state(&app).await;
    for g in [substrate::projections::stats::GROUP, counts::GROUP] {
        rebuild(&app, g, MESSAGE).await;
    }
    caught_up(&app).await;
    check().await;
    assert_eq!(state(&app).await, before);
    app.stop().await;
}

both!(stats_endpoints);
async fn stats_endpoints(b: Backend) {
    let app = TestApp::start(b).await;
    let svc = app.api_key("identity", &["identity:write"]).await;
    login_at(&app, &svc, "alice", "2026-02-03T04:05:06Z").await;
    post(&app, &app.token("alice"), &message("hi")).await;
    caught_up(&app).await;
    let (s, me) = app
        .get_json("/api/v1/users/me/stats", Some(&app.token("alice")))
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user_id"], "alice");
    assert_eq!(me["first_login"], "2026-02-03T04:05:06.000000Z");
    assert_eq!(me["messages_sent"], 1);
    assert_eq!(me["counts"]["user.message.events"], 1);
    // A user with no events yet has zero stats, not an error.
    let (s, nobody) = app
        .get_json("/api/v1/users/me/stats", Some(&app.token("nobody")))
        .await;
    assert_eq!(s, 200);
    assert_eq!(nobody["messages_sent"], 0);
    assert_eq!(nobody["counts"], json!({}));
    // Credits come from the media ledger: an approved upload intent costs one.
    let start = app.ctx.config.media.starting_credits;
    assert_eq!(me["credits"], start);
    let r = app
        .http
        .post(app.url("/api/v1/media/upload-intent"))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "file_name": "a.png", "media_type": "image/png", "file_size": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    eventually(20, || async {
        let (_, me) = app
            .get_json("/api/v1/users/me/stats", Some(&app.token("alice")))
            .await;
        (me["credits"] == json!(start - 1)).then_some(())
    })
    .await;
    // Another user's stats are for operators only.
    let (s, _) = app
        .get_json("/api/v1/users/alice/stats", Some(&app.token("bob")))
        .await;
    assert_eq!(s, 403);
    let (s, _) = app.get_json("/api/v1/users/me/stats", None).await;
    assert_eq!(s, 401);
    app.stop().await;
}

both!(snapshot_rebuild_equals_full_replay);
async fn snapshot_rebuild_equals_full_replay(b: Backend) {
    let app = TestApp::start(b).await;
    let svc = app.api_key("identity", &["identity:write"]).await;
    let admin = app.admin_token();
    let users = ["u0", "u1", "u2"];
    let burst = |round: usize| {
        let app = &app;
        let svc = &svc;
        async move {
            for i in 0..12 {
                let u = users[i % 3];
                match i % 4 {
                    0 => login(app, svc, u).await,
                    1 => {
                        post(
                            app,
                            &app.token(u),
                            &direct(&format!("d{round}.{i}"), users[(i + 1) % 3]),
                        )
                        .await
                    }
                    _ => post(app, &app.token(u), &message(&format!("m{round}.{i}"))).await,
                }
            }
        }
    };
    burst(0).await;
    caught_up(&app).await;
    let mut snaps = Vec::new();
    for g in ["notifications", "stats", "event-counts"] {
        let (s, r) = app
            .post_json("/api/v1/admin/snapshots", &admin, &json!({ "group": g }))
            .await;
        assert_eq!(s, 201, "{r}");
        assert!(r["row_count"].as_i64().unwrap() > 0, "{r}");
        snaps.push(r["id"].as_i64().unwrap());
    }
    let (s, r) = app
        .post_json(
            "/api/v1/admin/snapshots",
            &admin,
            &json!({ "group": "nope" }),
        )
        .await;
    assert_eq!((s, r["error"].as_str()), (404, Some("unknown_group")));
    let (s, list) = app
        .get_json("/api/v1/admin/snapshots?group=stats", Some(&admin))
        .await;
    assert_eq!((s, list["snapshots"].as_array().unwrap().len()), (200, 1));
    let (s, _) = app
        .get_json("/api/v1/admin/snapshots", Some(&app.token("u0")))
        .await;
    assert_eq!(s, 403);
    let log_end_of_snapshot: i64 = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT MAX(id) FROM outbox").fetch_one(p).await.unwrap()
    });

    burst(1).await;
    caught_up(&app).await;
    let live = state(&app).await;
    assert_eq!(live.notifications.len(), 24);

    // A full replay of every group reproduces the live read models…
    for g in ["notifications", "stats", "event-counts"] {
        rebuild(&app, g, MESSAGE).await;
    }
    caught_up(&app).await;
    assert_eq!(state(&app).await, live, "full replay");

    // …and so does a snapshot plus the tail, even when the log no longer holds what came
    // before the snapshot (embedded log: drop those rows, as retention would).
    if app.ctx.log.name() == "embedded" {
        substrate::on_write!(app.ctx.store, p => {
            sqlx::query("DELETE FROM outbox WHERE id <= $1").bind(log_end_of_snapshot).execute(p).await.unwrap();
        });
        // Now a full replay can only rebuild the second half.
        for g in ["notifications", "stats", "event-counts"] {
            rebuild(&app, g, MESSAGE).await;
        }
        caught_up(&app).await;
        assert_eq!(state(&app).await.notifications.len(), 12);
    } else {
        // Whatever the read models hold now, the restore replaces it.
        for t in [
            "notifications",
            "user_stats",
            "user_event_counts",
            "event_counts",
        ] {
            substrate::on_write!(app.ctx.store, p => {
                sqlx::query(&format!("DELETE FROM {t}")).execute(p).await.unwrap();
            });
        }
    }
    assert_ne!(state(&app).await, live);
    for id in snaps {
        let (s, r) = app
            .post_json(
                &format!("/api/v1/admin/snapshots/{id}/restore"),
                &admin,
                &json!({}),
            )
            .await;
        assert_eq!(s, 202, "{r}");
        let req = r["request_id"].as_i64().unwrap();
        eventually(30, || async {
            let (_, st) = app
                .get_json(
                    &format!("/api/v1/admin/snapshots/restores/{req}"),
                    Some(&admin),
                )
                .await;
            (st["applied"] == true).then_some(())
        })
        .await;
    }
    caught_up(&app).await;
    assert_eq!(state(&app).await, live, "snapshot + tail");
    let (s, r) = app
        .post_json("/api/v1/admin/snapshots/999999/restore", &admin, &json!({}))
        .await;
    assert_eq!((s, r["error"].as_str()), (404, Some("unknown_snapshot")));
    app.stop().await;
}
