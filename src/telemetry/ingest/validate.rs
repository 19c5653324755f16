//! Checks a decoded batch against `telemetry.ingest` before anything is stored: label names
//! and sizes, one `__name__` per series, timestamps within the accepted window, and the
//! per-request counts. Labels come out sorted (a series' identity), empty label values are
//! dropped (Prometheus treats them as absent), and NaN and infinite samples (Prometheus
//! staleness markers among them) are skipped and counted: SQLite cannot hold NaN, a bucket
//! holding both infinities would sum to NaN, and the query subset does not use staleness.

use axum::http::StatusCode;

use super::IngestConfig;
use crate::http::error::ApiError;
use crate::telemetry::model::{Batch, Label, NAME};

/// What a valid batch holds (the answer's counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub series: usize,
    pub samples: usize,
    pub lines: usize,
    /// NaN and infinite samples skipped.
    pub dropped: usize,
}

/// The accepted time window, in unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub min_ms: i64,
    pub max_ms: i64,
}

impl Window {
    pub fn around(now_ms: i64, cfg: &IngestConfig) -> Self {
        Self {
            min_ms: now_ms.saturating_sub((cfg.max_age_secs as i64).saturating_mul(1000)),
            max_ms: now_ms.saturating_add((cfg.max_future_secs as i64).saturating_mul(1000)),
        }
    }
}

fn too_large(code: &str, limit: usize, count: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code)
        .with("limit", limit as u64)
        .with("count", count as u64)
}

/// Refuses `series` and `samples` beyond the per-request limits. `check` applies it to a
/// decoded batch; a decoder whose output can be far larger than its input (an OTLP histogram
/// makes a series per bucket) applies it to what it would make, before making it.
pub fn within_limits(series: usize, samples: usize, cfg: &IngestConfig) -> Result<(), ApiError> {
    if series > cfg.max_series {
        return Err(too_large("too_many_series", cfg.max_series, series));
    }
    if samples > cfg.max_samples {
        return Err(too_large("too_many_samples", cfg.max_samples, samples));
    }
    Ok(())
}

/// Validates and normalises `batch` in place.
pub fn check(batch: &mut Batch, cfg: &IngestConfig, w: Window) -> Result<Counts, ApiError> {
    let samples = batch.samples();
    within_limits(batch.timeseries.len(), samples, cfg)?;
    if batch.logs.len() > cfg.max_lines {
        return Err(too_large("too_many_lines", cfg.max_lines, batch.logs.len()));
    }
    let mut dropped = 0;
    for (i, s) in batch.timeseries.iter_mut().enumerate() {
        let at = |e: ApiError| e.with("series", i as u64);
        normalise_labels(&mut s.labels, cfg).map_err(at)?;
        let name = s.labels.iter().find(|l| l.name == NAME);
        match name {
            Some(l) if valid_metric_name(&l.value) => {}
            Some(l) => {
                return Err(at(
                    invalid_labels(NAME, "not a valid metric name").with("value", l.value.clone())
                ));
            }
            None => return Err(at(invalid_labels(NAME, "every series needs a metric name"))),
        }
        for smp in &s.samples {
            if smp.timestamp < w.min_ms || smp.timestamp > w.max_ms {
                return Err(at(out_of_range(smp.timestamp, w)));
            }
        }
        let before = s.samples.len();
        s.samples.retain(|x| x.value.is_finite());
        dropped += before - s.samples.len();
    }
    batch.timeseries.retain(|s| !s.samples.is_empty());
    for (i, line) in batch.logs.iter_mut().enumerate() {
        let at = |e: ApiError| e.with("line", i as u64);
        normalise_labels(&mut line.labels, cfg).map_err(at)?;
        let ms = line.ts_ns.div_euclid(1_000_000);
        if ms < w.min_ms || ms > w.max_ms {
            return Err(at(out_of_range(ms, w)));
        }
        if line.message.len() > cfg.max_line_bytes {
            return Err(at(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "line_too_long",
            )
            .with("limit_bytes", cfg.max_line_bytes as u64)));
        }
        if line.service.len() > cfg.max_label_value_bytes || line.level.len() > 64 {
            return Err(at(invalid_labels("service", "service or level too long")));
        }
        // What is accepted must be storable by every writer: a PostgreSQL TEXT column refuses
        // NUL, and a refused row would stall the telemetry group for every tenant. The JSON
        // formats are refused at the edge already; OTLP protobuf reaches here.
        for (field, text) in [
            ("service", &line.service),
            ("level", &line.level),
            ("message", &line.message),
        ] {
            if text.contains('\0') {
                return Err(at(ApiError::bad_request("invalid_line")
                    .with("field", field)
                    .with("reason", "holds a NUL character")));
            }
        }
    }
    Ok(Counts {
        series: batch.timeseries.len(),
        samples: samples - dropped,
        lines: batch.logs.len(),
        dropped,
    })
}

