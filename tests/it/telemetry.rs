//! Telemetry ingest and storage on both columns (embedded: the store's tables; production:
//! ClickHouse in a database of the test's own): Prometheus remote write, native JSON and
//! Loki push become one event per request and are stored per org with 1m/5m/1h rollups;
//! a repeated request, and a rebuild by replay, change nothing; bad input is a 4xx naming
//! the problem and stores nothing (random bytes included); a large batch travels by claim
//! check; one tenant's reads never see another's data.

use prost::Message;
use serde_json::{Value, json};
use substrate::telemetry::model::{Batch, Label, Sample, TimeSeries};
use substrate::telemetry::store::read::{Bucket, LogFilter, Point, SeriesInfo};

use substrate::roles::Role;

use crate::analytics::{analytics_backend, stop};
use crate::stats::{caught_up, rebuild};
use crate::support::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

fn label(n: &str, v: &str) -> Label {
    Label {
        name: n.into(),
        value: v.into(),
    }
}

/// A series `name{job=…}` with `(ts_ms, value)` samples.
pub fn series(name: &str, job: &str, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![label("job", job), label("__name__", name)],
        samples: samples
            .iter()
            .map(|(t, v)| Sample {
                timestamp: *t,
                value: *v,
            })
            .collect(),
    }
}

/// A remote-write body: the snappy block of a `WriteRequest`.
fn remote_write_body(ts: Vec<TimeSeries>) -> Vec<u8> {
    let req = Batch {
        timeseries: ts,
        logs: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    key: &str,
    body: Vec<u8>,
    enc: Option<&str>,
) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url(path))
        .header("x-api-key", key)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(e) = enc {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An OTLP/HTTP protobuf logs request with one record whose body holds a NUL.
fn otlp_log_with_nul() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("now") as u64;
    let record = LogRecord {
        time_unix_nano: now,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("before\0after".into())),
        }),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// An OTLP/HTTP protobuf metrics request with one exponential histogram point.
fn otlp_exponential(scale: i32, positive: Vec<u64>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
        exponential_histogram_data_point::Buckets, metric::Data,
    };
    let point = ExponentialHistogramDataPoint {
        time_unix_nano: chrono::Utc::now().timestamp_nanos_opt().expect("now") as u64,
        count: positive.iter().sum(),
        scale,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: positive,
        }),
        ..Default::default()
    };
    let metric = Metric {
        name: "rtt".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A JSON POST authenticated with an API key.
pub async fn post_key(app: &TestApp, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn remote_write(app: &TestApp, key: &str, ts: Vec<TimeSeries>) -> (u16, Value) {
    post_raw(
        app,
        "/prometheus/api/v1/write",
        key,
        remote_write_body(ts),
        Some("snappy"),
    )
    .await
}

/// The start of the hour two hours ago (inside the accepted window, whole buckets).
fn base_ms() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - now.rem_euclid(HOUR) - 2 * HOUR
}

/// Everything stored for `org`: series, raw samples, and every resolution's buckets.
async fn stored(app: &TestApp, org: &str) -> (Vec<SeriesInfo>, Vec<Point>, Vec<Vec<Bucket>>) {
    let t = &app.ctx.telemetry;
    let series = t.series(org, None).await.expect("series");
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let samples = t.samples(org, &ids, 0, i64::MAX).await.expect("samples");
    let mut buckets = Vec::new();
    for res in substrate::telemetry::store::RESOLUTIONS {
        buckets.push(
            t.buckets(org, &ids, res, 0, i64::MAX)
                .await
                .expect("buckets"),
        );
    }
    (series, samples, buckets)
}

/// The telemetry event count in the outbox.
async fn telemetry_events(app: &TestApp) -> i64 {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE topic = 'internal.telemetry.batches'")
            .fetch_one(p)
            .await
            .expect("count")
    })
}

both!(remote_write_is_stored_with_rollups);
async fn remote_write_is_stored_with_rollups(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    stored_with_rollups(app).await;
}

