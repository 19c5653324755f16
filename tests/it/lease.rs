//! Fenced leases (`store::lease`) on both columns: the module itself (grants, renewals,
//! expiry by the database's clock, epochs, fences, members), and its four users when a holder
//! goes stale — an embedded consumer whose handler outlasts the group's lease while a second
//! member takes over, a member that regains its group after a rebuild it did not see, a relay
//! whose lane passed to another relay before its marks, a prober whose lease passed on before
//! its records, and a saga timer whose object-storage I/O outlasts its claim while a second
//! sagas instance takes it over. (The relay under a frozen broker is in `kafka.rs`.) The
//! consumer scenarios run on the embedded log on both stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use substrate::app::AppContext;
use substrate::config::Config;
use substrate::consumers::{Emitter, Envelope, Handler, HandlerError, dlq, runtime, seeks};
use substrate::log::SeekTo;
use substrate::media::{files, timers};
use substrate::outbox::{NewEvent, Outbox};
use substrate::projections::notifications::{self, NotificationsProjection};
use substrate::relay::{lanes::Lanes, publish};
use substrate::roles::Role;
use substrate::server::Running;
use substrate::store::lease::{self, Fence, members};
use substrate::store::{Store, StoreError, Tx, dialect};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::media::{MediaApp, fast, png};
use crate::support::gate::Gate;
use crate::support::s3::S3Server;
use crate::support::*;

const TOPIC: &str = "public.user.message.events";
const GROUP: &str = "notifications";

/// A store of its own (no broker), migrated.
async fn open_store(b: Backend) -> (TestStore, Store) {
    let ts = TestStore::with_broker(b, None).await;
    let s = Store::connect(&test_config(&ts).store).await.unwrap();
    s.migrate().await.unwrap();
    (ts, s)
}

/// The database's clock (unix micros).
async fn db_now(s: &Store) -> i64 {
    let sql = format!("SELECT {}", dialect::now_micros(s.backend()));
    substrate::on_read!(s, p => { sqlx::query_scalar(&sql).fetch_one(p).await.unwrap() })
}

async fn fence_ok(s: &Store, f: &Fence) -> Result<(), StoreError> {
    let mut tx = s.begin().await.unwrap();
    f.check(&mut tx).await?;
    tx.commit().await
}

fn fence(name: &str, owner: &str, epoch: i64) -> Fence {
    Fence {
        name: name.into(),
        owner: owner.into(),
        epoch,
    }
}

