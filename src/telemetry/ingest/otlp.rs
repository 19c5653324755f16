//! OTLP/HTTP metrics and logs (`POST /v1/metrics`, `POST /v1/logs`), protobuf or JSON
//! (`Content-Type`), turned into the canonical batch the way Prometheus' own OTLP receiver
//! maps them: metric names with characters outside `[a-zA-Z0-9_:]` replaced by `_`, a
//! monotonic sum gets `_total`; histograms become `_bucket{le}` (cumulative), `_sum` and
//! `_count`; summaries `{quantile}`, `_sum`, `_count`; the resource's `service.name` becomes
//! `job` and `service.instance.id` `instance`, data point attributes become labels.
//! Exponential histograms are not kept (counted as dropped). Log records keep their
//! severity as the level, the body as the message, the resource attributes as labels and
//! their own attributes (plus trace and span ids) as attributes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value};

use crate::http::error::ApiError;
use crate::telemetry::model::{Batch, Label, LogLine, NAME, Sample, TimeSeries};

/// Whether the body is OTLP JSON (else protobuf), from `Content-Type`.
pub fn is_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
}

/// OTLP/JSON writes 64-bit integers as strings; the generated types read the times from
/// strings but not `count`, `bucketCounts`, `asInt` or `intValue` (a oneof that fails to read
/// is silently absent). Turns the string forms of those into numbers.
fn numbers_for_strings(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), &mut *x) {
                    ("count" | "asInt" | "intValue", Value::String(s)) => {
                        if let Ok(n) = s.parse::<i64>() {
                            *x = Value::from(n);
                        } else if let Ok(n) = s.parse::<u64>() {
                            *x = Value::from(n);
                        }
                    }
                    ("bucketCounts", Value::Array(items)) => {
                        for it in items.iter_mut() {
                            if let Some(n) = it.as_str().and_then(|s| s.parse::<u64>().ok()) {
                                *it = Value::from(n);
                            }
                        }
                    }
                    _ => numbers_for_strings(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(numbers_for_strings),
        _ => {}
    }
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    json: bool,
    what: &str,
) -> Result<T, ApiError> {
    if json {
        let mut doc: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("invalid_otlp")
                .with("reason", format!("not an OTLP/JSON {what}: {e}"))
        })?;
        numbers_for_strings(&mut doc);
        serde_json::from_value(doc).map_err(|e| {
            ApiError::bad_request("invalid_otlp")
                .with("reason", format!("not an OTLP/JSON {what}: {e}"))
        })
    } else {
        T::decode(body).map_err(|e| {
            ApiError::bad_request("invalid_protobuf")
                .with("reason", format!("not an OTLP {what}: {e}"))
        })
    }
}

/// An attribute value as text (what becomes a label value).
fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => json_of(Some(other)).to_string(),
        None => String::new(),
    }
}

fn json_of(v: Option<&any_value::Value>) -> Value {
    match v {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|x| json_of(x.value.as_ref())).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attrs_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        None => Value::Null,
    }
}

fn attrs_json(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                json_of(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

/// `[a-zA-Z0-9_]` with everything else `_`, and a leading digit prefixed (label names);
/// metric names also keep `:`.
fn sanitize(s: &str, colon: bool) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Labels from the resource: `job`, `instance`, and its other attributes.
fn resource_labels(r: &Option<Resource>) -> Vec<Label> {
    let mut out = Vec::new();
    for kv in r.iter().flat_map(|r| &r.attributes) {
        let name = match kv.key.as_str() {
            "service.name" => "job".to_string(),
            "service.instance.id" => "instance".to_string(),
            k => sanitize(k, false),
        };
        out.push(Label {
            name,
            value: text(&kv.value),
        });
    }
    out
}

fn series_of(
    name: &str,
    base: &[Label],
    attrs: &[KeyValue],
    extra: Option<(&str, String)>,
    t_ns: u64,
    value: f64,
) -> TimeSeries {
    let mut labels: Vec<Label> = base.to_vec();
    for kv in attrs {
        let n = sanitize(&kv.key, false);
        labels.retain(|l| l.name != n);
        labels.push(Label {
            name: n,
            value: text(&kv.value),
        });
    }
    if let Some((k, v)) = extra {
        labels.retain(|l| l.name != k);
        labels.push(Label {
            name: k.into(),
            value: v,
        });
    }
    labels.retain(|l| l.name != NAME);
    labels.push(Label {
        name: NAME.into(),
        value: name.to_string(),
    });
    TimeSeries {
        labels,
        samples: vec![Sample {
            value,
            timestamp: (t_ns / 1_000_000) as i64,
        }],
    }
}

/// Where one data point's series go: its resource labels, attributes and time.
struct At<'a> {
    base: &'a [Label],
    attrs: &'a [KeyValue],
    t_ns: u64,
}

impl At<'_> {
    fn push(&self, out: &mut Vec<TimeSeries>, name: &str, extra: Option<(&str, String)>, v: f64) {
        out.push(series_of(name, self.base, self.attrs, extra, self.t_ns, v));
    }
}

