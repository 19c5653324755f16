//! Group commit. Requests hand their events to a queue; a writer task takes everything
//! queued (up to `max_batch_events`) and commits it in one transaction, so concurrent
//! requests share one fsync. Each caller is answered only after the transaction holding its
//! events has committed. Idempotency keys and webhook message ids are checked inside the
//! same transaction, so a retry can never store an event twice. Each caller's wait is a span
//! (`outbox append`) that records the size of the group commit it rode in.
//!
//! No caller hurts another, and none waits without bound:
//! - a batch that fails because of one job's data is retried job by job, so only that job
//!   gets the error (`Rejected`, a 400: the store cannot hold its data);
//! - a full queue (`queue_depth` requests or `max_queued_bytes` bytes) refuses new work at
//!   once (`Overloaded`, a 503 with `Retry-After`) instead of making callers wait;
//! - a transaction that cannot begin within `store_timeout_ms` (the store is lost) fails the
//!   batch at once (`Store`, a 503);
//! - a writer that panics answers its batch (`Internal`) and keeps running, so neither
//!   callers nor shutdown wait for it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use sqlx::Row;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use super::{NewEvent, Outbox};
use crate::config::GroupCommitConfig;
use crate::on_tx;
use crate::store::{Backend, Fault, Store, StoreError, Tx, now_micros};

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

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The store is away (or did not answer in time): retry later.
    #[error("store unavailable: {0}")]
    Store(String),
    /// The store cannot hold this request's data (e.g. an invalid byte sequence): the
    /// client's fault, retrying cannot help.
    #[error("the store refused the data: {0}")]
    Rejected(String),
    /// The queue is full (`requests` or `bytes`): retry later.
    #[error("group commit is overloaded ({0})")]
    Overloaded(&'static str),
    /// The writer failed unexpectedly (a panic); the outcome is unknown.
    #[error("group commit failed: {0}")]
    Internal(String),
    #[error("shutting down")]
    Closed,
}

impl AppendError {
    /// A short reason for metrics and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            AppendError::Store(_) | AppendError::Closed => "unavailable",
            AppendError::Rejected(_) => "rejected_by_store",
            AppendError::Overloaded(_) => "overloaded",
            AppendError::Internal(_) => "internal",
        }
    }

    fn from_store(e: &StoreError) -> Self {
        match e.fault() {
            Fault::Data => AppendError::Rejected(e.to_string()),
            Fault::Unavailable | Fault::Other => AppendError::Store(e.to_string()),
        }
    }
}

/// Bytes of queued work, released when the job is dropped (answered, or dropped unanswered).
struct Reservation {
    queued: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

struct Job {
    req: AppendRequest,
    /// Each event's headers as JSON, serialized by the caller (in parallel) rather than by
    /// the writer (serial).
    headers: Vec<String>,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
    /// The caller's `outbox append` span.
    span: tracing::Span,
    _bytes: Reservation,
}

/// What the writers share: the store, the outbox, and the limits.
struct Writer {
    store: Store,
    outbox: Outbox,
    max_batch: usize,
    store_timeout: Duration,
    /// FOR TESTING ONLY: batches left that panic (`inject_writer_panics`).
    panics: AtomicU32,
}

/// Counts live writers; the last one to stop (however it stops) wakes `close`.
struct Live {
    live: Arc<AtomicUsize>,
    done: Arc<tokio::sync::Notify>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.done.notify_waiters();
        }
    }
}

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Job>,
    closing: CancellationToken,
    done: Arc<tokio::sync::Notify>,
    writers: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    queue_depth: usize,
}

/// Memory a request pins while queued: its events' payloads, keys and headers.
fn job_bytes(req: &AppendRequest, headers: &[String]) -> usize {
    let events: usize = req
        .events
        .iter()
        .map(|e| e.payload.len() + e.key.len() + e.topic.len() + e.event_id.len() + 64)
        .sum();
    events + headers.iter().map(String::len).sum::<usize>()
}