both!(grants_renewals_expiry_and_epochs);
async fn grants_renewals_expiry_and_epochs(b: Backend) {
    let (ts, s) = open_store(b).await;
    let ttl = Duration::from_millis(400);
    let before = db_now(&s).await;
    let a1 = lease::acquire(&s, "l", "a", ttl).await.unwrap().unwrap();
    let after = db_now(&s).await;
    assert_eq!(a1.epoch, 1);
    // The expiry is the database's "now" plus the TTL.
    let ttl_us = ttl.as_micros() as i64;
    assert!(
        (before + ttl_us..=after + ttl_us).contains(&a1.expires_at),
        "{before} {} {after}",
        a1.expires_at
    );
    // The holder renews: same epoch, later expiry. Nobody else gets it meanwhile.
    let a2 = lease::acquire(&s, "l", "a", ttl).await.unwrap().unwrap();
    assert_eq!(a2.epoch, 1);
    assert!(a2.expires_at >= a1.expires_at);
    let renewed = lease::renew(&s, &["l".into()], "a", ttl).await.unwrap();
    assert_eq!(renewed.len(), 1);
    let a_exp = renewed[0].1.expires_at;
    fence_ok(&s, &fence("l", "a", 1)).await.unwrap();
    // "b" gets it exactly when it has lapsed by the database's clock, with the next epoch.
    let b1 = eventually(10, || async {
        let t0 = db_now(&s).await;
        match lease::acquire(&s, "l", "b", ttl).await.unwrap() {
            Some(g) => {
                assert!(db_now(&s).await >= a_exp, "granted before it lapsed");
                Some(g)
            }
            None => {
                assert!(t0 < a_exp, "refused after it lapsed");
                None
            }
        }
    })
    .await;
    assert_eq!(b1.epoch, 2);
    // The old holder's writes are refused; it cannot renew or take it back.
    let e = fence_ok(&s, &fence("l", "a", 1)).await.unwrap_err();
    assert!(e.is_fenced(), "{e}");
    fence_ok(&s, &fence("l", "b", 2)).await.unwrap();
    assert!(
        lease::renew(&s, &["l".into()], "a", ttl)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(lease::acquire(&s, "l", "a", ttl).await.unwrap().is_none());
    // A release hands it over at once; epochs keep growing.
    lease::release(&s, &["l".into()], "b").await.unwrap();
    let a3 = lease::acquire(&s, "l", "a", ttl).await.unwrap().unwrap();
    assert_eq!(a3.epoch, 3);
    assert!(
        fence_ok(&s, &fence("l", "b", 2))
            .await
            .unwrap_err()
            .is_fenced()
    );
    // Several at once: only the current grants pass.
    lease::acquire(&s, "m", "b", ttl).await.unwrap().unwrap();
    let mut tx = s.begin().await.unwrap();
    let held = lease::still_held(
        &mut tx,
        &[
            fence("l", "a", 3),
            fence("l", "b", 2),
            fence("m", "b", 1),
            fence("m", "a", 1),
            fence("none", "a", 1),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(held, vec![true, false, true, false, false]);
    s.close().await;
    ts.drop_db().await;
}

both!(a_fence_holds_off_the_next_grant_until_its_write_commits);
async fn a_fence_holds_off_the_next_grant_until_its_write_commits(b: Backend) {
    let (ts, s) = open_store(b).await;
    let ttl = Duration::from_millis(200);
    let g = lease::acquire(&s, "l", "a", ttl).await.unwrap().unwrap();
    eventually(10, || async {
        (db_now(&s).await > g.expires_at).then_some(())
    })
    .await;
    // Lapsed, but nobody took it: the holder's writes are still the only ones.
    let mut tx = s.begin().await.unwrap();
    fence("l", "a", 1).check(&mut tx).await.unwrap();
    let s2 = s.clone();
    let mut other = tokio::spawn(async move { lease::acquire(&s2, "l", "b", ttl).await });
    // While the fenced transaction is open, the lease cannot be granted anew. (Not a timing
    // assertion: a working fence holds the grant off for as long as the transaction is open.)
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut other)
            .await
            .is_err(),
        "granted under an open fenced write"
    );
    tx.commit().await.unwrap();
    let got = other.await.unwrap().unwrap().unwrap();
    assert_eq!(got.epoch, 2);
    s.close().await;
    ts.drop_db().await;
}

both!(members_announce_count_and_lapse);
async fn members_announce_count_and_lapse(b: Backend) {
    let (ts, s) = open_store(b).await;
    let long = Duration::from_secs(60);
    assert_eq!(members::announce(&s, "x", "m1", long).await.unwrap(), 1);
    assert_eq!(members::announce(&s, "x", "m2", long).await.unwrap(), 2);
    assert_eq!(members::announce(&s, "y", "m1", long).await.unwrap(), 1);
    members::leave(&s, "x", "m1").await.unwrap();
    assert_eq!(members::announce(&s, "x", "m2", long).await.unwrap(), 1);
    // A member that stops announcing itself lapses by the database's clock.
    members::announce(&s, "x", "m3", Duration::from_millis(100))
        .await
        .unwrap();
    eventually(10, || async {
        (members::announce(&s, "x", "m2", long).await.unwrap() == 1).then_some(())
    })
    .await;
    s.close().await;
    ts.drop_db().await;
}

/// The gateway on a fresh store with the embedded log (also on PostgreSQL); consumer groups are
/// started by the test.
async fn embedded_app(b: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let store = TestStore::with_broker(b, None).await;
    let mut cfg = test_config(&store);
    cfg.log.url = "embedded".into();
    cfg.log.poll_interval_ms = 50;
    tweak(&mut cfg);
    TestApp::start_on(store, cfg, vec![Role::Gateway, Role::Relay]).await
}

async fn post(app: &TestApp, text: &str) {
    let (s, r) = app
        .post_json(
            "/api/v1/events/message",
            &app.token("alice"),
            &message(text),
        )
        .await;
    assert_eq!(s, 202, "{r}");
}

async fn texts(app: &TestApp) -> Vec<String> {
    notifications::all(&app.ctx.store)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.payload["message"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_texts(app: &TestApp, n: usize) -> Vec<String> {
    eventually(30, || async {
        let t = texts(app).await;
        (t.len() >= n).then_some(t)
    })
    .await
}

/// The group's lease row: (owner, epoch, expires_at).
async fn group_lease(app: &TestApp) -> Option<(String, i64, i64)> {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_as("SELECT owner, epoch, expires_at FROM leases WHERE name = $1")
            .bind(substrate::log::embedded::lease_name(GROUP))
            .fetch_optional(p)
            .await
            .unwrap()
    })
}

async fn offset(store: &Store) -> Option<i64> {
    substrate::on_read!(store, p => {
        sqlx::query_scalar("SELECT next_offset FROM consumer_offsets WHERE group_name = $1 AND topic = $2")
            .bind(GROUP)
            .bind(TOPIC)
            .fetch_optional(p)
            .await
            .unwrap()
    })
}

fn refused(ctx: &AppContext, user: &str) -> u64 {
    ctx.metrics
        .lease_writes_refused
        .with_label_values(&[user])
        .get()
}

/// The notifications projection, except that the message "slow" blocks until released and
/// then fails (as a handler whose call timed out).
struct Slow {
    inner: NotificationsProjection,
    release: watch::Receiver<bool>,
    entered: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Slow {
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
        if ev.str_field("message") == Some("slow") {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _ = self.release.clone().wait_for(|r| *r).await;
            return Err(HandlerError::Retry("timed out".into()));
        }
        self.inner.handle(ev, tx, out).await
    }
}

both!(a_handler_slower_than_the_lease_loses_the_group_and_its_writes);
async fn a_handler_slower_than_the_lease_loses_the_group_and_its_writes(b: Backend) {
    let app = embedded_app(b, |c| {
        c.consumers.lease_ttl_ms = 300;
        c.consumers.max_poll_interval_ms = 600;
        // The first failure dead-letters: a stale member would write a dead letter at once.
        c.consumers.max_retries = 0;
    })
    .await;
    for m in ["m0", "m1", "m2"] {
        post(&app, m).await;
    }
    let (release, rx) = watch::channel(false);
    let entered = Arc::new(AtomicUsize::new(0));
    let a: Arc<dyn Handler> = Arc::new(Slow {
        inner: NotificationsProjection::new(app.ctx.clone()),
        release: rx,
        entered: entered.clone(),
    });
    let stop = CancellationToken::new();
    let member_a = tokio::spawn(runtime::run_group(app.ctx.clone(), a, stop.clone()));
    wait_texts(&app, 3).await;
    // Watch the group's committed position for the rest of the test.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::<i64>::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (store, seen, watching) = (app.ctx.store.clone(), seen.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::SeqCst) {
                if let Some(o) = offset(&store).await {
                    seen.lock().push(o);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // One request (on SQLite nothing can be written while A's transaction is open).
    let batch: Vec<_> = ["slow", "m4", "m5"].iter().map(|m| message(m)).collect();
    let (s, r) = app
        .post_json(
            "/api/v1/events/message/batch",
            &app.token("alice"),
            &serde_json::json!(batch),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    eventually(20, || async {
        (entered.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let (a_owner, a_epoch, _) = group_lease(&app).await.unwrap();
    // A second member joins while A's handler is stuck past the lease.
    let b_handler: Arc<dyn Handler> = Arc::new(NotificationsProjection::new(app.ctx.clone()));
    let member_b = tokio::spawn(runtime::run_group(app.ctx.clone(), b_handler, stop.clone()));
    if b == Backend::Postgres {
        // B takes the group over while A is still inside its batch.
        eventually(20, || async {
            let (owner, epoch, _) = group_lease(&app).await?;
            (owner != a_owner && epoch > a_epoch).then_some(())
        })
        .await;
    } else {
        // SQLite: A's open transaction keeps every other writer out, so no one can be granted
        // the group before it ends; wait until A's lease has lapsed by the database's clock.
        eventually(20, || async {
            let (_, _, exp) = group_lease(&app).await?;
            (db_now(&app.ctx.store).await > exp).then_some(())
        })
        .await;
    }
    release.send_replace(true);
    // Each event gets exactly one outcome: projected, or (by the member that legitimately held
    // the group) dead-lettered — never both.
    let dead_slow = || async {
        dlq::list(&app.ctx.store, &dlq::Filter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.group == GROUP)
            .count()
    };
    let end: i64 = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT MAX(id) FROM outbox WHERE topic = $1").bind(TOPIC).fetch_one(p).await.unwrap()
    });
    eventually(30, || async {
        let settled = refused(&app.ctx, "consumer") >= 1 || dead_slow().await == 1;
        (settled && offset(&app.ctx.store).await == Some(end + 1)).then_some(())
    })
    .await;
    let got = wait_texts(&app, 5).await;
    let dead = dead_slow().await;
    let slow_rows = got.iter().filter(|t| *t == "slow").count();
    assert_eq!(slow_rows + dead, 1, "rows {got:?}, dead letters {dead}");
    for m in ["m0", "m1", "m2", "m4", "m5"] {
        assert_eq!(got.iter().filter(|t| *t == m).count(), 1, "{m}: {got:?}");
    }
    if b == Backend::Postgres {
        assert!(
            refused(&app.ctx, "consumer") >= 1,
            "the stale member's dead letter was not refused"
        );
        assert_eq!(dead, 0);
    }
    watching.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    let seen = seen.lock().clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the group's offset moved backwards: {seen:?}"
    );
    stop.cancel();
    member_a.await.unwrap().unwrap();
    member_b.await.unwrap().unwrap();
    app.stop().await;
}

/// The notifications projection with a switchable fault: fails on `only` (or on every
/// event) while `broken` is set.
struct Broken {
    inner: NotificationsProjection,
    only: Option<&'static str>,
    broken: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Broken {
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
        let hit = self.only.is_none_or(|m| ev.str_field("message") == Some(m));
        if hit && self.broken.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(HandlerError::Retry("injected fault".into()));
        }
        self.inner.handle(ev, tx, out).await
    }
    async fn reset(&self, tx: &mut Tx) -> Result<bool, HandlerError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.inner.reset(tx).await
    }
}

both!(a_member_that_regains_the_group_after_a_rebuild_reloads_its_cursors);
async fn a_member_that_regains_the_group_after_a_rebuild_reloads_its_cursors(b: Backend) {
    let app = embedded_app(b, |c| {
        c.consumers.lease_ttl_ms = 300;
        c.consumers.max_poll_interval_ms = 600;
        c.consumers.max_retries = 10_000;
        c.consumers.backoff_initial_ms = 20;
        c.consumers.backoff_max_ms = 100;
    })
    .await;
    let all = ["m0", "m1", "m2", "m3", "m4"];
    for m in all {
        post(&app, m).await;
    }
    let broken = |only| Broken {
        inner: NotificationsProjection::new(app.ctx.clone()),
        only,
        broken: Arc::new(AtomicBool::new(false)),
        failures: Arc::new(AtomicUsize::new(0)),
        resets: Arc::new(AtomicUsize::new(0)),
    };
    // A fails on "stall" for as long as the test wants: it is busy retrying, not polling.
    let a = Arc::new(broken(Some("stall")));
    a.broken.store(true, Ordering::SeqCst);
    let (a_broken, a_failures, a_resets) = (a.broken.clone(), a.failures.clone(), a.resets.clone());
    let a_stop = CancellationToken::new();
    let member_a = tokio::spawn(runtime::run_group(app.ctx.clone(), a, a_stop.clone()));
    assert_eq!(wait_texts(&app, 5).await, all);
    post(&app, "stall").await;
    eventually(20, || async {
        (a_failures.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    // While A is stuck (its lease lapses), the group is rebuilt: B joins, takes the group,
    // empties the table and rewinds first thing — and then cannot make progress (its handler
    // fails) until it stops cleanly and hands the group back.
    let req = seeks::request(&app.ctx.store, GROUP, TOPIC, SeekTo::Beginning, true)
        .await
        .unwrap();
    // (A second past the lease's expiry: a renewal A's keeper sent just before it stopped has
    // landed by then.)
    eventually(20, || async {
        let (_, _, exp) = group_lease(&app).await?;
        (db_now(&app.ctx.store).await > exp + 1_000_000).then_some(())
    })
    .await;
    let bh = Arc::new(broken(None));
    bh.broken.store(true, Ordering::SeqCst);
    let (b_failures, b_resets) = (bh.failures.clone(), bh.resets.clone());
    let b_stop = CancellationToken::new();
    let member_b = tokio::spawn(runtime::run_group(app.ctx.clone(), bh, b_stop.clone()));
    eventually(30, || async {
        let applied = seeks::is_applied(&app.ctx.store, req).await.unwrap();
        let failing = b_failures.load(Ordering::SeqCst) >= 1;
        (applied && failing && texts(&app).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(offset(&app.ctx.store).await, Some(0));
    b_stop.cancel();
    member_b.await.unwrap().unwrap();
    // A gets unstuck and regains the group: it must start where the rebuild put the group,
    // not where it was before.
    a_broken.store(false, Ordering::SeqCst);
    post(&app, "after").await;
    let want = ["m0", "m1", "m2", "m3", "m4", "stall", "after"];
    let got = eventually(30, || async {
        let t = texts(&app).await;
        (t.len() >= want.len() || t.last().is_some_and(|l| l == "after")).then_some(t)
    })
    .await;
    assert_eq!(got, want, "the rebuilt table");
    // The rebuild was applied once, by the member that held the group: the member that was
    // busy meanwhile does not apply it again when it comes back.
    assert_eq!(b_resets.load(Ordering::SeqCst), 1);
    assert_eq!(
        a_resets.load(Ordering::SeqCst),
        0,
        "the rebuild was applied twice"
    );
    a_stop.cancel();
    member_a.await.unwrap().unwrap();
    app.stop().await;
}

both!(a_relay_whose_lane_passed_on_cannot_mark_it);
async fn a_relay_whose_lane_passed_on_cannot_mark_it(b: Backend) {
    let app = embedded_app(b, |_| {}).await;
    let store = app.ctx.store.clone();
    // Rows waiting for a relay (a Kafka-mode outbox), one lane.
    let outbox = Outbox::new(1, false);
    let events: Vec<NewEvent> = (0..3)
        .map(|i| NewEvent {
            event_id: format!("e{i}"),
            topic: TOPIC.into(),
            key: "k".into(),
            event_type: "user.message.events".into(),
            schema_id: 1,
            payload: vec![0],
            headers: Default::default(),
            created_at: substrate::store::now_micros(),
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    outbox
        .append(&mut tx, &events.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ttl = Duration::from_millis(300);
    let mut first = Lanes::new(store.clone(), 1, ttl);
    first.refresh().await.unwrap();
    assert_eq!(first.held(), vec![0]);
    let rows = publish::pending(&store, 1, &[0], 10, &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // The first relay sends them; before its acknowledgements come back, its lease lapses
    // and another relay takes the lane.
    let second = Arc::new(tokio::sync::Mutex::new(Lanes::new(store.clone(), 1, ttl)));
    eventually(10, || async {
        let mut l = second.lock().await;
        l.refresh().await.unwrap();
        (l.held() == vec![0]).then_some(())
    })
    .await;
    let mut second = second.lock().await;
    assert_eq!(
        first.mark_published(&app.ctx, &rows, &ids).await.unwrap(),
        3
    );
    assert!(
        first.held().is_empty(),
        "the stale relay still sends the lane"
    );
    let pending = || async {
        publish::pending(&store, 1, &[0], 10, &[])
            .await
            .unwrap()
            .len()
    };
    assert_eq!(pending().await, 3, "a stale relay's marks were applied");
    assert_eq!(refused(&app.ctx, "relay"), 3);
    // The current holder's marks go through.
    assert_eq!(
        second.mark_published(&app.ctx, &rows, &ids).await.unwrap(),
        0
    );
    assert_eq!(pending().await, 0);
    second.release().await;
    app.stop().await;
}

/// PostgreSQL commits out of id order: a row whose writer drew its id first but committed
/// last becomes visible after the relay read (and sent) the rows above it. While those rows'
/// marks are written off the send path, the relay leaves exactly them out of its next read
/// (`publish::pending`'s `except`): the late row is not skipped, and a later row of its key
/// does not go before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_late_below_the_rows_being_marked_is_read_before_its_keys_later_rows() {
    let app = embedded_app(Backend::Postgres, |_| {}).await;
    let store = app.ctx.store.clone();
    let outbox = Outbox::new(1, false);
    let ev = |i: usize, key: &str| NewEvent {
        event_id: format!("late{i}"),
        topic: TOPIC.into(),
        key: key.into(),
        event_type: "user.message.events".into(),
        schema_id: 1,
        payload: vec![0],
        headers: Default::default(),
        created_at: substrate::store::now_micros(),
    };
    let (slow_ev, a, b, later) = (ev(0, "k"), ev(1, "other"), ev(2, "other"), ev(3, "k"));
    // The slow writer draws the lowest id and commits last.
    let mut slow = store.begin().await.unwrap();
    outbox.append(&mut slow, &[&slow_ev]).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    outbox.append(&mut tx, &[&a, &b]).await.unwrap();
    tx.commit().await.unwrap();
    let event_ids = |rows: &[substrate::outbox::OutboxRow]| {
        rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>()
    };
    let sent = publish::pending(&store, 1, &[0], 10, &[]).await.unwrap();
    assert_eq!(event_ids(&sent), ["late1", "late2"]);
    // Acknowledged; their marks are being written. Meanwhile the slow row commits, and a later
    // row of its key is appended.
    let marking: Vec<i64> = sent.iter().map(|r| r.id).collect();
    slow.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    outbox.append(&mut tx, &[&later]).await.unwrap();
    tx.commit().await.unwrap();
    let next = publish::pending(&store, 1, &[0], 10, &marking)
        .await
        .unwrap();
    assert_eq!(event_ids(&next), ["late0", "late3"]);
    assert!(
        next[0].id < marking[0],
        "the slow row did not draw the lowest id"
    );
    app.stop().await;
}

both!(a_prober_whose_lease_passed_on_cannot_record);
async fn a_prober_whose_lease_passed_on_cannot_record(b: Backend) {
    use substrate::status::history::{self, Outcome};
    let app = embedded_app(b, |_| {}).await;
    let s = &app.ctx.store;
    let ttl = Duration::from_millis(300);
    let g = lease::acquire(s, "probe", "first", ttl)
        .await
        .unwrap()
        .unwrap();
    let stale = fence("probe", "first", g.epoch);
    let sent = substrate::store::now_micros();
    history::run_started(s, &stale, "run-1", "first", sent)
        .await
        .unwrap();
    // Its run stalls; the lease lapses and another instance takes over.
    let g2 = eventually(10, || async {
        lease::acquire(s, "probe", "second", ttl).await.unwrap()
    })
    .await;
    let current = fence("probe", "second", g2.epoch);
    let report = app.ctx.status.evaluate(&app.ctx).await;
    for e in [
        history::run_finished(s, &stale, "run-1", Outcome::Ok, Some(1000))
            .await
            .unwrap_err(),
        history::run_started(s, &stale, "run-2", "first", sent)
            .await
            .unwrap_err(),
        history::record(s, &stale, &report).await.unwrap_err(),
    ] {
        assert!(e.is_fenced(), "{e}");
    }
    let runs: Vec<(String, String)> = substrate::on_read!(s, p => {
        sqlx::query_as("SELECT probe_id, outcome FROM probe_runs ORDER BY id").fetch_all(p).await.unwrap()
    });
    assert_eq!(runs, vec![("run-1".to_string(), "pending".to_string())]);
    let today = history::day_of(report.checked_at);
    assert!(history::daily(s, today).await.unwrap().is_empty());
    // The current holder records.
    history::record(s, &current, &report).await.unwrap();
    assert!(!history::daily(s, today).await.unwrap().is_empty());
    app.stop().await;
}

/// Another process on the test's store (in-process), with roles and settings of its own.
struct Instance {
    ctx: AppContext,
    running: Running,
}

impl Instance {
    async fn start(app: &TestApp, roles: Vec<Role>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = test_config(&app.store);
        cfg.http.public_url = Some(app.base.clone());
        tweak(&mut cfg);
        let ctx = AppContext::build(cfg).await.expect("build");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running =
            substrate::server::start(ctx.clone(), roles, listener, CancellationToken::new())
                .unwrap();
        Instance { ctx, running }
    }

    async fn stop(self) {
        self.running.stop().await.expect("clean stop");
    }
}

/// Quick sagas on the test's S3 server (`real`), reached through `via`; presigned URLs point
/// clients at the server itself.
fn sagas_on_s3(c: &mut Config, real: &str, via: &str) {
    use crate::support::s3::{ACCESS_KEY, BUCKET, SECRET_KEY};
    fast(c);
    c.objects.url = format!("s3://{BUCKET}");
    c.objects.endpoint = Some(via.to_string());
    c.objects.public_endpoint = Some(real.to_string());
    c.objects.region = "us-east-1".into();
    c.objects.access_key_id = Some(substrate::config::Secret::new(ACCESS_KEY));
    c.objects.secret_access_key = Some(substrate::config::Secret::new(SECRET_KEY));
    c.media.timer_lease_secs = 1;
    c.media.starting_credits = 3;
}

both!(a_timer_step_slower_than_its_claim_completes_once);
async fn a_timer_step_slower_than_its_claim_completes_once(b: Backend) {
    // Object storage on S3 on both columns, so one instance's path to it can be slowed.
    let s3 = S3Server::start().await;
    let slow_path = Gate::start(s3.port).await;
    let (direct, slow) = (s3.endpoint.clone(), slow_path.endpoint());
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay, Role::Consumers], |c| {
        sagas_on_s3(c, &direct, &direct)
    })
    .await;
    // Instance A does the saga's work, but its path to object storage is slow.
    let a = Instance::start(&app, vec![Role::Sagas], |c| sagas_on_s3(c, &direct, &slow)).await;
    let app = MediaApp { app, s3: Some(s3) };
    let bytes = png(5_000);
    let rid = app.intent("uma", "cat.png", "image/png", bytes.len()).await;
    let ready = app.note("uma", "media.upload_ready", &rid).await;
    let (s, body) = app
        .put(
            ready.payload["upload_url"].as_str().unwrap(),
            bytes.clone(),
            "image/png",
        )
        .await;
    assert_eq!(s, 200, "{body}");
    slow_path.close();
    let key = ready.payload["file_path"].as_str().unwrap().to_string();
    app.bucket_notification(&key, bytes.len()).await;
    // A claims the move and is stuck in its I/O, past its claim.
    eventually(30, || async {
        let ts = timers::for_request(&app.ctx.store, &rid).await.unwrap();
        ts.iter()
            .any(|t| {
                t.kind == timers::kind::UPLOAD_MOVE
                    && t.claimed_by.as_deref() == Some(a.ctx.media.instance.as_str())
            })
            .then_some(())
    })
    .await;
    // Instance B takes the timer over once the claim has run out, and completes the step.
    let b_inst = Instance::start(&app, vec![Role::Sagas], |c| {
        sagas_on_s3(c, &direct, &direct)
    })
    .await;
    let u = app.wait_state(&rid, "confirmed").await;
    // A's I/O finishes late; its completion is refused.
    slow_path.open();
    eventually(30, || async {
        (refused(&a.ctx, "timer") >= 1).then_some(())
    })
    .await;
    // The step's effects happened once.
    assert_eq!(app.wait_state(&rid, "confirmed").await.state, "confirmed");
    let confirmed = app
        .events_on(substrate::media::topics::UPLOAD_CONFIRMED, Some(&rid))
        .await;
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(app.balance("uma").await, 2, "one credit spent");
    assert_eq!(app.ledger_count("uma", &rid, "refund").await, 0);
    let file = files::get(&app.ctx.store, &u.file_path).await.unwrap();
    assert_eq!(file.map(|f| f.file_size), Some(bytes.len() as i64));
    assert!(app.exists(&u.file_path).await);
    assert!(
        timers::for_request(&app.ctx.store, &rid)
            .await
            .unwrap()
            .iter()
            .all(|t| t.kind != timers::kind::UPLOAD_MOVE)
    );
    b_inst.stop().await;
    a.stop().await;
    app.stop().await;
}
