//! Realtime notifications on both backends: the reconnect race (every visible notification
//! exactly once, in order, across many disconnects while producers keep posting), visibility on
//! every path (history, SSE, WebSocket), stream tokens, heartbeats and `retry:`, slow clients
//! dropped and resumed without loss, and delivery across `serve` processes on PostgreSQL (one
//! projecting, two gateways).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use substrate::projections::notifications;
use tokio_tungstenite::tungstenite;

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// How a stream client authenticates.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    /// A stream token in `?access_token=`.
    Query(String),
}

/// Where a stream starts.
#[derive(Clone, Copy)]
pub enum From {
    Start,
    LastEventId(i64),
    After(i64),
}

#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub comment: Option<String>,
}

/// A minimal EventSource: one connection, events parsed as they arrive.
pub struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    /// How much of `buf` is known to hold no event boundary.
    scanned: usize,
}

fn query_of(auth: &Auth, from: From) -> String {
    let mut q = Vec::new();
    if let Auth::Query(t) = auth {
        q.push(format!("access_token={t}"));
    }
    if let From::After(n) = from {
        q.push(format!("after={n}"));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

impl Sse {
    pub async fn open(base: &str, auth: &Auth, from: From) -> Result<Sse, (u16, Value)> {
        let url = format!("{base}/api/v1/notifications/stream{}", query_of(auth, from));
        let mut req = reqwest::Client::new().get(url);
        if let Auth::Bearer(t) = auth {
            req = req.bearer_auth(t);
        }
        if let From::LastEventId(n) = from {
            req = req.header("last-event-id", n.to_string());
        }
        let r = req.send().await.expect("request");
        if r.status() != 200 {
            let s = r.status().as_u16();
            return Err((s, r.json().await.unwrap_or(Value::Null)));
        }
        Ok(Sse::from_response(r))
    }

    /// A client reading an event-stream answer (any SSE endpoint).
    pub fn from_response(r: reqwest::Response) -> Sse {
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
            scanned: 0,
        }
    }

    /// The next event (notification, heartbeat comment or retry), `None` at the end.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(i) = self.buf[self.scanned..].find("\n\n") {
                let block: String = self.buf.drain(..self.scanned + i + 2).collect();
                self.scanned = 0;
                let mut ev = SseEvent::default();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        ev.comment = Some(c.trim().to_string());
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        match k {
                            "id" => ev.id = Some(v.to_string()),
                            "event" => ev.event = Some(v.to_string()),
                            "data" => ev.data.push_str(v),
                            "retry" => ev.retry = v.parse().ok(),
                            _ => {}
                        }
                    }
                }
                return Some(ev);
            }
            self.scanned = self.buf.len().saturating_sub(1);
            while !self.buf.is_char_boundary(self.scanned) {
                self.scanned -= 1;
            }
            match self.body.next().await {
                Some(Ok(b)) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                _ => return None,
            }
        }
    }

    /// The next notification as (id, row), skipping heartbeats; `None` at the end.
    pub async fn notification(&mut self) -> Option<(i64, Value)> {
        loop {
            let ev = self.next().await?;
            if ev.event.as_deref() == Some("notification") {
                let id = cursor_id(ev.id.as_deref().expect("id"));
                let row: Value = serde_json::from_str(&ev.data).expect("json data");
                assert_eq!(row["id"], id, "the SSE id is the notification's cursor");
                return Some((id, row));
            }
        }
    }
}

