//! Crashes: the sagas role runs as a separate `substrate serve --roles sagas` process that is
//! killed with SIGKILL mid-saga and around the TTL timer, then restarted. Sagas complete,
//! timers that came due while it was down fire after the restart, and no credit is charged
//! or refunded twice. (The gateway and the notifications projection run in the test.)

use std::process::{Child, Command, Stdio};

use substrate::media::{files, timers};
use substrate::roles::Role;

use crate::media::{MediaApp, png};
use crate::support::*;

/// A `substrate serve --roles sagas` process on the test's store and object storage.
struct SagasProcess {
    env: Vec<(String, String)>,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl SagasProcess {
    fn new(app: &MediaApp) -> SagasProcess {
        let c = &app.ctx.config;
        let mut env: Vec<(String, String)> = vec![
            ("SUBSTRATE_STORE__URL".into(), app.store.url.clone()),
            ("SUBSTRATE_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            // Blob URLs point at the test's gateway.
            ("SUBSTRATE_HTTP__PUBLIC_URL".into(), app.base.clone()),
            (
                "SUBSTRATE_SCHEMAS__DIR".into(),
                repo().join("avro").display().to_string(),
            ),
            ("SUBSTRATE_AUTH__HS256_SECRET".into(), SECRET.into()),
            (
                "SUBSTRATE_GATEWAY__ROUTES_FILE".into(),
                c.gateway.routes_file.display().to_string(),
            ),
            // The same log as the test's process (embedded, or a broker).
            ("SUBSTRATE_LOG__URL".into(), c.log.url.clone()),
            ("SUBSTRATE_OBJECTS__URL".into(), c.objects.url.clone()),
            (
                "SUBSTRATE_MEDIA__STARTING_CREDITS".into(),
                c.media.starting_credits.to_string(),
            ),
            (
                "SUBSTRATE_MEDIA__UPLOAD_TTL_SECS".into(),
                c.media.upload_ttl_secs.to_string(),
            ),
            (
                "SUBSTRATE_MEDIA__URL_TTL_SECS".into(),
                c.media.url_ttl_secs.to_string(),
            ),
            (
                "SUBSTRATE_MEDIA__UPLOAD_SWEEP_GRACE_SECS".into(),
                c.media.upload_sweep_grace_secs.to_string(),
            ),
            ("SUBSTRATE_MEDIA__TIMER_POLL_MS".into(), "50".into()),
            ("SUBSTRATE_MEDIA__TIMER_LEASE_SECS".into(), "1".into()),
            ("SUBSTRATE_MEDIA__MOVE_BACKOFF_MS".into(), "50".into()),
            ("SUBSTRATE_MEDIA__HEAD_CHECK_SECS".into(), "0".into()),
            (
                "SUBSTRATE_CONSUMERS__BACKOFF_INITIAL_MS".into(),
                "20".into(),
            ),
            ("SUBSTRATE_TELEMETRY__LOG_FILTER".into(), "error".into()),
        ];
        if let Some(s3) = &app.s3 {
            env.extend(s3.env());
        }
        SagasProcess {
            env,
            dir: app.store.dir.path().to_path_buf(),
            child: None,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(env!("CARGO_BIN_EXE_substrate"))
            .args(["serve", "--roles", "sagas"])
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn substrate");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush, claims left behind.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("wait");
        }
    }
}

impl Drop for SagasProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn start_without_sagas(
    b: Backend,
    tweak: impl FnOnce(&mut substrate::config::Config),
) -> MediaApp {
    MediaApp::start_roles(b, vec![Role::Gateway, Role::Relay, Role::Consumers], tweak).await
}

both!(ttl_refunds_exactly_once_across_kills_and_restarts);
async fn ttl_refunds_exactly_once_across_kills_and_restarts(b: Backend) {
    let app = start_without_sagas(b, |c| {
        c.media.starting_credits = 2;
        c.media.upload_ttl_secs = 4;
        // The URL expires with the saga, so its sweep is due when the saga expires.
        c.media.url_ttl_secs = 4;
    })
    .await;
    let mut sagas = SagasProcess::new(&app);
    sagas.start();
    let rid = app.intent("quinn", "t.wav", "audio/wav", 64).await;
    // Kill it once the URL is signed, well before the TTL (4s after approval).
    app.wait_state(&rid, "signed").await;
    sagas.kill9();
    assert_eq!(app.balance("quinn").await, 1);

    // The TTL comes due while no sagas process runs: nothing happens…
    let ttl = eventually(20, || async {
        let t = timers::for_request(&app.ctx.store, &rid).await.unwrap();
        t.into_iter()
            .find(|t| t.kind == "upload_ttl" && t.fire_at < substrate::store::now_micros())
    })
    .await;
    assert!(ttl.fire_at < substrate::store::now_micros());
    assert_eq!(app.upload_row(&rid).await.unwrap().state, "signed");
    assert_eq!(app.balance("quinn").await, 1);

    // …until it restarts: the timer fires. Kill it again the moment the expiry is visible.
    sagas.start();
    app.wait_state(&rid, "expired").await;
    sagas.kill9();
    sagas.start();
    app.note("quinn", "media.upload_expired", &rid).await;
    eventually(20, || async {
        timers::for_request(&app.ctx.store, &rid)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    sagas.kill9();
    sagas.start();
    // A late upload after the expiry is not a second refund either.
    app.ctx
        .objects
        .put(
            &app.upload_row(&rid).await.unwrap().upload_path,
            bytes::Bytes::from_static(b"late"),
        )
        .await
        .unwrap();
    let key = app.upload_row(&rid).await.unwrap().upload_path;
    substrate::media::upload::detect::object_created(
        &app.ctx,
        &key,
        4,
        substrate::media::upload::detect::Source::Blob,
    )
    .await
    .unwrap();
    eventually(20, || async { (!app.exists(&key).await).then_some(()) }).await;
    sagas.kill9();

    assert_eq!(app.balance("quinn").await, 2);
    assert_eq!(app.ledger_count("quinn", &rid, "charge").await, 1);
    assert_eq!(app.ledger_count("quinn", &rid, "refund").await, 1);
    assert_eq!(
        app.events_on("public.media.expired.events", Some(&rid))
            .await
            .len(),
        1
    );
    // One expiry event, so one notification (the projection keys them by event id).
    let expired_notes = app
        .notes("quinn")
        .await
        .into_iter()
        .filter(|n| n.event_type == "media.upload_expired")
        .count();
    assert_eq!(expired_notes, 1);
    app.stop().await;
}

both!(kill_mid_saga_then_restart_completes_without_double_charge);
async fn kill_mid_saga_then_restart_completes_without_double_charge(b: Backend) {
    let app = start_without_sagas(b, |c| c.media.starting_credits = 10).await;
    let mut sagas = SagasProcess::new(&app);
    sagas.start();
    let n = 4;
    let mut rids = Vec::new();
    for i in 0..n {
        rids.push(
            app.intent("rita", &format!("f{i}.png"), "image/png", 1000 + i)
                .await,
        );
    }
    // Kill it as soon as the first saga got its URL; the others are somewhere in between.
    eventually(30, || async {
        for r in &rids {
            if app.upload_row(r).await.is_some_and(|u| u.state == "signed") {
                return Some(());
            }
        }
        None
    })
    .await;
    sagas.kill9();
    sagas.start();
    for r in &rids {
        app.wait_state(r, "signed").await;
    }
    // The client uploads every file (the sagas process keeps running meanwhile).
    for (i, r) in rids.iter().enumerate() {
        let ready = app.note("rita", "media.upload_ready", r).await;
        let bytes = png(1000 + i);
        let (s, body) = app
            .put(
                ready.payload["upload_url"].as_str().unwrap(),
                bytes,
                "image/png",
            )
            .await;
        assert_eq!(s, 200, "{body}");
        app.bucket_notification(ready.payload["file_path"].as_str().unwrap(), 1000 + i)
            .await;
    }
    // Kill it again while the uploads are being moved and confirmed.
    eventually(30, || async {
        for r in &rids {
            if app
                .upload_row(r)
                .await
                .is_some_and(|u| u.state == "received" || u.state == "confirmed")
            {
                return Some(());
            }
        }
        None
    })
    .await;
    sagas.kill9();
    sagas.start();
    for r in &rids {
        app.wait_state(r, "confirmed").await;
    }
    sagas.kill9();

    assert_eq!(app.balance("rita").await, 10 - n as i64);
    for (i, r) in rids.iter().enumerate() {
        assert_eq!(app.ledger_count("rita", r, "charge").await, 1, "{r}");
        assert_eq!(app.ledger_count("rita", r, "refund").await, 0, "{r}");
        assert_eq!(
            app.events_on("public.media.upload.confirmed", Some(r))
                .await
                .len(),
            1,
            "confirmed once: {r}"
        );
        assert_eq!(
            app.events_on("public.media.upload.approved", Some(r))
                .await
                .len(),
            1,
            "approved once: {r}"
        );
        let f = files::get(&app.ctx.store, &format!("files/rita/{r}/f{i}.png"))
            .await
            .unwrap()
            .expect("file row");
        assert_eq!(
            (f.status.as_str(), f.file_size),
            ("active", 1000 + i as i64)
        );
        assert!(app.exists(&f.file_path).await);
    }
    for r in &rids {
        app.note("rita", "media.upload_completed", r).await;
    }
    app.stop().await;
}

both!(two_sagas_instances_share_the_timers_and_fire_each_once);
async fn two_sagas_instances_share_the_timers_and_fire_each_once(b: Backend) {
    // One sagas instance in the test, one in a child process, on the same store.
    let app = MediaApp::start(b, |c| {
        c.media.starting_credits = 20;
        c.media.upload_ttl_secs = 1;
        c.media.url_ttl_secs = 1;
    })
    .await;
    let mut other = SagasProcess::new(&app);
    other.start();
    let mut rids = Vec::new();
    for i in 0..12 {
        rids.push(
            app.intent("uma", &format!("t{i}.webp"), "image/webp", 10)
                .await,
        );
    }
    for r in &rids {
        app.wait_state(r, "expired").await;
    }
    eventually(20, || async {
        for r in &rids {
            if !timers::for_request(&app.ctx.store, r)
                .await
                .unwrap()
                .is_empty()
            {
                return None;
            }
        }
        Some(())
    })
    .await;
    other.kill9();
    assert_eq!(app.balance("uma").await, 20);
    for r in &rids {
        assert_eq!(app.ledger_count("uma", r, "refund").await, 1, "{r}");
        assert_eq!(
            app.events_on("public.media.expired.events", Some(r))
                .await
                .len(),
            1,
            "{r}"
        );
    }
    app.stop().await;
}
