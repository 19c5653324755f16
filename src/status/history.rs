//! What the status page remembers, in the store: probe runs (`probe_runs`, kept
//! `RUNS_KEEP_HOURS`) and, per component and UTC day, how many evaluations found it
//! operational, degraded or down (`status_daily`, kept `probe.history_days`).

use serde::Serialize;
use sqlx::Row;

use super::{Report, State};
use crate::store::lease::Fence;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_tx, on_write};

/// Hours probe runs are kept (the page shows the last one).
pub const RUNS_KEEP_HOURS: i64 = 48;

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// How a probe run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent, not yet projected (a crashed probe leaves runs like this; they count as timed out
    /// once the timeout has passed).
    Pending,
    Ok,
    /// Accepted, but not projected within `probe.timeout_secs`.
    Timeout,
    /// The outbox refused the event (the accept path is broken).
    AppendFailed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::AppendFailed => "append_failed",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "ok" => Outcome::Ok,
            "timeout" => Outcome::Timeout,
            "append_failed" => Outcome::AppendFailed,
            _ => Outcome::Pending,
        }
    }
}

/// One probe run as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRun {
    /// Unix microseconds.
    pub sent_at: i64,
    pub outcome: Outcome,
    pub round_trip_ms: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    sent_at: i64,
    outcome: String,
    round_trip_us: Option<i64>,
}

impl From<RunRow> for ProbeRun {
    fn from(r: RunRow) -> Self {
        ProbeRun {
            sent_at: r.sent_at,
            outcome: Outcome::parse(&r.outcome),
            round_trip_ms: r.round_trip_us.map(|us| us as f64 / 1000.0),
        }
    }
}

/// Records a probe run as sent, under the probe lease (`fence`).
pub async fn run_started(
    store: &Store,
    fence: &Fence,
    probe_id: &str,
    instance: &str,
    sent_at: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    fence.check(&mut tx).await?;
    on_tx!(tx, c => {
        sqlx::query("INSERT INTO probe_runs (probe_id, instance, sent_at, outcome) VALUES ($1, $2, $3, 'pending')")
            .bind(probe_id)
            .bind(instance)
            .bind(sent_at)
            .execute(&mut *c)
            .await?;
    });
    tx.commit().await
}

/// Records how a probe run ended, under the probe lease (`fence`).
pub async fn run_finished(
    store: &Store,
    fence: &Fence,
    probe_id: &str,
    outcome: Outcome,
    round_trip_us: Option<i64>,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    fence.check(&mut tx).await?;
    on_tx!(tx, c => {
        sqlx::query("UPDATE probe_runs SET outcome = $1, round_trip_us = $2, finished_at = $3 WHERE probe_id = $4")
            .bind(outcome.as_str())
            .bind(round_trip_us)
            .bind(now_micros())
            .bind(probe_id)
            .execute(&mut *c)
            .await?;
    });
    tx.commit().await
}

/// Removes a run whose outcome may not be recorded (its instance lost the probe lease).
pub async fn run_forget(store: &Store, probe_id: &str) -> Result<(), StoreError> {
    on_write!(store, p => {
        sqlx::query("DELETE FROM probe_runs WHERE probe_id = $1")
            .bind(probe_id)
            .execute(p)
            .await?;
    });
    Ok(())
}

/// Forgets a run that was cut short by shutdown (it is neither a success nor a failure).
pub async fn run_abandoned(store: &Store, probe_id: &str) -> Result<(), StoreError> {
    on_write!(store, p => {
        sqlx::query("DELETE FROM probe_runs WHERE probe_id = $1 AND projected_at IS NULL")
            .bind(probe_id)
            .execute(p)
            .await?;
    });
    Ok(())
}

/// Whether the probe projection has applied `probe_id`.
pub async fn projected(store: &Store, probe_id: &str) -> Result<bool, StoreError> {
    let at: Option<Option<i64>> = on_read!(store, p => {
        sqlx::query_scalar("SELECT projected_at FROM probe_runs WHERE probe_id = $1")
            .bind(probe_id)
            .fetch_optional(p)
            .await?
    });
    Ok(matches!(at, Some(Some(_))))
}

