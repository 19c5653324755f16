//! Live tails: an org's log lines (`GET /api/v1/tail/logs`) and alert transitions
//! (`GET /api/v1/tail/alerts`) as they are accepted, over the realtime streams (SSE and
//! WebSocket, `crate::realtime`: same transports, heartbeats, lifetimes, shutdown and auth).
//!
//! **Feed.** One reader per process follows the outbox table, the topics
//! `internal.telemetry.batches` and `internal.alerts.transitions`, from the end, by id (the
//! `outbox_topic_id` index), woken by the outbox signal (commits in this process, PostgreSQL
//! NOTIFY from others) with a fallback poll. The outbox is where every accepted batch and every
//! transition is durable first, on both log columns (with Kafka it keeps relayed rows for
//! `log.retention_hours`), so a tail sees what any instance accepted, whichever instance runs
//! the `telemetry` group or the evaluator; publishing from the telemetry writer after its
//! commit would only reach tails in the process that happens to hold the org's partition, and
//! a consumer group per instance would leave positions behind for every instance that ever
//! ran. Costs: the reader only runs while a tail is open (it starts with the first and stops
//! after the last); an event is decoded only when its org (the event key) has a tail of that
//! kind, and a claim-checked batch is fetched from the object store only then, and only when
//! it holds log lines.
//!
//! **No gaps.** With the Kafka log on PostgreSQL, appends are not serialized, so outbox ids
//! commit out of order: a row can become visible after the reader's cursor passed its id.
//! The reader then also looks below its cursor, at ids that may still fill, until
//! PostgreSQL's transaction horizon says they cannot (`gaps.rs`); each row is delivered once.
//! The embedded log (appends serialized) and SQLite (one writer) need none of it.
//!
//! **Slow clients.** Each tail has a bounded buffer (`telemetry.tail.client_buffer`); the
//! reader never waits for a client: what does not fit is counted, and the tail gets one
//! `lagged` event `{"dropped": n}` before the next event that fits (or at the next heartbeat).
//! Memory is bounded per tail and by the global and per-org tail limits.

pub mod config;
pub mod filter;
pub mod gaps;
pub mod http;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

pub use config::TailConfig;

use crate::app::AppContext;
use crate::http::error::ApiError;
use crate::realtime::stream::Frame;
use crate::store::{Store, StoreError, dialect};
use crate::telemetry::model::{LogLine, labels_json};
use crate::telemetry::store::read::LogFilter;

/// What a tail follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logs,
    Alerts,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Logs => "logs",
            Kind::Alerts => "alerts",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{scope} limit of {limit} open tails reached")]
    Full { scope: &'static str, limit: usize },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<TailError> for ApiError {
    fn from(e: TailError) -> Self {
        let reason = e.to_string();
        match e {
            TailError::Full { scope, limit } => {
                ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "too_many_tails")
                    .with("scope", scope)
                    .with("limit", limit)
                    .with("reason", reason)
            }
            TailError::Store(s) => s.into(),
        }
    }
}

/// One open tail.
struct Sub {
    org: String,
    kind: Kind,
    filter: LogFilter,
    tx: mpsc::Sender<Frame>,
    /// Events this tail missed (its buffer was full) and has not been told of yet.
    missed: u64,
}

impl Sub {
    fn send(&self, event: &'static str, json: Arc<str>) -> Result<(), TrySendError<Frame>> {
        self.tx.try_send(Frame::Event { event, json })
    }

