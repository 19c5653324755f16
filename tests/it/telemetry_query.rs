//! Reading telemetry back on both columns: the Prometheus HTTP API (instant and range
//! queries of the PromQL subset, with the range planner on rollups; series, labels and label
//! values; Prometheus-style errors for what is outside the subset), the real `promtool query`
//! client against it (and, for the added functions and operators, Prometheus' own engine),
//! the built-in alert rules' expressions on crafted data, the log search with filters and a
//! cursor, and tenant isolation (one org's queries never return another's series or lines).

use serde_json::{Value, json};
use substrate::telemetry::model::TimeSeries;

use crate::analytics::{analytics_backend, stop};
use crate::stats::caught_up;
use crate::support::*;
use crate::telemetry::{post_key, remote_write, series};

const MIN: i64 = 60_000;

fn labeled(name: &str, labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> TimeSeries {
    let mut ts = series(name, "api", &samples);
    for (k, v) in labels {
        ts.labels.push(substrate::telemetry::model::Label {
            name: k.to_string(),
            value: v.to_string(),
        });
    }
    ts
}

/// 30 minutes of data every 15 s from `base`: two counters (1/s and 0.5/s), a gauge equal to
/// the minute index, and a histogram's cumulative buckets.
fn dataset(base: i64) -> Vec<TimeSeries> {
    let at = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (0..=120).map(|i| (base + 15_000 * i, f(15 * i))).collect()
    };
    vec![
        labeled("http_requests_total", &[("code", "200")], at(&|s| s as f64)),
        labeled(
            "http_requests_total",
            &[("code", "500")],
            at(&|s| s as f64 / 2.0),
        ),
        labeled("temp", &[("room", "a")], at(&|s| (s / 60) as f64)),
        labeled("lat_bucket", &[("le", "0.1")], at(&|_| 10.0)),
        labeled("lat_bucket", &[("le", "0.5")], at(&|_| 30.0)),
        labeled("lat_bucket", &[("le", "1")], at(&|_| 40.0)),
        labeled("lat_bucket", &[("le", "+Inf")], at(&|_| 40.0)),
    ]
}

/// Writes [`dataset`] at the start of the hour two hours ago, as `key`'s org, and waits
/// until it is stored; returns that start.
async fn with_dataset(app: &TestApp, key: &str) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let base = now - now.rem_euclid(3_600_000) - 2 * 3_600_000;
    let (s, r) = remote_write(app, key, dataset(base)).await;
    assert_eq!(s, 202, "{r}");
    caught_up(app).await;
    base
}

fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

