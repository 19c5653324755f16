//! The media sagas end to end, and the harness the other `media_*` modules share: the
//! `sqlite` column runs SQLite + the local filesystem backend (substrate's signed blob URLs);
//! the `postgres` column runs PostgreSQL + a real S3 server (s3s-fs) with presigned URLs,
//! where the test plays MinIO's part of sending the bucket notification.

use serde_json::{Value, json};
use substrate::config::{Config, Secret};
use substrate::media::upload::uploads;
use substrate::media::{credits, files, timers};
use substrate::projections::notifications::{self, NotificationRow};
use substrate::roles::Role;

use crate::support::s3::{BUCKET, S3Server};
use crate::support::*;

pub const STORAGE_SECRET: &str = "storage-webhook-secret-0123456789";

/// Settings that keep the sagas quick in tests.
pub fn fast(c: &mut Config) {
    c.media.timer_poll_ms = 50;
    c.media.move_backoff_ms = 50;
    c.media.head_check_secs = 0;
    c.media.timer_lease_secs = 2;
    // Ended uploads are swept as soon as their URL expires.
    c.media.upload_sweep_grace_secs = 0;
    c.media.storage_webhook_secret = Some(Secret::new(STORAGE_SECRET));
    c.consumers.backoff_initial_ms = 20;
    c.consumers.backoff_max_ms = 200;
}

pub struct MediaApp {
    pub app: TestApp,
    pub s3: Option<S3Server>,
}

impl std::ops::Deref for MediaApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl MediaApp {
    pub async fn start(b: Backend, tweak: impl FnOnce(&mut Config)) -> MediaApp {
        Self::start_roles(b, substrate::roles::ALL.to_vec(), tweak).await
    }

    /// `postgres` gets an S3 server; `sqlite` keeps the local filesystem.
    pub async fn start_roles(
        b: Backend,
        roles: Vec<Role>,
        tweak: impl FnOnce(&mut Config),
    ) -> MediaApp {
        let s3 = match b {
            Backend::Postgres => Some(S3Server::start().await),
            Backend::Sqlite => None,
        };
        let app = TestApp::start_roles(b, roles, |c| {
            fast(c);
            if let Some(s) = &s3 {
                s.configure(c);
            }
            tweak(c);
        })
        .await;
        MediaApp { app, s3 }
    }

    pub async fn stop(self) {
        self.app.stop().await;
    }

    pub async fn upload_intent(&self, user: &str, body: &Value) -> (u16, Value) {
        self.post_json("/api/v1/media/upload-intent", &self.token(user), body)
            .await
    }

    /// Posts an upload intent that must be accepted; returns its request id.
    pub async fn intent(&self, user: &str, name: &str, media_type: &str, size: usize) -> String {
        let (s, r) = self
            .upload_intent(
                user,
                &json!({ "file_name": name, "media_type": media_type, "file_size": size }),
            )
            .await;
        assert_eq!(s, 202, "{r}");
        r["request_id"].as_str().expect("request_id").to_string()
    }

    pub async fn file_intent(&self, user: &str, kind: &str, path: &str) -> String {
        let (s, r) = self
            .post_json(
                &format!("/api/v1/media/{kind}-intent"),
                &self.token(user),
                &json!({ "file_path": path }),
            )
            .await;
        assert_eq!(s, 202, "{r}");
        r["request_id"].as_str().expect("request_id").to_string()
    }

    pub async fn upload_row(&self, rid: &str) -> Option<uploads::Upload> {
        uploads::get(&self.ctx.store, rid)
            .await
            .expect("read upload")
    }

    /// Waits until the upload saga of `rid` is in `state`.
    pub async fn wait_state(&self, rid: &str, state: &str) -> uploads::Upload {
        eventually(30, || async {
            self.upload_row(rid).await.filter(|u| u.state == state)
        })
        .await
    }

    pub async fn notes(&self, user: &str) -> Vec<NotificationRow> {
        notifications::visible_after(&self.ctx.store, user, 0, 1000)
            .await
            .expect("notifications")
    }

