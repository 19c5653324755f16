//! `PUT/GET /blobs/{key}`: the local backend's stand-in for S3 presigned URLs. A request
//! must carry a valid substrate signature (`local.rs`) for its method, before the expiry, and
//! a PUT must send exactly the signed length and content type. A PUT URL uploads once
//! (`claims.rs`: 409 `upload_url_used` after that), and not at all once its upload saga is over
//! (410 `upload_closed`). The body streams to the store (atomically: the object appears whole
//! or not at all); a finished upload is reported to the media saga like a bucket notification
//! would be.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::claims::{self, Claim, Held};
use super::local::{BlobQuery, Denied, Grant};
use super::{Objects, ObjectsError};
use crate::app::AppContext;
use crate::http::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new().routes(routes!(put_blob, get_blob))
}

crate::doc_schema!(
    /// A stored upload.
    Stored = {"type": "object", "required": ["key", "size"], "properties": {
        "key": {"type": "string"}, "size": {"type": "integer", "minimum": 0}}}
);

fn denied(d: Denied) -> ApiError {
    match d {
        Denied::Malformed(field) => {
            ApiError::new(StatusCode::FORBIDDEN, "invalid_url").with("field", field)
        }
        Denied::BadSignature => ApiError::new(StatusCode::FORBIDDEN, "invalid_signature"),
        Denied::WrongMethod => ApiError::new(StatusCode::FORBIDDEN, "wrong_method")
            .with("reason", "the URL was signed for another method"),
        Denied::Expired => ApiError::new(StatusCode::FORBIDDEN, "url_expired"),
    }
}

impl From<ObjectsError> for ApiError {
    fn from(e: ObjectsError) -> Self {
        match e {
            ObjectsError::InvalidKey(k) => ApiError::bad_request("invalid_key").with("key", k),
            ObjectsError::NotFound(_) => ApiError::not_found("not_found"),
            other => {
                tracing::error!(error = %other, "object storage error");
                ApiError::unavailable("object storage unavailable")
            }
        }
    }
}

/// Verifies the signature for this request, or says why not.
fn authorize(
    ctx: &AppContext,
    method: &Method,
    key: &str,
    q: Result<Query<BlobQuery>, QueryRejection>,
) -> Result<Grant, ApiError> {
    let signer = ctx.objects.blob_signer().ok_or_else(|| {
        ApiError::not_found("blob_endpoint_disabled").with(
            "reason",
            "objects are not stored locally; use the presigned URL",
        )
    })?;
    let Ok(Query(q)) = q else {
        return Err(denied(Denied::Malformed("query")));
    };
    let now = chrono::Utc::now().timestamp();
    signer.verify(method.as_str(), key, &q, now).map_err(denied)
}

/// The media type part of a Content-Type header, lowercased.
fn media_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Checks the request's length and content type against what the URL was signed for; returns
/// the most bytes the body may have.
fn check_headers(grant: &Grant, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let sent_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(expected) = grant.length {
        match sent_len {
            None => {
                return Err(
                    ApiError::new(StatusCode::LENGTH_REQUIRED, "length_required")
                        .with("expected_length", expected),
                );
            }
            Some(n) if n != expected => {
                return Err(ApiError::bad_request("content_length_mismatch")
                    .with("expected_length", expected)
                    .with("content_length", n));
            }
            Some(_) => {}
        }
    }
    if let Some(expected) = &grant.content_type {
        let sent = media_type(headers);
        if sent.as_deref() != Some(expected.to_ascii_lowercase().as_str()) {
            return Err(
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type_mismatch")
                    .with("expected_content_type", expected.clone())
                    .with("content_type", sent.unwrap_or_default()),
            );
        }
    }
    Ok(grant.length.or(sent_len))
}

/// Takes the URL for this request, or says why it cannot be used.
async fn claim_url(ctx: &AppContext, grant: &Grant, key: &str) -> Result<Held, ApiError> {
    if let Some(state) = crate::media::upload::detect::upload_closed(ctx, key).await? {
        return Err(ApiError::new(StatusCode::GONE, "upload_closed")
            .with("state", state)
            .with("reason", "this upload is over: request a new upload"));
    }
    let stale = ctx.config.objects.blob_put_claim_secs.max(1) as i64 * 1_000_000;
    match claims::claim(&ctx.store, &grant.signature, key, grant.expires, stale).await? {
        Claim::Won(held) => Ok(held),
        Claim::Used => Err(ApiError::new(StatusCode::CONFLICT, "upload_url_used").with(
            "reason",
            "this URL has already uploaded its object; it works once",
        )),
        Claim::InProgress => Err(ApiError::new(StatusCode::CONFLICT, "upload_in_progress")
            .with("reason", "another upload with this URL is under way")),
    }
}