/// One metric's series; returns the number of data points not kept.
fn metric(m: &Metric, base: &[Label], out: &mut Vec<TimeSeries>) -> usize {
    let name = sanitize(&m.name, true);
    let num = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    };
    let at = |attrs, t_ns| At { base, attrs, t_ns };
    let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
    match &m.data {
        Some(Data::Gauge(g)) => {
            for p in &g.data_points {
                at(&p.attributes, p.time_unix_nano).push(out, &name, None, num(&p.value));
            }
        }
        Some(Data::Sum(s)) => {
            // A monotonic sum is a counter: Prometheus names counters `…_total`.
            let n = if s.is_monotonic && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.clone()
            };
            for p in &s.data_points {
                at(&p.attributes, p.time_unix_nano).push(out, &n, None, num(&p.value));
            }
        }
        Some(Data::Histogram(h)) => {
            let bucket = format!("{name}_bucket");
            for p in &h.data_points {
                let a = at(&p.attributes, p.time_unix_nano);
                // OTLP counts per bucket; Prometheus buckets are cumulative.
                let mut cumulative = 0u64;
                for (i, c) in p.bucket_counts.iter().enumerate() {
                    cumulative += c;
                    let le = p
                        .explicit_bounds
                        .get(i)
                        .map_or("+Inf".to_string(), |b| b.to_string());
                    a.push(out, &bucket, Some(("le", le)), cumulative as f64);
                }
                if let Some(sum) = p.sum {
                    a.push(out, &sum_name, None, sum);
                }
                a.push(out, &count_name, None, p.count as f64);
            }
        }
        Some(Data::Summary(s)) => {
            for p in &s.data_points {
                let a = at(&p.attributes, p.time_unix_nano);
                for q in &p.quantile_values {
                    a.push(
                        out,
                        &name,
                        Some(("quantile", q.quantile.to_string())),
                        q.value,
                    );
                }
                a.push(out, &sum_name, None, p.sum);
                a.push(out, &count_name, None, p.count as f64);
            }
        }
        Some(Data::ExponentialHistogram(e)) => return e.data_points.len(),
        None => {}
    }
    0
}

/// An OTLP metrics export as a batch, and the data points not kept.
pub fn metrics(body: &[u8], json: bool) -> Result<(Batch, usize), ApiError> {
    let req: ExportMetricsServiceRequest = decode(body, json, "ExportMetricsServiceRequest")?;
    let mut batch = Batch::default();
    let mut skipped = 0;
    for rm in &req.resource_metrics {
        let base = resource_labels(&rm.resource);
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                skipped += metric(m, &base, &mut batch.timeseries);
            }
        }
    }
    Ok((batch, skipped))
}

/// The level of a record: its severity text, else the severity number's range.
fn level(text: &str, number: i32) -> String {
    if !text.is_empty() {
        return text.to_ascii_lowercase();
    }
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "",
    }
    .to_string()
}

/// An OTLP logs export as a batch.
pub fn logs(body: &[u8], json: bool) -> Result<Batch, ApiError> {
    let req: ExportLogsServiceRequest = decode(body, json, "ExportLogsServiceRequest")?;
    let mut batch = Batch::default();
    for rl in &req.resource_logs {
        let labels = resource_labels(&rl.resource);
        let service = labels
            .iter()
            .find(|l| l.name == "job")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let t = if r.time_unix_nano > 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let mut attrs = attrs_json(&r.attributes);
                if !r.trace_id.is_empty() {
                    attrs.insert("trace_id".into(), Value::String(hex::encode(&r.trace_id)));
                }
                if !r.span_id.is_empty() {
                    attrs.insert("span_id".into(), Value::String(hex::encode(&r.span_id)));
                }
                let message = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => json_of(other).to_string(),
                };
                batch.logs.push(LogLine {
                    ts_ns: i64::try_from(t).unwrap_or(i64::MAX),
                    service: service.clone(),
                    level: level(&r.severity_text, r.severity_number),
                    message,
                    labels: labels.clone(),
                    attributes: if attrs.is_empty() {
                        String::new()
                    } else {
                        Value::Object(attrs).to_string()
                    },
                });
            }
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_metrics_map_like_prometheus() {
        let body = json!({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
            "scopeMetrics": [{"metrics": [
                {"name": "http.requests", "sum": {"isMonotonic": true, "aggregationTemporality": 2,
                    "dataPoints": [{"timeUnixNano": "1700000000000000000", "asInt": "7",
                        "attributes": [{"key": "http.route", "value": {"stringValue": "/a"}}]}]}},
                {"name": "latency", "histogram": {"aggregationTemporality": 2, "dataPoints": [
                    {"timeUnixNano": "1700000000000000000", "count": "3", "sum": 1.5,
                     "bucketCounts": ["1", "2"], "explicitBounds": [0.5]}]}}
            ]}]
        }]});
        let (b, skipped) = metrics(body.to_string().as_bytes(), true).unwrap();
        assert_eq!(skipped, 0);
        let names: Vec<String> = b
            .timeseries
            .iter()
            .map(|s| {
                crate::telemetry::model::metric_name(&{
                    let mut l = s.labels.clone();
                    l.sort();
                    l
                })
                .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "latency_bucket",
                "latency_bucket",
                "latency_sum",
                "latency_count"
            ]
        );
        let first = &b.timeseries[0];
        assert_eq!(first.samples[0].value, 7.0);
        assert_eq!(first.samples[0].timestamp, 1_700_000_000_000);
        assert!(
            first
                .labels
                .iter()
                .any(|l| l.name == "job" && l.value == "shop")
        );
        assert!(first.labels.iter().any(|l| l.name == "http_route"));
        assert_eq!(
            b.timeseries[2].samples[0].value, 3.0,
            "buckets are cumulative"
        );
        assert!(metrics(b"\xff\xff", false).is_err());
    }

    #[test]
    fn protobuf_logs() {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("shop".into())),
                        }),
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 5,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("boom".into())),
                        }),
                        trace_id: vec![1; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let b = logs(&req.encode_to_vec(), false).unwrap();
        let l = &b.logs[0];
        assert_eq!(
            (
                l.ts_ns,
                l.service.as_str(),
                l.level.as_str(),
                l.message.as_str()
            ),
            (5, "shop", "error", "boom")
        );
        assert!(l.attributes.contains("0101010101"));
    }
}
