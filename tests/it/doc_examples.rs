//! Examples that run: every `curl` in a shell block of README.md and docs/*.md is run, in
//! order, against a fresh embedded server, so the docs cannot rot. The documented address
//! becomes the server's; `$TOKEN` (alice, with an email), `$ADMIN_TOKEN`, the alerts
//! `$ALERTS_KEY` and the telemetry `$KEY` are minted;
//! `$UPLOAD_URL` and the `0193…` request id come from the upload the README's own
//! upload-intent example started (once the saga has signed its URL); `@cat.png` is a file of the announced size. The status a
//! comment names (`(HTTP 400)`, `# 202 {…}`) is the one expected, else a 2xx, and an error code
//! it shows is the one answered. Streams
//! (`curl -N`) run for two seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// One example: where it is, the command, and the status its comment names.
#[derive(Debug)]
struct Example {
    at: String,
    command: String,
    status: Option<u16>,
    /// The error code the comment shows (`{"error":"invalid_event",…}`).
    error: Option<String>,
}

/// The status a comment line names: `(HTTP 400)` or a leading `# 202 `.
fn named_status(comment: &str) -> Option<u16> {
    let c = comment.trim_start_matches('#').trim();
    if let Some(i) = c.find("HTTP ") {
        return c[i + 5..].get(..3)?.parse().ok();
    }
    c.get(..3)
        .filter(|_| c.len() == 3 || c.as_bytes()[3] == b' ')
        .and_then(|s| s.parse().ok())
}

/// The curl examples of one Markdown file, continuation lines joined.
fn examples_in(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).expect("read doc");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let mut out: Vec<Example> = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_shell = !in_shell && matches!(t, "```sh" | "```bash" | "```shell");
            continue;
        }
        if !in_shell {
            continue;
        }
        if !pending.is_empty() || t.starts_with("curl ") {
            pending.push_str(t.trim_end_matches('\\'));
            pending.push(' ');
            if !t.ends_with('\\') {
                // A trailing `# comment` on the command line is not part of it.
                let command = match pending.find(" # ") {
                    Some(i) => pending[..i].to_string(),
                    None => pending.clone(),
                };
                out.push(Example {
                    at: format!("{name}:{}", n + 1),
                    command: command.trim().to_string(),
                    status: None,
                    error: None,
                });
                pending.clear();
            }
        } else if t.starts_with('#')
            && let Some(last) = out.last_mut()
            && last.status.is_none()
        {
            last.status = named_status(t);
            last.error = t
                .split("\"error\":\"")
                .nth(1)
                .and_then(|e| e.split('"').next())
                .map(str::to_string);
        }
    }
    out
}

fn all_examples() -> Vec<Example> {
    let mut files: Vec<PathBuf> = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files.iter().flat_map(|f| examples_in(f)).collect()
}

/// Runs one example with bash; (status, stdout).
async fn run(app: &TestApp, dir: &Path, env: &[(&str, String)], ex: &Example) -> (u16, String) {
    let mut command = ex
        .command
        .replace("http://127.0.0.1:8080", &app.base)
        .replace("0193…", "$REQUEST_ID");
    if command.starts_with("curl -N") {
        command = command.replacen("curl -N", "curl -N --max-time 2", 1);
    }
    // The status goes to stderr, so stdout (and a pipe) see exactly what the docs show.
    let script = format!(
        "curl() {{ command curl -sS -w '%{{stderr}}__HTTP__%{{http_code}}__' \"$@\"; }}\n{command}"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{}: still running after 30 s", ex.at))
    .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = stderr
        .split("__HTTP__")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}: no HTTP status ({}): {stderr}", ex.at, ex.command));
    // curl's exit 28 is the stream's time limit.
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || (code == 28 && ex.command.starts_with("curl -N")),
        "{}: curl exited {code}: {stderr}",
        ex.at
    );
    (status, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for the upload the README's upload-intent started and returns its PUT URL.
async fn upload_url(app: &TestApp, token: &str, request_id: &str) -> String {
    eventually(30, || async {
        let (_, u) = app
            .get_json(&format!("/api/v1/media/uploads/{request_id}"), Some(token))
            .await;
        u["upload_url"].as_str().map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_in_the_docs_runs() {
    let examples = all_examples();
    assert!(examples.len() >= 12, "{examples:#?}");
    let app = TestApp::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_with("alice", &[], Some("alice@example.com"));
    // `$KEY`: the README's telemetry agent key (`substrate apikey create … --scopes
    // "telemetry:write org:acme"`).
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    // `$ALERTS_KEY`: the README's alerts admin key (`--scopes "admin org:acme"`).
    let alerts_key = app.api_key("alerts", &["admin", "org:acme"]).await;
    let mut env = vec![
        ("TOKEN", token.clone()),
        ("ADMIN_TOKEN", app.admin_token()),
        ("KEY", key),
        ("ALERTS_KEY", alerts_key),
    ];
    for ex in &examples {
        if ex.command.contains("upload-intent") {
            // `@cat.png` must have the size the intent announces.
            let size = ex
                .command
                .split("\"file_size\": ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse::<usize>().ok())
                .expect("file_size in the upload example");
            std::fs::write(dir.path().join("cat.png"), vec![0u8; size]).expect("cat.png");
        }
        if (ex.command.contains("$UPLOAD_URL") || ex.command.contains("0193…"))
            && !env.iter().any(|(k, _)| *k == "REQUEST_ID")
        {
            panic!("{}: no upload-intent example before it", ex.at);
        }
        let (status, body) = run(&app, dir.path(), &env, ex).await;
        match ex.status {
            Some(want) => assert_eq!(status, want, "{}: {}\n{body}", ex.at, ex.command),
            None => assert!(
                (200..300).contains(&status),
                "{}: {status} {}\n{body}",
                ex.at,
                ex.command
            ),
        }
        if let Some(code) = &ex.error {
            let got: Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(
                got["error"].as_str(),
                Some(code.as_str()),
                "{}: {body}",
                ex.at
            );
        }
        if ex.command.contains("upload-intent")
            && let Ok(v) = serde_json::from_str::<Value>(&body)
            && let Some(id) = v["request_id"].as_str()
        {
            // As the README says: the upload-ready notification (here, the upload's state)
            // brings the PUT URL.
            env.push(("UPLOAD_URL", upload_url(&app, &token, id).await));
            env.push(("REQUEST_ID", id.to_string()));
        }
        eprintln!("{}: {status} {}", ex.at, ex.command);
    }
    app.stop().await;
}

#[test]
fn comments_name_statuses() {
    assert_eq!(named_status("# {\"error\":\"x\"}   (HTTP 400)"), Some(400));
    assert_eq!(named_status("# 202 {\"event_id\":\"0193…\"}"), Some(202));
    assert_eq!(named_status("# {\"event_id\":\"0193…\"}"), None);
    assert_eq!(named_status("# browsers: POST /x"), None);
}
