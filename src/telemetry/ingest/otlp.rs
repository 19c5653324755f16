//! OTLP/HTTP metrics and logs (`POST /v1/metrics`, `POST /v1/logs`), protobuf or JSON
//! (`Content-Type`), turned into the canonical batch the way Prometheus' own OTLP receiver
//! maps them: metric names with characters outside `[a-zA-Z0-9_:]` replaced by `_`, a
//! monotonic sum gets `_total`; histograms become `_bucket{le}` (cumulative), `_sum` and
//! `_count`; summaries `{quantile}`, `_sum`, `_count`; the resource's `service.name` becomes
//! `job` and `service.instance.id` `instance`, data point attributes become labels.
//! Exponential histograms become the same classic series, a `_bucket{le}` per bucket bound
//! (`exponential_buckets`). A request is refused (413) before its series are made when they
//! would be more than `telemetry.ingest` allows: a histogram's bucket counts are a few bytes
//! each on the wire and a whole series each once converted. Log records keep their
//! severity as the level, the body as the message, the resource attributes as labels and
//! their own attributes (plus trace and span ids) as attributes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, Metric, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Map, Value, json};

use super::IngestConfig;
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
                    ("exponentialHistogram", Value::Object(h)) => {
                        if let Some(Value::Array(points)) = h.get_mut("dataPoints") {
                            points.iter_mut().for_each(exponential_point_json);
                        }
                        numbers_for_strings(x);
                    }
                    _ => numbers_for_strings(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(numbers_for_strings),
        _ => {}
    }
}

/// The generated `ExponentialHistogramDataPoint`, unlike the other points, has no serde
/// defaults and reads its 64-bit fields only as numbers, while OTLP/JSON leaves out what is
/// zero and writes those fields as strings: fills in the one and turns the other into numbers.
fn exponential_point_json(p: &mut Value) {
    let Value::Object(o) = p else { return };
    for k in ["startTimeUnixNano", "timeUnixNano", "count", "zeroCount"] {
        let n = match o.get(k) {
            None => Some(0),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            Some(_) => None,
        };
        if let Some(n) = n {
            o.insert(k.into(), Value::from(n));
        }
    }
    for (k, zero) in [
        ("attributes", json!([])),
        ("exemplars", json!([])),
        ("scale", json!(0)),
        ("flags", json!(0)),
        ("zeroThreshold", json!(0.0)),
    ] {
        o.entry(k).or_insert(zero);
    }
    for side in ["positive", "negative"] {
        if let Some(Value::Object(b)) = o.get_mut(side) {
            b.entry("offset").or_insert(json!(0));
            b.entry("bucketCounts").or_insert(json!([]));
        }
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

    /// One classic histogram: a `_bucket{le}` series per bucket, its value the cumulative
    /// count `cumulative` gives, then `_sum` (when sent) and `_count`.
    fn histogram(
        &self,
        out: &mut Vec<TimeSeries>,
        names: &HistogramNames,
        cumulative: impl IntoIterator<Item = (String, u64)>,
        sum: Option<f64>,
        count: u64,
    ) {
        for (le, c) in cumulative {
            self.push(out, &names.bucket, Some(("le", le)), c as f64);
        }
        if let Some(sum) = sum {
            self.push(out, &names.sum, None, sum);
        }
        self.push(out, &names.count, None, count as f64);
    }
}

/// The names of a histogram's series.
struct HistogramNames {
    bucket: String,
    sum: String,
    count: String,
}

/// A bucket bound as its `le` label value (explicit bounds and exponential ones alike).
fn le(bound: f64) -> String {
    bound.to_string()
}

/// Running totals of `counts` (saturating: the counts are the sender's).
fn running(counts: impl IntoIterator<Item = u64>) -> impl Iterator<Item = u64> {
    counts.into_iter().scan(0u64, |total, c| {
        *total = total.saturating_add(c);
        Some(*total)
    })
}

/// Why an exponential histogram point cannot be turned into buckets.
#[derive(Debug, PartialEq, thiserror::Error)]
enum ExponentialError {
    #[error("scale {0} is outside the OTLP range [-10, 20]")]
    Scale(i32),
    #[error("zero_threshold {0} is not a finite number >= 0")]
    ZeroThreshold(f64),
    #[error("bucket index {index} at scale {scale} has a bound beyond the range of a float")]
    Index {
        side: &'static str,
        index: i64,
        scale: i32,
    },
}

impl ExponentialError {
    /// The data point field at fault.
    fn field(&self) -> &'static str {
        match self {
            Self::Scale(_) => "scale",
            Self::ZeroThreshold(_) => "zero_threshold",
            Self::Index { side, .. } => side,
        }
    }

    fn api(&self, metric: &str) -> ApiError {
        ApiError::bad_request("invalid_otlp")
            .with("metric", metric.to_string())
            .with("field", self.field())
            .with("reason", self.to_string())
    }
}

