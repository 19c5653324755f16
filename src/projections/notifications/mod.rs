//! The notifications projection (the seed's `user_notifications`): identity events and user
//! messages become rows with `event_type` `{domain}.{entity}`, a JSON payload, `visibility`
//! (`private` | `broadcast` | `direct`), `recipient_id`, `event_time` and an increasing id.
//! A user sees their own rows, broadcast rows, and direct rows addressed to them, without the
//! sender's private fields unless they are the sender or an admin (`view.rs`). Every reset moves
//! the read model's epoch on (`epoch.rs`), because ids restart.

pub mod epoch;
pub mod view;

pub use view::Viewer;

use std::sync::LazyLock;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::app::AppContext;
use crate::consumers::{BatchApply, Emitter, Envelope, Handler, HandlerError};
use crate::on_read;
use crate::store::bulk::{self, Val};
use crate::store::{Store, StoreError, Tx, dialect, now_micros};

pub const GROUP: &str = "notifications";

/// A notification to store.
#[derive(Debug, Clone)]
pub struct Notification {
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    pub payload: Value,
    pub visibility: String,
    pub recipient_id: Option<String>,
    pub event_time: i64,
}

/// A stored notification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationRow {
    pub id: i64,
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    pub payload: Value,
    pub visibility: String,
    pub recipient_id: Option<String>,
    pub event_time: i64,
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: i64,
    event_id: String,
    user_id: String,
    event_type: String,
    payload: String,
    visibility: String,
    recipient_id: Option<String>,
    event_time: i64,
}

impl From<RawRow> for NotificationRow {
    fn from(r: RawRow) -> Self {
        NotificationRow {
            id: r.id,
            event_id: r.event_id,
            user_id: r.user_id,
            event_type: r.event_type,
            payload: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
            visibility: r.visibility,
            recipient_id: r.recipient_id,
            event_time: r.event_time,
        }
    }
}

impl NotificationRow {
    /// Whether `user` may see this row: the in-memory twin of [`VISIBLE_TO`] (the realtime
    /// hub filters its buffer with it).
    pub fn visible_to(&self, user: &str) -> bool {
        self.user_id == user
            || self.visibility == "broadcast"
            || (self.visibility == "direct" && self.recipient_id.as_deref() == Some(user))
    }
}

/// Bumped after every committed transaction of this process that inserted or reset
/// notifications, so local streams wake at once (other processes learn of it through the
/// PostgreSQL trigger's NOTIFY on `substrate_notifications`, or by polling).
static CHANGED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// A receiver of the in-process change counter (see `CHANGED`).
pub fn local_changes() -> watch::Receiver<u64> {
    CHANGED.subscribe()
}

fn bump_after_commit(tx: &mut Tx) {
    tx.after_commit(|| CHANGED.send_modify(|n| *n = n.wrapping_add(1)));
}

/// PostgreSQL channel the `notifications_changed` trigger notifies (migration 0003).
pub const PG_CHANNEL: &str = "substrate_notifications";

const ROW_COLUMNS: &str =
    "id, event_id, user_id, event_type, payload, visibility, recipient_id, event_time";

/// Lock key that keeps notification ids visible in commit order on PostgreSQL (readers page
/// by id, so a lower id must never appear after a higher one).
const ORDER_LOCK: i64 = 72_530_002;

/// Inserts a notification inside `tx` (once per event id).
pub async fn insert(tx: &mut Tx, n: &Notification) -> Result<(), StoreError> {
    insert_many(tx, std::slice::from_ref(n)).await
}

/// Inserts notifications inside `tx` with one multi-row statement (once per event id); ids
/// follow the order of `ns`.
pub async fn insert_many(tx: &mut Tx, ns: &[Notification]) -> Result<(), StoreError> {
    if ns.is_empty() {
        return Ok(());
    }
    tx.advisory_lock(ORDER_LOCK).await?;
    let now = now_micros();
    let payloads: Vec<String> = ns
        .iter()
        .map(|n| serde_json::to_string(&n.payload).unwrap_or_else(|_| "{}".into()))
        .collect();
    let rows: Vec<Vec<Val>> = ns
        .iter()
        .zip(&payloads)
        .map(|(n, payload)| {
            vec![
                Val::Str(&n.event_id),
                Val::Str(&n.user_id),
                Val::Str(&n.event_type),
                Val::Str(payload),
                Val::Str(&n.visibility),
                Val::OptStr(n.recipient_id.as_deref()),
                Val::I64(n.event_time),
                Val::I64(now),
            ]
        })
        .collect();
    bulk::insert(
        tx,
        "INSERT INTO notifications (event_id, user_id, event_type, payload, visibility, recipient_id, event_time, created_at) ",
        &rows,
        " ON CONFLICT (event_id) DO NOTHING",
    )
    .await?;
    bump_after_commit(tx);
    Ok(())
}

/// The SQL condition for rows `$1` may see.
pub const VISIBLE_TO: &str =
    "(user_id = $1 OR visibility = 'broadcast' OR (visibility = 'direct' AND recipient_id = $1))";

