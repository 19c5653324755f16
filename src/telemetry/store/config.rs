//! `telemetry.storage`: how long raw samples, each rollup resolution and log lines are kept,
//! how often the expiry runs, and how often whole-metric rollups are settled.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    pub raw_retention_days: u64,
    pub rollup_1m_retention_days: u64,
    pub rollup_5m_retention_days: u64,
    pub rollup_1h_retention_days: u64,
    pub logs_retention_days: u64,
    /// Seconds between expiry runs (rows in the store, whole day partitions in ClickHouse).
    pub expire_every_secs: u64,
    /// The most ingest requests (events) the `telemetry` group writes in one transaction.
    /// One request can hold `telemetry.ingest.max_samples` samples, and on SQLite the
    /// gateway's commits wait while the group writes (`gateway.group_commit.store_timeout_ms`), so a
    /// transaction stays small.
    pub events_per_transaction: usize,
    /// Milliseconds between rounds of settling whole-metric rollups (embedded column): the
    /// values `sum(metric)`-like queries read. A query computes a bucket not yet settled
    /// itself, so this bounds how long such buckets stay slow to read, not how stale an
    /// answer can be.
    pub settle_every_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            raw_retention_days: 7,
            rollup_1m_retention_days: 30,
            rollup_5m_retention_days: 90,
            rollup_1h_retention_days: 365,
            logs_retention_days: 7,
            expire_every_secs: 3600,
            events_per_transaction: 8,
            settle_every_ms: 1000,
        }
    }
}

impl StorageConfig {
    /// Retention of a rollup resolution (milliseconds) in days.
    pub fn rollup_retention_days(&self, resolution_ms: i64) -> u64 {
        match resolution_ms {
            60_000 => self.rollup_1m_retention_days,
            300_000 => self.rollup_5m_retention_days,
            _ => self.rollup_1h_retention_days,
        }
    }
}
