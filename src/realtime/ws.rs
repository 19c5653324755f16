//! `GET /api/v1/notifications/ws`: the same stream over WebSocket, for clients that prefer
//! it. Text frames, JSON: `hello` (with the starting cursor), then `notification` (with `id`,
//! `cursor` and `data`), `reset` (the read model was rebuilt: `epoch` and `after`, the cursor
//! the stream goes on from) and `heartbeat`. A client may send `{"type":"ping"}` (answered with
//! `pong`). When the server ends the stream it sends a close frame whose code says why (4001
//! slow client, 4002 lifetime, 1001 shutdown, 1011 error); the client reconnects with
//! `?after=<last cursor>`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::sse::StreamQuery;
use super::stream::{Conn, DropReason, Frame, Transport};
use crate::app::AppContext;
use crate::http::error::ApiError;
use crate::projections::notifications::Viewer;

/// The close code and reason for a stream the server ended.
pub fn close_code(r: DropReason) -> (u16, &'static str) {
    match r {
        DropReason::SlowClient => (4001, "slow_client"),
        DropReason::Lifetime => (4002, "lifetime"),
        DropReason::Shutdown => (1001, "shutdown"),
        DropReason::Error => (1011, "error"),
    }
}

fn text(frame: Frame) -> Message {
    let s = match frame {
        Frame::Notification { cursor, json } => format!(
            r#"{{"type":"notification","id":{},"cursor":"{cursor}","data":{json}}}"#,
            cursor.id,
        ),
        Frame::Reset { cursor } => {
            let mut body = super::cursor::reset_body(cursor);
            body["type"] = json!("reset");
            body.to_string()
        }
        Frame::Event { event, json } => format!(r#"{{"type":"{event}","data":{json}}}"#),
        Frame::Heartbeat => r#"{"type":"heartbeat"}"#.to_string(),
    };
    Message::Text(s.into())
}

#[utoipa::path(
    get,
    path = "/api/v1/notifications/ws",
    tag = "notifications",
    operation_id = "notification_websocket",
    summary = "Live notifications (WebSocket)",
    params(("after" = Option<String>, Query, description = "A cursor to resume after (or the Last-Event-ID header)"), ("access_token" = Option<String>, Query, description = "A stream token, for clients that cannot send headers")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: JSON messages as on the SSE stream"),
        (status = 400, description = "Not a WebSocket request (`not_a_websocket_request`) or an invalid cursor", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []), ())
)]
pub async fn upgrade(
    State(ctx): State<AppContext>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let p = super::stream_principal(&ctx, &headers, q.access_token.as_deref()).await?;
    let after = super::cursor::stream_cursor(&headers, q.after.as_deref())?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request("not_a_websocket_request").with("reason", e.body_text())
    })?;
    let viewer = Viewer::new(p.id, p.admin);
    let conn = ctx
        .realtime
        .open(&ctx, viewer, after, Transport::WebSocket)
        .await?;
    let hello = json!({
        "type": "hello",
        "after": conn.after.to_string(),
        "epoch": conn.after.epoch,
        "heartbeat_secs": ctx.realtime.heartbeat_secs(),
    });
    Ok(upgrade.on_upgrade(move |socket| run(socket, conn, hello)))
}

/// Serves an open stream on `socket`: `hello`, then the stream's frames, answering pings, and
/// a close frame saying why when the server ends it. Shared by every stream of the process
/// (notifications, the telemetry tails).
pub async fn run(socket: WebSocket, mut conn: Conn, hello: Value) {
    let (mut sink, mut incoming) = socket.split();
    if sink
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            f = conn.next() => {
                let Some(frame) = f else { break };
                let sent = tokio::select! {
                    r = sink.send(text(frame)) => r.is_ok(),
                    _ = conn.shared.dropped.cancelled() => false,
                };
                if !sent {
                    break;
                }
            }
            m = incoming.next() => match m {
                // The client left: dropping `conn` ends the pump.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) => {
                    let ping = serde_json::from_str::<Value>(t.as_str())
                        .ok()
                        .is_some_and(|v| v["type"] == "ping");
                    if ping && sink.send(Message::Text(r#"{"type":"pong"}"#.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if let Some(reason) = conn.drop_reason() {
        let (code, why) = close_code(reason);
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: why.into(),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
    }
}
