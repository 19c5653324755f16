//! Consumer lag as a metric (`substrate_consumer_lag{group,topic,partition}`), reported every
//! few seconds per group — off the group's own loop, because with Kafka it takes a broker round
//! trip per partition and would otherwise stall delivery — and one report at a time.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::app::AppContext;

const EVERY: Duration = Duration::from_secs(5);

pub struct LagReporter {
    ctx: AppContext,
    group: String,
    topics: Vec<String>,
    next: Instant,
    running: Option<JoinHandle<()>>,
}

impl LagReporter {
    pub fn new(ctx: &AppContext, group: &str, topics: &[String]) -> Self {
        Self {
            ctx: ctx.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            next: Instant::now(),
            running: None,
        }
    }

    /// Starts a report in the background when one is due and the last one has finished.
    pub fn tick(&mut self) {
        if Instant::now() < self.next || self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.next = Instant::now() + EVERY;
        let (ctx, group, topics) = (self.ctx.clone(), self.group.clone(), self.topics.clone());
        self.running = Some(tokio::spawn(async move {
            report(&ctx, &group, &topics).await;
        }));
    }
}

impl Drop for LagReporter {
    fn drop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
        }
    }
}

/// Reads `group`'s lag on `topics` and sets the gauge of each partition.
pub async fn report(ctx: &AppContext, group: &str, topics: &[String]) {
    match ctx.log.lag(group, topics).await {
        Ok(parts) => {
            for p in parts {
                ctx.metrics
                    .consumer_lag
                    .with_label_values(&[group, &p.topic, &p.partition.to_string()])
                    .set(p.lag());
            }
        }
        Err(e) => tracing::debug!(%group, error = %e, "lag unavailable"),
    }
}
