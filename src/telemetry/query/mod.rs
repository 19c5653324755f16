//! Reading telemetry back, scoped to the caller's org (`crate::telemetry::tenant`):
//! - the Prometheus HTTP API under `/prometheus` (as Grafana Mimir's is), enough for
//!   Grafana's Prometheus data source and `promtool query`: `/api/v1/query`,
//!   `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/{name}/values`,
//!   by GET or form POST, answering in Prometheus' JSON shapes and error bodies
//!   (`{"status":"error","errorType":…,"error":…}`); the PromQL subset is `eval.rs`;
//! - `POST /api/v1/query/logs`: log lines by service, level, labels, time range and text,
//!   newest first, with a cursor.

pub mod config;
pub mod eval;
pub mod ops;

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use config::QueryConfig;

use crate::app::AppContext;
use crate::gateway::auth::Principal;
use crate::gateway::ingest::read_limited;
use crate::http::error::ApiError;
use crate::telemetry::store::read::LogFilter;
use crate::telemetry::tenant::{Access, tenant};
use eval::{Evaluator, QueryError, Series, Steps, Value as QValue};

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(instant))
        .routes(utoipa_axum::routes!(range))
        .routes(utoipa_axum::routes!(series))
        .routes(utoipa_axum::routes!(labels))
        .routes(utoipa_axum::routes!(label_values))
        .routes(utoipa_axum::routes!(query_logs))
}

