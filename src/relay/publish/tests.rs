//! The publish logic against a fake producer that keeps the session promise of `Producer`
//! (per session, what lands is a prefix of what was handed over: after a failure, nothing
//! handed over later lands). The fake records what was handed to it and what landed, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::*;

#[derive(Default)]
struct Broker {
    /// Rows on the broker, in the order they landed.
    landed: Mutex<Vec<i64>>,
    /// Rows handed to a session, in order.
    handed: Mutex<Vec<i64>>,
    /// How many more times the broker refuses a row.
    refuse: Mutex<HashMap<i64, u32>>,
    /// Rows the producer does not take at all.
    reject: Mutex<HashMap<i64, EnqueueError>>,
}

struct FakeSession {
    broker: Arc<Broker>,
    failed: AtomicBool,
}

impl Producer for FakeSession {
    fn enqueue(&self, row: &OutboxRow, _tp: Option<&str>) -> Result<Delivery, EnqueueError> {
        if let Some(e) = self.broker.reject.lock().get(&row.id) {
            return Err(e.clone());
        }
        self.broker.handed.lock().push(row.id);
        let mut refuse = self.broker.refuse.lock();
        let res = if self.failed.load(Ordering::SeqCst) {
            Err(SendError::Collateral("an earlier record failed".into()))
        } else if let Some(n) = refuse.get_mut(&row.id).filter(|n| **n > 0) {
            *n -= 1;
            self.failed.store(true, Ordering::SeqCst);
            Err(SendError::Refused("MessageSizeTooLarge".into()))
        } else {
            self.broker.landed.lock().push(row.id);
            Ok(())
        };
        Ok(Box::pin(futures::future::ready(res)))
    }

    fn abandon(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }
}

fn row(id: i64, key: &str) -> OutboxRow {
    OutboxRow {
        id,
        event_id: format!("e{id}"),
        topic: "public.user.message.events".into(),
        event_key: key.into(),
        event_type: "user.message.events".into(),
        schema_id: 1,
        payload: vec![0],
        headers: "{}".into(),
        lane: 0,
        created_at: 0,
        published_at: None,
        send_headers: None,
    }
}

/// The outbox as the relay sees it, plus the relay's state between rounds.
struct Relay {
    broker: Arc<Broker>,
    session: Session,
    suspects: Suspects,
    pending: Vec<OutboxRow>,
    parked: Vec<Park>,
    metrics: Metrics,
    park_after: u32,
}

impl Relay {
    fn new(rows: Vec<OutboxRow>, park_after: u32) -> Self {
        let broker = Arc::new(Broker::default());
        let b = broker.clone();
        let connect: Connect = Box::new(move || {
            Ok(Box::new(FakeSession {
                broker: b.clone(),
                failed: AtomicBool::new(false),
            }) as Box<dyn Producer>)
        });
        Self {
            broker,
            session: Session::new(connect),
            suspects: Suspects::default(),
            pending: rows,
            parked: Vec::new(),
            metrics: Metrics::new(),
            park_after,
        }
    }

    /// One round: send the pending rows (without the keys held by a parked row, as
    /// `pending` leaves them out), mark the acknowledged ones, park what is to be parked.
    async fn round(&mut self) -> Outcome {
        let stop = CancellationToken::new();
        let batch = Batch {
            metrics: &self.metrics,
            park_after: self.park_after,
            stop: &stop,
        };
        let rows = self.visible();
        let out = batch
            .send(&mut self.session, &mut self.suspects, &rows)
            .await;
        self.pending.retain(|r| !out.acked.contains(&r.id));
        self.parked.extend(out.park.iter().cloned());
        out
    }

    fn landed(&self) -> Vec<i64> {
        self.broker.landed.lock().clone()
    }

    /// Rows handed to the producer since the last call.
    fn handed(&self) -> Vec<i64> {
        std::mem::take(&mut *self.broker.handed.lock())
    }

    fn visible(&self) -> Vec<OutboxRow> {
        let held: HashSet<i64> = self.parked.iter().map(|p| p.row_id).collect();
        let held_keys: HashSet<String> = self
            .pending
            .iter()
            .filter(|r| held.contains(&r.id))
            .map(|r| r.event_key.clone())
            .collect();
        self.pending
            .iter()
            .filter(|r| !held_keys.contains(&r.event_key))
            .cloned()
            .collect()
    }
}

/// Rows 8..=13: keys a, b and k interleaved; k's rows are 10 and 11.
fn batch() -> Vec<OutboxRow> {
    vec![
        row(8, "a"),
        row(9, "b"),
        row(10, "k"),
        row(11, "k"),
        row(12, "a"),
        row(13, "b"),
    ]
}

/// The order of each key's first copies on the broker is the order of the outbox.
fn assert_key_order(landed: &[i64], rows: &[OutboxRow]) {
    let key: HashMap<i64, &str> = rows.iter().map(|r| (r.id, r.event_key.as_str())).collect();
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for id in landed {
        if !seen.insert(*id) {
            continue;
        }
        let k = key[id];
        if let Some(prev) = last.insert(k, *id) {
            assert!(prev < *id, "key {k}: {id} landed after {prev}: {landed:?}");
        }
    }
}

