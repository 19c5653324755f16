//! The per-user stats read model (the seed's `users/{uid}/data/stats`): how many events of
//! each type a user produced, their first and last login, messages sent, and current credits.
//! Built from every public topic whose schema has a `user_id`; every effect is commutative
//! (counts, min/max of event times), so any delivery order and any replay give the same rows.

pub mod api;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::app::AppContext;
use crate::consumers::{BatchApply, Emitter, Envelope, Handler, HandlerError};
use crate::store::bulk::{self, Val};
use crate::store::{Store, StoreError, Tx};
use crate::{on_read, on_tx};

pub const GROUP: &str = "stats";

const LOGIN_TOPIC: &str = "public.identity.login.events";
const MESSAGE_TOPIC: &str = "public.user.message.events";

/// A user's stats as the API returns them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserStats {
    pub user_id: String,
    /// Events by type (`ce_type`, e.g. `identity.login.events`).
    pub counts: BTreeMap<String, i64>,
    /// Unix microseconds.
    pub first_login_at: Option<i64>,
    pub last_login_at: Option<i64>,
    pub messages_sent: i64,
    pub first_event_at: Option<i64>,
    pub last_event_at: Option<i64>,
    pub credits: i64,
}

/// The user's current credit balance from the media credit ledger; a user without an account
/// yet shows the starting balance the account will open with.
pub async fn current_credits(store: &Store, user: &str, starting: i64) -> Result<i64, StoreError> {
    Ok(crate::media::credits::account(store, user)
        .await?
        .unwrap_or(starting))
}

pub struct StatsProjection {
    topics: Vec<String>,
}

impl StatsProjection {
    pub fn new(ctx: &AppContext) -> Self {
        let topics = ctx
            .schemas
            .topics()
            .into_iter()
            .filter(|t| t.starts_with("public.") && !t.ends_with(".dlq"))
            .filter(|t| {
                ctx.schemas.topic(t).is_some_and(|ts| {
                    matches!(&ts.schema, apache_avro::Schema::Record(r) if r.lookup.contains_key("user_id"))
                })
            })
            .collect();
        Self { topics }
    }
}

/// Epoch-millisecond payload time as micros (checked: out of the accepted range, which the
/// gateway refuses, counts as absent), else the envelope's time.
fn payload_time(ev: &Envelope, field: &str) -> i64 {
    ev.payload
        .get(field)
        .and_then(Value::as_i64)
        .and_then(crate::schema::time::millis_to_micros)
        .unwrap_or(ev.time)
}

#[async_trait]
impl Handler for StatsProjection {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
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
        for stmt in ["DELETE FROM user_stats", "DELETE FROM user_event_counts"] {
            on_tx!(tx, c => {
                sqlx::query(stmt).execute(&mut *c).await.map_err(StoreError::from)?;
            });
        }
        Ok(true)
    }
}

/// A run's effect on one user's row: the same folds the upsert applies, done in memory first
/// (every effect is commutative), so the run costs one row per user, not one per event.
struct UserDelta {
    first_login: Option<i64>,
    last_login: Option<i64>,
    sent: i64,
    first_event: i64,
    last_event: i64,
}

/// Folds `evs` into per-user deltas and per-(user, event type) counts.
#[allow(clippy::type_complexity)]
fn fold<'a>(
    evs: &[&'a Envelope],
) -> (
    BTreeMap<&'a str, UserDelta>,
    BTreeMap<(&'a str, &'a str), i64>,
) {
    let mut users: BTreeMap<&'a str, UserDelta> = BTreeMap::new();
    let mut counts: BTreeMap<(&'a str, &'a str), i64> = BTreeMap::new();
    for &ev in evs {
        let user = ev.str_field("user_id").unwrap_or(&ev.key);
        if user.is_empty() {
            continue;
        }
        let login = (ev.topic == LOGIN_TOPIC).then(|| payload_time(ev, "login_time"));
        let sent = i64::from(ev.topic == MESSAGE_TOPIC);
        let d = users.entry(user).or_insert(UserDelta {
            first_login: None,
            last_login: None,
            sent: 0,
            first_event: ev.time,
            last_event: ev.time,
        });
        d.first_login = d.first_login.into_iter().chain(login).min();
        d.last_login = d.last_login.into_iter().chain(login).max();
        d.sent += sent;
        d.first_event = d.first_event.min(ev.time);
        d.last_event = d.last_event.max(ev.time);
        *counts.entry((user, ev.event_type.as_str())).or_insert(0) += 1;
    }
    (users, counts)
}