    /// Tells the tail what it missed, if anything; `false` when that does not fit either.
    fn flush(&mut self) -> Result<bool, ()> {
        if self.missed == 0 {
            return Ok(true);
        }
        let note: Arc<str> = json!({ "dropped": self.missed }).to_string().into();
        match self.send("lagged", note) {
            Ok(()) => {
                self.missed = 0;
                Ok(true)
            }
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Closed(_)) => Err(()),
        }
    }

    /// Offers one event without waiting; `false` when the client is gone.
    fn offer(&mut self, event: &'static str, json: Arc<str>) -> bool {
        match self.flush() {
            Err(()) => return false,
            Ok(false) => {
                self.missed += 1;
                return true;
            }
            Ok(true) => {}
        }
        match self.send(event, json) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// The process's tails and the reader that feeds them.
pub struct TailHub {
    cfg: TailConfig,
    subs: Mutex<HashMap<u64, Sub>>,
    next_id: AtomicU64,
    /// Whether the reader runs. Held while a tail is added and while the reader decides to
    /// stop, so a new tail never lands between the reader's last look and its exit.
    running: tokio::sync::Mutex<bool>,
    closing: CancellationToken,
    /// Delivered ids the reader keeps below its cursor to fill gaps (`gaps::Window::len`).
    gap_ids: AtomicUsize,
}

/// A new tail: its id, the receiving end, and a sender for heartbeats.
pub struct Opened {
    pub id: u64,
    pub rx: mpsc::Receiver<Frame>,
    pub tx: mpsc::Sender<Frame>,
}

impl TailHub {
    pub fn new(cfg: &TailConfig, closing: CancellationToken) -> Self {
        Self {
            cfg: cfg.clone(),
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            running: tokio::sync::Mutex::new(false),
            closing,
            gap_ids: AtomicUsize::new(0),
        }
    }

    /// Opens a tail of `org`'s `kind`; it receives what is appended from now on.
    pub async fn subscribe(
        self: &Arc<Self>,
        ctx: &AppContext,
        org: String,
        kind: Kind,
        filter: LogFilter,
    ) -> Result<Opened, TailError> {
        let mut running = self.running.lock().await;
        self.check_limits(&org)?;
        if !*running {
            // The reader starts at the log's current end, read before the client is
            // answered: whatever is appended after the client connected is after it.
            let head = head(&ctx.store).await?;
            tokio::spawn(self.clone().read(ctx.clone(), head));
            *running = true;
        }
        let (tx, rx) = mpsc::channel(self.cfg.client_buffer.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subs.lock().insert(
            id,
            Sub {
                org,
                kind,
                filter,
                tx: tx.clone(),
                missed: 0,
            },
        );
        Ok(Opened { id, rx, tx })
    }

    fn check_limits(&self, org: &str) -> Result<(), TailError> {
        let mut subs = self.subs.lock();
        subs.retain(|_, s| !s.tx.is_closed());
        if subs.len() >= self.cfg.max_subscribers {
            return Err(TailError::Full {
                scope: "process",
                limit: self.cfg.max_subscribers,
            });
        }
        if subs.values().filter(|s| s.org == org).count() >= self.cfg.max_subscribers_per_org {
            return Err(TailError::Full {
                scope: "org",
                limit: self.cfg.max_subscribers_per_org,
            });
        }
        Ok(())
    }

    /// Forgets a tail (its client left or was ended).
    pub fn remove(&self, id: u64) {
        self.subs.lock().remove(&id);
    }

    /// Sends a tail its pending `lagged` note, if it fits now (called on heartbeats, so a
    /// client that caught up learns of its gap without waiting for the next event).
    pub fn flush(&self, id: u64) {
        if let Some(s) = self.subs.lock().get_mut(&id) {
            let _ = s.flush();
        }
    }

    /// Open tails (for tests and metrics).
    pub fn open_tails(&self) -> usize {
        self.subs.lock().len()
    }

    /// Ids the reader keeps below its cursor while they may still fill (for tests and
    /// metrics): 0 once the horizon passed every read, or when no gaps are possible.
    pub fn gap_ids(&self) -> usize {
        self.gap_ids.load(Ordering::Relaxed)
    }

    fn wanted(&self, org: &str, kind: Kind) -> bool {
        self.subs
            .lock()
            .values()
            .any(|s| s.kind == kind && s.org == org && !s.tx.is_closed())
    }

    /// Offers `lines` of `org` to its log tails whose filter they pass; each line's JSON is
    /// built once, for the first tail that takes it.
    fn deliver_lines(&self, org: &str, lines: &[LogLine]) {
        let mut subs = self.subs.lock();
        let mut gone = Vec::new();
        for line in lines {
            let mut body: Option<Arc<str>> = None;
            for (id, s) in subs.iter_mut() {
                if s.kind != Kind::Logs || s.org != org || !filter::matches(&s.filter, line) {
                    continue;
                }
                let j = body.get_or_insert_with(|| line_json(line)).clone();
                if !s.offer("log", j) {
                    gone.push(*id);
                }
            }
        }
        for id in gone {
            subs.remove(&id);
        }
    }

    /// Offers one alert transition of `org` to its alert tails.
    fn deliver_alert(&self, org: &str, body: Arc<str>) {
        self.subs.lock().retain(|_, s| {
            s.kind != Kind::Alerts || s.org != org || s.offer("alert", body.clone())
        });
    }
}

/// A log line as the tail sends it: the shape of `POST /api/v1/query/logs`' lines.
fn line_json(l: &LogLine) -> Arc<str> {
    let labels: Value = serde_json::from_str(&labels_json(&l.labels)).unwrap_or(Value::Null);
    let attributes: Value = if l.attributes.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&l.attributes).unwrap_or(Value::Null)
    };
    json!({
        "time": crate::telemetry::query::rfc3339_nanos(l.ts_ns), "ts_ns": l.ts_ns,
        "service": l.service, "level": l.level, "message": l.message,
        "labels": labels, "attributes": attributes,
    })
    .to_string()
    .into()
}