/// 2^e as a float: 0 below the smallest subnormal, infinite above the largest float.
fn exp2i(e: i64) -> f64 {
    match e {
        1024.. => f64::INFINITY,
        // A normal float: the biased exponent, no mantissa bits.
        -1022..=1023 => f64::from_bits(((e + 1023) as u64) << 52),
        // A subnormal: one mantissa bit.
        -1074..=-1023 => f64::from_bits(1u64 << (e + 1074)),
        _ => 0.0,
    }
}

/// base^k for base = 2^(2^-scale): exact for scale <= 0 (a power of two), within an ulp of
/// exp2 otherwise, split as 2^q * 2^(r / 2^scale) so that whole powers of two stay exact and
/// the exponent never overflows.
fn base_pow(scale: i32, k: i64) -> f64 {
    if scale <= 0 {
        // |k| < 2^33 and the shift is at most 10: no overflow.
        return exp2i(k << -scale);
    }
    let per = 1i64 << scale;
    let (q, r) = (k.div_euclid(per), k.rem_euclid(per));
    (r as f64 / per as f64).exp2() * exp2i(q)
}

/// The buckets of an exponential histogram point as (upper bound, count), in increasing bound
/// order: negative buckets (index i holds [-base^(i+1), -base^i), so its bound is -base^i),
/// the zero bucket (bound `zero_threshold`), positive buckets (index i holds
/// (base^i, base^(i+1)]). A bucket whose smaller magnitude base^i is 0 or infinite is refused
/// (it can hold no float); the positive bucket holding the largest float gets that float as
/// its bound rather than an infinite one. Bounds that come out equal (subnormal rounding, a
/// zero threshold on a bucket bound) are merged, so every `le` is one series.
fn exponential_buckets(
    p: &ExponentialHistogramDataPoint,
) -> Result<Vec<(f64, u64)>, ExponentialError> {
    let scale = p.scale;
    if !(-10..=20).contains(&scale) {
        return Err(ExponentialError::Scale(scale));
    }
    let zero = p.zero_threshold;
    if !zero.is_finite() || zero < 0.0 {
        return Err(ExponentialError::ZeroThreshold(zero));
    }
    // base^i of one bucket, refused when no float lies in it.
    let magnitude = |side: &'static str, b: &Buckets, k: usize| {
        let index = i64::from(b.offset) + k as i64;
        let m = base_pow(scale, index);
        if m == 0.0 || m.is_infinite() {
            return Err(ExponentialError::Index { side, index, scale });
        }
        Ok((index, m))
    };
    let none = Buckets::default();
    let (neg, pos) = (
        p.negative.as_ref().unwrap_or(&none),
        p.positive.as_ref().unwrap_or(&none),
    );
    let mut out = Vec::with_capacity(neg.bucket_counts.len() + pos.bucket_counts.len() + 1);
    // Negative buckets by increasing bound: decreasing index.
    for (k, c) in neg.bucket_counts.iter().enumerate().rev() {
        let (_, m) = magnitude("negative", neg, k)?;
        out.push((-m, *c));
    }
    // `+ 0.0` turns a -0 threshold into 0 (one `le="0"`).
    out.push((zero + 0.0, p.zero_count));
    for (k, c) in pos.bucket_counts.iter().enumerate() {
        let (index, _) = magnitude("positive", pos, k)?;
        out.push((base_pow(scale, index + 1).min(f64::MAX), *c));
    }
    // Already in order unless the zero threshold overlaps buckets; a stable sort keeps it so.
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = kept.1.saturating_add(later.1);
        }
        same
    });
    Ok(out)
}

fn total(counts: impl Iterator<Item = usize>) -> usize {
    counts.fold(0, usize::saturating_add)
}

