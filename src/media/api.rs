//! The media HTTP API. Intents (`POST /api/v1/media/{upload,download,delete}-intent`) are
//! validated, appended to the outbox through group commit and answered `202 {request_id}`
//! once durable; invalid input gets a 400 naming the problem and stores nothing. Queries:
//! `GET /api/v1/media` (the caller's active files), `GET /api/v1/media/uploads/{id}` (the
//! caller's upload saga), `GET /api/v1/users/me/credits` (balance and recent ledger).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::payloads::{FileIntent, UploadIntent};
use super::upload::uploads;
use super::{credits, files, topics, types};
use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::gateway::auth::{Principal, PrincipalKind};
use crate::gateway::ingest::{Body, commit, header_str, parse_json, schema_error};
use crate::http::error::ApiError;
use crate::outbox::{Guard, Headers};

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(upload_intent))
        .routes(routes!(download_intent))
        .routes(routes!(delete_intent))
        .routes(routes!(list_files))
        .routes(routes!(upload_status))
        .routes(routes!(my_credits))
}

crate::doc_schema!(
    /// A page of the caller's files and the cursor for the next (`before`), if any.
    FilePage = {"type": "object", "required": ["files", "next"], "properties": {
        "files": {"type": "array", "items": {"type": "object"}},
        "next": {"type": ["integer", "null"]}}}
);

crate::doc_schema!(
    /// The caller's balance and newest ledger entries.
    Credits = {"type": "object", "required": ["user_id", "balance", "ledger"], "properties": {
        "user_id": {"type": "string"}, "balance": {"type": "integer"},
        "ledger": {"type": "array", "items": {"type": "object", "required": ["id", "request_id", "kind", "amount", "balance_after", "reason", "created_at"], "properties": {
            "id": {"type": "integer"}, "request_id": {"type": "string"}, "kind": {"type": "string"},
            "amount": {"type": "integer"}, "balance_after": {"type": "integer"},
            "reason": {"type": "string"}, "created_at": {"type": "integer"}}}}}}
);

crate::doc_schema!(
    /// A media request, accepted.
    RequestAccepted = {"type": "object", "required": ["request_id"], "properties": {"request_id": {"type": "string"}}}
);

crate::doc_schema!(
    /// An upload to request: the file's name, media type and size in bytes.
    UploadRequest = {"type": "object", "required": ["file_name", "media_type", "file_size"], "properties": {
        "file_name": {"type": "string", "maxLength": 255},
        "media_type": {"type": "string", "description": "An allowed type, e.g. image/png"},
        "file_size": {"type": "integer", "minimum": 1}}}
);

crate::doc_schema!(
    /// A file of the caller's: its path.
    FileRequest = {"type": "object", "required": ["file_path"], "properties": {
        "file_path": {"type": "string", "minLength": 1, "maxLength": 1024}}}
);

/// Media intents are made by users for themselves.
fn user(p: &Principal) -> Result<&str, ApiError> {
    if p.kind != PrincipalKind::User {
        return Err(ApiError::forbidden(
            "media requests are made by users (a JWT), for their own files",
        ));
    }
    Ok(&p.id)
}

fn field<'a>(doc: &'a Value, name: &str) -> Result<&'a Value, ApiError> {
    doc.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
        ApiError::bad_request("invalid_request")
            .with("field", name.to_string())
            .with("reason", "required")
    })
}

fn string_field<'a>(doc: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    field(doc, name)?.as_str().ok_or_else(|| {
        ApiError::bad_request("invalid_request")
            .with("field", name.to_string())
            .with("reason", "expected a string")
    })
}

/// An intent ready to be appended.
struct Intent<'a, T> {
    route: &'a str,
    body: &'a [u8],
    topic: &'a str,
    request_id: &'a str,
    payload: &'a T,
}

