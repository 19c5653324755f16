//! The canonical telemetry batch every ingest format is turned into, and the one thing the
//! telemetry writers read. Its metric half is Prometheus remote write 1.0 itself (`TimeSeries`
//! at tag 1, as in `WriteRequest`), so a remote-write body decodes straight into a `Batch`;
//! log lines sit at tag 10. It travels protobuf-encoded inside one outbox event per accepted
//! request (`internal.telemetry.batches`), or in the object store when large (a claim check).

use std::collections::BTreeMap;

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at a unix time in milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.TimeSeries` (exemplars and native histograms, tags 3 and 4, are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// One log line. `labels` are sorted by name; `attributes` is a JSON object or empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogLine {
    /// Unix nanoseconds.
    #[prost(int64, tag = "1")]
    pub ts_ns: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    pub level: String,
    #[prost(string, tag = "4")]
    pub message: String,
    #[prost(message, repeated, tag = "5")]
    pub labels: Vec<Label>,
    #[prost(string, tag = "6")]
    pub attributes: String,
}

/// `prometheus.WriteRequest` plus log lines. Metadata (tag 3) is not kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "10")]
    pub logs: Vec<LogLine>,
}

impl Batch {
    pub fn samples(&self) -> usize {
        self.timeseries.iter().map(|s| s.samples.len()).sum()
    }
}

/// The metric name label.
pub const NAME: &str = "__name__";

/// A series' identity within an org: the first 8 bytes of SHA-256 over its sorted labels
/// (name and value, each NUL-terminated). The labels must already be sorted by name.
pub fn series_id(labels: &[Label]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for l in labels {
        h.update(l.name.as_bytes());
        h.update([0]);
        h.update(l.value.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// A log line's identity within an org (as Loki's: the same line at the same time in the
/// same stream is one line), so a retried request stores nothing twice.
pub fn line_id(line: &LogLine) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(line.ts_ns.to_be_bytes());
    for part in [&line.service, &line.level, &line.message, &line.attributes] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for l in &line.labels {
        h.update(l.name.as_bytes());
        h.update([0]);
        h.update(l.value.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// Labels as a JSON object (`{"__name__": "up", "job": "x"}`), the stored form.
pub fn labels_json(labels: &[Label]) -> String {
    let m: BTreeMap<&str, &str> = labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    serde_json::to_string(&m).unwrap_or_else(|_| "{}".into())
}

/// The metric name of sorted labels ("" when missing).
pub fn metric_name(labels: &[Label]) -> &str {
    labels
        .iter()
        .find(|l| l.name == NAME)
        .map(|l| l.value.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn series_identity_depends_on_every_label() {
        let a = vec![label(NAME, "up"), label("job", "a")];
        let b = vec![label(NAME, "up"), label("job", "b")];
        // "ab" + "" must differ from "a" + "b": the separators keep fields apart.
        let c = vec![label("ab", ""), label("x", "y")];
        let d = vec![label("a", "b"), label("x", "y")];
        assert_eq!(series_id(&a), series_id(&a.clone()));
        assert_ne!(series_id(&a), series_id(&b));
        assert_ne!(series_id(&c), series_id(&d));
        assert_eq!(metric_name(&a), "up");
        assert_eq!(labels_json(&a), r#"{"__name__":"up","job":"a"}"#);
    }

    #[test]
    fn a_write_request_is_a_batch() {
        let b = Batch {
            timeseries: vec![TimeSeries {
                labels: vec![label(NAME, "up")],
                samples: vec![Sample {
                    value: f64::INFINITY,
                    timestamp: 1_700_000_000_000,
                }],
            }],
            logs: vec![],
        };
        let back = Batch::decode(b.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back, b);
        assert_eq!(back.samples(), 1);
    }
}
