//! Signed URLs and the ways into the object store: a tampered or expired URL is refused by
//! the real S3 server (postgres column) and by substrate's blob endpoint (sqlite column); the
//! blob endpoint also holds a PUT to the signed length and content type, and lets a PUT URL
//! upload once; what a used URL or a late upload leaves at an upload key is swept once the
//! URL has expired (S3 cannot refuse those PUTs); the storage webhook needs its secret (bearer
//! token or signature).

use std::time::Duration;

use serde_json::json;
use substrate::objects::UrlMethod;

use crate::media::{MediaApp, STORAGE_SECRET, minio_event, png};
use crate::support::*;

/// Replaces the value of query parameter `name` in `url`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.to_string()
            };
            (k.to_string(), v)
        })
        .collect();
    assert!(pairs.iter().any(|(k, _)| k == name), "{name} not in {url}");
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

fn param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string())
        .unwrap()
}

both!(tampered_urls_are_refused);
async fn tampered_urls_are_refused(b: Backend) {
    let app = MediaApp::start(b, |_| {}).await;
    let bytes = png(300);
    let rid = app.intent("mia", "pic.png", "image/png", bytes.len()).await;
    let ready = app.note("mia", "media.upload_ready", &rid).await;
    let url = ready.payload["upload_url"].as_str().unwrap().to_string();
    let key = ready.payload["file_path"].as_str().unwrap().to_string();
    let (sig, exp) = match b {
        Backend::Postgres => ("X-Amz-Signature", "X-Amz-Expires"),
        Backend::Sqlite => ("signature", "expires"),
    };
    let mut forged_sig = param(&url, sig);
    let last = if forged_sig.ends_with('0') { "1" } else { "0" };
    forged_sig.replace_range(forged_sig.len() - 1.., last);
    let later = (param(&url, exp).parse::<i64>().unwrap() + 3600).to_string();
    let other_key = url.replace("pic.png", "evil.png");
    let tampered = [
        ("signature", with_param(&url, sig, &forged_sig)),
        ("expiry", with_param(&url, exp, &later)),
        ("key", other_key.clone()),
    ];
    for (what, t) in &tampered {
        let (s, body) = app.put(t, bytes.clone(), "image/png").await;
        assert_eq!(s, 403, "tampered {what} accepted: {body}");
    }
    // The PUT URL does not allow reading.
    let (s, _) = app.get(&url).await;
    assert_eq!(s, 403, "GET with a PUT URL");
    assert!(!app.exists(&key).await, "nothing stored");
    assert!(!app.exists(&key.replace("pic.png", "evil.png")).await);
    // The genuine URL works.
    let (s, body) = app.put(&url, bytes, "image/png").await;
    assert_eq!(s, 200, "{body}");
    assert!(app.exists(&key).await);
    app.stop().await;
}

