//! The binary itself: configuration layering and redaction, roles, tokens, API keys,
//! migrations, and a clean stop on SIGTERM with requests in flight.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_substrate"))
}

#[test]
fn config_layers_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "[http]\nlisten = '127.0.0.1:9999'\n[auth]\nhs256_secret = 'file-secret-value'\n",
    )
    .unwrap();
    let out = bin()
        .args(["--config", file.to_str().unwrap(), "config"])
        .env("SUBSTRATE_STORE__URL", "postgres://u:hunter2@db.example/x")
        .env("SUBSTRATE_GATEWAY__RATE_LIMIT__USER_PER_SEC", "7.5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("127.0.0.1:9999"), "file layer: {text}");
    assert!(text.contains("user_per_sec = 7.5"), "env layer: {text}");
    assert!(text.contains("db.example"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("file-secret-value"),
        "{text}"
    );
}

#[test]
fn invalid_config_fails_with_the_key_name() {
    let out = bin()
        .arg("config")
        .env("SUBSTRATE_HTTP__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("http.listen"), "{err}");
}

#[test]
fn unknown_role_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["serve", "--roles", "gateway,teleporter"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown role `teleporter`") && err.contains("gateway, relay"),
        "{err}"
    );
}

#[tokio::test]
async fn token_mint_and_apikey_create() {
    let store = TestStore::new(Backend::Sqlite).await;
    let env = [
        ("SUBSTRATE_STORE__URL", store.url.clone()),
        ("SUBSTRATE_AUTH__HS256_SECRET", SECRET.to_string()),
    ];
    let out = bin()
        .args([
            "token", "mint", "--sub", "carol", "--role", "admin", "--ttl", "60",
        ])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "carol");
    assert_eq!(data.claims["roles"], serde_json::json!(["admin"]));
    assert!(data.claims["exp"].as_i64().unwrap() - chrono::Utc::now().timestamp() <= 60);

    let out = bin()
        .args([
            "apikey",
            "create",
            "--name",
            "ingest",
            "--scopes",
            "events:write,identity:write",
        ])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("sk_"));
    let out = bin().args(["apikey", "list"]).envs(env).output().unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains("ingest") && listed.contains("identity:write") && !listed.contains(&key)
    );
    let hashes: Vec<String> = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&store.url).await.unwrap();
        sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(hashes.len(), 1);
    assert_ne!(hashes[0], key);
}

both!(migrate_is_idempotent);
async fn migrate_is_idempotent(b: Backend) {
    let store = TestStore::new(b).await;
    for _ in 0..2 {
        let out = bin()
            .arg("migrate")
            .env("SUBSTRATE_STORE__URL", &store.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(count_outbox(&store.url, None).await, 0);
    store.drop_db().await;
}

/// SIGTERM while requests are in flight: every request that got 202 is stored, and the
/// process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let store = TestStore::new(Backend::Sqlite).await;
    let routes = store.dir.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = bin()
        .args(["serve", "--roles", "gateway"])
        .current_dir(repo())
        .env("SUBSTRATE_STORE__URL", &store.url)
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env("SUBSTRATE_GATEWAY__ROUTES_FILE", routes.to_str().unwrap())
        .env("SUBSTRATE_GATEWAY__RATE_LIMIT__ENABLED", "false")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(20, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let token = token_with("alice", &[], None);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let http = http.clone();
            let base = base.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for _ in 0..200 {
                    match http
                        .post(format!("{base}/api/v1/events/message"))
                        .bearer_auth(&token)
                        .json(&message("drain"))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 202 => {
                            let v: serde_json::Value = r.json().await.unwrap();
                            accepted.push(v["event_id"].as_str().unwrap().to_string());
                        }
                        _ => break,
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut accepted = Vec::new();
    for s in senders {
        accepted.extend(s.await.unwrap());
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!accepted.is_empty());
    for id in &accepted {
        assert_eq!(
            count_outbox(&store.url, Some(id)).await,
            1,
            "accepted event {id} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_command_probes_the_server() {
    let app = TestApp::start_roles(
        Backend::Sqlite,
        vec![substrate::roles::Role::Gateway],
        |_| {},
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let ok = bin()
        .arg("healthcheck")
        .env("SUBSTRATE_HTTP__LISTEN", &addr)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    app.stop().await;
    let down = bin()
        .arg("healthcheck")
        .env("SUBSTRATE_HTTP__LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!down.status.success());
}

/// Runs the binary with the app's environment; (success, stdout, stderr).
async fn run_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::from(substrate_cmd(app))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run substrate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `substrate status` prints the status page's component table (plain when piped), `--json`
/// the document, and an unreachable server is named with the cause and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_component_table() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (ok, table, err) = run_cli(&app, &["status", "--url", &app.base]).await;
    assert!(ok, "{err}");
    assert!(
        table.contains("COMPONENT") && table.contains("STATE"),
        "{table}"
    );
    for c in [
        "gateway",
        "store",
        "log",
        "relay",
        "projections",
        "sagas",
        "objects",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(c)),
            "{c} missing:\n{table}"
        );
    }
    assert!(!table.contains('\x1b'), "colour when piped:\n{table}");

    let (ok, json, err) = run_cli(&app, &["status", "--url", &app.base, "--json"]).await;
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    assert_eq!(doc["components"].as_array().map(Vec::len), Some(7), "{doc}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = run_cli(&app, &["status", "--url", &dead]).await;
    assert!(!ok);
    for want in [
        format!("cannot reach substrate at {dead}"),
        "connection refused".to_string(),
        "is it running?".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err}");
    }
    assert!(!err.contains("reqwest::Error"), "a Debug dump: {err}");
    app.stop().await;
}

both!(long_commands_answer_json_when_piped);
/// Piped, the long operator commands print no progress and one JSON line each: migrate, DLQ
/// redrive, snapshot take and restore (applied by the running consumer).
async fn long_commands_answer_json_when_piped(b: Backend) {
    let app = TestApp::start(b).await;
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("not one JSON line: {out}"))
    };
    let (ok, out, err) = run_cli(&app, &["migrate"]).await;
    assert!(ok, "{err}");
    assert_eq!(json(&out)["migrated"], true);
    assert!(err.trim().is_empty(), "progress when piped: {err}");

    let (ok, out, err) = run_cli(&app, &["dlq", "redrive", "--group", "notifications"]).await;
    assert!(ok, "{err}");
    assert_eq!(json(&out)["redriven"], 0);

    let (ok, out, err) = run_cli(&app, &["snapshot", "take", "--group", "notifications"]).await;
    assert!(ok, "{err}");
    let id = json(&out)["id"].as_i64().expect("snapshot id");
    let (ok, out, err) = run_cli(&app, &["snapshot", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(json(&out)["id"], id);
    let (ok, out, err) = run_cli(
        &app,
        &[
            "snapshot",
            "restore",
            "--id",
            &id.to_string(),
            "--wait",
            "30",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let r = json(&out);
    assert_eq!(
        (r["group"].as_str(), r["applied"].as_bool()),
        (Some("notifications"), Some(true)),
        "{r}"
    );
    app.stop().await;
}
