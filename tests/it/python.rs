//! An independent client reads the wire format: events posted through the gateway are read
//! back from the outbox and decoded by Confluent's Python client (`tests/python/registry_client.py`:
//! SchemaRegistryClient against substrate's registry API, AvroDeserializer on the payloads).

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::*;

const TOPIC: &str = "public.user.message.events";
const SUBJECT: &str = "public.user.message.events-value";
/// `support::message`'s timestamp, 2026-01-01T00:00:00Z, as the schema's timestamp-millis.
const TS_MILLIS: i64 = 1_767_225_600_000;

/// Fails (never skips) when python3 or the Confluent client is missing: `scripts/setup.sh`
/// installs them.
async fn require_python_client() {
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import confluent_kafka.schema_registry.avro, fastavro",
        ])
        .output()
        .await
        .expect("python3 is not installed; run scripts/setup.sh");
    assert!(
        out.status.success(),
        "python3 lacks the Confluent client (confluent-kafka[avro,schemaregistry], fastavro); \
         run scripts/setup.sh\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (topic, schema_id, payload) of one outbox row, read with a connection of our own.
async fn outbox_row(url: &str, event_id: &str) -> (String, i64, Vec<u8>) {
    use sqlx::Connection;
    let sql = "SELECT topic, schema_id, payload FROM outbox WHERE event_id = $1";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url)
            .await
            .expect("connect sqlite");
        sqlx::query_as(sql)
            .bind(event_id)
            .fetch_one(&mut c)
            .await
            .expect("outbox row")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect pg");
        sqlx::query_as(sql)
            .bind(event_id)
            .fetch_one(&mut c)
            .await
            .expect("outbox row")
    }
}

/// The record the schema gives for a posted message (defaults and the caller filled in).
fn record(user: &str, email: &str, text: &str, direct_to: Option<&str>) -> Value {
    json!({
        "version": 1,
        "user_id": user,
        "email": email,
        "message": text,
        "timestamp": TS_MILLIS,
        "visibility": if direct_to.is_some() { "direct" } else { "broadcast" },
        "recipient_id": direct_to,
    })
}

async fn run_script(base: &str, rows: &Value) -> (bool, Value, String) {
    let script = repo().join("tests/python/registry_client.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--registry", base, "--rows", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(rows.to_string().as_bytes())
        .await
        .expect("write rows");
    drop(stdin);
    let out = child.wait_with_output().await.expect("python3 output");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "registry_client.py printed no JSON (status {}):\n{}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), doc, stderr)
}

both!(confluent_python_client_decodes_outbox_payloads);
async fn confluent_python_client_decodes_outbox_payloads(b: Backend) {
    require_python_client().await;
    let app = TestApp::start(b).await;

    // (event id, the record it must decode to)
    let mut posted: Vec<(String, Value)> = Vec::new();
    let (s, body) = app
        .post_json(
            "/api/v1/events/message",
            &app.token("alice"),
            &message("hello from alice"),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    posted.push((
        body["event_id"].as_str().expect("event_id").to_string(),
        record("alice", "user@example.com", "hello from alice", None),
    ));

    let mut direct = message("just for you, alice — ünïcödé ✓");
    direct["visibility"] = json!("direct");
    direct["recipient_id"] = json!("alice");
    let (s, body) = app
        .post_json("/api/v1/events/message", &app.token("bob"), &direct)
        .await;
    assert_eq!(s, 202, "{body}");
    posted.push((
        body["event_id"].as_str().expect("event_id").to_string(),
        record(
            "bob",
            "user@example.com",
            "just for you, alice — ünïcödé ✓",
            Some("alice"),
        ),
    ));

    // A batch, and a service posting on a user's behalf with every field given.
    let batch = json!([message("batch one"), message("batch two")]);
    let (s, body) = app
        .post_json("/api/v1/events/message/batch", &app.token("carol"), &batch)
        .await;
    assert_eq!(s, 202, "{body}");
    let ids = body["event_ids"].as_array().expect("event_ids");
    for (id, text) in ids.iter().zip(["batch one", "batch two"]) {
        posted.push((
            id.as_str().expect("id").to_string(),
            record("carol", "user@example.com", text, None),
        ));
    }
    let key = app.api_key("ingest", &["events:write"]).await;
    let mut svc = message("from a service");
    svc["user_id"] = json!("dave");
    svc["email"] = json!("dave@example.org");
    svc["version"] = json!(1);
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .header("x-api-key", &key)
        .json(&svc)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.expect("json");
    posted.push((
        body["event_id"].as_str().expect("event_id").to_string(),
        record("dave", "dave@example.org", "from a service", None),
    ));

    let schema_id = i64::from(app.ctx.schemas.topic(TOPIC).expect("topic").id);
    let mut rows = Vec::new();
    for (id, expected) in &posted {
        let (topic, row_schema_id, payload) = outbox_row(&app.store.url, id).await;
        assert_eq!(topic, TOPIC);
        assert_eq!(row_schema_id, schema_id);
        rows.push(json!({
            "topic": topic,
            "schema_id": row_schema_id,
            "payload_hex": hex::encode(&payload),
            "expected": expected,
        }));
    }
    let (ok, out, stderr) = run_script(&app.base, &Value::Array(rows)).await;
    assert!(
        ok,
        "registry_client.py reported mismatches:\n{out:#}\n{stderr}"
    );
    assert_eq!(out["ok"], true, "{out:#}");
    assert_eq!(out["errors"], json!([]), "{out:#}");

    // Every decoded record equals what was posted, field by field.
    let records = out["records"].as_array().expect("records");
    assert_eq!(records.len(), posted.len());
    for ((_, expected), got) in posted.iter().zip(records) {
        assert_eq!(got["topic"], TOPIC);
        assert_eq!(got["schema_id"], schema_id);
        let decoded = got["decoded"].as_object().expect("decoded record");
        let expected = expected.as_object().expect("expected record");
        assert_eq!(
            decoded.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "fields in schema order"
        );
        for (field, want) in expected {
            assert_eq!(&decoded[field], want, "field {field} of {got}");
        }
    }

    // The registry's answers, as the client saw them.
    let subjects: Vec<String> = serde_json::from_value(out["subjects"].clone()).expect("subjects");
    let (_, ours) = app.get_json("/subjects", None).await;
    let ours: Vec<String> = serde_json::from_value(ours).expect("our subjects");
    assert_eq!(subjects, ours);
    assert!(subjects.contains(&SUBJECT.to_string()));
    assert_eq!(
        out["latest"][SUBJECT],
        json!({ "subject": SUBJECT, "version": 1, "schema_id": schema_id })
    );
    assert_eq!(
        out["schemas_by_id"][schema_id.to_string()],
        json!({ "schema_type": "AVRO", "same_as_latest": true })
    );
    assert_eq!(
        out["compatibility"],
        json!({ "subject": SUBJECT, "compatible_change": true, "breaking_change": false })
    );
    app.stop().await;
}
