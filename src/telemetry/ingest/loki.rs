//! Loki's protobuf push (`Content-Type: application/x-protobuf`): a snappy block holding a
//! `logproto.PushRequest`. Each stream's label string (`{job="api", level="error"}`, the
//! PromQL selector syntax) is read with the PromQL parser the query side already uses, and the
//! request is turned into the JSON push form and handed to the JSON path (`formats::loki`), so
//! both encodings share one set of rules (service and level labels, structured metadata as
//! attributes) and one validation.

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use serde_json::{Map, Value, json};

use super::decode;
use crate::http::error::ApiError;
use crate::telemetry::model::Batch;

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `logproto.LabelPairAdapter` (structured metadata).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

fn invalid(index: usize, field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_telemetry")
        .with("index", index as u64)
        .with("field", field.to_string())
        .with("reason", reason.into())
}

/// A stream's label string as a JSON object; only `=` matchers are labels.
fn stream_labels(s: &str, i: usize) -> Result<Value, ApiError> {
    let bad = |r: String| invalid(i, "labels", format!("{s:?} is not a label set: {r}"));
    let vs = match parser::parse(s).map_err(bad)? {
        Expr::VectorSelector(vs) if vs.name.is_none() && vs.matchers.or_matchers.is_empty() => vs,
        _ => return Err(bad("expected {name=\"value\", …}".into())),
    };
    let mut out = Map::new();
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(bad(format!("{} is not name=\"value\"", m.name)));
        }
        out.insert(m.name, Value::String(m.value));
    }
    Ok(Value::Object(out))
}

/// One entry as the JSON form's `[ns, line, {metadata}?]`.
fn entry(e: &EntryAdapter, i: usize) -> Result<Value, ApiError> {
    let ts = e.timestamp.clone().unwrap_or_default();
    let ns = ts
        .seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(ts.nanos)))
        .ok_or_else(|| invalid(i, "timestamp", "out of range"))?;
    if e.structured_metadata.is_empty() {
        return Ok(json!([ns.to_string(), e.line]));
    }
    let meta: Map<String, Value> = e
        .structured_metadata
        .iter()
        .map(|p| (p.name.clone(), Value::String(p.value.clone())))
        .collect();
    Ok(json!([ns.to_string(), e.line, meta]))
}

/// A protobuf push body (snappy block) as a batch; `limit` bounds the decompressed size.
pub fn push(body: &[u8], limit: usize) -> Result<Batch, ApiError> {
    use prost::Message;
    let raw = decode::snappy(body, limit)?;
    let req = PushRequest::decode(raw.as_slice()).map_err(|e| {
        ApiError::bad_request("invalid_protobuf")
            .with("reason", format!("not a logproto.PushRequest: {e}"))
    })?;
    let mut streams = Vec::with_capacity(req.streams.len());
    for (i, s) in req.streams.iter().enumerate() {
        let values: Result<Vec<Value>, ApiError> = s.entries.iter().map(|e| entry(e, i)).collect();
        streams.push(json!({"stream": stream_labels(&s.labels, i)?, "values": values?}));
    }
    super::formats::loki(json!({ "streams": streams }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn body(req: &PushRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn a_push_request_becomes_log_lines() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="api", level="ERROR", note="a \"quoted\" value"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5,
                    }),
                    line: "boom".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let b = push(&body(&req), 1 << 20).unwrap();
        let l = &b.logs[0];
        assert_eq!(
            (l.ts_ns, l.service.as_str()),
            (1_700_000_000_000_000_005, "api")
        );
        assert_eq!((l.level.as_str(), l.message.as_str()), ("error", "boom"));
        assert!(
            l.labels
                .iter()
                .any(|x| x.name == "note" && x.value == "a \"quoted\" value")
        );
        assert_eq!(l.attributes, r#"{"trace_id":"abc"}"#);
    }

    #[test]
    fn bad_bodies_are_named() {
        assert_eq!(
            push(b"\xff\xff\xff", 1 << 20).unwrap_err().code(),
            "invalid_snappy"
        );
        let junk = snap::raw::Encoder::new().compress_vec(b"\x0a\xff").unwrap();
        assert_eq!(push(&junk, 1 << 20).unwrap_err().code(), "invalid_protobuf");
        for labels in ["job=api", r#"{job=~"a.*"}"#, r#"up{job="a"}"#, ""] {
            let req = PushRequest {
                streams: vec![StreamAdapter {
                    labels: labels.into(),
                    entries: vec![],
                    hash: 0,
                }],
            };
            let e = push(&body(&req), 1 << 20).unwrap_err();
            assert_eq!(
                (e.code(), &e.body["field"]),
                ("invalid_telemetry", &json!("labels")),
                "{labels}"
            );
        }
    }
}
