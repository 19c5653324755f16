//! ClickHouse, the production analytics backend: the `events` table (one row per event, a
//! ReplacingMergeTree keyed by the event, so a redelivered batch collapses into the rows it
//! repeats), batch inserts in RowBinary, and the time-bucketed counts query. The DDL and
//! queries keep to what ClickHouse 18.16 understands (no DateTime64, no LowCardinality) and
//! still run on current releases.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::config::AnalyticsConfig;
use crate::projections::counts::Cell;

pub const TABLE: &str = "events";

/// One event as stored in ClickHouse.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRow {
    pub event_id: String,
    pub topic: String,
    pub event_type: String,
    pub event_key: String,
    /// Unix seconds (`DateTime`).
    pub event_time: u32,
    /// Unix microseconds, the full precision.
    pub event_time_us: i64,
    pub log_partition: i32,
    pub log_offset: i64,
    /// The payload as JSON ("" when it could not be decoded).
    pub payload: String,
    /// Unix seconds (`DateTime`).
    pub ingested_at: u32,
}

#[derive(Debug, Row, Deserialize)]
struct CellRow {
    bucket: i64,
    topic: String,
    event_type: String,
    n: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChError {
    #[error("analytics.clickhouse_database: `{0}` is not a plain identifier")]
    BadDatabase(String),
    #[error("clickhouse: {0}")]
    Client(#[from] clickhouse::error::Error),
}

#[derive(Clone)]
pub struct ClickHouse {
    /// Bound to the database.
    client: Client,
    /// Without a database, for `CREATE DATABASE`.
    server: Client,
    database: String,
}

fn plain_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl ClickHouse {
    pub fn new(url: &str, cfg: &AnalyticsConfig) -> Result<Self, ChError> {
        if !plain_identifier(&cfg.clickhouse_database) {
            return Err(ChError::BadDatabase(cfg.clickhouse_database.clone()));
        }
        // RowBinary without the schema round trip: old servers lack
        // RowBinaryWithNamesAndTypes, and `EventRow` matches the DDL below. No LZ4 framing:
        // 18.x answers `compress=1` queries with an empty body.
        let mut server = Client::default()
            .with_url(url)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(u) = &cfg.clickhouse_user {
            server = server.with_user(u);
        }
        if let Some(p) = &cfg.clickhouse_password {
            server = server.with_password(p.expose());
        }
        Ok(Self {
            client: server.clone().with_database(&cfg.clickhouse_database),
            server,
            database: cfg.clickhouse_database.clone(),
        })
    }

    /// The client bound to the database (other components' tables live there too).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Creates the database if it is missing.
    pub async fn ensure_database(&self) -> Result<(), ChError> {
        self.server
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await?;
        Ok(())
    }

    /// Creates the database and the table if they are missing.
    pub async fn ensure_schema(&self) -> Result<(), ChError> {
        self.ensure_database().await?;
        self.client
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (\
                   event_id String, topic String, event_type String, event_key String, \
                   event_time DateTime('UTC'), event_time_us Int64, \
                   log_partition Int32, log_offset Int64, payload String, \
                   ingested_at DateTime('UTC')\
                 ) ENGINE = ReplacingMergeTree() \
                 PARTITION BY toYYYYMM(event_time) \
                 ORDER BY (topic, event_type, event_time, event_id)"
            ))
            .execute()
            .await?;
        Ok(())
    }

    /// Writes `rows` in one INSERT.
    pub async fn insert(&self, rows: &[EventRow]) -> Result<(), ChError> {
        let mut ins = self.client.insert::<EventRow>(TABLE).await?;
        for r in rows {
            ins.write(r).await?;
        }
        ins.end().await?;
        Ok(())
    }

    /// Distinct events per bucket of `step_secs` over `[from, to)` (unix seconds). `FINAL`
    /// collapses rows a redelivery wrote twice, so the counts are exact.
    pub async fn rollup(
        &self,
        from: i64,
        to: i64,
        step_secs: i64,
        topic: Option<&str>,
    ) -> Result<Vec<Cell>, ChError> {
        let filter = if topic.is_some() { "AND topic = ?" } else { "" };
        let sql = format!(
            "SELECT toInt64(intDiv(toUInt32(event_time), ?) * ?) AS bucket, topic, event_type, \
             toInt64(count()) AS n FROM {TABLE} FINAL \
             WHERE event_time >= toDateTime(?) AND event_time < toDateTime(?) {filter} \
             GROUP BY bucket, topic, event_type ORDER BY bucket, topic, event_type"
        );
        let mut q = self
            .client
            .query(&sql)
            .bind(step_secs)
            .bind(step_secs)
            .bind(from)
            .bind(to);
        if let Some(t) = topic {
            q = q.bind(t);
        }
        let rows = q.fetch_all::<CellRow>().await?;
        Ok(rows
            .into_iter()
            .map(|r| Cell {
                bucket: r.bucket * 1_000_000,
                topic: r.topic,
                event_type: r.event_type,
                count: r.n,
            })
            .collect())
    }

    /// Every stored row, deduplicated (tests and checks).
    pub async fn rows(&self) -> Result<Vec<EventRow>, ChError> {
        let rows = self
            .client
            .query(&format!(
                "SELECT ?fields FROM {TABLE} FINAL ORDER BY event_time_us, event_id"
            ))
            .fetch_all::<EventRow>()
            .await?;
        Ok(rows)
    }

    /// Drops the database (tests).
    pub async fn drop_database(&self) -> Result<(), ChError> {
        self.server
            .query(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .execute()
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), ChError> {
        self.server.query("SELECT 1").execute().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers() {
        assert!(super::plain_identifier("st_abc123"));
        assert!(!super::plain_identifier("a-b"));
        assert!(!super::plain_identifier("1a"));
        assert!(!super::plain_identifier("x; DROP"));
    }
}
