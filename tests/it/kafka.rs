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

async fn published(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL";
    sqlx::query_scalar(sql)
        .fetch_one(app.ctx.store.pg_pool().expect("pg"))
        .await
        .unwrap()
}

/// A `serve --roles relay` process of `app`'s configuration, relaying `batch` rows at a time
/// (killed when dropped).
fn relay_process(app: &TestApp, batch: usize) -> Proc {
    Proc(
        substrate_cmd(app)
            .args(["serve", "--roles", "relay"])
            .env("SUBSTRATE_LOG__RELAY_BATCH", batch.to_string())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_key_with_two_relays() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let mut cfg = test_config(&store);
    cfg.gateway.batch_max_events = 1000;
    cfg.log.relay_batch = 300;
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await;
    // A second relay instance on the same outbox.
    let mut second = relay_process(&app, 300);
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
    let spawn = || relay_process(&app, 100);
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

/// The relay writes a batch's marks while it reads and sends the next batch. Here the marks
/// cannot land (the pending outbox rows are locked, so the mark `UPDATE` waits): the relay has
/// rows on the broker that are not marked, and is SIGKILLed in that state. The next relay
/// sends them again — duplicates, within at-least-once — and loses nothing: every event
/// reaches the broker, and each key's first copies are in posting order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_between_send_and_mark_loses_nothing() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let mut cfg = test_config(&store);
    cfg.gateway.batch_max_events = 1000;
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway]).await;
    let pool = app.ctx.store.pg_pool().unwrap().clone();
    let users = ["alice", "bob", "carol"];
    let per_user = 600;
    for u in users {
        let t = app.token(u);
        let batch: Vec<Value> = (0..per_user).map(|i| message(&format!("{i}"))).collect();
        let (s, _) = app
            .post_json("/api/v1/events/message/batch", &t, &json!(batch))
            .await;
        assert_eq!(s, 202);
    }
    let total = users.len() * per_user;
    // No mark can commit while this transaction holds the pending rows.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM outbox WHERE published_at IS NULL FOR UPDATE")
        .fetch_all(&mut *lock)
        .await
        .unwrap();
    let spawn = || relay_process(&app, 50);
    let mut relay = spawn();
    // It holds lanes, has created the topic and sent its first batches.
    eventually(60, || async {
        let lanes: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases WHERE name LIKE 'relay.lane.%' AND expires_at > 0",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (lanes > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Rows on the broker, none marked: sent, not marked.
    let bootstrap = app.store.kafka.as_ref().unwrap().bootstrap();
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || read_topic(&b, TOPIC, 50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(published(&app).await, 0, "a mark went through the lock");
    relay.kill(); // SIGKILL, marks unwritten
    lock.rollback().await.unwrap();
    let mut relay = spawn();
    eventually(90, || async {
        (published(&app).await as usize == total).then_some(())
    })
    .await;
    relay.kill();
    let got = tokio::task::spawn_blocking(move || read_topic(&bootstrap, TOPIC, total))
        .await
        .unwrap();
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
    assert_eq!(seen.len(), total);
    assert_eq!(per_key.len(), users.len());
    for (k, seq) in &per_key {
        let want: Vec<i64> = (0..per_user as i64).collect();
        assert_eq!(seq, &want, "order of key {k}");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_offset_commit_does_not_make_the_member_leave_and_rejoin() {
    use substrate::log::Position;
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await;
    let t = app.token("alice");
    for i in 0..3 {
        let (s, _) = app
            .post_json("/api/v1/events/message", &t, &message(&format!("m{i}")))
            .await;
        assert_eq!(s, 202);
    }
    wait_relayed(&app).await;
    let group = "rejoin-test";
    let topics = vec![TOPIC.to_string()];
    // A member that owns the group's partitions and keeps polling.
    let mut owner = app.ctx.log.subscribe(group, &topics).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while owner
        .poll(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner got no records"
        );
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let owner_task = tokio::spawn(async move {
        while !s.is_cancelled() {
            let _ = owner.poll(10, Duration::from_millis(200)).await;
        }
        owner.close().await;
    });
    // A member that has not joined the group's generation yet: the broker refuses its commit
    // (a rebalance under way looks the same). It reports that, and stays as it is.
    let mut late = app.ctx.log.subscribe(group, &topics).await.unwrap();
    let pos = [Position {
        topic: TOPIC.into(),
        partition: 0,
        next_offset: 1,
    }];
    let r = late.commit(&pos).await;
    assert!(r.is_err(), "the broker refused the commit: {r:?}");
    assert_eq!(
        late.rejoins(),
        0,
        "a refused commit does not make the member leave and rejoin its group"
    );
    late.close().await;
    stop.cancel();
    owner_task.await.unwrap();
    app.stop().await;
}

/// The lane epoch a record was sent under (its `relay_lease` header, `{lane}/{epoch}`).
fn lease_epoch(g: &Got) -> (i64, i64) {
    let v = g.headers.get("relay_lease").expect("relay_lease header");
    let (lane, epoch) = v.split_once('/').expect("lane/epoch");
    (lane.parse().unwrap(), epoch.parse().unwrap())
}

/// A relay instance of its own on `app`'s store (in-process).
async fn relay_instance(
    app: &TestApp,
    tweak: impl FnOnce(&mut substrate::config::Config),
) -> (substrate::app::AppContext, substrate::server::Running) {
    let mut cfg = test_config(&app.store);
    tweak(&mut cfg);
    let ctx = substrate::app::AppContext::build(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = substrate::server::start(
        ctx.clone(),
        vec![Role::Relay],
        listener,
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    (ctx, running)
}

/// Relays holding lanes now (by the database's clock).
async fn lane_holders(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(DISTINCT owner) FROM leases WHERE name LIKE 'relay.lane.%' \
         AND expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn pg_now(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The broker freezes (SIGSTOP) for longer than the lane lease while a relay is sending, and a
/// second relay joins meanwhile. The first relay keeps renewing the lanes of its batch (the
/// store answers) and hands none of them over while its sends are outstanding; lanes are
/// handed over to the newcomer only once the broker answers again. On the broker, each key's records carry non-decreasing lane epochs (never two
/// relays on one lane at once), and each key's first copies are in posting order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stall_longer_than_the_lane_lease_never_has_two_relays_on_a_lane() {
    let store = TestStore::with_broker(Backend::Postgres, Some(Broker::start())).await;
    let ttl_ms: i64 = 2000;
    let tweak = |c: &mut substrate::config::Config| {
        c.log.relay_lease_ttl_ms = ttl_ms as u64;
        c.log.relay_batch = 100;
    };
    let mut cfg = test_config(&store);
    tweak(&mut cfg);
    let app = TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await;
    let pool = app.ctx.store.pg_pool().unwrap().clone();
    // Load on 20 keys, each key's events posted in order, until told to stop.
    let keys = 20;
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (http, url, stop) = (
            app.http.clone(),
            app.url("/api/v1/events/message/batch"),
            stop_load.clone(),
        );
        let tokens: Vec<String> = (0..keys).map(|k| app.token(&format!("user{k}"))).collect();
        tokio::spawn(async move {
            let mut round = 0i64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for t in &tokens {
                    let batch: Vec<Value> = (0..5)
                        .map(|i| message(&format!("{}", round * 5 + i)))
                        .collect();
                    let r = http.post(&url).bearer_auth(t).json(&batch).send().await;
                    assert_eq!(r.unwrap().status().as_u16(), 202);
                }
                round += 1;
            }
            round
        })
    };
    eventually(30, || async { (published(&app).await > 300).then_some(()) }).await;
    let broker = app.store.kafka.as_ref().unwrap();
    broker.pause();
    let frozen_at = pg_now(&pool).await;
    eventually(60, || async {
        (pg_now(&pool).await > frozen_at + 2 * ttl_ms * 1000).then_some(())
    })
    .await;
    // A second relay joins while the broker is still frozen.
    let (ctx2, second) = relay_instance(&app, tweak).await;
    let joined = pg_now(&pool).await;
    eventually(60, || async {
        (pg_now(&pool).await > joined + 2 * ttl_ms * 1000).then_some(())
    })
    .await;
    broker.resume();
    // The lanes are shared once the first relay's batches were acknowledged; then more load.
    eventually(60, || async {
        (lane_holders(&pool).await == 2).then_some(())
    })
    .await;
    let shared_at = published(&app).await;
    eventually(60, || async {
        (published(&app).await > shared_at + 500).then_some(())
    })
    .await;
    stop_load.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = load.await.unwrap();
    wait_relayed(&app).await;
    let total = (keys as i64 * rounds * 5) as usize;
    let bootstrap = broker.bootstrap();
    let got = tokio::task::spawn_blocking(move || read_topic(&bootstrap, TOPIC, total))
        .await
        .unwrap();
    let mut epochs: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for g in &got {
        epochs
            .entry(g.key.clone())
            .or_default()
            .push(lease_epoch(g));
        if !seen.insert(g.headers["ce_id"].clone()) {
            continue;
        }
        let v = app.ctx.schemas.decode_json(&g.value).await.unwrap();
        let n: i64 = v["message"].as_str().unwrap().parse().unwrap();
        per_key.entry(g.key.clone()).or_default().push(n);
    }
    assert_eq!(per_key.len(), keys);
    for (k, seq) in &per_key {
        let want: Vec<i64> = (0..rounds * 5).collect();
        assert_eq!(seq, &want, "order of key {k}");
    }
    for (k, e) in &epochs {
        assert!(
            e.windows(2).all(|w| w[0].0 == w[1].0 && w[0].1 <= w[1].1),
            "key {k} was sent by two relays at once: {e:?}"
        );
    }
    let handed_over = epochs
        .values()
        .filter(|e| e.first().map(|f| f.1) != e.last().map(|l| l.1))
        .count();
    assert!(
        handed_over > 0,
        "no lane changed hands: the scenario did not happen"
    );
    assert!(
        ctx2.metrics
            .relay_published
            .with_label_values(&[TOPIC])
            .get()
            > 0
    );
    second.stop().await.unwrap();
    app.stop().await;
}
