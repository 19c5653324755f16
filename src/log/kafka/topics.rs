//! Topic administration: the topics substrate needs are the schemas' topics and their
//! dead-letter topics (`{topic}.dlq`); they are created with the configured partitions and
//! replication at start-up (`log.create_topics`) or by `substrate topics create`.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::client::{self, CALL_TIMEOUT, broker_err};
use crate::config::LogConfig;
use crate::log::LogError;

/// Every topic the schemas imply: each schema topic and its dead-letter topic.
pub fn wanted(schema_topics: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(schema_topics.len() * 2);
    for t in schema_topics {
        out.push(t.clone());
        out.push(crate::consumers::dlq::dlq_topic(t));
    }
    out.sort();
    out.dedup();
    out
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: usize,
}

/// The topics on the broker (internal `__*` topics left out).
pub async fn list(cfg: &LogConfig) -> Result<Vec<TopicInfo>, LogError> {
    let admin: AdminClient<DefaultClientContext> =
        client::admin(cfg)?.create().map_err(broker_err)?;
    let md = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, CALL_TIMEOUT)
            .map_err(broker_err)
    })
    .await
    .map_err(broker_err)??;
    let mut out: Vec<TopicInfo> = md
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| TopicInfo {
            name: t.name().to_string(),
            partitions: t.partitions().len(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Creates the missing topics of `names`; returns the ones created.
pub async fn create(cfg: &LogConfig, names: &[String]) -> Result<Vec<String>, LogError> {
    let existing: Vec<String> = list(cfg).await?.into_iter().map(|t| t.name).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !existing.contains(n)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> =
        client::admin(cfg)?.create().map_err(broker_err)?;
    let partitions = cfg.partitions.max(1);
    let replication = cfg.replication.max(1);
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let results = admin.create_topics(&new, &opts).await.map_err(broker_err)?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(LogError::Broker(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(created)
}

/// Creates whatever the schemas need that the broker lacks.
pub async fn ensure_for(cfg: &LogConfig, schema_topics: &[String]) -> Result<(), LogError> {
    let created = create(cfg, &wanted(schema_topics)).await?;
    if !created.is_empty() {
        tracing::info!(topics = ?created, "topics created");
    }
    Ok(())
}

pub async fn ensure(ctx: &crate::app::AppContext) -> Result<(), LogError> {
    ensure_for(&ctx.config.log, &ctx.schemas.topics()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn wanted_adds_dead_letter_topics() {
        let w = super::wanted(&["b.events".into(), "a.events".into()]);
        assert_eq!(w, ["a.events", "a.events.dlq", "b.events", "b.events.dlq"]);
    }
}