async fn prom(app: &TestApp, key: &str, path: &str, params: &[(&str, String)]) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(&format!("/prometheus/api/v1/{path}")))
        .header("x-api-key", key)
        .form(params)
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// An instant query's result as (labels without __name__ as JSON, value).
async fn instant(app: &TestApp, key: &str, q: &str, t: i64) -> Vec<(Value, f64)> {
    let (s, r) = prom(app, key, "query", &[("query", q.into()), ("time", secs(t))]).await;
    assert_eq!(
        (s, r["status"].as_str()),
        (200, Some("success")),
        "{q}: {r}"
    );
    r["data"]["result"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| {
            (
                x["metric"].clone(),
                x["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

both!(prometheus_api_answers_the_subset);
async fn prometheus_api_answers_the_subset(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let key = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let other = app
        .api_key("globex", &["telemetry:read", "org:globex"])
        .await;
    let base = with_dataset(&app, &key).await;
    let t = base + 10 * MIN;

    let v = instant(&app, &key, r#"http_requests_total{code="200"}"#, t).await;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0["__name__"], "http_requests_total");
    assert!(close(v[0].1, 600.0));
    let v = instant(
        &app,
        &key,
        r#"rate(http_requests_total{code=~"2.."}[5m])"#,
        t,
    )
    .await;
    assert!(close(v[0].1, 1.0), "{v:?}");
    assert!(v[0].0.get("__name__").is_none());
    let v = instant(
        &app,
        &key,
        "sum by (job) (increase(http_requests_total[5m]))",
        t,
    )
    .await;
    assert_eq!(v[0].0, json!({"job": "api"}));
    assert!(close(v[0].1, 450.0), "{v:?}");
    let v = instant(&app, &key, r#"max_over_time(temp[5m]) * 2 + 1"#, t).await;
    assert!(close(v[0].1, 21.0), "{v:?}");
    assert!(instant(&app, &key, "temp > 10", t).await.is_empty());
    assert_eq!(instant(&app, &key, "temp >= 10", t).await.len(), 1);
    let v = instant(&app, &key, "temp > bool 10", t).await;
    assert_eq!(v[0].1, 0.0);
    let v = instant(&app, &key, "count without (code) (http_requests_total)", t).await;
    assert!(close(v[0].1, 2.0));
    let v = instant(&app, &key, "histogram_quantile(0.5, lat_bucket)", t).await;
    assert!(close(v[0].1, 0.3), "{v:?}");
    let v = instant(&app, &key, "avg(temp) * 2 - 15", t).await;
    assert!(close(v[0].1, 5.0), "{v:?}");

    // Between two vectors: one-to-one on all labels but the name, or on/ignoring.
    let v = instant(
        &app,
        &key,
        r#"http_requests_total{code="500"} / http_requests_total{code="200"}"#,
        t,
    )
    .await;
    assert!(v.is_empty(), "code differs, nothing pairs: {v:?}");
    let v = instant(
        &app,
        &key,
        r#"http_requests_total{code="500"} / ignoring(code) http_requests_total{code="200"}"#,
        t,
    )
    .await;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, json!({"job": "api"}));
    assert!(close(v[0].1, 0.5), "{v:?}");
    // The shape of the built-in SubstrateHigh5xxRate: 0.5/s of 1.5/s.
    let q = r#"sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05"#;
    let v = instant(&app, &key, q, t).await;
    assert!(close(v[0].1, 1.0 / 3.0), "{v:?}");
    let v = instant(&app, &key, "temp > bool on(job) sum by (job) (temp)", t).await;
    assert_eq!(v, vec![(json!({"job": "api"}), 0.0)]);
    // Set operators keep the left side's labels.
    let v = instant(&app, &key, "temp and on(job) http_requests_total", t).await;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0["__name__"], "temp");
    assert!(instant(&app, &key, "temp unless temp", t).await.is_empty());
    let v = instant(&app, &key, r#"temp or http_requests_total{code="200"}"#, t).await;
    assert_eq!(v.len(), 2);
    // time(), vector(), scalar() and the value functions; temp is 10 at minute 10.
    let v = instant(&app, &key, "vector(time())", t).await;
    assert!(close(v[0].1, t as f64 / 1000.0), "{v:?}");
    let v = instant(&app, &key, "time() - max(temp) > 120", t).await;
    assert!(close(v[0].1, t as f64 / 1000.0 - 10.0), "{v:?}");
    let v = instant(&app, &key, "temp * scalar(temp)", t).await;
    assert!(close(v[0].1, 100.0), "{v:?}");
    // timestamp(): the sample's own time for a selector (the 10:00 sample, 7 s before
    // the query), the evaluation time for anything computed.
    let v = instant(&app, &key, "timestamp(temp)", t + 7_000).await;
    assert_eq!(
        v,
        vec![(json!({"job": "api", "room": "a"}), t as f64 / 1000.0)]
    );
    let v = instant(&app, &key, "timestamp(temp * 1)", t + 7_000).await;
    assert!(close(v[0].1, (t + 7_000) as f64 / 1000.0), "{v:?}");
    let v = instant(&app, &key, "abs(temp - 25)", t).await;
    assert!(close(v[0].1, 15.0), "{v:?}");
    let v = instant(&app, &key, "clamp_max(temp, 3) + clamp_min(temp, 12)", t).await;
    assert!(close(v[0].1, 15.0), "{v:?}");
    // Range functions over (t-5m, t]: temp is 5 at 5:15 … 10 at 10:00, 20 samples 15 s
    // apart. delta: +5 over 285 s, extrapolated 15 s back: 5 × 300/285.
    let v = instant(&app, &key, "delta(temp[5m])", t).await;
    assert!(close(v[0].1, 5.0 * 300.0 / 285.0), "{v:?}");
    let v = instant(&app, &key, "changes(temp[5m])", t).await;
    assert!(close(v[0].1, 5.0), "{v:?}");
    let v = instant(&app, &key, "idelta(temp[5m])", t).await;
    assert!(close(v[0].1, 1.0), "{v:?}");
    let v = instant(&app, &key, "count_over_time(temp[5m])", t).await;
    assert!(close(v[0].1, 20.0), "{v:?}");
    let v = instant(&app, &key, "last_over_time(temp[5m])", t).await;
    assert_eq!(v[0].0["__name__"], "temp", "last_over_time keeps the name");
    assert!(close(v[0].1, 10.0), "{v:?}");
    let q = r#"irate(http_requests_total{code="500"}[5m]) + resets(http_requests_total{code="500"}[5m])"#;
    let v = instant(&app, &key, q, t).await;
    assert!(close(v[0].1, 0.5), "{v:?}");
    // A counter rising 1/s has a slope of exactly 1.
    let v = instant(
        &app,
        &key,
        r#"deriv(http_requests_total{code="200"}[5m])"#,
        t,
    )
    .await;
    assert!(close(v[0].1, 1.0), "{v:?}");

    // A range query at a 1m step reads 1m rollups: avg over [t-5m, t) of minute values.
    let (s, r) = prom(
        &app,
        &key,
        "query_range",
        &[
            ("query", "avg_over_time(temp[5m])".into()),
            ("start", secs(base + 10 * MIN)),
            ("end", secs(base + 20 * MIN)),
            ("step", "60".into()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["resultType"], "matrix");
    let values = r["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 11);
    for (i, pair) in values.iter().enumerate() {
        let m = 10 + i as i64;
        assert_eq!(pair[0].as_f64().unwrap(), (base + m * MIN) as f64 / 1000.0);
        assert_eq!(
            pair[1].as_str().unwrap().parse::<f64>().unwrap(),
            (m - 3) as f64,
            "minute {m}"
        );
    }
    // A step finer than every rollup reads raw samples and agrees with the instant query.
    let (s, r) = prom(
        &app,
        &key,
        "query_range",
        &[
            (
                "query",
                r#"rate(http_requests_total{code="500"}[5m])"#.into(),
            ),
            ("start", secs(t)),
            ("end", secs(t + MIN)),
            ("step", "15s".into()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{r}");
    for pair in r["data"]["result"][0]["values"].as_array().unwrap() {
        assert!(
            close(pair[1].as_str().unwrap().parse::<f64>().unwrap(), 0.5),
            "{pair}"
        );
    }

    pushdown_agrees(&app, &key, base).await;

    // Outside the subset, or malformed: Prometheus-style errors, never an answer.
    for q in [
        "topk(1, temp)",
        "temp + on(job) group_left http_requests_total",
        "http_requests_total / ignoring(code) group_right temp",
        "temp offset 5m",
        "label_replace(temp, \"a\", \"b\", \"c\", \"d\")",
        "temp{",
        "time() and temp",
    ] {
        let (s, r) = prom(
            &app,
            &key,
            "query",
            &[("query", q.into()), ("time", secs(t))],
        )
        .await;
        assert_eq!(
            (s, r["status"].as_str(), r["errorType"].as_str()),
            (400, Some("error"), Some("bad_data")),
            "{q}: {r}"
        );
        assert!(r["error"].is_string());
    }
    let (s, r) = prom(
        &app,
        &key,
        "query_range",
        &[
            ("query", "temp".into()),
            ("start", secs(t)),
            ("end", secs(t - 1)),
            ("step", "60".into()),
        ],
    )
    .await;
    assert_eq!((s, r["errorType"].as_str()), (400, Some("bad_data")), "{r}");

    // Metadata.
    let (_, r) = prom(
        &app,
        &key,
        "series",
        &[("match[]", r#"{__name__=~"http_.*"}"#.into())],
    )
    .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    let (_, r) = prom(&app, &key, "labels", &[]).await;
    assert_eq!(r["data"], json!(["__name__", "code", "job", "le", "room"]));
    let r: Value = app
        .http
        .get(app.url("/prometheus/api/v1/label/code/values"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["data"], json!(["200", "500"]));

    // Another org sees nothing of acme's.
    assert!(
        instant(&app, &other, "http_requests_total", t)
            .await
            .is_empty()
    );
    let (_, r) = prom(&app, &other, "labels", &[]).await;
    assert_eq!(r["data"], json!([]));

    // The real client: promtool, with the key as the Basic-auth password.
    let server = app.base.replace("http://", &format!("http://acme:{key}@")) + "/prometheus";
    let out = promtool(&[
        "query",
        "instant",
        "-o",
        "json",
        "--time",
        &secs(t),
        &server,
        "sum(rate(http_requests_total[5m]))",
    ])
    .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        close(
            v[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            1.5
        ),
        "{v}"
    );
    let out = promtool(&[
        "query",
        "range",
        "-o",
        "json",
        "--start",
        &secs(base + 10 * MIN),
        "--end",
        &secs(base + 12 * MIN),
        "--step",
        "1m",
        &server,
        "temp",
    ])
    .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let got: Vec<String> = v[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect();
    // The 1m rollup's `last` of the minute before each step.
    assert_eq!(got, ["9", "10", "11"]);
    stop(app).await;
}

/// The pushed-down aggregations in the PostgreSQL store's dialect (a production column
/// without ClickHouse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushdown_agrees_in_the_postgres_store() {
    let app = TestApp::start(Backend::Postgres).await;
    let key = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let base = with_dataset(&app, &key).await;
    pushdown_agrees(&app, &key, base).await;
    app.stop().await;
}

/// Aggregations over a plain selector on rollups are computed by the store (pushed down);
/// the same aggregation over `x + 0` is evaluated in memory. Both must agree at every step,
/// for every operator, grouping and rollup (1m and 5m steps), on a window that starts before
/// the data and ends after it. A bare metric with one group is answered from the whole-metric
/// rollups (`sum(http_requests_total)`, `sum by (job) (…)`: every series has job="api").
async fn pushdown_agrees(app: &TestApp, key: &str, base: i64) {
    for (q, step) in [
        ("sum(http_requests_total)", "60"),
        ("sum by (code) (http_requests_total)", "60"),
        ("sum by (job) (http_requests_total)", "300"),
        ("min(http_requests_total)", "300"),
        ("avg(lat_bucket)", "300"),
        ("min without (le) (lat_bucket)", "60"),
        ("max(lat_bucket)", "60"),
        ("count(lat_bucket)", "60"),
        ("count by (le) ((lat_bucket))", "300"),
    ] {
        agrees(app, key, base, q, step).await;
    }
}

/// A range query of `q` at `step` over `[base - 10m, base + 40m]`, as its result.
async fn range_result(app: &TestApp, key: &str, base: i64, q: &str, step: &str) -> Value {
    let params = [
        ("query", q.to_string()),
        ("start", secs(base - 10 * MIN)),
        ("end", secs(base + 40 * MIN)),
        ("step", step.to_string()),
    ];
    let (s, r) = prom(app, key, "query_range", &params).await;
    assert_eq!(s, 200, "{q}: {r}");
    r["data"]["result"].clone()
}

/// `q` (an aggregation of a selector) and its in-memory form (`x + 0` inside) agree at every
/// step; returns `q`'s points of its first series.
async fn agrees(app: &TestApp, key: &str, base: i64, q: &str, step: &str) -> Vec<(f64, f64)> {
    let inner = q.rfind('(').map(|i| i + 1).unwrap();
    let close_at = q[inner..].find(')').map(|j| inner + j).unwrap();
    let memory = format!(
        "{}{} + 0{}",
        &q[..inner],
        &q[inner..close_at],
        &q[close_at..]
    );
    let pushed = range_result(app, key, base, q, step).await;
    let evaluated = range_result(app, key, base, &memory, step).await;
    let series = |v: &Value| -> Vec<(Value, Vec<(f64, f64)>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let pts = x["values"].as_array().unwrap().iter().map(|p| {
                    (
                        p[0].as_f64().unwrap(),
                        p[1].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                });
                (x["metric"].clone(), pts.collect())
            })
            .collect()
    };
    let (a, b) = (series(&pushed), series(&evaluated));
    assert!(
        !a.is_empty() && a.iter().all(|(_, p)| p.len() > 5),
        "{q}: {pushed}"
    );
    assert_eq!(a.len(), b.len(), "{q} vs {memory}");
    for ((la, pa), (lb, pb)) in a.iter().zip(&b) {
        assert_eq!(la, lb, "{q}");
        assert_eq!(pa.len(), pb.len(), "{q}: {pushed} vs {evaluated}");
        for (x, y) in pa.iter().zip(pb) {
            assert!(
                x.0 == y.0 && close(x.1, y.1),
                "{q} at {}: {} vs {}",
                x.0,
                x.1,
                y.1
            );
        }
    }
    a[0].1.clone()
}

/// Rows of whole-metric rollups whose values are stale.
async fn stale_rows(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM telemetry_metric_rollups WHERE settled <> version";
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap()
    })
}

/// Settles every stale whole-metric rollup, as the `consumers` role does in the background.
async fn settle(app: &TestApp) {
    let store = app.ctx.telemetry.store();
    while substrate::telemetry::store::metric::settle(store)
        .await
        .unwrap()
        >= substrate::telemetry::store::metric::SETTLE_ROWS
    {}
    assert_eq!(stale_rows(app).await, 0);
}

both!(whole_metric_rollups_answer_exactly);
/// The whole-metric rollups behind `sum(metric)` and its kin (on the store: SQLite, or
/// PostgreSQL without ClickHouse) give the per-series answer in every state: stale (computed
/// on the spot), settled, stale again after a late sample, and unchanged by a replay. A bucket
/// whose last sample the lookback excludes is not answered from them.
async fn whole_metric_rollups_answer_exactly(b: Backend) {
    // No background settling: the test settles by hand, to see both states.
    let app = TestApp::start_with(b, |c| c.telemetry.storage.settle_every_ms = 3_600_000).await;
    let key = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let base = with_dataset(&app, &key).await;
    assert!(
        stale_rows(&app).await > 0,
        "the writer marks, it does not settle"
    );
    let q = "sum(http_requests_total)";
    let stale = agrees(&app, &key, base, q, "60").await;
    settle(&app).await;
    assert_eq!(agrees(&app, &key, base, q, "60").await, stale);
    pushdown_agrees(&app, &key, base).await;

    // A late sample of a new series, in minute 5: its buckets are stale again, and the answer
    // at the step after it (the 1m bucket [5m, 6m)) grows by its value.
    let step6 = (base + 6 * MIN) as f64 / 1000.0;
    let at6 = |pts: &[(f64, f64)]| pts.iter().find(|p| p.0 == step6).map(|p| p.1);
    let late = vec![labeled(
        "http_requests_total",
        &[("code", "404")],
        vec![(base + 5 * MIN + 1_000, 1000.0)],
    )];
    let (s, r) = remote_write(&app, &key, late.clone()).await;
    assert_eq!(s, 202, "{r}");
    caught_up(&app).await;
    assert!(stale_rows(&app).await > 0);
    let after = agrees(&app, &key, base, q, "60").await;
    assert_eq!(at6(&after), at6(&stale).map(|v| v + 1000.0), "{after:?}");
    settle(&app).await;
    assert_eq!(agrees(&app, &key, base, q, "60").await, after);

    // The same request again adds no sample, so it marks nothing and changes nothing.
    let (s, r) = remote_write(&app, &key, late).await;
    assert_eq!(s, 202, "{r}");
    caught_up(&app).await;
    assert_eq!(stale_rows(&app).await, 0);
    assert_eq!(agrees(&app, &key, base, q, "60").await, after);

    // One sample exactly at a 5-minute boundary: at a 5m step, the bucket ending at 10m holds
    // it as its last sample, but the 5 m lookback from 10m leaves it out. The whole-metric row
    // counts it (its smallest age is 0), so it must not answer: no value at all.
    let edge = vec![labeled("edge", &[], vec![(base + 5 * MIN, 7.0)])];
    let (s, r) = remote_write(&app, &key, edge).await;
    assert_eq!(s, 202, "{r}");
    caught_up(&app).await;
    settle(&app).await;
    let five = range_result(&app, &key, base, "sum(edge)", "300").await;
    assert_eq!(five, json!([]), "{five}");
    assert_eq!(
        range_result(&app, &key, base, "sum(edge + 0)", "300").await,
        json!([])
    );
    // At a 1m step the bucket [5m, 6m) ends at 6m, within the lookback: one point.
    let one = range_result(&app, &key, base, "sum(edge)", "60").await;
    let pts = one[0]["values"].as_array().unwrap();
    assert_eq!(pts.len(), 1, "{one}");
    assert_eq!(
        (pts[0][0].as_f64(), pts[0][1].as_str()),
        (Some(step6), Some("7"))
    );
    app.stop().await;
}

/// Runs promtool, returning its standard output (it must succeed).
async fn promtool(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("promtool").args(&args).output()
    })
    .await
    .expect("join")
    .expect("promtool runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

both!(log_search_by_filters_and_cursor);
async fn log_search_by_filters_and_cursor(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let acme = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let globex = app
        .api_key("globex", &["telemetry:write", "org:globex"])
        .await;
    let t0 = chrono::Utc::now().timestamp() - 600;
    let lines: Vec<Value> = (0..5)
        .map(|i| json!({"time": t0 + i, "service": if i % 2 == 0 { "api" } else { "worker" }, "level": if i == 3 { "error" } else { "info" }, "message": format!("line {i}"), "labels": {"env": if i < 2 { "prod" } else { "dev" }}}))
        .collect();
    let (s, r) = post_key(&app, "/api/v1/ingest/logs", &acme, &json!(lines)).await;
    assert_eq!(s, 202, "{r}");
    let (s, _) = post_key(
        &app,
        "/api/v1/ingest/logs",
        &globex,
        &json!({"time": t0, "service": "api", "message": "line of globex"}),
    )
    .await;
    assert_eq!(s, 202);
    caught_up(&app).await;
    let search = |key: &str, body: Value| {
        let key = key.to_string();
        let app = &app;
        async move {
            let (s, r) = post_key(app, "/api/v1/query/logs", &key, &body).await;
            assert_eq!(s, 200, "{r}");
            let msgs: Vec<String> = r["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["message"].as_str().unwrap().to_string())
                .collect();
            (msgs, r["next_cursor"].as_str().map(str::to_string))
        }
    };
    let (all, _) = search(&acme, json!({"from": t0 - 1})).await;
    assert_eq!(all, ["line 4", "line 3", "line 2", "line 1", "line 0"]);
    assert_eq!(
        search(&acme, json!({"from": t0 - 1, "service": "worker"}))
            .await
            .0,
        ["line 3", "line 1"]
    );
    assert_eq!(
        search(&acme, json!({"from": t0 - 1, "level": "ERROR"}))
            .await
            .0,
        ["line 3"]
    );
    assert_eq!(
        search(&acme, json!({"from": t0 - 1, "labels": {"env": "prod"}}))
            .await
            .0,
        ["line 1", "line 0"]
    );
    assert_eq!(
        search(&acme, json!({"from": t0 - 1, "text": "ne 2"}))
            .await
            .0,
        ["line 2"]
    );
    assert_eq!(
        search(&acme, json!({"from": t0 + 1, "to": t0 + 3})).await.0,
        ["line 2", "line 1"]
    );
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"from": t0 - 1, "limit": 2});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (msgs, next) = search(&acme, body).await;
        pages.extend(msgs);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, all);
    assert_eq!(
        search(&globex, json!({"from": t0 - 1})).await.0,
        ["line of globex"]
    );
    let (s, r) = post_key(&app, "/api/v1/query/logs", &acme, &json!({"limit": 0})).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_query")));
    let (s, _) = post_key(
        &app,
        "/api/v1/query/logs",
        &acme,
        &json!({"cursor": "nope"}),
    )
    .await;
    assert_eq!(s, 400);
    stop(app).await;
}

both!(otlp_from_the_python_sdk);
async fn otlp_from_the_python_sdk(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let key = app.api_key("shop", &["telemetry:write", "org:acme"]).await;
    let script = repo().join("tests/python/otlp_send.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&app.base)
        .arg(&key)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the OpenTelemetry SDK (scripts/setup.sh installs it) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    caught_up(&app).await;
    let t = chrono::Utc::now().timestamp_millis() + 1000;
    let v = instant(&app, &key, r#"orders_total{shop="berlin"}"#, t).await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].1, 7.0);
    assert_eq!(
        (v[0].0["job"].as_str(), v[0].0["instance"].as_str()),
        (Some("shop"), Some("i-1"))
    );
    let v = instant(&app, &key, "checkout_seconds_count", t).await;
    assert_eq!(v[0].1, 3.0);
    let v = instant(&app, &key, "checkout_seconds_sum", t).await;
    assert!(close(v[0].1, 3.6), "{v:?}");
    let v = instant(
        &app,
        &key,
        "histogram_quantile(1, checkout_seconds_bucket)",
        t,
    )
    .await;
    assert_eq!(v[0].1, 5.0, "the largest observation's bucket bound: {v:?}");
    exponential_histogram_from_the_sdk(&app, &key, t).await;
    let (s, r) = post_key(
        &app,
        "/api/v1/query/logs",
        &key,
        &json!({"service": "shop"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let lines: Vec<(String, String)> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("error".to_string(), "payment declined".to_string()),
            ("info".to_string(), "order placed".to_string())
        ]
    );
    stop(app).await;
}

/// `rtt_seconds`, which the SDK aggregates as an exponential histogram (scale 1, base √2:
/// 0 in the zero bucket, 0.5 in (2^-1.5, 0.5], 1 in (2^-0.5, 1], 1.5 and 2 in (√2, 2], 3 and 4
/// in (2^1.5, 4], 100 twice in (2^6.5, 128]), read back as classic cumulative buckets.
async fn exponential_histogram_from_the_sdk(app: &TestApp, key: &str, t: i64) {
    let v = instant(app, key, "rtt_seconds_count", t).await;
    assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), [9.0], "{v:?}");
    assert_eq!(v[0].0["job"].as_str(), Some("shop"));
    let v = instant(app, key, "rtt_seconds_sum", t).await;
    assert!(close(v[0].1, 212.0), "{v:?}");
    for (le, cumulative) in [
        ("-1", 0.0),
        ("0", 1.0),
        ("0.5", 2.0),
        ("1", 3.0),
        ("2", 5.0),
        ("4", 7.0),
        ("64", 7.0),
        ("128", 9.0),
        ("+Inf", 9.0),
    ] {
        let q = format!(r#"rtt_seconds_bucket{{le="{le}"}}"#);
        let v = instant(app, key, &q, t).await;
        assert_eq!(v.len(), 1, "{q}: {v:?}");
        assert_eq!(v[0].1, cumulative, "{q}");
    }
    // Every bound is one series, cumulative counts never decrease with the bound.
    let mut buckets: Vec<(f64, f64)> = instant(app, key, "rtt_seconds_bucket", t)
        .await
        .iter()
        .map(|(l, c)| (l["le"].as_str().unwrap().parse::<f64>().unwrap(), *c))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    // The median (2) lies in (√2, 2], the largest value's bucket ends at 128.
    let v = instant(
        app,
        key,
        "histogram_quantile(0.5, sum by (le) (rtt_seconds_bucket))",
        t,
    )
    .await;
    assert!(v[0].1 > 2f64.sqrt() && v[0].1 <= 2.0, "{v:?}");
    let v = instant(app, key, "histogram_quantile(1, rtt_seconds_bucket)", t).await;
    assert_eq!(v[0].1, 128.0, "{v:?}");
}

/// An instant result as {labels → value}.
fn instant_values(result: &Value) -> std::collections::BTreeMap<String, f64> {
    result
        .as_array()
        .expect("vector")
        .iter()
        .map(|s| {
            let v = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (s["metric"].to_string(), v)
        })
        .collect()
}

/// A range result as {labels → [(t, value)]}.
fn by_labels(result: &Value) -> std::collections::BTreeMap<String, Vec<(f64, String)>> {
    result
        .as_array()
        .expect("matrix")
        .iter()
        .map(|s| {
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().to_string()))
                .collect();
            (s["metric"].to_string(), values)
        })
        .collect()
}

both!(a_prometheus_server_remote_writes);
async fn a_prometheus_server_remote_writes(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let key = app
        .api_key("prometheus", &["telemetry:write", "org:acme"])
        .await;
    let port = free_port();
    let target = app.base.trim_start_matches("http://").to_string();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: substrate\n    static_configs: [{{targets: ['{target}']}}]\n\
         remote_write:\n  - url: {}/prometheus/api/v1/write\n    basic_auth: {{username: acme, password: '{key}'}}\n    queue_config: {{batch_send_deadline: 1s}}\n",
        app.base
    );
    let dir = app.store.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let _prom = Proc(
        std::process::Command::new(installed_binary("prometheus", "SUBSTRATE_TEST_PROMETHEUS"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus runs (scripts/setup.sh installs it)"),
    );
    // Data arrives through remote write.
    eventually(90, || async {
        let now = chrono::Utc::now().timestamp_millis();
        (instant(&app, &key, r#"up{job="substrate"}"#, now)
            .await
            .len()
            == 1)
            .then_some(())
    })
    .await;
    // The same window, read from Prometheus' own storage and through substrate with promtool,
    // agrees sample for sample once remote write has caught up.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let end = chrono::Utc::now().timestamp() - 4;
    let (start, query) = (end - 4, "substrate_http_requests_total");
    let server = app.base.replace("http://", &format!("http://acme:{key}@")) + "/prometheus";
    let prom_url = format!("http://127.0.0.1:{port}/api/v1/query_range");
    let mut last = (Default::default(), Default::default());
    for _ in 0..30 {
        let theirs: Value = app
            .http
            .get(&prom_url)
            .query(&[
                ("query", query.to_string()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", "1".to_string()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let out = promtool(&[
            "query",
            "range",
            "-o",
            "json",
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--step",
            "1s",
            &server,
            query,
        ])
        .await;
        let ours: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        last = (by_labels(&theirs["data"]["result"]), by_labels(&ours));
        if !last.0.is_empty() && last.0 == last.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(!last.0.is_empty(), "Prometheus scraped nothing");
    assert_eq!(last.1, last.0, "substrate answers what Prometheus stores");
    // On those same samples, the functions and operators the subset added answer what
    // Prometheus' own engine answers (windows end at `end`, inside the compared range; rate
    // and increase are left out: this Prometheus 2 orders the counter-zero clamp differently
    // from Prometheus 3, which substrate follows).
    let x = "substrate_http_requests_total";
    for q in [
        format!("delta({x}[4s])"),
        format!("deriv({x}[4s])"),
        format!("irate({x}[4s])"),
        format!("idelta({x}[4s])"),
        format!("changes({x}[4s])"),
        format!("resets({x}[4s])"),
        format!("last_over_time({x}[4s])"),
        format!("count_over_time({x}[4s])"),
        format!("{x} / {x}"),
        format!("{x} - ignoring(instance) {x}"),
        format!("{x} > bool on(route, method, status, instance, job) {x}"),
        format!("sum by (route) ({x}) / on(route) sum by (route) ({x})"),
        format!("{x} and on(route) {x}{{route=\"/metrics\"}}"),
        format!("{x} unless {x}{{route=\"/metrics\"}}"),
        format!("{x}{{route=\"/metrics\"}} or sum by (route) ({x})"),
        format!("abs(-{x}) + clamp_max({x}, 2) - clamp_min({x}, 3)"),
        format!("vector(scalar(sum({x}))) - time() + time()"),
        format!("timestamp({x})"),
    ] {
        let theirs: Value = app
            .http
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q.clone()), ("time", end.to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (s, ours) = prom(
            &app,
            &key,
            "query",
            &[("query", q.clone()), ("time", end.to_string())],
        )
        .await;
        assert_eq!(s, 200, "{q}: {ours}");
        let (theirs, ours) = (
            instant_values(&theirs["data"]["result"]),
            instant_values(&ours["data"]["result"]),
        );
        assert!(!theirs.is_empty(), "{q}: Prometheus answered nothing");
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{q}"
        );
        for (k, a) in &theirs {
            let b = ours[k];
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "{q} {k}: Prometheus {a}, substrate {b}"
            );
        }
    }
    stop(app).await;
}

both!(the_builtin_alert_expressions_answer);
/// The built-in rules' expressions (deploy/prometheus/alerts.yml, read as the alerts role
/// reads it), evaluated on crafted data: the four that use `time()`, `and` + `deriv`, `delta`
/// and vector/vector division give the hand-computed answer; every rule answers.
async fn the_builtin_alert_expressions_answer(b: Backend) {
    let app = TestApp::start_with(b, |c| analytics_backend(b, c)).await;
    let key = app.api_key("acme", &["telemetry:write", "org:acme"]).await;
    let now = chrono::Utc::now().timestamp_millis();
    let t = now - now.rem_euclid(MIN) - 60 * MIN;
    let minutes = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (-20..=0).map(|m| (t + m * MIN, f(m))).collect()
    };
    let every15s = |per_sec: f64| -> Vec<(i64, f64)> {
        (-40..=0)
            .map(|i| (t + i * 15_000, per_sec * (15 * (i + 40)) as f64))
            .collect()
    };
    let lag = |group: &str, instance: &str, f: &dyn Fn(i64) -> f64| {
        let l = [
            ("group", group),
            ("topic", "orders"),
            ("partition", "0"),
            ("instance", instance),
        ];
        labeled("substrate_consumer_lag", &l, minutes(f))
    };
    let http = |route: &str, status: &str, per_sec: f64| {
        let l = [("route", route), ("status", status)];
        labeled("substrate_http_requests_total", &l, every15s(per_sec))
    };
    let data = vec![
        // Last success 200 s before t.
        labeled(
            "substrate_probe_last_success_timestamp_seconds",
            &[("instance", "a")],
            vec![(t - MIN, (t / 1000 - 200) as f64)],
        ),
        // g gains 4 dead letters at t-10m; h stays at 7.
        labeled(
            "substrate_dlq_depth",
            &[("group", "g")],
            minutes(&|m| if m < -10 { 0.0 } else { 4.0 }),
        ),
        labeled("substrate_dlq_depth", &[("group", "h")], minutes(&|_| 7.0)),
        // g's lag grows 30/min, reported by two members; h's is high but flat.
        lag("g", "a", &|m| 200.0 + 30.0 * (m + 20) as f64),
        lag("g", "b", &|m| 200.0 + 30.0 * (m + 20) as f64),
        lag("h", "a", &|_| 500.0),
        // 1 of 10 API requests fails; the health check's failures do not count.
        http("/api/x", "500", 1.0),
        http("/api/x", "200", 9.0),
        http("/healthz", "503", 100.0),
    ];
    let (s, r) = remote_write(&app, &key, data).await;
    assert_eq!(s, 202, "{r}");
    caught_up(&app).await;
    let rules = substrate::alerts::rules::file::parse(
        substrate::alerts::rules::builtin::ALERTS_YML,
        &app.ctx.config.alerts.rules,
    )
    .expect("the built-in rules parse");
    assert_eq!(rules.len(), 9);
    let expect: [(&str, Value, f64); 4] = [
        ("SubstrateProbeStale", json!({}), 200.0),
        // +4 over 14 min of samples, extrapolated 1 min back to the 15 min window's start.
        (
            "SubstrateDLQGrowing",
            json!({"group": "g"}),
            4.0 * 15.0 / 14.0,
        ),
        // `and` keeps the left side: g's lag at t, counted once per partition.
        ("SubstrateConsumerLagGrowing", json!({"group": "g"}), 800.0),
        ("SubstrateHigh5xxRate", json!({}), 0.1),
    ];
    for loc in &rules {
        let v = instant(&app, &key, &loc.rule.expr, t).await;
        if let Some((_, labels, value)) = expect.iter().find(|e| e.0 == loc.rule.alert) {
            assert_eq!(v.len(), 1, "{}: {v:?}", loc.rule.alert);
            assert_eq!(&v[0].0, labels, "{}", loc.rule.alert);
            assert!(close(v[0].1, *value), "{}: {v:?}", loc.rule.alert);
        }
    }
    stop(app).await;
}
