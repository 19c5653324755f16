//! Realtime push of the `notifications` read model: the caller's history
//! (`GET /api/v1/notifications`), one ordered, resumable stream per client over SSE
//! (`/api/v1/notifications/stream`) or WebSocket (`/api/v1/notifications/ws`), and stream tokens
//! for browsers. Every path reads by the cursor (`<epoch>:<id>`, `cursor.rs`), filters by the
//! caller's visibility in the server, and shows each row in the form the caller may see. See
//! `docs/realtime.md`. The same transports also carry the telemetry tails
//! (`crate::telemetry::tail`, opened with [`Realtime::open_tail`]).

pub mod cursor;
pub mod history;
pub mod hub;
pub mod sse;
pub mod stream;
pub mod token;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppContext;
use crate::config::RealtimeConfig;
use crate::gateway::auth::{Principal, PrincipalKind};
use crate::http::error::ApiError;
use crate::projections::notifications::Viewer;
use crate::store::{Store, StoreError};
use cursor::Cursor;
use hub::Hub;
use stream::{Conn, Pump, Shared, Transport};
use token::{StreamTokens, TokenError};

use crate::telemetry::store::read::LogFilter;
use crate::telemetry::tail::{Kind, TailConfig, TailError, TailHub};

/// The realtime component of a process: the fan-out hub, the stream tokens, and the signal
/// that closes every stream when the process shuts down.
pub struct Realtime {
    pub hub: Arc<Hub>,
    pub tokens: StreamTokens,
    /// The live tails of telemetry (log lines, alert transitions).
    pub tail: Arc<TailHub>,
    cfg: RealtimeConfig,
    closing: CancellationToken,
}

impl Realtime {
    pub fn new(cfg: &RealtimeConfig, tail: &TailConfig, store: Store) -> Self {
        let closing = CancellationToken::new();
        Self {
            tail: Arc::new(TailHub::new(tail, closing.clone())),
            hub: Arc::new(Hub::new(
                store.clone(),
                cfg.hub_buffer,
                cfg.hub_buffer_bytes,
                Duration::from_millis(cfg.poll_ms),
                closing.clone(),
            )),
            tokens: StreamTokens::new(
                store,
                cfg.stream_token_secret.clone(),
                cfg.stream_token_ttl_secs,
            ),
            cfg: cfg.clone(),
            closing,
        }
    }

    /// Ends every stream (they resume elsewhere from their cursor) and stops the hub.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Opens a stream for `viewer` after cursor `after` (`None`: from the beginning).
    pub async fn open(
        &self,
        ctx: &AppContext,
        viewer: Viewer,
        after: Option<Cursor>,
        transport: Transport,
    ) -> Result<Conn, StoreError> {
        self.hub.ensure_started().await?;
        // A client that has read nothing starts in the current epoch; any other cursor keeps
        // its epoch, and the pump resets it if that epoch is over.
        let after = match after {
            Some(c) if !c.is_start() => c,
            _ => Cursor::start(self.hub.epoch()),
        };
        let (tx, rx) = mpsc::channel(self.cfg.client_buffer.max(1));
        let shared = Arc::new(Shared::default());
        let (heartbeat, slow_timeout, lifetime) = Pump::from_config(&self.cfg);
        let pump = Pump {
            hub: self.hub.clone(),
            viewer,
            cursor: after,
            tx,
            shared: shared.clone(),
            transport,
            closing: self.closing.clone(),
            metrics: ctx.metrics.clone(),
            heartbeat,
            slow_timeout,
            lifetime,
        };
        tokio::spawn(pump.run());
        Ok(Conn { rx, shared, after })
    }

    /// Opens a live tail of `org`'s `kind` (log lines passing `filter`, or alert
    /// transitions): frames come from the tail hub; a watcher task sends heartbeats, passes on
    /// a pending `lagged` note, and ends the stream at its lifetime or on shutdown, as the
    /// notification pump does.
    pub async fn open_tail(
        &self,
        ctx: &AppContext,
        org: String,
        kind: Kind,
        filter: LogFilter,
        transport: Transport,
    ) -> Result<Conn, TailError> {
        let opened = self.tail.subscribe(ctx, org, kind, filter).await?;
        let shared = Arc::new(Shared::default());
        let (heartbeat, _, lifetime) = Pump::from_config(&self.cfg);
        let watch = stream::TailWatch {
            hub: self.tail.clone(),
            id: opened.id,
            tx: opened.tx,
            shared: shared.clone(),
            transport,
            closing: self.closing.clone(),
            metrics: ctx.metrics.clone(),
            heartbeat,
            lifetime,
        };
        tokio::spawn(watch.run());
        Ok(Conn {
            rx: opened.rx,
            shared,
            after: Cursor::start(0),
        })
    }

    pub fn retry_ms(&self) -> u64 {
        self.cfg.retry_ms
    }

    pub fn heartbeat_secs(&self) -> u64 {
        self.cfg.heartbeat_secs
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => ApiError::unauthorized("token_expired")
                .with("reason", "the stream token expired: fetch a new one"),
            TokenError::Malformed | TokenError::BadSignature => {
                ApiError::unauthorized("invalid_token").with("reason", e.to_string())
            }
            TokenError::Store(s) => s.into(),
        }
    }
}

/// Who is opening a stream: `Authorization` (JWT) or `X-API-Key` headers, else the
/// `access_token` query parameter holding a stream token. Rate-limited like every request.
pub async fn stream_principal(
    ctx: &AppContext,
    headers: &HeaderMap,
    access_token: Option<&str>,
) -> Result<Principal, ApiError> {
    let has_header = headers.contains_key(axum::http::header::AUTHORIZATION)
        || headers.contains_key("x-api-key");
    let p = match access_token {
        Some(t) if !has_header => {
            let user = ctx.realtime.tokens.verify(t).await?;
            Principal {
                id: user,
                kind: PrincipalKind::User,
                roles: Vec::new(),
                scopes: Vec::new(),
                admin: false,
                email: None,
            }
        }
        _ => ctx.auth.authenticate(headers).await?,
    };
    ctx.rate_limiter.check(&p)?;
    Ok(p)
}

/// `POST /api/v1/notifications/stream-token`: a short-lived token for
/// `?access_token=` on the stream endpoints.
#[utoipa::path(
    post,
    path = "/api/v1/notifications/stream-token",
    tag = "notifications",
    operation_id = "issue_stream_token",
    summary = "A short-lived token for ?access_token= on the streams",
    responses(
        (status = 201, description = "The token", body = StreamToken),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
async fn issue_token(
    State(ctx): State<AppContext>,
    p: Principal,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let (token, exp) = ctx.realtime.tokens.issue(&p.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": crate::events::rfc3339_micros(exp * 1_000_000),
            "expires_in": ctx.realtime.tokens.ttl_secs(),
            "usage": "GET /api/v1/notifications/stream?access_token=<token>[&after=<cursor>] (or /ws)",
        })),
    ))
}

pub fn router() -> OpenApiRouter<AppContext> {
    OpenApiRouter::new()
        .routes(routes!(history::list))
        .routes(routes!(sse::stream))
        .routes(routes!(ws::upgrade))
        .routes(routes!(issue_token))
        .merge(crate::telemetry::tail::http::router())
}

crate::doc_schema!(
    /// A stream token.
    StreamToken = {"type": "object", "required": ["token", "expires_at", "expires_in"], "properties": {
        "token": {"type": "string"}, "expires_at": {"type": "string"}, "expires_in": {"type": "integer"},
        "usage": {"type": "string"}}}
);
