//! The probe role. Every `probe.interval_secs` the instance holding the lease (`lease.rs`)
//! sends an `internal.platform.probe` event through the path real events take — group commit
//! into the outbox, the log (relay and broker with Kafka), the `platform-probe` consumer group
//! (`projection.rs`) — and times the round trip until the projection has applied it
//! (`probe_round_trip_seconds`; failures in `probe_failures_total{reason}`). It then evaluates
//! every status component and records the result in the status history.

pub mod projection;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::AppContext;
use crate::events::{self, EventMeta};
use crate::outbox::AppendRequest;
use crate::status::history::{self, Outcome};
use crate::store::lease::{Fence, Lease};
use crate::store::now_micros;
use crate::telemetry::tracing::{context, spans};

/// How often a probe waiting for its projection looks at the store when no wake-up comes
/// (the projection runs in another process).
const POLL: Duration = Duration::from_millis(100);
/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long the probe lease lasts without renewal. It is renewed once per run, and a run
/// (wait for the interval, the round trip, the evaluation) is built never to outlast it. If a
/// run stalls anyway (a paused process), a second instance takes over, and the stalled run's
/// writes — its run records and status history — are refused by the lease's fence.
pub fn lease_ttl(p: &crate::config::ProbeConfig) -> Duration {
    Duration::from_secs(2 * p.interval_secs + p.timeout_secs + 5)
        + 2 * Duration::from_millis(p.check_timeout_ms)
}

/// Wakes a probe waiting in this process when the projection applied a probe event.
#[derive(Default)]
pub struct ProbeHub {
    notify: Notify,
}

impl ProbeHub {
    pub fn projected(&self) {
        self.notify.notify_waiters();
    }
}

/// How one run ended.
enum Run {
    Done(Outcome, Option<Duration>),
    /// The store could not record the run.
    StoreUnavailable,
    /// Shutdown came first; the run is forgotten.
    Abandoned,
    /// Another instance holds the probe lease now; the run is forgotten.
    LostLease,
}

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let p = &ctx.config.probe;
    let instance = format!("probe-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut lease = Lease::new(ctx.store.clone(), "probe", instance.clone(), lease_ttl(p));
    // The first run comes one interval after start, when the other roles are up.
    let every = Duration::from_secs(p.interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<Instant> = None;
    let mut leading = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let fence = match lease.acquire().await {
            Ok(Some(_)) => {
                if !leading {
                    tracing::info!(%instance, "probe lease acquired");
                    leading = true;
                }
                lease.fence()
            }
            Ok(None) => None,
            Err(e) => {
                lease.forget();
                tracing::warn!(error = %e, "probe lease unavailable");
                fail(&ctx, "store_unavailable");
                ctx.status.evaluate_and_export(&ctx).await;
                continue;
            }
        };
        let Some(fence) = fence else {
            leading = false;
            ctx.status.evaluate_and_export(&ctx).await;
            continue;
        };
        match run_once(&ctx, &instance, &fence, &shutdown).await {
            Run::Abandoned => break,
            Run::LostLease => {
                lost_lease(&ctx, &mut lease);
                continue;
            }
            Run::StoreUnavailable => fail(&ctx, "store_unavailable"),
            Run::Done(Outcome::Ok, Some(rtt)) => {
                ctx.metrics.probe_round_trip.observe(rtt.as_secs_f64());
                ctx.metrics
                    .probe_last_success
                    .set(now_micros() as f64 / 1e6);
            }
            Run::Done(outcome, _) => fail(&ctx, outcome.as_str()),
        }
        let report = ctx.status.evaluate_and_export(&ctx).await;
        // Recorded only under the lease (a stalled run may have lost it).
        match history::record(&ctx.store, &fence, &report).await {
            Ok(()) => {}
            Err(e) if e.is_fenced() => lost_lease(&ctx, &mut lease),
            Err(e) => tracing::warn!(error = %e, "recording the status history failed"),
        }
        if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            match history::prune(&ctx.store, p.history_days).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "status history pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the status history failed"),
            }
        }
    }
    if leading && let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "releasing the probe lease failed");
    }
    Ok(())
}

