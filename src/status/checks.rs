//! One check per component, each bounded by `probe.check_timeout_ms`:
//! - gateway: the accept path worked in the probe's latest run; this instance's 5xx share
//! - store, log: they answer (`Store::ping` and `ping_write`, `EventLog::ping`), and not
//!   slowly
//! - relay: the age of the oldest outbox row the broker has not acknowledged; rows it parked
//! - log (embedded): a consumer group holding retention back
//! - projections: the probe's round trip (failed → down, slow → degraded), consumer lag, groups
//!   blocked because the schema registry does not answer
//! - sagas: saga groups' lag and overdue saga timers (the timers table may not exist yet)
//! - objects: the bucket or folder answers; analytics: ClickHouse answers `/ping`
//!
//! Reasons are fixed codes, so nothing internal reaches the public page.

use std::future::Future;
use std::time::{Duration, Instant};

use super::history::{self, Outcome, ProbeRun};
use super::{Check, Component, ComponentReport, Report, State, StatusService};
use crate::app::AppContext;
use crate::store::now_micros;

/// Share of 5xx answers above which the gateway counts as degraded, and the fewest answers
/// that share must be of.
const ERROR_RATIO: f64 = 0.05;
const ERROR_MIN_ANSWERS: f64 = 20.0;

enum Timed<T> {
    Ok(T, Duration),
    Failed,
    Late,
}

async fn timed<T, E>(ctx: &AppContext, f: impl Future<Output = Result<T, E>>) -> Timed<T> {
    let start = Instant::now();
    let limit = Duration::from_millis(ctx.config.probe.check_timeout_ms.max(1));
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Timed::Ok(v, start.elapsed()),
        Ok(Err(_)) => Timed::Failed,
        Err(_) => Timed::Late,
    }
}

/// A dependency that must answer: down when it does not, degraded when it is slow.
fn answered<T>(ctx: &AppContext, t: Timed<T>) -> Check {
    match t {
        Timed::Ok(_, took) if took > Duration::from_millis(ctx.config.probe.slow_check_ms) => {
            Check::degraded("slow")
        }
        Timed::Ok(..) => Check::OK,
        Timed::Failed => Check::down("unreachable"),
        Timed::Late => Check::down("timeout"),
    }
}

/// The store answers reads and can begin a write (a SQLite file locked by another process
/// answers reads but takes no events). The write check gives up a little before the check's
/// own timeout, so it is never cut half-way.
pub async fn store(ctx: &AppContext) -> Check {
    let limit = Duration::from_millis(ctx.config.probe.check_timeout_ms.max(4) * 3 / 4);
    let both = async {
        ctx.store.ping().await?;
        ctx.store.ping_write(limit).await
    };
    let c = answered(ctx, timed(ctx, both).await);
    ctx.metrics
        .store_up
        .with_label_values(&[ctx.store.backend().as_str()])
        .set(i64::from(c.state != State::Down));
    c
}

/// The event log: the broker (Kafka) or, embedded, the store that holds it — and whether a
/// consumer group keeps records past retention (embedded).
pub async fn log(ctx: &AppContext) -> Check {
    let up = answered(ctx, timed(ctx, ctx.log.ping()).await);
    if !ctx.config.is_embedded_log() {
        return up;
    }
    match timed(ctx, crate::relay::retention::held(ctx)).await {
        Timed::Ok(held, _) if !held.is_empty() => up.worst(Check::degraded("retention_held")),
        _ => up,
    }
}

/// The relay keeps the outbox drained: judged by the oldest row not yet acknowledged.
pub async fn relay(ctx: &AppContext) -> Check {
    let p = &ctx.config.probe;
    match timed(ctx, crate::outbox::backlog(&ctx.store)).await {
        Timed::Ok((n, age), _) => {
            ctx.metrics.outbox_backlog.set(n);
            ctx.metrics.outbox_oldest_age.set(age);
            let age_check = if age >= p.relay_down_age_secs as f64 {
                Check::down("outbox_stalled")
            } else if age >= p.relay_degraded_age_secs as f64 {
                Check::degraded("outbox_backlog")
            } else {
                Check::OK
            };
            age_check.worst(parked_check(ctx).await)
        }
        _ => Check::down("unavailable"),
    }
}

