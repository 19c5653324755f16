//! One client's stream, independent of the transport: a pump task reads the client's next
//! visible rows by cursor from the hub and puts them, in order, into a bounded buffer that the
//! transport (SSE or WebSocket) drains. History and live rows come through the same cursor
//! loop, so there is no seam to race on. A client whose buffer stays full for
//! `realtime.slow_client_timeout_ms` is dropped; it resumes from its cursor. When the read
//! model's epoch moves on (a rebuild or restore), the pump sends a reset and starts again at the
//! beginning of the new epoch; each row goes out in the form the client may see.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cursor::Cursor;
use super::hub::{Hub, Read};
use crate::config::RealtimeConfig;
use crate::projections::notifications::Viewer;
use crate::telemetry::Metrics;

/// Rows read from the hub per step.
const READ_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    WebSocket,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why the server closed a stream (the `reason` label of `realtime_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The client read nothing for `slow_client_timeout_ms` while its buffer was full.
    SlowClient,
    /// The stream reached `max_stream_secs`.
    Lifetime,
    /// The process is shutting down.
    Shutdown,
    /// The store could not be read.
    Error,
}

impl DropReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::SlowClient => "slow_client",
            DropReason::Lifetime => "lifetime",
            DropReason::Shutdown => "shutdown",
            DropReason::Error => "error",
        }
    }
}

/// What the pump hands the transport.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A notification: its cursor, and its JSON as this client may see it.
    Notification {
        cursor: Cursor,
        json: Arc<str>,
    },
    /// The read model was reset: what the client holds is void, and the stream goes on from
    /// this cursor (the start of the new epoch).
    Reset {
        cursor: Cursor,
    },
    /// A named event without a cursor (the live tails of `crate::telemetry::tail`: log lines,
    /// alert transitions, `lagged`): sent as SSE `event: <event>`, or as WebSocket
    /// `{"type": <event>, "data": <json>}`.
    Event {
        event: &'static str,
        json: Arc<str>,
    },
    Heartbeat,
}

/// State shared by the pump and the transport.
#[derive(Default)]
pub struct Shared {
    /// Cancelled when the server drops the client: the transport stops at once.
    pub dropped: CancellationToken,
    pub reason: OnceLock<DropReason>,
}

/// The transport's end of a stream.
pub struct Conn {
    pub rx: mpsc::Receiver<Frame>,
    pub shared: Arc<Shared>,
    /// The cursor the stream started after.
    pub after: Cursor,
}

impl Conn {
    /// The next frame, or `None` when the stream is over (the server dropped the client, or
    /// the pump ended).
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::select! {
            biased;
            _ = self.shared.dropped.cancelled() => None,
            f = self.rx.recv() => f,
        }
    }

    pub fn drop_reason(&self) -> Option<DropReason> {
        self.shared.reason.get().copied()
    }
}

pub(crate) struct Pump {
    pub hub: Arc<Hub>,
    pub viewer: Viewer,
    pub cursor: Cursor,
    pub tx: mpsc::Sender<Frame>,
    pub shared: Arc<Shared>,
    pub transport: Transport,
    pub closing: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Duration,
    pub slow_timeout: Duration,
    pub lifetime: Duration,
}

enum Sent {
    Ok,
    /// The client went away.
    Gone,
    Dropped(DropReason),
}

impl Pump {
    pub fn from_config(cfg: &RealtimeConfig) -> (Duration, Duration, Duration) {
        (
            Duration::from_secs(cfg.heartbeat_secs.max(1)),
            Duration::from_millis(cfg.slow_client_timeout_ms.max(1)),
            Duration::from_secs(cfg.max_stream_secs.max(1)),
        )
    }

    /// Runs until the client goes away or the server drops it.
    pub async fn run(self) {
        let gauge = self
            .metrics
            .realtime_connections
            .with_label_values(&[self.transport.as_str()]);
        gauge.inc();
        let outcome = self.pump().await;
        gauge.dec();
        if let Some(reason) = outcome {
            let _ = self.shared.reason.set(reason);
            self.metrics
                .realtime_dropped
                .with_label_values(&[reason.as_str()])
                .inc();
            self.shared.dropped.cancel();
        }
    }

    async fn send(&self, frame: Frame) -> Sent {
        match self.tx.try_send(frame) {
            Ok(()) => Sent::Ok,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
            // Boxed for the same reason as the store read: only a client that fell behind
            // pays for this wait's state.
            Err(mpsc::error::TrySendError::Full(frame)) => {
                Box::pin(async move {
                    tokio::select! {
                        r = self.tx.send(frame) => if r.is_ok() { Sent::Ok } else { Sent::Gone },
                        _ = tokio::time::sleep(self.slow_timeout) => Sent::Dropped(DropReason::SlowClient),
                        _ = self.closing.cancelled() => Sent::Dropped(DropReason::Shutdown),
                    }
                })
                .await
            }
        }
    }

    /// Sends `frame`; `Err` ends the pump with that outcome (see [`Pump::pump`]).
    async fn put(&self, frame: Frame) -> Result<(), Option<DropReason>> {
        match self.send(frame).await {
            Sent::Ok => Ok(()),
            Sent::Gone => Err(None),
            Sent::Dropped(r) => Err(Some(r)),
        }
    }

    /// The loop; `None` when the client left, else why the server dropped it.
    async fn pump(&self) -> Option<DropReason> {
        let mut head = self.hub.subscribe();
        let deadline = Instant::now() + self.lifetime;
        let mut next_beat = Instant::now() + self.heartbeat;
        let Cursor {
            mut epoch,
            id: mut scanned,
        } = self.cursor;
        let delivered = self
            .metrics
            .realtime_delivered
            .with_label_values(&[self.transport.as_str()]);
        loop {
            if self.closing.is_cancelled() {
                return Some(DropReason::Shutdown);
            }
            if self.tx.is_closed() {
                return None;
            }
            if Instant::now() >= deadline {
                return Some(DropReason::Lifetime);
            }
            // Mark the head seen *before* reading, so a row committed after the read wakes us.
            head.borrow_and_update();
            let read = match self
                .hub
                .read_buffered(&self.viewer.user, epoch, scanned, READ_BATCH)
            {
                Some(b) => Ok(Read::Rows(b)),
                // Boxed: the store read's future is large, and inline it would size every
                // pump's state (each idle client's memory) by it.
                None => {
                    Box::pin(self.hub.read(&self.viewer.user, epoch, scanned, READ_BATCH)).await
                }
            };
            let batch = match read {
                Ok(Read::Rows(b)) => b,
                Ok(Read::Reset(now)) => {
                    // Never shift the client silently: tell it, then start the new epoch.
                    (epoch, scanned) = (now, 0);
                    let cursor = Cursor::start(now);
                    if let Err(end) = self.put(Frame::Reset { cursor }).await {
                        return end;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream cannot read notifications; dropping it");
                    return Some(DropReason::Error);
                }
            };
            scanned = batch.scanned;
            if !batch.rows.is_empty() {
                for e in batch.rows {
                    let frame = Frame::Notification {
                        cursor: Cursor::new(epoch, e.id()),
                        json: e.json_for(&self.viewer),
                    };
                    if let Err(end) = self.put(frame).await {
                        return end;
                    }
                    delivered.inc();
                }
                next_beat = Instant::now() + self.heartbeat;
                continue;
            }
            if batch.more {
                continue;
            }
            tokio::select! {
                r = head.changed() => {
                    if r.is_err() {
                        return Some(DropReason::Shutdown);
                    }
                }
                // One timer for both the heartbeat and the lifetime: each is state every idle
                // client holds.
                _ = tokio::time::sleep_until(next_beat.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Some(DropReason::Lifetime);
                    }
                    if let Err(end) = self.put(Frame::Heartbeat).await {
                        return end;
                    }
                    next_beat = Instant::now() + self.heartbeat;
                }
                _ = self.closing.cancelled() => return Some(DropReason::Shutdown),
                _ = self.tx.closed() => return None,
            }
        }
    }
}

/// The watcher of one telemetry tail (`crate::telemetry::tail`), whose frames the tail hub
/// offers without waiting: heartbeats when due (skipped when the buffer is full: the client is
/// behind anyway), a pending `lagged` note, and the end of the stream at its lifetime or on
/// shutdown; it forgets the tail when the client leaves.
pub(crate) struct TailWatch {
    pub hub: Arc<crate::telemetry::tail::TailHub>,
    pub id: u64,
    pub tx: mpsc::Sender<Frame>,
    pub shared: Arc<Shared>,
    pub transport: Transport,
    pub closing: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Duration,
    pub lifetime: Duration,
}

impl TailWatch {
    pub async fn run(self) {
        let gauge = self
            .metrics
            .realtime_connections
            .with_label_values(&[self.transport.as_str()]);
        gauge.inc();
        let deadline = Instant::now() + self.lifetime;
        let outcome = loop {
            tokio::select! {
                _ = self.tx.closed() => break None,
                _ = tokio::time::sleep(self.heartbeat) => {
                    self.hub.flush(self.id);
                    let _ = self.tx.try_send(Frame::Heartbeat);
                }
                _ = tokio::time::sleep_until(deadline) => break Some(DropReason::Lifetime),
                _ = self.closing.cancelled() => break Some(DropReason::Shutdown),
            }
        };
        self.hub.remove(self.id);
        gauge.dec();
        if let Some(reason) = outcome {
            let _ = self.shared.reason.set(reason);
            self.metrics
                .realtime_dropped
                .with_label_values(&[reason.as_str()])
                .inc();
            self.shared.dropped.cancel();
        }
    }
}
