//! One request, one trace. A real `substrate serve` exports over OTLP (HTTP, and gRPC) to a
//! tiny receiver in the test: one POST carrying a `traceparent` yields, in that trace, the server span, the
//! `publish` span, the outbox append and the consumer's `process` span, with the messaging
//! attributes, parented in that order; the outbox row names the publish span; the JSON logs
//! carry trace, span, request and event ids. In process, with an exporter that collects
//! spans: an event a handler emits names the handler's span, and its consumer continues the
//! same trace.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{Value, json};
use substrate::config::TelemetryConfig;
use substrate::consumers::{Emitter, Envelope, Handler, HandlerError, runtime};
use substrate::projections::notifications::{self, NotificationsProjection};
use substrate::roles::Role;
use substrate::store::Tx;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A span as the OTLP receiver got it.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: HashMap<String, String>,
}

impl Got {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
}

/// OTLP span kinds.
const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn value_text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn collect(sink: &Mutex<Vec<Got>>, req: ExportTraceServiceRequest) {
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                sink.lock().push(Got {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
                        .collect(),
                });
            }
        }
    }
}

/// A tiny OTLP/HTTP (protobuf) receiver: `POST /v1/traces`.
async fn http_receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                collect(&sink, req);
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// A tiny OTLP/gRPC receiver: HTTP/2, `TraceService/Export`, length-prefixed protobuf in,
/// an empty answer and `grpc-status: 0` out.
async fn grpc_receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    type Answer = hyper::Response<
        StreamBody<
            futures::stream::Iter<
                std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
            >,
        >,
    >;

    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let sink = sink.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        assert_eq!(
                            req.uri().path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(body[0], 0, "uncompressed");
                        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
                        collect(
                            &sink,
                            ExportTraceServiceRequest::decode(&body[5..5 + len]).unwrap(),
                        );
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames = vec![
                            Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let resp: Answer = hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(futures::stream::iter(frames)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc),
            );
        }
    });
    (format!("http://{addr}"), got)
}

/// One text value from the test's store (both drivers).
async fn scalar(url: &str, sql: &str, bind: &str) -> Option<String> {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.ok()?;
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_optional(&mut c)
            .await
            .ok()?
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.ok()?;
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_optional(&mut c)
            .await
            .ok()?
    }
}

fn outbox_traceparent(headers: &str) -> String {
    let h: Value = serde_json::from_str(headers).unwrap();
    h["traceparent"].as_str().unwrap().to_string()
}