/// The notification id in a cursor (`<epoch>:<id>`).
pub fn cursor_id(cursor: &str) -> i64 {
    let (epoch, id) = cursor.split_once(':').expect("<epoch>:<id>");
    assert!(epoch.parse::<i64>().unwrap() >= 1, "{cursor}");
    id.parse().expect("id")
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket stream client.
pub struct Ws {
    pub ws: WsStream,
}

impl Ws {
    pub async fn open(base: &str, auth: &Auth, from: From) -> Result<Ws, u16> {
        use tungstenite::client::IntoClientRequest;
        let from = match from {
            From::LastEventId(n) => From::After(n),
            f => f,
        };
        let url = format!(
            "{}/api/v1/notifications/ws{}",
            base.replacen("http://", "ws://", 1),
            query_of(auth, from)
        );
        let mut req = url.into_client_request().expect("ws request");
        if let Auth::Bearer(t) = auth {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => {
                let mut w = Ws { ws };
                let hello = w.next_json().await.expect("hello");
                assert_eq!(hello["type"], "hello", "{hello}");
                Ok(w)
            }
            Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("ws connect: {e}"),
        }
    }

    /// The next JSON message, `None` when the server closed.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(tungstenite::Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).expect("json"));
                }
                Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn notification(&mut self) -> Option<(i64, Value)> {
        loop {
            let m = self.next_json().await?;
            if m["type"] == "notification" {
                let id = m["id"].as_i64().expect("id");
                assert_eq!(m["data"]["id"], id);
                assert_eq!(cursor_id(m["cursor"].as_str().expect("cursor")), id);
                return Some((id, m["data"].clone()));
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Sse,
    Ws,
}

/// Either client, for scenarios that run over both.
pub enum Stream {
    Sse(Sse),
    Ws(Box<Ws>),
}

impl Stream {
    pub async fn open(t: Transport, base: &str, auth: &Auth, from: From) -> Stream {
        match t {
            Transport::Sse => Stream::Sse(Sse::open(base, auth, from).await.expect("sse")),
            Transport::Ws => Stream::Ws(Box::new(Ws::open(base, auth, from).await.expect("ws"))),
        }
    }

    pub async fn notification(&mut self) -> Option<(i64, Value)> {
        match self {
            Stream::Sse(s) => s.notification().await,
            Stream::Ws(w) => w.notification().await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------------

pub fn direct(text: &str, to: &str) -> Value {
    json!({ "message": text, "timestamp": "2026-01-01T00:00:00Z", "visibility": "direct", "recipient_id": to })
}

pub async fn post(app: &TestApp, token: &str, body: &Value) {
    let (s, r) = app.post_json("/api/v1/events/message", token, body).await;
    assert_eq!(s, 202, "{r}");
}

/// A login event for `user` through the identity service's API key.
pub async fn login_at(app: &TestApp, key: &str, user: &str, time: &str) {
    let body =
        json!({ "user_id": user, "email": format!("{user}@example.com"), "login_time": time });
    let r = app
        .http
        .post(app.url("/api/v1/events/login"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 202);
}

pub async fn login(app: &TestApp, key: &str, user: &str) {
    login_at(app, key, user, "2026-01-01T10:00:00Z").await
}

/// Waits until the notifications projection holds `n` rows.
pub async fn wait_notifications(app: &TestApp, n: usize) -> Vec<notifications::NotificationRow> {
    eventually(30, || async {
        let r = notifications::all(&app.ctx.store).await.ok()?;
        (r.len() >= n).then_some(r)
    })
    .await
}

async fn visible(app: &TestApp, user: &str) -> Vec<notifications::NotificationRow> {
    notifications::visible_after(&app.ctx.store, user, 0, 1_000_000)
        .await
        .unwrap()
}

fn label(row: &Value) -> String {
    row["payload"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}:{}",
                row["event_type"].as_str().unwrap(),
                row["user_id"].as_str().unwrap()
            )
        })
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Posts the visibility fixture; returns what alice must see, in order.
async fn visibility_fixture(app: &TestApp) -> Vec<&'static str> {
    let svc = app.api_key("identity", &["identity:write"]).await;
    let (alice, bob, carol) = (app.token("alice"), app.token("bob"), app.token("carol"));
    login(app, &svc, "bob").await; // bob's own (private): not for alice
    login(app, &svc, "alice").await;
    post(app, &bob, &message("hello all")).await;
    post(app, &bob, &direct("psst carol", "carol")).await; // bob → carol: not for alice
    post(app, &bob, &direct("hi alice", "alice")).await;
    post(app, &carol, &direct("for bob", "bob")).await; // carol → bob: not for alice
    post(app, &alice, &message("alice here")).await;
    post(app, &carol, &message("the end")).await;
    wait_notifications(app, 8).await;
    vec![
        "identity.login:alice",
        "hello all",
        "hi alice",
        "alice here",
        "the end",
    ]
}

both!(visibility_on_every_path);
async fn visibility_on_every_path(b: Backend) {
    let app = TestApp::start(b).await;
    let want = visibility_fixture(&app).await;
    let alice = app.token("alice");

    // History, oldest first, paged by the cursor.
    let mut seen = Vec::new();
    let mut after = "0".to_string();
    let mut pages = 0;
    loop {
        let (s, page) = app
            .get_json(
                &format!("/api/v1/notifications?after={after}&limit=2"),
                Some(&alice),
            )
            .await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for n in page["notifications"].as_array().unwrap() {
            seen.push(label(n));
        }
        after = page["next_after"].as_str().unwrap().to_string();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let mut want: Vec<String> = if app.store.kafka.is_some() {
        // Kafka keeps each key's order on a topic, not the order across topics: the same rows,
        // and the streams must then follow the history's order.
        let (mut a, mut b) = (seen.clone(), want.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "history");
        seen.clone()
    } else {
        assert_eq!(seen, want, "history");
        want.iter().map(|s| s.to_string()).collect()
    };

    // SSE and WebSocket, from the start: exactly the same rows, then nothing else.
    for t in [Transport::Sse, Transport::Ws] {
        let mut s = Stream::open(t, &app.base, &Auth::Bearer(alice.clone()), From::Start).await;
        let mut got = Vec::new();
        while got.len() < want.len() {
            let (_, row) = s.notification().await.expect("notification");
            got.push(label(&row));
        }
        assert_eq!(got, want, "{t:?}");
        // A later row for alice is the very next thing on the stream: nothing invisible
        // was queued in between.
        post(
            &app,
            &app.token("bob"),
            &direct(&format!("later {t:?}"), "alice"),
        )
        .await;
        let (_, row) = s.notification().await.expect("live notification");
        assert_eq!(label(&row), format!("later {t:?}"));
        want.push(format!("later {t:?}"));
    }

    // Bob sees his own login and his direct messages, carol what was sent to her.
    let bob: Vec<String> = visible(&app, "bob")
        .await
        .iter()
        .map(|r| label(&serde_json::to_value(r).unwrap()))
        .collect();
    assert!(bob.contains(&"identity.login:bob".to_string()));
    assert!(bob.contains(&"for bob".to_string()));
    assert!(!bob.contains(&"identity.login:alice".to_string()));
    app.stop().await;
}

both!(history_parameters_are_validated);
async fn history_parameters_are_validated(b: Backend) {
    let app = TestApp::start_roles(b, vec![substrate::roles::Role::Gateway], |_| {}).await;
    let t = app.token("alice");
    for (q, param) in [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ] {
        let (s, body) = app
            .get_json(&format!("/api/v1/notifications?{q}"), Some(&t))
            .await;
        assert_eq!(
            (s, body["error"].as_str()),
            (400, Some("invalid_parameter")),
            "{q}"
        );
        assert_eq!(body["parameter"], param, "{q}: {body}");
    }
    let (s, body) = app.get_json("/api/v1/notifications", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (401, Some("missing_credentials"))
    );
    let r = app
        .http
        .get(app.url("/api/v1/notifications/stream"))
        .bearer_auth(&t)
        .header("last-event-id", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["parameter"], "Last-Event-ID");
    let (s, page) = app.get_json("/api/v1/notifications", Some(&t)).await;
    assert_eq!(s, 200);
    assert_eq!(
        page,
        json!({ "notifications": [], "next_after": "1:0", "epoch": 1, "has_more": false })
    );
    app.stop().await;
}

/// Producers keep posting while alice's stream disconnects and reconnects with its cursor
/// dozens of times, at random points (mid-history, at the seam, live). Everything she
/// received, taken together, is exactly what she may see, in order, once.
async fn race(b: Backend, transport: Transport, hub_buffer: usize) {
    let app = TestApp::start_with(b, |c| c.realtime.hub_buffer = hub_buffer).await;
    let svc = app.api_key("identity", &["identity:write"]).await;
    let rounds = 40;
    let finished = Arc::new(AtomicBool::new(false));
    let producers = {
        let base_app = (app.base.clone(), app.token("alice"), app.token("bob"));
        let (base, alice, bob) = base_app;
        let svc = svc.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let send = |path: &'static str, auth: (&'static str, String), body: Value| {
                let http = http.clone();
                let url = format!("{base}{path}");
                async move {
                    let mut req = http.post(url).json(&body);
                    req = match auth.0 {
                        "bearer" => req.bearer_auth(auth.1),
                        _ => req.header("x-api-key", auth.1),
                    };
                    let r = req.send().await.expect("post");
                    assert_eq!(r.status().as_u16(), 202);
                }
            };
            for i in 0..rounds {
                let m = "/api/v1/events/message";
                let l = "/api/v1/events/login";
                let a = ("bearer", alice.clone());
                let bb = ("bearer", bob.clone());
                let k = ("key", svc.clone());
                let lg = |u: &str| json!({ "user_id": u, "email": "x@example.com", "login_time": 1_767_225_600_000i64 });
                // Concurrent producers: their events interleave in the log.
                tokio::join!(
                    send(m, a.clone(), message(&format!("a{i}"))),
                    send(m, bb.clone(), direct(&format!("ba{i}"), "alice")),
                    send(m, bb.clone(), message(&format!("b{i}"))),
                    send(m, bb, direct(&format!("bc{i}"), "carol")),
                    send(l, k.clone(), lg("alice")),
                    send(l, k, lg("carol")),
                );
            }
            finished.store(true, Ordering::SeqCst);
        })
    };
    let auth = Auth::Bearer(app.token("alice"));
    let mut got: Vec<(i64, Value)> = Vec::new();
    let mut reconnects = 0;
    let mut while_producing = 0;
    let mut expected: Option<Vec<i64>> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the race did not settle"
        );
        let from = match got.last() {
            None => From::Start,
            Some((id, _)) if reconnects % 4 == 3 => From::After(*id),
            Some((id, _)) => From::LastEventId(*id),
        };
        let mut s = Stream::open(transport, &app.base, &auth, from).await;
        reconnects += 1;
        if !finished.load(Ordering::SeqCst) {
            while_producing += 1;
        }
        let take = rand::thread_rng().gen_range(0..8);
        for _ in 0..take {
            match tokio::time::timeout(Duration::from_millis(300), s.notification()).await {
                Ok(Some(n)) => got.push(n),
                _ => break,
            }
        }
        drop(s);
        if expected.is_none() && finished.load(Ordering::SeqCst) {
            wait_notifications(&app, rounds * 6).await;
            expected = Some(visible(&app, "alice").await.iter().map(|r| r.id).collect());
        }
        if let Some(e) = &expected
            && got.len() >= e.len()
        {
            break;
        }
    }
    producers.await.unwrap();
    let expected = expected.unwrap();
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {ids:?}"
    );
    assert_eq!(ids, expected, "exactly the visible notifications");
    assert_eq!(
        expected.len(),
        rounds * 4,
        "alice sees a, ba, b and her logins"
    );
    let rows = visible(&app, "alice").await;
    let viewer = notifications::Viewer::new("alice", false);
    for ((_, row), want) in got.iter().zip(&rows) {
        assert_eq!(row, &serde_json::to_value(want.view_for(&viewer)).unwrap());
    }
    assert!(reconnects >= 30, "only {reconnects} reconnects");
    eprintln!("{reconnects} reconnects, {while_producing} while producers were posting");
    app.stop().await;
}

