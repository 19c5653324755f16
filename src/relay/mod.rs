//! The relay role. With Kafka it moves outbox rows to the broker: it leases key-hash lanes
//! (`lanes`: fenced leases of `store::lease`, with the lane count kept in the store: `layout`),
//! sends each lane's pending rows in id order through a producer session and marks them once
//! acknowledged, fenced by the lanes' lease epochs (`publish`,
//! `producer`), parks rows it can never send (`parked`), woken at once by appends in this
//! process (and by NOTIFY on PostgreSQL), with a poll fallback. A broker outage only grows the
//! outbox; the relay drains it when the broker is back. With the embedded log the outbox
//! already is the log, so the relay only applies retention (`retention`).

pub mod lanes;
pub mod layout;
pub mod parked;
pub mod producer;
pub mod publish;
pub mod retention;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::AppContext;

pub use retention::enforce_retention;

const RETENTION_EVERY: Duration = Duration::from_secs(60);
const TOPICS_RETRY: Duration = Duration::from_secs(5);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);

/// The relay's lanes: the leases, and the layout they were taken under.
struct Held {
    lanes: lanes::Lanes,
    layout: u32,
}

impl Held {
    /// Renews the leases. When the store's lane count changed (`substrate relay set-lanes`),
    /// starts over with the new one: the old leases were fenced by the change.
    async fn refresh(&mut self, ctx: &AppContext) {
        match layout::stored(&ctx.store).await {
            Ok(Some(n)) if n != self.layout => {
                tracing::warn!(
                    from = self.layout,
                    to = n,
                    "relay lane count changed in the store; taking lanes anew"
                );
                self.lanes.release().await;
                self.lanes = lanes::Lanes::new(ctx.store.clone(), n, lane_ttl(ctx));
                self.layout = n;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the relay layout failed"),
        }
        if let Err(e) = layout::fill_key_hashes(&ctx.store).await {
            tracing::warn!(error = %e, "filling in outbox key hashes failed");
        }
        if let Err(e) = self.lanes.refresh().await {
            tracing::warn!(error = %e, "renewing relay lanes failed; pausing");
            self.lanes.drop_local();
        }
        ctx.metrics
            .relay_lanes_held
            .set(self.lanes.held().len() as i64);
        if let Ok(n) = parked::open_count(&ctx.store).await {
            ctx.metrics.relay_parked_rows.set(n);
        }
    }
}

/// How long a lane lease lasts without renewal (`log.relay_lease_ttl_ms`).
fn lane_ttl(ctx: &AppContext) -> Duration {
    Duration::from_millis(ctx.config.log.relay_lease_ttl_ms)
}

/// The lane count this relay uses: the store's, seeded from `log.relay_lanes` by the first
/// relay. A configuration that disagrees is only warned about.
async fn layout_of(ctx: &AppContext) -> anyhow::Result<u32> {
    let configured = ctx.config.log.relay_lanes;
    let n = layout::current(&ctx.store, configured).await?;
    if n != configured {
        tracing::warn!(
            configured,
            stored = n,
            "log.relay_lanes differs from the lane count in the store; using the store's (change it with `substrate relay set-lanes`)"
        );
    }
    Ok(n)
}

pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    if ctx.config.is_embedded_log() {
        return retention::run(ctx, shutdown).await;
    }
    let cfg = &ctx.config.log;
    let mut session = publish::Session::new(producer::KafkaProducer::connect(cfg));
    // A producer that cannot have the settings per-key order rests on stops the relay here.
    session.get()?;
    let layout = layout_of(&ctx).await?;
    let mut held = Held {
        lanes: lanes::Lanes::new(ctx.store.clone(), layout, lane_ttl(&ctx)),
        layout,
    };
    let mut suspects = publish::Suspects::default();
    let mut marking: Option<Marking> = None;
    let mut wake = ctx.outbox.signal.subscribe();
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(1));
    let mut next_refresh = Instant::now();
    let mut next_retention = Instant::now() + RETENTION_EVERY;
    let mut topics_ready = !cfg.create_topics;
    let mut next_topics = Instant::now();
    tracing::info!(lanes = layout, "relay started (kafka)");
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= next_refresh {
            next_refresh = now + held.lanes.renew_every();
            // Marks first, so a lane handed back does not have its acknowledged rows sent again
            // by the next holder. (A refresh during a batch may still hand back a lane whose
            // marks are being written: the marks are fenced, so they land or are refused, and
            // the rows are sent again at worst.)
            settle(&ctx, &mut held, marking.take()).await;
            held.refresh(&ctx).await;
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
        let lanes_now = held.lanes.held();
        // The rows whose marks are being written are acknowledged already: left out, not sent
        // again.
        let marking_ids = marking.as_ref().map(Marking::ids).unwrap_or_default();
        let mut rows = if lanes_now.is_empty() || !topics_ready {
            Vec::new()
        } else {
            match publish::pending(
                &ctx.store,
                held.layout,
                &lanes_now,
                cfg.relay_batch,
                &marking_ids,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the outbox failed");
                    Vec::new()
                }
            }
        };
        if rows.is_empty() && marking.is_some() {
            // Nothing beyond the rows being marked: let the marks land, then look again.
            settle(&ctx, &mut held, marking.take()).await;
            continue;
        }
        if rows.is_empty() {
            let nap = poll.min(next_refresh.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
            continue;
        }
        // Each record names the lane lease it is sent under (`relay_lease` header).
        held.lanes.stamp(&mut rows);
        let stop = shutdown.child_token();
        let batch = publish::Batch {
            metrics: &ctx.metrics,
            park_after: cfg.relay_park_after,
            stop: &stop,
        };
        let send = batch.send(&mut session, &mut suspects, &rows);
        let outcome =
            keep_lanes_while(send, &ctx, &mut held, &rows, &stop, &mut next_refresh).await;
        // The previous batch's marks were written while this one was read and sent; this
        // batch's are written while the next one is.
        settle(&ctx, &mut held, marking.take()).await;
        marking = Marking::start(&ctx, held.lanes.marks(&rows, &outcome.acked));
        park(&ctx, &held.lanes, &rows, &outcome.park).await;
        if outcome.failed > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(FAILURE_BACKOFF) => {}
            }
        }
    }
    settle(&ctx, &mut held, marking.take()).await;
    // Flush first (bounded by the lanes' deadline), purge what is left, then hand the lanes
    // over: another relay must not start on them while this one still sends.
    let flush_for = held
        .lanes
        .deadline_all()
        .saturating_duration_since(Instant::now());
    session.close(flush_for.min(Duration::from_secs(5))).await;
    held.lanes.release().await;
    tracing::info!("relay stopped");
    Ok(())
}

