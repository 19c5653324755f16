//! The Kafka backend (rdkafka). Consumer groups are Kafka consumer groups; offsets are
//! committed after the effects' transaction (a redelivery is absorbed by the inbox). The relay
//! role (`crate::relay`) fills the topics from the outbox; `topics` creates them.

pub mod client;
pub mod topics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

use self::client::{CALL_TIMEOUT, broker_err};
use super::{EventLog, LogConsumer, LogError, LogRecord, PartitionLag, Position, SeekTo};
use crate::config::LogConfig;
use crate::outbox::Headers;
use crate::store::{Tx, now_micros};

pub struct KafkaLog {
    cfg: LogConfig,
    /// Metadata and watermarks (no group).
    meta: Arc<BaseConsumer>,
    /// One idle member-less client per group, to read its committed offsets.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl KafkaLog {
    /// Builds the clients; nothing is contacted yet, so a broker that is down does not stop
    /// the process from starting (the gateway keeps accepting into the outbox).
    pub async fn connect(cfg: &LogConfig) -> Result<Self, LogError> {
        let meta: BaseConsumer = client::admin(cfg)?.create().map_err(broker_err)?;
        Ok(Self {
            cfg: cfg.clone(),
            meta: Arc::new(meta),
            groups: Mutex::new(HashMap::new()),
        })
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut g = self.groups.lock();
        if let Some(c) = g.get(group) {
            return Ok(c.clone());
        }
        let c: BaseConsumer = client::consumer(&self.cfg, group)?
            .create()
            .map_err(broker_err)?;
        let c = Arc::new(c);
        g.insert(group.to_string(), c.clone());
        Ok(c)
    }
}

