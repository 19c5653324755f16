//! Durable delivery state. `alert_deliveries` holds one row per (transition, target), written
//! by the consumer (`consume.rs`); `alert_notifications` holds what the sender POSTs: a group
//! of deliveries of one rule and target (at most one per alert), formed once and persisted
//! before the first attempt so every retry sends the identical body under the same
//! `webhook-id`. Sending is claimed per notification, the way saga timers are
//! (`media::timers`): `FOR UPDATE SKIP LOCKED` on PostgreSQL, a claim on the database's clock
//! and a `claim_epoch` that every completion must still match, so a crashed sender's claim
//! runs out and the notification is sent again elsewhere, and a stale sender's late result is
//! refused.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::payload;
use crate::alerts::event::Transition;
use crate::store::{Store, StoreError, Tx, dialect, now_micros};
use crate::{on_read, on_tx};

/// Delivery and notification states.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const DEAD: &str = "dead";
pub const STATES: [&str; 3] = [PENDING, DELIVERED, DEAD];

/// The reason of a delivery to a target the org does not have.
pub const UNKNOWN_TARGET: &str = "unknown_target";

/// Most ungrouped deliveries of one target read when forming a notification.
const FORM_SCAN: i64 = 1_000;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 4)
}

/// Records the delivery of `t` to `target` (dead with `reason` when given). Idempotent per
/// (transition, target), and a transition of the same alert (rule, fingerprint) and sequence
/// seen before for this target is not recorded again. Returns whether a row was added.
pub async fn insert(
    tx: &mut Tx,
    t: &Transition,
    target: &str,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let state = if reason.is_some() { DEAD } else { PENDING };
    let json = serde_json::to_string(t).map_err(|e| StoreError::Data(e.to_string()))?;
    let now = now_micros();
    let n = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO alert_deliveries (transition_id, org, rule, target, fingerprint, sequence, status, \
             transition, state, reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT DO NOTHING",
        )
        .bind(&t.id).bind(&t.org).bind(&t.rule).bind(target).bind(&t.fingerprint).bind(t.sequence)
        .bind(&t.to).bind(json).bind(state).bind(reason).bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// A notification as its sender holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    pub webhook_id: String,
    pub org: String,
    pub rule: String,
    pub target: String,
    pub body: String,
    pub attempts: i64,
    pub claim_epoch: i64,
}

const N_COLUMNS: &str = "id, webhook_id, org, rule, target, body, attempts, claim_epoch";

/// The (org, target) pairs with work: deliveries not yet in a notification, or notifications
/// due and unclaimed.
pub async fn targets_with_work(store: &Store) -> Result<Vec<(String, String)>, StoreError> {
    let now = dialect::now_micros(store.backend());
    let sql = format!(
        "SELECT org, target FROM alert_deliveries WHERE state = 'pending' AND notification_id IS NULL \
         UNION SELECT org, target FROM alert_notifications WHERE state = 'pending' AND next_at <= {now} \
         AND (claimed_until IS NULL OR claimed_until < {now})"
    );
    let keys: Vec<(String, String)> =
        on_read!(store, p => { sqlx::query_as(&sql).fetch_all(p).await? });
    Ok(keys)
}

/// Claims the oldest due notification of (org, target) for `owner` for `lease`.
pub async fn claim_due(
    store: &Store,
    org: &str,
    target: &str,
    owner: &str,
    lease: Duration,
) -> Result<Option<Notification>, StoreError> {
    let now = dialect::now_micros(store.backend());
    let lock = dialect::skip_locked(store.backend());
    let sql = format!(
        "UPDATE alert_notifications SET claimed_by = $3, claimed_until = {now} + $4, claim_epoch = claim_epoch + 1 \
         WHERE id IN (SELECT id FROM alert_notifications WHERE org = $1 AND target = $2 AND state = 'pending' \
           AND next_at <= {now} AND (claimed_until IS NULL OR claimed_until < {now}) ORDER BY id LIMIT 1{lock}) \
         RETURNING {N_COLUMNS}"
    );
    let mut tx = store.begin().await?;
    let n: Option<Notification> = on_tx!(tx, c => {
        sqlx::query_as(&sql).bind(org).bind(target).bind(owner).bind(micros(lease))
            .fetch_optional(&mut *c).await?
    });
    tx.commit().await?;
    Ok(n)
}

/// An ungrouped delivery, as forming a notification reads it.
#[derive(sqlx::FromRow)]
struct Ungrouped {
    id: i64,
    transition_id: String,
    rule: String,
    fingerprint: String,
    sequence: i64,
    transition: String,
    created_at: i64,
}

