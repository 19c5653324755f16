//! `GET /api/v1/notifications/stream`: the caller's notifications as Server-Sent Events.
//! It opens with `retry:` (the reconnect delay), then sends every visible notification after
//! the cursor (`Last-Event-ID`, else `?after=`, else the beginning) as `event: notification`
//! with `id: <epoch>:<notification id>`, history and live alike, and a `: heartbeat` comment
//! when idle. When the read model is rebuilt it sends `event: reset` (`id:` and `data.after`:
//! the start of the new epoch) and goes on with the new epoch's rows.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::stream::{Conn, Frame, Transport};
use crate::app::AppContext;
use crate::http::error::ApiError;
use crate::projections::notifications::Viewer;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    pub after: Option<String>,
    /// A stream token from `POST /api/v1/notifications/stream-token`.
    pub access_token: Option<String>,
}

fn event(frame: Frame) -> Event {
    match frame {
        Frame::Notification { cursor, json } => Event::default()
            .id(cursor.to_string())
            .event("notification")
            .data(&*json),
        // The `id` makes a reconnecting EventSource resume in the new epoch.
        Frame::Reset { cursor } => Event::default()
            .id(cursor.to_string())
            .event("reset")
            .data(super::cursor::reset_body(cursor).to_string()),
        Frame::Event { event, json } => Event::default().event(event).data(&*json),
        Frame::Heartbeat => Event::default().comment("heartbeat"),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/notifications/stream",
    tag = "notifications",
    operation_id = "notification_stream",
    summary = "Live notifications (Server-Sent Events)",
    params(("after" = Option<String>, Query, description = "A cursor to resume after (or the Last-Event-ID header)"), ("access_token" = Option<String>, Query, description = "A stream token, for clients that cannot send headers")),
    responses(
        (status = 200, description = "An event stream: `notification` events with cursor ids, `reset` when the read model was rebuilt", content_type = "text/event-stream", body = String),
        (status = 400, description = "An invalid cursor", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ())
)]
pub async fn stream(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let p = super::stream_principal(&ctx, &headers, q.access_token.as_deref()).await?;
    let after = super::cursor::stream_cursor(&headers, q.after.as_deref())?;
    let viewer = Viewer::new(p.id, p.admin);
    let conn = ctx
        .realtime
        .open(&ctx, viewer, after, Transport::Sse)
        .await?;
    Ok(respond(&ctx, conn))
}

/// The SSE answer for an open stream: `retry:`, then its frames until it ends. Shared by every
/// stream of the process (notifications, the telemetry tails).
pub fn respond(ctx: &AppContext, conn: Conn) -> Response {
    let retry = Event::default().retry(Duration::from_millis(ctx.realtime.retry_ms()));
    let frames = futures::stream::unfold(conn, |mut c: Conn| async move {
        c.next().await.map(|f| (event(f), c))
    });
    let body = futures::stream::once(async move { retry })
        .chain(frames)
        .map(Ok::<_, Infallible>);
    let mut resp = Sse::new(body).into_response();
    // Proxies (nginx) must not buffer the stream.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}
