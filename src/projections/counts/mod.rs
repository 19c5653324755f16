//! Per-minute event counts by topic and type (the seed's windowed aggregation), over every
//! topic with a schema. An event is counted in the minute of its own time (`ce_time`), not the
//! minute it was processed, so late events land in the right bucket. Rollups (5m, 1h) are
//! sums of minutes at query time (`crate::analytics`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::app::AppContext;
use crate::consumers::{BatchApply, Emitter, Envelope, Handler, HandlerError};
use crate::store::bulk::{self, Val};
use crate::store::{Store, StoreError, Tx};
use crate::{on_read, on_tx};

pub const GROUP: &str = "event-counts";

pub const MINUTE_MICROS: i64 = 60_000_000;

/// The start of the minute holding `t` (unix microseconds). Saturating: a time in the first
/// minute of `i64` (far outside the accepted range) stays in range instead of overflowing.
pub fn minute_of(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(MINUTE_MICROS))
}

pub struct CountsProjection {
    topics: Vec<String>,
}

impl CountsProjection {
    pub fn new(ctx: &AppContext) -> Self {
        Self {
            topics: counted_topics(ctx),
        }
    }
}

/// Every topic with a schema, except dead-letter topics.
pub fn counted_topics(ctx: &AppContext) -> Vec<String> {
    ctx.schemas
        .topics()
        .into_iter()
        .filter(|t| !t.ends_with(".dlq"))
        .collect()
}

#[async_trait]
impl Handler for CountsProjection {
    fn group(&self) -> &str {
        GROUP
    }

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn handle(
        &self,
        ev: &Envelope,
        tx: &mut Tx,
        _out: &mut Emitter<'_>,
    ) -> Result<(), HandlerError> {
        self.apply_batch(&[ev], tx).await
    }

    fn batch(&self) -> Option<&dyn BatchApply> {
        Some(self)
    }

    async fn reset(&self, tx: &mut Tx) -> Result<bool, HandlerError> {
        on_tx!(tx, c => {
            sqlx::query("DELETE FROM event_counts").execute(&mut *c).await.map_err(StoreError::from)?;
        });
        Ok(true)
    }
}

#[async_trait]
impl BatchApply for CountsProjection {
    /// The run summed per (topic, event type, minute) in memory, then one upsert: a batch of
    /// one minute's events is one row.
    async fn apply_batch(&self, evs: &[&Envelope], tx: &mut Tx) -> Result<(), HandlerError> {
        let mut cells: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
        for ev in evs {
            *cells
                .entry((&ev.topic, &ev.event_type, minute_of(ev.time)))
                .or_insert(0) += 1;
        }
        let rows: Vec<Vec<Val>> = cells
            .iter()
            .map(|((topic, ty, minute), n)| {
                vec![
                    Val::Str(topic),
                    Val::Str(ty),
                    Val::I64(*minute),
                    Val::I64(*n),
                ]
            })
            .collect();
        bulk::insert(
            tx,
            "INSERT INTO event_counts (topic, event_type, minute, count) ",
            &rows,
            " ON CONFLICT (topic, event_type, minute) DO UPDATE SET count = event_counts.count + excluded.count",
        )
        .await?;
        Ok(())
    }
}

/// One cell of a rollup: events of `topic`/`event_type` in the bucket starting at `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub bucket: i64,
    pub topic: String,
    pub event_type: String,
    pub count: i64,
}

/// Sums of minutes into buckets of `step` microseconds over `[from, to)` (both aligned to
/// `step`), optionally for one topic.
pub async fn rollup(
    store: &Store,
    from: i64,
    to: i64,
    step: i64,
    topic: Option<&str>,
) -> Result<Vec<Cell>, StoreError> {
    let filter = if topic.is_some() {
        "AND topic = $4"
    } else {
        "AND $4 = $4"
    };
    let sql = format!(
        "SELECT minute - (minute % $1) AS bucket, topic, event_type, CAST(SUM(count) AS BIGINT) AS n \
         FROM event_counts WHERE minute >= $2 AND minute < $3 {filter} \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let rows: Vec<(i64, String, String, i64)> = on_read!(store, p => {
        sqlx::query_as(&sql)
            .bind(step)
            .bind(from)
            .bind(to)
            .bind(topic.unwrap_or(""))
            .fetch_all(p)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(bucket, topic, event_type, count)| Cell {
            bucket,
            topic,
            event_type,
            count,
        })
        .collect())
}

/// Every row (tests, snapshots): (topic, event_type, minute, count).
pub async fn all(store: &Store) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
    let rows = on_read!(store, p => {
        sqlx::query_as("SELECT topic, event_type, minute, count FROM event_counts ORDER BY topic, event_type, minute")
            .fetch_all(p)
            .await?
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_floor() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999_999), 0);
        assert_eq!(minute_of(60_000_000), 60_000_000);
        assert_eq!(minute_of(-1), -60_000_000);
        assert_eq!(minute_of(i64::MIN), i64::MIN);
        assert_eq!(
            minute_of(i64::MAX),
            i64::MAX - i64::MAX.rem_euclid(MINUTE_MICROS)
        );
    }
}