/// The topics the tails follow.
fn topics() -> [&'static str; 2] {
    [crate::telemetry::ingest::TOPIC, crate::alerts::event::TOPIC]
}

/// The id of the newest outbox row (0 when empty).
async fn head(store: &Store) -> Result<i64, StoreError> {
    let max: Option<i64> = crate::on_read!(store, p => {
        sqlx::query_scalar("SELECT MAX(id) FROM outbox")
            .fetch_one(p)
            .await?
    });
    Ok(max.unwrap_or(0))
}

/// One outbox row the tails may want.
#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    event_key: String,
    payload: Vec<u8>,
}

/// `SELECT cols` of the tails' topics' rows whose id passes `conds` (`[">", "<="]`: one
/// bound value each), in id order, at most `limit`: one index range scan per topic, merged
/// (as the embedded log reads, for the same reason: an `OR`/`IN` over topics makes both
/// stores collect every row ahead). Each topic binds its name, then one value per condition.
fn per_topic_sql(cols: &str, conds: &[&str], limit: Option<usize>) -> String {
    let per = 1 + conds.len();
    let limit = limit
        .map(|m| format!(" ORDER BY id LIMIT {m}"))
        .unwrap_or_default();
    let branches: Vec<String> = (0..topics().len())
        .map(|i| {
            let base = i * per;
            let range: String = conds
                .iter()
                .enumerate()
                .map(|(j, op)| format!(" AND id {op} ${}", base + j + 2))
                .collect();
            format!(
                "SELECT {cols} FROM (SELECT {cols} FROM outbox WHERE topic = ${}{range}{limit}) t{i}",
                base + 1
            )
        })
        .collect();
    let order = if limit.is_empty() {
        " ORDER BY id".to_string()
    } else {
        limit
    };
    format!("{}{order}", branches.join(" UNION ALL "))
}

const ROW_COLUMNS: &str = "id, topic, event_key, payload";