/// The answers of every Prometheus API endpoint, documented once.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
enum PromAnswers {
    /// Prometheus JSON: `{"status":"success","data":…}`
    #[response(status = 200)]
    Success(#[to_schema] PromBody),
    /// Prometheus error body (`bad_data`): a bad parameter or a query outside the supported PromQL subset
    #[response(status = 400)]
    BadData(#[to_schema] PromBody),
    /// Needs the telemetry:read scope and an org
    #[response(status = 403)]
    Forbidden(#[to_schema] crate::http::openapi::ErrorBody),
    /// Prometheus error body (`execution`)
    #[response(status = 422)]
    Execution(#[to_schema] PromBody),
}

/// Any JSON object (the Prometheus answer shapes are documented by Prometheus).
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
struct PromBody(serde_json::Map<String, Value>);

/// A Prometheus-style error answer.
fn prom_error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": msg.into()});
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match &self {
            QueryError::BadData(_) | QueryError::Unsupported(_) => {
                prom_error(StatusCode::BAD_REQUEST, "bad_data", self.to_string())
            }
            QueryError::Execution(_) => prom_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                self.to_string(),
            ),
            QueryError::Storage(e) => {
                tracing::warn!(error = %e, "telemetry query failed");
                prom_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage unavailable",
                )
            }
        }
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// The parameters of a request: its query string and, for a form POST, its body.
struct Params(BTreeMap<String, Vec<String>>);

impl Params {
    async fn read(req: Request) -> Result<Params, ApiError> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut add = |raw: &[u8]| {
            for (k, v) in url::form_urlencoded::parse(raw) {
                m.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        };
        if let Some(q) = req.uri().query() {
            add(q.as_bytes());
        }
        let form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let body = read_limited(req, 1024 * 1024).await?;
            add(&body);
        }
        Ok(Params(m))
    }

    fn one(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.last()).map(String::as_str)
    }

    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The caller's org (read access) and the request's parameters: what every Prometheus API
/// handler starts with.
async fn reader(p: &Principal, req: Request) -> Result<(String, Params), Response> {
    let org = tenant(p, Access::Read).map_err(IntoResponse::into_response)?;
    let params = Params::read(req)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((org, params))
}

/// A time parameter: RFC 3339 or unix seconds, in unix milliseconds.
fn time_param(p: &Params, k: &str, default: i64) -> Result<i64, QueryError> {
    let Some(s) = p.one(k) else {
        return Ok(default);
    };
    parse_time_ms(s).ok_or_else(|| {
        QueryError::BadData(format!(
            "invalid parameter {k:?}: cannot parse {s:?} to a valid timestamp"
        ))
    })
}

/// A time as Prometheus' API takes it (RFC 3339 or unix seconds, fractions allowed), in unix
/// milliseconds; `None` when it is neither. (Also read by the alert history API.)
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
        && f.abs() < 9.2e15
    {
        return Some((f * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .ok()
}

/// A duration parameter: seconds as a number, or a PromQL duration (`15s`, `1m`).
fn duration_param(p: &Params, k: &str) -> Result<i64, QueryError> {
    let s = p
        .one(k)
        .ok_or_else(|| QueryError::BadData(format!("missing parameter {k:?}")))?;
    let ms = match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f < 9.2e15 => (f * 1000.0).round() as i64,
        _ => promql_parser::util::parse_duration(s)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or_else(|| {
                QueryError::BadData(format!("invalid parameter {k:?}: {s:?} is not a duration"))
            })?,
    };
    if ms <= 0 {
        return Err(QueryError::BadData(format!(
            "invalid parameter {k:?}: zero or negative"
        )));
    }
    Ok(ms)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A sample value as Prometheus writes it.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

async fn evaluate(
    ctx: &AppContext,
    org: &str,
    query: &str,
    steps: Steps,
    rollups: bool,
) -> Result<QValue, QueryError> {
    let expr = promql_parser::parser::parse(query).map_err(QueryError::BadData)?;
    evaluate_expr(ctx, org, &expr, steps, rollups).await
}

async fn evaluate_expr(
    ctx: &AppContext,
    org: &str,
    expr: &promql_parser::parser::Expr,
    steps: Steps,
    rollups: bool,
) -> Result<QValue, QueryError> {
    let q = &ctx.config.telemetry.query;
    let ev = Evaluator {
        tel: &ctx.telemetry,
        org,
        steps,
        lookback: (q.lookback_secs as i64).saturating_mul(1000),
        max_series: q.max_series,
        rollups,
    };
    ev.eval(expr).await
}

/// An instant query of a parsed expression at `t_ms` on `org`'s data, exactly as
/// `/prometheus/api/v1/query` answers it (the alert evaluator and rule validation use it).
pub async fn instant_query(
    ctx: &AppContext,
    org: &str,
    expr: &promql_parser::parser::Expr,
    t_ms: i64,
) -> Result<QValue, QueryError> {
    evaluate_expr(ctx, org, expr, Steps::instant(t_ms), false).await
}

#[utoipa::path(
    method(get, post),
    path = "/prometheus/api/v1/query",
    tag = "telemetry",
    operation_id = "instant",
    summary = "PromQL instant query",
    params(("query" = Option<String>, Query, description = "PromQL"), ("time" = Option<String>, Query, description = "RFC 3339 or unix seconds")),
    responses(PromAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn instant(
    State(ctx): State<AppContext>,
    p: Principal,
    req: Request,
) -> Result<Response, Response> {
    let (org, params) = reader(&p, req).await?;
    let run = async {
        let query = params
            .one("query")
            .ok_or_else(|| QueryError::BadData("missing parameter \"query\"".into()))?;
        let t = time_param(&params, "time", now_ms())?;
        let data = match evaluate(&ctx, &org, query, Steps::instant(t), false).await? {
            QValue::Scalar(v) => {
                json!({"resultType": "scalar", "result": [ts(t), fmt_value(v[0])]})
            }
            QValue::Vector(vs) => {
                let result: Vec<Value> = vs
                    .into_iter()
                    .filter_map(|s| {
                        s.values[0]
                            .map(|v| json!({"metric": s.labels, "value": [ts(t), fmt_value(v)]}))
                    })
                    .collect();
                json!({"resultType": "vector", "result": result})
            }
        };
        Ok::<_, QueryError>(success(data))
    };
    run.await.map_err(IntoResponse::into_response)
}

fn matrix(steps: Steps, series: Vec<Series>) -> Value {
    let result: Vec<Value> = series
        .into_iter()
        .filter_map(|s| {
            let values: Vec<Value> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| json!([ts(steps.at(i)), fmt_value(v)])))
                .collect();
            (!values.is_empty()).then(|| json!({"metric": s.labels, "values": values}))
        })
        .collect();
    json!({"resultType": "matrix", "result": result})
}

#[utoipa::path(
    method(get, post),
    path = "/prometheus/api/v1/query_range",
    tag = "telemetry",
    operation_id = "range",
    summary = "PromQL range query",
    params(("query" = Option<String>, Query, description = "PromQL"), ("start" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("end" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("step" = Option<String>, Query, description = "Seconds or a PromQL duration")),
    responses(PromAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn range(
    State(ctx): State<AppContext>,
    p: Principal,
    req: Request,
) -> Result<Response, Response> {
    let (org, params) = reader(&p, req).await?;
    let run = async {
        let query = params
            .one("query")
            .ok_or_else(|| QueryError::BadData("missing parameter \"query\"".into()))?;
        let start = time_param(&params, "start", i64::MIN)?;
        let end = time_param(&params, "end", i64::MIN)?;
        if start == i64::MIN || end == i64::MIN {
            return Err(QueryError::BadData("start and end are required".into()));
        }
        let step = duration_param(&params, "step")?;
        if end < start {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let steps = Steps { start, end, step };
        let max = ctx.config.telemetry.query.max_points;
        if steps.len() > max {
            return Err(QueryError::BadData(format!(
                "exceeded maximum resolution of {max} points per timeseries; try decreasing the query resolution (?step=XX)"
            )));
        }
        let data = match evaluate(&ctx, &org, query, steps, true).await? {
            QValue::Scalar(v) => matrix(
                steps,
                vec![Series {
                    labels: Default::default(),
                    values: v.into_iter().map(Some).collect(),
                }],
            ),
            QValue::Vector(vs) => matrix(steps, vs),
        };
        Ok::<_, QueryError>(success(data))
    };
    run.await.map_err(IntoResponse::into_response)
}

/// The org's series selected by every `match[]` (all series when none is given).
async fn matched(
    ctx: &AppContext,
    org: &str,
    params: &Params,
) -> Result<Vec<eval::Labels>, QueryError> {
    let all = ctx.telemetry.series(org, None).await?;
    let selectors = params.all("match[]");
    if selectors.is_empty() {
        return Ok(all.into_iter().map(|s| s.labels).collect());
    }
    let mut out = Vec::new();
    for s in all {
        for m in selectors {
            let expr = promql_parser::parser::parse(m).map_err(QueryError::BadData)?;
            let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
                return Err(QueryError::BadData(format!(
                    "match[] {m:?} is not a series selector"
                )));
            };
            if eval::selects(&vs, &s.labels) {
                out.push(s.labels.clone());
                break;
            }
        }
    }
    Ok(out)
}

#[utoipa::path(
    method(get, post),
    path = "/prometheus/api/v1/series",
    tag = "telemetry",
    operation_id = "series",
    summary = "Series matching selectors",
    params(("match[]" = Option<Vec<String>>, Query, description = "Series selectors"), ("start" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("end" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("step" = Option<String>, Query, description = "Seconds or a PromQL duration")),
    responses(PromAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn series(
    State(ctx): State<AppContext>,
    p: Principal,
    req: Request,
) -> Result<Response, Response> {
    let (org, params) = reader(&p, req).await?;
    let found = matched(&ctx, &org, &params)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(success(json!(found)))
}

#[utoipa::path(
    method(get, post),
    path = "/prometheus/api/v1/labels",
    tag = "telemetry",
    operation_id = "labels",
    summary = "Label names",
    params(("match[]" = Option<Vec<String>>, Query, description = "Series selectors"), ("start" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("end" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("step" = Option<String>, Query, description = "Seconds or a PromQL duration")),
    responses(PromAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn labels(
    State(ctx): State<AppContext>,
    p: Principal,
    req: Request,
) -> Result<Response, Response> {
    let (org, params) = reader(&p, req).await?;
    let found = matched(&ctx, &org, &params)
        .await
        .map_err(IntoResponse::into_response)?;
    let names: std::collections::BTreeSet<String> =
        found.into_iter().flat_map(|l| l.into_keys()).collect();
    Ok(success(json!(names)))
}

#[utoipa::path(
    get,
    path = "/prometheus/api/v1/label/{name}/values",
    tag = "telemetry",
    operation_id = "label_values",
    summary = "Values of one label",
    params(("name" = String, Path, description = "The label name"), ("match[]" = Option<Vec<String>>, Query, description = "Series selectors"), ("start" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("end" = Option<String>, Query, description = "RFC 3339 or unix seconds"), ("step" = Option<String>, Query, description = "Seconds or a PromQL duration")),
    responses(PromAnswers),
    security(("bearer" = []), ("api_key" = []))
)]
async fn label_values(
    State(ctx): State<AppContext>,
    p: Principal,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, Response> {
    let (org, params) = reader(&p, req).await?;
    let found = matched(&ctx, &org, &params)
        .await
        .map_err(IntoResponse::into_response)?;
    let values: std::collections::BTreeSet<String> = found
        .into_iter()
        .filter_map(|mut l| l.remove(&name))
        .collect();
    Ok(success(json!(values)))
}

/// `POST /api/v1/query/logs` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    service: Option<String>,
    level: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// RFC 3339 or unix seconds; default: an hour before `to`.
    from: Option<Value>,
    /// RFC 3339 or unix seconds; default: now.
    to: Option<Value>,
    text: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A time of the logs query as unix nanoseconds.
fn log_time(v: &Option<Value>, field: &str, default: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request("invalid_query")
            .with("field", field.to_string())
            .with("reason", "expected RFC 3339 or unix seconds")
    };
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 9.2e9)
            .map(|f| (f * 1e9).round() as i64)
            .ok_or_else(bad),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

pub(crate) fn rfc3339_nanos(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The cursor is `<ts_ns>.<line_id>` of the last line of the previous page.
fn parse_cursor(c: &str) -> Option<(i64, i64)> {
    let (t, id) = c.split_once('.')?;
    Some((t.parse().ok()?, id.parse().ok()?))
}

#[utoipa::path(
    post,
    path = "/api/v1/query/logs",
    tag = "telemetry",
    operation_id = "query_logs",
    summary = "Search log lines, newest first, with a cursor",
    request_body(content = Object, content_type = "application/json", description = "service, level, labels, from, to, text, cursor, limit (all optional)"),
    responses(
        (status = 200, description = "Log lines and the next cursor", body = Object),
        (status = 400, description = "An invalid filter, time or cursor", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Needs the telemetry:read scope and an org", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn query_logs(
    State(ctx): State<AppContext>,
    p: Principal,
    req: Request,
) -> Result<Response, ApiError> {
    let org = tenant(&p, Access::Read)?;
    let body = read_limited(req, 64 * 1024).await?;
    let q: LogsQuery = serde_json::from_value(crate::gateway::ingest::parse_json(&body)?)
        .map_err(|e| ApiError::bad_request("invalid_query").with("reason", e.to_string()))?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let to_ns = log_time(&q.to, "to", now)?;
    let from_ns = log_time(&q.from, "from", to_ns.saturating_sub(3_600_000_000_000))?;
    let max = ctx.config.telemetry.query.max_log_lines;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request("invalid_query")
            .with("field", "limit")
            .with("reason", format!("from 1 to {max}")));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| ApiError::bad_request("invalid_cursor"))?),
    };
    let filter = LogFilter {
        service: q.service,
        level: q.level.map(|l| l.to_ascii_lowercase()),
        labels: q.labels.into_iter().collect(),
        from_ns,
        to_ns,
        text: q.text.filter(|t| !t.is_empty()),
        before,
        limit,
    };
    let lines = ctx.telemetry.logs(&org, &filter).await.map_err(|e| {
        tracing::warn!(error = %e, "log query failed");
        ApiError::unavailable("storage unavailable")
    })?;
    let next = (lines.len() == limit)
        .then(|| lines.last().map(|l| format!("{}.{}", l.ts_ns, l.line_id)))
        .flatten();
    let out: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            json!({
                "time": rfc3339_nanos(l.ts_ns), "ts_ns": l.ts_ns, "service": l.service,
                "level": l.level, "message": l.message,
                "labels": serde_json::from_str::<Value>(&l.labels).unwrap_or(Value::Null),
                "attributes": serde_json::from_str::<Value>(&l.attributes).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(axum::Json(json!({"lines": out, "next_cursor": next})).into_response())
}