/// The PostgreSQL store's own telemetry tables (a production column without ClickHouse):
/// the bulk `UNNEST` inserts and the rollup merge in PostgreSQL's dialect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_is_stored_with_rollups_in_the_postgres_store() {
    stored_with_rollups(TestApp::start(Backend::Postgres).await).await;
}

/// Samples, series and 1m/5m/1h rollups of a remote write; a repeated request changes
/// nothing, a late sample lands in its buckets, and a rebuild by replay ends where the
/// incremental rollups are.
async fn stored_with_rollups(app: TestApp) {
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let base = base_ms();
    // Every 15 s for 7 minutes: value i at base + 15 s * i, so each minute holds 4 samples.
    let up: Vec<(i64, f64)> = (0..28).map(|i| (base + 15_000 * i, i as f64)).collect();
    let (s, r) = remote_write(
        &app,
        &key,
        vec![series("up", "api", &up), series("up", "db", &[(base, 1.0)])],
    )
    .await;
    assert_eq!(s, 202, "{r}");
    assert_eq!(
        (r["series"].as_i64(), r["samples"].as_i64()),
        (Some(2), Some(29))
    );
    caught_up(&app).await;
    let (series_rows, samples, buckets) = stored(&app, "acme").await;
    assert_eq!(series_rows.len(), 2);
    assert_eq!(series_rows[0].labels["__name__"], "up");
    assert_eq!(series_rows[0].labels["job"], "api");
    assert_eq!(samples.len(), 29);
    let api = series_rows[0].id;
    // 1m: minute m holds values 4m..4m+3.
    let minutes: Vec<&Bucket> = buckets[0].iter().filter(|x| x.series_id == api).collect();
    assert_eq!(minutes.len(), 7);
    for (m, x) in minutes.iter().enumerate() {
        let lo = 4.0 * m as f64;
        assert_eq!(x.bucket_ms, base + MINUTE * m as i64);
        assert_eq!(
            (x.min_v, x.max_v, x.sum_v, x.count_v),
            (lo, lo + 3.0, 4.0 * lo + 6.0, 4)
        );
        assert_eq!(
            (x.last_ts_ms, x.last_v),
            (base + MINUTE * m as i64 + 45_000, lo + 3.0)
        );
    }
    // 5m: minutes 0-4 then 5-6; 1h: all 28.
    let fives: Vec<(i64, f64, f64, i64, f64)> = buckets[1]
        .iter()
        .filter(|x| x.series_id == api)
        .map(|x| (x.bucket_ms, x.min_v, x.sum_v, x.count_v, x.last_v))
        .collect();
    assert_eq!(
        fives,
        vec![
            (base, 0.0, 190.0, 20, 19.0),
            (base + 5 * MINUTE, 20.0, 188.0, 8, 27.0)
        ]
    );
    let hour: Vec<&Bucket> = buckets[2].iter().filter(|x| x.series_id == api).collect();
    assert_eq!(hour.len(), 1);
    assert_eq!(
        (
            hour[0].count_v,
            hour[0].sum_v,
            hour[0].max_v,
            hour[0].last_v
        ),
        (28, 378.0, 27.0, 27.0)
    );

    // The same request again (a sender's retry), and a late sample for an earlier minute.
    let before = stored(&app, "acme").await;
    let (s, _) = remote_write(
        &app,
        &key,
        vec![series("up", "api", &up), series("up", "db", &[(base, 1.0)])],
    )
    .await;
    assert_eq!(s, 202);
    caught_up(&app).await;
    assert_eq!(
        stored(&app, "acme").await,
        before,
        "a repeated batch changes nothing"
    );
    let (s, _) = remote_write(
        &app,
        &key,
        vec![series("up", "api", &[(base + 5_000, 100.0)])],
    )
    .await;
    assert_eq!(s, 202);
    caught_up(&app).await;
    let (_, _, late) = stored(&app, "acme").await;
    let first = late[0]
        .iter()
        .find(|x| x.series_id == api && x.bucket_ms == base)
        .expect("minute 0");
    assert_eq!((first.count_v, first.max_v, first.last_v), (5, 100.0, 3.0));
    let hour = late[2].iter().find(|x| x.series_id == api).expect("hour");
    assert_eq!((hour.count_v, hour.sum_v), (29, 478.0));

    // The whole-metric rollups (the store's; ClickHouse keeps none): minute 0 holds the
    // last values of both series, 3 (api) and 1 (db).
    let whole = || async {
        let span = (i64::MIN, i64::MAX);
        let t = app.ctx.telemetry.metric_totals("acme", "up", MINUTE, span);
        t.await.expect("metric totals")
    };
    let whole_now = whole().await;
    if let Some(t) = &whole_now {
        assert_eq!((t[0].bucket_ms, t[0].sum_v, t[0].count_v), (base, 4.0, 2));
        assert_eq!((t[0].min_v, t[0].max_v, t.len()), (1.0, 3.0, 7));
    }

    // A rebuild by replay ends where the incremental rollups are.
    let now = stored(&app, "acme").await;
    rebuild(&app, "telemetry", "internal.telemetry.batches").await;
    caught_up(&app).await;
    eventually(30, || async {
        (stored(&app, "acme").await == now && whole().await == whole_now).then_some(())
    })
    .await;
    stop(app).await;
}

