//! Building events: a UUIDv7 id, the Confluent-framed Avro payload, and the envelope headers
//! of the CloudEvents Kafka binding (`ce_id`, `ce_type`, `ce_source`, `ce_time`,
//! `ce_subject`) plus `traceparent`, `correlation_id` and `idempotency_key`.

use serde_json::Value as Json;

use crate::outbox::{Headers, NewEvent};
use crate::schema::{SchemaCatalog, SchemaError};
use crate::store::now_micros;

/// Envelope facts that do not come from the payload.
#[derive(Debug, Clone, Default)]
pub struct EventMeta {
    /// `ce_source`, e.g. `/gateway/routes/message`.
    pub source: String,
    /// W3C trace context to continue; a new trace is started when absent or malformed.
    pub traceparent: Option<String>,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Extra headers to carry (e.g. `principal`).
    pub extra: Headers,
}

/// Whether `s` is a well-formed W3C `traceparent` (version 00).
pub fn valid_traceparent(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    p.len() == 4
        && p[0] == "00"
        && p[1].len() == 32
        && p[2].len() == 16
        && p[3].len() == 2
        && p[1..].iter().all(|x| {
            x.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        && p[1] != "00000000000000000000000000000000"
        && p[2] != "0000000000000000"
}

/// A fresh sampled trace context.
pub fn new_traceparent() -> String {
    format!(
        "00-{}-{}-01",
        hex::encode(rand::random::<[u8; 16]>()),
        hex::encode(rand::random::<[u8; 8]>())
    )
}

/// Validates `payload` against `topic`'s schema and builds the event.
pub fn build(
    catalog: &SchemaCatalog,
    topic: &str,
    key: &str,
    payload: &Json,
    meta: &EventMeta,
) -> Result<NewEvent, SchemaError> {
    let (ts, enc) = catalog.encode_json(topic, payload)?;
    let event_id = uuid::Uuid::now_v7().to_string();
    let created_at = now_micros();
    let mut headers = meta.extra.clone();
    headers.insert("ce_specversion".into(), "1.0".into());
    headers.insert("ce_id".into(), event_id.clone());
    headers.insert("ce_type".into(), ts.event_type.clone());
    headers.insert("ce_source".into(), meta.source.clone());
    headers.insert("ce_time".into(), rfc3339_micros(created_at));
    headers.insert("ce_subject".into(), key.to_string());
    headers.insert(
        "ce_dataschema".into(),
        format!("/subjects/{}/versions/{}", ts.subject, ts.version),
    );
    headers.insert("content-type".into(), "application/avro".into());
    let tp = meta
        .traceparent
        .as_deref()
        .filter(|t| valid_traceparent(t))
        .map(str::to_string)
        .unwrap_or_else(new_traceparent);
    headers.insert("traceparent".into(), tp);
    headers.insert(
        "correlation_id".into(),
        meta.correlation_id
            .clone()
            .unwrap_or_else(|| event_id.clone()),
    );
    if let Some(k) = &meta.idempotency_key {
        headers.insert("idempotency_key".into(), k.clone());
    }
    Ok(NewEvent {
        event_id,
        topic: topic.to_string(),
        key: key.to_string(),
        event_type: ts.event_type.clone(),
        schema_id: i64::from(enc.schema_id),
        payload: enc.bytes,
        headers,
        created_at,
    })
}

/// Kafka framing around one record, at most: the record batch header (61 bytes) and the
/// record's own varints (length, attributes, timestamp and offset deltas, key and value
/// lengths, header count).
const RECORD_FRAMING: usize = 61 + 36;

/// The most bytes `ev` takes as one Kafka record: key + value + headers (each with its two
/// length varints) + framing. This is what librdkafka's `message.max.bytes` and the broker's
/// limit apply to, so the gateway refuses an event above `log.max_message_bytes` rather than
/// leaving the relay an event it can never send.
pub fn record_size(ev: &NewEvent) -> usize {
    let headers: usize = ev.headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    RECORD_FRAMING + ev.key.len() + ev.payload.len() + headers
}

pub fn rfc3339_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The trace context for work caused by an event: same trace, a new span id.
pub fn child_traceparent(parent: &str) -> String {
    if valid_traceparent(parent) {
        let trace = &parent[3..35];
        let flags = &parent[53..55];
        format!(
            "00-{trace}-{}-{flags}",
            hex::encode(rand::random::<[u8; 8]>())
        )
    } else {
        new_traceparent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_size_counts_key_value_headers_and_framing() {
        let mut headers = Headers::new();
        headers.insert("ce_id".into(), "abc".into());
        let ev = NewEvent {
            event_id: "abc".into(),
            topic: "t".into(),
            key: "k1".into(),
            event_type: "t".into(),
            schema_id: 1,
            payload: vec![0; 100],
            headers,
            created_at: 0,
        };
        assert_eq!(record_size(&ev), RECORD_FRAMING + 2 + 100 + (5 + 3 + 10));
    }

    #[test]
    fn traceparent_validation() {
        assert!(valid_traceparent(&new_traceparent()));
        assert!(!valid_traceparent("00-abc-def-01"));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
    }
}
