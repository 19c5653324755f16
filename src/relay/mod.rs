//! The relay role. With Kafka it moves outbox rows to the broker: it leases key-hash lanes
//! (`lanes`), sends each lane's pending rows in id order and marks them once acknowledged
//! (`publish`), woken at once by appends in this process (and by NOTIFY on PostgreSQL), with a
//! poll fallback. A broker outage only grows the outbox; the relay drains it when the broker is
//! back. With the embedded log the outbox already is the log, so the relay only applies
//! retention (`retention`).

pub mod lanes;
pub mod publish;
pub mod retention;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::log::kafka::client;

pub use retention::enforce_retention;

/// Marks acknowledged rows published.
async fn mark(ctx: &AppContext, ids: &[i64]) {
    if let Err(e) = publish::mark_published(&ctx.store, ids).await {
        // The rows are on the broker; they will be sent again (a duplicate the consumers'
        // inbox absorbs).
        tracing::warn!(error = %e, "marking relayed rows failed");
    }
}

const RETENTION_EVERY: Duration = Duration::from_secs(60);
const TOPICS_RETRY: Duration = Duration::from_secs(5);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    if ctx.config.is_embedded_log() {
        return retention::run(ctx, shutdown).await;
    }
    let cfg = &ctx.config.log;
    let producer: FutureProducer = client::producer(cfg)?.create()?;
    let mut lanes = lanes::Lanes::new(ctx.store.clone(), cfg.relay_lanes);
    let mut wake = ctx.outbox.signal.subscribe();
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(1));
    let mut next_refresh = Instant::now();
    let mut next_retention = Instant::now() + RETENTION_EVERY;
    let mut topics_ready = !cfg.create_topics;
    let mut next_topics = Instant::now();
    let mut inflight: Option<(publish::Sent, Vec<i64>)> = None;
    tracing::info!(lanes = cfg.relay_lanes, "relay started (kafka)");
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh = now + lanes::RENEW;
            // Lanes may be handed over below: nothing of ours may still be in flight then.
            if let Some((sent, _)) = inflight.take() {
                let outcome = publish::settle(&ctx, sent, &mut HashSet::new()).await;
                mark(&ctx, &outcome.acked).await;
            }
            if let Err(e) = lanes.refresh().await {
                tracing::warn!(error = %e, "renewing relay lanes failed; pausing");
                lanes.drop_local();
            }
            ctx.metrics.relay_lanes_held.set(lanes.held().len() as i64);
        }
        if !topics_ready && now >= next_topics {
            match crate::log::kafka::topics::ensure(&ctx).await {
                Ok(()) => topics_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "creating topics failed; retrying");
                    next_topics = now + TOPICS_RETRY;
                }
            }
        }
        if now >= next_retention {
            next_retention = now + RETENTION_EVERY;
            if let Err(e) = enforce_retention(&ctx).await {
                tracing::warn!(error = %e, "retention pass failed");
            }
        }
        wake.borrow_and_update();
        let held = lanes.held();
        // Pipelined: while a batch awaits its acknowledgements, the next one (rows after it, on
        // the same lanes) is read and handed to the producer, which keeps each partition's order.
        let after = match &inflight {
            None => Some(0),
            Some((sent, on)) if *on == held => Some(sent.last_id()),
            Some(_) => None, // the lanes changed: settle first, then read from the start
        };
        let rows = match after {
            Some(after) if !held.is_empty() && topics_ready => {
                match publish::pending(&ctx.store, &held, after, cfg.relay_batch).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the outbox failed");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        let next = (!rows.is_empty()).then(|| (publish::enqueue(&producer, rows), held));
        let Some((sent, _)) = inflight.take() else {
            inflight = next;
            if inflight.is_none() {
                let nap = poll.min(next_refresh.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
            }
            continue;
        };
        let mut failed_keys = HashSet::new();
        let mut outcome = publish::settle(&ctx, sent, &mut failed_keys).await;
        if outcome.failed > 0 {
            // Drain the pipeline, so the next read starts again at the failed rows.
            if let Some((sent, _)) = next {
                let more = publish::settle(&ctx, sent, &mut failed_keys).await;
                outcome.acked.extend(more.acked);
            }
        } else {
            inflight = next;
        }
        mark(&ctx, &outcome.acked).await;
        if outcome.failed > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(FAILURE_BACKOFF) => {}
            }
        }
    }
    if let Some((sent, _)) = inflight.take() {
        let outcome = publish::settle(&ctx, sent, &mut HashSet::new()).await;
        mark(&ctx, &outcome.acked).await;
    }
    lanes.release().await;
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    tracing::info!("relay stopped");
    Ok(())
}
