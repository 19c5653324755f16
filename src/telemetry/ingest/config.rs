//! `telemetry.ingest`: the limits of the telemetry ingest endpoints. A request beyond any of
//! them is refused whole (4xx naming the limit) and nothing is stored.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Largest request body as sent (compressed), in bytes (→ 413).
    pub body_limit_bytes: usize,
    /// Largest body after snappy/gzip decompression, in bytes (→ 413; stops compression bombs).
    pub decoded_limit_bytes: usize,
    /// Most series in one request (→ 413 `too_many_series`).
    pub max_series: usize,
    /// Most samples in one request (→ 413 `too_many_samples`).
    pub max_samples: usize,
    /// Most log lines in one request (→ 413 `too_many_lines`).
    pub max_lines: usize,
    /// Most labels on one series or log line (→ 400 `invalid_labels`).
    pub max_labels: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Longest log message, in bytes.
    pub max_line_bytes: usize,
    /// Oldest accepted timestamp, in seconds before now (→ 400 `timestamp_out_of_range`).
    /// Keep it within `telemetry.storage.raw_retention_days`.
    pub max_age_secs: u64,
    /// Furthest accepted timestamp into the future, in seconds.
    pub max_future_secs: u64,
    /// An encoded batch larger than this goes to the object store and the event carries its
    /// key (a claim check). Lowered as needed so an inline batch (base64 in the event) always
    /// fits `log.max_message_bytes`.
    pub claim_check_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 8 * 1024 * 1024,
            decoded_limit_bytes: 64 * 1024 * 1024,
            max_series: 20_000,
            max_samples: 100_000,
            max_lines: 20_000,
            max_labels: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 2048,
            max_line_bytes: 64 * 1024,
            max_age_secs: 7 * 86_400,
            max_future_secs: 600,
            claim_check_bytes: 256 * 1024,
        }
    }
}
