//! The group loop. Poll a batch; decode it; in one transaction claim the events in the inbox,
//! run the handler on the fresh ones, append what it emitted to the outbox, and (embedded
//! log) commit the offsets; commit (Kafka offsets) after that. When a handler fails on event
//! i, the batch is rolled back, events before i are applied on their own, and event i is
//! retried with exponential backoff until it succeeds or is dead-lettered; then the batch
//! goes on. Shutdown finishes the batch in hand. Each handled event is a `process {topic}`
//! span continuing the event's `traceparent`; what the handler emits names that span.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Emitter, Envelope, Handler, HandlerError, dlq, inbox, lag, seeks};
use crate::app::AppContext;
use crate::log::{LogConsumer, LogError, LogRecord, Position};
use crate::schema::SchemaError;
use crate::store::StoreError;
use crate::telemetry::tracing::{context, spans};

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("shutting down")]
    Shutdown,
}

impl ConsumerError {
    /// The member lost its group's lease: the write was refused and rolled back.
    fn is_fenced(&self) -> bool {
        match self {
            ConsumerError::Log(e) => e.is_fenced(),
            ConsumerError::Store(e) => e.is_fenced(),
            ConsumerError::Shutdown => false,
        }
    }
}

/// Why a record could not become an envelope.
enum DecodeFailure {
    /// The bytes are bad: dead-letter at once.
    Poison(String),
    /// The registry could not be reached: retry later.
    Transient(String),
}

/// Runs every handler's group until `shutdown`; honours `consumers.only`.
pub async fn run_handlers(
    ctx: AppContext,
    handlers: Vec<Arc<dyn Handler>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let only = &ctx.config.consumers.only;
    let mut set = tokio::task::JoinSet::new();
    for h in handlers {
        if !only.is_empty() && !only.iter().any(|g| g == h.group()) {
            continue;
        }
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move {
            let group = h.group().to_string();
            let r = run_group(ctx, h, shutdown).await;
            (group, r)
        });
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok((_, Ok(()))) | Ok((_, Err(ConsumerError::Shutdown))) => {}
            Ok((group, Err(e))) => {
                return Err(anyhow::anyhow!("consumer group {group} failed: {e}"));
            }
            Err(e) => return Err(anyhow::anyhow!("consumer task panicked: {e}")),
        }
    }
    Ok(())
}

/// Sleeps, unless shutdown comes first.
async fn nap(d: Duration, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = shutdown.cancelled() => Err(ConsumerError::Shutdown),
    }
}

pub async fn run_group(
    ctx: AppContext,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let group = handler.group().to_string();
    let topics = handler.topics();
    let consumer = loop {
        match ctx.log.subscribe(&group, &topics).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(%group, error = %e, "cannot join the consumer group; retrying");
                nap(Duration::from_secs(1), &shutdown).await?;
            }
        }
    };
    run_group_on(ctx, handler, consumer, shutdown).await
}

/// Runs `handler`'s group on a consumer already subscribed to its topics (tests hand in a
/// consumer of their own here).
pub async fn run_group_on(
    ctx: AppContext,
    handler: Arc<dyn Handler>,
    mut consumer: Box<dyn LogConsumer>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let group = handler.group().to_string();
    let topics = handler.topics();
    let lag = lag::LagReporter::new(&ctx, &group, &topics);
    let mut g = Group {
        system: spans::messaging_system(ctx.log.name()),
        ctx: ctx.clone(),
        handler,
        group: group.clone(),
        topics,
        shutdown: shutdown.clone(),
        seen_seek: seeks::max_id(&ctx.store, &group).await.unwrap_or(0),
        next_seek_check: Instant::now(),
        lag,
        rejoins_seen: 0,
    };
    tracing::info!(%group, topics = ?g.topics, log = ctx.log.name(), "consumer group started");
    let res = g.run(consumer.as_mut()).await;
    consumer.close().await;
    g.blocked(None);
    tracing::info!(%group, "consumer group stopped");
    match res {
        Err(ConsumerError::Shutdown) => Ok(()),
        other => other,
    }
}