/// How notifications are formed.
pub struct Grouping {
    pub wait: Duration,
    pub max_size: usize,
}

/// Forms the next notification of (org, target) from deliveries not yet in one, claimed by
/// `owner`: the oldest eligible delivery once it has waited `grouping.wait`, with every other
/// eligible delivery of its rule, at most one per alert (its lowest sequence), never an alert
/// whose earlier transition is still in a pending notification (so per-alert order holds).
/// `None` when nothing is due.
pub async fn form(
    store: &Store,
    org: &str,
    target: &str,
    owner: &str,
    lease: Duration,
    grouping: &Grouping,
) -> Result<Option<Notification>, StoreError> {
    let mut tx = store.begin().await?;
    let rows = ungrouped(&mut tx, org, target).await?;
    let busy = in_flight(&mut tx, org, target).await?;
    let Some(members) = pick(rows, &busy, grouping, now_micros()) else {
        tx.rollback().await?;
        return Ok(None);
    };
    let transitions: Vec<Transition> = members
        .iter()
        .filter_map(|m| serde_json::from_str(&m.transition).ok())
        .collect();
    let rule = members[0].rule.clone();
    let webhook_id = members[0].transition_id.clone();
    let body = payload::body(org, &rule, &transitions);
    let n = insert_notification(
        &mut tx,
        org,
        &rule,
        target,
        &webhook_id,
        &body,
        owner,
        lease,
    )
    .await?;
    for m in &members {
        on_tx!(tx, c => {
            sqlx::query("UPDATE alert_deliveries SET notification_id = $1, updated_at = $2 WHERE id = $3")
                .bind(n.id).bind(now_micros()).bind(m.id).execute(&mut *c).await?;
        });
    }
    tx.commit().await?;
    Ok(Some(n))
}

async fn ungrouped(tx: &mut Tx, org: &str, target: &str) -> Result<Vec<Ungrouped>, StoreError> {
    let lock = dialect::skip_locked(tx.backend());
    let sql = format!(
        "SELECT id, transition_id, rule, fingerprint, sequence, transition, created_at FROM alert_deliveries \
         WHERE org = $1 AND target = $2 AND state = 'pending' AND notification_id IS NULL \
         ORDER BY id LIMIT $3{lock}"
    );
    let rows: Vec<Ungrouped> = on_tx!(tx, c => {
        sqlx::query_as(&sql).bind(org).bind(target).bind(FORM_SCAN).fetch_all(&mut *c).await?
    });
    Ok(rows)
}

/// Alerts (rule, fingerprint) with a transition in a notification still being sent to the
/// target.
async fn in_flight(
    tx: &mut Tx,
    org: &str,
    target: &str,
) -> Result<HashSet<(String, String)>, StoreError> {
    let v: Vec<(String, String)> = on_tx!(tx, c => {
        sqlx::query_as(
            "SELECT DISTINCT rule, fingerprint FROM alert_deliveries WHERE org = $1 AND target = $2 \
             AND state = 'pending' AND notification_id IS NOT NULL",
        )
        .bind(org).bind(target).fetch_all(&mut *c).await?
    });
    Ok(v.into_iter().collect())
}

/// The members of the next notification (see `form`), in arrival order.
fn pick(
    rows: Vec<Ungrouped>,
    busy: &HashSet<(String, String)>,
    grouping: &Grouping,
    now: i64,
) -> Option<Vec<Ungrouped>> {
    let eligible: Vec<Ungrouped> = rows
        .into_iter()
        .filter(|r| !busy.contains(&(r.rule.clone(), r.fingerprint.clone())))
        .collect();
    let first = eligible.first()?;
    if first.created_at + micros(grouping.wait) > now {
        return None;
    }
    let rule = first.rule.clone();
    // The lowest sequence of each alert of the rule; later ones wait for the next notification.
    let mut per_alert: BTreeMap<String, Ungrouped> = BTreeMap::new();
    for r in eligible.into_iter().filter(|r| r.rule == rule) {
        match per_alert.get(&r.fingerprint) {
            Some(have) if have.sequence <= r.sequence => {}
            _ => {
                per_alert.insert(r.fingerprint.clone(), r);
            }
        }
    }
    let mut members: Vec<Ungrouped> = per_alert.into_values().collect();
    members.sort_by_key(|m| m.id);
    members.truncate(grouping.max_size.max(1));
    Some(members)
}