/// Rows the relay parked: their keys stand still until an operator acts.
async fn parked_check(ctx: &AppContext) -> Check {
    match timed(ctx, crate::relay::parked::open_count(&ctx.store)).await {
        Timed::Ok(n, _) => {
            ctx.metrics.relay_parked_rows.set(n);
            if n > 0 {
                Check::degraded("parked_rows")
            } else {
                Check::OK
            }
        }
        _ => Check::OK,
    }
}

/// Whether any of `groups` is blocked in this process (the registry does not answer).
fn blocked_check(ctx: &AppContext, groups: &[(String, Vec<String>)]) -> Check {
    let blocked = crate::consumers::blocked_groups(&ctx.metrics);
    match blocked
        .iter()
        .find(|(g, _)| groups.iter().any(|(name, _)| name == g))
    {
        Some((_, reason)) => Check::degraded(reason),
        None => Check::OK,
    }
}

/// The largest lag of these consumer groups; `None` when it cannot be read.
async fn max_lag(ctx: &AppContext, groups: Vec<(String, Vec<String>)>) -> Option<i64> {
    let mut worst = 0;
    for (group, topics) in groups {
        match timed(ctx, ctx.log.lag(&group, &topics)).await {
            Timed::Ok(parts, _) => {
                worst = worst.max(parts.iter().map(|p| p.lag()).sum::<i64>());
            }
            _ => return None,
        }
    }
    Some(worst)
}

fn lag_check(ctx: &AppContext, lag: Option<i64>) -> Check {
    match lag {
        None => Check::degraded("lag_unknown"),
        Some(n) if n > ctx.config.probe.lag_degraded_records => Check::degraded("consumer_lag"),
        Some(_) => Check::OK,
    }
}

/// What the probe's latest run says: `None` when no probe has run (the role is off).
pub struct ProbeView {
    pub latest: Option<ProbeRun>,
    /// The latest run is older than a few intervals: the probe stopped.
    pub stale: bool,
    /// The runs could not be read.
    pub unavailable: bool,
}

pub async fn probe_view(ctx: &AppContext) -> ProbeView {
    let p = &ctx.config.probe;
    let timeout_us = (p.timeout_secs as i64) * 1_000_000;
    match timed(ctx, history::latest(&ctx.store, timeout_us)).await {
        Timed::Ok(latest, _) => {
            // A crashed prober's lease must expire before another instance takes over.
            let window = (crate::probe::lease_ttl(p) + Duration::from_secs(p.interval_secs))
                .as_micros() as i64;
            let stale = latest
                .as_ref()
                .is_some_and(|r| r.sent_at < now_micros() - window);
            ProbeView {
                latest,
                stale,
                unavailable: false,
            }
        }
        _ => ProbeView {
            latest: None,
            stale: false,
            unavailable: true,
        },
    }
}

/// Events reach the read models: the probe's round trip, and the projection groups' lag.
pub async fn projections(ctx: &AppContext, probe: &ProbeView) -> Check {
    let from_probe = match (&probe.latest, probe.stale, probe.unavailable) {
        (_, _, true) => Check::down("unavailable"),
        (Some(_), true, _) => Check::degraded("probe_stale"),
        (Some(r), false, _) => match r.outcome {
            Outcome::Ok => match r.round_trip_ms {
                Some(ms) if ms > ctx.config.probe.degraded_round_trip_ms as f64 => {
                    Check::degraded("probe_slow")
                }
                _ => Check::OK,
            },
            Outcome::Timeout | Outcome::Pending => Check::down("probe_failed"),
            // The event never entered the log: the gateway's fault, not the projections'.
            Outcome::AppendFailed => Check::OK,
        },
        (None, ..) => Check::OK,
    };
    let groups: Vec<(String, Vec<String>)> = crate::consumers::projection_handlers(ctx)
        .into_iter()
        .map(|h| (h.group().to_string(), h.topics()))
        .collect();
    let blocked = blocked_check(ctx, &groups);
    from_probe
        .worst(lag_check(ctx, max_lag(ctx, groups).await))
        .worst(blocked)
}

