//! A client for an external Confluent-compatible registry (Confluent, Redpanda, Apicurio's
//! ccompat API, or another substrate), used instead of the built-in one when
//! `schemas.registry_url` is set.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Registry, RegistryError, SubjectVersion, VersionSel};
use crate::schema::Compatibility;

pub struct ExternalRegistry {
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

const CT: &str = "application/vnd.schemaregistry.v1+json";

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl ExternalRegistry {
    pub fn new(base: &str, auth: Option<&str>) -> Self {
        let auth = auth.and_then(|a| {
            a.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
        Self {
            base: base.trim_end_matches('/').to_string(),
            auth,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RegistryError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("accept", CT);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.header("content-type", CT).body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RegistryError::Remote(e.to_string()))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v.get("error_code").and_then(Value::as_u64).unwrap_or(0);
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Err(match code {
            40401 => RegistryError::SubjectNotFound(msg),
            40402 => RegistryError::VersionNotFound,
            40403 => RegistryError::SchemaNotFound(-1),
            409 => RegistryError::Incompatible(msg),
            42201 => RegistryError::InvalidSchema(msg),
            42202 => RegistryError::InvalidVersion(msg),
            _ => RegistryError::Remote(format!("{status}: {msg}")),
        })
    }

    fn version_path(v: VersionSel) -> String {
        match v {
            VersionSel::Latest => "latest".into(),
            VersionSel::Number(n) => n.to_string(),
        }
    }

    fn to_sv(v: &Value, subject: &str) -> SubjectVersion {
        SubjectVersion {
            subject: v
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or(subject)
                .to_string(),
            version: v.get("version").and_then(Value::as_i64).unwrap_or(0),
            id: v.get("id").and_then(Value::as_i64).unwrap_or(0),
            schema: v
                .get("schema")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }
    }
}

#[async_trait]
impl Registry for ExternalRegistry {
    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let v = self.call(reqwest::Method::GET, "/subjects", None).await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    async fn versions(&self, subject: &str) -> Result<Vec<i64>, RegistryError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/subjects/{}/versions", enc(subject)),
                None,
            )
            .await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    async fn version(
        &self,
        subject: &str,
        sel: VersionSel,
    ) -> Result<SubjectVersion, RegistryError> {
        let path = format!(
            "/subjects/{}/versions/{}",
            enc(subject),
            Self::version_path(sel)
        );
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(Self::to_sv(&v, subject))
    }

    async fn schema_by_id(&self, id: i64) -> Result<String, RegistryError> {
        let v = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        v.get("schema")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(RegistryError::SchemaNotFound(id))
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<i64, RegistryError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{}/versions", enc(subject)),
                Some(json!({ "schema": schema })),
            )
            .await?;
        v.get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| RegistryError::Remote("registry answered without an id".into()))
    }

    async fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, RegistryError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{}", enc(subject)),
                Some(json!({ "schema": schema })),
            )
            .await?;
        Ok(Self::to_sv(&v, subject))
    }

    async fn check(
        &self,
        subject: &str,
        schema: &str,
        sel: VersionSel,
    ) -> Result<Vec<String>, RegistryError> {
        let path = format!(
            "/compatibility/subjects/{}/versions/{}?verbose=true",
            enc(subject),
            Self::version_path(sel)
        );
        let v = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "schema": schema })),
            )
            .await?;
        if v.get("is_compatible")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            Ok(Vec::new())
        } else {
            let msgs: Vec<String> = v
                .get("messages")
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_else(|| vec!["incompatible".to_string()]);
            Ok(msgs)
        }
    }

    async fn compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        let path = match subject {
            Some(s) => format!("/config/{}?defaultToGlobal=true", enc(s)),
            None => "/config".to_string(),
        };
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        let level = v
            .get("compatibilityLevel")
            .or_else(|| v.get("compatibility"))
            .and_then(Value::as_str)
            .unwrap_or("BACKWARD");
        Compatibility::parse(level).map_err(RegistryError::InvalidCompatibility)
    }

    async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        let path = match subject {
            Some(s) => format!("/config/{}", enc(s)),
            None => "/config".to_string(),
        };
        self.call(
            reqwest::Method::PUT,
            &path,
            Some(json!({ "compatibility": level.as_str() })),
        )
        .await?;
        Ok(())
    }
}
