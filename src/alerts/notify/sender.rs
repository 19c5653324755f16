//! The sender: a loop in the alerts role that finds targets with work and runs, per target,
//! up to `max_in_flight_per_target` workers (so a slow or dead target never holds up another).
//! A worker first takes a token of the target's bucket (`rate_per_minute`, `burst`; excess
//! waits, and while it waits more deliveries of the same rule pile up and are grouped), then
//! claims a due retry or forms the next notification (`deliveries::form`) and POSTs it, signed
//! the Standard Webhooks way (`gateway::webhooks::sign`): 2xx is delivered; anything else is
//! retried with exponential backoff and jitter (`Retry-After` honoured on 429 and 503) until
//! `max_attempts`, then dead-lettered with the last error. Rate limits are per instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use super::deliveries::{self, Grouping, Notification, Outcome};
use super::metrics::{self as m, NotifyMetrics};
use super::targets::{self, Target};
use super::{NotifyConfig, WAKE};
use crate::app::AppContext;
use crate::gateway::ratelimit::Bucket;

/// (org, target name).
type Key = (String, String);

/// How often the gauges are refreshed from the store.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

pub struct Sender {
    ctx: AppContext,
    /// This instance, as the claims name it.
    owner: String,
    client: reqwest::Client,
    metrics: NotifyMetrics,
    buckets: Mutex<HashMap<Key, Bucket>>,
    /// Workers running per target.
    running: Mutex<HashMap<Key, usize>>,
}

fn cfg(ctx: &AppContext) -> &NotifyConfig {
    &ctx.config.alerts.notify
}

