//! One relay batch: pending outbox rows of the held lanes, in id order, sent to the broker by
//! the idempotent producer (key = event key, value = the Confluent-framed payload, headers =
//! the row's CloudEvents headers with the `send` span's `traceparent`), then marked published —
//! only once acknowledged, and never past an earlier failed row of the same key.

use std::collections::HashSet;
use std::time::Instant;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::app::AppContext;
use crate::outbox::{COLUMNS, OutboxRow};
use crate::store::{Store, StoreError, Tx, now_micros};
use crate::telemetry::tracing::{context, spans};
use crate::{on_read, on_tx};

/// Pending rows of `lanes`, oldest first.
pub async fn pending(
    store: &Store,
    lanes: &[i64],
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let list = lanes
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL AND lane IN ({list}) ORDER BY id LIMIT {}",
        limit.max(1)
    );
    let rows = on_read!(store, p => {
        sqlx::query_as::<_, OutboxRow>(&sql).fetch_all(p).await?
    });
    Ok(rows)
}

/// Marks rows acknowledged by the broker, inside `tx` (which the caller has fenced with the
/// rows' lane leases: `Lanes::mark_published`).
pub async fn mark_published(tx: &mut Tx, ids: &[i64]) -> Result<(), StoreError> {
    let now = now_micros();
    for chunk in ids.chunks(1000) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("UPDATE outbox SET published_at = $1 WHERE id IN ({list})");
        on_tx!(tx, c => {
            sqlx::query(&sql).bind(now).execute(&mut *c).await?;
        });
    }
    Ok(())
}

fn headers_of(map: &crate::outbox::Headers, traceparent: Option<&str>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(map.len() + 1);
    for (k, v) in map {
        if k == "traceparent" {
            continue;
        }
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    if let Some(tp) = traceparent.or(map.get("traceparent").map(String::as_str)) {
        h = h.insert(Header {
            key: "traceparent",
            value: Some(tp.as_bytes()),
        });
    }
    h
}

/// What a batch achieved.
pub struct Outcome {
    /// Rows to mark published.
    pub acked: Vec<i64>,
    pub failed: usize,
}

/// Sends `rows` and waits for every acknowledgement.
pub async fn send(ctx: &AppContext, producer: &FutureProducer, rows: &[OutboxRow]) -> Outcome {
    let started = Instant::now();
    let mut inflight = Vec::with_capacity(rows.len());
    for row in rows {
        let map = row.headers();
        let parent = map.get("traceparent").map(String::as_str);
        let span = spans::relay_send("kafka", &row.topic, &row.event_id, parent);
        let tp = context::traceparent(&span);
        let rec = FutureRecord::to(&row.topic)
            .key(&row.event_key)
            .payload(&row.payload)
            .headers(headers_of(&map, tp.as_deref()))
            .timestamp(row.created_at / 1000);
        let fut = match producer.send_result(rec) {
            Ok(f) => Some(f),
            Err((e, _)) => {
                tracing::warn!(parent: &span, topic = %row.topic, error = %e, "relay could not enqueue");
                None
            }
        };
        inflight.push((fut, span));
    }
    let mut acked = Vec::with_capacity(rows.len());
    let mut failed = 0usize;
    let mut failed_keys: HashSet<&str> = HashSet::new();
    for (row, (fut, span)) in rows.iter().zip(inflight) {
        let ok = match fut {
            Some(f) => match f.await {
                Ok(Ok(_)) => true,
                Ok(Err((e, _))) => {
                    tracing::warn!(parent: &span, topic = %row.topic, error = %e, "broker refused a relayed event");
                    false
                }
                Err(_) => false,
            },
            None => false,
        };
        if ok && !failed_keys.contains(row.event_key.as_str()) {
            acked.push(row.id);
            ctx.metrics
                .relay_published
                .with_label_values(&[&row.topic])
                .inc();
        } else {
            if !ok {
                spans::fail(&span, "broker");
                failed += 1;
                ctx.metrics
                    .relay_errors
                    .with_label_values(&[&row.topic])
                    .inc();
            }
            // Later rows of this key wait for it, so the topic keeps the key's order.
            failed_keys.insert(row.event_key.as_str());
        }
        drop(span);
    }
    ctx.metrics
        .relay_publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Outcome { acked, failed }
}
