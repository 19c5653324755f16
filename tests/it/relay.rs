//! The relay under failure, on the Kafka column (PostgreSQL + a real nisshi broker): a row the
//! broker refuses never lets a later row of its key reach the topic first, and is parked
//! after it was refused on its own `log.relay_park_after` times; a row too large for the
//! relay's producer is parked at once; either way its key stops visibly (metric, /status,
//! the admin API) while every other key flows, and the operator redrives (after raising the
//! limit) or discards it — then the key drains in order. Also: relays that disagree on
//! `log.relay_lanes`, and `substrate relay set-lanes` while rows are pending, relay every row
//! with each key's order kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use substrate::projections::notifications;
use substrate::roles::Role;

use crate::consumers::component;
use crate::support::kafka::Broker;
use crate::support::*;

const TOPIC: &str = "public.user.message.events";

/// One record on the topic: its key and `ce_id`.
#[derive(Debug, Clone)]
struct Rec {
    key: String,
    id: String,
}

/// Every record on `topic` now (all partitions, up to their end offsets), in each partition's
/// order.
fn records_now(bootstrap: &str, topic: &str) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "relay-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut left = HashMap::new();
    for p in md.topics()[0].partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            left.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if left.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !left.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} took too long"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        let id = m
            .headers()
            .and_then(|hs| hs.iter().find(|h| h.key == "ce_id"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.push(Rec {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            id,
        });
        if left
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            left.remove(&m.partition());
        }
    }
    out
}

/// The first copy of each event, per key, in topic order (duplicates are allowed).
fn first_copies(recs: &[Rec]) -> BTreeMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in recs {
        if seen.insert(r.id.clone()) {
            per_key.entry(r.key.clone()).or_default().push(r.id.clone());
        }
    }
    per_key
}

