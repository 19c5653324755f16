//! Event schemas: every `avro/**/*.avsc` is a topic (the path is its name), registered in the
//! registry under `{topic}-value` at start-up. The catalog validates JSON against a topic's
//! latest schema and its rules (`rules.rs`), encodes it in the Confluent wire format, and
//! decodes framed payloads by the schema id they carry.

pub mod binary;
pub mod compat;
pub mod datum;
pub mod json;
pub mod jsonschema;
pub mod registry;
pub mod rules;
pub mod time;
pub mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde_json::Value as Json;

pub use compat::Compatibility;
pub use json::{FieldError, Names};
pub use registry::{Registry, RegistryError};
pub use rules::{Rules, Violation};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("schema for topic {topic} rejected by the registry")]
    Registry {
        topic: String,
        #[source]
        source: RegistryError,
    },
    #[error("no schema for topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    Invalid(FieldError),
    /// The payload fits the schema but breaks one of the topic's rules.
    #[error("{0}")]
    Rule(Violation),
    #[error("avro: {0}")]
    Avro(String),
    #[error("payload: {0}")]
    Wire(#[from] wire::WireError),
    #[error("registry: {0}")]
    Lookup(#[from] RegistryError),
}

/// A topic's current value schema.
pub struct TopicSchema {
    pub topic: String,
    pub subject: String,
    /// `{domain}.{entity}[.{kind}]`: the topic without its `public.`/`internal.` prefix.
    pub event_type: String,
    pub id: u32,
    pub version: i64,
    pub schema: Schema,
    pub names: Names,
}

struct Parsed {
    schema: Schema,
    names: Names,
}

/// Topic name of a schema file: its path below the schema folder, `/` → `.`, without `.avsc`.
pub fn topic_of(dir: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(dir).ok()?;
    let s = rel.to_str()?.strip_suffix(".avsc")?;
    Some(s.replace(['/', '\\'], "."))
}

/// Every `.avsc` file below `dir`, sorted.
fn schema_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, SchemaError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| SchemaError::File {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "avsc") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// The topics of the schema files below `dir` (without loading them).
pub fn topics_in(dir: &Path) -> Result<Vec<String>, SchemaError> {
    Ok(schema_files(dir)?
        .iter()
        .filter_map(|f| topic_of(dir, f))
        .collect())
}

/// The event type of a topic: `public.identity.login.events` → `identity.login.events`.
pub fn event_type_of(topic: &str) -> String {
    topic
        .strip_prefix("public.")
        .or_else(|| topic.strip_prefix("internal."))
        .unwrap_or(topic)
        .to_string()
}

/// Every topic's schema by topic name.
pub type TopicMap = HashMap<String, Arc<TopicSchema>>;

pub struct SchemaCatalog {
    registry: Arc<dyn Registry>,
    topics: ArcSwap<TopicMap>,
    by_id: DashMap<u32, Arc<Parsed>>,
    rules: Rules,
}

/// The result of encoding: the schema id and the framed bytes.
pub struct Encoded {
    pub schema_id: u32,
    pub bytes: Vec<u8>,
}

impl SchemaCatalog {
    /// Reads every `.avsc` below `dir`, registers each (a schema already registered keeps its
    /// id; a changed one becomes a new version if compatible) and loads the latest versions.
    /// `rules` are checked on every payload encoded.
    pub async fn load(
        dir: &Path,
        registry: Arc<dyn Registry>,
        rules: Rules,
    ) -> Result<SchemaCatalog, SchemaError> {
        let files = schema_files(dir)?;
        let cat = SchemaCatalog {
            registry,
            topics: ArcSwap::from_pointee(HashMap::new()),
            by_id: DashMap::new(),
            rules,
        };
        for file in files {
            let topic = topic_of(dir, &file).ok_or_else(|| SchemaError::File {
                path: file.display().to_string(),
                reason: "cannot derive a topic name".into(),
            })?;
            if !(topic.starts_with("public.") || topic.starts_with("internal.")) {
                return Err(SchemaError::File {
                    path: file.display().to_string(),
                    reason: "schemas live under avro/public/ or avro/internal/".into(),
                });
            }
            let text = std::fs::read_to_string(&file).map_err(|e| SchemaError::File {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            Schema::parse_str(&text).map_err(|e| SchemaError::File {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
            let subject = registry::subject_for_topic(&topic);
            cat.registry
                .register(&subject, &text)
                .await
                .map_err(|source| SchemaError::Registry {
                    topic: topic.clone(),
                    source,
                })?;
            cat.refresh_topic(&topic).await?;
        }
        Ok(cat)
    }

    /// Reloads a topic's latest version from the registry (after a registration).
    pub async fn refresh_topic(&self, topic: &str) -> Result<(), SchemaError> {
        let subject = registry::subject_for_topic(topic);
        let sv = self
            .registry
            .version(&subject, registry::VersionSel::Latest)
            .await
            .map_err(|source| SchemaError::Registry {
                topic: topic.to_string(),
                source,
            })?;
        let schema = Schema::parse_str(&sv.schema).map_err(|e| SchemaError::Avro(e.to_string()))?;
        let names = json::names_of(&schema);
        let ts = Arc::new(TopicSchema {
            topic: topic.to_string(),
            subject,
            event_type: event_type_of(topic),
            id: sv.id as u32,
            version: sv.version,
            schema,
            names,
        });
        let mut map = HashMap::clone(&self.topics.load());
        map.insert(topic.to_string(), ts);
        self.topics.store(Arc::new(map));
        Ok(())
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The topics' rules, for consumers to check what they receive the way ingest did.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Every topic's schema as one snapshot; a schema change replaces the whole map, so
    /// `Arc::ptr_eq` on two snapshots tells whether anything changed in between.
    pub fn topic_map(&self) -> Arc<TopicMap> {
        self.topics.load_full()
    }

    pub fn topic(&self, topic: &str) -> Option<Arc<TopicSchema>> {
        self.topics.load().get(topic).cloned()
    }

    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.topics.load().keys().cloned().collect();
        t.sort();
        t
    }

    /// Validates `value` against the topic's schema and rules and encodes it (Confluent
    /// framing).
    pub fn encode_json(
        &self,
        topic: &str,
        value: &Json,
    ) -> Result<(Arc<TopicSchema>, Encoded), SchemaError> {
        let ts = self
            .topic(topic)
            .ok_or_else(|| SchemaError::UnknownTopic(topic.to_string()))?;
        let avro =
            json::json_to_avro(&ts.schema, &ts.names, value).map_err(SchemaError::Invalid)?;
        self.rules.check(topic, &avro).map_err(SchemaError::Rule)?;
        let bytes = match binary::encode_framed(ts.id, &avro) {
            Some(b) => b,
            None => {
                let datum = apache_avro::to_avro_datum(&ts.schema, avro)
                    .map_err(|e| SchemaError::Avro(e.to_string()))?;
                wire::frame(ts.id, &datum)
            }
        };
        let id = ts.id;
        Ok((
            ts,
            Encoded {
                schema_id: id,
                bytes,
            },
        ))
    }

    /// Encodes a serializable value (handlers emitting events).
    pub fn encode<T: serde::Serialize>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<(Arc<TopicSchema>, Encoded), SchemaError> {
        let json = serde_json::to_value(value).map_err(|e| SchemaError::Avro(e.to_string()))?;
        self.encode_json(topic, &json)
    }

    async fn parsed(&self, id: u32) -> Result<Arc<Parsed>, SchemaError> {
        if let Some(p) = self.by_id.get(&id) {
            return Ok(p.clone());
        }
        let text = self.registry.schema_by_id(i64::from(id)).await?;
        let schema = Schema::parse_str(&text).map_err(|e| SchemaError::Avro(e.to_string()))?;
        let names = json::names_of(&schema);
        let p = Arc::new(Parsed { schema, names });
        self.by_id.insert(id, p.clone());
        Ok(p)
    }

    /// Decodes a framed payload with the schema it names.
    pub async fn decode(&self, bytes: &[u8]) -> Result<apache_avro::types::Value, SchemaError> {
        let (id, mut datum) = wire::unframe(bytes)?;
        let p = self.parsed(id).await?;
        let _ = &p.names;
        apache_avro::from_avro_datum(&p.schema, &mut datum, None)
            .map_err(|e| SchemaError::Avro(e.to_string()))
    }

    /// Decodes a framed payload to JSON: in one pass (`datum`), or through apache-avro for
    /// what that does not decode (its value or error then stands).
    pub async fn decode_json(&self, bytes: &[u8]) -> Result<Json, SchemaError> {
        let (id, datum) = wire::unframe(bytes)?;
        let p = self.parsed(id).await?;
        if let Some(j) = datum::to_json(&p.schema, &p.names, datum) {
            return Ok(j);
        }
        let v = apache_avro::from_avro_datum(&p.schema, &mut &datum[..], None)
            .map_err(|e| SchemaError::Avro(e.to_string()))?;
        json::avro_to_json(v).map_err(|e| SchemaError::Avro(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_come_from_paths() {
        let dir = Path::new("avro");
        assert_eq!(
            topic_of(dir, Path::new("avro/public/user/message.events.avsc")).as_deref(),
            Some("public.user.message.events")
        );
        assert_eq!(
            event_type_of("public.identity.login.events"),
            "identity.login.events"
        );
        assert_eq!(event_type_of("internal.platform.probe"), "platform.probe");
    }
}