struct Group {
    /// `messaging.system` of the spans.
    system: &'static str,
    ctx: AppContext,
    handler: Arc<dyn Handler>,
    group: String,
    topics: Vec<String>,
    shutdown: CancellationToken,
    seen_seek: i64,
    next_seek_check: Instant,
    lag: lag::LagReporter,
    /// The consumer's rejoin count already added to `consumer_rejoins_total`.
    rejoins_seen: u64,
}

/// How an attempt to apply a run of records ended.
enum Applied {
    Done,
    /// The handler failed on the record at this index of the run.
    HandlerFailed(usize, HandlerError),
    /// The set-based apply of the run failed (rolled back): apply it one event at a time.
    BatchFailed,
}

/// What an applied run did so far.
#[derive(Default)]
struct Done {
    emitted: Vec<crate::outbox::NewEvent>,
    handled: u64,
    dead: u64,
}

impl Group {
    async fn run(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), ConsumerError> {
        let batch = self.ctx.config.consumers.batch_size.max(1);
        let batch = self
            .handler
            .max_batch()
            .map_or(batch, |m| batch.min(m.max(1)));
        let mut backoff = self.initial_backoff();
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ConsumerError::Shutdown);
            }
            if Instant::now() >= self.next_seek_check {
                self.next_seek_check = Instant::now() + Duration::from_millis(500);
                if let Err(e) = self.apply_seeks(consumer).await {
                    tracing::warn!(group = %self.group, error = %e, "applying replay requests failed");
                }
                self.count_rejoins(consumer);
            }
            self.lag.tick();
            let polled = tokio::select! {
                r = consumer.poll(batch, Duration::from_millis(500)) => r,
                _ = self.shutdown.cancelled() => return Err(ConsumerError::Shutdown),
            };
            let records = match polled {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "poll failed; backing off");
                    nap(backoff, &self.shutdown).await?;
                    backoff = (backoff * 2).min(self.max_backoff());
                    continue;
                }
            };
            backoff = self.initial_backoff();
            if records.is_empty() {
                continue;
            }
            let started = Instant::now();
            match self.process(consumer, &records).await {
                Err(e) if e.is_fenced() => {
                    // Another member holds the group now; its work stands, ours is dropped.
                    tracing::warn!(group = %self.group, error = %e, "lost the group's lease; batch abandoned");
                    self.ctx
                        .metrics
                        .lease_writes_refused
                        .with_label_values(&["consumer"])
                        .inc();
                    continue;
                }
                r => r?,
            }
            self.ctx
                .metrics
                .consumer_batch_seconds
                .with_label_values(&[&self.group])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn count_rejoins(&mut self, consumer: &dyn LogConsumer) {
        let n = consumer.rejoins();
        if n > self.rejoins_seen {
            self.ctx
                .metrics
                .consumer_rejoins
                .with_label_values(&[&self.group])
                .inc_by(n - self.rejoins_seen);
            self.rejoins_seen = n;
        }
    }

    fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.ctx.config.consumers.backoff_initial_ms.max(1))
    }

    fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.ctx.config.consumers.backoff_max_ms.max(1))
    }

    async fn decode(&self, rec: &LogRecord) -> Result<Envelope, DecodeFailure> {
        let payload = match self.ctx.schemas.decode_json(&rec.value).await {
            Ok(p) => p,
            Err(SchemaError::Lookup(e)) if e.code().0 >= 500 => {
                return Err(DecodeFailure::Transient(e.to_string()));
            }
            Err(e) => return Err(DecodeFailure::Poison(format!("undecodable payload: {e}"))),
        };
        let id = rec
            .headers
            .get("ce_id")
            .cloned()
            .unwrap_or_else(|| format!("{}/{}/{}", rec.topic, rec.partition, rec.offset));
        let time = rec
            .headers
            .get("ce_time")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
            .unwrap_or(rec.timestamp);
        Ok(Envelope {
            id,
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.clone().unwrap_or_default(),
            event_type: rec
                .headers
                .get("ce_type")
                .cloned()
                .unwrap_or_else(|| crate::schema::event_type_of(&rec.topic)),
            time,
            headers: rec.headers.clone(),
            payload,
        })
    }

    /// Decodes `rec`; while the schema registry cannot answer (5xx, unreachable), waits with
    /// capped exponential backoff — the group is then visibly blocked (`consumer_blocked`,
    /// /status) rather than skipping or dead-lettering an event that is not at fault.
    async fn decode_or_wait(
        &self,
        rec: &LogRecord,
    ) -> Result<Result<Envelope, String>, ConsumerError> {
        let mut backoff = self.initial_backoff();
        let mut waited = false;
        loop {
            match self.decode(rec).await {
                Err(DecodeFailure::Transient(e)) => {
                    self.ctx
                        .metrics
                        .consumer_failed
                        .with_label_values(&[&self.group])
                        .inc();
                    if !waited {
                        self.blocked(Some(super::BLOCKED_REGISTRY));
                        waited = true;
                    }
                    tracing::warn!(group = %self.group, error = %e, retry_in_ms = backoff.as_millis() as u64, "registry unavailable; the group waits to decode");
                    nap(backoff, &self.shutdown).await?;
                    backoff = (backoff * 2).min(self.max_backoff());
                }
                Ok(env) => {
                    if waited {
                        self.blocked(None);
                        tracing::info!(group = %self.group, "registry answers again; the group goes on");
                    }
                    return Ok(Ok(env));
                }
                Err(DecodeFailure::Poison(e)) => {
                    if waited {
                        self.blocked(None);
                    }
                    return Ok(Err(e));
                }
            }
        }
    }

    /// Marks the group blocked for `reason` (or not blocked) in `consumer_blocked`.
    fn blocked(&self, reason: Option<&'static str>) {
        let gauge = &self.ctx.metrics.consumer_blocked;
        for r in super::BLOCKED_REASONS {
            gauge
                .with_label_values(&[&self.group, r])
                .set(i64::from(reason == Some(r)));
        }
    }

    /// The event id a record is known by, even when it cannot be decoded.
    fn record_id(rec: &LogRecord) -> String {
        rec.headers
            .get("ce_id")
            .cloned()
            .unwrap_or_else(|| format!("{}/{}/{}", rec.topic, rec.partition, rec.offset))
    }

    /// Whether this group should see `rec` (a redriven record is for one group only).
    fn is_for_us(&self, rec: &LogRecord) -> bool {
        rec.headers
            .get(dlq::REDRIVE_GROUP)
            .is_none_or(|g| g == &self.group)
    }

    fn positions(records: &[LogRecord]) -> Vec<Position> {
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in records {
            let e = next
                .entry((r.topic.clone(), r.partition))
                .or_insert(r.offset + 1);
            *e = (*e).max(r.offset + 1);
        }
        next.into_iter()
            .map(|((topic, partition), next_offset)| Position {
                topic,
                partition,
                next_offset,
            })
            .collect()
    }

    async fn process(
        &mut self,
        consumer: &mut dyn LogConsumer,
        records: &[LogRecord],
    ) -> Result<(), ConsumerError> {
        let mut envs = Vec::with_capacity(records.len());
        for r in records {
            envs.push(self.decode_or_wait(r).await?);
        }
        let n = records.len();
        let (mut start, mut end) = (0usize, n);
        // Set-based apply of the run, until it fails; then one event at a time up to the
        // failing event, as without batching.
        let mut whole = true;
        while start < n {
            match self
                .apply_with_infra_retry(consumer, &records[start..end], &envs[start..end], whole)
                .await?
            {
                Applied::Done => {
                    start = end;
                    end = n;
                }
                Applied::BatchFailed => whole = false,
                Applied::HandlerFailed(0, err) => {
                    self.retry_one(consumer, &records[start], &envs[start], err)
                        .await?;
                    start += 1;
                    end = n;
                    whole = true;
                }
                Applied::HandlerFailed(i, _) => {
                    // Apply the records before the failure on their own first.
                    end = start + i;
                }
            }
        }
        Ok(())
    }

    /// `apply`, retrying store/log outages (which are no fault of the events) until they pass.
    async fn apply_with_infra_retry(
        &mut self,
        consumer: &mut dyn LogConsumer,
        records: &[LogRecord],
        envs: &[Result<Envelope, String>],
        whole: bool,
    ) -> Result<Applied, ConsumerError> {
        let mut backoff = self.initial_backoff();
        loop {
            match self.apply(consumer, records, envs, whole).await {
                Ok(a) => return Ok(a),
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "applying a batch failed; retrying");
                    nap(backoff, &self.shutdown).await?;
                    backoff = (backoff * 2).min(self.max_backoff());
                }
            }
        }
    }

    /// One transaction over `records`: inbox, handler, emitted events, offsets. With `whole`
    /// and a handler that has a set-based form, the inbox is claimed for the whole batch and
    /// every fresh event goes to `BatchApply::apply_batch` at once; otherwise (and when that
    /// fails: `Applied::BatchFailed`) each goes through `handle`.
    async fn apply(
        &mut self,
        consumer: &mut dyn LogConsumer,
        records: &[LogRecord],
        envs: &[Result<Envelope, String>],
        whole: bool,
    ) -> Result<Applied, ConsumerError> {
        let ctx = self.ctx.clone();
        let handler = self.handler.clone();
        let batch = if whole { handler.batch() } else { None };
        let mut tx = ctx.store.begin().await?;
        let ids: Vec<&str> = records
            .iter()
            .zip(envs)
            .filter(|(r, e)| e.is_ok() && self.is_for_us(r))
            .filter_map(|(_, e)| e.as_ref().ok().map(|e| e.id.as_str()))
            .collect();
        let mut fresh = inbox::claim(&mut tx, &self.group, &ids).await?;
        let mut done = Done::default();
        // The batch handler's run: fresh events with their `process` spans.
        let mut run: Vec<(&Envelope, tracing::Span)> = Vec::new();
        for (i, (rec, env)) in records.iter().zip(envs).enumerate() {
            match env {
                Err(reason) => {
                    let id = Self::record_id(rec);
                    let written =
                        dlq::write(&mut tx, &ctx.outbox, &self.group, &id, rec, reason, 0).await?;
                    done.dead += u64::from(written);
                }
                Ok(env) => {
                    if !self.is_for_us(rec) || !fresh.remove(&env.id) {
                        continue;
                    }
                    let span = self.process_span(env);
                    if batch.is_some() {
                        run.push((env, span));
                        continue;
                    }
                    if let Err(e) = self.handle_one(env, &mut tx, span, &mut done).await {
                        let _ = tx.rollback().await;
                        return Ok(Applied::HandlerFailed(i, e));
                    }
                }
            }
        }
        if let Some(b) = batch
            && !run.is_empty()
        {
            let evs: Vec<&Envelope> = run.iter().map(|(e, _)| *e).collect();
            if let Err(e) = b.apply_batch(&evs, &mut tx).await {
                for (_, span) in &run {
                    spans::fail(span, e.kind());
                }
                let _ = tx.rollback().await;
                tracing::debug!(group = %self.group, error = %e, "batch apply failed; applying one event at a time");
                return Ok(Applied::BatchFailed);
            }
            for (_, span) in &run {
                tracing::debug!(parent: span, group = %self.group, "event handled");
            }
            done.handled += run.len() as u64;
        }
        self.finish(consumer, tx, records, done).await?;
        Ok(Applied::Done)
    }

    /// The `process {topic}` span of one delivery, continuing the event's trace.
    fn process_span(&self, env: &Envelope) -> tracing::Span {
        spans::process(&spans::Delivery {
            system: self.system,
            topic: &env.topic,
            group: &self.group,
            event_id: &env.id,
            partition: env.partition,
            offset: env.offset,
            traceparent: env.header("traceparent"),
        })
    }

    /// Runs the handler on one fresh event inside `span`; what it emits joins `done`.
    async fn handle_one(
        &self,
        env: &Envelope,
        tx: &mut crate::store::Tx,
        span: tracing::Span,
        done: &mut Done,
    ) -> Result<(), HandlerError> {
        let mut out = Emitter::new(&self.ctx.schemas, env, &self.group)
            .with_traceparent(context::traceparent(&span));
        match self
            .handler
            .handle(env, tx, &mut out)
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                tracing::debug!(parent: &span, group = %self.group, "event handled");
                done.emitted.extend(out.events);
                done.handled += 1;
                Ok(())
            }
            Err(e) => {
                spans::fail(&span, e.kind());
                Err(e)
            }
        }
    }

    /// Ends an applied batch: appends what the handler emitted, moves the offsets (in the
    /// transaction on the embedded log, after it on Kafka), commits, counts.
    async fn finish(
        &mut self,
        consumer: &mut dyn LogConsumer,
        mut tx: crate::store::Tx,
        records: &[LogRecord],
        done: Done,
    ) -> Result<(), ConsumerError> {
        let refs: Vec<&crate::outbox::NewEvent> = done.emitted.iter().collect();
        self.ctx.outbox.append(&mut tx, &refs).await?;
        let positions = Self::positions(records);
        if consumer.offsets_in_store() {
            consumer.commit_in(&mut tx, &positions).await?;
        }
        tx.commit().await?;
        if !consumer.offsets_in_store()
            && let Err(e) = consumer.commit(&positions).await
        {
            // The effects are committed; a redelivery is absorbed by the inbox.
            tracing::warn!(group = %self.group, error = %e, "offset commit failed");
        }
        let m = &self.ctx.metrics;
        m.consumer_handled
            .with_label_values(&[&self.group])
            .inc_by(done.handled);
        if done.dead > 0 {
            m.consumer_dead_lettered
                .with_label_values(&[&self.group])
                .inc_by(done.dead);
        }
        Ok(())
    }

    /// Retries one failing record with exponential backoff; dead-letters it after
    /// `consumers.max_retries` retries (at once when the handler rejects it).
    async fn retry_one(
        &mut self,
        consumer: &mut dyn LogConsumer,
        rec: &LogRecord,
        env: &Result<Envelope, String>,
        first: HandlerError,
    ) -> Result<(), ConsumerError> {
        let max = self.ctx.config.consumers.max_retries;
        let mut attempts: u32 = 1;
        let mut err = first;
        let mut backoff = self.initial_backoff();
        let one = std::slice::from_ref(rec);
        let one_env = std::slice::from_ref(env);
        loop {
            self.ctx
                .metrics
                .consumer_failed
                .with_label_values(&[&self.group])
                .inc();
            tracing::warn!(group = %self.group, topic = %rec.topic, offset = rec.offset, attempts, error = %err, "handler failed");
            let give_up = matches!(err, HandlerError::Reject(_)) || attempts > max;
            if give_up {
                break;
            }
            if let HandlerError::Store(_) = &err {
                // A store outage is not the event's fault: wait for the store, do not count it.
                if self.ctx.store.ping().await.is_err() {
                    attempts -= 1;
                }
            }
            nap(backoff, &self.shutdown).await?;
            backoff = (backoff * 2).min(self.max_backoff());
            attempts += 1;
            match self
                .apply_with_infra_retry(consumer, one, one_env, false)
                .await?
            {
                Applied::Done => return Ok(()),
                Applied::HandlerFailed(_, e) => err = e,
                // Not with `whole` off.
                Applied::BatchFailed => {}
            }
        }
        // Dead-letter it and move past it, in one transaction.
        let mut backoff = self.initial_backoff();
        loop {
            match self
                .dead_letter(consumer, rec, &err.to_string(), attempts)
                .await
            {
                Ok(false) => {
                    // Written before (this is a redelivery after a failed offset commit).
                    tracing::debug!(group = %self.group, topic = %rec.topic, offset = rec.offset, "dead letter already recorded");
                    return Ok(());
                }
                Ok(true) => {
                    self.ctx
                        .metrics
                        .consumer_dead_lettered
                        .with_label_values(&[&self.group])
                        .inc();
                    let event_id = Self::record_id(rec);
                    let span = spans::dead_letter(&spans::Delivery {
                        system: self.system,
                        topic: &rec.topic,
                        group: &self.group,
                        event_id: &event_id,
                        partition: rec.partition,
                        offset: rec.offset,
                        traceparent: rec.headers.get("traceparent").map(String::as_str),
                    });
                    tracing::error!(parent: &span, group = %self.group, topic = %rec.topic, offset = rec.offset, attempts, error = %err, "event dead-lettered");
                    return Ok(());
                }
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "writing the dead letter failed; retrying");
                    nap(backoff, &self.shutdown).await?;
                    backoff = (backoff * 2).min(self.max_backoff());
                }
            }
        }
    }

    async fn dead_letter(
        &mut self,
        consumer: &mut dyn LogConsumer,
        rec: &LogRecord,
        reason: &str,
        attempts: u32,
    ) -> Result<bool, ConsumerError> {
        let mut tx = self.ctx.store.begin().await?;
        let written = dlq::write(
            &mut tx,
            &self.ctx.outbox,
            &self.group,
            &Self::record_id(rec),
            rec,
            reason,
            attempts,
        )
        .await?;
        let positions = Self::positions(std::slice::from_ref(rec));
        if consumer.offsets_in_store() {
            consumer.commit_in(&mut tx, &positions).await?;
        }
        tx.commit().await?;
        if !consumer.offsets_in_store()
            && let Err(e) = consumer.commit(&positions).await
        {
            // The dead letter is committed; a redelivery finds it already written.
            tracing::warn!(group = %self.group, error = %e, "offset commit failed");
        }
        Ok(written)
    }

    /// Applies replay requests for this group: rebuild (reset the read model and forget the
    /// inbox) if asked, move the offsets, mark applied.
    async fn apply_seeks(&mut self, consumer: &mut dyn LogConsumer) -> Result<(), ConsumerError> {
        let due = seeks::due(&self.ctx.store, &self.group, self.seen_seek).await?;
        for req in due {
            self.seen_seek = self.seen_seek.max(req.id);
            if !self.topics.contains(&req.topic) {
                continue;
            }
            if !consumer.ensure_active().await? {
                // Another member leads this group; it applies the request.
                continue;
            }
            if consumer.offsets_in_store() && seeks::is_applied(&self.ctx.store, req.id).await? {
                // The group's one position was moved already, by a member that held the group
                // while this one was busy. (Kafka members each apply it to their partitions.)
                continue;
            }
            if req.mode == crate::projections::snapshot::SEEK_MODE {
                // Rebuild from a snapshot plus the tail of the log.
                let r = crate::projections::snapshot::apply(
                    &self.ctx,
                    self.handler.as_ref(),
                    consumer,
                    &req,
                )
                .await;
                if let Err(e) = r {
                    tracing::error!(group = %self.group, error = %e, "snapshot restore failed; request left pending");
                }
                continue;
            }
            // A rebuild empties the whole read model, so every topic of the group restarts.
            let topics = if req.rebuild {
                self.topics.clone()
            } else {
                vec![req.topic.clone()]
            };
            let mut positions = Vec::new();
            for t in &topics {
                positions.extend(consumer.resolve(t, req.target()).await?);
            }
            if !consumer.offsets_in_store() {
                consumer.commit_rewind(&positions).await?;
            }
            let mut tx = self.ctx.store.begin().await?;
            if req.rebuild {
                match self.handler.reset(&mut tx).await {
                    Ok(true) => inbox::clear(&mut tx, &self.group).await?,
                    Ok(false) => {
                        tracing::warn!(group = %self.group, "this group cannot be rebuilt; rewinding only")
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        tracing::error!(group = %self.group, error = %e, "reset failed; replay request left pending");
                        continue;
                    }
                }
            }
            if consumer.offsets_in_store() {
                consumer.commit_in(&mut tx, &positions).await?;
            }
            seeks::mark_applied(&mut tx, req.id).await?;
            tx.commit().await?;
            consumer.seek(&positions).await?;
            tracing::info!(group = %self.group, topic = %req.topic, mode = %req.mode, rebuild = req.rebuild, "replay applied");
        }
        Ok(())
    }
}