/// The next rows of the tails' topics after `after`, in id order.
async fn fetch(store: &Store, after: i64, max: usize) -> Result<Vec<Row>, StoreError> {
    let sql = per_topic_sql(ROW_COLUMNS, &[">"], Some(max));
    let rows: Vec<Row> = crate::on_read!(store, p => {
        let mut q = sqlx::query_as::<_, Row>(&sql);
        for t in topics() {
            q = q.bind(t).bind(after);
        }
        q.fetch_all(p).await?
    });
    Ok(rows)
}

/// The ids (only: no payloads) of the tails' topics' rows visible now in `(floor, upto]`.
async fn visible_ids(store: &Store, floor: i64, upto: i64) -> Result<Vec<i64>, StoreError> {
    let sql = per_topic_sql("id", &[">", "<="], None);
    let ids: Vec<i64> = crate::on_read!(store, p => {
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for t in topics() {
            q = q.bind(t).bind(floor).bind(upto);
        }
        q.fetch_all(p).await?
    });
    Ok(ids)
}

/// The rows with these ids (the tails' topics' ids found late), in id order.
async fn rows_by_id(store: &Store, ids: &[i64]) -> Result<Vec<Row>, StoreError> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        // Integers, spliced: nothing from outside goes into the SQL.
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SELECT {ROW_COLUMNS} FROM outbox WHERE id IN ({list}) ORDER BY id");
        let found: Vec<Row> = crate::on_read!(store, p => {
            sqlx::query_as::<_, Row>(&sql).fetch_all(p).await?
        });
        rows.extend(found);
    }
    Ok(rows)
}

/// The reader's gap filling (`gaps.rs`), where rows can commit out of id order.
struct Filler {
    window: gaps::Window,
    /// When the reader last warned of a full window (at most once a minute).
    warned: Option<Instant>,
}

