//! The status document: the live evaluation, the probe's last hour and each component's
//! days. `/status.json` serves it as is and `/status` renders it, so both always agree.
//! When the store cannot be read, the history parts are empty and the live states stay.

use std::collections::HashMap;

use serde::Serialize;

use super::history::{self, DayCounts, Outcome, ProbeRun};
use super::{Report, State};
use crate::app::AppContext;
use crate::events::rfc3339_micros;
use crate::store::now_micros;

/// Most uptime bars shown (days).
pub const MAX_DAYS: u64 = 90;
/// A day is shown as down when at least this share of its evaluations found the component down.
const DOWN_DAY_SHARE: f64 = 0.01;

#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    pub title: String,
    /// The worst component state.
    pub status: State,
    pub updated_at: String,
    /// Seconds between the page's reloads.
    pub refresh_secs: u64,
    pub components: Vec<ComponentDoc>,
    pub probe: ProbeDoc,
    /// Firing alerts of rules marked `public` (`crate::alerts`), oldest first.
    pub alerts: Vec<AlertDoc>,
}

/// A firing public alert as the page shows it: nothing but the rule's name, severity, since
/// when, and its `summary` annotation.
#[derive(Debug, Clone, Serialize)]
pub struct AlertDoc {
    pub rule: String,
    pub severity: String,
    pub since: String,
    pub summary: Option<String>,
}

async fn public_alerts(ctx: &AppContext) -> Vec<AlertDoc> {
    let firing = crate::alerts::rules::state::public_firing(&ctx.store)
        .await
        .unwrap_or_default();
    firing
        .into_iter()
        .map(|a| AlertDoc {
            since: rfc3339_micros(a.fired_at.unwrap_or(a.active_since).saturating_mul(1000)),
            summary: a.annotations.get("summary").cloned(),
            rule: a.rule,
            severity: a.severity,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentDoc {
    pub name: &'static str,
    pub title: &'static str,
    pub state: State,
    /// A short code saying why it is not operational.
    pub reason: Option<&'static str>,
    /// Share of evaluations over the shown days that found it up (operational or degraded).
    pub uptime_percent: Option<f64>,
    /// Oldest first, one per day, today last.
    pub days: Vec<DayDoc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayDoc {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// `operational`, `degraded`, `down` or `no_data`.
    pub state: &'static str,
    pub uptime_percent: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeDoc {
    pub interval_secs: u64,
    pub last: Option<ProbePoint>,
    pub last_hour: ProbeStats,
    /// The last hour's runs, oldest first.
    pub points: Vec<ProbePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbePoint {
    pub at: String,
    /// Unix milliseconds (for charts).
    pub at_ms: i64,
    pub ok: bool,
    pub round_trip_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeStats {
    pub runs: usize,
    pub failures: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

fn date_of(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

fn day_doc(day: i64, c: Option<&DayCounts>) -> DayDoc {
    let c = c.copied().unwrap_or_default();
    let total = c.total();
    let (state, uptime) = if total == 0 {
        ("no_data", None)
    } else {
        let up = (c.operational + c.degraded) as f64 / total as f64;
        let state = if c.down as f64 / total as f64 >= DOWN_DAY_SHARE {
            "down"
        } else if c.down > 0 || c.degraded > 0 {
            "degraded"
        } else {
            "operational"
        };
        (state, Some(round2(up * 100.0)))
    };
    DayDoc {
        date: date_of(day),
        state,
        uptime_percent: uptime,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).map(|v| round2(*v))
}

fn point(r: &ProbeRun) -> ProbePoint {
    ProbePoint {
        at: rfc3339_micros(r.sent_at),
        at_ms: r.sent_at / 1000,
        ok: r.outcome == Outcome::Ok,
        round_trip_ms: r.round_trip_ms.map(round2),
    }
}

fn probe_doc(ctx: &AppContext, runs: Vec<ProbeRun>) -> ProbeDoc {
    let points: Vec<ProbePoint> = runs.iter().map(point).collect();
    let mut rtts: Vec<f64> = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| r.round_trip_ms)
        .collect();
    rtts.sort_by(f64::total_cmp);
    ProbeDoc {
        interval_secs: ctx.config.probe.interval_secs,
        last: points.last().cloned(),
        last_hour: ProbeStats {
            runs: runs.len(),
            failures: runs.iter().filter(|r| r.outcome != Outcome::Ok).count(),
            p50_ms: percentile(&rtts, 0.5),
            p95_ms: percentile(&rtts, 0.95),
            max_ms: rtts.last().copied().map(round2),
        },
        points,
    }
}

/// Builds the document from `report` and the stored history.
pub async fn build(ctx: &AppContext, report: &Report) -> StatusDoc {
    let p = &ctx.config.probe;
    let now = now_micros();
    let days = p.history_days.clamp(1, MAX_DAYS) as i64;
    let today = history::day_of(now);
    let first_day = today - days + 1;
    let timeout_us = (p.timeout_secs as i64) * 1_000_000;
    let (daily, runs, alerts) = tokio::join!(
        history::daily(&ctx.store, first_day),
        history::runs_since(&ctx.store, now - 3_600_000_000, timeout_us),
        public_alerts(ctx),
    );
    let mut by_component: HashMap<String, HashMap<i64, DayCounts>> = HashMap::new();
    for (component, day, counts) in daily.unwrap_or_default() {
        by_component
            .entry(component)
            .or_default()
            .insert(day, counts);
    }
    let components = report
        .components
        .iter()
        .map(|c| {
            let counts = by_component.get(c.component.name());
            let days: Vec<DayDoc> = (first_day..=today)
                .map(|d| day_doc(d, counts.and_then(|m| m.get(&d))))
                .collect();
            let (up, total) = counts
                .map(|m| {
                    m.values().fold((0i64, 0i64), |(u, t), c| {
                        (u + c.operational + c.degraded, t + c.total())
                    })
                })
                .unwrap_or((0, 0));
            ComponentDoc {
                name: c.component.name(),
                title: c.component.title(),
                state: c.state,
                reason: c.reason,
                uptime_percent: (total > 0).then(|| round2(up as f64 * 100.0 / total as f64)),
                days,
            }
        })
        .collect();
    StatusDoc {
        title: p.page_title.clone(),
        status: report.state,
        updated_at: rfc3339_micros(report.checked_at),
        refresh_secs: p.page_refresh_secs.max(5),
        components,
        probe: probe_doc(ctx, runs.unwrap_or_default()),
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_states() {
        let d = |o, g, x| {
            day_doc(
                0,
                Some(&DayCounts {
                    operational: o,
                    degraded: g,
                    down: x,
                }),
            )
        };
        assert_eq!(day_doc(0, None).state, "no_data");
        assert_eq!(d(100, 0, 0).state, "operational");
        assert_eq!(d(100, 0, 0).uptime_percent, Some(100.0));
        assert_eq!(d(99, 1, 0).state, "degraded");
        assert_eq!(d(999, 0, 1).state, "degraded");
        assert_eq!(d(90, 0, 10).state, "down");
        assert_eq!(d(90, 0, 10).uptime_percent, Some(90.0));
        assert_eq!(day_doc(0, None).date, "1970-01-01");
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.95), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
