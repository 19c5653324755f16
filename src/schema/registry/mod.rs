//! The schema registry: a Confluent-compatible interface with two implementations, the
//! built-in one (kept in the store) and a client for an external registry. `http.rs` serves
//! the Confluent REST API over whichever is configured.

pub mod builtin;
pub mod external;
pub mod http;

use async_trait::async_trait;

use crate::schema::Compatibility;
use crate::store::StoreError;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i64,
    pub id: i64,
    pub schema: String,
}

#[derive(Debug, Clone, Copy)]
pub enum VersionSel {
    Latest,
    Number(i64),
}

impl VersionSel {
    pub fn parse(s: &str) -> Result<VersionSel, RegistryError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionSel::Latest);
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(VersionSel::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version not found.")]
    VersionNotFound,
    #[error("Schema {0} not found")]
    SchemaNotFound(i64),
    #[error("Schema being registered is incompatible with an earlier schema for subject: {0}")]
    Incompatible(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id.")]
    InvalidVersion(String),
    #[error("Invalid compatibility level: {0}")]
    InvalidCompatibility(String),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    #[error("registry unavailable: {0}")]
    Remote(String),
}

impl RegistryError {
    /// The Confluent `error_code` and the HTTP status it travels with.
    pub fn code(&self) -> (u16, u32) {
        match self {
            RegistryError::SubjectNotFound(_) => (404, 40401),
            RegistryError::VersionNotFound => (404, 40402),
            RegistryError::SchemaNotFound(_) => (404, 40403),
            RegistryError::Incompatible(_) => (409, 409),
            RegistryError::InvalidSchema(_) => (422, 42201),
            RegistryError::InvalidVersion(_) => (422, 42202),
            RegistryError::InvalidCompatibility(_) => (422, 42203),
            RegistryError::Store(_) => (500, 50001),
            RegistryError::Remote(_) => (502, 50003),
        }
    }
}

/// The Confluent subject of a topic's value schema (TopicNameStrategy).
pub fn subject_for_topic(topic: &str) -> String {
    format!("{topic}-value")
}

#[async_trait]
pub trait Registry: Send + Sync {
    async fn subjects(&self) -> Result<Vec<String>, RegistryError>;
    async fn versions(&self, subject: &str) -> Result<Vec<i64>, RegistryError>;
    async fn version(&self, subject: &str, v: VersionSel) -> Result<SubjectVersion, RegistryError>;
    async fn schema_by_id(&self, id: i64) -> Result<String, RegistryError>;
    /// Registers `schema` under `subject` (or returns the id it already has there), after
    /// checking it against the subject's compatibility level.
    async fn register(&self, subject: &str, schema: &str) -> Result<i64, RegistryError>;
    /// Finds `schema` among the subject's versions.
    async fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, RegistryError>;
    /// Reasons `schema` is incompatible with `v` under the subject's level (empty = fine).
    async fn check(
        &self,
        subject: &str,
        schema: &str,
        v: VersionSel,
    ) -> Result<Vec<String>, RegistryError>;
    async fn compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError>;
    async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError>;
}

/// Parses and normalises a schema text: the compact JSON form is what is stored and what
/// identifies a schema (its fingerprint).
pub fn normalize(schema: &str) -> Result<(apache_avro::Schema, String, String), RegistryError> {
    let parsed = apache_avro::Schema::parse_str(schema)
        .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let compact =
        serde_json::to_string(&json).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let fp = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(compact.as_bytes()));
    Ok((parsed, compact, fp))
}
