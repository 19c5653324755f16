//! The built-in registry, kept in the store (`registry_*` tables). Ids come from the store's
//! sequence, so they are stable across restarts and shared by every process on the store.

use async_trait::async_trait;
use sqlx::Row;

use super::{Registry, RegistryError, SubjectVersion, VersionSel, normalize};
use crate::schema::Compatibility;
use crate::store::{Store, Tx, now_micros};
use crate::{on_read, on_tx};

pub struct BuiltinRegistry {
    store: Store,
    default_level: Compatibility,
}

struct Row3 {
    version: i64,
    id: i64,
    text: String,
    fingerprint: String,
}

impl BuiltinRegistry {
    pub fn new(store: Store, default_level: Compatibility) -> Self {
        Self {
            store,
            default_level,
        }
    }

    async fn rows(&self, subject: &str) -> Result<Vec<Row3>, RegistryError> {
        let rows = on_read!(self.store, p => {
            sqlx::query(
                "SELECT v.version, v.schema_id, s.schema_text, s.fingerprint FROM registry_versions v \
                 JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version",
            )
            .bind(subject)
            .fetch_all(p)
            .await
            .map_err(crate::store::StoreError::from)?
            .into_iter()
            .map(|r| Row3 {
                version: r.get(0),
                id: r.get(1),
                text: r.get(2),
                fingerprint: r.get(3),
            })
            .collect::<Vec<_>>()
        });
        Ok(rows)
    }

    async fn rows_tx(tx: &mut Tx, subject: &str) -> Result<Vec<Row3>, RegistryError> {
        let rows = on_tx!(tx, c => {
            sqlx::query(
                "SELECT v.version, v.schema_id, s.schema_text, s.fingerprint FROM registry_versions v \
                 JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version",
            )
            .bind(subject)
            .fetch_all(c)
            .await
            .map_err(crate::store::StoreError::from)?
            .into_iter()
            .map(|r| Row3 {
                version: r.get(0),
                id: r.get(1),
                text: r.get(2),
                fingerprint: r.get(3),
            })
            .collect::<Vec<_>>()
        });
        Ok(rows)
    }

    fn pick(
        rows: Vec<Row3>,
        subject: &str,
        v: VersionSel,
    ) -> Result<SubjectVersion, RegistryError> {
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let row = match v {
            VersionSel::Latest => rows.into_iter().last(),
            VersionSel::Number(n) => rows.into_iter().find(|r| r.version == n),
        }
        .ok_or(RegistryError::VersionNotFound)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: row.version,
            id: row.id,
            schema: row.text,
        })
    }

    async fn level_for(&self, subject: &str) -> Result<Compatibility, RegistryError> {
        let found: Option<String> = on_read!(self.store, p => {
            sqlx::query_scalar(
                "SELECT compatibility FROM registry_config WHERE subject = $1 OR subject = '' \
                 ORDER BY length(subject) DESC LIMIT 1",
            )
            .bind(subject)
            .fetch_optional(p)
            .await
            .map_err(crate::store::StoreError::from)?
        });
        match found {
            Some(s) => Compatibility::parse(&s).map_err(RegistryError::InvalidCompatibility),
            None => Ok(self.default_level),
        }
    }

    fn parse_all(rows: &[Row3]) -> Vec<apache_avro::Schema> {
        rows.iter()
            .filter_map(|r| apache_avro::Schema::parse_str(&r.text).ok())
            .collect()
    }
}

#[async_trait]
impl Registry for BuiltinRegistry {
    async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let s: Vec<String> = on_read!(self.store, p => {
            sqlx::query_scalar("SELECT DISTINCT subject FROM registry_versions ORDER BY subject")
                .fetch_all(p)
                .await
                .map_err(crate::store::StoreError::from)?
        });
        Ok(s)
    }

    async fn versions(&self, subject: &str) -> Result<Vec<i64>, RegistryError> {
        let rows = self.rows(subject).await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(rows.iter().map(|r| r.version).collect())
    }

    async fn version(&self, subject: &str, v: VersionSel) -> Result<SubjectVersion, RegistryError> {
        let rows = self.rows(subject).await?;
        Self::pick(rows, subject, v)
    }

    async fn schema_by_id(&self, id: i64) -> Result<String, RegistryError> {
        let s: Option<String> = on_read!(self.store, p => {
            sqlx::query_scalar("SELECT schema_text FROM registry_schemas WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(crate::store::StoreError::from)?
        });
        s.ok_or(RegistryError::SchemaNotFound(id))
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<i64, RegistryError> {
        let (parsed, compact, fp) = normalize(schema)?;
        let level = self.level_for(subject).await?;
        let mut tx = self.store.begin().await?;
        let rows = Self::rows_tx(&mut tx, subject).await?;
        if let Some(r) = rows.iter().find(|r| r.fingerprint == fp) {
            let id = r.id;
            tx.rollback().await?;
            return Ok(id);
        }
        let problems = level.check(&parsed, &Self::parse_all(&rows));
        if !problems.is_empty() {
            tx.rollback().await?;
            return Err(RegistryError::Incompatible(problems.join("; ")));
        }
        let next_version = rows.last().map(|r| r.version + 1).unwrap_or(1);
        let now = now_micros();
        let id: i64 = on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO registry_schemas (fingerprint, schema_text, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (fingerprint) DO NOTHING",
            )
            .bind(&fp)
            .bind(&compact)
            .bind(now)
            .execute(&mut *c)
            .await
            .map_err(crate::store::StoreError::from)?;
            let id: i64 = sqlx::query_scalar("SELECT id FROM registry_schemas WHERE fingerprint = $1")
                .bind(&fp)
                .fetch_one(&mut *c)
                .await
                .map_err(crate::store::StoreError::from)?;
            sqlx::query("INSERT INTO registry_versions (subject, version, schema_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(subject)
                .bind(next_version)
                .bind(id)
                .bind(now)
                .execute(&mut *c)
                .await
                .map_err(crate::store::StoreError::from)?;
            id
        });
        tx.commit().await?;
        Ok(id)
    }

    async fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, RegistryError> {
        let (_, _, fp) = normalize(schema)?;
        let rows = self.rows(subject).await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let r = rows
            .into_iter()
            .find(|r| r.fingerprint == fp)
            .ok_or(RegistryError::SchemaNotFound(-1))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: r.version,
            id: r.id,
            schema: r.text,
        })
    }

    async fn check(
        &self,
        subject: &str,
        schema: &str,
        v: VersionSel,
    ) -> Result<Vec<String>, RegistryError> {
        let (parsed, _, _) = normalize(schema)?;
        let level = self.level_for(subject).await?;
        let rows = self.rows(subject).await?;
        if rows.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let against: Vec<Row3> = match v {
            VersionSel::Latest => rows,
            VersionSel::Number(n) => {
                let keep: Vec<Row3> = rows.into_iter().filter(|r| r.version <= n).collect();
                if keep.last().map(|r| r.version) != Some(n) {
                    return Err(RegistryError::VersionNotFound);
                }
                keep
            }
        };
        Ok(level.check(&parsed, &Self::parse_all(&against)))
    }

    async fn compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        self.level_for(subject.unwrap_or("")).await
    }

    async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        let mut tx = self.store.begin().await?;
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2) \
                 ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
            )
            .bind(subject.unwrap_or(""))
            .bind(level.as_str())
            .execute(c)
            .await
            .map_err(crate::store::StoreError::from)?;
        });
        tx.commit().await?;
        Ok(())
    }
}