/// The series `metric` makes of `m` (an upper bound for an exponential histogram, whose equal
/// bounds merge), counted without making them: kept next to it, and checked against it by
/// the tests.
fn series_made(m: &Metric) -> usize {
    let buckets = |b: &Option<Buckets>| b.as_ref().map_or(0, |b| b.bucket_counts.len());
    let sum = |s: Option<f64>| usize::from(s.is_some());
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        // Buckets, sum, count.
        Some(Data::Histogram(h)) => total(
            h.data_points
                .iter()
                .map(|p| p.bucket_counts.len() + sum(p.sum) + 1),
        ),
        Some(Data::Summary(s)) => total(s.data_points.iter().map(|p| p.quantile_values.len() + 2)),
        // Negative buckets, the zero bucket, positive buckets, +Inf, sum, count.
        Some(Data::ExponentialHistogram(e)) => total(
            e.data_points
                .iter()
                .map(|p| buckets(&p.negative) + 1 + buckets(&p.positive) + 1 + sum(p.sum) + 1),
        ),
        None => 0,
    }
}

/// One metric's series.
fn metric(m: &Metric, base: &[Label], out: &mut Vec<TimeSeries>) -> Result<(), ApiError> {
    let name = sanitize(&m.name, true);
    let num = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    };
    let at = |attrs, t_ns| At { base, attrs, t_ns };
    let names = HistogramNames {
        bucket: format!("{name}_bucket"),
        sum: format!("{name}_sum"),
        count: format!("{name}_count"),
    };
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
            for p in &h.data_points {
                // OTLP counts per bucket; Prometheus buckets are cumulative. The last bucket
                // (past the last explicit bound) is `+Inf`.
                let les = (0..p.bucket_counts.len()).map(|i| {
                    p.explicit_bounds
                        .get(i)
                        .map_or("+Inf".to_string(), |b| le(*b))
                });
                let cumulative = les.zip(running(p.bucket_counts.iter().copied()));
                at(&p.attributes, p.time_unix_nano)
                    .histogram(out, &names, cumulative, p.sum, p.count);
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
                a.push(out, &names.sum, None, p.sum);
                a.push(out, &names.count, None, p.count as f64);
            }
        }
        Some(Data::ExponentialHistogram(e)) => {
            for p in &e.data_points {
                let buckets = exponential_buckets(p).map_err(|err| err.api(&name))?;
                let (bounds, counts): (Vec<f64>, Vec<u64>) = buckets.into_iter().unzip();
                // Every observation is at most +Inf: its bucket is the count.
                let cumulative = bounds
                    .into_iter()
                    .map(le)
                    .zip(running(counts))
                    .chain([("+Inf".to_string(), p.count)]);
                at(&p.attributes, p.time_unix_nano)
                    .histogram(out, &names, cumulative, p.sum, p.count);
            }
        }
        None => {}
    }
    Ok(())
}