/// `n` characters that lz4 cannot shrink much (random hex).
fn incompressible(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// Posts `text` as user `user`; returns the event id.
async fn post(app: &TestApp, user: &str, text: &str) -> String {
    let (s, body) = app
        .post_json("/api/v1/events/message", &app.token(user), &message(text))
        .await;
    assert_eq!(s, 202, "{body}");
    body["event_id"].as_str().unwrap().to_string()
}

async fn texts(app: &TestApp) -> Vec<String> {
    notifications::all(&app.ctx.store)
        .await
        .unwrap()
        .iter()
        .map(|r| r.payload["message"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn parked(app: &TestApp) -> Vec<Value> {
    let (s, body) = app
        .get_json("/api/v1/admin/relay/parked", Some(&app.admin_token()))
        .await;
    assert_eq!(s, 200, "{body}");
    body["parked"].as_array().cloned().unwrap_or_default()
}

async fn pending_ids(app: &TestApp) -> Vec<String> {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY id")
            .fetch_all(p)
            .await
            .unwrap()
    })
}

fn relay_process(app: &TestApp, env: &[(&str, &str)]) -> Proc {
    let mut c = substrate_cmd(app);
    c.args(["serve", "--roles", "relay"]);
    for (k, v) in env {
        c.env(k, v);
    }
    Proc(c.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_too_large_for_the_relay_is_parked_and_its_key_waits_for_the_operator() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Consumers]).await;
    // The relay runs with a limit below one of the events (a lowered limit, or an event a
    // consumer emitted): that event can never be sent as things stand.
    let mut relay = relay_process(
        &app,
        &[
            ("SUBSTRATE_LOG__MAX_MESSAGE_BYTES", "20000"),
            // The body limit may not exceed the log's (config validation).
            ("SUBSTRATE_GATEWAY__BODY_LIMIT_BYTES", "20000"),
        ],
    );
    let big = "x".repeat(30_000);
    let a0 = post(&app, "alice", "a0").await;
    let a1 = post(&app, "alice", &big).await;
    let a2 = post(&app, "alice", "a2").await;
    post(&app, "bob", "b0").await;
    post(&app, "bob", "b1").await;
    // Parked at once; everything else flows; alice's later event waits.
    let list = eventually(60, || async {
        let l = parked(&app).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["event_id"], a1.as_str());
    assert_eq!(list[0]["event_key"], "alice");
    assert_eq!(list[0]["held_rows"], 1);
    assert!(
        list[0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("too large"),
        "{}",
        list[0]
    );
    // Order holds per key; across keys it is free (a0 may share a refused broker batch with
    // a1 and so go again after bob's events).
    let got = eventually(60, || async {
        let t = texts(&app).await;
        (t.len() >= 3).then_some(t)
    })
    .await;
    assert_eq!(sorted(got), ["a0", "b0", "b1"]);
    assert_eq!(pending_ids(&app).await, [a1.clone(), a2.clone()]);
    // Visibly: the gauge, and the relay component on the status page.
    assert!(
        app.metrics()
            .await
            .contains("substrate_relay_parked_rows 1")
    );
    let (state, reason) = component(&app, "relay").await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("degraded", Some("parked_rows"))
    );
    // The parked key stays held while the relay keeps running.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sorted(texts(&app).await), ["a0", "b0", "b1"]);
    // The operator raises the limit (a relay restarted with it) and redrives from the CLI.
    relay.kill();
    let mut relay = relay_process(&app, &[("SUBSTRATE_LOG__MAX_MESSAGE_BYTES", "2000000")]);
    let out = substrate_cmd(&app)
        .args(["relay", "parked", "redrive", "--all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("redriven 1"));
    let got = eventually(60, || async {
        let t = texts(&app).await;
        (t.len() >= 5).then_some(t)
    })
    .await;
    let alice: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with('a') || t.starts_with('x'))
        .collect();
    assert_eq!(alice, ["a0", big.as_str(), "a2"], "the key drains in order");
    let bob: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with('b'))
        .collect();
    assert_eq!(bob, ["b0", "b1"]);
    let bootstrap = app.store.kafka.as_ref().unwrap().bootstrap();
    let recs = tokio::task::spawn_blocking(move || records_now(&bootstrap, TOPIC))
        .await
        .unwrap();
    assert_eq!(first_copies(&recs)["alice"], [a0, a1, a2]);
    eventually(30, || async {
        let (state, _) = component(&app, "relay").await;
        (state == "operational" && parked(&app).await.is_empty()).then_some(())
    })
    .await;
    relay.kill();
    app.stop().await;
}

/// Creates `topic` with a broker-side record batch limit of `max_bytes`, before substrate
/// would create it (substrate leaves existing topics as they are).
async fn create_small_topic(bootstrap: &str, topic: &str, max_bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let limit = max_bytes.to_string();
    let t = NewTopic::new(topic, 2, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    let res = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .unwrap();
    for r in res {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_broker_refuses_never_lets_a_later_row_of_its_key_through() {
    let broker = Broker::start();
    create_small_topic(&broker.bootstrap(), TOPIC, 20_000).await;
    let store = TestStore::with_broker(Backend::Postgres, Some(broker)).await;
    let mut cfg = test_config(&store);
    cfg.log.relay_park_after = 2;
    // Small producer batches: the refused event travels in a batch of its own, with the next
    // event of its key in flight right behind it.
    cfg.log
        .kafka_options
        .insert("batch.size".into(), "16384".into());
    let app = TestApp::start_on(
        store,
        cfg,
        vec![Role::Gateway, Role::Relay, Role::Consumers],
    )
    .await;
    // Random text: the producer compresses batches (lz4), and the broker checks compressed size.
    let big = incompressible(40_000);
    let a0 = post(&app, "alice", "a0").await;
    let a1 = post(&app, "alice", &big).await;
    let a2 = post(&app, "alice", "a2").await;
    // Posted together so that they share the relay's batch with the refused event.
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(post(&app, &format!("user{i}"), &format!("u{i}")).await);
    }
    let list = eventually(60, || async {
        let l = parked(&app).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["event_id"], a1.as_str());
    assert_eq!(list[0]["attempts"], 2, "refused on its own twice");
    // Every other key flowed; alice's a2 never reached the topic, before or after a1.
    let got = eventually(60, || async {
        let t = texts(&app).await;
        (t.len() >= 6).then_some(t)
    })
    .await;
    assert!(!got.contains(&"a2".to_string()), "{got:?}");
    let bootstrap = app.store.kafka.as_ref().unwrap().bootstrap();
    let b = bootstrap.clone();
    let recs = tokio::task::spawn_blocking(move || records_now(&b, TOPIC))
        .await
        .unwrap();
    let ids: HashSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    assert!(
        !ids.contains(a2.as_str()),
        "a2 reached the broker ahead of a1"
    );
    assert!(!ids.contains(a1.as_str()));
    for o in &others {
        assert!(ids.contains(o.as_str()));
    }
    assert!(
        app.metrics()
            .await
            .contains("substrate_relay_parked_rows 1")
    );
    // The broker's limit stays: the operator discards the event (admin API); the key goes on.
    let id = list[0]["id"].as_i64().unwrap();
    let (s, body) = app
        .post_json(
            "/api/v1/admin/relay/parked/discard",
            &app.admin_token(),
            &json!({ "ids": [id] }),
        )
        .await;
    assert_eq!((s, body["discarded"].clone()), (200, json!([id])));
    eventually(60, || async {
        let t = texts(&app).await;
        t.contains(&"a2".to_string()).then_some(())
    })
    .await;
    let recs = tokio::task::spawn_blocking(move || records_now(&bootstrap, TOPIC))
        .await
        .unwrap();
    assert_eq!(first_copies(&recs)["alice"], [a0, a2]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_that_disagree_on_lanes_and_a_lane_change_keep_every_row_in_order() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let mut cfg = test_config(&store);
    cfg.gateway.batch_max_events = 1000;
    cfg.log.relay_lanes = 4;
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Consumers]).await;
    let (keys, per) = (40usize, 25usize);
    let post_round = |round: usize| {
        let app = &app;
        async move {
            let mut posts = Vec::new();
            for k in 0..keys {
                let batch: Vec<Value> =
                    (0..per).map(|i| message(&format!("{round}-{i}"))).collect();
                let token = app.token(&format!("user{k}"));
                posts.push(async move {
                    app.post_json("/api/v1/events/message/batch", &token, &json!(batch))
                        .await
                        .0
                });
            }
            for s in futures::future::join_all(posts).await {
                assert_eq!(s, 202);
            }
        }
    };
    post_round(0).await;
    // Rows written before migration 0008 (or by an older process) have no key hash yet.
    substrate::on_write!(app.ctx.store, p => {
        sqlx::query("UPDATE outbox SET key_hash = NULL WHERE id % 3 = 0")
            .execute(p)
            .await
            .unwrap();
    });
    // Two relays that disagree on the lane count, in small batches so rows stay pending. The
    // first one fixes the count in the store; the second warns and uses it.
    let mut r1 = relay_process(
        &app,
        &[
            ("SUBSTRATE_LOG__RELAY_LANES", "4"),
            ("SUBSTRATE_LOG__RELAY_BATCH", "20"),
        ],
    );
    eventually(30, || async {
        substrate::relay::layout::stored(&app.ctx.store)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    let mut r2 = relay_process(
        &app,
        &[
            ("SUBSTRATE_LOG__RELAY_LANES", "7"),
            ("SUBSTRATE_LOG__RELAY_BATCH", "20"),
        ],
    );
    let total_first = (keys * per) as i64;
    let published = || async {
        let n: i64 = substrate::on_read!(app.ctx.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL")
                .fetch_one(p)
                .await
                .unwrap()
        });
        n
    };
    eventually(60, || async { (published().await > 50).then_some(()) }).await;
    // Change the lane count while rows are pending, then write more.
    assert!(published().await < total_first, "rows are still pending");
    let out = substrate_cmd(&app)
        .args(["relay", "set-lanes", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (changed["before"].clone(), changed["after"].clone()),
        (json!(4), json!(3))
    );
    post_round(1).await;
    let total = 2 * total_first;
    eventually(120, || async { (published().await == total).then_some(()) }).await;
    // Every event reached the read model once, and each key's events are in order on the
    // topic (first copies; duplicates are allowed).
    let got = eventually(60, || async {
        let t = texts(&app).await;
        (t.len() as i64 >= total).then_some(t)
    })
    .await;
    assert_eq!(got.len() as i64, total);
    let bootstrap = app.store.kafka.as_ref().unwrap().bootstrap();
    let recs = tokio::task::spawn_blocking(move || records_now(&bootstrap, TOPIC))
        .await
        .unwrap();
    let by_id: HashMap<String, String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as::<_, (String, String)>("SELECT event_id, event_key FROM outbox")
            .fetch_all(p)
            .await
            .unwrap()
    })
    .into_iter()
    .collect();
    let order: HashMap<String, i64> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as::<_, (String, i64)>("SELECT event_id, id FROM outbox")
            .fetch_all(p)
            .await
            .unwrap()
    })
    .into_iter()
    .collect();
    let firsts = first_copies(&recs);
    assert_eq!(firsts.len(), keys);
    for (key, ids) in &firsts {
        assert_eq!(ids.len(), 2 * per, "key {key}");
        let ranks: Vec<i64> = ids.iter().map(|i| order[i]).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted, "order of key {key}");
        assert!(ids.iter().all(|i| by_id[i] == *key));
    }
    // The store's layout is the new count, and the relays hold only its lanes.
    let names: Vec<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar(
            "SELECT name FROM leases WHERE name LIKE 'relay.lane.%' AND owner <> $1 AND expires_at > 0",
        )
        .bind(substrate::relay::layout::FENCE_OWNER)
        .fetch_all(p)
        .await
        .unwrap()
    });
    let mut lanes: Vec<i64> = names
        .iter()
        .map(|n| n.trim_start_matches("relay.lane.").parse().unwrap())
        .collect();
    lanes.sort();
    assert_eq!(lanes, [0, 1, 2]);
    r1.kill();
    r2.kill();
    app.stop().await;
}
