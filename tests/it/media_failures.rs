//! What goes wrong: move failures (injected with the test-only `media.inject_move_failures`)
//! retried with backoff, then dead-lettered with `media.upload_failed`; another user's file is
//! neither downloadable nor deletable, and looks exactly like a file that does not exist;
//! invalid intents are refused with a 400 and store nothing.

use serde_json::{Value, json};
use substrate::media::files;

use crate::media::{MediaApp, png};
use crate::support::*;

both!(move_failing_three_times_goes_to_the_dead_letter);
async fn move_failing_three_times_goes_to_the_dead_letter(b: Backend) {
    let app = MediaApp::start(b, |c| {
        c.media.starting_credits = 2;
        c.media.inject_move_failures = 3;
    })
    .await;
    let bytes = png(500);
    let rid = app.intent("ivan", "x.png", "image/png", bytes.len()).await;
    let ready = app.note("ivan", "media.upload_ready", &rid).await;
    let (s, _) = app
        .put(
            ready.payload["upload_url"].as_str().unwrap(),
            bytes.clone(),
            "image/png",
        )
        .await;
    assert_eq!(s, 200);
    let key = ready.payload["file_path"].as_str().unwrap();
    app.bucket_notification(key, bytes.len()).await;
    let failed = app.note("ivan", "media.upload_failed", &rid).await;
    assert_eq!(failed.payload["retry_count"], 3);
    assert!(
        failed.payload["reason"]
            .as_str()
            .unwrap()
            .contains("injected"),
        "{}",
        failed.payload
    );
    let u = app.wait_state(&rid, "dead_lettered").await;
    assert_eq!(u.move_attempts, 3);
    // Two retries before the dead letter, on their topics.
    let retries = app
        .events_on("internal.media.upload.retry", Some(&rid))
        .await;
    let counts: Vec<&Value> = retries.iter().map(|r| &r["retry_count"]).collect();
    assert_eq!(counts, vec![&json!(1), &json!(2)]);
    assert_eq!(
        app.events_on("internal.media.upload.dead-letter", Some(&rid))
            .await
            .len(),
        1
    );
    // Not confirmed, not listed, refunded; the bytes stay under uploads/ for an operator.
    assert!(
        app.events_on("public.media.upload.confirmed", None)
            .await
            .is_empty()
    );
    let (_, list) = app
        .get_json("/api/v1/media", Some(&app.token("ivan")))
        .await;
    assert_eq!(list["files"], json!([]));
    assert_eq!(app.balance("ivan").await, 2);
    assert_eq!(app.ledger_count("ivan", &rid, "refund").await, 1);
    assert!(app.exists(key).await);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"substrate_saga_steps_total{saga="upload",step="dead_lettered"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"substrate_saga_steps_total{saga="upload",step="retried"} 2"#));
    app.stop().await;
}

both!(move_failing_twice_is_retried_and_confirmed);
async fn move_failing_twice_is_retried_and_confirmed(b: Backend) {
    let app = MediaApp::start(b, |c| {
        c.media.starting_credits = 2;
        c.media.inject_move_failures = 2;
    })
    .await;
    let (rid, path) = app
        .upload("judy", "song.ogg", "audio/ogg", &[7u8; 3000])
        .await;
    let u = app.wait_state(&rid, "confirmed").await;
    assert_eq!(u.move_attempts, 2);
    assert_eq!(
        app.events_on("internal.media.upload.retry", Some(&rid))
            .await
            .len(),
        2
    );
    assert!(app.exists(&path).await);
    assert_eq!(app.balance("judy").await, 1);
    assert_eq!(app.ledger_count("judy", &rid, "refund").await, 0);
    assert!(
        app.notes("judy")
            .await
            .iter()
            .all(|n| n.event_type != "media.upload_failed")
    );
    app.stop().await;
}