/// A write of this instance was refused: another instance holds the probe lease now.
fn lost_lease(ctx: &AppContext, lease: &mut Lease) {
    tracing::warn!("the probe lease passed to another instance; this run's writes are refused");
    ctx.metrics
        .lease_writes_refused
        .with_label_values(&["probe"])
        .inc();
    lease.forget();
}

fn fail(ctx: &AppContext, reason: &str) {
    ctx.metrics
        .probe_failures
        .with_label_values(&[reason])
        .inc();
    tracing::warn!(reason, "probe run failed");
}

/// Sends one probe event and waits for its projection; its records are written under
/// `fence`.
async fn run_once(
    ctx: &AppContext,
    instance: &str,
    fence: &Fence,
    shutdown: &CancellationToken,
) -> Run {
    let probe_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "probe",
        otel.name = "probe round trip",
        otel.status_code = tracing::field::Empty,
        probe_id = %probe_id,
    );
    let run = async {
        let sent_at = now_micros();
        match history::run_started(&ctx.store, fence, &probe_id, instance, sent_at).await {
            Ok(()) => {}
            Err(e) if e.is_fenced() => return Run::LostLease,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the probe run");
                return Run::StoreUnavailable;
            }
        }
        let start = Instant::now();
        let outcome = match send(ctx, &probe_id, instance, sent_at).await {
            Err(()) => Outcome::AppendFailed,
            Ok(()) => match wait(ctx, &probe_id, shutdown).await {
                Some(o) => o,
                None => {
                    if let Err(e) = history::run_abandoned(&ctx.store, &probe_id).await {
                        tracing::debug!(error = %e, "cannot forget the abandoned probe run");
                    }
                    return Run::Abandoned;
                }
            },
        };
        let rtt = (outcome == Outcome::Ok).then(|| start.elapsed());
        let rtt_us = rtt.map(|d| d.as_micros() as i64);
        match history::run_finished(&ctx.store, fence, &probe_id, outcome, rtt_us).await {
            Ok(()) => {}
            Err(e) if e.is_fenced() => {
                // The run is the old holder's; it must not count (nor linger as pending).
                if let Err(e) = history::run_forget(&ctx.store, &probe_id).await {
                    tracing::debug!(error = %e, "cannot forget the probe run");
                }
                return Run::LostLease;
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the probe outcome"),
        }
        if outcome != Outcome::Ok {
            spans::fail(&tracing::Span::current(), outcome.as_str());
        }
        tracing::debug!(
            outcome = outcome.as_str(),
            round_trip_us = rtt_us,
            "probe run done"
        );
        Run::Done(outcome, rtt)
    };
    run.instrument(span).await
}

/// Appends the probe event through group commit, like the gateway does.
async fn send(ctx: &AppContext, probe_id: &str, instance: &str, sent_at: i64) -> Result<(), ()> {
    let span = spans::publish(
        spans::messaging_system(ctx.log.name()),
        projection::TOPIC,
        1,
    );
    let payload = json!({
        "version": 1,
        "probe_id": probe_id,
        "sent_at": sent_at / 1000,
        "instance": instance,
    });
    let meta = EventMeta {
        source: "/probe".into(),
        traceparent: context::traceparent(&span),
        correlation_id: Some(probe_id.to_string()),
        idempotency_key: None,
        extra: Default::default(),
    };
    // A fresh key per run spreads the probes over every partition (and relay lane) in turn.
    let ev = match events::build(&ctx.schemas, projection::TOPIC, probe_id, &payload, &meta) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the probe event");
            return Err(());
        }
    };
    let req = AppendRequest {
        events: vec![ev],
        guard: None,
    };
    match ctx.appender.append(req).instrument(span.clone()).await {
        Ok(_) => Ok(()),
        Err(e) => {
            spans::fail(&span, "append_failed");
            tracing::warn!(error = %e, "the probe event was not accepted");
            Err(())
        }
    }
}

/// Waits until the projection applied `probe_id` (`Ok`) or the timeout passed (`Timeout`);
/// `None` on shutdown.
async fn wait(ctx: &AppContext, probe_id: &str, shutdown: &CancellationToken) -> Option<Outcome> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(ctx.config.probe.timeout_secs);
    loop {
        let woken = ctx.probe.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match history::projected(&ctx.store, probe_id).await {
            Ok(true) => return Some(Outcome::Ok),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "reading the probe run failed"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(Outcome::Timeout);
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}