/// The newest run that has an outcome — finished, or pending for longer than `timeout_us`
/// (then it counts as timed out).
pub async fn latest(store: &Store, timeout_us: i64) -> Result<Option<ProbeRun>, StoreError> {
    let cut = now_micros() - timeout_us;
    let row: Option<RunRow> = on_read!(store, p => {
        sqlx::query_as(
            "SELECT sent_at, outcome, round_trip_us FROM probe_runs \
             WHERE outcome <> 'pending' OR sent_at < $1 ORDER BY sent_at DESC LIMIT 1",
        )
        .bind(cut)
        .fetch_optional(p)
        .await?
    });
    Ok(row.map(|r| {
        let mut run = ProbeRun::from(r);
        if run.outcome == Outcome::Pending {
            run.outcome = Outcome::Timeout;
        }
        run
    }))
}

/// Runs sent since `since` (unix micros), oldest first; pending ones older than `timeout_us`
/// count as timed out, younger ones are left out.
pub async fn runs_since(
    store: &Store,
    since: i64,
    timeout_us: i64,
) -> Result<Vec<ProbeRun>, StoreError> {
    let rows: Vec<RunRow> = on_read!(store, p => {
        sqlx::query_as("SELECT sent_at, outcome, round_trip_us FROM probe_runs WHERE sent_at >= $1 ORDER BY sent_at")
            .bind(since)
            .fetch_all(p)
            .await?
    });
    let cut = now_micros() - timeout_us;
    Ok(rows
        .into_iter()
        .map(ProbeRun::from)
        .filter_map(|mut r| {
            if r.outcome == Outcome::Pending {
                if r.sent_at >= cut {
                    return None;
                }
                r.outcome = Outcome::Timeout;
            }
            Some(r)
        })
        .collect())
}

/// The UTC day (days since the epoch) of a unix-microsecond time.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// Adds one evaluation per component to today's counts, under the probe lease (`fence`).
pub async fn record(store: &Store, fence: &Fence, report: &Report) -> Result<(), StoreError> {
    let day = day_of(report.checked_at);
    let mut tx = store.begin().await?;
    fence.check(&mut tx).await?;
    for c in &report.components {
        let (o, d, x) = match c.state {
            State::Operational => (1i64, 0i64, 0i64),
            State::Degraded => (0, 1, 0),
            State::Down => (0, 0, 1),
        };
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO status_daily (component, day, operational_n, degraded_n, down_n) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (component, day) DO UPDATE SET \
                 operational_n = status_daily.operational_n + excluded.operational_n, \
                 degraded_n = status_daily.degraded_n + excluded.degraded_n, \
                 down_n = status_daily.down_n + excluded.down_n",
            )
            .bind(c.component.name())
            .bind(day)
            .bind(o)
            .bind(d)
            .bind(x)
            .execute(&mut *conn)
            .await?;
        });
    }
    tx.commit().await
}

/// Counts of one component on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub operational: i64,
    pub degraded: i64,
    pub down: i64,
}

impl DayCounts {
    pub fn total(&self) -> i64 {
        self.operational + self.degraded + self.down
    }
}

/// Per component, the counts of the days from `first_day` on.
pub async fn daily(
    store: &Store,
    first_day: i64,
) -> Result<Vec<(String, i64, DayCounts)>, StoreError> {
    let rows = on_read!(store, p => {
        let rows = sqlx::query(
            "SELECT component, day, operational_n, degraded_n, down_n FROM status_daily WHERE day >= $1 ORDER BY component, day",
        )
        .bind(first_day)
        .fetch_all(p)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((
                r.try_get::<String, _>(0)?,
                r.try_get::<i64, _>(1)?,
                DayCounts {
                    operational: r.try_get(2)?,
                    degraded: r.try_get(3)?,
                    down: r.try_get(4)?,
                },
            ));
        }
        out
    });
    Ok(rows)
}

/// Deletes daily counts older than `history_days` and probe runs older than
/// `RUNS_KEEP_HOURS` (or `history_days`, if shorter). Returns the rows deleted.
pub async fn prune(store: &Store, history_days: u64) -> Result<u64, StoreError> {
    let now = now_micros();
    let days = history_days.max(1) as i64;
    let first_day = day_of(now) - days + 1;
    let runs_cut = now - (RUNS_KEEP_HOURS * 3_600_000_000).min(days * MICROS_PER_DAY);
    let n = on_write!(store, p => {
        let a = sqlx::query("DELETE FROM status_daily WHERE day < $1")
            .bind(first_day)
            .execute(p)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM probe_runs WHERE sent_at < $1")
            .bind(runs_cut)
            .execute(p)
            .await?
            .rows_affected();
        a + b
    });
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_days() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(MICROS_PER_DAY - 1), 0);
        assert_eq!(day_of(MICROS_PER_DAY), 1);
        assert_eq!(day_of(-1), -1);
    }
}