/// Runs the sender until `shutdown`. Sends in flight then are dropped; their claims run out
/// and they are sent again (same webhook-id) by whichever instance runs next.
pub async fn run(
    ctx: AppContext,
    metrics: NotifyMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let sender = Arc::new(Sender {
        owner: format!("notify-{}", uuid::Uuid::now_v7()),
        ctx,
        client,
        metrics,
        buckets: Mutex::new(HashMap::new()),
        running: Mutex::new(HashMap::new()),
    });
    let poll = Duration::from_millis(cfg(&sender.ctx).poll_interval_ms.max(10));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_gauges = Instant::now();
    loop {
        // Registered before looking, so a wake-up during the look is not lost.
        let woken = WAKE.notified();
        sender.dispatch(&mut tasks, &shutdown).await;
        if Instant::now() >= next_gauges {
            sender.refresh_gauges().await;
            next_gauges = Instant::now() + GAUGES_EVERY;
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tasks.shutdown().await;
    Ok(())
}

impl Sender {
    /// Starts a worker for each target with work that has room for one more.
    async fn dispatch(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let keys = match deliveries::targets_with_work(&self.ctx.store).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "alert notifications: cannot look for work");
                return;
            }
        };
        for key in keys {
            if !self.enter(&key) {
                continue;
            }
            let me = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                me.work(&key, &shutdown).await;
                me.leave(&key);
            });
        }
    }

    /// Takes a worker slot of `key`'s target, if one is free.
    fn enter(&self, key: &Key) -> bool {
        let max = cfg(&self.ctx).max_in_flight_per_target.max(1);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(key.clone()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, key: &Key) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(key);
            }
        }
    }

    /// Sends `key`'s notifications one after another until none is due.
    async fn work(&self, key: &Key, shutdown: &CancellationToken) {
        let (org, name) = key;
        while !shutdown.is_cancelled() {
            let target = match targets::resolve(&self.ctx, org, name).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    if let Err(e) =
                        deliveries::dead_unknown_target(&self.ctx.store, org, name).await
                    {
                        tracing::warn!(%org, target = %name, error = %e, "cannot dead-letter deliveries to an unknown target");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(%org, target = %name, error = %e, "cannot read the target");
                    return;
                }
            };
            // The token first: a claim is never held while waiting for one.
            if let Err(wait) = self.take_token(key, &target, 1.0) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            match self.next(org, &target).await {
                Some(n) => self.attempt(&target, n).await,
                None => {
                    // Nothing due: give the token back.
                    let _ = self.take_token(key, &target, -1.0);
                    return;
                }
            }
        }
    }

    /// Takes (or, with a negative cost, gives back) a token of the target's bucket; the wait
    /// until one is there when there is none.
    fn take_token(&self, key: &Key, t: &Target, cost: f64) -> Result<(), Duration> {
        let rate = t.rate_per_minute / 60.0;
        let cap = f64::from(t.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(cap, now));
        if cost < 0.0 {
            b.charge(now, rate, cap, cost);
            return Ok(());
        }
        b.take_exact(now, rate, cap, cost)
    }

    /// A due retry of the target, else a newly formed notification, claimed for this sender.
    async fn next(&self, org: &str, t: &Target) -> Option<Notification> {
        let c = cfg(&self.ctx);
        let lease = Duration::from_millis(t.timeout_ms.saturating_add(c.claim_margin_ms));
        let store = &self.ctx.store;
        let claimed = deliveries::claim_due(store, org, &t.name, &self.owner, lease).await;
        let r = match claimed {
            Ok(Some(n)) => return Some(n),
            Ok(None) => {
                let grouping = Grouping {
                    wait: Duration::from_millis(c.group_wait_ms),
                    max_size: c.max_group_size,
                };
                deliveries::form(store, org, &t.name, &self.owner, lease, &grouping).await
            }
            Err(e) => Err(e),
        };
        r.unwrap_or_else(|e| {
            tracing::warn!(%org, target = %t.name, error = %e, "cannot claim alert notifications");
            None
        })
    }

    /// One attempt at `n`, and its outcome recorded.
    async fn attempt(&self, t: &Target, n: Notification) {
        let outcome = match self.send(t, &n).await {
            Ok(()) => Outcome::Delivered,
            Err((error, retry_after)) => self.failed(&n, error, retry_after),
        };
        let label = match &outcome {
            Outcome::Delivered => m::DELIVERED,
            Outcome::Retry { .. } => m::RETRIED,
            Outcome::Dead { .. } => m::DEAD,
        };
        match deliveries::record(&self.ctx.store, &n, &outcome).await {
            Ok(true) => self.metrics.count(&t.name, label),
            Ok(false) => {
                tracing::info!(id = n.id, target = %t.name, "alert notification's claim was lost; its outcome is not recorded");
                self.metrics.count(&t.name, m::CLAIM_LOST);
            }
            // The claim runs out and the notification is sent again (same webhook-id).
            Err(e) => {
                tracing::warn!(id = n.id, error = %e, "cannot record an alert notification's outcome")
            }
        }
        if let Outcome::Dead { error } = &outcome {
            tracing::warn!(id = n.id, org = %n.org, rule = %n.rule, target = %t.name, %error,
                "alert notification dead-lettered after its last attempt");
        }
    }

    /// What comes after a failed attempt: a retry, or the dead letter after the last one.
    fn failed(&self, n: &Notification, error: String, retry_after: Option<Duration>) -> Outcome {
        let c = cfg(&self.ctx);
        let attempts = n.attempts + 1;
        if attempts >= i64::from(c.max_attempts.max(1)) {
            return Outcome::Dead { error };
        }
        let max = Duration::from_millis(c.backoff_max_ms.max(1));
        let delay = match retry_after {
            Some(d) => d.min(max),
            None => backoff(c, attempts),
        };
        let at = crate::store::now_micros() + i64::try_from(delay.as_micros()).unwrap_or(0);
        Outcome::Retry { at, error }
    }

    /// POSTs `n` to `t`; the error and any `Retry-After` (429, 503) when it is not a 2xx.
    async fn send(&self, t: &Target, n: &Notification) -> Result<(), (String, Option<Duration>)> {
        let key = t.key().map_err(|e| (e.to_string(), None))?;
        let ts = chrono::Utc::now().timestamp();
        let sig = crate::gateway::webhooks::sign(&key, &n.webhook_id, ts, n.body.as_bytes());
        let mut req = self
            .client
            .post(&t.url)
            .timeout(Duration::from_millis(t.timeout_ms))
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &n.webhook_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", format!("v1,{sig}"));
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let resp = req.body(n.body.clone()).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                format!("timed out after {} ms", t.timeout_ms)
            } else {
                format!("request failed: {e}")
            };
            (what, None)
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = match status.as_u16() {
            429 | 503 => retry_after(resp.headers()),
            _ => None,
        };
        Err((format!("HTTP {}", status.as_u16()), retry_after))
    }

    async fn refresh_gauges(&self) {
        match deliveries::counts(&self.ctx.store).await {
            Ok(counts) => {
                let get = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                self.metrics.pending.set(get(deliveries::PENDING));
                self.metrics.dead.set(get(deliveries::DEAD));
            }
            Err(e) => tracing::debug!(error = %e, "cannot count alert deliveries"),
        }
    }
}

/// `base × 2^(attempt-1)`, capped at `backoff_max_ms`, with equal jitter (half fixed, half
/// random) so the retries of many notifications spread out.
pub fn backoff(c: &NotifyConfig, attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.clamp(1, 21) - 1).unwrap_or(0);
    let full = c
        .backoff_base_ms
        .max(1)
        .saturating_mul(1u64 << exp)
        .min(c.backoff_max_ms.max(1));
    let half = full / 2;
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=full - half))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let c = NotifyConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..NotifyConfig::default()
        };
        for _ in 0..50 {
            let d1 = backoff(&c, 1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = backoff(&c, 3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d9 = backoff(&c, 9).as_millis();
            assert!((500..=1_000).contains(&d9), "{d9}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
