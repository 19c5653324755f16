//! Analytics: time-bucketed event counts served by the query API
//! (`GET /api/v1/analytics/event-counts`). Embedded, the counts come from the store's
//! `event_counts` projection; with `analytics.clickhouse_url` set, every event is also written,
//! batched, to ClickHouse by its own consumer group (`sink.rs`) and the counts come from there.
//! See `docs/analytics.md`.

pub mod api;
pub mod clickhouse;
pub mod query;
pub mod sink;

use crate::config::AnalyticsConfig;
use crate::projections::counts::{self, Cell};
use crate::store::{Store, StoreError};
use clickhouse::{ChError, ClickHouse};
use query::CountsQuery;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    ClickHouse(#[from] ChError),
}

/// Where counts are read from: the one seam between the two backends.
pub struct Analytics {
    store: Store,
    clickhouse: Option<ClickHouse>,
}

impl Analytics {
    pub fn new(cfg: &AnalyticsConfig, store: Store) -> Result<Self, ChError> {
        let clickhouse = match &cfg.clickhouse_url {
            Some(url) => Some(ClickHouse::new(url, cfg)?),
            None => None,
        };
        Ok(Self { store, clickhouse })
    }

    pub fn clickhouse(&self) -> Option<&ClickHouse> {
        self.clickhouse.as_ref()
    }

    /// `clickhouse` or `store`.
    pub fn source(&self) -> &'static str {
        if self.clickhouse.is_some() {
            "clickhouse"
        } else {
            "store"
        }
    }

    /// The cells of `q` (only non-zero ones).
    pub async fn rollup(&self, q: &CountsQuery) -> Result<Vec<Cell>, AnalyticsError> {
        match &self.clickhouse {
            Some(ch) => Ok(ch
                .rollup(
                    q.from / 1_000_000,
                    q.to / 1_000_000,
                    q.step.secs(),
                    q.topic.as_deref(),
                )
                .await?),
            None => Ok(counts::rollup(
                &self.store,
                q.from,
                q.to,
                q.step.micros(),
                q.topic.as_deref(),
            )
            .await?),
        }
    }
}