fn out_of_range(ms: i64, w: Window) -> ApiError {
    ApiError::bad_request("timestamp_out_of_range")
        .with("timestamp_ms", ms)
        .with("min_ms", w.min_ms)
        .with("max_ms", w.max_ms)
        .with(
            "reason",
            "outside telemetry.ingest.max_age_secs / max_future_secs of now",
        )
}

fn invalid_labels(label: &str, reason: &str) -> ApiError {
    ApiError::bad_request("invalid_labels")
        .with("label", label.to_string())
        .with("reason", reason.to_string())
}

/// Sorts, drops empty values, and refuses bad names, duplicates and oversized labels.
fn normalise_labels(labels: &mut Vec<Label>, cfg: &IngestConfig) -> Result<(), ApiError> {
    labels.retain(|l| !l.value.is_empty());
    if labels.len() > cfg.max_labels {
        return Err(ApiError::bad_request("invalid_labels")
            .with("reason", "too many labels")
            .with("limit", cfg.max_labels as u64)
            .with("count", labels.len() as u64));
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, l) in labels.iter().enumerate() {
        if !valid_label_name(&l.name) {
            return Err(invalid_labels(
                &l.name,
                "label names match [a-zA-Z_][a-zA-Z0-9_]*",
            ));
        }
        if l.name.len() > cfg.max_label_name_bytes {
            return Err(invalid_labels(&l.name, "label name too long"));
        }
        if l.value.len() > cfg.max_label_value_bytes {
            return Err(invalid_labels(&l.name, "label value too long"));
        }
        if l.value.contains('\0') {
            return Err(invalid_labels(&l.name, "label value holds a NUL character"));
        }
        if i > 0 && labels[i - 1].name == l.name {
            return Err(invalid_labels(&l.name, "label given twice"));
        }
    }
    Ok(())
}

pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::model::{Sample, TimeSeries};

    fn l(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn one(labels: Vec<Label>, t: i64, v: f64) -> Batch {
        Batch {
            timeseries: vec![TimeSeries {
                labels,
                samples: vec![Sample {
                    value: v,
                    timestamp: t,
                }],
            }],
            logs: vec![],
        }
    }

    const W: Window = Window {
        min_ms: 1_000,
        max_ms: 2_000,
    };

    #[test]
    fn sorts_labels_and_skips_nan() {
        let cfg = IngestConfig::default();
        let mut b = one(
            vec![l("job", "a"), l(NAME, "up"), l("empty", "")],
            1_500,
            1.0,
        );
        for (value, timestamp) in [
            (f64::NAN, 1_600),
            (f64::INFINITY, 1_700),
            (f64::NEG_INFINITY, 1_800),
        ] {
            b.timeseries[0].samples.push(Sample { value, timestamp });
        }
        let c = check(&mut b, &cfg, W).expect("valid");
        assert_eq!(b.timeseries[0].labels, vec![l(NAME, "up"), l("job", "a")]);
        assert_eq!((c.series, c.samples, c.dropped), (1, 1, 3));
    }

    #[test]
    fn refuses_what_cannot_be_stored() {
        let cfg = IngestConfig::default();
        let code = |mut b: Batch| check(&mut b, &cfg, W).unwrap_err().code().to_string();
        assert_eq!(code(one(vec![l("job", "a")], 1_500, 1.0)), "invalid_labels");
        assert_eq!(
            code(one(vec![l(NAME, "1up")], 1_500, 1.0)),
            "invalid_labels"
        );
        assert_eq!(
            code(one(vec![l(NAME, "up"), l("a-b", "x")], 1_500, 1.0)),
            "invalid_labels"
        );
        assert_eq!(
            code(one(
                vec![l(NAME, "up"), l("a", "x"), l("a", "y")],
                1_500,
                1.0
            )),
            "invalid_labels"
        );
        assert_eq!(
            code(one(vec![l(NAME, "up")], 2_001, 1.0)),
            "timestamp_out_of_range"
        );
        for (service, level, message) in [
            ("a\0", "info", "m"),
            ("a", "in\0fo", "m"),
            ("a", "info", "m\0"),
        ] {
            let mut b = Batch {
                timeseries: vec![],
                logs: vec![crate::telemetry::model::LogLine {
                    ts_ns: 1_500_000_000,
                    service: service.into(),
                    level: level.into(),
                    message: message.into(),
                    labels: vec![],
                    attributes: String::new(),
                }],
            };
            assert_eq!(check(&mut b, &cfg, W).unwrap_err().code(), "invalid_line");
        }
        let small = IngestConfig {
            max_samples: 0,
            ..IngestConfig::default()
        };
        let mut b = one(vec![l(NAME, "up")], 1_500, 1.0);
        assert_eq!(
            check(&mut b, &small, W).unwrap_err().code(),
            "too_many_samples"
        );
    }
}