/// An OTLP metrics export as a batch; refused before it is made when its series would break
/// the per-request limits (each OTLP series holds one sample).
pub fn metrics(body: &[u8], json: bool, cfg: &IngestConfig) -> Result<Batch, ApiError> {
    let req: ExportMetricsServiceRequest = decode(body, json, "ExportMetricsServiceRequest")?;
    let made = total(
        req.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(series_made),
    );
    super::validate::within_limits(made, made, cfg)?;
    let mut batch = Batch::default();
    batch.timeseries.reserve(made);
    for rm in &req.resource_metrics {
        let base = resource_labels(&rm.resource);
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                metric(m, &base, &mut batch.timeseries)?;
            }
        }
    }
    Ok(batch)
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
        let b = metrics(body.to_string().as_bytes(), true, &IngestConfig::default()).unwrap();
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
        assert!(metrics(b"\xff\xff", false, &IngestConfig::default()).is_err());
    }

    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ResourceMetrics, ScopeMetrics,
    };

    fn buckets(offset: i32, counts: &[u64]) -> Option<Buckets> {
        Some(Buckets {
            offset,
            bucket_counts: counts.to_vec(),
        })
    }

    fn point(
        scale: i32,
        zero: (u64, f64),
        neg: Option<Buckets>,
        pos: Option<Buckets>,
    ) -> ExponentialHistogramDataPoint {
        let total = |b: &Option<Buckets>| b.iter().flat_map(|b| &b.bucket_counts).sum::<u64>();
        ExponentialHistogramDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000,
            count: zero.0 + total(&neg) + total(&pos),
            sum: Some(12.5),
            scale,
            zero_count: zero.0,
            zero_threshold: zero.1,
            negative: neg,
            positive: pos,
            ..Default::default()
        }
    }

    fn exponential(points: Vec<ExponentialHistogramDataPoint>) -> Metric {
        Metric {
            name: "rtt.seconds".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: 2,
            })),
            ..Default::default()
        }
    }

    fn request(m: Metric) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![m],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn label<'a>(s: &'a TimeSeries, name: &str) -> Option<&'a str> {
        s.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// An exponential point's series as (name, le, value), through the whole decoder.
    fn converted(p: ExponentialHistogramDataPoint) -> Vec<(String, Option<String>, f64)> {
        let m = exponential(vec![p]);
        let made = series_made(&m);
        let b = metrics(&request(m), false, &IngestConfig::default()).expect("converted");
        assert!(b.timeseries.len() <= made, "series_made is an upper bound");
        b.timeseries
            .iter()
            .map(|s| {
                (
                    label(s, NAME).unwrap_or_default().to_string(),
                    label(s, "le").map(str::to_string),
                    s.samples[0].value,
                )
            })
            .collect()
    }

    /// The `_bucket` series as (le, cumulative count).
    fn les(series: &[(String, Option<String>, f64)]) -> Vec<(String, f64)> {
        series
            .iter()
            .filter(|(n, ..)| n.ends_with("_bucket"))
            .map(|(_, le, v)| (le.clone().expect("le"), *v))
            .collect()
    }

    #[test]
    fn exponential_scale_zero_with_offsets_zero_and_negative_buckets() {
        // base 2: negative index 0 holds [-2, -1), index 1 [-4, -2); positive index 1 holds
        // (2, 4], index 2 (4, 8].
        let p = point(0, (1, 0.0), buckets(0, &[3, 4]), buckets(1, &[1, 2]));
        let series = converted(p);
        let bucket = |le: &str, v: f64| (le.to_string(), v);
        assert_eq!(
            les(&series),
            [
                bucket("-2", 4.0),
                bucket("-1", 7.0),
                bucket("0", 8.0),
                bucket("4", 9.0),
                bucket("8", 11.0),
                bucket("+Inf", 11.0),
            ]
        );
        let rest: Vec<_> = series
            .iter()
            .filter(|(n, ..)| !n.ends_with("_bucket"))
            .collect();
        assert_eq!(
            rest,
            [
                &("rtt_seconds_sum".to_string(), None, 12.5),
                &("rtt_seconds_count".to_string(), None, 11.0)
            ]
        );
        // The explicit histogram's labels: the timestamp, no `le` on sum and count.
        let m = exponential(vec![point(0, (0, 0.0), None, buckets(0, &[1]))]);
        let b = metrics(&request(m), false, &IngestConfig::default()).unwrap();
        assert!(
            b.timeseries
                .iter()
                .all(|s| s.samples[0].timestamp == 1_700_000_000_000)
        );
    }

    #[test]
    fn exponential_positive_scale() {
        // Scale 3: base 2^(1/8). Index 7 holds (2^(7/8), 2], index 8 (2, 2^(9/8)]; index -9
        // (2^(-9/8), 2^-1].
        let p = point(3, (0, 0.0), None, buckets(7, &[1, 2]));
        let got = les(&converted(p));
        assert_eq!(got[0], ("0".to_string(), 0.0));
        assert_eq!(
            got[1],
            ("2".to_string(), 1.0),
            "a whole power of two is exact"
        );
        let b: f64 = got[2].0.parse().unwrap();
        assert!((b - 2f64.powf(9.0 / 8.0)).abs() < 1e-15, "{b}");
        assert_eq!((got[2].1, &got[3]), (3.0, &("+Inf".to_string(), 3.0)));
        let got = les(&converted(point(3, (0, 0.0), None, buckets(-9, &[5]))));
        assert_eq!(got[1], ("0.5".to_string(), 5.0));
        // Scale 1: base √2, and the same bound from the other side.
        let got = les(&converted(point(
            1,
            (0, 0.0),
            buckets(0, &[1]),
            buckets(0, &[1]),
        )));
        let bound = |s: &str| s.parse::<f64>().unwrap();
        assert_eq!(bound(&got[0].0), -1.0);
        assert!((bound(&got[2].0) - 2f64.sqrt()).abs() < 1e-15, "{got:?}");
    }

    #[test]
    fn exponential_negative_scale_and_zero_threshold() {
        // Scale -1: base 4; index 0 holds (1, 4], index 1 (4, 16]; the zero bucket is
        // [-0.5, 0.5].
        let p = point(-1, (2, 0.5), buckets(0, &[1]), buckets(0, &[5, 0, 1]));
        assert_eq!(
            les(&converted(p)),
            [
                ("-1".to_string(), 1.0),
                ("0.5".to_string(), 3.0),
                ("4".to_string(), 8.0),
                ("16".to_string(), 8.0),
                ("64".to_string(), 9.0),
                ("+Inf".to_string(), 9.0),
            ]
        );
        // A zero threshold on a bucket bound: one `le`, the counts merged.
        let p = point(0, (2, 2.0), None, buckets(0, &[1, 1]));
        assert_eq!(
            les(&converted(p)),
            [
                ("2".to_string(), 3.0),
                ("4".to_string(), 4.0),
                ("+Inf".to_string(), 4.0)
            ]
        );
        // A -0 threshold is `le="0"`.
        let got = les(&converted(point(0, (1, -0.0), None, None)));
        assert_eq!(got, [("0".to_string(), 1.0), ("+Inf".to_string(), 1.0)]);
    }

    #[test]
    fn exponential_bounds_stay_finite() {
        // The bucket holding the largest float gets it as its bound, never +Inf.
        for (scale, offset) in [(-10, 0), (0, 1023), (20, (1 << 30) - 1)] {
            let got = les(&converted(point(
                scale,
                (0, 0.0),
                None,
                buckets(offset, &[1]),
            )));
            assert_eq!(got[1].0, le(f64::MAX), "scale {scale}");
        }
        // Past it, or below the smallest float, a bucket holds no float: refused.
        for (scale, offset) in [
            (-10, 1),
            (0, 1024),
            (20, 1 << 30),
            (20, i32::MAX),
            (20, i32::MIN),
            (0, -1075),
        ] {
            let p = point(scale, (0, 0.0), None, buckets(offset, &[1]));
            assert_eq!(
                exponential_buckets(&p),
                Err(ExponentialError::Index {
                    side: "positive",
                    index: i64::from(offset),
                    scale
                })
            );
        }
        let p = point(-10, (0, 0.0), buckets(1, &[1]), None);
        assert!(matches!(
            exponential_buckets(&p),
            Err(ExponentialError::Index {
                side: "negative",
                ..
            })
        ));
        // The smallest subnormal is a bound; rounding that makes bounds equal merges them.
        let got = les(&converted(point(0, (0, 0.0), None, buckets(-1075, &[]))));
        assert_eq!(got.len(), 2);
        let got = les(&converted(point(
            20,
            (0, 0.0),
            None,
            buckets(-1074 << 20, &[1, 1, 1]),
        )));
        assert_eq!(got.last(), Some(&("+Inf".to_string(), 3.0)));
        assert!(got.len() < 5, "equal subnormal bounds merged: {got:?}");
        assert!(exp2i(-1074) > 0.0 && exp2i(-1075) == 0.0 && exp2i(1023).is_finite());
    }

    #[test]
    fn exponential_refusals_name_the_problem() {
        let refused = |p: ExponentialHistogramDataPoint| {
            let e = metrics(
                &request(exponential(vec![p])),
                false,
                &IngestConfig::default(),
            )
            .expect_err("refused");
            (e.status.as_u16(), e.body)
        };
        for scale in [21, -11, i32::MAX] {
            let (status, body) = refused(point(scale, (0, 0.0), None, None));
            assert_eq!(status, 400);
            assert_eq!(
                (
                    body["error"].as_str(),
                    body["metric"].as_str(),
                    body["field"].as_str()
                ),
                (Some("invalid_otlp"), Some("rtt_seconds"), Some("scale"))
            );
            assert!(
                body["reason"].as_str().unwrap().contains("[-10, 20]"),
                "{body:?}"
            );
        }
        for zero in [f64::NAN, f64::INFINITY, -1.0] {
            let (status, body) = refused(point(0, (0, zero), None, None));
            assert_eq!(
                (status, body["field"].as_str()),
                (400, Some("zero_threshold"))
            );
        }
        let (status, body) = refused(point(0, (0, 0.0), None, buckets(i32::MAX, &[1])));
        assert_eq!((status, body["field"].as_str()), (400, Some("positive")));
    }

    #[test]
    fn histogram_series_are_bounded_before_they_are_made() {
        let small = IngestConfig {
            max_series: 10,
            ..IngestConfig::default()
        };
        // 6 positive buckets, zero, +Inf, sum, count: 10 series fit, 11 do not.
        let fits = point(0, (0, 0.0), None, buckets(0, &[1; 6]));
        assert_eq!(
            metrics(&request(exponential(vec![fits])), false, &small)
                .unwrap()
                .timeseries
                .len(),
            10
        );
        let over = point(0, (0, 0.0), buckets(0, &[1]), buckets(0, &[1; 6]));
        let e = metrics(&request(exponential(vec![over])), false, &small).unwrap_err();
        assert_eq!(
            (
                e.status.as_u16(),
                e.code(),
                e.body["limit"].as_u64(),
                e.body["count"].as_u64()
            ),
            (413, "too_many_series", Some(10), Some(11))
        );
        // A few bytes a bucket on the wire: a million empty buckets (1 MB) are refused with
        // the default limits, whatever their scale and offset, before any series is made.
        let huge = point(20, (0, 0.0), None, buckets(i32::MIN, &vec![0; 1_000_000]));
        let e = metrics(
            &request(exponential(vec![huge])),
            false,
            &IngestConfig::default(),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code()), (413, "too_many_series"));
        let fewer_samples = IngestConfig {
            max_samples: 5,
            ..IngestConfig::default()
        };
        let p = point(0, (0, 0.0), None, buckets(0, &[1; 6]));
        let e = metrics(&request(exponential(vec![p])), false, &fewer_samples).unwrap_err();
        assert_eq!(e.code(), "too_many_samples");
        // The explicit histogram is bounded the same way.
        let m = Metric {
            name: "latency".into(),
            data: Some(Data::Histogram(
                opentelemetry_proto::tonic::metrics::v1::Histogram {
                    data_points: vec![
                        opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint {
                            bucket_counts: vec![0; 11],
                            explicit_bounds: (0..10).map(f64::from).collect(),
                            ..Default::default()
                        },
                    ],
                    aggregation_temporality: 2,
                },
            )),
            ..Default::default()
        };
        assert_eq!(series_made(&m), 12);
        let e = metrics(&request(m), false, &small).unwrap_err();
        assert_eq!(
            (e.code(), e.body["count"].as_u64()),
            ("too_many_series", Some(12))
        );
    }

    #[test]
    fn json_exponential_histograms() {
        // OTLP/JSON: 64-bit fields as strings, zero fields left out.
        let body = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "rtt", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
                {"timeUnixNano": "1700000000000000000", "count": "4", "sum": 9.0, "scale": 1,
                 "zeroCount": "1", "positive": {"offset": 2, "bucketCounts": ["2", "1"]},
                 "attributes": [{"key": "host", "value": {"stringValue": "a"}}]},
                {"timeUnixNano": "1700000000000000000"}
            ]}}
        ]}]}]});
        let b = metrics(body.to_string().as_bytes(), true, &IngestConfig::default()).unwrap();
        let got: Vec<(Option<&str>, Option<&str>, f64)> = b
            .timeseries
            .iter()
            .map(|s| (label(s, NAME), label(s, "le"), s.samples[0].value))
            .collect();
        assert_eq!(
            got,
            [
                (Some("rtt_bucket"), Some("0"), 1.0),
                (Some("rtt_bucket"), Some("2.8284271247461903"), 3.0),
                (Some("rtt_bucket"), Some("4"), 4.0),
                (Some("rtt_bucket"), Some("+Inf"), 4.0),
                (Some("rtt_sum"), None, 9.0),
                (Some("rtt_count"), None, 4.0),
                (Some("rtt_bucket"), Some("0"), 0.0),
                (Some("rtt_bucket"), Some("+Inf"), 0.0),
                (Some("rtt_count"), None, 0.0),
            ]
        );
        assert_eq!(label(&b.timeseries[0], "host"), Some("a"));
        assert!(
            b.timeseries
                .iter()
                .all(|s| s.samples[0].timestamp == 1_700_000_000_000)
        );
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
