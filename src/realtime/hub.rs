//! The fan-out hub: one tail reader per process follows the `notifications` table by id and
//! keeps the newest rows (every user's) in memory; each stream reads its next rows by its own
//! cursor — from that buffer, or from the store when it is further behind — and waits on the
//! hub's head for more. Wake-ups come from commits in this process, PostgreSQL NOTIFY (other
//! processes) and a fallback poll. Every read is tied to the read model's epoch: a stream whose
//! epoch is not the store's gets [`Read::Reset`], never rows of another epoch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::projections::notifications::epoch::{self, Page};
use crate::projections::notifications::{self, NotificationRow, Viewer};
use crate::store::{Store, StoreError};

/// Rows the tail reader fetches per query.
const TAIL_BATCH: i64 = 1000;

/// One notification with its JSON forms, shared by every stream that delivers it: the whole
/// row (for its sender and admins) and, when the row has sender-only fields, the row without
/// them (for everyone else) — see `projections::notifications::view`.
#[derive(Debug)]
pub struct Entry {
    pub row: NotificationRow,
    full: Arc<str>,
    public: Option<Arc<str>>,
}

fn to_json(row: &NotificationRow) -> Arc<str> {
    serde_json::to_string(row)
        .unwrap_or_else(|_| "{}".into())
        .into()
}

impl Entry {
    pub fn new(row: NotificationRow) -> Arc<Entry> {
        let full = to_json(&row);
        let public = row.without_sender_fields().as_ref().map(to_json);
        Arc::new(Entry { row, full, public })
    }

    pub fn id(&self) -> i64 {
        self.row.id
    }

    /// The JSON form `viewer` may see.
    pub fn json_for(&self, viewer: &Viewer) -> Arc<str> {
        match &self.public {
            Some(p) if !self.row.shows_sender_fields_to(viewer) => p.clone(),
            _ => self.full.clone(),
        }
    }

    /// Bytes held by the JSON forms.
    fn bytes(&self) -> usize {
        self.full.len() + self.public.as_ref().map_or(0, |p| p.len())
    }
}

/// Every committed row of epoch `epoch` with `lo < id <= hi`, in id order (ids become visible
/// in order, so the tail is always a contiguous prefix of what will ever exist in the epoch).
struct Ring {
    epoch: i64,
    lo: i64,
    hi: i64,
    rows: VecDeque<Arc<Entry>>,
    /// JSON bytes held in `rows`.
    bytes: usize,
}

impl Ring {
    fn reset(&mut self, epoch: i64, at: i64) {
        self.rows.clear();
        self.bytes = 0;
        self.epoch = epoch;
        self.lo = at;
        self.hi = at;
    }
}

/// What one read returned: the visible rows (in order), how far the reader has looked
/// (every row up to `scanned` was either returned or is not visible to the user), and whether
/// it stopped early because it reached `max`.
pub struct Batch {
    pub rows: Vec<Arc<Entry>>,
    pub scanned: i64,
    pub more: bool,
}

/// What a stream's read gets.
pub enum Read {
    Rows(Batch),
    /// The stream's epoch is over (the read model was reset): it must start again at the
    /// beginning of this epoch.
    Reset(i64),
}

pub struct Hub {
    store: Store,
    ring: RwLock<Ring>,
    /// Bumped whenever the ring changes; streams wait on it when caught up.
    head: watch::Sender<u64>,
    /// Wakes the tail reader (PostgreSQL NOTIFY).
    wake: Notify,
    capacity: usize,
    capacity_bytes: usize,
    poll: Duration,
    started: AtomicBool,
    start_lock: tokio::sync::Mutex<()>,
    closing: CancellationToken,
}