/// Timers due before `now - probe.timer_overdue_degraded_secs` and the oldest one's due
/// time; `Ok(None)` when there is no timers table (no saga engine in this build).
async fn overdue_timers(ctx: &AppContext) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
    let cut = now_micros() - (ctx.config.probe.timer_overdue_degraded_secs as i64) * 1_000_000;
    let res: Result<(i64, Option<i64>), sqlx::Error> = crate::on_read!(ctx.store, p => {
        sqlx::query_as("SELECT COUNT(*), MIN(fire_at) FROM saga_timers WHERE fire_at < $1")
            .bind(cut)
            .fetch_one(p)
            .await
    });
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if missing_table(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn missing_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("42P01") || d.message().contains("no such table")
        }
        _ => false,
    }
}

/// Workflows move on: saga groups' lag and timers that should have fired.
pub async fn sagas(ctx: &AppContext) -> Check {
    let groups: Vec<(String, Vec<String>)> = crate::consumers::saga_handlers(ctx)
        .into_iter()
        .map(|h| (h.group().to_string(), h.topics()))
        .collect();
    let blocked = blocked_check(ctx, &groups);
    let lag = if groups.is_empty() {
        Check::OK
    } else {
        lag_check(ctx, max_lag(ctx, groups).await)
    }
    .worst(blocked);
    let timers = match timed(ctx, overdue_timers(ctx)).await {
        Timed::Ok(None, _) | Timed::Ok(Some((0, _)), _) => Check::OK,
        Timed::Ok(Some((_, oldest)), _) => {
            let late = now_micros() - oldest.unwrap_or_else(now_micros);
            if late >= (ctx.config.probe.timer_overdue_down_secs as i64) * 1_000_000 {
                Check::down("timers_stalled")
            } else {
                Check::degraded("timers_overdue")
            }
        }
        _ => Check::down("unavailable"),
    };
    lag.worst(timers)
}

/// The bucket (or folder) answers: a HEAD of a key that need not exist.
pub async fn objects(ctx: &AppContext) -> Check {
    answered(ctx, timed(ctx, ctx.objects.check()).await)
}

/// ClickHouse answers `/ping` (only when analytics go to ClickHouse).
pub async fn analytics(ctx: &AppContext, svc: &StatusService) -> Option<Check> {
    let url = ctx.config.analytics.clickhouse_url.as_deref()?;
    let ping = format!("{}/ping", url.trim_end_matches('/'));
    let req = async {
        svc.http_client()
            .get(&ping)
            .send()
            .await?
            .error_for_status()
            .map(|_| ())
    };
    Some(answered(ctx, timed(ctx, req).await))
}

/// The accept path: the probe's latest append, and this instance's share of 5xx answers.
pub fn gateway(ctx: &AppContext, svc: &StatusService, probe: &ProbeView) -> Check {
    let accept = match &probe.latest {
        Some(r) if !probe.stale && r.outcome == Outcome::AppendFailed => {
            Check::down("accept_failed")
        }
        _ => Check::OK,
    };
    let (ratio, answers) = svc.http_error_ratio(ctx);
    let errors = if answers >= ERROR_MIN_ANSWERS && ratio > ERROR_RATIO {
        Check::degraded("error_rate")
    } else {
        Check::OK
    };
    accept.worst(errors)
}

/// Every component, concurrently.
pub async fn evaluate(ctx: &AppContext, svc: &StatusService) -> Report {
    let probe = probe_view(ctx).await;
    let (store, log, relay, projections, sagas, objects, analytics) = tokio::join!(
        store(ctx),
        log(ctx),
        relay(ctx),
        projections(ctx, &probe),
        sagas(ctx),
        objects(ctx),
        analytics(ctx, svc),
    );
    let gateway = gateway(ctx, svc, &probe);
    let mut components = vec![
        (Component::Gateway, gateway),
        (Component::Store, store),
        (Component::Log, log),
        (Component::Relay, relay),
        (Component::Projections, projections),
        (Component::Sagas, sagas),
        (Component::Objects, objects),
    ];
    if let Some(a) = analytics {
        components.push((Component::Analytics, a));
    }
    let components: Vec<ComponentReport> = components
        .into_iter()
        .map(|(component, c)| ComponentReport {
            component,
            state: c.state,
            reason: c.reason,
        })
        .collect();
    Report {
        state: components
            .iter()
            .map(|c| c.state)
            .max()
            .unwrap_or(State::Operational),
        components,
        checked_at: now_micros(),
    }
}