both!(one_post_is_one_trace_over_otlp_http);
async fn one_post_is_one_trace_over_otlp_http(b: Backend) {
    one_post_is_one_trace(b, "http").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_post_is_one_trace_over_otlp_grpc() {
    one_post_is_one_trace(Backend::Sqlite, "grpc").await
}

async fn one_post_is_one_trace(b: Backend, protocol: &str) {
    let (otlp, spans) = match protocol {
        "grpc" => grpc_receiver().await,
        _ => http_receiver().await,
    };
    let store = TestStore::new(b).await;
    let kafka = store.kafka.is_some();
    let system = if kafka { "kafka" } else { "substrate" };
    let routes = store.dir.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_substrate"));
    if let Some(k) = &store.kafka {
        cmd.env("SUBSTRATE_LOG__URL", k.url());
    }
    let mut child = cmd
        .args(["serve", "--roles", "gateway,relay,consumers"])
        .current_dir(repo())
        .env("SUBSTRATE_STORE__URL", &store.url)
        .env("SUBSTRATE_STORE__MIGRATE_ON_START", "true")
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env("SUBSTRATE_GATEWAY__ROUTES_FILE", routes.to_str().unwrap())
        .env(
            "SUBSTRATE_OBJECTS__URL",
            format!("file://{}/objects", store.dir.path().display()),
        )
        .env("SUBSTRATE_TELEMETRY__OTLP_ENDPOINT", &otlp)
        .env("SUBSTRATE_TELEMETRY__OTLP_PROTOCOL", protocol)
        .env("SUBSTRATE_TELEMETRY__LOG_FORMAT", "json")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn,substrate=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().push(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(30, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let trace = hex::encode(rand::random::<[u8; 16]>());
    let caller = hex::encode(rand::random::<[u8; 8]>());
    let r = http
        .post(format!("{base}/api/v1/events/message"))
        .bearer_auth(token_with("alice", &[], None))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header("x-request-id", "trace-test-req-1")
        .json(&message("traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.headers()["x-request-id"], "trace-test-req-1");
    let event_id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(30, || async {
        scalar(
            &store.url,
            "SELECT event_id FROM notifications WHERE event_id = $1",
            &event_id,
        )
        .await
    })
    .await;
    let headers = scalar(
        &store.url,
        "SELECT headers FROM outbox WHERE event_id = $1",
        &event_id,
    )
    .await
    .unwrap();

    // A clean stop flushes the exporter.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    reader.join().unwrap();

    let ours: Vec<Got> = spans
        .lock()
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    let find = |name: &str| {
        ours.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {ours:#?}"))
            .clone()
    };
    let server = find("POST /api/v1/events/{route}");
    assert_eq!(
        (server.kind, server.parent.as_str()),
        (SERVER, caller.as_str())
    );
    assert_eq!(server.attr("request_id"), "trace-test-req-1");
    assert_eq!(server.attr("http.response.status_code"), "202");

    let publish = find("publish public.user.message.events");
    assert_eq!((publish.kind, &publish.parent), (PRODUCER, &server.span_id));
    assert_eq!(publish.attr("messaging.system"), system);
    assert_eq!(
        publish.attr("messaging.destination.name"),
        "public.user.message.events"
    );
    assert_eq!(publish.attr("messaging.operation"), "publish");

    let append = find("outbox append");
    assert_eq!(append.parent, publish.span_id);
    assert!(append.attr("outbox.batch_events").parse::<i64>().unwrap() >= 1);

    // Every group that reads the topic continues the trace; check the notifications one.
    let processes: Vec<_> = ours
        .iter()
        .filter(|s| s.name == "process public.user.message.events")
        .cloned()
        .collect();
    assert!(
        processes.len() >= 2,
        "notifications and the other read models: {processes:#?}"
    );
    let process = processes
        .iter()
        .find(|s| s.attr("messaging.consumer.group.name") == "notifications")
        .cloned()
        .unwrap_or_else(|| panic!("no notifications process span in {processes:#?}"));
    // With Kafka the relay's send span sits between the gateway and the consumer.
    let producer_of_record = if kafka {
        let send = find("send public.user.message.events");
        assert_eq!((send.kind, &send.parent), (PRODUCER, &publish.span_id));
        assert_eq!(send.attr("messaging.system"), "kafka");
        assert_eq!(send.attr("messaging.message.id"), event_id);
        send.span_id
    } else {
        publish.span_id.clone()
    };
    assert_eq!(
        (process.kind, &process.parent),
        (CONSUMER, &producer_of_record)
    );
    assert_eq!(process.attr("messaging.operation"), "process");
    assert_eq!(
        process.attr("messaging.consumer.group.name"),
        "notifications"
    );
    assert_eq!(process.attr("messaging.message.id"), event_id);
    assert_eq!(process.attr("messaging.system"), system);

    // The outbox row (and so any Kafka record made from it) names the publish span.
    assert_eq!(
        outbox_traceparent(&headers),
        format!("00-{trace}-{}-01", publish.span_id)
    );

    // The logs of the request and of the consumer carry their ids.
    let lines: Vec<Value> = logs
        .lock()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let line = |msg: &str| {
        lines
            .iter()
            .find(|l| l["message"] == msg && l["event_id"] == event_id.as_str())
            .unwrap_or_else(|| panic!("no {msg:?} log line for the event in {lines:#?}"))
    };
    let built = line("event built");
    assert_eq!(built["request_id"], "trace-test-req-1");
    assert_eq!(built["trace_id"], trace.as_str());
    assert_eq!(built["span_id"], publish.span_id.as_str());
    let handled = lines
        .iter()
        .find(|l| {
            l["message"] == "event handled"
                && l["event_id"] == event_id.as_str()
                && l["group"] == "notifications"
        })
        .unwrap_or_else(|| panic!("no notifications \"event handled\" line in {lines:#?}"));
    assert_eq!(handled["trace_id"], trace.as_str());
    assert_eq!(handled["span_id"], process.span_id.as_str());
    assert_eq!(handled["group"], "notifications");
    store.drop_db().await;
}

/// Spans collected in memory, exported as each span ends.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().extend(batch);
        Ok(())
    }
}

/// Answers every user message with a login event (a follow-up emitted by a handler).
struct Echo;

#[async_trait]
impl Handler for Echo {
    fn group(&self) -> &str {
        "echo"
    }
    fn topics(&self) -> Vec<String> {
        vec!["public.user.message.events".into()]
    }
    async fn handle(
        &self,
        ev: &Envelope,
        _tx: &mut Tx,
        out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        out.emit_json(
            "public.identity.login.events",
            &ev.key,
            &json!({ "user_id": ev.key, "email": "echo@example.com", "login_time": "2026-01-01T10:00:00Z" }),
        )?;
        Ok(())
    }
}

async fn emitted_scenario(b: Backend, spans: Collect) {
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |_| {}).await;
    let kafka = app.store.kafka.is_some();
    let stop = CancellationToken::new();
    let handlers: Vec<Arc<dyn Handler>> = vec![
        Arc::new(Echo),
        Arc::new(NotificationsProjection::new(app.ctx.clone())),
    ];
    let task = tokio::spawn(runtime::run_handlers(
        app.ctx.clone(),
        handlers,
        stop.clone(),
    ));
    let trace = hex::encode(rand::random::<[u8; 16]>());
    let r = app
        .http
        .post(app.url("/api/v1/events/message"))
        .bearer_auth(app.token("alice"))
        .header(
            "traceparent",
            format!("00-{trace}-{}-01", hex::encode(rand::random::<[u8; 8]>())),
        )
        .json(&message("echo me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The message and the login it caused both reach the notifications.
    let rows = eventually(30, || async {
        let r = notifications::all(&app.ctx.store).await.unwrap();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let login = rows
        .iter()
        .find(|r| r.event_type == "identity.login")
        .unwrap();
    let login_tp: String = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT headers FROM outbox WHERE event_id = $1")
            .bind(&login.event_id).fetch_one(p).await.unwrap()
    });
    let login_tp = outbox_traceparent(&login_tp);
    stop.cancel();
    task.await.unwrap().unwrap();
    app.stop().await;

    let spans = spans.0.lock().clone();
    let ours: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace)
        .collect();
    let attr = |s: &SpanData, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    };
    let echo = ours
        .iter()
        .find(|s| {
            s.name == "process public.user.message.events"
                && attr(s, "messaging.consumer.group.name") == "echo"
        })
        .expect("the echo handler's span");
    // The emitted event names the handler's span as its parent…
    assert_eq!(
        login_tp,
        format!("00-{trace}-{}-01", echo.span_context.span_id())
    );
    // …and its consumer continues it.
    let downstream = ours
        .iter()
        .find(|s| {
            s.name == "process public.identity.login.events"
                && attr(s, "messaging.consumer.group.name") == "notifications"
        })
        .unwrap_or_else(|| panic!("no downstream span in {ours:#?}"));
    if kafka {
        // …through the relay's send span of that event.
        let send = ours
            .iter()
            .find(|s| {
                s.name == "send public.identity.login.events"
                    && attr(s, "messaging.message.id") == login.event_id
            })
            .unwrap_or_else(|| panic!("no relay span in {ours:#?}"));
        assert_eq!(send.parent_span_id, echo.span_context.span_id());
        assert_eq!(downstream.parent_span_id, send.span_context.span_id());
    } else {
        assert_eq!(downstream.parent_span_id, echo.span_context.span_id());
    }
    assert_eq!(attr(downstream, "messaging.message.id"), login.event_id);
}

/// Runs the scenario on one thread under a subscriber of its own, whatever the process's
/// global subscriber is.
fn emitted_events_continue_the_handler_span(b: Backend) {
    let spans = Collect::default();
    let cfg = TelemetryConfig {
        log_filter: "warn".into(),
        ..Default::default()
    };
    let provider = substrate::telemetry::tracing::base_provider(&cfg)
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = substrate::telemetry::logging::subscriber(&cfg, Some(&provider));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ::tracing::subscriber::with_default(subscriber, || rt.block_on(emitted_scenario(b, spans)));
}

#[test]
fn emitted_events_continue_the_handler_span_sqlite() {
    emitted_events_continue_the_handler_span(Backend::Sqlite)
}

#[test]
fn emitted_events_continue_the_handler_span_postgres() {
    emitted_events_continue_the_handler_span(Backend::Postgres)
}

both!(without_an_exporter_the_trace_still_propagates);

/// Without `telemetry.otlp_endpoint` no OpenTelemetry span is built (`tracing::lite`), yet
/// the W3C context still flows: the outbox row's `traceparent` continues the caller's trace
/// under a span of its own (the publish span), the gateway's log line names that trace and
/// span, and the consumer's log line for the event is in the same trace.
async fn without_an_exporter_the_trace_still_propagates(b: Backend) {
    let store = TestStore::new(b).await;
    let routes = store.dir.path().join("routes.yaml");
    std::fs::write(&routes, ROUTES).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_substrate"));
    if let Some(k) = &store.kafka {
        cmd.env("SUBSTRATE_LOG__URL", k.url());
    }
    let mut child = cmd
        .args(["serve", "--roles", "gateway,relay,consumers"])
        .current_dir(repo())
        .env("SUBSTRATE_STORE__URL", &store.url)
        .env("SUBSTRATE_STORE__MIGRATE_ON_START", "true")
        .env("SUBSTRATE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env("SUBSTRATE_GATEWAY__ROUTES_FILE", routes.to_str().unwrap())
        .env(
            "SUBSTRATE_OBJECTS__URL",
            format!("file://{}/objects", store.dir.path().display()),
        )
        .env_remove("SUBSTRATE_TELEMETRY__OTLP_ENDPOINT")
        .env("SUBSTRATE_TELEMETRY__LOG_FORMAT", "json")
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn,substrate=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().push(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(30, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let trace = hex::encode(rand::random::<[u8; 16]>());
    let caller = hex::encode(rand::random::<[u8; 8]>());
    let r = http
        .post(format!("{base}/api/v1/events/message"))
        .bearer_auth(token_with("alice", &[], None))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&message("untraced export"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let event_id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(30, || async {
        scalar(
            &store.url,
            "SELECT event_id FROM notifications WHERE event_id = $1",
            &event_id,
        )
        .await
    })
    .await;
    let headers = scalar(
        &store.url,
        "SELECT headers FROM outbox WHERE event_id = $1",
        &event_id,
    )
    .await
    .unwrap();
    // The handled line is written after the commit the notification row is visible from.
    let handled_logged = || {
        logs.lock().iter().any(|l| {
            l.contains("event handled") && l.contains(&event_id) && l.contains("notifications")
        })
    };
    eventually(30, || async { handled_logged().then_some(()) }).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    reader.join().unwrap();

    // The row continues the caller's trace, under a new span (not the caller's), sampled.
    let tp = outbox_traceparent(&headers);
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace.as_str(), "01"));
    assert_ne!(parts[2], caller, "the publish span is a span of its own");
    assert_ne!(parts[2], "0000000000000000");

    let lines: Vec<Value> = logs
        .lock()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let built = lines
        .iter()
        .find(|l| l["message"] == "event built" && l["event_id"] == event_id.as_str())
        .unwrap_or_else(|| panic!("no \"event built\" line in {lines:#?}"));
    assert_eq!(built["trace_id"], trace.as_str());
    assert_eq!(built["span_id"], parts[2]);
    let handled = lines
        .iter()
        .find(|l| {
            l["message"] == "event handled"
                && l["event_id"] == event_id.as_str()
                && l["group"] == "notifications"
        })
        .unwrap_or_else(|| panic!("no notifications \"event handled\" line in {lines:#?}"));
    assert_eq!(handled["trace_id"], trace.as_str());
    let process_span = handled["span_id"].as_str().unwrap_or_default();
    assert_eq!(process_span.len(), 16, "{handled}");
    assert_ne!(
        process_span, parts[2],
        "the consumer's process span is its own"
    );
    store.drop_db().await;
}
