//! The Kafka backend (rdkafka): consumer groups over Kafka topics. The relay role
//! (`crate::relay`) moves outbox rows into these topics.

use async_trait::async_trait;

use super::{EventLog, LogConsumer, LogError, PartitionLag};
use crate::config::LogConfig;

pub struct KafkaLog {
    _brokers: String,
}

impl KafkaLog {
    pub async fn connect(cfg: &LogConfig) -> Result<Self, LogError> {
        let brokers = cfg
            .url
            .strip_prefix("kafka://")
            .ok_or_else(|| LogError::Config("log.url: expected kafka://host:port".into()))?;
        Err(LogError::Config(format!(
            "the Kafka backend ({brokers}) is not available in this build yet"
        )))
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn subscribe(
        &self,
        _group: &str,
        _topics: &[String],
    ) -> Result<Box<dyn LogConsumer>, LogError> {
        Err(LogError::Config("kafka backend not available".into()))
    }

    async fn lag(&self, _group: &str, _topics: &[String]) -> Result<Vec<PartitionLag>, LogError> {
        Err(LogError::Config("kafka backend not available".into()))
    }

    async fn ping(&self) -> Result<(), LogError> {
        Err(LogError::Config("kafka backend not available".into()))
    }
}