impl Hub {
    pub fn new(
        store: Store,
        capacity: usize,
        capacity_bytes: usize,
        poll: Duration,
        closing: CancellationToken,
    ) -> Self {
        Self {
            store,
            ring: RwLock::new(Ring {
                epoch: epoch::INITIAL,
                lo: 0,
                hi: 0,
                rows: VecDeque::new(),
                bytes: 0,
            }),
            head: watch::channel(0).0,
            wake: Notify::new(),
            capacity: capacity.max(1),
            capacity_bytes: capacity_bytes.max(1),
            poll: poll.max(Duration::from_millis(10)),
            started: AtomicBool::new(false),
            start_lock: tokio::sync::Mutex::new(()),
            closing,
        }
    }

    /// A receiver whose `changed()` resolves when new rows arrive (or the ring is reset).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The id of the newest row the hub has seen.
    pub fn head_id(&self) -> i64 {
        self.ring.read().hi
    }

    /// The epoch the hub follows (it may lag the store's for a moment after a reset).
    pub fn epoch(&self) -> i64 {
        self.ring.read().epoch
    }

    /// Starts the tail reader (and the PostgreSQL listener) on first use.
    pub async fn ensure_started(self: &Arc<Self>) -> Result<(), StoreError> {
        if self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let _g = self.start_lock.lock().await;
        if self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let (epoch, max) = epoch::head(&self.store).await?;
        self.ring.write().reset(epoch, max);
        if let Some(pool) = self.store.pg_pool() {
            tokio::spawn(listen_pg(pool.clone(), self.clone()));
        }
        tokio::spawn(self.clone().tail());
        self.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `max` rows visible to `user` in `epoch` with id > `scanned`, oldest first; or
    /// [`Read::Reset`] when `epoch` is not the read model's epoch any more.
    pub async fn read(
        &self,
        user: &str,
        epoch: i64,
        scanned: i64,
        max: usize,
    ) -> Result<Read, StoreError> {
        let max = max.max(1);
        if let Some(b) = self.read_buffered(user, epoch, scanned, max) {
            return Ok(Read::Rows(b));
        }
        let (ring_epoch, hi) = {
            let ring = self.ring.read();
            (ring.epoch, ring.hi)
        };
        // Behind the buffer, or the buffer is in another epoch: ask the store, which answers
        // with the epoch of its rows.
        let Page { epoch: now, rows } =
            epoch::visible_page(&self.store, user, scanned, max as i64).await?;
        if now != epoch {
            return Ok(Read::Reset(now));
        }
        let more = rows.len() == max;
        let last = rows.last().map(|r| r.id).unwrap_or(scanned);
        // The store's snapshot is newer than `hi` was, so a short answer means every visible
        // row up to `hi` has been seen — when `hi` is of the same epoch.
        let scanned = if more || ring_epoch != epoch {
            last
        } else {
            last.max(hi).max(scanned)
        };
        Ok(Read::Rows(Batch {
            rows: rows.into_iter().map(Entry::new).collect(),
            scanned,
            more,
        }))
    }

    /// The same read as [`Hub::read`] when the buffer can answer it (the stream is in the
    /// hub's epoch and not behind the buffer), without an await: a caught-up stream, the
    /// common case, never builds the store read's future. `None`: ask [`Hub::read`].
    pub fn read_buffered(&self, user: &str, epoch: i64, scanned: i64, max: usize) -> Option<Batch> {
        let ring = self.ring.read();
        (ring.epoch == epoch && scanned >= ring.lo)
            .then(|| Self::from_ring(&ring, user, scanned, max.max(1)))
    }

    fn from_ring(ring: &Ring, user: &str, scanned: i64, max: usize) -> Batch {
        let start = ring.rows.partition_point(|e| e.id() <= scanned);
        let mut rows = Vec::new();
        for e in ring.rows.range(start..) {
            if e.row.visible_to(user) {
                rows.push(e.clone());
                if rows.len() == max {
                    let last = e.id();
                    return Batch {
                        rows,
                        scanned: last,
                        more: true,
                    };
                }
            }
        }
        Batch {
            rows,
            scanned: scanned.max(ring.hi),
            more: false,
        }
    }

    /// Reads what is new into the ring; returns whether there may be more right away.
    async fn pull(&self) -> Result<bool, StoreError> {
        let (epoch, hi) = {
            let r = self.ring.read();
            (r.epoch, r.hi)
        };
        let Page { epoch: now, rows } = epoch::tail_page(&self.store, hi, TAIL_BATCH).await?;
        if now != epoch {
            // The read model was reset (ids restart): follow the new epoch from its end; streams
            // learn of it on their next read, woken by the head moving.
            let (now, max) = epoch::head(&self.store).await?;
            self.ring.write().reset(now, max);
            self.head.send_modify(|n| *n = n.wrapping_add(1));
            tracing::info!(
                from = epoch,
                to = now,
                head = max,
                "notifications were reset; hub follows the new epoch"
            );
            return Ok(true);
        }
        if rows.is_empty() {
            return Ok(false);
        }
        let more = rows.len() as i64 == TAIL_BATCH;
        let entries: Vec<Arc<Entry>> = rows.into_iter().map(Entry::new).collect();
        {
            // Only this task changes the ring after start-up, so it is still in `epoch`.
            let mut r = self.ring.write();
            for e in entries {
                if e.id() > r.hi {
                    r.hi = e.id();
                    r.bytes += e.bytes();
                    r.rows.push_back(e);
                }
            }
            while r.rows.len() > self.capacity || r.bytes > self.capacity_bytes {
                let Some(old) = r.rows.pop_front() else { break };
                r.lo = old.id();
                r.bytes -= old.bytes();
            }
        }
        self.head.send_modify(|n| *n = n.wrapping_add(1));
        Ok(more)
    }

    async fn tail(self: Arc<Self>) {
        let mut local = notifications::local_changes();
        let mut backoff = Duration::from_millis(50);
        loop {
            local.borrow_and_update();
            match self.pull().await {
                Ok(true) => continue,
                Ok(false) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, "realtime hub cannot read notifications; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.closing.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                _ = local.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.closing.cancelled() => return,
            }
        }
    }
}

/// Wakes the hub on `NOTIFY substrate_notifications` (inserts by any process), reconnecting
/// as needed; after a reconnect it wakes the hub once, in case a notification was missed.
async fn listen_pg(pool: sqlx::PgPool, hub: Arc<Hub>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(notifications::PG_CHANNEL).await {
                Ok(()) => {
                    hub.wake.notify_one();
                    loop {
                        tokio::select! {
                            r = l.recv() => match r {
                                Ok(_) => hub.wake.notify_one(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "notifications listener lost its connection");
                                    break;
                                }
                            },
                            _ = hub.closing.cancelled() => return,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN substrate_notifications failed"),
            },
            Err(e) => tracing::debug!(error = %e, "notifications listener cannot connect"),
        }
        if pool.is_closed() || hub.closing.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = hub.closing.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::notifications::Notification;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig {
            url: crate::config::Secret::new(format!("sqlite://{}/t.db", dir.path().display())),
            ..Default::default()
        };
        let s = Store::connect(&cfg).await.unwrap();
        s.migrate().await.unwrap();
        (s, dir)
    }

    async fn add(s: &Store, i: usize, user: &str, visibility: &str) {
        let mut tx = s.begin().await.unwrap();
        notifications::insert(
            &mut tx,
            &Notification {
                event_id: format!("e{i}"),
                user_id: user.into(),
                event_type: "user.message".into(),
                payload: serde_json::json!({ "i": i }),
                visibility: visibility.into(),
                recipient_id: None,
                event_time: 0,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    fn ids(b: &Batch) -> Vec<i64> {
        b.rows.iter().map(|e| e.id()).collect()
    }

    fn rows(r: Read) -> Batch {
        match r {
            Read::Rows(b) => b,
            Read::Reset(e) => panic!("unexpected reset to epoch {e}"),
        }
    }

    #[tokio::test]
    async fn reads_from_the_buffer_or_the_store_and_follows_a_new_epoch() {
        let (s, _dir) = store().await;
        for i in 1..=4 {
            add(&s, i, "bob", "private").await;
        }
        let hub = Arc::new(Hub::new(
            s.clone(),
            3,
            1 << 20,
            Duration::from_secs(60),
            CancellationToken::new(),
        ));
        hub.ensure_started().await.unwrap();
        assert_eq!((hub.epoch(), hub.head_id()), (epoch::INITIAL, 4));
        let mut head = hub.subscribe();
        for i in 5..=9 {
            add(&s, i, if i % 2 == 0 { "alice" } else { "bob" }, "private").await;
        }
        while hub.head_id() < 9 {
            head.changed().await.unwrap();
        }
        // The buffer keeps the newest 3 rows (7, 8, 9): alice's 8 comes from it, and bob's
        // rows 7 and 9 are skipped, yet scanned past.
        let b = rows(hub.read("alice", 1, 6, 10).await.unwrap());
        assert_eq!((ids(&b), b.scanned, b.more), (vec![8], 9, false));
        // Behind the buffer: the store answers, and a short answer covers the buffer too.
        let b = rows(hub.read("alice", 1, 0, 10).await.unwrap());
        assert_eq!((ids(&b), b.scanned), (vec![6, 8], 9));
        let b = rows(hub.read("bob", 1, 0, 2).await.unwrap());
        assert_eq!((ids(&b), b.scanned, b.more), (vec![1, 2], 2, true));
        // A rebuild empties the table, restarts ids and moves the epoch on (as the
        // projection's reset does): the hub follows the new epoch from its end.
        let mut tx = s.begin().await.unwrap();
        for stmt in [
            "DELETE FROM notifications",
            "DELETE FROM sqlite_sequence WHERE name = 'notifications'",
        ] {
            crate::on_tx!(tx, c => {
                sqlx::query(stmt).execute(&mut *c).await.unwrap();
            });
        }
        assert_eq!(epoch::advance(&mut tx).await.unwrap(), 2);
        tx.commit().await.unwrap();
        // Before the hub has seen the reset, a store read already tells the old epoch to reset.
        assert!(matches!(
            hub.read("alice", 1, 0, 10).await.unwrap(),
            Read::Reset(2)
        ));
        add(&s, 10, "alice", "broadcast").await;
        while hub.epoch() != 2 || hub.head_id() != 1 {
            head.changed().await.unwrap();
        }
        // A stream of the old epoch gets the reset, never the new rows as if they continued it.
        for scanned in [0, 9, 100] {
            assert!(matches!(
                hub.read("alice", 1, scanned, 10).await.unwrap(),
                Read::Reset(2)
            ));
        }
        add(&s, 11, "alice", "broadcast").await;
        while hub.head_id() != 2 {
            head.changed().await.unwrap();
        }
        let b = rows(hub.read("carol", 2, 0, 10).await.unwrap());
        assert_eq!(ids(&b), vec![1, 2], "broadcasts after the rebuild");
        let b = rows(hub.read("carol", 2, 1, 10).await.unwrap());
        assert_eq!((ids(&b), b.scanned), (vec![2], 2));
        hub.closing.cancel();
    }

    #[test]
    fn entries_keep_the_senders_email_for_the_sender_and_admins() {
        let e = Entry::new(NotificationRow {
            id: 1,
            event_id: "e1".into(),
            user_id: "alice".into(),
            event_type: "user.message".into(),
            payload: serde_json::json!({ "email": "alice@example.com", "message": "hi" }),
            visibility: "broadcast".into(),
            recipient_id: None,
            event_time: 0,
        });
        for (viewer, sees) in [
            (Viewer::new("alice", false), true),
            (Viewer::new("ops", true), true),
            (Viewer::new("bob", false), false),
        ] {
            let v: serde_json::Value = serde_json::from_str(&e.json_for(&viewer)).unwrap();
            assert_eq!(v["payload"].get("email").is_some(), sees, "{viewer:?}");
            assert_eq!(v["payload"]["message"], "hi");
        }
    }
}
