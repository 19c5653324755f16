//! `[alerts]`: the rules side (`alerts.rules`) and the notification side (`alerts.notify`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertsConfig {
    /// Rules: the rules file, built-in rules, the evaluation interval.
    pub rules: crate::alerts::rules::RulesConfig,
    /// Notifications: webhook targets, retries, rate limits, grouping.
    pub notify: crate::alerts::notify::NotifyConfig,
}
