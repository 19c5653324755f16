//! `[alerts.notify]`: which transitions are notified, the webhook targets defined in the
//! configuration (shared by every org; an org's own targets come from the admin API), and the
//! sender's retry, rate-limit and grouping settings. Documented in
//! docs/alerts-notifications.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// The transitions (`to` states) that are notified.
    pub notify_on: Vec<String>,
    /// Targets from the configuration, by name (`alerts.notify.targets.<name>`).
    pub targets: BTreeMap<String, TargetConfig>,
    /// Attempts per notification before it is dead-lettered.
    pub max_attempts: u32,
    /// Backoff after the first failed attempt; doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest backoff (also the cap on an honoured `Retry-After`).
    pub backoff_max_ms: u64,
    /// How long a delivery waits for others of the same rule and target to share its
    /// notification.
    pub group_wait_ms: u64,
    /// Most alerts in one notification.
    pub max_group_size: usize,
    /// Most notifications in flight per target and instance.
    pub max_in_flight_per_target: usize,
    /// How often the sender looks for work when nothing woke it.
    pub poll_interval_ms: u64,
    /// A claim on a notification lasts the target's timeout plus this; a crashed sender's
    /// claim runs out after it and the notification is sent again (same webhook-id).
    pub claim_margin_ms: u64,
    /// Defaults for targets that do not set them.
    pub default_rate_per_minute: f64,
    pub default_burst: u32,
    pub default_timeout_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            notify_on: vec![
                crate::alerts::event::FIRING.into(),
                crate::alerts::event::RESOLVED.into(),
            ],
            targets: BTreeMap::new(),
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            group_wait_ms: 500,
            max_group_size: 100,
            max_in_flight_per_target: 4,
            poll_interval_ms: 500,
            claim_margin_ms: 5_000,
            default_rate_per_minute: 60.0,
            default_burst: 10,
            default_timeout_ms: 10_000,
        }
    }
}

/// `alerts.notify.targets.<name>`; the secret may come from the environment
/// (`SUBSTRATE_ALERTS__NOTIFY__TARGETS__<NAME>__SECRET`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    pub url: String,
    /// `whsec_` + base64 (Standard Webhooks).
    pub secret: Secret,
    #[serde(default)]
    pub rate_per_minute: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