/// A batch's marks being written on a task of their own (`lanes::Marks`), off the send path.
struct Marking {
    ids: Vec<i64>,
    task: tokio::task::JoinHandle<Result<lanes::Written, crate::store::StoreError>>,
}

/// Times a failed mark transaction is tried again before its rows are left to be sent again.
const MARK_ATTEMPTS: u32 = 3;

impl Marking {
    /// Starts writing `marks` (none to write: nothing started).
    fn start(ctx: &AppContext, marks: lanes::Marks) -> Option<Marking> {
        if marks.is_empty() {
            return None;
        }
        let ids = marks.ids();
        let store = ctx.store.clone();
        let task = tokio::spawn(async move {
            let mut attempt = 1;
            loop {
                match marks.write(&store).await {
                    Err(e) if attempt < MARK_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "marking relayed rows failed; trying again");
                        attempt += 1;
                        tokio::time::sleep(FAILURE_BACKOFF / 5).await;
                    }
                    r => return r,
                }
            }
        });
        Some(Marking { ids, task })
    }

    fn ids(&self) -> Vec<i64> {
        self.ids.clone()
    }
}

/// Waits for marks being written and takes in their outcome. Rows whose marks failed are
/// pending again: they are sent again (a duplicate the consumers' inbox absorbs).
async fn settle(ctx: &AppContext, held: &mut Held, marking: Option<Marking>) {
    let Some(m) = marking else { return };
    match m.task.await {
        Ok(Ok(written)) => {
            held.lanes.settle(ctx, &written);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "marking relayed rows failed"),
        Err(e) => tracing::warn!(error = %e, "the task marking relayed rows failed"),
    }
}

