//! The JSON ingest formats, each turned into the canonical `Batch`:
//! - native metrics and logs in the shape of seed 003 (`{time, service, instance_id,
//!   metric_name, value, labels}` and `{time, service, instance_id, level, message, labels,
//!   json}`), one object, an array, or `{"metrics"|"logs": [...]}`. `time` is RFC 3339 or unix
//!   seconds (a number); missing means now;
//! - the Loki push API (`{"streams": [{"stream": {labels}, "values": [[ns, line, {meta}?]]}]}`).
//!
//! Errors name the item (`index`), the field and the reason; nothing partial is kept.

use serde_json::{Map, Value};

use crate::http::error::ApiError;
use crate::telemetry::model::{Batch, Label, LogLine, NAME, Sample, TimeSeries};

fn invalid(index: usize, field: &str, reason: &str) -> ApiError {
    ApiError::bad_request("invalid_telemetry")
        .with("index", index as u64)
        .with("field", field.to_string())
        .with("reason", reason.to_string())
}

/// The items of a single-or-batched body: an object, an array, or `{key: [...]}`.
fn items(doc: Value, key: &str) -> Result<Vec<Value>, ApiError> {
    match doc {
        Value::Array(a) => Ok(a),
        Value::Object(mut o) => match o.remove(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(ApiError::bad_request("invalid_telemetry")
                .with("field", key.to_string())
                .with("reason", "expected an array")),
            None => Ok(vec![Value::Object(o)]),
        },
        _ => Err(ApiError::bad_request("invalid_telemetry").with(
            "reason",
            format!("expected an object, an array or {{\"{key}\": [...]}}"),
        )),
    }
}

/// `time` as unix nanoseconds: RFC 3339, or unix seconds as a number; `now_ns` when absent.
fn time_ns(o: &Map<String, Value>, i: usize, now_ns: i64) -> Result<i64, ApiError> {
    match o.get("time") {
        None | Some(Value::Null) => Ok(now_ns),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| invalid(i, "time", "expected RFC 3339 or unix seconds")),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && s.abs() < 9.2e9)
            .map(|s| (s * 1e9).round() as i64)
            .ok_or_else(|| invalid(i, "time", "expected RFC 3339 or unix seconds")),
        Some(_) => Err(invalid(i, "time", "expected RFC 3339 or unix seconds")),
    }
}

fn string_field(
    o: &Map<String, Value>,
    i: usize,
    key: &str,
    required: bool,
) -> Result<String, ApiError> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if !required => Ok(String::new()),
        None | Some(Value::Null) => Err(invalid(i, key, "required")),
        Some(_) => Err(invalid(i, key, "expected a string")),
    }
}

/// A JSON object of string values as labels (numbers, NaN or nested values are refused).
fn labels_of(v: Option<&Value>, i: usize, field: &str) -> Result<Vec<Label>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let o = v
        .as_object()
        .ok_or_else(|| invalid(i, field, "expected an object of strings"))?;
    o.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok(Label {
                name: k.clone(),
                value: s.clone(),
            }),
            _ => Err(invalid(
                i,
                &format!("{field}.{k}"),
                "label values are strings",
            )),
        })
        .collect()
}

fn push_label(labels: &mut Vec<Label>, name: &str, value: String) {
    labels.retain(|l| l.name != name);
    labels.push(Label {
        name: name.into(),
        value,
    });
}

/// Native metrics (seed 003): each item one sample of one series.
pub fn native_metrics(doc: Value, now_ns: i64) -> Result<Batch, ApiError> {
    let mut batch = Batch::default();
    for (i, item) in items(doc, "metrics")?.into_iter().enumerate() {
        let o = item
            .as_object()
            .ok_or_else(|| invalid(i, "", "expected an object"))?;
        let name = string_field(o, i, "metric_name", true)?;
        let value = o
            .get("value")
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid(i, "value", "expected a number"))?;
        let mut labels = labels_of(o.get("labels"), i, "labels")?;
        push_label(&mut labels, NAME, name);
        for key in ["service", "instance_id"] {
            let v = string_field(o, i, key, false)?;
            if !v.is_empty() {
                push_label(&mut labels, key, v);
            }
        }
        let t = time_ns(o, i, now_ns)?;
        batch.timeseries.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: t.div_euclid(1_000_000),
            }],
        });
    }
    Ok(batch)
}