both!(a_run_of_requests_is_written_as_one_and_a_poison_one_alone);
/// The `telemetry` group writes a run of requests as one batch (merged per org). The result
/// is what request-by-request writing gives: a series in two requests is one series, of two
/// samples with one timestamp the earlier request's is kept, shared buckets add up. An
/// unreadable request in the run (its claim check points nowhere) fails the run, and the
/// runtime then applies the events one by one: that one alone is dead-lettered.
async fn a_run_of_requests_is_written_as_one_and_a_poison_one_alone(b: Backend) {
    use substrate::consumers::runtime;
    let app = TestApp::start_roles(b, vec![Role::Gateway, Role::Relay], |_| {}).await;
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let base = base_ms();
    let first = vec![
        series("up", "api", &[(base, 1.0), (base + 15_000, 2.0)]),
        series("up", "db", &[(base, 5.0)]),
    ];
    let (s, r) = remote_write(&app, &key, first).await;
    assert_eq!(s, 202, "{r}");
    // A well-formed event whose batch is claim-checked to an object that does not exist.
    let ev = substrate::events::build(
        &app.ctx.schemas,
        "internal.telemetry.batches",
        "acme",
        &json!({"version": 1, "org": "acme", "source": "remote_write", "series": 1,
                "samples": 1, "lines": 0, "batch": "", "claim": "telemetry/batches/acme/gone.pb"}),
        &substrate::events::EventMeta::default(),
    )
    .expect("event");
    let mut tx = app.ctx.store.begin().await.unwrap();
    app.ctx.outbox.append(&mut tx, &[&ev]).await.unwrap();
    tx.commit().await.unwrap();
    let second = vec![
        series("up", "api", &[(base + 15_000, 99.0), (base + 30_000, 3.0)]),
        series("temp", "api", &[(base, 7.0)]),
    ];
    let (s, r) = remote_write(&app, &key, second).await;
    assert_eq!(s, 202, "{r}");
    wait_relayed(&app).await;

    // The group starts with all three in the log: one run.
    let h = substrate::telemetry::store::handler(&app.ctx);
    let consumer = app.ctx.log.subscribe(h.group(), &h.topics()).await.unwrap();
    let stop_group = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(runtime::run_group_on(
        app.ctx.clone(),
        h,
        consumer,
        stop_group.clone(),
    ));
    let count = |sql: &'static str| {
        let app = &app;
        async move {
            substrate::on_read!(app.ctx.store, p => {
                sqlx::query_scalar::<_, i64>(sql).bind("telemetry").fetch_one(p).await.unwrap()
            })
        }
    };
    eventually(60, || async {
        let applied = count("SELECT COUNT(*) FROM inbox WHERE group_name = $1").await;
        let dead = count("SELECT COUNT(*) FROM dead_letters WHERE group_name = $1").await;
        (applied == 2 && dead == 1).then_some(())
    })
    .await;
    let (series_rows, samples, buckets) = stored(&app, "acme").await;
    let id = |name: &str, job: &str| {
        let s = series_rows
            .iter()
            .find(|s| s.labels["__name__"] == name && s.labels["job"] == job);
        s.expect("series").id
    };
    assert_eq!(series_rows.len(), 3);
    let of = |sid: i64| -> Vec<(i64, f64)> {
        samples
            .iter()
            .filter(|p| p.series_id == sid)
            .map(|p| (p.ts_ms, p.value))
            .collect()
    };
    assert_eq!(
        of(id("up", "api")),
        [(base, 1.0), (base + 15_000, 2.0), (base + 30_000, 3.0)]
    );
    assert_eq!(of(id("up", "db")), [(base, 5.0)]);
    assert_eq!(of(id("temp", "api")), [(base, 7.0)]);
    let minute = buckets[0]
        .iter()
        .find(|x| x.series_id == id("up", "api") && x.bucket_ms == base)
        .expect("minute 0");
    assert_eq!(
        (
            minute.count_v,
            minute.sum_v,
            minute.min_v,
            minute.max_v,
            minute.last_v
        ),
        (3, 6.0, 1.0, 3.0, 3.0)
    );
    let whole = app
        .ctx
        .telemetry
        .metric_totals("acme", "up", MINUTE, (i64::MIN, i64::MAX));
    if let Some(t) = whole.await.expect("metric totals") {
        assert_eq!((t.len(), t[0].sum_v, t[0].count_v), (1, 8.0, 2));
    }
    stop_group.cancel();
    let _ = task.await;
    app.stop().await;
}