impl Appender {
    /// Starts the writer tasks (one on SQLite, which has a single writer anyway).
    pub fn start(store: Store, outbox: Outbox, cfg: &GroupCommitConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(cfg.queue_depth.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let writers = if store.backend() == Backend::Sqlite {
            1
        } else {
            cfg.writers.max(1)
        };
        let closing = CancellationToken::new();
        let done = Arc::new(tokio::sync::Notify::new());
        let live = Arc::new(AtomicUsize::new(writers));
        let writer = Arc::new(Writer {
            store,
            outbox,
            max_batch: cfg.max_batch_events.max(1),
            store_timeout: Duration::from_millis(cfg.store_timeout_ms.max(1)),
            panics: AtomicU32::new(cfg.inject_writer_panics),
        });
        for _ in 0..writers {
            let guard = Live {
                live: live.clone(),
                done: done.clone(),
            };
            tokio::spawn(writer_loop(
                rx.clone(),
                writer.clone(),
                closing.clone(),
                guard,
            ));
        }
        Self {
            tx,
            closing,
            done,
            writers: live,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_queued_bytes: cfg.max_queued_bytes.max(1),
            queue_depth: cfg.queue_depth.max(1),
        }
    }

    /// Requests and bytes waiting for a writer (requests being written count as bytes until
    /// they are answered).
    pub fn queued(&self) -> (usize, usize) {
        (
            self.queue_depth - self.tx.capacity(),
            self.queued_bytes.load(Ordering::SeqCst),
        )
    }

    /// Reserves `bytes` of queued work; refused when the bound would be passed (a request
    /// larger than the bound alone is let through when nothing else is queued).
    fn reserve(&self, bytes: usize) -> Result<Reservation, AppendError> {
        let before = self.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        let r = Reservation {
            queued: self.queued_bytes.clone(),
            bytes,
        };
        if before > 0 && before + bytes > self.max_queued_bytes {
            return Err(AppendError::Overloaded("bytes"));
        }
        Ok(r)
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
        let headers: Vec<String> = req
            .events
            .iter()
            .map(|e| super::headers_json(&e.headers))
            .collect();
        let bytes = self.reserve(job_bytes(&req, &headers))?;
        let job = Job {
            req,
            headers,
            reply,
            span: span.clone(),
            _bytes: bytes,
        };
        async move {
            // Never wait for room: a full queue is shed at once (the caller answers 503).
            self.tx.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::Overloaded("requests"),
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?;
            rx.await.map_err(|_| AppendError::Closed)?
        }
        .instrument(span)
        .await
    }

    /// Stops taking new work, commits what is queued, and waits for the writers to finish.
    pub async fn close(&self) {
        let notified = self.done.notified();
        self.closing.cancel();
        if self.writers.load(Ordering::SeqCst) > 0 {
            notified.await;
        }
    }
}

/// Takes the next batch: waits for one job, then adds what is queued up to `max_batch`
/// events. `None` once the queue is closed and drained.
async fn next_batch(
    rx: &Mutex<mpsc::Receiver<Job>>,
    max_batch: usize,
    closing: &CancellationToken,
) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = tokio::select! {
        biased;
        j = rx.recv() => j,
        _ = closing.cancelled() => {
            rx.close();
            rx.recv().await
        }
    };
    let first = first?;
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
    Some(batch)
}

async fn writer_loop(
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    w: Arc<Writer>,
    closing: CancellationToken,
    _live: Live,
) {
    while let Some(batch) = next_batch(&rx, w.max_batch, &closing).await {
        let events: usize = batch.iter().map(|j| j.req.events.len()).sum();
        for job in &batch {
            job.span.record("outbox.batch_events", events as i64);
            job.span.record("outbox.batch_requests", batch.len() as i64);
        }
        // A panic answers this batch and leaves the writer running: callers are never left
        // waiting, and shutdown still finds every writer.
        let results = match AssertUnwindSafe(w.write(&batch)).catch_unwind().await {
            Ok(results) => results,
            Err(_) => {
                tracing::error!(jobs = batch.len(), "group-commit writer panicked");
                vec![Err(AppendError::Internal("the writer panicked".into())); batch.len()]
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            if result.is_err() {
                job.span.record("otel.status_code", "ERROR");
            }
            let _ = job.reply.send(result);
        }
    }
}

impl Writer {
    /// Commits the batch (see `commit_or_split`).
    async fn write(&self, batch: &[Job]) -> Vec<Result<AppendOutcome, AppendError>> {
        if self.panics.load(Ordering::Relaxed) > 0
            && self
                .panics
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!(
                "injected group-commit writer panic (gateway.group_commit.inject_writer_panics)"
            );
        }
        commit_or_split(batch, |jobs| {
            commit_batch(&self.store, &self.outbox, jobs, self.store_timeout).boxed()
        })
        .await
    }
}

