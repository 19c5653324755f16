//! A JWKS cache: keys by `kid`, fetched from the configured URL. An unknown `kid` triggers
//! a refresh (at most once per `jwks_min_refresh_secs`), which picks up rotated keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;

use super::AuthError;

struct Entry {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, Entry>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl Jwks {
    pub fn new(url: &str, min_refresh_secs: u64) -> Self {
        Self {
            url: url.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_interval: Duration::from_secs(min_refresh_secs),
        }
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Option<Result<DecodingKey, AuthError>> {
        let keys = self.keys.read();
        let e = keys.get(kid)?;
        if let Some(a) = e.alg
            && a != alg
        {
            return Some(Err(AuthError::InvalidToken(
                "token alg does not match the key's alg".into(),
            )));
        }
        Some(Ok(e.key.clone()))
    }

    pub async fn key_for(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Someone else may have refreshed while we waited for the lock.
            if let Some(found) = self.lookup(kid, alg) {
                return found;
            }
            let due = last.is_none_or(|t| t.elapsed() >= self.min_interval);
            if due {
                *last = Some(Instant::now());
                self.fetch().await?;
            }
        }
        self.lookup(kid, alg)
            .unwrap_or_else(|| Err(AuthError::InvalidToken(format!("unknown key id {kid}"))))
    }

    /// Fetches the key set now (start-up and the periodic refresh).
    pub async fn refresh(&self) -> Result<(), AuthError> {
        *self.last_fetch.lock().await = Some(Instant::now());
        self.fetch().await
    }

    async fn fetch(&self) -> Result<(), AuthError> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::Unavailable(format!("JWKS fetch failed: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("JWKS is not valid JSON: {e}")))?;
        let mut map = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    map.insert(kid, Entry { key, alg });
                }
                Err(e) => tracing::warn!(kid, error = %e, "skipping unusable JWK"),
            }
        }
        tracing::info!(keys = map.len(), "JWKS refreshed");
        *self.keys.write() = map;
        Ok(())
    }
}
