//! The built-in Confluent-compatible registry: subjects, versions, ids, registration with
//! BACKWARD checks (409), compatibility checks, admin-only writes, ids stable across restarts.

use serde_json::{Value, json};

use crate::support::*;

const SUBJECT: &str = "public.user.message.events-value";

fn with_field(base: &str, field: Value) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    v["fields"].as_array_mut().unwrap().push(field);
    v.to_string()
}

both!(registry_api_and_backward_compatibility);
async fn registry_api_and_backward_compatibility(b: Backend) {
    let app = TestApp::start(b).await;
    let (s, subjects) = app.get_json("/subjects", None).await;
    assert_eq!(s, 200);
    let subjects: Vec<String> = serde_json::from_value(subjects).unwrap();
    assert!(subjects.contains(&SUBJECT.to_string()));
    assert!(subjects.contains(&"internal.platform.probe-value".to_string()));
    assert!(subjects.contains(&"internal.telemetry.batches-value".to_string()));
    assert!(subjects.contains(&"internal.alerts.transitions-value".to_string()));
    assert_eq!(subjects.len(), 22);
    let (_, versions) = app
        .get_json(&format!("/subjects/{SUBJECT}/versions"), None)
        .await;
    assert_eq!(versions, json!([1]));
    let (_, v1) = app
        .get_json(&format!("/subjects/{SUBJECT}/versions/latest"), None)
        .await;
    assert_eq!(v1["version"], 1);
    let id = v1["id"].as_i64().unwrap();
    let (_, by_id) = app.get_json(&format!("/schemas/ids/{id}"), None).await;
    assert_eq!(by_id["schema"], v1["schema"]);
    let (s, e) = app.get_json("/subjects/nope-value/versions", None).await;
    assert_eq!((s, e["error_code"].as_i64()), (404, Some(40401)));
    let (s, e) = app.get_json("/schemas/ids/99999", None).await;
    assert_eq!((s, e["error_code"].as_i64()), (404, Some(40403)));

    let base = v1["schema"].as_str().unwrap().to_string();
    let admin = app.admin_token();
    let compatible = with_field(
        &base,
        json!({"name":"mood","type":["null","string"],"default":null}),
    );
    let breaking = with_field(&base, json!({"name":"mood","type":"string"}));
    // Checks first.
    let (s, c) = app
        .post_json(
            &format!("/compatibility/subjects/{SUBJECT}/versions/latest"),
            &admin,
            &json!({"schema": compatible}),
        )
        .await;
    assert_eq!((s, c["is_compatible"].as_bool()), (200, Some(true)));
    let (_, c) = app
        .post_json(
            &format!("/compatibility/subjects/{SUBJECT}/versions/latest?verbose=true"),
            &admin,
            &json!({"schema": breaking}),
        )
        .await;
    assert_eq!(c["is_compatible"], false);
    assert!(!c["messages"].as_array().unwrap().is_empty());
    // Writes need admin.
    let (s, _) = app
        .post_json(
            &format!("/subjects/{SUBJECT}/versions"),
            &app.token("alice"),
            &json!({"schema": compatible}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, e) = app
        .post_json(
            &format!("/subjects/{SUBJECT}/versions"),
            &admin,
            &json!({"schema": breaking}),
        )
        .await;
    assert_eq!((s, e["error_code"].as_i64()), (409, Some(409)));
    let (s, e) = app
        .post_json(
            &format!("/subjects/{SUBJECT}/versions"),
            &admin,
            &json!({"schema": "{not avro"}),
        )
        .await;
    assert_eq!((s, e["error_code"].as_i64()), (422, Some(42201)));
    let (s, r) = app
        .post_json(
            &format!("/subjects/{SUBJECT}/versions"),
            &admin,
            &json!({"schema": compatible}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let id2 = r["id"].as_i64().unwrap();
    assert_ne!(id2, id);
    // Registering the same schema again returns the same id, no new version.
    let (_, again) = app
        .post_json(
            &format!("/subjects/{SUBJECT}/versions"),
            &admin,
            &json!({"schema": compatible}),
        )
        .await;
    assert_eq!(again["id"].as_i64(), Some(id2));
    let (_, versions) = app
        .get_json(&format!("/subjects/{SUBJECT}/versions"), None)
        .await;
    assert_eq!(versions, json!([1, 2]));
    // The gateway now validates against version 2.
    let mut m = message("with mood");
    m["mood"] = json!("happy");
    let (s, body) = app
        .post_json("/api/v1/events/message", &app.token("alice"), &m)
        .await;
    assert_eq!(s, 202, "{body}");
    app.stop().await;
}

both!(schema_ids_are_stable_across_restarts);
async fn schema_ids_are_stable_across_restarts(b: Backend) {
    let app = TestApp::start(b).await;
    let ids = |app: &TestApp| {
        app.ctx
            .schemas
            .topics()
            .iter()
            .map(|t| (t.clone(), app.ctx.schemas.topic(t).unwrap().id))
            .collect::<Vec<_>>()
    };
    let before = ids(&app);
    let store = app.stop_keep_store().await;
    let cfg = test_config(&store);
    let app = TestApp::start_on(store, cfg, vec![substrate::roles::Role::Gateway]).await;
    assert_eq!(before, ids(&app));
    app.stop().await;
}