both!(expired_urls_are_refused);
async fn expired_urls_are_refused(b: Backend) {
    let app = MediaApp::start_roles(b, vec![substrate::roles::Role::Gateway], |_| {}).await;
    let objects = &app.ctx.objects;
    objects
        .put("files/nina/r1/a.png", bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let short = Duration::from_secs(3);
    let get = objects
        .presign(
            UrlMethod::Get,
            "files/nina/r1/a.png",
            short,
            None,
            Some("image/png"),
        )
        .await
        .unwrap();
    let put = objects
        .presign(
            UrlMethod::Put,
            "files/nina/r1/b.png",
            short,
            Some(5),
            Some("image/png"),
        )
        .await
        .unwrap();
    assert_eq!(get.expires_in, 3);
    let (s, body) = app.get(&get.url).await;
    assert_eq!(
        (s, body.as_slice()),
        (200, b"hello".as_slice()),
        "fresh URL"
    );
    // Once the expiry has passed, the same URL is refused.
    eventually(15, || async {
        (app.get(&get.url).await.0 == 403).then_some(())
    })
    .await;
    let (s, _) = app.put(&put.url, b"12345".to_vec(), "image/png").await;
    assert_eq!(s, 403, "expired PUT URL accepted");
    assert!(!app.exists("files/nina/r1/b.png").await);
    app.stop().await;
}

both!(blob_endpoint_holds_puts_to_the_signed_length_and_type);
async fn blob_endpoint_holds_puts_to_the_signed_length_and_type(b: Backend) {
    let app = MediaApp::start(b, |_| {}).await;
    if app.s3.is_some() {
        // With S3 the bucket serves the URLs; substrate's blob endpoint is off.
        let r = app
            .http
            .put(app.url("/blobs/uploads/x/y/z.png"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "blob_endpoint_disabled");
        app.stop().await;
        return;
    }
    let bytes = png(100);
    let rid = app.intent("olga", "p.png", "image/png", 100).await;
    let ready = app.note("olga", "media.upload_ready", &rid).await;
    let url = ready.payload["upload_url"].as_str().unwrap();
    let key = ready.payload["file_path"].as_str().unwrap();
    let (s, body) = app.put(url, bytes[..99].to_vec(), "image/png").await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("content_length_mismatch"), "{body}");
    let (s, body) = app.put(url, bytes.clone(), "image/jpeg").await;
    assert_eq!(s, 415, "{body}");
    assert!(body.contains("content_type_mismatch"), "{body}");
    let signed_len = with_param(url, "length", "99");
    let (s, _) = app
        .put(&signed_len, bytes[..99].to_vec(), "image/png")
        .await;
    assert_eq!(s, 403, "a changed length is a broken signature");
    assert!(!app.exists(key).await, "nothing stored");
    let (s, body) = app.put(url, bytes.clone(), "image/png").await;
    assert_eq!(s, 200, "{body}");
    app.note("olga", "media.upload_completed", &rid).await;
    // A missing signature is refused too.
    let bare = url.split('?').next().unwrap();
    let (s, body) = app.put(bare, bytes, "image/png").await;
    assert_eq!(s, 403, "{body}");
    app.stop().await;
}

both!(storage_webhook_needs_its_secret);
async fn storage_webhook_needs_its_secret(b: Backend) {
    let app = MediaApp::start(b, |_| {}).await;
    let rid = app.intent("pat", "v.webm", "video/webm", 10).await;
    let ready = app.note("pat", "media.upload_ready", &rid).await;
    let key = ready.payload["file_path"].as_str().unwrap().to_string();
    let event = minio_event(&key, 10);
    let post = |auth: Option<String>, body: serde_json::Value| {
        let mut r = app.http.post(app.url("/webhooks/storage")).json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let r = r.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(post(None, event.clone()).await.0, 401);
    assert_eq!(
        post(Some("Bearer wrong-secret".into()), event.clone())
            .await
            .0,
        401
    );
    assert!(
        app.events_on("internal.media.upload.received", None)
            .await
            .is_empty(),
        "nothing accepted without the secret"
    );
    // Not an upload: a removal, another prefix, another bucket.
    let mut others = minio_event(&key, 10);
    others["Records"][0]["eventName"] = json!("s3:ObjectRemoved:Delete");
    let (s, r) = post(Some(format!("Bearer {STORAGE_SECRET}")), others).await;
    assert_eq!((s, &r["uploads"]), (200, &json!(0)), "{r}");
    let (s, r) = post(
        Some(format!("Bearer {STORAGE_SECRET}")),
        minio_event("files/pat/x/v.webm", 10),
    )
    .await;
    assert_eq!(
        (s, &r["uploads"], &r["ignored"]),
        (200, &json!(0), &json!(1)),
        "{r}"
    );
    // Signed the Standard Webhooks way with the same secret.
    let body = serde_json::to_vec(&event).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let sig = substrate::gateway::webhooks::sign(STORAGE_SECRET.as_bytes(), "msg-1", ts, &body);
    let r = app
        .http
        .post(app.url("/webhooks/storage"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg-1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", format!("v1,{sig}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["uploads"], 1, "{v}");
    let got = app
        .events_on("internal.media.upload.received", Some(&rid))
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["source"], "webhook");
    let (s, r) = app
        .http
        .post(app.url("/webhooks/storage"))
        .bearer_auth(STORAGE_SECRET)
        .body("{\"Records\": 5}")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!((s, r), (400, ()));
    app.stop().await;

    // Without a configured secret the webhook is off.
    let off = MediaApp::start_roles(b, vec![substrate::roles::Role::Gateway], |c| {
        c.media.storage_webhook_secret = None
    })
    .await;
    let r = off
        .http
        .post(off.url("/webhooks/storage"))
        .bearer_auth("anything")
        .json(&minio_event("uploads/a/b/c.png", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    off.stop().await;
}

both!(a_used_upload_url_leaves_nothing_behind);
/// A used upload URL PUT again: substrate's blob endpoint refuses it (the upload is over); S3
/// takes it — substrate cannot refuse a presigned PUT and hears of nothing — and the sweep
/// removes the object once the URL has expired. The uploaded file itself is untouched.
async fn a_used_upload_url_leaves_nothing_behind(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.url_ttl_secs = 10).await;
    let bytes = png(200);
    let (rid, file) = app.upload("vic", "a.png", "image/png", &bytes).await;
    let u = app.upload_row(&rid).await.unwrap();
    let url = u.upload_url.clone().unwrap();
    assert!(!app.exists(&u.upload_path).await, "moved to files/");
    let (s, body) = app.put(&url, png(200), "image/png").await;
    match b {
        Backend::Sqlite => {
            assert_eq!(s, 410, "{body}");
            assert!(body.contains("upload_closed"), "{body}");
            assert!(!app.exists(&u.upload_path).await, "nothing stored");
        }
        Backend::Postgres => {
            assert_eq!(s, 200, "S3 takes a PUT within the URL's lifetime: {body}");
            assert!(app.exists(&u.upload_path).await);
        }
    }
    eventually(40, || async {
        (!app.exists(&u.upload_path).await).then_some(())
    })
    .await;
    let kept = app.ctx.objects.get(&file).await.unwrap().unwrap();
    assert_eq!(kept.to_vec(), bytes, "the file is untouched");
    assert_eq!(app.upload_row(&rid).await.unwrap().state, "confirmed");
    app.stop().await;
}

both!(a_late_upload_after_the_ttl_does_not_stay);
/// An upload that loses the race with the TTL timer: the saga has expired (refunded, object
/// removed) when the bytes land. substrate's blob endpoint refuses it; S3 takes it, and no
/// bucket notification reports it (none configured, or lost) — as with a blob upload whose
/// report was lost in a crash. Either way nothing stays in `uploads/`, and there is no second
/// refund.
async fn a_late_upload_after_the_ttl_does_not_stay(b: Backend) {
    let app = MediaApp::start(b, |c| {
        c.media.starting_credits = 2;
        c.media.upload_ttl_secs = 1;
        c.media.url_ttl_secs = 10;
    })
    .await;
    let rid = app.intent("wes", "late.png", "image/png", 100).await;
    let ready = app.note("wes", "media.upload_ready", &rid).await;
    let url = ready.payload["upload_url"].as_str().unwrap().to_string();
    let key = ready.payload["file_path"].as_str().unwrap().to_string();
    app.wait_state(&rid, "expired").await;
    let (s, body) = app.put(&url, png(100), "image/png").await;
    match b {
        Backend::Sqlite => {
            assert_eq!(s, 410, "{body}");
            assert!(body.contains("upload_closed"), "{body}");
            assert!(!app.exists(&key).await, "nothing stored");
            // An upload stored just before the expiry whose report was lost (a crash between
            // storing and reporting).
            app.ctx
                .objects
                .put(&key, bytes::Bytes::from(png(100)))
                .await
                .unwrap();
        }
        Backend::Postgres => assert_eq!(s, 200, "{body}"),
    }
    assert!(app.exists(&key).await);
    eventually(40, || async { (!app.exists(&key).await).then_some(()) }).await;
    assert_eq!(app.ledger_count("wes", &rid, "refund").await, 1);
    assert_eq!(app.balance("wes").await, 2);
    app.stop().await;
}

both!(a_blob_put_url_uploads_once);
/// substrate's own PUT URLs (local objects, on either store) are single-use, whatever they are
/// for: a second PUT with the same URL (or with its signature spelt in upper case) gets 409,
/// and the stored object stays as the first PUT left it. A PUT that fails gives the URL back.
async fn a_blob_put_url_uploads_once(b: Backend) {
    let app = TestApp::start_roles(b, vec![substrate::roles::Role::Gateway], |_| {}).await;
    let put = app
        .ctx
        .objects
        .presign(
            UrlMethod::Put,
            "files/xena/r1/a.png",
            Duration::from_secs(60),
            Some(5),
            Some("image/png"),
        )
        .await
        .unwrap();
    let send = |url: String, body: Vec<u8>, length: usize| async move {
        // A declared length the body does not keep to: the upload fails mid-way.
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
        let r = reqwest::Client::new()
            .put(url)
            .header("content-type", "image/png")
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        match r {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    };
    let (s, body) = send(put.url.clone(), b"shor".to_vec(), 5).await;
    assert_ne!(s, 200, "{body}");
    // The failed PUT gives the URL back (as soon as the server has noticed the broken body).
    eventually(10, || async {
        match send(put.url.clone(), b"first".to_vec(), 5).await {
            (200, _) => Some(()),
            (409, body) if body.contains("upload_in_progress") => None,
            other => panic!("the failed PUT did not give the URL back: {other:?}"),
        }
    })
    .await;
    let upper = with_param(
        &put.url,
        "signature",
        &param(&put.url, "signature").to_uppercase(),
    );
    for url in [&put.url, &upper] {
        let (s, body) = send(url.clone(), b"again".to_vec(), 5).await;
        assert_eq!(s, 409, "{body}");
        assert!(body.contains("upload_url_used"), "{body}");
    }
    let kept = app.ctx.objects.get("files/xena/r1/a.png").await.unwrap();
    assert_eq!(kept.unwrap().as_ref(), b"first");
    app.stop().await;
}