#[allow(clippy::too_many_arguments)]
async fn insert_notification(
    tx: &mut Tx,
    org: &str,
    rule: &str,
    target: &str,
    webhook_id: &str,
    body: &str,
    owner: &str,
    lease: Duration,
) -> Result<Notification, StoreError> {
    let now = dialect::now_micros(tx.backend());
    let sql = format!(
        "INSERT INTO alert_notifications (webhook_id, org, rule, target, body, state, attempts, next_at, \
         claimed_by, claimed_until, claim_epoch, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, {now} + $8, 1, $6) RETURNING {N_COLUMNS}"
    );
    let n: Notification = on_tx!(tx, c => {
        sqlx::query_as(&sql)
            .bind(webhook_id).bind(org).bind(rule).bind(target).bind(body).bind(now_micros())
            .bind(owner).bind(micros(lease))
            .fetch_one(&mut *c).await?
    });
    Ok(n)
}

/// What came of one attempt.
pub enum Outcome {
    Delivered,
    /// Try again at this time (unix micros).
    Retry {
        at: i64,
        error: String,
    },
    Dead {
        error: String,
    },
}

/// Records an attempt's outcome, if `n`'s claim still holds (false: it was lost, nothing
/// written).
pub async fn record(
    store: &Store,
    n: &Notification,
    outcome: &Outcome,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let now = now_micros();
    let (state, next_at, error) = match outcome {
        Outcome::Delivered => (DELIVERED, now, None),
        Outcome::Retry { at, error } => (PENDING, *at, Some(error.as_str())),
        Outcome::Dead { error } => (DEAD, now, Some(error.as_str())),
    };
    let done = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE alert_notifications SET state = $3, attempts = attempts + 1, next_at = $4, last_error = $5, \
             claimed_by = NULL, claimed_until = NULL, \
             delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END \
             WHERE id = $1 AND claim_epoch = $2 AND state = 'pending'",
        )
        .bind(n.id).bind(n.claim_epoch).bind(state).bind(next_at).bind(error).bind(now)
        .execute(&mut *c).await?.rows_affected()
    });
    if done == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if state != PENDING {
        on_tx!(tx, c => {
            sqlx::query("UPDATE alert_deliveries SET state = $2, reason = $3, updated_at = $4 WHERE notification_id = $1")
                .bind(n.id).bind(state).bind(error).bind(now).execute(&mut *c).await?;
        });
    }
    tx.commit().await?;
    Ok(true)
}

/// Dead-letters what is still pending for (org, target): the target is gone.
pub async fn dead_unknown_target(
    store: &Store,
    org: &str,
    target: &str,
) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    // Its pending notifications and every delivery still pending (grouped or not) are dead.
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE alert_notifications SET state = 'dead', last_error = $3 \
             WHERE org = $1 AND target = $2 AND state = 'pending'",
        )
        .bind(org).bind(target).bind(UNKNOWN_TARGET).execute(&mut *c).await?;
        sqlx::query(
            "UPDATE alert_deliveries SET state = 'dead', reason = $3, updated_at = $4 \
             WHERE org = $1 AND target = $2 AND state = 'pending'",
        )
        .bind(org).bind(target).bind(UNKNOWN_TARGET).bind(now_micros()).execute(&mut *c).await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(n)
}

/// One delivery as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    pub id: i64,
    pub transition_id: String,
    pub rule: String,
    pub target: String,
    pub fingerprint: String,
    pub sequence: i64,
    pub status: String,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub notification_id: Option<i64>,
    pub webhook_id: Option<String>,
    pub attempts: Option<i64>,
    pub last_error: Option<String>,
    pub next_at: Option<i64>,
}

/// Filters of the deliveries list.
#[derive(Debug, Default)]
pub struct Filter {
    pub state: Option<String>,
    pub target: Option<String>,
    pub limit: i64,
}

/// The org's deliveries, newest first.
pub async fn list(store: &Store, org: &str, f: &Filter) -> Result<Vec<DeliveryView>, StoreError> {
    let sql = "SELECT d.id, d.transition_id, d.rule, d.target, d.fingerprint, d.sequence, d.status, d.state, \
         d.reason, d.created_at, d.updated_at, d.notification_id, n.webhook_id, n.attempts, n.last_error, n.next_at \
         FROM alert_deliveries d LEFT JOIN alert_notifications n ON n.id = d.notification_id \
         WHERE d.org = $1 AND (CAST($2 AS TEXT) IS NULL OR d.state = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR d.target = $3) ORDER BY d.id DESC LIMIT $4";
    let rows: Vec<DeliveryView> = on_read!(store, p => {
        sqlx::query_as(sql).bind(org).bind(&f.state).bind(&f.target).bind(f.limit).fetch_all(p).await?
    });
    Ok(rows)
}