both!(bad_input_is_refused_and_stores_nothing);
async fn bad_input_is_refused_and_stores_nothing(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        analytics_backend(b, c);
        c.telemetry.ingest.max_samples = 10;
    })
    .await;
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let base = base_ms();
    let ok = || series("up", "api", &[(base, 1.0)]);
    let far = chrono::Utc::now().timestamp_millis() + 86_400_000;
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (
            b"not snappy at all".to_vec(),
            Some("snappy"),
            400,
            "invalid_snappy",
        ),
        (
            snap::raw::Encoder::new()
                .compress_vec(b"\x0a\xff\xff")
                .unwrap(),
            Some("snappy"),
            400,
            "invalid_protobuf",
        ),
        (
            remote_write_body(vec![series("up", "api", &[(far, 1.0)])]),
            Some("snappy"),
            400,
            "timestamp_out_of_range",
        ),
        (
            remote_write_body(vec![series("up", "api", &[(-5, 1.0)])]),
            Some("snappy"),
            400,
            "timestamp_out_of_range",
        ),
        (
            remote_write_body(vec![TimeSeries {
                labels: vec![label("job", "x")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: base,
                }],
            }]),
            Some("snappy"),
            400,
            "invalid_labels",
        ),
        (
            remote_write_body(vec![TimeSeries {
                labels: vec![label("__name__", "up"), label("bad-name", "x")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: base,
                }],
            }]),
            Some("snappy"),
            400,
            "invalid_labels",
        ),
        (
            remote_write_body(vec![series(
                "up",
                "a",
                &(0..11).map(|i| (base + i, 1.0)).collect::<Vec<_>>(),
            )]),
            Some("snappy"),
            413,
            "too_many_samples",
        ),
    ];
    for (body, enc, status, code) in cases {
        let (s, r) = post_raw(&app, "/prometheus/api/v1/write", &key, body, enc).await;
        assert_eq!((s, r["error"].as_str()), (status, Some(code)), "{r}");
    }
    // Native JSON: a NaN (or any non-string) label, a string value, malformed JSON.
    for (body, field) in [
        (
            json!({"metric_name": "cpu", "value": 1, "labels": {"core": f64::NAN}}),
            "labels.core",
        ),
        (json!({"metric_name": "cpu", "value": "NaN"}), "value"),
        (json!([{"service": "api", "message": 5}]), "message"),
    ] {
        let path = if field == "message" {
            "/api/v1/ingest/logs"
        } else {
            "/api/v1/ingest/metrics"
        };
        let (s, r) = post_key(&app, path, &key, &body).await;
        assert_eq!((s, r["field"].as_str()), (400, Some(field)), "{r}");
    }
    // OTLP protobuf is not JSON, so no edge check sees its strings: a NUL in a log body is
    // refused by the telemetry validation (a PostgreSQL TEXT column could not store it).
    let (s, r) = post_raw(&app, "/v1/logs", &key, otlp_log_with_nul(), None).await;
    assert_eq!(
        (s, r["error"].as_str(), r["field"].as_str()),
        (400, Some("invalid_line"), Some("message")),
        "{r}"
    );
    // OTLP exponential histograms: a scale outside the OTLP range, and more buckets than
    // `max_samples` (9 buckets, the zero bucket, +Inf and the count: 12 series of one sample).
    let (s, r) = post_raw(
        &app,
        "/v1/metrics",
        &key,
        otlp_exponential(21, vec![1]),
        None,
    )
    .await;
    assert_eq!(
        (
            s,
            r["error"].as_str(),
            r["field"].as_str(),
            r["metric"].as_str()
        ),
        (400, Some("invalid_otlp"), Some("scale"), Some("rtt")),
        "{r}"
    );
    let (s, r) = post_raw(
        &app,
        "/v1/metrics",
        &key,
        otlp_exponential(0, vec![1; 9]),
        None,
    )
    .await;
    assert_eq!(
        (
            s,
            r["error"].as_str(),
            r["limit"].as_u64(),
            r["count"].as_u64()
        ),
        (413, Some("too_many_samples"), Some(10), Some(12)),
        "{r}"
    );
    // Credentials: no org, no write scope, a token without an org.
    let no_org = app.api_key("no-org", &["telemetry:write"]).await;
    let reader = app.api_key("reader", &["telemetry:read", "org:acme"]).await;
    for k in [&no_org, &reader] {
        let (s, r) = remote_write(&app, k, vec![ok()]).await;
        assert_eq!((s, r["error"].as_str()), (403, Some("forbidden")), "{r}");
    }
    let (s, _) = app
        .post_json(
            "/api/v1/ingest/metrics",
            &app.token("alice"),
            &json!({"metric_name": "x", "value": 1}),
        )
        .await;
    assert_eq!(s, 403);
    // Random bytes on every endpoint: always a 4xx, the server stays up.
    for i in 0..180 {
        let len = rand::random::<usize>() % 512;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let path = [
            "/prometheus/api/v1/write",
            "/api/v1/ingest/metrics",
            "/api/v1/ingest/logs",
            "/loki/api/v1/push",
            "/v1/metrics",
            "/v1/logs",
        ][i % 6];
        let enc = if i % 8 < 4 {
            Some("snappy")
        } else {
            Some("gzip")
        };
        let (s, r) = post_raw(
            &app,
            path,
            &key,
            bytes,
            if path.contains("prometheus") {
                Some("snappy")
            } else {
                enc
            },
        )
        .await;
        // A 4xx, or (when the bytes happen to decode to nothing) a 202 that stores nothing.
        assert!(
            (400..500).contains(&s) || (s == 202 && r["event_id"].is_null()),
            "{path}: {s} {r}"
        );
    }
    assert_eq!(
        telemetry_events(&app).await,
        0,
        "nothing refused was stored"
    );
    let (s, r) = remote_write(&app, &key, vec![ok()]).await;
    assert_eq!(s, 202, "the server still takes good requests: {r}");
    assert_eq!(telemetry_events(&app).await, 1);
    stop(app).await;
}