/// Native logs (seed 003).
pub fn native_logs(doc: Value, now_ns: i64) -> Result<Batch, ApiError> {
    let mut batch = Batch::default();
    for (i, item) in items(doc, "logs")?.into_iter().enumerate() {
        let o = item
            .as_object()
            .ok_or_else(|| invalid(i, "", "expected an object"))?;
        let mut labels = labels_of(o.get("labels"), i, "labels")?;
        let instance = string_field(o, i, "instance_id", false)?;
        if !instance.is_empty() {
            push_label(&mut labels, "instance_id", instance);
        }
        let attributes = match o.get("json") {
            None | Some(Value::Null) => String::new(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => return Err(invalid(i, "json", "expected an object")),
        };
        batch.logs.push(LogLine {
            ts_ns: time_ns(o, i, now_ns)?,
            service: string_field(o, i, "service", true)?,
            level: string_field(o, i, "level", false)?.to_ascii_lowercase(),
            message: string_field(o, i, "message", true)?,
            labels,
            attributes,
        });
    }
    Ok(batch)
}

/// The first of `names` among `labels`.
fn first_label(labels: &[Label], names: &[&str]) -> String {
    names
        .iter()
        .find_map(|n| labels.iter().find(|l| l.name == *n))
        .map(|l| l.value.clone())
        .unwrap_or_default()
}

/// One Loki `values` entry: `[ns_string, line]` or `[ns_string, line, {metadata}]`.
fn loki_entry(v: &Value, i: usize) -> Result<(i64, String, String), ApiError> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 2 || a.len() == 3)
        .ok_or_else(|| invalid(i, "values", "entries are [\"<unix ns>\", \"<line>\"]"))?;
    let ts = a[0]
        .as_str()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| invalid(i, "values", "timestamps are unix nanoseconds as strings"))?;
    let line = a[1]
        .as_str()
        .ok_or_else(|| invalid(i, "values", "lines are strings"))?
        .to_string();
    let meta = match a.get(2) {
        None | Some(Value::Null) => String::new(),
        Some(m @ Value::Object(_)) => m.to_string(),
        Some(_) => return Err(invalid(i, "values", "structured metadata is an object")),
    };
    Ok((ts, line, meta))
}

/// The Loki push API, JSON encoding. The service is the stream's `service_name`, `service`,
/// `job` or `app` label; the level its `level`, `detected_level` or `severity` label.
pub fn loki(doc: Value) -> Result<Batch, ApiError> {
    let streams = match doc {
        Value::Object(mut o) => match o.remove("streams") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::bad_request("invalid_telemetry")
                    .with("field", "streams")
                    .with("reason", "expected {\"streams\": [...]}"));
            }
        },
        _ => {
            return Err(ApiError::bad_request("invalid_telemetry")
                .with("reason", "expected {\"streams\": [...]}"));
        }
    };
    let mut batch = Batch::default();
    for (i, s) in streams.iter().enumerate() {
        let labels = labels_of(s.get("stream"), i, "stream")?;
        let values = s
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(i, "values", "expected an array"))?;
        let service = first_label(&labels, &["service_name", "service", "job", "app"]);
        let level = first_label(&labels, &["level", "detected_level", "severity"]);
        for v in values {
            let (ts_ns, message, attributes) = loki_entry(v, i)?;
            batch.logs.push(LogLine {
                ts_ns,
                service: service.clone(),
                level: level.to_ascii_lowercase(),
                message,
                labels: labels.clone(),
                attributes,
            });
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn native_metric_becomes_a_series() {
        let b = native_metrics(
            json!({"time": "2026-01-01T00:00:00Z", "service": "api", "instance_id": "i-1",
                   "metric_name": "cpu", "value": 0.5, "labels": {"core": "0"}}),
            0,
        )
        .unwrap();
        let s = &b.timeseries[0];
        assert_eq!(s.samples[0].timestamp, 1_767_225_600_000);
        assert_eq!(s.samples[0].value, 0.5);
        assert_eq!(s.labels.len(), 4);
        let b = native_metrics(
            json!({"metrics": [{"metric_name": "x", "value": 1}]}),
            7_000_000,
        )
        .unwrap();
        assert_eq!(b.timeseries[0].samples[0].timestamp, 7);
        let e = native_metrics(json!([{"metric_name": "x", "value": "NaN"}]), 0).unwrap_err();
        assert_eq!(e.body["field"], "value");
        let e = native_metrics(
            json!([{"metric_name": "x", "value": 1, "labels": {"a": 1}}]),
            0,
        )
        .unwrap_err();
        assert_eq!(e.body["field"], "labels.a");
    }

    #[test]
    fn loki_and_native_logs() {
        let b = loki(json!({"streams": [{"stream": {"job": "api", "level": "ERROR"},
            "values": [["1700000000000000001", "boom"], ["1700000000000000002", "x", {"trace": "t"}]]}]}))
        .unwrap();
        assert_eq!(b.logs.len(), 2);
        assert_eq!(b.logs[0].service, "api");
        assert_eq!(b.logs[0].level, "error");
        assert_eq!(b.logs[1].attributes, r#"{"trace":"t"}"#);
        assert!(loki(json!({"streams": [{"stream": {}, "values": [[1, "x"]]}]})).is_err());
        let b = native_logs(
            json!([{"time": 1.5, "service": "api", "level": "info", "message": "hi",
                    "json": {"k": 1}}]),
            0,
        )
        .unwrap();
        assert_eq!(b.logs[0].ts_ns, 1_500_000_000);
        assert!(native_logs(json!([{"service": "api"}]), 0).is_err());
    }
}