    /// Waits for `user`'s notification of `event_type` about request `rid`.
    pub async fn note(&self, user: &str, event_type: &str, rid: &str) -> NotificationRow {
        eventually(30, || async {
            self.notes(user)
                .await
                .into_iter()
                .find(|n| n.event_type == event_type && n.payload["request_id"] == rid)
        })
        .await
    }

    /// The client's upload: a plain HTTP PUT of `bytes` to the presigned URL.
    pub async fn put(&self, url: &str, bytes: Vec<u8>, content_type: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .put(url)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("PUT");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// A plain HTTP GET of a presigned URL.
    pub async fn get(&self, url: &str) -> (u16, Vec<u8>) {
        let r = reqwest::get(url).await.expect("GET");
        let s = r.status().as_u16();
        (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// What MinIO does after an upload: the bucket notification. (s3s-fs sends none; the
    /// local backend's blob endpoint reports uploads itself.)
    pub async fn bucket_notification(&self, key: &str, size: usize) {
        if self.s3.is_none() {
            return;
        }
        let r = self
            .http
            .post(self.url("/webhooks/storage"))
            .bearer_auth(STORAGE_SECRET)
            .json(&minio_event(key, size))
            .send()
            .await
            .expect("webhook");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.text().await.unwrap_or_default()
        );
    }

    /// The whole upload as a client does it; returns (request id, file path).
    pub async fn upload(
        &self,
        user: &str,
        name: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> (String, String) {
        let rid = self.intent(user, name, media_type, bytes.len()).await;
        let ready = self.note(user, "media.upload_ready", &rid).await;
        let url = ready.payload["upload_url"].as_str().expect("upload_url");
        let (s, body) = self.put(url, bytes.to_vec(), media_type).await;
        assert_eq!(s, 200, "{body}");
        let key = ready.payload["file_path"].as_str().expect("file_path");
        self.bucket_notification(key, bytes.len()).await;
        let done = self.note(user, "media.upload_completed", &rid).await;
        (
            rid,
            done.payload["file_path"]
                .as_str()
                .expect("file_path")
                .to_string(),
        )
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.ctx.objects.head(key).await.expect("head").is_some()
    }

    pub async fn balance(&self, user: &str) -> i64 {
        credits::balance(&self.ctx.store, user)
            .await
            .expect("balance")
    }

    pub async fn ledger_count(&self, user: &str, rid: &str, kind: &str) -> i64 {
        credits::entries_for(&self.ctx.store, user, rid, kind)
            .await
            .expect("ledger")
    }

    /// Outbox rows on `topic` (optionally about request `rid`).
    pub async fn events_on(&self, topic: &str, rid: Option<&str>) -> Vec<Value> {
        let rows: Vec<Vec<u8>> = substrate::on_read!(self.ctx.store, p => {
            sqlx::query_scalar("SELECT payload FROM outbox WHERE topic = $1 ORDER BY id")
                .bind(topic)
                .fetch_all(p)
                .await
                .expect("outbox")
        });
        let mut out = Vec::new();
        for bytes in rows {
            let v = self.ctx.schemas.decode_json(&bytes).await.expect("decode");
            if rid.is_none_or(|r| v["request_id"] == r) {
                out.push(v);
            }
        }
        out
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

/// A bucket notification as MinIO sends it (keys URL-encoded like Go's QueryEscape).
pub fn minio_event(key: &str, size: usize) -> Value {
    let encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("{BUCKET}/{key}"),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-01-01T00:00:00.000Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": { "principalId": "minio" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": { "name": BUCKET, "ownerIdentity": { "principalId": "minio" }, "arn": format!("arn:aws:s3:::{BUCKET}") },
                "object": { "key": encoded, "size": size, "eTag": "0", "contentType": "application/octet-stream", "sequencer": "1" }
            },
            "source": { "host": "127.0.0.1", "port": "", "userAgent": "MinIO" }
        }]
    })
}

/// Some bytes that look like a PNG.
pub fn png(n: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend((0..n.saturating_sub(8)).map(|i| (i % 251) as u8));
    v
}