both!(another_users_file_cannot_be_downloaded_or_deleted_or_detected);
async fn another_users_file_cannot_be_downloaded_or_deleted_or_detected(b: Backend) {
    let app = MediaApp::start(b, |_| {}).await;
    let (rid, path) = app
        .upload("alice", "secret.jpg", "image/jpeg", &[1u8; 2048])
        .await;
    let missing = "files/alice/0190aaaa-0000-7000-8000-000000000000/nothing.jpg";

    // Bob asks for alice's file and for one that does not exist: identical answers.
    let mut answers = Vec::new();
    for p in [path.as_str(), missing] {
        let d = app.file_intent("bob", "download", p).await;
        let n = app.note("bob", "media.download_rejected", &d).await;
        answers.push((
            n.payload["reason"].clone(),
            n.payload.as_object().unwrap().len(),
        ));
        let x = app.file_intent("bob", "delete", p).await;
        let n = app.note("bob", "media.delete_rejected", &x).await;
        answers.push((
            n.payload["reason"].clone(),
            n.payload.as_object().unwrap().len(),
        ));
    }
    assert_eq!(answers[0], answers[2], "download: foreign vs missing");
    assert_eq!(answers[1], answers[3], "delete: foreign vs missing");
    assert_eq!(answers[0].0, "file_not_found");
    // Nothing was signed for bob, alice's file is untouched, and bob sees nothing of hers.
    assert!(
        app.events_on("public.media.download.signed", None)
            .await
            .is_empty()
    );
    assert!(app.exists(&path).await);
    assert_eq!(
        files::get(&app.ctx.store, &path)
            .await
            .unwrap()
            .unwrap()
            .status,
        "active"
    );
    let (_, list) = app.get_json("/api/v1/media", Some(&app.token("bob"))).await;
    assert_eq!(list["files"], json!([]));
    let (s1, r1) = app
        .get_json(
            &format!("/api/v1/media/uploads/{rid}"),
            Some(&app.token("bob")),
        )
        .await;
    let (s2, r2) = app
        .get_json(
            "/api/v1/media/uploads/no-such-request",
            Some(&app.token("bob")),
        )
        .await;
    assert_eq!((s1, &r1), (s2, &r2));
    assert_eq!(s1, 404);
    let (s, mine) = app
        .get_json(
            &format!("/api/v1/media/uploads/{rid}"),
            Some(&app.token("alice")),
        )
        .await;
    assert_eq!((s, mine["state"].as_str()), (200, Some("confirmed")));
    // Notifications stay with their owner.
    assert!(
        app.notes("alice")
            .await
            .iter()
            .all(|n| n.user_id == "alice" && !n.event_type.ends_with("_rejected"))
    );
    assert!(app.notes("bob").await.iter().all(|n| n.user_id == "bob"));
    // Alice can still download it.
    let d = app.file_intent("alice", "download", &path).await;
    app.note("alice", "media.download_ready", &d).await;
    app.stop().await;
}