/// Runs `send` to its end while renewing the lane leases on time. If a lane of the batch is
/// lost meanwhile, its lease nears its end without a renewal (the store does not answer), or
/// the process shuts down (`stop` is a child of the shutdown token), `stop` is cancelled: the
/// session abandons what is in flight, and the rows are sent again by whoever holds their lane
/// next. A relay waiting on a stalled broker with a working store keeps its lanes, so nobody
/// else sends them meanwhile.
async fn keep_lanes_while(
    send: impl std::future::Future<Output = publish::Outcome>,
    ctx: &AppContext,
    held: &mut Held,
    rows: &[crate::outbox::OutboxRow],
    stop: &CancellationToken,
    next_refresh: &mut Instant,
) -> publish::Outcome {
    let batch_lanes: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.lane).collect();
    tokio::pin!(send);
    loop {
        let renew_at = tokio::time::Instant::from_std(*next_refresh);
        let deadline = tokio::time::Instant::from_std(held.lanes.deadline(rows));
        tokio::select! {
            out = &mut send => return out,
            _ = tokio::time::sleep_until(renew_at) => {
                *next_refresh = Instant::now() + held.lanes.renew_every();
                held.refresh(ctx).await;
                let now_held = held.lanes.held();
                if batch_lanes.iter().any(|l| !now_held.contains(l)) && !stop.is_cancelled() {
                    tracing::warn!("relay lost a lane mid-batch; abandoning what is in flight");
                    cut(ctx, held, rows, stop);
                }
            }
            _ = tokio::time::sleep_until(deadline), if !stop.is_cancelled() => {
                tracing::warn!(rows = rows.len(), "relay batch not acknowledged before its lanes' deadline; cutting it");
                cut(ctx, held, rows, stop);
            }
        }
    }
}

/// Cuts a batch: the session abandons what is queued or in flight, and its lanes stay with this
/// relay until a later batch on them is acknowledged in full (`Lanes::cut`).
fn cut(
    ctx: &AppContext,
    held: &mut Held,
    rows: &[crate::outbox::OutboxRow],
    stop: &CancellationToken,
) {
    ctx.metrics.relay_batches_cut.inc();
    held.lanes.cut(rows);
    stop.cancel();
}

/// Parks rows the batch gave up on (only on lanes this relay still holds: the park is fenced
/// like the marks), and says so loudly.
async fn park(
    ctx: &AppContext,
    lanes: &lanes::Lanes,
    batch: &[crate::outbox::OutboxRow],
    rows: &[publish::Park],
) {
    for p in rows {
        let fence = batch
            .iter()
            .find(|r| r.id == p.row_id)
            .and_then(|r| lanes.fence_for(r.lane));
        let Some(fence) = fence else { continue };
        match parked::park(&ctx.store, &fence, p.row_id, &p.error, p.attempts).await {
            Ok(true) => {
                tracing::error!(outbox_id = p.row_id, attempts = p.attempts, error = %p.error, "relay parked a row it cannot send; its key waits (substrate relay parked list)");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "parking a relay row failed"),
        }
    }
    if !rows.is_empty()
        && let Ok(n) = parked::open_count(&ctx.store).await
    {
        ctx.metrics.relay_parked_rows.set(n);
    }
}