/// Why a redrive was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no delivery {0}")]
    NotFound(i64),
    #[error("delivery {0} is not dead")]
    NotDead(i64),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Sends the org's dead delivery `id` again: its notification (identical body and webhook-id,
/// attempts from zero) with every delivery in it, or, when it never had one (unknown target),
/// the delivery on its own. Returns the delivery ids made pending.
pub async fn redrive(store: &Store, org: &str, id: i64) -> Result<Vec<i64>, RedriveError> {
    let mut tx = store.begin().await?;
    let row: Option<(String, Option<i64>)> = on_tx!(tx, c => {
        sqlx::query_as("SELECT state, notification_id FROM alert_deliveries WHERE id = $1 AND org = $2")
            .bind(id).bind(org).fetch_optional(&mut *c).await.map_err(StoreError::from)?
    });
    let (state, notification) = row.ok_or(RedriveError::NotFound(id))?;
    if state != DEAD {
        return Err(RedriveError::NotDead(id));
    }
    let now = now_micros();
    let ids: Vec<i64> = match notification {
        Some(nid) => on_tx!(tx, c => {
            sqlx::query(
                "UPDATE alert_notifications SET state = 'pending', attempts = 0, next_at = $2, last_error = NULL, \
                 claimed_by = NULL, claimed_until = NULL, claim_epoch = claim_epoch + 1 WHERE id = $1",
            )
            .bind(nid).bind(now).execute(&mut *c).await.map_err(StoreError::from)?;
            sqlx::query_scalar(
                "UPDATE alert_deliveries SET state = 'pending', reason = NULL, updated_at = $2 \
                 WHERE notification_id = $1 RETURNING id",
            )
            .bind(nid).bind(now).fetch_all(&mut *c).await.map_err(StoreError::from)?
        }),
        None => on_tx!(tx, c => {
            sqlx::query_scalar(
                "UPDATE alert_deliveries SET state = 'pending', reason = NULL, updated_at = $2 WHERE id = $1 RETURNING id",
            )
            .bind(id).bind(now).fetch_all(&mut *c).await.map_err(StoreError::from)?
        }),
    };
    tx.commit().await?;
    Ok(ids)
}

/// Deliveries by state (all orgs), for the gauges.
pub async fn counts(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    let counts: Vec<(String, i64)> = on_read!(store, p => {
        sqlx::query_as("SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state").fetch_all(p).await?
    });
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, rule: &str, fp: &str, seq: i64, created_at: i64) -> Ungrouped {
        Ungrouped {
            id,
            transition_id: format!("t{id}"),
            rule: rule.into(),
            fingerprint: fp.into(),
            sequence: seq,
            transition: "{}".into(),
            created_at,
        }
    }

    fn ids(v: Option<Vec<Ungrouped>>) -> Option<Vec<i64>> {
        v.map(|m| m.iter().map(|r| r.id).collect())
    }

    #[test]
    fn groups_one_rule_one_transition_per_alert_in_order() {
        let g = Grouping {
            wait: Duration::from_millis(100),
            max_size: 10,
        };
        let now = 1_000_000;
        let rows = || {
            vec![
                row(1, "disk", "a", 1, now - 200_000),
                row(2, "cpu", "x", 1, now - 150_000),
                row(3, "disk", "a", 2, now - 150_000),
                row(4, "disk", "b", 1, now),
            ]
        };
        // The oldest is due: its rule's alerts, the lowest sequence of each.
        assert_eq!(
            ids(pick(rows(), &HashSet::new(), &g, now)),
            Some(vec![1, 4])
        );
        // Not due yet.
        assert_eq!(ids(pick(rows(), &HashSet::new(), &g, now - 150_000)), None);
        // Alert a of disk still being sent: its later transitions wait, b goes.
        let busy = HashSet::from([("disk".to_string(), "a".to_string())]);
        assert_eq!(ids(pick(rows(), &busy, &g, now)), Some(vec![2]));
        let small = Grouping {
            wait: g.wait,
            max_size: 1,
        };
        assert_eq!(
            ids(pick(rows(), &HashSet::new(), &small, now)),
            Some(vec![1])
        );
    }
}
