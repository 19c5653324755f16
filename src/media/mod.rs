//! Media sagas with a credit economy (`credits.rs`). HTTP intents (`api.rs`) become events;
//! saga supervisors run as consumer groups in the `sagas` role — the upload saga in
//! `upload/` (its state, move and expiry timer steps, and upload detection by the storage
//! webhook, the blob endpoint or a HEAD check), `download.rs` and `delete.rs` — and on
//! durable timers (`timers.rs`).

pub mod api;
pub mod credits;
pub mod delete;
pub mod download;
pub mod emit;
pub mod files;
pub mod payloads;
pub mod role;
pub mod timers;
pub mod types;
pub mod upload;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::app::AppContext;
use crate::consumers::HandlerError;
use crate::objects::ObjectsError;
use crate::store::StoreError;

/// The topics of the media sagas (the path of their schema under `avro/`).
pub mod topics {
    pub const UPLOAD_INTENT: &str = "internal.media.upload.intent";
    pub const UPLOAD_APPROVED: &str = "public.media.upload.approved";
    pub const UPLOAD_REJECTED: &str = "public.media.upload.rejected";
    pub const UPLOAD_SIGNED: &str = "public.media.upload.signed";
    pub const UPLOAD_RECEIVED: &str = "internal.media.upload.received";
    pub const UPLOAD_RETRY: &str = "internal.media.upload.retry";
    pub const UPLOAD_DEAD_LETTER: &str = "internal.media.upload.dead-letter";
    pub const UPLOAD_CONFIRMED: &str = "public.media.upload.confirmed";
    pub const UPLOAD_EXPIRED: &str = "public.media.expired.events";
    pub const DOWNLOAD_INTENT: &str = "internal.media.download.intent";
    pub const DOWNLOAD_SIGNED: &str = "public.media.download.signed";
    pub const DOWNLOAD_REJECTED: &str = "public.media.download.rejected";
    pub const DELETE_INTENT: &str = "internal.media.delete.intent";
    pub const DELETE_EVENTS: &str = "public.media.delete.events";
    pub const DELETE_REJECTED: &str = "public.media.delete.rejected";
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("object storage: {0}")]
    Objects(#[from] ObjectsError),
    #[error("event: {0}")]
    Event(String),
    #[error("append: {0}")]
    Append(String),
}

impl From<MediaError> for HandlerError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Store(s) => HandlerError::Store(s),
            MediaError::Event(r) => HandlerError::Reject(r),
            other => HandlerError::Retry(other.to_string()),
        }
    }
}

impl From<MediaError> for crate::http::error::ApiError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Store(s) => s.into(),
            MediaError::Objects(o) => o.into(),
            MediaError::Event(r) => crate::http::error::ApiError::internal(r),
            MediaError::Append(r) => {
                tracing::error!(error = %r, "append failed");
                crate::http::error::ApiError::unavailable("store unavailable")
                    .header(axum::http::header::RETRY_AFTER, "1")
            }
        }
    }
}

/// Process-wide state of the media component.
pub struct Media {
    /// Wakes this process's timer loop when a timer is due at once.
    pub timer_wake: Arc<Notify>,
    /// This process's name as a timer claimant.
    pub instance: String,
}

impl Media {
    pub fn new() -> Self {
        Self {
            timer_wake: Arc::new(Notify::new()),
            instance: format!("sagas-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        Self::new()
    }
}

/// The media HTTP API, the storage webhook and (local backend) the blob endpoint.
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppContext> {
    api::router()
        .merge(upload::webhook::router())
        .merge(crate::objects::blobs::router())
}
