//! The status page in a real browser: Debian's Chromium, headless, with a fresh profile.
//! `--dump-dom` shows every component and the overall state; on a phone-sized window the
//! page needs no sideways scrolling (asked over the DevTools protocol); screenshots of a phone
//! and a desktop window are saved in `tests/output/browser/` (gitignored).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const FLAGS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
];

pub fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--hide-scrollbars")
        .arg("--force-device-scale-factor=1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs Chromium to completion (bounded), returning stdout.
pub async fn run(mut c: Command) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium (Debian package `chromium`, installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output_dir() -> PathBuf {
    let d = repo().join("tests/output/browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Width and height of a PNG, from its header.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// A DevTools protocol session with one page.
struct Cdp {
    sock: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let msg = json!({"id": self.id, "method": method, "params": params});
        self.sock
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        while let Some(msg) = self.sock.next().await {
            if let Ok(Message::Text(t)) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == self.id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
        panic!("DevTools closed during {method}")
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }
}

/// Layout facts of the page as a phone shows it (412×915 CSS pixels, mobile viewport rules:
/// without a viewport meta tag the page would be laid out 980 pixels wide).
async fn phone_layout(url: &str) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let mut c = chromium(profile.path());
    c.args(["--remote-debugging-port=0", "about:blank"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("chromium");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let devtools = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(ws) = l.strip_prefix("DevTools listening on ") {
                return ws.trim().to_string();
            }
        }
        panic!("chromium printed no DevTools address")
    })
    .await
    .expect("DevTools address in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let port = devtools
        .split(':')
        .nth(2)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let page_ws = eventually(30, || async {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .map(str::to_string)
    })
    .await;
    let (sock, _) = tokio_tungstenite::connect_async(&page_ws).await.unwrap();
    let mut cdp = Cdp { sock, id: 0 };
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 412, "height": 915, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    cdp.call("Page.navigate", json!({ "url": url })).await;
    let mut loaded = false;
    for _ in 0..300 {
        let state = cdp.eval("document.readyState + ' ' + location.href").await;
        if state.as_str() == Some(&format!("complete {url}")) {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(loaded, "the status page did not load");
    let facts = cdp
        .eval(
            r#"JSON.stringify({
            viewport: window.innerWidth,
            scroll: document.documentElement.scrollWidth,
            font: parseFloat(getComputedStyle(document.body).fontSize),
            bars: [...document.querySelectorAll('.bars')].map(b => b.getBoundingClientRect().width),
            components: document.querySelectorAll('[data-component]').length
        })"#,
        )
        .await;
    let _ = child.kill().await;
    serde_json::from_str(facts.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let app = TestApp::start_with(Backend::Sqlite, |c| {
        c.probe.interval_secs = 1;
        c.probe.timeout_secs = 2;
    })
    .await;
    eventually(30, || async {
        let (_, d) = app.get_json("/status.json", None).await;
        (d["probe"]["last"]["ok"] == true).then_some(())
    })
    .await;
    let url = app.url("/status");

    // The rendered DOM names every component, its state, and the overall state.
    let profile = tempfile::tempdir().unwrap();
    let mut c = chromium(profile.path());
    c.args(["--window-size=412,915", "--dump-dom", &url]);
    let dom = run(c).await;
    assert!(dom.contains(r#"id="overall""#), "{dom}");
    for (component, title) in [
        ("gateway", "Event ingest API"),
        ("store", "Database"),
        ("log", "Event log"),
        ("relay", "Event relay"),
        ("projections", "Event projections"),
        ("sagas", "Workflows (sagas)"),
        ("objects", "File storage"),
    ] {
        assert!(
            dom.contains(&format!(r#"data-component="{component}""#)),
            "{component} missing"
        );
        assert!(dom.contains(title), "{title} missing");
    }
    assert_eq!(
        dom.matches(r#"class="bar "#).count(),
        7 * 90,
        "90 bars each"
    );
    assert!(dom.contains("End-to-end event round trip"));

    // Readable on a phone: no sideways scrolling, normal text size, bars laid out.
    let layout = phone_layout(&url).await;
    assert_eq!(layout["viewport"], 412, "{layout}");
    assert!(
        layout["scroll"].as_f64().unwrap() <= 412.0,
        "the page scrolls sideways on a phone: {layout}"
    );
    assert!(layout["font"].as_f64().unwrap() >= 14.0, "{layout}");
    assert_eq!(layout["components"], 7);
    for w in layout["bars"].as_array().unwrap() {
        assert!(w.as_f64().unwrap() > 300.0, "{layout}");
    }

    // Screenshots for people to look at.
    let out = output_dir();
    for (name, size) in [
        ("status-phone.png", "412,1400"),
        ("status-desktop.png", "1280,1200"),
    ] {
        let path = out.join(name);
        let _ = std::fs::remove_file(&path);
        let profile = tempfile::tempdir().unwrap();
        let mut c = chromium(profile.path());
        c.arg(format!("--window-size={size}"))
            .arg(format!("--screenshot={}", path.display()))
            .arg(&url);
        run(c).await;
        let (w, h) = png_size(&path);
        let want: Vec<u32> = size.split(',').map(|s| s.parse().unwrap()).collect();
        assert_eq!((w, h), (want[0], want[1]), "{name}");
        assert!(
            std::fs::metadata(&path).unwrap().len() > 10_000,
            "{name} is not blank"
        );
    }
    app.stop().await;
}
