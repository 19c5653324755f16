//! API keys for services: `sk_<id>_<secret>`, shown once at creation; only the SHA-256 of
//! the whole key is stored. Lookups are cached briefly (revocation takes effect within
//! `auth.api_key_cache_secs`).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::AuthError;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_tx};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub struct ApiKeys {
    store: Store,
    cache: DashMap<String, (Option<ApiKeyRecord>, Instant)>,
    ttl: Duration,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    pub fn new(store: Store, cache_secs: u64) -> Self {
        Self {
            store,
            cache: DashMap::new(),
            ttl: Duration::from_secs(cache_secs),
        }
    }

    /// Creates a key and returns it (the only time it is visible) with its record.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<(String, ApiKeyRecord), StoreError> {
        let id = hex::encode(rand::random::<[u8; 4]>());
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let key = format!("sk_{id}_{secret}");
        let now = now_micros();
        let rec = ApiKeyRecord {
            id: id.clone(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.store.begin().await?;
        on_tx!(tx, c => {
            sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(name)
                .bind(hash(&key))
                .bind(scopes.join(" "))
                .bind(now)
                .execute(c)
                .await?;
        });
        tx.commit().await?;
        Ok((key, rec))
    }

    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = on_read!(self.store, p => {
            sqlx::query("SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY name")
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| ApiKeyRecord {
                    id: r.get(0),
                    name: r.get(1),
                    scopes: r.get::<String, _>(2).split_whitespace().map(str::to_string).collect(),
                    created_at: r.get(3),
                    revoked_at: r.get(4),
                })
                .collect::<Vec<_>>()
        });
        Ok(rows)
    }

    /// Revokes the key named `name`; returns whether one was active.
    pub async fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let n = on_tx!(tx, c => {
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(now_micros())
                .bind(name)
                .execute(c)
                .await?
                .rows_affected()
        });
        tx.commit().await?;
        self.cache.clear();
        Ok(n > 0)
    }

    pub async fn verify(&self, key: &str) -> Result<ApiKeyRecord, AuthError> {
        if !key.starts_with("sk_") || key.len() > 200 {
            return Err(AuthError::BadApiKey);
        }
        let h = hash(key);
        if let Some(hit) = self.cache.get(&h)
            && hit.1.elapsed() < self.ttl
        {
            return hit.0.clone().ok_or(AuthError::BadApiKey);
        }
        let found = on_read!(self.store, p => {
            sqlx::query("SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = $1")
                .bind(&h)
                .fetch_optional(p)
                .await
                .map_err(|e| AuthError::Unavailable(e.to_string()))?
                .map(|r| ApiKeyRecord {
                    id: r.get(0),
                    name: r.get(1),
                    scopes: r.get::<String, _>(2).split_whitespace().map(str::to_string).collect(),
                    created_at: r.get(3),
                    revoked_at: r.get(4),
                })
        });
        let active = found.filter(|r| r.revoked_at.is_none());
        if self.cache.len() > 100_000 {
            self.cache.clear();
        }
        self.cache.insert(h, (active.clone(), Instant::now()));
        active.ok_or(AuthError::BadApiKey)
    }
}