/// Streams `body` to `path` (atomically), holding it to `limit` bytes; returns the size.
async fn write_body(
    ctx: &AppContext,
    path: object_store::path::Path,
    body: Body,
    limit: Option<u64>,
) -> Result<u64, ApiError> {
    let mut writer = BufWriter::new(ctx.objects.store().clone(), path);
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(ApiError::bad_request("body_interrupted").with("reason", e.to_string()));
            }
        };
        written += chunk.len() as u64;
        if limit.is_some_and(|l| written > l) {
            let _ = writer.abort().await;
            return Err(ApiError::bad_request("content_length_mismatch"));
        }
        if let Err(e) = writer.put(chunk).await {
            let _ = writer.abort().await;
            return Err(ObjectsError::from(e).into());
        }
    }
    if limit.is_some_and(|l| written != l) {
        let _ = writer.abort().await;
        return Err(ApiError::bad_request("content_length_mismatch").with("received", written));
    }
    if let Err(e) = writer.shutdown().await {
        tracing::error!(error = %e, "completing a blob upload failed");
        return Err(ApiError::unavailable("object storage unavailable"));
    }
    Ok(written)
}

#[utoipa::path(
    put,
    path = "/blobs/{*key}",
    tag = "blobs",
    operation_id = "put_blob",
    summary = "Upload through a signed URL (works once)",
    params(("key" = String, Path, description = "The object key"), ("method" = Option<String>, Query, description = "Signed: the method"), ("expires" = Option<i64>, Query, description = "Signed: expiry, unix seconds"), ("length" = Option<u64>, Query, description = "Signed: the exact body length (uploads)"), ("type" = Option<String>, Query, description = "Signed: the content type"), ("signature" = Option<String>, Query, description = "The signature")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The object's bytes"),
    responses(
        (status = 200, description = "Stored; the upload saga has been told", body = Stored),
        (status = 400, description = "An invalid key, or the body length differs from the signed one (`content_length_mismatch`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "A malformed, wrongly signed, expired or other-method URL (`invalid_url`, `invalid_signature`, `url_expired`, `wrong_method`)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such object, or objects are not stored locally (`blob_endpoint_disabled`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The URL was used (`upload_url_used`) or is in use (`upload_in_progress`)", body = crate::http::openapi::ErrorBody),
        (status = 410, description = "The upload is over (`upload_closed`)", body = crate::http::openapi::ErrorBody),
        (status = 411, description = "Content-Length is required (`length_required`)", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Not the signed content type (`content_type_mismatch`)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn put_blob(
    State(ctx): State<AppContext>,
    method: Method,
    Path(key): Path<String>,
    q: Result<Query<BlobQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = authorize(&ctx, &method, &key, q)?;
    let path = Objects::path(&key)?;
    let limit = check_headers(&grant, &headers)?;
    // Until it is marked used, an error (or the client going away) gives the URL back: the
    // client may try again with it.
    let claim = claim_url(&ctx, &grant, &key).await?;
    let written = write_body(&ctx, path, body, limit).await?;
    // The object is stored; report it before answering, so a 200 means the saga will see it.
    crate::media::upload::detect::object_created(
        &ctx,
        &key,
        written,
        crate::media::upload::detect::Source::Blob,
    )
    .await?;
    if !claim.mark_used().await? {
        tracing::warn!(%key, "a blob URL claim was taken over during a slow upload");
    }
    Ok((StatusCode::OK, Json(json!({ "key": key, "size": written }))).into_response())
}

#[utoipa::path(
    method(get, head),
    path = "/blobs/{*key}",
    tag = "blobs",
    operation_id = "get_blob",
    summary = "Download through a signed URL",
    params(("key" = String, Path, description = "The object key"), ("method" = Option<String>, Query, description = "Signed: the method"), ("expires" = Option<i64>, Query, description = "Signed: expiry, unix seconds"), ("length" = Option<u64>, Query, description = "Signed: the exact body length (uploads)"), ("type" = Option<String>, Query, description = "Signed: the content type"), ("signature" = Option<String>, Query, description = "The signature")),
    responses(
        (status = 200, description = "The object (HEAD: its headers)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "An invalid key", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "A malformed, wrongly signed, expired or other-method URL (`invalid_url`, `invalid_signature`, `url_expired`, `wrong_method`)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such object, or objects are not stored locally (`blob_endpoint_disabled`)", body = crate::http::openapi::ErrorBody),
    )
)]
async fn get_blob(
    State(ctx): State<AppContext>,
    method: Method,
    Path(key): Path<String>,
    q: Result<Query<BlobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let grant = authorize(&ctx, &method, &key, q)?;
    let path = Objects::path(&key)?;
    let got = match ctx.objects.store().get(&path).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ApiError::not_found("not_found"));
        }
        Err(e) => return Err(ObjectsError::from(e).into()),
    };
    let size = got.meta.size;
    let ctype = grant
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(got.into_stream())
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}