both!(upload_download_delete_end_to_end);
async fn upload_download_delete_end_to_end(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.starting_credits = 5).await;
    let bytes = png(70_000);
    let (rid, path) = app.upload("alice", "my cat.png", "image/png", &bytes).await;

    // Confirmed: the file is listed, stored under files/, gone from uploads/, one credit spent.
    let u = app.wait_state(&rid, "confirmed").await;
    assert_eq!(path, format!("files/alice/{rid}/my cat.png"));
    assert_eq!(u.upload_path, format!("uploads/alice/{rid}/my cat.png"));
    assert!(app.exists(&path).await);
    assert!(!app.exists(&u.upload_path).await);
    let (s, list) = app
        .get_json("/api/v1/media", Some(&app.token("alice")))
        .await;
    assert_eq!(s, 200);
    let listed = list["files"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["file_path"], path.as_str());
    assert_eq!(listed[0]["file_size"], bytes.len() as u64);
    assert_eq!(listed[0]["media_type"], "image/png");
    assert_eq!(app.balance("alice").await, 4);
    let (_, credits) = app
        .get_json("/api/v1/users/me/credits", Some(&app.token("alice")))
        .await;
    assert_eq!(credits["balance"], 4);
    let kinds: Vec<&str> = credits["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["charge", "grant"]);
    // The upload's notifications, in order, all private to alice.
    let types: Vec<String> = app
        .notes("alice")
        .await
        .into_iter()
        .filter(|n| n.payload["request_id"] == rid.as_str())
        .map(|n| n.event_type)
        .collect();
    assert_eq!(types, vec!["media.upload_ready", "media.upload_completed"]);
    let ready = app.note("alice", "media.upload_ready", &rid).await;
    assert!(ready.payload["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
    // The URL came from the backend of the column: S3's SigV4 presigning, or substrate's own.
    let url = ready.payload["upload_url"].as_str().unwrap();
    match &app.s3 {
        Some(s3) => {
            assert!(
                url.starts_with(&format!("{}/{BUCKET}/uploads/alice/", s3.endpoint)),
                "{url}"
            );
            assert!(url.contains("X-Amz-Signature="), "{url}");
            let on_disk = s3.dir.path().join(BUCKET).join(&path);
            assert_eq!(
                std::fs::read(on_disk).unwrap(),
                bytes,
                "stored by the S3 server"
            );
        }
        None => assert!(url.starts_with(&app.url("/blobs/uploads/alice/")), "{url}"),
    }
    assert!(app.notes("bob").await.is_empty());

    // Download: a presigned GET the client fetches with plain HTTP.
    let drid = app.file_intent("alice", "download", &path).await;
    let ready = app.note("alice", "media.download_ready", &drid).await;
    let (s, got) = app
        .get(ready.payload["download_url"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    assert!(got == bytes, "downloaded bytes differ");

    // Delete: object first, then the row is soft-deleted; the file disappears from the list.
    let xrid = app.file_intent("alice", "delete", &path).await;
    app.note("alice", "media.file_deleted", &xrid).await;
    assert!(!app.exists(&path).await);
    let row = files::get(&app.ctx.store, &path).await.unwrap().unwrap();
    assert_eq!(row.status, "deleted");
    assert!(row.deleted_at.is_some());
    let (_, list) = app
        .get_json("/api/v1/media", Some(&app.token("alice")))
        .await;
    assert_eq!(list["files"], json!([]));
    // …and can no longer be downloaded.
    let again = app.file_intent("alice", "download", &path).await;
    let rej = app.note("alice", "media.download_rejected", &again).await;
    assert_eq!(rej.payload["reason"], "file_not_found");

    // The funnel and durations are measured.
    let m = app.metrics().await;
    for needle in [
        r#"substrate_saga_steps_total{saga="upload",step="intent"} 1"#,
        r#"substrate_saga_steps_total{saga="upload",step="approved"} 1"#,
        r#"substrate_saga_steps_total{saga="upload",step="signed"} 1"#,
        r#"substrate_saga_steps_total{saga="upload",step="received"} 1"#,
        r#"substrate_saga_steps_total{saga="upload",step="confirmed"} 1"#,
        r#"substrate_saga_steps_total{saga="delete",step="deleted"} 1"#,
        r#"substrate_saga_duration_seconds_count{outcome="confirmed",saga="upload"} 1"#,
        r#"substrate_saga_duration_seconds_count{outcome="signed",saga="download"} 1"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    app.stop().await;
}

both!(head_check_finds_uploads_without_notifications);
async fn head_check_finds_uploads_without_notifications(b: Backend) {
    let app = MediaApp::start(b, |c| c.media.head_check_secs = 1).await;
    let bytes = png(1000);
    let rid = app.intent("carol", "a.png", "image/png", bytes.len()).await;
    let ready = app.note("carol", "media.upload_ready", &rid).await;
    let key = ready.payload["file_path"].as_str().unwrap();
    match b {
        // S3: the client's PUT, and no bucket notification configured.
        Backend::Postgres => {
            let (s, body) = app
                .put(
                    ready.payload["upload_url"].as_str().unwrap(),
                    bytes,
                    "image/png",
                )
                .await;
            assert_eq!(s, 200, "{body}");
        }
        // Local: an object that arrived without passing the blob endpoint.
        Backend::Sqlite => app.ctx.objects.put(key, bytes.into()).await.unwrap(),
    }
    app.note("carol", "media.upload_completed", &rid).await;
    let received = app
        .events_on("internal.media.upload.received", Some(&rid))
        .await;
    assert_eq!(received[0]["source"], "head-check");
    app.stop().await;
}

both!(ttl_expiry_refunds_once_and_removes_the_object);
async fn ttl_expiry_refunds_once_and_removes_the_object(b: Backend) {
    let app = MediaApp::start(b, |c| {
        c.media.starting_credits = 3;
        c.media.upload_ttl_secs = 1;
        // The URL expires with the saga, so its sweep (a timer) is due at once too.
        c.media.url_ttl_secs = 1;
    })
    .await;
    let rid = app.intent("dave", "clip.mp4", "video/mp4", 4096).await;
    // A partial object nobody reported (an abandoned upload), there before the TTL is armed.
    let key = format!("uploads/dave/{rid}/clip.mp4");
    app.ctx
        .objects
        .put(&key, bytes::Bytes::from_static(b"partial"))
        .await
        .unwrap();
    let ready = app.note("dave", "media.upload_ready", &rid).await;
    assert_eq!(ready.payload["file_path"], key.as_str());
    assert_eq!(app.ledger_count("dave", &rid, "charge").await, 1);
    let expired = app.note("dave", "media.upload_expired", &rid).await;
    assert!(expired.payload["reason"].as_str().unwrap().contains("1s"));
    assert_eq!(app.wait_state(&rid, "expired").await.state, "expired");
    eventually(20, || async { (!app.exists(&key).await).then_some(()) }).await;
    assert_eq!(app.balance("dave").await, 3);
    // The object shows up late (a delayed notification): no second refund, and it is removed.
    app.ctx
        .objects
        .put(&key, bytes::Bytes::from_static(b"late"))
        .await
        .unwrap();
    substrate::media::upload::detect::object_created(
        &app.ctx,
        &key,
        4,
        substrate::media::upload::detect::Source::Webhook,
    )
    .await
    .unwrap();
    eventually(20, || async { (!app.exists(&key).await).then_some(()) }).await;
    assert_eq!(app.ledger_count("dave", &rid, "charge").await, 1);
    assert_eq!(app.ledger_count("dave", &rid, "refund").await, 1);
    assert_eq!(app.balance("dave").await, 3);
    assert_eq!(
        app.events_on("public.media.expired.events", Some(&rid))
            .await
            .len(),
        1
    );
    // The removal timer is deleted in the transaction after the object is gone: wait for it.
    eventually(20, || async {
        timers::for_request(&app.ctx.store, &rid)
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let m = app.metrics().await;
    assert!(
        m.contains(r#"substrate_saga_steps_total{saga="upload",step="expired"} 1"#),
        "{m}"
    );
    app.stop().await;
}
