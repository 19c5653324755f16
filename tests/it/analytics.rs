//! Analytics on both backends: event counts by topic and type in 1m/5m/1h buckets with zeros
//! filled in, from the store's rollups (embedded) or from ClickHouse (production column, a
//! database per test), late events in their own bucket, clear 400s; and the ClickHouse sink
//! writing every event once, also when its group is rewound and the events come again.

use serde_json::{Value, json};
use substrate::analytics::clickhouse::ClickHouse;
use substrate::analytics::sink;
use substrate::config::Config;

use crate::realtime::post;
use crate::stats::{LOGIN, MESSAGE, append_at, caught_up, login_body, message_body};
use crate::support::*;

/// The ClickHouse server of the production column (`scripts/services.sh` starts it).
fn clickhouse_url() -> String {
    std::env::var("SUBSTRATE_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// Production column: ClickHouse in a database of this test's own, flushed quickly.
pub fn analytics_backend(b: Backend, c: &mut Config) {
    if b == Backend::Postgres {
        c.analytics.clickhouse_url = Some(clickhouse_url());
        c.analytics.clickhouse_database = format!("st_{}", uuid::Uuid::new_v4().simple());
        c.analytics.batch_rows = 50;
        c.analytics.flush_ms = 100;
    }
}

pub async fn stop(app: TestApp) {
    let ch = app.ctx.analytics.clickhouse().cloned();
    app.stop().await;
    if let Some(ch) = ch {
        ch.drop_database().await.expect("drop the test database");
    }
}

async fn counts(app: &TestApp, token: &str, query: &str) -> (u16, Value) {
    app.get_json(
        &format!("/api/v1/analytics/event-counts?{query}"),
        Some(token),
    )
    .await
}

fn buckets(v: &Value) -> Vec<i64> {
    v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .collect()
}

/// Waits until the sink has committed everything in the log (a no-op without ClickHouse).
async fn sink_caught_up(app: &TestApp) {
    wait_relayed(app).await;
    if app.ctx.analytics.clickhouse().is_none() {
        return;
    }
    let topics = substrate::projections::counts::counted_topics(&app.ctx);
    eventually(30, || async {
        let lag = app.ctx.log.lag(sink::GROUP, &topics).await.ok()?;
        (!lag.is_empty() && lag.iter().all(|p| p.lag() == 0)).then_some(())
    })
    .await
}

both!(event_counts_by_bucket_with_zeros);
async fn event_counts_by_bucket_with_zeros(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let admin = app.admin_token();
    for (topic, user, at) in [
        (LOGIN, "alice", "2026-03-01T12:00:01Z"),
        (MESSAGE, "alice", "2026-03-01T12:00:59Z"),
        (MESSAGE, "bob", "2026-03-01T12:03:00Z"),
        (LOGIN, "bob", "2026-03-01T12:14:59Z"),
        (MESSAGE, "bob", "2026-03-01T13:30:00Z"),
    ] {
        let body = if topic == LOGIN {
            login_body(user, at)
        } else {
            message_body(user, "hi")
        };
        append_at(&app, topic, user, body, at).await;
    }
    caught_up(&app).await;
    sink_caught_up(&app).await;
    // Late: reported after everything above was counted.
    append_at(
        &app,
        MESSAGE,
        "carol",
        message_body("carol", "late"),
        "2026-03-01T12:01:30Z",
    )
    .await;
    caught_up(&app).await;
    sink_caught_up(&app).await;

    let (s, m) = counts(
        &app,
        &admin,
        "from=2026-03-01T12:00:00Z&to=2026-03-01T12:05:00Z&step=1m",
    )
    .await;
    assert_eq!(s, 200, "{m}");
    let source = if b == Backend::Postgres {
        "clickhouse"
    } else {
        "store"
    };
    assert_eq!(m["source"], source);
    assert_eq!(buckets(&m), vec![2, 1, 0, 1, 0]);
    assert_eq!(m["buckets"][2]["start"], "2026-03-01T12:02:00.000000Z");
    let series: Vec<(String, Vec<i64>)> = m["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}|{}",
                    s["topic"].as_str().unwrap(),
                    s["event_type"].as_str().unwrap()
                ),
                serde_json::from_value(s["counts"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        series,
        vec![
            (
                format!("{LOGIN}|identity.login.events"),
                vec![1, 0, 0, 0, 0]
            ),
            (
                format!("{MESSAGE}|user.message.events"),
                vec![1, 1, 0, 1, 0]
            ),
        ]
    );
    // Unaligned bounds widen to whole buckets.
    let (_, f) = counts(
        &app,
        &admin,
        "from=2026-03-01T12:02:00Z&to=2026-03-01T12:20:00Z&step=5m",
    )
    .await;
    assert_eq!(f["from"], "2026-03-01T12:00:00.000000Z");
    assert_eq!(buckets(&f), vec![4, 0, 1, 0]);
    let (_, h) = counts(
        &app,
        &admin,
        "from=2026-03-01T11:00:00Z&to=2026-03-01T14:00:00Z&step=1h",
    )
    .await;
    assert_eq!(buckets(&h), vec![0, 5, 1]);
    assert_eq!(h["total"], 6);
    let (_, t) = counts(
        &app,
        &admin,
        &format!("from=2026-03-01T11:00:00Z&to=2026-03-01T14:00:00Z&step=1h&topic={LOGIN}"),
    )
    .await;
    assert_eq!(buckets(&t), vec![0, 2, 0]);
    // Unix seconds work too.
    let (_, u) = counts(&app, &admin, "from=1772366400&to=1772366700&step=5m").await;
    assert_eq!(buckets(&u), vec![4]);
    stop(app).await;
}

both!(event_counts_parameters_are_validated);
async fn event_counts_parameters_are_validated(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        analytics_backend(b, c);
        c.analytics.max_buckets = 100;
    })
    .await;
    let admin = app.admin_token();
    for (q, code, param) in [
        ("step=2m", "invalid_parameter", Some("step")),
        ("from=yesterday", "invalid_parameter", Some("from")),
        ("to=2026-13-01T00:00:00Z", "invalid_parameter", Some("to")),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_parameter",
            Some("from"),
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&step=1m",
            "range_too_large",
            None,
        ),
        ("topic=public.no.such.topic", "unknown_topic", Some("topic")),
    ] {
        let (s, r) = counts(&app, &admin, q).await;
        assert_eq!((s, r["error"].as_str()), (400, Some(code)), "{q}: {r}");
        if let Some(p) = param {
            assert_eq!(r["parameter"], p, "{q}: {r}");
        }
    }
    let (_, r) = counts(
        &app,
        &admin,
        "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&step=1m",
    )
    .await;
    assert_eq!(
        (r["buckets"].as_i64(), r["max_buckets"].as_i64()),
        (Some(1440), Some(100))
    );
    // Defaults: the last hour by minute, every bucket present.
    let (s, r) = counts(&app, &admin, "").await;
    assert_eq!(
        (s, r["step"].as_str(), r["buckets"].as_array().map(Vec::len)),
        (200, Some("1m"), Some(60))
    );
    // The whole platform's activity: not for ordinary users; fine with analytics:read.
    let (s, r) = counts(&app, &app.token("alice"), "").await;
    assert_eq!((s, r["error"].as_str()), (403, Some("forbidden")));
    let key = app.api_key("dashboards", &["analytics:read"]).await;
    let r = app
        .http
        .get(app.url("/api/v1/analytics/event-counts?step=1h"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop(app).await;
}

/// Rows in the table, before ReplacingMergeTree collapses anything.
async fn raw_count(ch: &ClickHouse) -> u64 {
    let r = reqwest::Client::new()
        .post(clickhouse_url())
        .body(format!("SELECT count() FROM {}.events", ch.database()))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap().trim().parse().unwrap()
}

/// Every event reaches ClickHouse once, with its decoded payload; when the sink's group is
/// rewound (as after a crash between the insert and the offset commit) the rows written again
/// collapse into the ones already there, and the counts do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_sink_writes_every_event_once_postgres() {
    let b = Backend::Postgres;
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let ch: ClickHouse = app.ctx.analytics.clickhouse().cloned().unwrap();
    let alice = app.token("alice");
    let n = 120;
    let batch: Vec<Value> = (0..n).map(|i| message(&format!("m{i}"))).collect();
    let (s, _) = app
        .post_json("/api/v1/events/message/batch", &alice, &json!(batch))
        .await;
    assert_eq!(s, 202);
    post(&app, &alice, &message("one more")).await;
    sink_caught_up(&app).await;
    let rows = ch.rows().await.unwrap();
    assert_eq!(rows.len(), n + 1);
    assert_eq!(
        raw_count(&ch).await,
        n as u64 + 1,
        "written once, no retries"
    );
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), n + 1, "each event once");
    let outbox: Vec<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE topic = $1").bind(MESSAGE).fetch_all(p).await.unwrap()
    });
    assert_eq!(ids, outbox.iter().map(String::as_str).collect());
    let last = rows
        .iter()
        .find(|r| r.payload.contains("one more"))
        .expect("payload decoded");
    let payload: Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!(
        (payload["user_id"].as_str(), last.event_key.as_str()),
        (Some("alice"), "alice")
    );
    assert_eq!(last.event_type, "user.message.events");
    assert_eq!(i64::from(last.event_time), last.event_time_us / 1_000_000);
    let admin = app.admin_token();
    let (_, before) = counts(&app, &admin, "step=1h").await;
    assert_eq!(before["total"].as_i64(), Some(n as i64 + 1), "{before}");

    // Rewind the sink: the events are delivered again.
    let (s, r) = app
        .post_json(
            "/api/v1/admin/replay",
            &admin,
            &json!({ "topic": MESSAGE, "group": sink::GROUP, "from_beginning": true }),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let req = r["requests"][0]["request_id"].as_i64().unwrap();
    eventually(30, || async {
        let r = substrate::consumers::seeks::get(&app.ctx.store, req)
            .await
            .ok()??;
        r.applied_at.map(|_| ())
    })
    .await;
    sink_caught_up(&app).await;
    let written = eventually(30, || async {
        let m = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = m
            .lines()
            .find(|l| l.starts_with("substrate_analytics_rows_written_total"))?;
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (v >= 2.0 * (n as f64 + 1.0)).then_some(v)
    })
    .await;
    assert!(written >= 2.0 * (n as f64 + 1.0));
    let key = |r: &substrate::analytics::clickhouse::EventRow| {
        (
            r.event_id.clone(),
            r.topic.clone(),
            r.event_time_us,
            r.log_offset,
            r.payload.clone(),
        )
    };
    let again: Vec<_> = ch.rows().await.unwrap().iter().map(key).collect();
    assert_eq!(
        again,
        rows.iter().map(key).collect::<Vec<_>>(),
        "the repeated rows collapsed"
    );
    let (_, after) = counts(&app, &admin, "step=1h").await;
    assert_eq!(after["buckets"], before["buckets"]);
    stop(app).await;
}