#[async_trait]
impl BatchApply for StatsProjection {
    /// One upsert per table for the whole run (a row per user / per user and event type).
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError> {
        let (users, counts) = fold(evs);
        let rows: Vec<Vec<Val>> = users
            .iter()
            .map(|(user, d)| {
                vec![
                    Val::Str(user),
                    Val::OptI64(d.first_login),
                    Val::OptI64(d.last_login),
                    Val::I64(d.sent),
                    Val::I64(d.first_event),
                    Val::I64(d.last_event),
                ]
            })
            .collect();
        bulk::insert(
            tx,
            "INSERT INTO user_stats (user_id, first_login_at, last_login_at, messages_sent, first_event_at, last_event_at) ",
            &rows,
            " ON CONFLICT (user_id) DO UPDATE SET \
             first_login_at = CASE WHEN user_stats.first_login_at IS NULL \
                 OR excluded.first_login_at < user_stats.first_login_at \
                 THEN COALESCE(excluded.first_login_at, user_stats.first_login_at) ELSE user_stats.first_login_at END, \
             last_login_at = CASE WHEN user_stats.last_login_at IS NULL \
                 OR excluded.last_login_at > user_stats.last_login_at \
                 THEN COALESCE(excluded.last_login_at, user_stats.last_login_at) ELSE user_stats.last_login_at END, \
             messages_sent = user_stats.messages_sent + excluded.messages_sent, \
             first_event_at = CASE WHEN excluded.first_event_at < user_stats.first_event_at \
                 THEN excluded.first_event_at ELSE user_stats.first_event_at END, \
             last_event_at = CASE WHEN excluded.last_event_at > user_stats.last_event_at \
                 THEN excluded.last_event_at ELSE user_stats.last_event_at END",
        )
        .await?;
        let rows: Vec<Vec<Val>> = counts
            .iter()
            .map(|((user, ty), n)| vec![Val::Str(user), Val::Str(ty), Val::I64(*n)])
            .collect();
        bulk::insert(
            tx,
            "INSERT INTO user_event_counts (user_id, event_type, count) ",
            &rows,
            " ON CONFLICT (user_id, event_type) DO UPDATE SET count = user_event_counts.count + excluded.count",
        )
        .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct StatsRow {
    first_login_at: Option<i64>,
    last_login_at: Option<i64>,
    messages_sent: i64,
    first_event_at: i64,
    last_event_at: i64,
}

/// The stats of `user` (all zero for a user with no events yet).
/// `starting_credits` is `media.starting_credits` (shown for users without a credit account).
pub async fn get(
    store: &Store,
    user: &str,
    starting_credits: i64,
) -> Result<UserStats, StoreError> {
    let row: Option<StatsRow> = on_read!(store, p => {
        sqlx::query_as(
            "SELECT first_login_at, last_login_at, messages_sent, first_event_at, last_event_at \
             FROM user_stats WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(p)
        .await?
    });
    let counts: Vec<(String, i64)> = on_read!(store, p => {
        sqlx::query_as("SELECT event_type, count FROM user_event_counts WHERE user_id = $1 ORDER BY event_type")
            .bind(user)
            .fetch_all(p)
            .await?
    });
    Ok(UserStats {
        user_id: user.to_string(),
        counts: counts.into_iter().collect(),
        first_login_at: row.as_ref().and_then(|r| r.first_login_at),
        last_login_at: row.as_ref().and_then(|r| r.last_login_at),
        messages_sent: row.as_ref().map(|r| r.messages_sent).unwrap_or(0),
        first_event_at: row.as_ref().map(|r| r.first_event_at),
        last_event_at: row.as_ref().map(|r| r.last_event_at),
        credits: current_credits(store, user, starting_credits).await?,
    })
}