both!(logs_native_loki_and_tenants);
async fn logs_native_loki_and_tenants(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let acme = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let globex = app
        .api_key("globex", &["telemetry:write", "org:globex"])
        .await;
    let t0 = base_ms() / 1000;
    let (s, r) = post_key(&app,
            "/api/v1/ingest/logs",
            &acme,
            &json!([
                {"time": t0, "service": "api", "instance_id": "i-1", "level": "INFO", "message": "started", "labels": {"region": "eu"}},
                {"time": t0 + 1, "service": "api", "level": "error", "message": "disk full", "json": {"disk": "/dev/sda"}},
            ]),
        )
        .await;
    assert_eq!((s, r["lines"].as_i64()), (202, Some(2)), "{r}");
    let ns = |s: i64| (s * 1_000_000_000).to_string();
    let (s, r) = post_key(
        &app,
        "/loki/api/v1/push",
        &acme,
        &json!({"streams": [{"stream": {"job": "worker", "level": "warn"},
                "values": [[ns(t0 + 2), "queue slow"], [ns(t0 + 3), "queue full 100%"]]}]}),
    )
    .await;
    assert_eq!((s, r["lines"].as_i64()), (202, Some(2)), "{r}");
    let (s, _) = post_key(
        &app,
        "/api/v1/ingest/logs",
        &globex,
        &json!({"time": t0, "service": "api", "level": "error", "message": "globex secret"}),
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = remote_write(
        &app,
        &globex,
        vec![series("up", "globex", &[(t0 * 1000, 1.0)])],
    )
    .await;
    assert_eq!(s, 202);
    caught_up(&app).await;
    let t = &app.ctx.telemetry;
    let all = LogFilter {
        from_ns: 0,
        to_ns: i64::MAX,
        limit: 100,
        ..Default::default()
    };
    let lines = t.logs("acme", &all).await.unwrap();
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        messages,
        ["queue full 100%", "queue slow", "disk full", "started"],
        "newest first"
    );
    assert_eq!(lines[0].service, "worker");
    assert_eq!(lines[2].attributes, r#"{"disk":"/dev/sda"}"#);
    let only = |f: LogFilter| async move {
        t.logs("acme", &f)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(LogFilter {
            level: Some("error".into()),
            ..all.clone()
        })
        .await,
        ["disk full"]
    );
    assert_eq!(
        only(LogFilter {
            service: Some("api".into()),
            ..all.clone()
        })
        .await,
        ["disk full", "started"]
    );
    assert_eq!(
        only(LogFilter {
            text: Some("100%".into()),
            ..all.clone()
        })
        .await,
        ["queue full 100%"]
    );
    assert_eq!(
        only(LogFilter {
            labels: vec![("region".into(), "eu".into())],
            ..all.clone()
        })
        .await,
        ["started"]
    );
    // Pages of one, by cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = t
            .logs(
                "acme",
                &LogFilter {
                    limit: 1,
                    before: cursor,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        let Some(l) = page.first() else { break };
        seen.push(l.message.clone());
        cursor = Some((l.ts_ns, l.line_id));
    }
    assert_eq!(seen, messages);
    // Tenants: neither org sees the other's lines or series.
    let g = t.logs("globex", &all).await.unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].message, "globex secret");
    assert!(t.series("acme", None).await.unwrap().is_empty());
    assert_eq!(t.series("globex", None).await.unwrap().len(), 1);
    stop(app).await;
}