/// The partitions of `topic` (blocking).
fn partitions_of<C: Consumer>(c: &C, topic: &str) -> Result<Vec<i32>, LogError> {
    let md = c
        .fetch_metadata(Some(topic), CALL_TIMEOUT)
        .map_err(broker_err)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| LogError::Broker(format!("topic {topic} is unknown to the broker")))?;
    if let Some(e) = t.error() {
        return Err(LogError::Broker(format!("topic {topic}: {e:?}")));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

#[async_trait]
impl EventLog for KafkaLog {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        let member = join(&self.cfg, group, topics)?;
        Ok(Box::new(KafkaConsumer {
            cfg: self.cfg.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            member: Some(member),
            rejoins: 0,
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>, LogError> {
        let gc = self.group_client(group)?;
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            let mut ends = HashMap::new();
            for t in &topics {
                for p in partitions_of(gc.as_ref(), t)? {
                    let (_, high) = gc
                        .fetch_watermarks(t, p, CALL_TIMEOUT)
                        .map_err(broker_err)?;
                    ends.insert((t.clone(), p), high);
                    tpl.add_partition(t, p);
                }
            }
            let committed = gc
                .committed_offsets(tpl, CALL_TIMEOUT)
                .map_err(broker_err)?;
            let mut out = Vec::new();
            for e in committed.elements() {
                let end = ends
                    .get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .unwrap_or(0);
                let committed = match e.offset() {
                    Offset::Offset(n) => n,
                    // Nothing committed: a new group starts at the beginning.
                    _ => gc
                        .fetch_watermarks(e.topic(), e.partition(), CALL_TIMEOUT)
                        .map(|(low, _)| low)
                        .unwrap_or(0),
                };
                out.push(PartitionLag {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    committed,
                    end,
                });
            }
            Ok(out)
        })
        .await
        .map_err(broker_err)?
    }

    async fn ping(&self) -> Result<(), LogError> {
        let meta = self.meta.clone();
        tokio::task::spawn_blocking(move || {
            let md = meta
                .fetch_metadata(None, Duration::from_secs(3))
                .map_err(broker_err)?;
            if md.brokers().is_empty() {
                return Err(LogError::Broker("no broker answered".into()));
            }
            Ok(())
        })
        .await
        .map_err(broker_err)?
    }
}

/// A new member of `group`, subscribed to `topics`.
fn join(cfg: &LogConfig, group: &str, topics: &[String]) -> Result<Arc<StreamConsumer>, LogError> {
    let c: StreamConsumer = client::consumer(cfg, group)?.create().map_err(broker_err)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    c.subscribe(&names).map_err(broker_err)?;
    Ok(Arc::new(c))
}

fn tpl_of(positions: &[Position]) -> Result<TopicPartitionList, LogError> {
    let mut tpl = TopicPartitionList::new();
    for p in positions {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
            .map_err(broker_err)?;
    }
    Ok(tpl)
}

pub struct KafkaConsumer {
    cfg: LogConfig,
    group: String,
    topics: Vec<String>,
    /// `None` only while being replaced.
    member: Option<Arc<StreamConsumer>>,
    /// Times this consumer left its group and joined again (rewinds only).
    rejoins: u64,
}

fn record(m: &BorrowedMessage<'_>) -> LogRecord {
    let mut headers = Headers::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            if let Some(v) = h.value {
                headers.insert(h.key.to_string(), String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    LogRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        timestamp: m
            .timestamp()
            .to_millis()
            .and_then(crate::schema::time::millis_to_micros)
            .unwrap_or_else(now_micros),
    }
}

impl KafkaConsumer {
    fn member(&self) -> Result<Arc<StreamConsumer>, LogError> {
        self.member
            .clone()
            .ok_or_else(|| LogError::Broker("consumer is rejoining its group".into()))
    }

    /// Leaves the group (off the async threads: closing blocks).
    async fn leave(&mut self) {
        if let Some(m) = self.member.take() {
            let _ = tokio::task::spawn_blocking(move || drop(m)).await;
        }
    }

    /// Commits `positions` as this member; on failure also says whether the member had an
    /// assignment.
    async fn member_commit(&self, positions: &[Position]) -> Result<(), (LogError, bool)> {
        let m = self.member().map_err(|e| (e, false))?;
        let tpl = tpl_of(positions).map_err(|e| (e, false))?;
        let r = tokio::task::spawn_blocking(move || {
            let joined = m.assignment().map(|a| a.count() > 0).unwrap_or(false);
            (m.commit(&tpl, CommitMode::Sync), joined)
        })
        .await
        .map_err(|e| (broker_err(e), false))?;
        match r {
            (Ok(()), _) => Ok(()),
            (Err(e), joined) => Err((broker_err(e), joined)),
        }
    }

    /// Commits `positions` with a member-less client of the group (the group must have no
    /// other active member for the broker to accept it), then joins again: the new member
    /// starts from these offsets.
    async fn rejoin_at(&mut self, positions: &[Position]) -> Result<(), LogError> {
        self.leave().await;
        let committed = async {
            let tpl = tpl_of(positions)?;
            let c: BaseConsumer = client::consumer(&self.cfg, &self.group)?
                .create()
                .map_err(broker_err)?;
            tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(broker_err)?
                .map_err(broker_err)
        }
        .await;
        self.member = Some(join(&self.cfg, &self.group, &self.topics)?);
        self.rejoins += 1;
        committed
    }
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        let m = self.member()?;
        let mut out = Vec::new();
        match tokio::time::timeout(wait, m.recv()).await {
            Err(_) => return Ok(out),
            Ok(Err(e)) => return Err(broker_err(e)),
            Ok(Ok(msg)) => out.push(record(&msg)),
        }
        while out.len() < max.max(1) {
            match m.recv().now_or_never() {
                Some(Ok(msg)) => out.push(record(&msg)),
                Some(Err(e)) => {
                    tracing::debug!(group = %self.group, error = %e, "consumer error mid-batch");
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn offsets_in_store(&self) -> bool {
        false
    }

    async fn commit_in(&mut self, _tx: &mut Tx, _positions: &[Position]) -> Result<(), LogError> {
        Ok(())
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        // A refused commit (a rebalance under way, this member fenced out of the generation)
        // is only reported: leaving and rejoining here would start another rebalance, in
        // which the other members' commits fail too, and so on. The records come again to
        // whoever owns their partition next; the inbox absorbs them.
        self.member_commit(positions).await.map_err(|(e, _)| e)
    }

    async fn commit_rewind(&mut self, positions: &[Position]) -> Result<(), LogError> {
        if positions.is_empty() {
            return Ok(());
        }
        match self.member_commit(positions).await {
            Ok(_) => Ok(()),
            Err((e, true)) => Err(e),
            Err((e, false)) => {
                // Not (yet) a member of the group's current generation, e.g. a replay applied
                // before the first assignment: commit as a member-less client instead.
                tracing::debug!(group = %self.group, error = %e, "member commit refused; committing outside the group");
                self.rejoin_at(positions).await
            }
        }
    }

    async fn resolve(&mut self, topic: &str, to: SeekTo) -> Result<Vec<Position>, LogError> {
        let m = self.member()?;
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let parts = partitions_of(m.as_ref(), &topic)?;
            let times = if let SeekTo::Time(us) = to {
                let mut tpl = TopicPartitionList::new();
                for p in &parts {
                    tpl.add_partition_offset(&topic, *p, Offset::Offset(us / 1000))
                        .map_err(broker_err)?;
                }
                Some(m.offsets_for_times(tpl, CALL_TIMEOUT).map_err(broker_err)?)
            } else {
                None
            };
            for p in parts {
                let (low, high) = m
                    .fetch_watermarks(&topic, p, CALL_TIMEOUT)
                    .map_err(broker_err)?;
                let next = match to {
                    SeekTo::Beginning => low,
                    SeekTo::Offset(n) => n.clamp(low, high),
                    SeekTo::Time(_) => match times
                        .as_ref()
                        .and_then(|t| t.find_partition(&topic, p))
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(n)) => n,
                        _ => high,
                    },
                };
                out.push(Position {
                    topic: topic.clone(),
                    partition: p,
                    next_offset: next,
                });
            }
            Ok(out)
        })
        .await
        .map_err(broker_err)?
    }

    /// The positions were committed (`commit`); a fresh member reads from them, and nothing
    /// fetched before the seek is handed out after it.
    async fn seek(&mut self, _positions: &[Position]) -> Result<(), LogError> {
        self.leave().await;
        self.member = Some(join(&self.cfg, &self.group, &self.topics)?);
        self.rejoins += 1;
        Ok(())
    }

    fn rejoins(&self) -> u64 {
        self.rejoins
    }

    async fn close(&mut self) {
        self.leave().await;
    }
}
