//! The evaluator: every `alerts.rules.interval_secs` each rule is run as an instant query at
//! now on its org's data by the telemetry query engine, and its alerts' transitions are
//! committed (`decide.rs`, `state.rs`).
//!
//! One evaluator per rule across instances: rules are split into `alerts.rules.shards`
//! shards by a hash of org and name, and each shard is a fenced lease
//! (`alerts.rules.shard.{n}`, `crate::store::lease`). An instance evaluates the shards it
//! holds, renewing them every round; every transition checks the shard's fence inside its
//! transaction, so an evaluator that lost its lease during a slow query cannot write.
//! A failing rule (engine or storage error) is logged and counted and the others go on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts};

use super::decide::{Output, decide};
use super::model::Rule;
use super::state::{self, Active};
use super::store::{self, Stored};
use crate::app::AppContext;
use crate::store::lease::{Fence, Lease};
use crate::telemetry::query::eval::Value;

/// The alerts role's metrics.
#[derive(Clone)]
pub struct EvalMetrics {
    pub duration: Histogram,
    pub failures: IntCounterVec,
    pub alerts: IntGaugeVec,
}

impl EvalMetrics {
    /// Creates the metrics and registers them with the process's registry.
    pub fn register(ctx: &AppContext) -> anyhow::Result<Self> {
        let m = EvalMetrics {
            duration: Histogram::with_opts(HistogramOpts::new(
                "alerts_evaluation_duration_seconds",
                "Time to evaluate one alert rule (query and transitions).",
            ))?,
            failures: IntCounterVec::new(
                Opts::new(
                    "alerts_rule_failures_total",
                    "Evaluations of an alert rule that failed, by org and rule.",
                ),
                &["org", "rule"],
            )?,
            alerts: IntGaugeVec::new(
                Opts::new(
                    "alerts_active",
                    "Alerts pending or firing in the shards this instance evaluates, by state.",
                ),
                &["state"],
            )?,
        };
        ctx.metrics.register(Box::new(m.duration.clone()));
        ctx.metrics.register(Box::new(m.failures.clone()));
        ctx.metrics.register(Box::new(m.alerts.clone()));
        Ok(m)
    }
}

/// The shard of a rule.
pub fn shard_of(org: &str, rule: &str, shards: u32) -> u32 {
    (crate::outbox::key_hash(&format!("{org}/{rule}")) % u64::from(shards.max(1))) as u32
}

/// One instance's evaluator: its shard leases and metrics.
pub struct Evaluator {
    ctx: AppContext,
    leases: Vec<Lease>,
    metrics: EvalMetrics,
}

impl Evaluator {
    pub fn new(ctx: AppContext, owner: &str, metrics: EvalMetrics) -> Self {
        let cfg = &ctx.config.alerts.rules;
        let ttl = Duration::from_secs(cfg.lease_ttl_secs.max(1));
        let leases = (0..cfg.shards.max(1))
            .map(|n| {
                Lease::new(
                    ctx.store.clone(),
                    format!("alerts.rules.shard.{n}"),
                    owner,
                    ttl,
                )
            })
            .collect();
        Evaluator {
            ctx,
            leases,
            metrics,
        }
    }

    /// Takes or renews every shard it can; the fences of those it holds, by shard.
    async fn hold(&mut self) -> HashMap<u32, Fence> {
        let mut held = HashMap::new();
        for (n, l) in self.leases.iter_mut().enumerate() {
            match l.acquire().await {
                Ok(Some(_)) => {
                    if let Some(f) = l.fence() {
                        held.insert(n as u32, f);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    l.forget();
                    tracing::warn!(lease = %l.name(), error = %e, "alert shard lease failed");
                }
            }
        }
        held
    }

    /// Hands the shards over at once (a clean stop).
    pub async fn release(&mut self) {
        for l in &mut self.leases {
            if let Err(e) = l.release().await {
                tracing::warn!(lease = %l.name(), error = %e, "releasing an alert shard failed");
            }
        }
    }

    /// One round over the held shards.
    pub async fn round(&mut self) {
        let held = self.hold().await;
        if held.is_empty() {
            return;
        }
        let shards = self.ctx.config.alerts.rules.shards;
        let (rules, active) = match tokio::join!(
            store::all(&self.ctx.store),
            state::active(&self.ctx.store, None)
        ) {
            (Ok(r), Ok(a)) => (r, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "reading alert rules or state failed");
                return;
            }
        };
        let mut work: HashMap<(String, String), (Option<Rule>, Vec<Active>)> = HashMap::new();
        for Stored { org, rule, .. } in rules {
            let key = (org, rule.alert.clone());
            work.entry(key).or_default().0 = Some(rule);
        }
        for a in active {
            work.entry((a.org.clone(), a.rule.clone()))
                .or_default()
                .1
                .push(a);
        }
        for ((org, name), (rule, current)) in work {
            let Some(fence) = held.get(&shard_of(&org, &name, shards)) else {
                continue;
            };
            let t0 = Instant::now();
            if let Err(e) = self.rule(&org, rule.as_ref(), current, fence).await {
                self.metrics
                    .failures
                    .with_label_values(&[org.as_str(), name.as_str()])
                    .inc();
                tracing::warn!(org = %org, rule = %name, error = %e, "evaluating an alert rule failed");
            }
            self.metrics.duration.observe(t0.elapsed().as_secs_f64());
        }
        self.count(&held).await;
    }

    /// Evaluates one rule and commits its transitions.
    async fn rule(
        &self,
        org: &str,
        rule: Option<&Rule>,
        current: Vec<Active>,
        fence: &Fence,
    ) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let outputs = match rule {
            Some(r) => self.query(org, r, now).await?,
            None => Vec::new(),
        };
        let d = decide(org, rule, outputs, current, now);
        for c in &d.changes {
            let t = state::commit(&self.ctx, fence, c, now).await?;
            tracing::info!(org, rule = %t.rule, from = %t.from, to = %t.to,
                fingerprint = %t.fingerprint, sequence = t.sequence, "alert transition");
        }
        if rule.is_some_and(|r| r.keep_firing_ms() > 0) {
            for (fp, v) in &d.still_true {
                state::touch(&self.ctx, fence, fp, now, Some(*v)).await?;
            }
        }
        Ok(())
    }

    /// The rule's expression at `now`: each series with a value.
    async fn query(&self, org: &str, rule: &Rule, now: i64) -> anyhow::Result<Vec<Output>> {
        let expr = promql_parser::parser::parse(&rule.expr).map_err(anyhow::Error::msg)?;
        match crate::telemetry::query::instant_query(&self.ctx, org, &expr, now).await? {
            Value::Vector(series) => Ok(series
                .into_iter()
                .filter_map(|s| s.values.first().copied().flatten().map(|v| (s.labels, v)))
                .collect()),
            Value::Scalar(_) => anyhow::bail!("the expression returns a scalar"),
        }
    }

    /// Sets `alerts_active{state}` from the held shards' alerts.
    async fn count(&self, held: &HashMap<u32, Fence>) {
        let shards = self.ctx.config.alerts.rules.shards;
        let Ok(all) = state::active(&self.ctx.store, None).await else {
            return;
        };
        let mut by: HashMap<&str, i64> = HashMap::from([("pending", 0), ("firing", 0)]);
        for a in all
            .iter()
            .filter(|a| held.contains_key(&shard_of(&a.org, &a.rule, shards)))
        {
            *by.entry(a.state.as_str()).or_default() += 1;
        }
        for (s, n) in by {
            self.metrics.alerts.with_label_values(&[s]).set(n);
        }
    }
}
