//! `telemetry.tail`: bounds of the live tails (`GET /api/v1/tail/logs`, `/api/v1/tail/alerts`),
//! so a crowd of tails, or one tail that stops reading, can only cost a known amount of memory.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TailConfig {
    /// Tails open at once in this process (logs and alerts together); beyond it `429`.
    pub max_subscribers: usize,
    /// Tails one org may have open at once in this process; beyond it `429`.
    pub max_subscribers_per_org: usize,
    /// Events (log lines, transitions) buffered per tail; a tail whose buffer is full misses
    /// what follows and is told so by one `lagged` event with the count.
    pub client_buffer: usize,
    /// Outbox rows the tail reader fetches per query.
    pub read_batch: usize,
    /// Fallback poll of the outbox, in milliseconds, for appends no wake-up announced
    /// (another process on SQLite, a lost LISTEN connection).
    pub poll_ms: u64,
    /// Most outbox ids the reader keeps to fill gaps below its cursor (PostgreSQL with the
    /// Kafka log, where rows commit out of id order; `gaps.rs`). Reached only while a
    /// long-running writing transaction holds PostgreSQL's horizon back; past it, a row that
    /// commits that late is not delivered to tails.
    pub gap_window: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            max_subscribers: 1000,
            max_subscribers_per_org: 50,
            client_buffer: 1024,
            read_batch: 256,
            poll_ms: 1000,
            gap_window: 10_000,
        }
    }
}
