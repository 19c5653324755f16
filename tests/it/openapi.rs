//! The API as a contract: `/openapi.json` is generated from the handlers (the unit test
//! `http::openapi::tests::router_and_document_agree` compares the router's registered paths
//! with the document's); here the document is checked from outside against a running server:
//! every documented operation is answered by its handler (not the router's fallback), the
//! document validates (openapi-spec-validator), a client driven by it posts an event and reads
//! it back (openapi-core checks both directions), Schemathesis finds no server error, no
//! undocumented status and no response off its schema, and `/docs` renders in Chromium.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Fails (never skips) when python3 or the packages are missing: `scripts/setup.sh` installs them.
async fn require_python(import: &str) {
    let out = tokio::process::Command::new("python3")
        .args(["-c", &format!("import {import}")])
        .output()
        .await
        .expect("python3 is not installed; run scripts/setup.sh");
    assert!(
        out.status.success(),
        "python3 lacks {import}; run scripts/setup.sh\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn python(args: &[&str], timeout: Duration) -> (bool, String, String) {
    let script = repo().join("tests/python/openapi_check.py");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, child)
        .await
        .expect("openapi_check.py finished in time")
        .expect("run python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn document(app: &TestApp) -> Value {
    let (s, doc) = app.get_json("/openapi.json", None).await;
    assert_eq!(s, 200, "{doc}");
    doc
}

/// A concrete URL path for a documented one: integers where the parameter is an integer.
fn fill(path: &str, op: &Value) -> String {
    let mut out = path.to_string();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] != "path" {
            continue;
        }
        let name = p["name"].as_str().unwrap_or_default();
        let value = if p["schema"]["type"] == "integer" {
            "1"
        } else {
            "x"
        };
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Every operation in the document reaches a handler: without credentials it answers
/// anything but the router's own `404 not_found` / `405`. Per-route event operations exist
/// for each route of routes.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_reaches_a_handler() {
    let app = TestApp::start(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ["message", "login", "probe"] {
        for path in [
            format!("/api/v1/events/{route}"),
            format!("/api/v1/events/{route}/batch"),
        ] {
            assert!(
                doc["paths"].get(&path).is_some(),
                "{path} is not documented"
            );
        }
    }
    let body = &doc["paths"]["/api/v1/events/message"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        body["properties"]["visibility"]["enum"],
        serde_json::json!(["broadcast", "direct"])
    );
    assert!(
        body["allOf"][0]["if"].is_object(),
        "the direct-message rule: {body}"
    );

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let url = app.url(&fill(path, op));
            let resp = app.http.request(m.clone(), &url).send().await.expect(&url);
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let fallback = status == 404
                && serde_json::from_str::<Value>(&text).is_ok_and(|b| b["error"] == "not_found");
            assert!(
                status != 405 && !fallback && !(m == reqwest::Method::HEAD && status == 404),
                "{method} {path} is documented but the router does not serve it: {status} {text}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} operations");
    // And the reverse for a path the document lacks: the router's fallback.
    let (s, body) = app.get_json("/api/v1/no-such-endpoint", None).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_validates() {
    require_python("openapi_spec_validator").await;
    let app = TestApp::start(Backend::Sqlite).await;
    let (ok, out, err) = python(&["validate", &app.base], Duration::from_secs(120)).await;
    assert!(
        ok,
        "openapi-spec-validator refused /openapi.json:\n{out}\n{err}"
    );
    let summary: Value = serde_json::from_str(out.trim()).expect("summary");
    assert_eq!(summary["valid"], true);
    eprintln!("openapi-spec-validator: {summary}");
    app.stop().await;
}

both!(a_client_driven_by_the_document_posts_and_reads_back);
async fn a_client_driven_by_the_document_posts_and_reads_back(b: Backend) {
    require_python("openapi_core").await;
    let app = TestApp::start(b).await;
    let (ok, out, err) = python(
        &["client", &app.base, &app.token("alice"), &app.token("bob")],
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "the client failed:\n{out}\n{err}");
    let done: Value = serde_json::from_str(out.trim()).expect("summary");
    let id = done["posted"].as_str().expect("event id");
    assert_eq!(app.outbox_count(Some(id)).await, 1, "{done}");
    app.stop().await;
}

both!(schemathesis_finds_no_failures);
/// Schemathesis against every operation but the live streams (they never end), with an
/// admin's credentials, a fixed seed and a fixed number of examples per operation. Both
/// credentials are valid admin ones: Schemathesis fills in every security scheme an operation
/// offers (it would otherwise invent an `X-API-Key`), and an API key wins over a bearer token.
async fn schemathesis_finds_no_failures(b: Backend) {
    require_python("schemathesis").await;
    let app = TestApp::start(b).await;
    // The telemetry scopes and an org let the telemetry endpoints be fuzzed past their 403.
    let key = app
        .api_key(
            "fuzz-admin",
            &["admin", "telemetry:write", "telemetry:read", "org:fuzz"],
        )
        .await;
    let started = Instant::now();
    // Hypothesis (under Schemathesis) can fail inside itself on CPython 3.11 with "AST
    // constructor recursion depth mismatch" while describing a lambda: a tool bug, not an
    // answer of ours. Such a run is repeated (twice at most); any other failure stands.
    let mut attempt = 0;
    let out = loop {
        let run = tokio::process::Command::new("schemathesis")
            .args([
                "--no-color",
                "run",
                &app.url("/openapi.json"),
                "--url",
                &app.base,
                "--header",
                &format!("Authorization: Bearer {}", app.admin_token()),
                "--header",
                &format!("X-API-Key: {key}"),
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance",
                "--max-examples",
                "12",
                "--seed",
                "20261207",
                "--workers",
                "2",
                "--phases",
                "examples,coverage,fuzzing",
                "--request-timeout",
                "20",
                "--exclude-path-regex",
                "^/api/v1/(notifications/(stream|ws)|tail/(logs|alerts))$",
                "--suppress-health-check",
                "all",
            ])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(600), run)
            .await
            .expect("schemathesis finished in time")
            .expect("schemathesis (pip install schemathesis; scripts/setup.sh)");
        attempt += 1;
        let tool_bug = String::from_utf8_lossy(&out.stdout)
            .contains("AST constructor recursion depth mismatch");
        if out.status.success() || !tool_bug || attempt > 2 {
            break out;
        }
        eprintln!("schemathesis hit Hypothesis' AST recursion bug; running it again");
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!(
        "schemathesis on {} ({:.0}s):\n{}",
        app.store.log_name(),
        started.elapsed().as_secs_f64(),
        summary.join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

/// `/docs` in headless Chromium: Redoc (served by the binary, no CDN) renders the document
/// and lists the event routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_renders_in_headless_chromium() {
    let app = TestApp::start(Backend::Sqlite).await;
    let resp = app
        .http
        .get(app.url("/docs/redoc.standalone.js"))
        .send()
        .await
        .expect("redoc");
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.expect("bundle").len() > 500_000);
    let profile = tempfile::tempdir().expect("profile");
    let mut c = crate::browser::chromium(profile.path());
    c.args([
        "--window-size=1280,2000",
        "--virtual-time-budget=30000",
        "--dump-dom",
        &app.url("/docs"),
    ]);
    let dom = crate::browser::run(c).await;
    assert!(!dom.contains("Something went wrong"), "{dom}");
    for needle in [
        "substrate",
        "/api/v1/events/message",
        "/api/v1/events/login/batch",
        "Post one `public.user.message.events` event",
        "/webhooks/{name}",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered reference lacks {needle}:\n{}",
            &dom[..dom.len().min(4000)]
        );
    }
    app.stop().await;
}

/// `substrate openapi` prints the document a server with the same configuration serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_served_document() {
    let app = TestApp::start(Backend::Sqlite).await;
    let served = document(&app).await;
    let out = tokio::process::Command::from(substrate_cmd(&app))
        .arg("openapi")
        .output()
        .await
        .expect("run substrate openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_eq!(printed["paths"], served["paths"]);
    assert_eq!(printed["components"], served["components"]);
    app.stop().await;
}
