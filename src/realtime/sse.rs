//! `GET /api/v1/notifications/stream`: the caller's notifications as Server-Sent Events.
//! It opens with `retry:` (the reconnect delay), then sends every visible notification after
//! the cursor (`Last-Event-ID`, else `?after=`, else 0) as `event: notification` with
//! `id: <notification id>`, history and live alike, and a `: heartbeat` comment when idle.

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

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    pub after: Option<String>,
    /// A stream token from `POST /api/v1/notifications/stream-token`.
    pub access_token: Option<String>,
}

fn event(frame: Frame) -> Event {
    match frame {
        Frame::Notification(e) => Event::default()
            .id(e.id().to_string())
            .event("notification")
            .data(&*e.json),
        Frame::Heartbeat => Event::default().comment("heartbeat"),
    }
}

pub async fn stream(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let p = super::stream_principal(&ctx, &headers, q.access_token.as_deref()).await?;
    let after = super::stream_cursor(&headers, q.after.as_deref())?;
    let conn = ctx.realtime.open(&ctx, p.id, after, Transport::Sse).await?;
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
    Ok(resp)
}