/// Commits `jobs` in one transaction with `commit`. When that fails for a reason other than
/// the store being away (some job's data, a constraint), each job is retried in a
/// transaction of its own, so only the bad one gets the error; when the store is away, every
/// job gets it at once (retrying one by one would only multiply the wait).
async fn commit_or_split<'a, T, F>(
    jobs: &'a [T],
    commit: F,
) -> Vec<Result<AppendOutcome, AppendError>>
where
    F: Fn(&'a [T]) -> futures::future::BoxFuture<'a, Result<Vec<AppendOutcome>, StoreError>>,
{
    match commit(jobs).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if jobs.len() > 1 && e.fault() != Fault::Unavailable => {
            tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; retrying job by job");
            let mut results = Vec::with_capacity(jobs.len());
            for one in jobs.chunks(1) {
                results.push(match commit(one).await {
                    Ok(mut o) => Ok(o.pop().unwrap_or(AppendOutcome::Committed)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a group-commit job failed on its own");
                        Err(AppendError::from_store(&e))
                    }
                });
            }
            results
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = jobs.len(), "group commit failed");
            vec![Err(AppendError::from_store(&e)); jobs.len()]
        }
    }
}

async fn commit_batch(
    store: &Store,
    outbox: &Outbox,
    batch: &[Job],
    store_timeout: Duration,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut tx = store.begin_within(store_timeout).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A database error with a SQLite result code, as the driver would report it.
    #[derive(Debug)]
    struct FakeDbError(&'static str);

    impl std::fmt::Display for FakeDbError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fake error {}", self.0)
        }
    }

    impl std::error::Error for FakeDbError {}

    impl sqlx::error::DatabaseError for FakeDbError {
        fn message(&self) -> &str {
            "fake"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db_error(code: &'static str) -> StoreError {
        StoreError::Db(sqlx::Error::Database(Box::new(FakeDbError(code))))
    }

    /// A fake store: a transaction holding job `bad` fails with `error`; it records the
    /// transactions it was asked for.
    async fn run(
        jobs: &[u32],
        bad: u32,
        error: fn() -> StoreError,
    ) -> (Vec<Result<AppendOutcome, AppendError>>, Vec<Vec<u32>>) {
        let calls = StdMutex::new(Vec::new());
        let results = commit_or_split(jobs, |js: &[u32]| {
            calls.lock().unwrap().push(js.to_vec());
            let failed = js.contains(&bad);
            let n = js.len();
            async move {
                if failed {
                    Err(error())
                } else {
                    Ok(vec![AppendOutcome::Committed; n])
                }
            }
            .boxed()
        })
        .await;
        (results, calls.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_bad_job_fails_alone() {
        // SQLITE_TOOBIG: the data cannot be stored, the client's fault.
        let (results, calls) = run(&[1, 2, 3, 4], 3, || db_error("18")).await;
        assert_eq!(
            calls,
            vec![vec![1, 2, 3, 4], vec![1], vec![2], vec![3], vec![4]]
        );
        assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
        assert!(
            matches!(results[2], Err(AppendError::Rejected(_))),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn other_failures_are_split_too_but_answer_503() {
        // A constraint (SQLITE_CONSTRAINT_UNIQUE): not the store being away.
        let (results, calls) = run(&[1, 2], 2, || db_error("2067")).await;
        assert_eq!(calls.len(), 3);
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(AppendError::Store(_))),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn a_lost_store_fails_the_batch_at_once() {
        let (results, calls) = run(&[1, 2, 3], 1, || {
            StoreError::Timeout(Duration::from_secs(2))
        })
        .await;
        // With the store away nothing is retried: one transaction, every job answered 503.
        let (results2, calls2) = run(&[1, 2, 3], 1, || db_error("5")).await;
        assert_eq!((calls.len(), calls2.len()), (1, 1));
        for r in results.iter().chain(&results2) {
            assert!(matches!(r, Err(AppendError::Store(_))), "{r:?}");
        }
    }

    #[test]
    fn faults() {
        assert_eq!(db_error("18").fault(), Fault::Data);
        assert_eq!(db_error("5").fault(), Fault::Unavailable);
        assert_eq!(db_error("266").fault(), Fault::Unavailable); // SQLITE_IOERR_READ
        assert_eq!(db_error("2067").fault(), Fault::Other);
        assert_eq!(
            StoreError::Db(sqlx::Error::PoolTimedOut).fault(),
            Fault::Unavailable
        );
    }
}