both!(large_batches_travel_by_claim_check);
async fn large_batches_travel_by_claim_check(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        analytics_backend(b, c);
        c.telemetry.ingest.claim_check_bytes = 2048;
    })
    .await;
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let base = base_ms();
    let many: Vec<TimeSeries> = (0..100)
        .map(|i| {
            series(
                "requests_total",
                &format!("job-{i}"),
                &[(base, i as f64), (base + 15_000, i as f64 + 1.0)],
            )
        })
        .collect();
    let (s, r) = remote_write(&app, &key, many).await;
    assert_eq!(s, 202, "{r}");
    let claim: Option<String> = substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT payload FROM outbox WHERE topic = 'internal.telemetry.batches'")
            .fetch_one(p)
            .await
            .ok()
    })
    .map(|bytes| String::from_utf8_lossy(&bytes).to_string());
    let payload = claim.expect("the event");
    assert!(
        payload.contains("telemetry/batches/acme/"),
        "the event names the object"
    );
    caught_up(&app).await;
    let (series_rows, samples, buckets) = stored(&app, "acme").await;
    assert_eq!((series_rows.len(), samples.len()), (100, 200));
    assert_eq!(buckets[0].len(), 100);
    stop(app).await;
}

both!(retention_keeps_each_resolution_its_own_time);
async fn retention_keeps_each_resolution_its_own_time(b: Backend) {
    let app = TestApp::start_with(b, |c| {
        analytics_backend(b, c);
        c.telemetry.ingest.max_age_secs = 10 * 86_400;
        let s = &mut c.telemetry.storage;
        (
            s.raw_retention_days,
            s.rollup_1m_retention_days,
            s.rollup_5m_retention_days,
        ) = (2, 2, 2);
        (s.rollup_1h_retention_days, s.logs_retention_days) = (30, 2);
    })
    .await;
    let key = app.api_key("agent", &["telemetry:write", "org:acme"]).await;
    let recent = base_ms();
    let old = recent - 5 * 86_400_000;
    let (s, r) = remote_write(
        &app,
        &key,
        vec![series("up", "api", &[(old, 1.0), (recent, 2.0)])],
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let (s, _) = post_key(
        &app,
        "/api/v1/ingest/logs",
        &key,
        &json!([{"time": old / 1000, "service": "api", "message": "old"},
                {"time": recent / 1000, "service": "api", "message": "recent"}]),
    )
    .await;
    assert_eq!(s, 202);
    caught_up(&app).await;
    let cfg = app.ctx.config.telemetry.storage.clone();
    let removed = app
        .ctx
        .telemetry
        .expire(&cfg, chrono::Utc::now().timestamp_millis())
        .await
        .expect("expire");
    assert!(removed > 0);
    let (_, samples, buckets) = stored(&app, "acme").await;
    assert_eq!(
        samples.iter().map(|p| p.ts_ms).collect::<Vec<_>>(),
        [recent]
    );
    for (res, kept) in [(0, vec![recent]), (1, vec![recent]), (2, vec![old, recent])] {
        let starts: Vec<i64> = buckets[res].iter().map(|x| x.bucket_ms).collect();
        assert_eq!(starts, kept, "resolution {res}");
        // The whole-metric rollups (the store's; ClickHouse keeps none) expire alike.
        let r = substrate::telemetry::store::RESOLUTIONS[res];
        let whole = app
            .ctx
            .telemetry
            .metric_totals("acme", "up", r, (i64::MIN, i64::MAX));
        if let Some(totals) = whole.await.expect("metric totals") {
            let starts: Vec<i64> = totals.iter().map(|x| x.bucket_ms).collect();
            assert_eq!(starts, kept, "whole-metric, resolution {res}");
        }
    }
    let all = LogFilter {
        from_ns: 0,
        to_ns: i64::MAX,
        limit: 10,
        ..Default::default()
    };
    let lines = app.ctx.telemetry.logs("acme", &all).await.unwrap();
    assert_eq!(
        lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["recent"]
    );
    stop(app).await;
}
