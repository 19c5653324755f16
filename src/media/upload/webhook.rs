//! `POST /webhooks/storage`: bucket notifications in MinIO's (= S3's) event format —
//! `{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key", "Records": [{"eventName": …,
//! "s3": {"bucket": {"name": …}, "object": {"key": <url-encoded>, "size": …}}}]}`.
//! Authenticated by `media.storage_webhook_secret`, either as MinIO's `auth_token`
//! (`Authorization: Bearer <secret>`) or as a Standard Webhooks signature made with it.
//! Created objects under `uploads/` become `upload.received` events; 200 only once they are
//! durable, so the sender retries otherwise.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::detect::{self, Source};
use crate::app::AppContext;
use crate::gateway::ingest::{Body, header_str, parse_json};
use crate::gateway::webhooks::{self, Verify};
use crate::http::error::ApiError;
use crate::objects::Kind;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(receive))
}

#[derive(Debug, Deserialize)]
pub struct Notification {
    #[serde(rename = "Records", default)]
    pub records: Vec<Record>,
}

#[derive(Debug, Deserialize)]
pub struct Record {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub s3: S3Entity,
}

#[derive(Debug, Deserialize)]
pub struct S3Entity {
    pub bucket: Bucket,
    pub object: Object,
}

#[derive(Debug, Deserialize)]
pub struct Bucket {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct Object {
    pub key: String,
    #[serde(default)]
    pub size: u64,
}

/// Object keys in notifications are URL-encoded the way Go's `url.QueryEscape` does
/// (space as `+`).
pub fn decode_key(k: &str) -> Option<String> {
    let plus = k.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn authorized(secret: &str, headers: &HeaderMap, body: &[u8], tolerance: u64) -> bool {
    if let Some(token) = header_str(headers, "authorization") {
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .unwrap_or(token);
        return bool::from(token.as_bytes().ct_eq(secret.as_bytes()));
    }
    webhooks::verify(
        secret.as_bytes(),
        headers,
        body,
        tolerance,
        chrono::Utc::now().timestamp(),
    ) == Verify::Ok
}

crate::doc_schema!(
    /// How many notified objects were uploads, and how many were ignored.
    StorageNotified = {"type": "object", "required": ["uploads", "ignored"], "properties": {
        "uploads": {"type": "integer", "minimum": 0}, "ignored": {"type": "integer", "minimum": 0}}}
);

#[utoipa::path(
    post,
    path = "/webhooks/storage",
    tag = "webhooks",
    operation_id = "storage_notification",
    summary = "Bucket notifications (S3/MinIO ObjectCreated)",
    request_body(content = Object, description = "An S3 event notification: `{\"Records\": [...]}`"),
    responses(
        (status = 200, description = "How many objects were uploads, how many were ignored", body = StorageNotified),
        (status = 400, description = "Malformed JSON or not a notification (`invalid_notification`)", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "Neither the bearer secret nor a webhook signature made with it (`invalid_webhook_credentials`)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "media.storage_webhook_secret is not set (`storage_webhook_not_configured`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("webhook_id" = [], "webhook_timestamp" = [], "webhook_signature" = []))
)]
async fn receive(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(secret) = &ctx.config.media.storage_webhook_secret else {
        return Err(ApiError::not_found("storage_webhook_not_configured").with(
            "reason",
            "set media.storage_webhook_secret to receive bucket notifications",
        ));
    };
    if !authorized(
        secret.expose(),
        &headers,
        &body,
        ctx.config.gateway.webhook_tolerance_secs,
    ) {
        return Err(ApiError::unauthorized("invalid_webhook_credentials").with(
            "reason",
            "send Authorization: Bearer <media.storage_webhook_secret> or a webhook-signature made with it",
        ));
    }
    let doc = parse_json(&body)?;
    if let Some(field) = crate::http::json::find_nul(&doc) {
        return Err(ApiError::bad_request("invalid_notification")
            .with("field", field)
            .with("reason", crate::schema::json::NUL_REASON));
    }
    let n: Notification = serde_json::from_value(doc)
        .map_err(|e| ApiError::bad_request("invalid_notification").with("reason", e.to_string()))?;
    let bucket = match ctx.objects.kind() {
        Kind::Local => None,
        _ => ctx
            .config
            .objects
            .url
            .split_once("://")
            .map(|(_, b)| b.trim_end_matches('/').to_string()),
    };
    let mut created = Vec::new();
    let mut ignored = 0usize;
    for r in &n.records {
        let is_created = r.event_name.starts_with("s3:ObjectCreated:")
            || r.event_name.starts_with("ObjectCreated:");
        let ours = bucket.as_deref().is_none_or(|b| b == r.s3.bucket.name);
        match decode_key(&r.s3.object.key) {
            Some(key) if is_created && ours => created.push((key, r.s3.object.size)),
            Some(_) => ignored += 1,
            None => {
                return Err(ApiError::bad_request("invalid_notification")
                    .with("reason", "an object key is not valid URL-encoded UTF-8"));
            }
        }
    }
    let matched = detect::objects_created(&ctx, &created, Source::Webhook).await?;
    Ok(Json(json!({
        "uploads": matched,
        "ignored": ignored + (created.len() - matched),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_query_unescaped() {
        assert_eq!(
            decode_key("uploads%2Falice%2Fr1%2Fmy+cat+%2B1.png").as_deref(),
            Some("uploads/alice/r1/my cat +1.png")
        );
    }

    #[test]
    fn minio_event_parses() {
        let doc = r#"{"EventName":"s3:ObjectCreated:Put","Key":"media/uploads/a/r/x.png",
          "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
          "eventTime":"2026-01-01T00:00:00.000Z","eventName":"s3:ObjectCreated:Put",
          "userIdentity":{"principalId":"minio"},"requestParameters":{},"responseElements":{},
          "s3":{"s3SchemaVersion":"1.0","configurationId":"Config",
          "bucket":{"name":"media","ownerIdentity":{"principalId":"minio"},"arn":"arn:aws:s3:::media"},
          "object":{"key":"uploads%2Fa%2Fr%2Fx.png","size":5,"eTag":"e","contentType":"image/png","sequencer":"1"}},
          "source":{"host":"","port":"","userAgent":""}}]}"#;
        let n: Notification = serde_json::from_str(doc).unwrap();
        assert_eq!(n.records.len(), 1);
        assert_eq!(n.records[0].s3.bucket.name, "media");
        assert_eq!(n.records[0].s3.object.size, 5);
        assert_eq!(
            decode_key(&n.records[0].s3.object.key).as_deref(),
            Some("uploads/a/r/x.png")
        );
    }
}