impl TailHub {
    /// The reader: follows the outbox from `cursor` while any tail is open.
    async fn read(self: Arc<Self>, ctx: AppContext, mut cursor: i64) {
        let mut wake = ctx.outbox.signal.subscribe();
        let poll = Duration::from_millis(self.cfg.poll_ms.max(10));
        let max = self.cfg.read_batch.max(1);
        let mut backoff = Duration::from_millis(50);
        // The embedded log serializes appends: its ids become visible in order.
        let mut filler = (!ctx.outbox.embedded_log).then(|| Filler {
            window: gaps::Window::new(cursor, self.cfg.gap_window.max(max)),
            warned: None,
        });
        loop {
            if self.closing.is_cancelled() {
                break;
            }
            if self.stop_if_idle().await {
                // `running` is already false: a tail opened from now on starts a new reader.
                self.gap_ids.store(0, Ordering::Relaxed);
                return;
            }
            wake.borrow_and_update();
            match self.step(&ctx, &mut cursor, &mut filler, max).await {
                Ok(full) => {
                    backoff = Duration::from_millis(50);
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "telemetry tail cannot read the outbox; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.closing.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.closing.cancelled() => break,
            }
        }
        // Shutting down.
        self.gap_ids.store(0, Ordering::Relaxed);
        *self.running.lock().await = false;
    }

    /// One read: the rows after `cursor`, then the gaps below it. `true` when the read was
    /// full (more may be waiting).
    async fn step(
        &self,
        ctx: &AppContext,
        cursor: &mut i64,
        filler: &mut Option<Filler>,
        max: usize,
    ) -> Result<bool, StoreError> {
        let rows = fetch(&ctx.store, *cursor, max).await?;
        let full = rows.len() >= max;
        for r in rows {
            *cursor = r.id;
            if let Some(f) = filler.as_mut() {
                f.window.saw(r.id);
            }
            self.dispatch(ctx, r).await;
        }
        self.fill_gaps(ctx, *cursor, filler).await?;
        Ok(full)
    }

    /// Delivers the rows below `cursor` that became visible since they were passed, and
    /// forgets the ids that can no longer fill (`gaps.rs`: the order of the horizon, the look
    /// and the settling is what makes it exact).
    async fn fill_gaps(
        &self,
        ctx: &AppContext,
        cursor: i64,
        filler: &mut Option<Filler>,
    ) -> Result<(), StoreError> {
        let Some(f) = filler.as_mut() else {
            return Ok(());
        };
        if f.window.open(cursor).is_none() {
            return Ok(());
        }
        // After the read, so it counts every transaction that held an id below the cursor.
        let Some(h) = dialect::xid_horizon(&ctx.store).await? else {
            // One writer at a time (SQLite): ids become visible in the order drawn.
            *filler = None;
            self.gap_ids.store(0, Ordering::Relaxed);
            return Ok(());
        };
        if let Some(o) = f.window.mark(cursor, h.xmax)
            && f.warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            f.warned = Some(Instant::now());
            tracing::warn!(
                given_up = o.given_up,
                floor = o.floor,
                window = self.cfg.gap_window,
                "telemetry tail: a long-running transaction holds PostgreSQL's horizon back; \
                 rows committed below the floor from now on will not reach tails"
            );
        }
        if let Some((floor, upto)) = f.window.open(cursor) {
            let late = f.window.unseen(visible_ids(&ctx.store, floor, upto).await?);
            if !late.is_empty() {
                for r in rows_by_id(&ctx.store, &late).await? {
                    f.window.saw(r.id);
                    self.dispatch(ctx, r).await;
                }
            }
        }
        // The look above came after the horizon: what it did not find below a passed mark
        // will never be visible.
        f.window.settle(h.xmin);
        self.gap_ids.store(f.window.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Stops the reader when no tail is open (under the start lock; see `running`).
    async fn stop_if_idle(&self) -> bool {
        let mut running = self.running.lock().await;
        let mut subs = self.subs.lock();
        subs.retain(|_, s| !s.tx.is_closed());
        if subs.is_empty() {
            *running = false;
            return true;
        }
        false
    }

    /// Hands one outbox row to the tails that want it.
    async fn dispatch(&self, ctx: &AppContext, row: Row) {
        if row.topic == crate::telemetry::ingest::TOPIC {
            let org = row.event_key;
            if !self.wanted(&org, Kind::Logs) {
                return;
            }
            match batch_lines(ctx, &org, &row.payload).await {
                Ok(lines) => self.deliver_lines(&org, &lines),
                Err(e) => {
                    tracing::warn!(offset = row.id, error = %e, "telemetry tail skips a batch")
                }
            }
        } else {
            // `{org}/{rule}`; org ids hold no `/`.
            let Some((org, _)) = row.event_key.split_once('/') else {
                return;
            };
            if !self.wanted(org, Kind::Alerts) {
                return;
            }
            match ctx.schemas.decode_json(&row.payload).await {
                // The payload's org is the truth; the key only says whether to decode.
                Ok(v) if v.get("org").and_then(Value::as_str) == Some(org) => {
                    self.deliver_alert(org, v.to_string().into());
                }
                Ok(_) => {
                    tracing::warn!(offset = row.id, "alert transition whose key and org differ")
                }
                Err(e) => {
                    tracing::warn!(offset = row.id, error = %e, "telemetry tail skips a transition")
                }
            }
        }
    }
}

/// The log lines of a batch event (none without decoding when the event says it has none).
async fn batch_lines(ctx: &AppContext, org: &str, payload: &[u8]) -> Result<Vec<LogLine>, String> {
    let v = ctx
        .schemas
        .decode_json(payload)
        .await
        .map_err(|e| e.to_string())?;
    // The payload's org is the truth; the key only said whether to decode.
    if v.get("org").and_then(Value::as_str) != Some(org) {
        return Err("the batch's key and org differ".into());
    }
    if v.get("lines").and_then(Value::as_i64) == Some(0) {
        return Ok(Vec::new());
    }
    crate::telemetry::store::load_batch(&ctx.objects, &v)
        .await
        .map(|b| b.logs)
        .map_err(|e| e.to_string())
}