both!(race_sse);
async fn race_sse(b: Backend) {
    race(b, Transport::Sse, 10_000).await
}

both!(race_websocket);
async fn race_websocket(b: Backend) {
    race(b, Transport::Ws, 10_000).await
}

both!(race_sse_behind_a_tiny_hub_buffer);
/// The same race with a hub that keeps only 5 rows in memory: reconnecting clients are
/// mostly behind it and catch up from the store before they join the live tail.
async fn race_sse_behind_a_tiny_hub_buffer(b: Backend) {
    race(b, Transport::Sse, 5).await
}

both!(streams_end_at_their_lifetime_and_at_shutdown);
async fn streams_end_at_their_lifetime_and_at_shutdown(b: Backend) {
    let app = TestApp::start_with(b, |c| c.realtime.max_stream_secs = 1).await;
    let auth = Auth::Bearer(app.token("alice"));
    let mut s = Sse::open(&app.base, &auth, From::Start).await.unwrap();
    while s.next().await.is_some() {}
    let mut w = Ws::open(&app.base, &auth, From::Start).await.unwrap();
    let close = loop {
        match w.ws.next().await {
            Some(Ok(tungstenite::Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("close frame with a code");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4002, "lifetime")
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("substrate_realtime_dropped_total{reason=\"lifetime\"} 2"),
        "{metrics}"
    );
    // Shutdown ends open streams itself (rather than waiting out the grace period and
    // aborting them).
    let app2 = TestApp::start_with(b, |_| {}).await;
    let mut s = Sse::open(&app2.base, &Auth::Bearer(app2.token("bob")), From::Start)
        .await
        .unwrap();
    let ctx = app2.ctx.clone();
    app2.stop().await;
    while s.next().await.is_some() {}
    assert_eq!(
        ctx.metrics
            .realtime_dropped
            .with_label_values(&["shutdown"])
            .get(),
        1
    );
    app.stop().await;
}

both!(stream_tokens_open_streams_only);
async fn stream_tokens_open_streams_only(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = app.token("alice");
    post(&app, &alice, &message("one")).await;
    wait_notifications(&app, 1).await;
    let (s, tok) = app
        .post_json("/api/v1/notifications/stream-token", &alice, &json!({}))
        .await;
    assert_eq!(s, 201, "{tok}");
    assert_eq!(tok["expires_in"], 60);
    let token = tok["token"].as_str().unwrap().to_string();
    // EventSource style: no header, the token in the query.
    for t in [Transport::Sse, Transport::Ws] {
        let mut st = Stream::open(t, &app.base, &Auth::Query(token.clone()), From::Start).await;
        let (_, row) = st.notification().await.unwrap();
        assert_eq!(row["payload"]["message"], "one");
    }
    // It is not a credential anywhere else…
    let (s, _) = app.get_json("/api/v1/notifications", Some(&token)).await;
    assert_eq!(s, 401);
    let (s, _) = app
        .post_json("/api/v1/events/message", &token, &message("x"))
        .await;
    assert_eq!(s, 401);
    // …a tampered one is refused, and a JWT is never taken from the URL.
    let mut bad = token.clone();
    bad.pop();
    bad.push(if token.ends_with('A') { 'B' } else { 'A' });
    let e = Sse::open(&app.base, &Auth::Query(bad), From::Start)
        .await
        .err()
        .unwrap();
    assert_eq!((e.0, e.1["error"].as_str()), (401, Some("invalid_token")));
    let e = Sse::open(&app.base, &Auth::Query(alice.clone()), From::Start)
        .await
        .err()
        .unwrap();
    assert_eq!(e.0, 401);
    assert_eq!(
        Ws::open(&app.base, &Auth::Query("st1.x.1.y".into()), From::Start)
            .await
            .err(),
        Some(401)
    );
    // Without any credential: 401.
    let r = app
        .http
        .get(app.url("/api/v1/notifications/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

both!(heartbeats_retry_and_connection_gauge);
async fn heartbeats_retry_and_connection_gauge(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.realtime.heartbeat_secs = 1;
        c.realtime.retry_ms = 1234;
    })
    .await;
    let auth = Auth::Bearer(app.token("alice"));
    let mut s = Sse::open(&app.base, &auth, From::Start).await.unwrap();
    let first = s.next().await.unwrap();
    assert_eq!(first.retry, Some(1234), "{first:?}");
    let beat = s.next().await.unwrap();
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"));
    let mut w = Ws::open(&app.base, &auth, From::Start).await.unwrap();
    assert_eq!(w.next_json().await.unwrap()["type"], "heartbeat");
    w.ws.send(tungstenite::Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(w.next_json().await.unwrap()["type"], "pong");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("substrate_realtime_connections{transport=\"sse\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("substrate_realtime_connections{transport=\"websocket\"} 1"));
    drop(s);
    drop(w);
    eventually(10, || async {
        let m = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("substrate_realtime_connections{transport=\"sse\"} 0")
            .then_some(())
    })
    .await;
    app.stop().await;
}

both!(slow_client_is_dropped_and_resumes);
/// A client that stops reading is dropped once its buffer has been full for the configured
/// time; it reconnects from its cursor and gets the rest — nothing lost, nothing repeated.
async fn slow_client_is_dropped_and_resumes(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.realtime.client_buffer = 2;
        c.realtime.slow_client_timeout_ms = 300;
        c.gateway.body_limit_bytes = 512 * 1024;
    })
    .await;
    let alice = app.token("alice");
    let auth = Auth::Bearer(alice.clone());
    let mut s = Sse::open(&app.base, &auth, From::Start).await.unwrap();
    // Big notifications fill the socket buffers quickly while the client reads nothing.
    let big = "x".repeat(200 * 1024);
    let n = 60;
    for i in 0..n {
        post(&app, &alice, &message(&format!("{i}:{big}"))).await;
    }
    wait_notifications(&app, n).await;
    eventually(30, || async {
        let m = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("substrate_realtime_dropped_total{reason=\"slow_client\"} 1")
            .then_some(())
    })
    .await;
    // What was already in flight arrives, then the stream ends.
    let mut ids = Vec::new();
    while let Some((id, _)) = s.notification().await {
        ids.push(id);
    }
    assert!(
        ids.len() < n,
        "the client was cut off early ({} of {n})",
        ids.len()
    );
    eprintln!("slow client cut off after {} of {n}", ids.len());
    // Resume from the cursor (again, if this slow test client is dropped again).
    while ids.len() < n {
        let from = ids.last().map_or(From::Start, |l| From::LastEventId(*l));
        let mut s = Sse::open(&app.base, &auth, from).await.unwrap();
        while let Some((id, _)) = s.notification().await {
            ids.push(id);
            if ids.len() == n {
                break;
            }
        }
    }
    let all: Vec<i64> = visible(&app, "alice").await.iter().map(|r| r.id).collect();
    assert_eq!(ids, all);
    app.stop().await;
}

both!(a_stalled_client_does_not_hold_up_another);
/// One client stops reading while broadcasts keep coming: its buffer and socket fill and its
/// pump waits (it is not dropped: the slow-client timeout is long), yet another client gets
/// every notification, in order, exactly once, while it is stalled. When the stalled client
/// reads again it gets everything too, in order, exactly once: its bounded buffer lost nothing.
async fn a_stalled_client_does_not_hold_up_another(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        c.realtime.client_buffer = 2;
        c.realtime.slow_client_timeout_ms = 600_000;
        c.gateway.body_limit_bytes = 512 * 1024;
    })
    .await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let mut stalled = Sse::open(&app.base, &Auth::Bearer(alice.clone()), From::Start)
        .await
        .unwrap();
    let mut live = Sse::open(&app.base, &Auth::Bearer(bob.clone()), From::Start)
        .await
        .unwrap();
    // Big broadcasts fill the stalled client's socket buffers and its 2-frame buffer quickly.
    let big = "x".repeat(200 * 1024);
    let n = 40;
    for i in 0..n {
        post(&app, &bob, &message(&format!("{i}:{big}"))).await;
    }
    let all: Vec<i64> = wait_notifications(&app, n)
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    let mut got = Vec::new();
    while got.len() < n {
        let (id, row) = live
            .notification()
            .await
            .expect("the live client's stream ended");
        assert!(label(&row).starts_with(&format!("{}:", got.len())));
        got.push(id);
    }
    assert_eq!(got, all, "the live client, while the other one is stalled");
    // The stalled client was held back, not dropped: it reads everything now.
    let m = app.metrics().await;
    assert!(
        !m.contains("reason=\"slow_client\"} 1"),
        "the stalled client was dropped"
    );
    let mut late = Vec::new();
    while late.len() < n {
        let (id, _) = stalled
            .notification()
            .await
            .expect("the stalled client's stream ended");
        late.push(id);
    }
    assert_eq!(late, all, "the stalled client, once it reads again");
    app.stop().await;
}

