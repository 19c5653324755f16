//! Alert rules: the model (`model.rs`), validation (`validate.rs`), storage (`store.rs`), the
//! admin API (`api.rs`), the rules file (`file.rs`) and the built-in rules with the
//! self-scrape that feeds them (`builtin.rs`), the state machine (`decide.rs`), durable
//! state and the one-transaction transition commit (`state.rs`), the evaluator with its
//! shard leases (`eval.rs`) and history (`history.rs`). Configured by `[alerts.rules]`.

pub mod api;
pub mod builtin;
pub mod decide;
pub mod eval;
pub mod file;
pub mod history;
pub mod model;
pub mod state;
pub mod store;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;
use model::Source;

/// `[alerts.rules]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RulesConfig {
    /// Seconds between evaluations of every rule.
    pub interval_secs: u64,
    /// A Prometheus rule file loaded at role start (a bad file stops start-up).
    pub file: Option<PathBuf>,
    /// The org the rules file's rules belong to.
    pub file_org: String,
    /// Load `deploy/prometheus/alerts.yml` as built-in rules and self-scrape the process's
    /// metrics into `builtin_org`.
    pub builtin: bool,
    /// The org of the built-in rules and of the self-scraped metrics.
    pub builtin_org: String,
    /// Rules are split into this many shards, each evaluated by one instance at a time.
    pub shards: u32,
    /// How long a shard lease lasts without renewal (a crashed evaluator's shards are taken
    /// over after this).
    pub lease_ttl_secs: u64,
    /// Most rules one org may have.
    pub max_rules_per_org: usize,
    /// Longest `for` / `keep_firing_for`, in seconds.
    pub max_for_secs: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            interval_secs: 15,
            file: None,
            file_org: "_system".into(),
            builtin: false,
            builtin_org: "_system".into(),
            shards: 1,
            lease_ttl_secs: 30,
            max_rules_per_org: 1000,
            max_for_secs: 7 * 86_400,
        }
    }
}

/// Why the alerts role cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error("alerts.rules: {0}")]
    Config(String),
    #[error("storing the rules: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Loads the rules file and the built-in rules into the store (validated; a bad file is an
/// error naming the rule and the problem).
pub async fn load_configured(ctx: &AppContext) -> Result<(), StartError> {
    let cfg = &ctx.config.alerts.rules;
    for (key, org) in [
        ("file_org", &cfg.file_org),
        ("builtin_org", &cfg.builtin_org),
    ] {
        if !crate::telemetry::tenant::valid_org(org) {
            return Err(StartError::Config(format!(
                "{key} {org:?} is not an org id (1-64 of A-Z a-z 0-9 _ . -)"
            )));
        }
    }
    if cfg.lease_ttl_secs <= cfg.interval_secs {
        // The shard lease is renewed once per round: it must outlast one.
        return Err(StartError::Config(format!(
            "lease_ttl_secs ({}) must be longer than interval_secs ({})",
            cfg.lease_ttl_secs, cfg.interval_secs
        )));
    }
    let builtin = if cfg.builtin {
        let b = builtin::load(ctx, cfg).await?;
        b.rules
    } else {
        Vec::new()
    };
    let from_file = match &cfg.file {
        Some(path) => file::load(ctx, path, cfg).await?,
        None => Vec::new(),
    };
    if cfg.file_org == cfg.builtin_org
        && let Some(r) = from_file
            .iter()
            .find(|r| builtin.iter().any(|b| b.alert == r.alert))
    {
        return Err(StartError::Config(format!(
            "the rules file's rule {:?} has the name of a built-in rule in the same org",
            r.alert
        )));
    }
    store::sync(&ctx.store, &cfg.builtin_org, Source::Builtin, &builtin).await?;
    store::sync(&ctx.store, &cfg.file_org, Source::File, &from_file).await?;
    Ok(())
}

/// The evaluator (and, with built-in rules, the self-scrape) until `shutdown`.
pub async fn run(ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    load_configured(&ctx).await?;
    let cfg = ctx.config.alerts.rules.clone();
    let owner = format!("alerts-{}", uuid::Uuid::new_v4());
    let metrics = eval::EvalMetrics::register(&ctx)?;
    let mut ev = eval::Evaluator::new(ctx.clone(), &owner, metrics);
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if cfg.builtin {
            builtin::scrape_once(&ctx, &cfg.builtin_org, &owner).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ev.round() => {}
        }
    }
    ev.release().await;
    Ok(())
}

pub fn router() -> OpenApiRouter<AppContext> {
    api::router()
}
