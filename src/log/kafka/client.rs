//! librdkafka client settings, built once from `[log]`: the brokers from `log.url`, the
//! settings substrate needs (manual commits, idempotent producer, low fetch latency), then
//! `log.kafka_options` passed through as-is, so an operator can override any of them.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::LogConfig;
use crate::log::LogError;

/// How long metadata, watermark and commit calls may block.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `kafka://a:9092,b:9092` → `a:9092,b:9092`.
pub fn brokers(url: &str) -> Result<String, LogError> {
    let list = url
        .strip_prefix("kafka://")
        .ok_or_else(|| LogError::Config("log.url: expected kafka://host:port[,host:port]".into()))?
        .trim_end_matches('/');
    if list.is_empty() {
        return Err(LogError::Config("log.url: kafka:// names no broker".into()));
    }
    Ok(list.to_string())
}

fn base(cfg: &LogConfig) -> Result<ClientConfig, LogError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers(&cfg.url)?)
        .set("client.id", "substrate")
        // A broker that is down shows up in `ping` and lag, not as log spam.
        .set("log.connection.close", "false");
    Ok(c)
}

fn overrides(mut c: ClientConfig, cfg: &LogConfig) -> ClientConfig {
    for (k, v) in &cfg.kafka_options {
        c.set(k, v);
    }
    c
}

/// The relay's producer: idempotent, acks from every in-sync replica, order kept per
/// partition across retries. Two settings are not overridable, because the relay's per-key
/// order under failure rests on them (docs/log.md, "Order under failure"): the gap-less
/// guarantee (a batch the broker refuses for good stops the producer instead of letting later
/// batches through) and no local message timeout (an expired message would leave a gap too).
pub fn producer(cfg: &LogConfig) -> Result<ClientConfig, LogError> {
    let mut c = base(cfg)?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("compression.type", "lz4")
        .set("message.max.bytes", cfg.max_message_bytes.to_string());
    let mut c = overrides(c, cfg);
    for (k, v) in ORDER_SETTINGS {
        if c.get(k).is_some_and(|set| set != v) {
            tracing::warn!(
                setting = k,
                "log.kafka_options cannot change {k}: the relay's per-key order depends on it"
            );
        }
        c.set(k, v);
    }
    Ok(c)
}

/// Producer settings the relay's order argument needs (see `producer`).
pub const ORDER_SETTINGS: [(&str, &str); 3] = [
    ("enable.idempotence", "true"),
    ("enable.gapless.guarantee", "true"),
    ("message.timeout.ms", "0"),
];

/// A consumer group member: offsets are committed by substrate after the effects, never
/// automatically; a new group starts at the beginning.
pub fn consumer(cfg: &LogConfig, group: &str) -> Result<ClientConfig, LogError> {
    let mut c = base(cfg)?;
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "50")
        // Topics created after the member joined are picked up soon.
        .set("topic.metadata.refresh.interval.ms", "10000");
    Ok(overrides(c, cfg))
}

/// Admin and metadata calls.
pub fn admin(cfg: &LogConfig) -> Result<ClientConfig, LogError> {
    Ok(overrides(base(cfg)?, cfg))
}

pub fn broker_err(e: impl std::fmt::Display) -> LogError {
    LogError::Broker(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_lists() {
        assert_eq!(brokers("kafka://a:1,b:2").unwrap(), "a:1,b:2");
        assert!(brokers("embedded").is_err());
        assert!(brokers("kafka://").is_err());
    }

    #[test]
    fn options_pass_through_and_override() {
        let mut cfg = LogConfig {
            url: "kafka://127.0.0.1:9092".into(),
            ..LogConfig::default()
        };
        cfg.kafka_options.insert("linger.ms".into(), "0".into());
        let p = producer(&cfg).unwrap();
        assert_eq!(p.get("linger.ms"), Some("0"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(
            p.get("message.max.bytes"),
            Some(cfg.max_message_bytes.to_string().as_str())
        );
        let c = consumer(&cfg, "g").unwrap();
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn order_settings_cannot_be_overridden() {
        let mut cfg = LogConfig {
            url: "kafka://127.0.0.1:9092".into(),
            ..LogConfig::default()
        };
        cfg.kafka_options
            .insert("enable.gapless.guarantee".into(), "false".into());
        cfg.kafka_options
            .insert("message.timeout.ms".into(), "30000".into());
        let p = producer(&cfg).unwrap();
        assert_eq!(p.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(p.get("message.timeout.ms"), Some("0"));
        // The producer accepts them together (librdkafka checks the combination).
        let made: Result<rdkafka::producer::BaseProducer, _> = p.create();
        assert!(made.is_ok(), "{:?}", made.err());
    }
}