/// Appends the intent and answers 202 `{request_id}` once it is durable. An
/// `Idempotency-Key` makes a retried request answer with the first request id.
async fn accept<T: serde::Serialize>(
    ctx: &AppContext,
    principal: &Principal,
    headers: &HeaderMap,
    intent: Intent<'_, T>,
) -> Result<Response, ApiError> {
    let Intent {
        route,
        body,
        topic,
        request_id,
        payload,
    } = intent;
    let idem = header_str(headers, "idempotency-key");
    if idem.is_some_and(|k| k.len() > 255) {
        return Err(ApiError::bad_request("invalid_idempotency_key")
            .with("reason", "longer than 255 characters"));
    }
    let mut extra = Headers::new();
    extra.insert("principal".into(), principal.id.clone());
    let meta = EventMeta {
        source: format!("/api/v1/media/{route}"),
        traceparent: header_str(headers, "traceparent").map(str::to_string),
        correlation_id: header_str(headers, "x-correlation-id").map(str::to_string),
        idempotency_key: idem.map(str::to_string),
        extra,
    };
    let json = serde_json::to_value(payload).map_err(ApiError::internal)?;
    // The topic's rules (`schema::rules`: media types, sizes, names, paths) are checked here,
    // by the same code the sagas check events with.
    let ev = events::build(&ctx.schemas, topic, &principal.id, &json, &meta)
        .map_err(|e| schema_error(e, "invalid_request", None))?;
    let response = json!({ "request_id": request_id });
    let guard = idem.map(|k| {
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update(b"\n");
        h.update(body);
        Guard::Idempotency {
            principal: principal.id.clone(),
            key: k.to_string(),
            fingerprint: hex::encode(h.finalize()),
            response: response.to_string(),
        }
    });
    commit(ctx, topic, vec![ev], guard, response).await
}

fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[utoipa::path(
    post,
    path = "/api/v1/media/upload-intent",
    tag = "media",
    operation_id = "upload_intent",
    summary = "Ask to upload a file",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer the first request id")),
    request_body = UploadRequest,
    responses(
        (status = 202, description = "Accepted durably: `{\"request_id\": id}`; follow it at /api/v1/media/uploads/{request_id}", body = RequestAccepted),
        (status = 400, description = "Malformed JSON, or a missing or invalid field (`invalid_request`, `invalid_media_type`, `invalid_file_name`, `invalid_file_size`, `file_too_large`)", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn upload_intent(
    State(ctx): State<AppContext>,
    principal: Principal,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let user_id = user(&principal)?;
    let doc = parse_json(&body)?;
    let file_name = string_field(&doc, "file_name")?;
    let media_type = string_field(&doc, "media_type")?;
    let file_size = field(&doc, "file_size")?.as_i64().ok_or_else(|| {
        ApiError::bad_request("invalid_request")
            .with("field", "file_size")
            .with("reason", "expected an integer number of bytes")
    })?;
    // An allowed type is stored in its canonical spelling; any other is refused by the rules.
    let media_type = types::allowed_media_type(media_type).unwrap_or(media_type);
    let request_id = new_request_id();
    let payload = UploadIntent {
        version: 1,
        user_id: user_id.to_string(),
        request_id: request_id.clone(),
        file_name: file_name.to_string(),
        media_type: media_type.to_string(),
        file_size,
    };
    let intent = Intent {
        route: "upload-intent",
        body: &body,
        topic: topics::UPLOAD_INTENT,
        request_id: &request_id,
        payload: &payload,
    };
    accept(&ctx, &principal, &headers, intent).await
}

/// The download and delete intents: `{file_path}`.
async fn file_intent(
    ctx: AppContext,
    principal: Principal,
    headers: HeaderMap,
    body: bytes::Bytes,
    route: &str,
    topic: &str,
) -> Result<Response, ApiError> {
    let user_id = user(&principal)?;
    let doc = parse_json(&body)?;
    let file_path = string_field(&doc, "file_path")?;
    let request_id = new_request_id();
    let payload = FileIntent {
        version: 1,
        user_id: user_id.to_string(),
        request_id: request_id.clone(),
        file_path: file_path.to_string(),
    };
    let intent = Intent {
        route,
        body: &body,
        topic,
        request_id: &request_id,
        payload: &payload,
    };
    accept(&ctx, &principal, &headers, intent).await
}

#[utoipa::path(
    post,
    path = "/api/v1/media/download-intent",
    tag = "media",
    operation_id = "download_intent",
    summary = "Ask for a download URL",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer the first request id")),
    request_body = FileRequest,
    responses(
        (status = 202, description = "Accepted durably: `{\"request_id\": id}`; follow it at /api/v1/media/uploads/{request_id}", body = RequestAccepted),
        (status = 400, description = "Malformed JSON, or a missing or invalid file_path", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn download_intent(
    State(ctx): State<AppContext>,
    principal: Principal,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    file_intent(
        ctx,
        principal,
        headers,
        body,
        "download-intent",
        topics::DOWNLOAD_INTENT,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/media/delete-intent",
    tag = "media",
    operation_id = "delete_intent",
    summary = "Ask to delete a file",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry answer the first request id")),
    request_body = FileRequest,
    responses(
        (status = 202, description = "Accepted durably: `{\"request_id\": id}`; follow it at /api/v1/media/uploads/{request_id}", body = RequestAccepted),
        (status = 400, description = "Malformed JSON, or a missing or invalid file_path", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn delete_intent(
    State(ctx): State<AppContext>,
    principal: Principal,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    file_intent(
        ctx,
        principal,
        headers,
        body,
        "delete-intent",
        topics::DELETE_INTENT,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// 1 to 500 (default 100).
    limit: Option<i64>,
    /// Unix microseconds: only files created before this (the previous page's `next`).
    before: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/media",
    tag = "media",
    operation_id = "list_files",
    summary = "The caller's files, newest first",
    params(Page),
    responses(
        (status = 200, description = "A page of files", body = FilePage),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn list_files(
    State(ctx): State<AppContext>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let user_id = user(&principal)?;
    let limit = page.limit.unwrap_or(100).clamp(1, 500);
    let files = files::list_active(&ctx.store, user_id, limit, page.before).await?;
    let next = (files.len() as i64 == limit)
        .then(|| files.last().map(|f| f.created_at))
        .flatten();
    Ok(Json(json!({ "files": files, "next": next })))
}

#[utoipa::path(
    get,
    path = "/api/v1/media/uploads/{request_id}",
    tag = "media",
    operation_id = "upload_status",
    summary = "Where an upload request stands",
    params(("request_id" = String, Path, description = "From the upload intent")),
    responses(
        (status = 200, description = "The upload request", body = Object),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such request of the caller's (`unknown_request`)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn upload_status(
    State(ctx): State<AppContext>,
    principal: Principal,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = user(&principal)?;
    match uploads::get(&ctx.store, &request_id).await? {
        Some(u) if u.user_id == user_id => Ok(Json(json!(u))),
        // Another user's request looks exactly like one that does not exist.
        _ => Err(ApiError::not_found("unknown_request")),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LedgerPage {
    /// 1 to 500 (default 50).
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me/credits",
    tag = "media",
    operation_id = "my_credits",
    summary = "The caller's credit balance and ledger",
    params(LedgerPage),
    responses(
        (status = 200, description = "Balance and ledger", body = Credits),
        (status = 403, description = "Not a user (media requests are made with a user JWT)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn my_credits(
    State(ctx): State<AppContext>,
    principal: Principal,
    Query(page): Query<LedgerPage>,
) -> Result<Json<Value>, ApiError> {
    let user_id = user(&principal)?;
    // First contact opens the account with the starting balance.
    let balance = match credits::account(&ctx.store, user_id).await? {
        Some(b) => b,
        None => {
            let mut tx = ctx.store.begin().await?;
            let b =
                credits::open_account(&mut tx, user_id, ctx.config.media.starting_credits).await?;
            tx.commit().await?;
            b
        }
    };
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let ledger = credits::ledger(&ctx.store, user_id, limit).await?;
    Ok(Json(json!({
        "user_id": user_id,
        "balance": balance,
        "ledger": ledger,
    })))
}
