//! Signed webhooks, `POST /webhooks/{name}`, verified the Standard Webhooks way: headers
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,<base64>`, several may be
//! given), HMAC-SHA256 over `{id}.{timestamp}.{body}`. The id is signed too, so a captured
//! request cannot be replayed under a new id; a seen id is refused (409), a timestamp outside
//! the tolerance is refused (401), and signatures are compared in constant time.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::auth::{Principal, PrincipalKind};
use super::ingest::{Body, commit, header_str, parse_json};
use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::http::error::ApiError;
use crate::outbox::Guard;

/// Most bytes of a `webhook-id`.
pub const MAX_WEBHOOK_ID: usize = 255;

/// The base64 HMAC-SHA256 signature of a message.
pub fn sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verify {
    Ok,
    Missing(&'static str),
    BadTimestamp,
    OutOfTolerance,
    BadSignature,
}

pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    tolerance_secs: u64,
    now: i64,
) -> Verify {
    let Some(id) = header_str(headers, "webhook-id") else {
        return Verify::Missing("webhook-id");
    };
    let Some(ts) = header_str(headers, "webhook-timestamp") else {
        return Verify::Missing("webhook-timestamp");
    };
    let Some(sigs) = header_str(headers, "webhook-signature") else {
        return Verify::Missing("webhook-signature");
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return Verify::BadTimestamp;
    };
    if (now - ts).unsigned_abs() > tolerance_secs {
        return Verify::OutOfTolerance;
    }
    let expected = sign(secret, id, ts, body);
    let ok = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .fold(false, |acc, s| {
            acc | bool::from(s.as_bytes().ct_eq(expected.as_bytes()))
        });
    if ok { Verify::Ok } else { Verify::BadSignature }
}

/// Receives a signed webhook and stores it as an event of the webhook's topic.
#[utoipa::path(
    post,
    path = "/webhooks/{name}",
    tag = "webhooks",
    operation_id = "receive_webhook",
    summary = "Receive a signed webhook (Standard Webhooks)",
    params(("name" = String, Path, description = "A webhook of routes.yaml")),
    request_body(content = Object, description = "The payload, as the webhook's topic schema describes it"),
    responses(
        (status = 202, description = "Stored durably", body = super::ingest::Accepted),
        (status = 400, description = "Malformed JSON, a payload that does not fit, or a webhook-id over 255 bytes", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "A signature header is missing (`missing_signature`), the timestamp is unreadable or outside the tolerance, or the signature is wrong", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such webhook (`unknown_webhook`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "This webhook-id was already accepted (`replayed_message`)", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "The body or the encoded event is too large", body = crate::http::openapi::ErrorBody),
    ),
    security(("webhook_id" = [], "webhook_timestamp" = [], "webhook_signature" = []))
)]
pub async fn receive(
    State(ctx): State<AppContext>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let table = ctx.routes.current();
    let hook = table
        .webhooks
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("unknown_webhook").with("webhook", name.clone()))?;
    let now = chrono::Utc::now().timestamp();
    match verify(
        &hook.secret,
        &headers,
        &body,
        ctx.config.gateway.webhook_tolerance_secs,
        now,
    ) {
        Verify::Ok => {}
        Verify::Missing(h) => {
            return Err(ApiError::unauthorized("missing_signature").with("header", h));
        }
        Verify::BadTimestamp => return Err(ApiError::unauthorized("invalid_timestamp")),
        Verify::OutOfTolerance => {
            return Err(ApiError::unauthorized("timestamp_out_of_tolerance")
                .with("tolerance_secs", ctx.config.gateway.webhook_tolerance_secs));
        }
        Verify::BadSignature => return Err(ApiError::unauthorized("invalid_signature")),
    }
    let principal = Principal {
        id: format!("webhook:{name}"),
        kind: PrincipalKind::Webhook,
        roles: Vec::new(),
        scopes: Vec::new(),
        admin: false,
        email: None,
    };
    ctx.rate_limiter.check(&principal)?;
    let msg_id = header_str(&headers, "webhook-id")
        .unwrap_or_default()
        .to_string();
    // The id is a key of the store's replay table, whose index holds a few KB per entry.
    if msg_id.len() > MAX_WEBHOOK_ID {
        return Err(ApiError::bad_request("invalid_webhook_id")
            .with("reason", format!("longer than {MAX_WEBHOOK_ID} bytes")));
    }
    let payload = parse_json(&body)?;
    let key = payload
        .get(&hook.key_field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| msg_id.clone());
    let mut extra = crate::outbox::Headers::new();
    extra.insert("principal".into(), principal.id.clone());
    extra.insert("webhook_id".into(), msg_id.clone());
    let span = super::ingest::publish_span(&ctx, &hook.topic, 1);
    let meta = EventMeta {
        source: format!("/webhooks/{name}"),
        traceparent: super::ingest::traceparent_for(&span, &headers),
        correlation_id: Some(msg_id.clone()),
        idempotency_key: None,
        extra,
    };
    let ev = events::build(&ctx.schemas, &hook.topic, &key, &payload, &meta)
        .map_err(|e| super::ingest::schema_error(e, "invalid_event", None))?;
    let response = json!({ "event_id": ev.event_id, "topic": hook.topic });
    let guard = Guard::WebhookMessage {
        webhook: name,
        msg_id,
    };
    commit(&ctx, &hook.topic, vec![ev], Some(guard), response)
        .instrument(span)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn verifies_signatures_and_time() {
        let secret = b"0123456789abcdef0123";
        let sig = format!("v1,{}", sign(secret, "m1", 1000, b"{}"));
        assert_eq!(
            verify(secret, &headers("m1", 1000, &sig), b"{}", 300, 1100),
            Verify::Ok
        );
        assert_eq!(
            verify(secret, &headers("m1", 1000, &sig), b"{ }", 300, 1100),
            Verify::BadSignature
        );
        assert_eq!(
            verify(secret, &headers("m2", 1000, &sig), b"{}", 300, 1100),
            Verify::BadSignature
        );
        assert_eq!(
            verify(secret, &headers("m1", 1000, &sig), b"{}", 300, 1400),
            Verify::OutOfTolerance
        );
        let multi = format!("v1,bm9wZQ== {sig}");
        assert_eq!(
            verify(secret, &headers("m1", 1000, &multi), b"{}", 300, 1000),
            Verify::Ok
        );
    }
}
