//! The Kafka column only (PostgreSQL + a real nisshi broker): order per key with two relay
//! instances, no loss when the relay is SIGKILLed mid-drain, the gateway accepting through a
//! broker outage, and an independent client (Python confluent-kafka) reading what the relay
//! wrote, decoded through substrate's registry, with the CloudEvents headers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use substrate::projections::notifications;
use substrate::roles::Role;

use crate::support::kafka::Broker;
use crate::support::*;

const TOPIC: &str = "public.user.message.events";

/// One record as the test reads it back from the broker.
struct Got {
    key: String,
    headers: BTreeMap<String, String>,
    value: Vec<u8>,
}

/// Reads `topic` from the beginning (every partition) until `want` distinct `ce_id`s were seen.
fn read_topic(bootstrap: &str, topic: &str, want: usize) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while ids.len() < want {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {want} events reached {topic}",
            ids.len()
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let mut headers = BTreeMap::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                headers.insert(
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        ids.insert(headers.get("ce_id").cloned().unwrap_or_default());
        out.push(Got {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            headers,
            value: m.payload().unwrap_or_default().to_vec(),
        });
    }
    out
}

/// A `substrate` process of the test's own, killed when the test ends — also when it fails.
struct Proc(std::process::Child);

impl Proc {
    /// SIGKILL, and wait for it.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn published(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL";
    sqlx::query_scalar(sql)
        .fetch_one(app.ctx.store.pg_pool().expect("pg"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_with_two_relays() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let mut cfg = test_config(&store);
    cfg.gateway.batch_max_events = 1000;
    cfg.log.relay_batch = 300;
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await;
    // A second relay instance on the same outbox.
    let mut second = Proc(
        substrate_cmd(&app)
            .args(["serve", "--roles", "relay"])
            .env("SUBSTRATE_LOG__RELAY_BATCH", "300")
            .spawn()
            .unwrap(),
    );
    let pool = app.ctx.store.pg_pool().unwrap().clone();
    // Both instances hold lanes before the load starts.
    eventually(30, || async {
        let owners: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT owner) FROM leases WHERE name LIKE 'relay.lane.%' AND expires_at > 0")
            .fetch_one(&pool)
            .await
            .unwrap();
        (owners == 2).then_some(())
    })
    .await;
    // 10k events over 100 keys (users), interleaved: 10 rounds of 10 events per user.
    let (keys, rounds, per) = (100, 10, 10);
    for round in 0..rounds {
        let mut posts = Vec::new();
        for k in 0..keys {
            let batch: Vec<Value> = (0..per)
                .map(|i| message(&format!("{}", round * per + i)))
                .collect();
            let token = app.token(&format!("user{k}"));
            let http = app.http.clone();
            let url = app.url("/api/v1/events/message/batch");
            posts.push(async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&batch)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
        // Keys are independent; one key's batches are posted in order (one per round).
        for s in futures::future::join_all(posts).await {
            assert_eq!(s, 202);
        }
    }
    let total = (keys * rounds * per) as usize;
    let bootstrap = app.store.kafka.as_ref().unwrap().bootstrap();
    let got = tokio::task::spawn_blocking(move || read_topic(&bootstrap, TOPIC, total))
        .await
        .unwrap();
    // Both instances published: every lane was held by one of two owners.
    let by_owner: Vec<i64> = sqlx::query_scalar(
        "SELECT COUNT(*) FROM leases WHERE name LIKE 'relay.lane.%' GROUP BY owner",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(by_owner.len(), 2, "{by_owner:?}");
    // Each key's events, first copies only (duplicates are allowed), are in posting order.
    let mut seen = HashSet::new();
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for g in &got {
        if !seen.insert(g.headers["ce_id"].clone()) {
            continue;
        }
        let v = app.ctx.schemas.decode_json(&g.value).await.unwrap();
        let n: i64 = v["message"].as_str().unwrap().parse().unwrap();
        per_key.entry(g.key.clone()).or_default().push(n);
    }
    assert_eq!(per_key.len(), keys as usize);
    for (k, seq) in &per_key {
        let want: Vec<i64> = (0..(rounds * per) as i64).collect();
        assert_eq!(seq, &want, "order of key {k}");
    }
    second.kill();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_mid_drain_loses_nothing() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let mut cfg = test_config(&store);
    cfg.gateway.batch_max_events = 1000;
    // Gateway and consumers here; the relay runs in a process that is killed.
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Consumers]).await;
    let t = app.token("alice");
    let n = 4000;
    for chunk in 0..(n / 1000) {
        let batch: Vec<Value> = (0..1000)
            .map(|i| message(&format!("m{}", chunk * 1000 + i)))
            .collect();
        let (s, _) = app
            .post_json("/api/v1/events/message/batch", &t, &json!(batch))
            .await;
        assert_eq!(s, 202);
    }
    let spawn = || {
        Proc(
            substrate_cmd(&app)
                .args(["serve", "--roles", "relay"])
                .env("SUBSTRATE_LOG__RELAY_BATCH", "100")
                .spawn()
                .unwrap(),
        )
    };
    let mut relay = spawn();
    eventually(60, || async { (published(&app).await > 300).then_some(()) }).await;
    relay.kill(); // SIGKILL
    let mid = published(&app).await;
    assert!(mid < n, "killed before the end of the drain ({mid})");
    let mut relay = spawn();
    let all = eventually(90, || async {
        let r = notifications::all(&app.ctx.store).await.unwrap();
        (r.len() >= n as usize).then_some(r)
    })
    .await;
    relay.kill();
    // Every accepted event arrived once in the read model, in order (one key).
    let texts: Vec<String> = all
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_buffers_in_the_outbox_and_drains() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start_durable())).await;
    let cfg = test_config(&store);
    let mut app = TestApp::start_on(store, cfg, substrate::roles::ALL.to_vec()).await;
    let t = app.token("alice");
    assert_eq!(
        app.post_json("/api/v1/events/message", &t, &message("before"))
            .await
            .0,
        202
    );
    eventually(30, || async {
        let r = notifications::all(&app.ctx.store).await.unwrap();
        (r.len() == 1).then_some(())
    })
    .await;
    app.store.kafka.as_mut().unwrap().stop();
    // The gateway keeps accepting: the events wait in the outbox.
    for i in 0..20 {
        let (s, _) = app
            .post_json(
                "/api/v1/events/message",
                &t,
                &message(&format!("during{i}")),
            )
            .await;
        assert_eq!(s, 202);
    }
    assert_eq!(app.outbox_count(None).await, 21);
    app.store.kafka.as_mut().unwrap().start_again();
    let all = eventually(120, || async {
        let r = notifications::all(&app.ctx.store).await.unwrap();
        (r.len() >= 21).then_some(r)
    })
    .await;
    let texts: Vec<String> = all
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec!["before".to_string()];
    want.extend((0..20).map(|i| format!("during{i}")));
    assert_eq!(texts, want);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_consumer_reads_what_the_relay_wrote() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await;
    let t = app.token("alice");
    let (s, body) = app
        .post_json("/api/v1/events/message", &t, &message("hello kafka"))
        .await;
    assert_eq!(s, 202);
    let event_id = body["event_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post_json(
            "/api/v1/events/message",
            &t,
            &json!({"message": "to bob", "timestamp": "2026-01-01T00:00:00Z", "visibility": "direct", "recipient_id": "bob"}),
        )
        .await;
    assert_eq!(s, 202);
    let out = tokio::process::Command::new("python3")
        .arg(repo().join("tests/python/kafka_consumer.py"))
        .args([
            "--bootstrap",
            &app.store.kafka.as_ref().unwrap().bootstrap(),
            "--registry",
            &app.base,
            "--topic",
            TOPIC,
            "--count",
            "2",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python consumer failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{stdout}");
    let first = recs
        .iter()
        .find(|r| r["headers"]["ce_id"] == event_id.as_str())
        .expect("the first event");
    assert_eq!(first["key"], "alice");
    assert_eq!(first["value"]["message"], "hello kafka");
    assert_eq!(first["value"]["user_id"], "alice");
    assert_eq!(first["value"]["visibility"], "broadcast");
    assert_eq!(first["headers"]["ce_type"], "user.message.events");
    assert_eq!(first["headers"]["ce_subject"], "alice");
    for h in [
        "ce_source",
        "ce_time",
        "ce_specversion",
        "traceparent",
        "correlation_id",
    ] {
        assert!(
            first["headers"][h].as_str().is_some_and(|v| !v.is_empty()),
            "header {h} missing: {first}"
        );
    }
    let second = recs
        .iter()
        .find(|r| r["value"]["message"] == "to bob")
        .expect("the direct message");
    assert_eq!(second["value"]["visibility"], "direct");
    assert_eq!(second["value"]["recipient_id"], "bob");
    app.stop().await;
}