/// A `substrate serve` child process on `store`; killed when dropped.
struct Child {
    proc: std::process::Child,
    base: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

async fn serve(store: &TestStore, roles: &str) -> Child {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = test_config(store);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_substrate"));
    if let Some(k) = &store.kafka {
        cmd.env("SUBSTRATE_LOG__URL", k.url());
    }
    let proc = cmd
        .args(["serve", "--roles", roles])
        .env("SUBSTRATE_STORE__URL", &store.url)
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_SCHEMAS__DIR", repo().join("avro"))
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env(
            "SUBSTRATE_GATEWAY__ROUTES_FILE",
            cfg.gateway.routes_file.to_str().unwrap(),
        )
        // No fallback polling: only NOTIFY can wake a stream in time.
        .env("SUBSTRATE_REALTIME__POLL_MS", "600000")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    eventually(30, || async {
        let r = reqwest::get(format!("{base}/healthz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    Child { proc, base }
}

/// Three `serve` processes on one PostgreSQL database: one projects (`consumers`), two are
/// gateways. A client streaming from gateway C gets what was posted to gateway B (or to C)
/// and projected by the consumers process, woken by the trigger's NOTIFY (polling is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_process_delivery_postgres() {
    let store = TestStore::new(Backend::Postgres).await;
    let s = substrate::store::Store::connect(&test_config(&store).store)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    s.close().await;
    // With Kafka the consumers process also relays the outbox to the broker.
    let consumers = serve(&store, "relay,consumers").await;
    let b = serve(&store, "gateway").await;
    let c = serve(&store, "gateway").await;
    let alice = token_with("alice", &[], None);
    let mut sse = Sse::open(&c.base, &Auth::Bearer(alice.clone()), From::Start)
        .await
        .unwrap();
    let mut ws = Ws::open(&c.base, &Auth::Bearer(alice.clone()), From::Start)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for (gateway, token, body) in [
        (
            &b.base,
            token_with("bob", &[], None),
            direct("via gateway B", "alice"),
        ),
        (&c.base, alice.clone(), message("via gateway C")),
    ] {
        let r = http
            .post(format!("{gateway}/api/v1/events/message"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Two keys: Kafka may project them in either order; the embedded log keeps posting order.
    let (mut via_sse, mut via_ws) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (_, row) = tokio::time::timeout(Duration::from_secs(20), sse.notification())
            .await
            .expect("delivered by NOTIFY")
            .unwrap();
        via_sse.push(row["payload"]["message"].as_str().unwrap().to_string());
        let (_, row) = tokio::time::timeout(Duration::from_secs(20), ws.notification())
            .await
            .expect("delivered by NOTIFY")
            .unwrap();
        via_ws.push(row["payload"]["message"].as_str().unwrap().to_string());
    }
    assert_eq!(via_sse, via_ws, "one order on every path");
    if store.kafka.is_some() {
        via_sse.sort();
    }
    assert_eq!(via_sse, ["via gateway B", "via gateway C"]);
    // Gateway B never streamed, gateway C never projected: the rows came from the consumers
    // process, through the store.
    let (_, page) = {
        let r = http
            .get(format!("{}/api/v1/notifications", b.base))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(page["notifications"].as_array().unwrap().len(), 2);
    drop((consumers, b, c));
    store.drop_db().await;
}

// ---------------------------------------------------------------------------------------
// Epochs: rebuilds and restores reset streams and cursors
// ---------------------------------------------------------------------------------------

/// The next SSE event that is not a comment (heartbeat) or the `retry:` frame, within 30 s.
async fn sse_event(s: &mut Sse) -> SseEvent {
    let next = async {
        loop {
            let ev = s.next().await.expect("the stream is open");
            if ev.event.is_some() {
                return ev;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("an SSE event in time")
}

/// The next WebSocket message that is not a heartbeat, within 30 s.
async fn ws_message(w: &mut Ws) -> Value {
    let next = async {
        loop {
            let m = w.next_json().await.expect("the socket is open");
            if m["type"] != "heartbeat" {
                return m;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("a WebSocket message in time")
}

/// Asserts `ev` is the SSE reset to the start of `epoch`.
fn assert_sse_reset(ev: &SseEvent, epoch: i64) {
    let start = format!("{epoch}:0");
    assert_eq!(ev.event.as_deref(), Some("reset"), "{ev:?}");
    assert_eq!(ev.id.as_deref(), Some(start.as_str()), "{ev:?}");
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(
        (&data["epoch"], &data["after"]),
        (&json!(epoch), &json!(start))
    );
}

/// `n` notifications from an SSE stream as (cursor, message), every one of `epoch`.
async fn sse_messages(s: &mut Sse, epoch: i64, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = sse_event(s).await;
        assert_eq!(ev.event.as_deref(), Some("notification"), "{ev:?}");
        let cursor = ev.id.clone().unwrap();
        assert!(cursor.starts_with(&format!("{epoch}:")), "{cursor}");
        let row: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(row["id"], cursor_id(&cursor));
        out.push((cursor, label(&row)));
    }
    out
}

/// `n` notifications from a WebSocket as (cursor, message), every one of `epoch`.
async fn ws_messages(w: &mut Ws, epoch: i64, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = ws_message(w).await;
        assert_eq!(m["type"], "notification", "{m}");
        let cursor = m["cursor"].as_str().unwrap().to_string();
        assert!(cursor.starts_with(&format!("{epoch}:")), "{cursor}");
        assert_eq!(m["id"], cursor_id(&cursor));
        out.push((cursor, label(&m["data"])));
    }
    out
}

/// The messages of `got`, sorted (Kafka may re-project keys in another interleaving), after
/// checking that no cursor came twice.
fn once_each(got: &[(String, String)]) -> Vec<String> {
    let mut cursors: Vec<&String> = got.iter().map(|(c, _)| c).collect();
    cursors.sort();
    cursors.dedup();
    assert_eq!(cursors.len(), got.len(), "a cursor came twice: {got:?}");
    let mut m: Vec<String> = got.iter().map(|(_, m)| m.clone()).collect();
    m.sort();
    m
}

/// Restores the notifications read model from a snapshot taken now; waits until applied.
async fn snapshot_and_restore_notifications(app: &TestApp) {
    let admin = app.admin_token();
    let (s, snap) = app
        .post_json(
            "/api/v1/admin/snapshots",
            &admin,
            &json!({ "group": "notifications" }),
        )
        .await;
    assert_eq!(s, 201, "{snap}");
    let (s, r) = app
        .post_json(
            &format!("/api/v1/admin/snapshots/{}/restore", snap["id"]),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let path = format!("/api/v1/admin/snapshots/restores/{}", r["request_id"]);
    eventually(30, || async {
        let (_, st) = app.get_json(&path, Some(&admin)).await;
        (st["applied"] == true).then_some(())
    })
    .await;
}

both!(a_rebuild_resets_connected_streams_and_old_cursors);
/// Rebuilding the notifications read model restarts its ids. Streams connected across the
/// rebuild are told to reset (SSE `event: reset`, WebSocket `reset`), then get every row of the
/// rebuilt table exactly once and the live rows after it; a client that comes back with a
/// cursor of the old epoch — epoch-carrying or a plain id — is told to reset too, on every
/// path. A snapshot restore is a reset like a rebuild.
async fn a_rebuild_resets_connected_streams_and_old_cursors(b: Backend) {
    let app = TestApp::start(b).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    for i in 0..3 {
        post(&app, &bob, &message(&format!("m{i}"))).await;
    }
    wait_notifications(&app, 3).await;
    let auth = Auth::Bearer(alice.clone());
    let mut sse = Sse::open(&app.base, &auth, From::Start).await.unwrap();
    let mut ws = Ws::open(&app.base, &auth, From::Start).await.unwrap();
    let before = sse_messages(&mut sse, 1, 3).await;
    assert_eq!(
        once_each(&ws_messages(&mut ws, 1, 3).await),
        ["m0", "m1", "m2"]
    );
    let old_cursor = before[2].0.clone();
    let (s, page) = app
        .get_json("/api/v1/notifications?after=0", Some(&alice))
        .await;
    assert_eq!(
        (s, &page["next_after"], &page["epoch"]),
        (200, &json!(old_cursor), &json!(1))
    );

    crate::stats::rebuild(&app, "notifications", "public.user.message.events").await;
    // Connected streams: the reset first, then every row of epoch 2 once, then live rows.
    assert_sse_reset(&sse_event(&mut sse).await, 2);
    let m = ws_message(&mut ws).await;
    assert_eq!(
        (&m["type"], &m["epoch"], &m["after"]),
        (&json!("reset"), &json!(2), &json!("2:0")),
        "{m}"
    );
    assert_eq!(
        once_each(&sse_messages(&mut sse, 2, 3).await),
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        once_each(&ws_messages(&mut ws, 2, 3).await),
        ["m0", "m1", "m2"]
    );
    post(&app, &bob, &message("live")).await;
    assert_eq!(sse_messages(&mut sse, 2, 1).await[0].1, "live");
    assert_eq!(ws_messages(&mut ws, 2, 1).await[0].1, "live");
    wait_notifications(&app, 4).await;

    // Coming back with a cursor of the old epoch: a reset before anything else, on SSE (the
    // cursor as handed out, or a plain id from before epochs) and WebSocket…
    for from in [old_cursor.clone(), cursor_id(&old_cursor).to_string()] {
        let r = app
            .http
            .get(app.url("/api/v1/notifications/stream"))
            .bearer_auth(&alice)
            .header("last-event-id", &from)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut s = Sse {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
            scanned: 0,
        };
        assert_sse_reset(&sse_event(&mut s).await, 2);
        assert_eq!(
            once_each(&sse_messages(&mut s, 2, 4).await),
            ["live", "m0", "m1", "m2"],
            "{from}"
        );
    }
    let url = format!(
        "{}/api/v1/notifications/ws?after={old_cursor}",
        app.base.replacen("http://", "ws://", 1)
    );
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (sock, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut w = Ws { ws: sock };
    let hello = ws_message(&mut w).await;
    assert_eq!(
        (&hello["type"], &hello["after"]),
        (&json!("hello"), &json!(old_cursor))
    );
    assert_eq!(ws_message(&mut w).await["type"], "reset");
    assert_eq!(
        once_each(&ws_messages(&mut w, 2, 4).await),
        ["live", "m0", "m1", "m2"]
    );
    // …and the history answers 409 with the cursor to start again from.
    for after in [old_cursor.clone(), cursor_id(&old_cursor).to_string()] {
        let (s, body) = app
            .get_json(
                &format!("/api/v1/notifications?after={after}"),
                Some(&alice),
            )
            .await;
        assert_eq!(
            (s, &body["error"], &body["epoch"], &body["after"]),
            (409, &json!("cursor_reset"), &json!(2), &json!("2:0")),
            "{body}"
        );
    }
    let (s, page) = app
        .get_json("/api/v1/notifications?after=2:0", Some(&alice))
        .await;
    assert_eq!(
        (s, page["notifications"].as_array().unwrap().len()),
        (200, 4)
    );

    // A snapshot restore resets too (epoch 3), and the stream carries on once more.
    snapshot_and_restore_notifications(&app).await;
    assert_sse_reset(&sse_event(&mut sse).await, 3);
    assert_eq!(
        once_each(&sse_messages(&mut sse, 3, 4).await),
        ["live", "m0", "m1", "m2"]
    );
    assert_eq!(ws_message(&mut ws).await["epoch"], 3);
    assert_eq!(ws_messages(&mut ws, 3, 4).await.len(), 4);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Privacy: the sender's email
// ---------------------------------------------------------------------------------------

both!(the_senders_email_is_shown_to_the_sender_and_admins_only);
/// The gateway copies the sender's email from the JWT into the message. A broadcast from alice
/// reaches bob without it — on the history, SSE and WebSocket, from the hub's buffer (rows that
/// arrive while the streams are open) and from the store (the history) — while alice and an
/// admin see it. A direct message's email is not shown to its recipient either.
async fn the_senders_email_is_shown_to_the_sender_and_admins_only(b: Backend) {
    let app = TestApp::start(b).await;
    let alice = token_with("alice", &[], Some("alice@example.com"));
    let bob = token_with("bob", &[], Some("bob@example.com"));
    let admin = app.admin_token();
    // Streams open first, so the rows come to them through the hub's buffer.
    let mut streams = Vec::new();
    for (who, token) in [("alice", &alice), ("bob", &bob), ("admin", &admin)] {
        let auth = Auth::Bearer(token.clone());
        for t in [Transport::Sse, Transport::Ws] {
            streams.push((who, t, Stream::open(t, &app.base, &auth, From::Start).await));
        }
    }
    post(&app, &alice, &message("hello all")).await;
    post(&app, &alice, &direct("psst bob", "bob")).await;
    wait_notifications(&app, 2).await;
    // What each one may see: (message, whether alice's email is shown).
    let want = |who: &str| -> Vec<(String, bool)> {
        match who {
            "alice" => vec![("hello all".into(), true), ("psst bob".into(), true)],
            "bob" => vec![("hello all".into(), false), ("psst bob".into(), false)],
            _ => vec![("hello all".into(), true)],
        }
    };
    let seen = |row: &Value| -> (String, bool) {
        let email = &row["payload"]["email"];
        assert!(email.is_null() || email == "alice@example.com", "{row}");
        (label(row), !email.is_null())
    };
    for (who, t, s) in &mut streams {
        let mut got = Vec::new();
        for _ in 0..want(who).len() {
            let (_, row) = tokio::time::timeout(Duration::from_secs(30), s.notification())
                .await
                .expect("in time")
                .unwrap();
            got.push(seen(&row));
        }
        got.sort();
        assert_eq!(got, want(who), "{who} over {t:?}");
    }
    for (who, token) in [("alice", &alice), ("bob", &bob), ("admin", &admin)] {
        let (s, page) = app.get_json("/api/v1/notifications", Some(token)).await;
        assert_eq!(s, 200);
        let mut got: Vec<(String, bool)> = page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(seen)
            .collect();
        got.sort();
        assert_eq!(got, want(who), "{who}'s history");
    }
    app.stop().await;
}

/// A rebuild applied by another process (the `consumers` one) reaches a stream on a gateway
/// process at once: the reset's TRUNCATE and epoch update NOTIFY every process (polling is
/// off), and the stream gets the reset, then the rebuilt rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_process_reset_postgres() {
    let store = TestStore::new(Backend::Postgres).await;
    let s = substrate::store::Store::connect(&test_config(&store).store)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    s.close().await;
    let consumers = serve(&store, "relay,consumers").await;
    let gateway = serve(&store, "gateway").await;
    let alice = token_with("alice", &[], None);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/events/message", gateway.base))
        .bearer_auth(&alice)
        .json(&message("before"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut sse = Sse::open(&gateway.base, &Auth::Bearer(alice.clone()), From::Start)
        .await
        .unwrap();
    assert_eq!(sse_messages(&mut sse, 1, 1).await[0].1, "before");
    let r = http
        .post(format!("{}/api/v1/admin/replay", gateway.base))
        .bearer_auth(token_with("operator", &["admin"], None))
        .json(
            &json!({ "topic": "public.user.message.events", "group": "notifications",
                       "from_beginning": true, "rebuild": true }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_sse_reset(&sse_event(&mut sse).await, 2);
    assert_eq!(sse_messages(&mut sse, 2, 1).await[0].1, "before");
    drop((consumers, gateway));
    store.drop_db().await;
}