/// Rows visible to `user` with id > `after`, oldest first (whole rows: for a reader, show
/// each as `NotificationRow::view_for` says; `epoch::visible_page` also gives their epoch).
pub async fn visible_after(
    store: &Store,
    user: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
    Ok(epoch::visible_page(store, user, after, limit).await?.rows)
}

/// How a topic becomes a notification: its event type, the payload field with the event's
/// time, and whether visibility comes from the payload.
struct Mapping {
    topic: &'static str,
    event_type: &'static str,
    time_field: &'static str,
    from_payload: bool,
}

const MAPPINGS: &[Mapping] = &[
    Mapping {
        topic: "public.identity.login.events",
        event_type: "identity.login",
        time_field: "login_time",
        from_payload: false,
    },
    Mapping {
        topic: "public.identity.signup.events",
        event_type: "identity.signup",
        time_field: "signup_time",
        from_payload: false,
    },
    Mapping {
        topic: "public.identity.signout.events",
        event_type: "identity.signout",
        time_field: "signout_time",
        from_payload: false,
    },
    Mapping {
        topic: "public.user.message.events",
        event_type: "user.message",
        time_field: "timestamp",
        from_payload: true,
    },
    // Media saga outcomes, private to the file's owner (the payload's `user_id`); they carry
    // no time field, so the event's time is used.
    Mapping {
        topic: "public.media.upload.signed",
        event_type: "media.upload_ready",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.upload.rejected",
        event_type: "media.upload_rejected",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.upload.confirmed",
        event_type: "media.upload_completed",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "internal.media.upload.dead-letter",
        event_type: "media.upload_failed",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.expired.events",
        event_type: "media.upload_expired",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.download.signed",
        event_type: "media.download_ready",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.download.rejected",
        event_type: "media.download_rejected",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.delete.events",
        event_type: "media.file_deleted",
        time_field: "",
        from_payload: false,
    },
    Mapping {
        topic: "public.media.delete.rejected",
        event_type: "media.delete_rejected",
        time_field: "",
        from_payload: false,
    },
];

pub struct NotificationsProjection {
    ctx: AppContext,
}

impl NotificationsProjection {
    pub fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

/// Epoch-millisecond payload times become micros (checked: a time outside the accepted
/// range, which the gateway refuses, falls back too); the envelope time is the fallback.
fn event_time(ev: &Envelope, field: &str) -> i64 {
    ev.payload
        .get(field)
        .and_then(Value::as_i64)
        .and_then(crate::schema::time::millis_to_micros)
        .unwrap_or(ev.time)
}

#[async_trait]
impl Handler for NotificationsProjection {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        MAPPINGS.iter().map(|m| m.topic.to_string()).collect()
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        _out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        self.apply_batch(&[ev], tx).await
    }

    fn batch(&self) -> Option<&dyn BatchApply> {
        Some(self)
    }

    async fn reset(&self, tx: &mut Tx) -> Result<bool, HandlerError> {
        // Ids restart too, so a rebuild reproduces the table exactly.
        dialect::truncate_restart_identity(tx, "notifications").await?;
        // Ids restart, so cursors handed out so far must not be read against the new rows:
        // a new epoch tells streams and clients to reset (`realtime`, docs/realtime.md).
        epoch::advance(tx).await?;
        bump_after_commit(tx);
        Ok(true)
    }
}

impl NotificationsProjection {
    /// The notification an event becomes (`None` for a topic without a mapping).
    fn notification(&self, ev: &Envelope) -> Result<Option<Notification>, HandlerError> {
        let Some(m) = MAPPINGS.iter().find(|m| m.topic == ev.topic) else {
            return Ok(None);
        };
        let user_id = ev
            .str_field("user_id")
            .map(str::to_string)
            .unwrap_or_else(|| ev.key.clone());
        let (visibility, recipient_id) = if m.from_payload {
            // The topic's rules (a direct message needs recipient_id), as ingest checked them.
            self.ctx
                .schemas
                .rules()
                .check(&ev.topic, &ev.payload)
                .map_err(|v| HandlerError::Reject(v.to_string()))?;
            let v = ev
                .str_field("visibility")
                .unwrap_or("broadcast")
                .to_string();
            let r = ev.str_field("recipient_id").map(str::to_string);
            (v, r)
        } else {
            ("private".to_string(), None)
        };
        Ok(Some(Notification {
            event_id: ev.id.clone(),
            user_id,
            event_type: m.event_type.to_string(),
            payload: ev.payload.clone(),
            visibility,
            recipient_id,
            event_time: event_time(ev, m.time_field),
        }))
    }
}

#[async_trait]
impl BatchApply for NotificationsProjection {
    /// One row per mapped event, inserted with one statement, in log order.
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError> {
        let mut rows = Vec::with_capacity(evs.len());
        for ev in evs {
            rows.extend(self.notification(ev)?);
        }
        insert_many(tx, &rows).await?;
        Ok(())
    }
}

/// Every row, in id order (tests and rebuild checks).
pub async fn all(store: &Store) -> Result<Vec<NotificationRow>, StoreError> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM notifications ORDER BY id");
    let rows: Vec<RawRow> = on_read!(store, p => { sqlx::query_as(&sql).fetch_all(p).await? });
    Ok(rows.into_iter().map(Into::into).collect())
}