both!(wrong_media_types_and_sizes_are_refused_and_nothing_is_stored);
async fn wrong_media_types_and_sizes_are_refused_and_nothing_is_stored(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.max_file_size = 1_000_000).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"file_name": "a.pdf", "media_type": "application/pdf", "file_size": 10}),
            "invalid_media_type",
            "media_type",
        ),
        (
            json!({"file_name": "a.svg", "media_type": "image/svg+xml", "file_size": 10}),
            "invalid_media_type",
            "media_type",
        ),
        (
            json!({"file_name": "big.mp4", "media_type": "video/mp4", "file_size": 1_000_001}),
            "file_too_large",
            "file_size",
        ),
        (
            json!({"file_name": "empty.png", "media_type": "image/png", "file_size": 0}),
            "invalid_file_size",
            "file_size",
        ),
        (
            json!({"file_name": "neg.png", "media_type": "image/png", "file_size": -5}),
            "invalid_file_size",
            "file_size",
        ),
        (
            json!({"file_name": "a.png", "media_type": "image/png", "file_size": "10"}),
            "invalid_request",
            "file_size",
        ),
        (
            json!({"file_name": "../../etc/passwd", "media_type": "image/png", "file_size": 10}),
            "invalid_file_name",
            "file_name",
        ),
        (
            json!({"media_type": "image/png", "file_size": 10}),
            "invalid_request",
            "file_name",
        ),
    ];
    for (body, code, field) in &cases {
        let (s, r) = app.upload_intent("kim", body).await;
        assert_eq!(s, 400, "{body} → {r}");
        assert_eq!(r["error"], *code, "{body} → {r}");
        assert_eq!(r["field"], *field, "{body} → {r}");
    }
    let (_, r) = app.upload_intent("kim", &cases[0].0).await;
    assert!(
        r["allowed"]
            .as_array()
            .unwrap()
            .contains(&json!("image/webp"))
    );
    let (s, r) = app
        .post_json(
            "/api/v1/media/download-intent",
            &app.token("kim"),
            &json!({ "file_path": "" }),
        )
        .await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_request")));
    let r = app
        .http
        .post(app.url("/api/v1/media/upload-intent"))
        .bearer_auth(app.token("kim"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Every allowed type at the limit is accepted.
    for t in [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "video/mp4",
        "video/webm",
        "video/mpeg",
        "audio/mpeg",
        "audio/wav",
        "audio/ogg",
    ] {
        let (s, r) = app
            .upload_intent(
                "lee",
                &json!({"file_name": "ok", "media_type": t, "file_size": 1_000_000}),
            )
            .await;
        assert_eq!(s, 202, "{t}: {r}");
    }
    // Nothing of kim's was stored: no event, no saga, no account.
    let intents = app.events_on("internal.media.upload.intent", None).await;
    assert_eq!(intents.len(), 10);
    assert!(intents.iter().all(|e| e["user_id"] == "lee"));
    assert!(
        app.events_on("internal.media.download.intent", None)
            .await
            .is_empty()
    );
    assert_eq!(
        substrate::media::credits::account(&app.ctx.store, "kim")
            .await
            .unwrap(),
        None
    );
    app.stop().await;
}

both!(a_failing_delete_is_retried_dead_lettered_and_redriven);
async fn a_failing_delete_is_retried_dead_lettered_and_redriven(b: Backend) {
    let mut app = MediaApp::start(b, |c| c.consumers.max_retries = 2).await;
    let (_, path) = app.upload("sam", "d.mpeg", "video/mpeg", &[9u8; 512]).await;
    // Break the object store for real: S3 goes down; locally, a directory takes the file's
    // place (which no delete can remove — not even as root).
    let local = app
        .ctx
        .config
        .objects
        .url
        .strip_prefix("file://")
        .map(|root| std::path::PathBuf::from(root).join(&path));
    match (&mut app.s3, &local) {
        (Some(s3), _) => s3.stop(),
        (None, Some(fs)) => {
            std::fs::remove_file(fs).unwrap();
            std::fs::create_dir_all(fs.join("blocker")).unwrap();
        }
        (None, None) => unreachable!(),
    }
    let rid = app.file_intent("sam", "delete", &path).await;
    let dead = eventually(30, || async {
        let d = substrate::consumers::dlq::list(&app.ctx.store, &Default::default())
            .await
            .unwrap();
        d.into_iter().find(|d| d.group == "media-delete")
    })
    .await;
    assert_eq!(dead.topic, "internal.media.delete.intent");
    assert_eq!(dead.attempts, 3, "first try + 2 retries");
    assert!(dead.error.contains(&path), "{}", dead.error);
    // The object could not be removed, so the row stays active and the file stays listed.
    let (_, list) = app.get_json("/api/v1/media", Some(&app.token("sam"))).await;
    assert_eq!(list["files"][0]["file_path"], path.as_str());
    assert!(
        app.notes("sam")
            .await
            .iter()
            .all(|n| n.event_type != "media.file_deleted")
    );
    // Repair the store, redrive: the delete completes once.
    match (&mut app.s3, &local) {
        (Some(s3), _) => s3.restart().await,
        (None, Some(fs)) => std::fs::remove_dir_all(fs).unwrap(),
        (None, None) => unreachable!(),
    }
    let (s, r) = app
        .post_json(
            "/api/v1/admin/dlq/redrive",
            &app.admin_token(),
            &json!({ "topic": "internal.media.delete.intent" }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    app.note("sam", "media.file_deleted", &rid).await;
    assert!(!app.exists(&path).await);
    assert_eq!(
        files::get(&app.ctx.store, &path)
            .await
            .unwrap()
            .unwrap()
            .status,
        "deleted"
    );
    assert_eq!(
        app.events_on("public.media.delete.events", None)
            .await
            .len(),
        1
    );
    app.stop().await;
}
