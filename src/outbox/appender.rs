//! Group commit. Requests hand their events to a queue; a writer task takes everything
//! queued (up to `max_batch_events`) and commits it in one transaction, so concurrent
//! requests share one fsync. Each caller is answered only after the transaction holding its
//! events has committed. Idempotency keys and webhook message ids are checked inside the
//! same transaction, so a retry can never store an event twice. Each caller's wait is a span
//! (`outbox append`) that records the size of the group commit it rode in.

use std::sync::Arc;

use sqlx::Row;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use super::{NewEvent, Outbox};
use crate::on_tx;
use crate::store::{Backend, Store, StoreError, Tx, now_micros};

/// What makes a request a one-time write.
#[derive(Debug, Clone)]
pub enum Guard {
    /// `Idempotency-Key`: the same key and body replay `response`; another body conflicts.
    Idempotency {
        principal: String,
        key: String,
        fingerprint: String,
        response: String,
    },
    /// A webhook message id that may be accepted once.
    WebhookMessage { webhook: String, msg_id: String },
}

#[derive(Debug)]
pub struct AppendRequest {
    pub events: Vec<NewEvent>,
    pub guard: Option<Guard>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events are committed.
    Committed,
    /// The idempotency key was used before with the same body; this was the answer.
    Replayed { response: String },
    /// The idempotency key was used before with a different body.
    KeyConflict,
    /// The webhook message id was seen before.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("store unavailable: {0}")]
    Store(String),
    #[error("shutting down")]
    Closed,
}

struct Job {
    req: AppendRequest,
    /// Each event's headers as JSON, serialized by the caller (in parallel) rather than by
    /// the writer (serial).
    headers: Vec<String>,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
    /// The caller's `outbox append` span.
    span: tracing::Span,
}

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Job>,
    closing: CancellationToken,
    done: Arc<tokio::sync::Notify>,
    writers: Arc<std::sync::atomic::AtomicUsize>,
}

impl Appender {
    /// Starts `writers` writer tasks (one on SQLite, which has a single writer anyway).
    pub fn start(
        store: Store,
        outbox: Outbox,
        writers: usize,
        max_batch_events: usize,
        queue_depth: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(queue_depth.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let writers = if store.backend() == Backend::Sqlite {
            1
        } else {
            writers.max(1)
        };
        let closing = CancellationToken::new();
        let done = Arc::new(tokio::sync::Notify::new());
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(writers));
        for _ in 0..writers {
            let rx = rx.clone();
            let store = store.clone();
            let outbox = outbox.clone();
            let closing = closing.clone();
            let done = done.clone();
            let live = live.clone();
            tokio::spawn(async move {
                writer_loop(rx, store, outbox, max_batch_events.max(1), closing).await;
                if live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                    done.notify_waiters();
                }
            });
        }
        Self {
            tx,
            closing,
            done,
            writers: live,
        }
    }

    pub async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let span = tracing::info_span!(
            "outbox.append",
            otel.name = "outbox append",
            otel.status_code = Empty,
            "outbox.events" = req.events.len() as i64,
            "outbox.batch_events" = Empty,
            "outbox.batch_requests" = Empty,
        );
        let (reply, rx) = oneshot::channel();
        let headers = req
            .events
            .iter()
            .map(|e| super::headers_json(&e.headers))
            .collect();
        let job = Job {
            req,
            headers,
            reply,
            span: span.clone(),
        };
        async move {
            self.tx.send(job).await.map_err(|_| AppendError::Closed)?;
            rx.await.map_err(|_| AppendError::Closed)?
        }
        .instrument(span)
        .await
    }

    /// Stops taking new work, commits what is queued, and waits for the writers to finish.
    pub async fn close(&self) {
        let notified = self.done.notified();
        self.closing.cancel();
        if self.writers.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            notified.await;
        }
    }
}

async fn writer_loop(
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    store: Store,
    outbox: Outbox,
    max_batch: usize,
    closing: CancellationToken,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let first = tokio::select! {
                biased;
                j = rx.recv() => j,
                _ = closing.cancelled() => {
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(first) = first else { return };
            let mut n = first.req.events.len();
            let mut batch = vec![first];
            while n < max_batch {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.req.events.len();
                        batch.push(j);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let events: usize = batch.iter().map(|j| j.req.events.len()).sum();
        for job in &batch {
            job.span.record("outbox.batch_events", events as i64);
            job.span.record("outbox.batch_requests", batch.len() as i64);
        }
        match commit_batch(&store, &outbox, &batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "group commit failed");
                for job in batch {
                    job.span.record("otel.status_code", "ERROR");
                    let _ = job.reply.send(Err(AppendError::Store(e.to_string())));
                }
            }
        }
    }
}

async fn commit_batch(
    store: &Store,
    outbox: &Outbox,
    batch: &[Job],
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut tx = store.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows: Vec<(&NewEvent, &str)> = Vec::new();
    for job in batch {
        let outcome = match &job.req.guard {
            None => AppendOutcome::Committed,
            Some(g) => check_guard(&mut tx, g).await?,
        };
        if outcome == AppendOutcome::Committed {
            rows.extend(
                job.req
                    .events
                    .iter()
                    .zip(&job.headers)
                    .map(|(e, h)| (e, h.as_str())),
            );
        }
        outcomes.push(outcome);
    }
    outbox.append_rows(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(outcomes)
}

async fn check_guard(tx: &mut Tx, guard: &Guard) -> Result<AppendOutcome, StoreError> {
    let now = now_micros();
    match guard {
        Guard::Idempotency {
            principal,
            key,
            fingerprint,
            response,
        } => {
            let inserted = on_tx!(tx, c => {
                sqlx::query(
                    "INSERT INTO idempotency_keys (principal, idem_key, fingerprint, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (principal, idem_key) DO NOTHING",
                )
                .bind(principal)
                .bind(key)
                .bind(fingerprint)
                .bind(response)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected()
            });
            if inserted == 1 {
                return Ok(AppendOutcome::Committed);
            }
            let (fp, resp): (String, String) = on_tx!(tx, c => {
                let r = sqlx::query("SELECT fingerprint, response FROM idempotency_keys WHERE principal = $1 AND idem_key = $2")
                    .bind(principal)
                    .bind(key)
                    .fetch_one(&mut *c)
                    .await?;
                (r.try_get(0)?, r.try_get(1)?)
            });
            Ok(if &fp == fingerprint {
                AppendOutcome::Replayed { response: resp }
            } else {
                AppendOutcome::KeyConflict
            })
        }
        Guard::WebhookMessage { webhook, msg_id } => {
            let inserted = on_tx!(tx, c => {
                sqlx::query(
                    "INSERT INTO webhook_messages (webhook, msg_id, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (webhook, msg_id) DO NOTHING",
                )
                .bind(webhook)
                .bind(msg_id)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected()
            });
            Ok(if inserted == 1 {
                AppendOutcome::Committed
            } else {
                AppendOutcome::Duplicate
            })
        }
    }
}
