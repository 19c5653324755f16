//! `telemetry.query`: bounds of the query APIs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryConfig {
    /// How far back an instant selector looks for the latest sample, in seconds (Prometheus'
    /// lookback delta).
    pub lookback_secs: u64,
    /// Most steps one range query may evaluate (Prometheus' limit is 11 000).
    pub max_points: usize,
    /// Most series one selector may select (→ 422 `execution`).
    pub max_series: usize,
    /// Most log lines one page may hold.
    pub max_log_lines: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            lookback_secs: 300,
            max_points: 11_000,
            max_series: 10_000,
            max_log_lines: 1000,
        }
    }
}