#[tokio::test]
async fn a_refused_row_holds_its_keys_later_rows_and_other_keys_flow() {
    let mut r = Relay::new(batch(), 3);
    r.broker.refuse.lock().insert(10, u32::MAX);
    // Round 1: 10 is refused; 11 was already handed over, but does not land.
    let out = r.round().await;
    assert_eq!(out.acked, vec![8, 9]);
    assert!(!r.landed().contains(&11), "{:?}", r.landed());
    r.handed();
    // Round 2: 10 alone (refused again); 11 is not even handed over; a and b flow.
    let out = r.round().await;
    assert_eq!(r.handed(), vec![10, 12, 13]);
    assert_eq!(out.acked, vec![12, 13]);
    assert!(out.park.is_empty());
    // Round 3: 10 alone again; the third refusal on its own parks it.
    let out = r.round().await;
    assert_eq!(r.handed(), vec![10]);
    assert!(out.park.is_empty());
    let out = r.round().await;
    assert_eq!(r.handed(), vec![10]);
    assert_eq!(out.park.len(), 1);
    assert_eq!(out.park[0].row_id, 10);
    assert_eq!(out.park[0].attempts, 3);
    assert!(out.park[0].error.contains("MessageSizeTooLarge"));
    // 11 never reached the broker; everything of a and b did, in order.
    assert_eq!(r.landed(), vec![8, 9, 12, 13]);
    assert_key_order(&r.landed(), &batch());
    // While 10 is parked its key is left out, and nothing more is sent.
    let out = r.round().await;
    assert!(out.acked.is_empty() && out.park.is_empty());
    assert!(r.handed().is_empty());
}

#[tokio::test]
async fn a_row_refused_once_goes_alone_first_then_its_key_drains_in_order() {
    let mut r = Relay::new(batch(), 3);
    r.broker.refuse.lock().insert(10, 1);
    r.round().await;
    let out = r.round().await;
    assert_eq!(out.acked, vec![10, 11, 12, 13]);
    assert_eq!(r.landed(), vec![8, 9, 10, 11, 12, 13]);
    assert!(r.suspects.is_empty());
}

#[tokio::test]
async fn a_row_the_producer_does_not_take_stops_its_key_at_once() {
    let mut r = Relay::new(batch(), 3);
    r.broker
        .reject
        .lock()
        .insert(10, EnqueueError::Later("queue full".into()));
    let out = r.round().await;
    // 11 is never handed over; the other keys are, in the same round.
    assert_eq!(r.handed(), vec![8, 9, 12, 13]);
    assert_eq!(out.acked, vec![8, 9, 12, 13]);
    assert_eq!(out.failed, 1);
    r.broker.reject.lock().clear();
    let out = r.round().await;
    assert_eq!(out.acked, vec![10, 11]);
    assert_key_order(&r.landed(), &batch());
}

#[tokio::test]
async fn a_row_too_large_to_send_is_parked_at_once() {
    let mut r = Relay::new(batch(), 3);
    r.broker
        .reject
        .lock()
        .insert(10, EnqueueError::Never("Message size too large".into()));
    let out = r.round().await;
    assert_eq!(
        out.park,
        vec![Park {
            row_id: 10,
            error: "Message size too large".into(),
            attempts: 1
        }]
    );
    assert_eq!(r.handed(), vec![8, 9, 12, 13]);
    assert!(!r.landed().contains(&11));
}

#[tokio::test]
async fn only_refusals_of_a_row_sent_alone_count_towards_parking() {
    // 9 is refused once with 10's batch (as an innocent row sharing a refused batch would
    // be); sent alone it goes through and is never parked, while 10 is.
    let mut r = Relay::new(batch(), 1);
    r.broker.refuse.lock().insert(9, 1);
    r.broker.refuse.lock().insert(10, u32::MAX);
    let out = r.round().await;
    assert_eq!(out.acked, vec![8]);
    assert!(out.park.is_empty());
    // 9 alone: acknowledged. Then 10 fails in the pipeline: a suspect, not yet counted.
    let out = r.round().await;
    assert!(out.acked.contains(&9));
    assert!(out.park.is_empty());
    let out = r.round().await;
    assert_eq!(
        out.park.iter().map(|p| p.row_id).collect::<Vec<_>>(),
        vec![10]
    );
    assert!(!r.landed().contains(&11));
    assert_key_order(&r.landed(), &batch());
}

#[tokio::test]
async fn stopping_abandons_the_session_and_sends_nothing_more() {
    let mut r = Relay::new(batch(), 3);
    let stop = CancellationToken::new();
    stop.cancel();
    let batch_ = Batch {
        metrics: &r.metrics,
        park_after: 3,
        stop: &stop,
    };
    let out = batch_
        .send(&mut r.session, &mut r.suspects, &r.pending)
        .await;
    assert!(out.acked.is_empty());
    assert!(r.handed().is_empty());
}
