//! API keys for services: `sk_<id>_<secret>`, shown once at creation; only the SHA-256 of
//! the whole key is stored. Lookups are cached in two bounded LRU caches: valid keys for
//! `auth.api_key_cache_secs`, unknown or revoked ones for `auth.api_key_negative_cache_secs`
//! (so repeating a bad key costs no store query). A key that is not of the generated shape is
//! refused without a query at all. A revocation drops the key from the cache of the instance
//! that made it at once, from every other instance at once on PostgreSQL (NOTIFY on
//! `substrate_apikeys`), and in every case within `auth.api_key_cache_secs`.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::AuthError;
use super::cache::TtlLru;
use crate::config::AuthConfig;
use crate::store::{Store, StoreError, Tx, notify, now_micros};
use crate::{on_read, on_tx};

/// PostgreSQL channel on which key changes are announced: `revoked:<hash>` or `created:<hash>`.
pub const PG_CHANNEL: &str = "substrate_apikeys";

/// Hex characters of the id and the secret of a generated key.
const ID_HEX: usize = 8;
const SECRET_HEX: usize = 48;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The two caches, shared with the NOTIFY listener.
struct Caches {
    valid: TtlLru<ApiKeyRecord>,
    unknown: TtlLru<()>,
}

impl Caches {
    /// Applies a change announced by any instance (including this one).
    fn apply(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("revoked", h)) => self.valid.remove(h),
            Some(("created", h)) => self.unknown.remove(h),
            _ => tracing::debug!(payload, "ignoring an unknown API-key notification"),
        }
    }

    fn clear(&self) {
        self.valid.clear();
        self.unknown.clear();
    }
}

pub struct ApiKeys {
    store: Store,
    caches: Arc<Caches>,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` has the shape of a generated key: `sk_`, 8 hex digits, `_`, 48 hex digits.
fn well_formed(key: &str) -> bool {
    let Some((id, secret)) = key.strip_prefix("sk_").and_then(|r| r.split_once('_')) else {
        return false;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    hex(id, ID_HEX) && hex(secret, SECRET_HEX)
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    scopes: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl From<KeyRow> for ApiKeyRecord {
    fn from(r: KeyRow) -> Self {
        ApiKeyRecord {
            id: r.id,
            name: r.name,
            scopes: r.scopes.split_whitespace().map(str::to_string).collect(),
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl ApiKeys {
    /// Keys on `store`, cached as `cfg` says. Call `listen` in a long-running process so
    /// other instances' revocations apply at once.
    pub fn new(store: Store, cfg: &AuthConfig) -> Self {
        Self {
            store,
            caches: Arc::new(Caches {
                valid: TtlLru::new(
                    cfg.api_key_cache_entries,
                    Duration::from_secs(cfg.api_key_cache_secs),
                ),
                unknown: TtlLru::new(
                    cfg.api_key_negative_cache_entries,
                    Duration::from_secs(cfg.api_key_negative_cache_secs),
                ),
            }),
        }
    }

    /// On PostgreSQL, applies key changes announced by every instance as they commit; after
    /// a lost connection (notifications may have been missed) both caches are emptied.
    pub fn listen(&self) {
        if let Some(pool) = self.store.pg_pool() {
            let on_connect = self.caches.clone();
            let on_payload = self.caches.clone();
            notify::listen_pg(
                pool.clone(),
                PG_CHANNEL,
                move || on_connect.clear(),
                move |p| on_payload.apply(p),
            );
        }
    }

    /// Creates a key and returns it (the only time it is visible) with its record.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<(String, ApiKeyRecord), StoreError> {
        let id = hex::encode(rand::random::<[u8; ID_HEX / 2]>());
        let secret = hex::encode(rand::random::<[u8; SECRET_HEX / 2]>());
        let key = format!("sk_{id}_{secret}");
        let rec = self.insert(&key, &id, name, scopes).await?;
        Ok((key, rec))
    }

    async fn insert(
        &self,
        key: &str,
        id: &str,
        name: &str,
        scopes: &[String],
    ) -> Result<ApiKeyRecord, StoreError> {
        let now = now_micros();
        let h = hash(key);
        let mut tx = self.store.begin().await?;
        on_tx!(tx, c => {
            sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(name)
                .bind(&h)
                .bind(scopes.join(" "))
                .bind(now)
                .execute(c)
                .await?;
        });
        self.announce(&mut tx, "created", &h).await?;
        tx.commit().await?;
        // Works at once here, whatever was remembered about this key before.
        self.caches.unknown.remove(&h);
        Ok(ApiKeyRecord {
            id: id.to_string(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at: now,
            revoked_at: None,
        })
    }

    async fn announce(&self, tx: &mut Tx, what: &str, h: &str) -> Result<(), StoreError> {
        notify::notify(tx, PG_CHANNEL, &format!("{what}:{h}")).await
    }

    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = on_read!(self.store, p => {
            sqlx::query_as("SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY name")
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    /// Revokes the key named `name`; returns whether one was active.
    pub async fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let hashes: Vec<String> = on_tx!(tx, c => {
            sqlx::query_scalar("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL RETURNING key_hash")
                .bind(now_micros())
                .bind(name)
                .fetch_all(c)
                .await?
        });
        for h in &hashes {
            self.announce(&mut tx, "revoked", h).await?;
        }
        tx.commit().await?;
        for h in &hashes {
            self.caches.valid.remove(h);
        }
        Ok(!hashes.is_empty())
    }

    pub async fn verify(&self, key: &str) -> Result<ApiKeyRecord, AuthError> {
        if !well_formed(key) {
            return Err(AuthError::BadApiKey);
        }
        let h = hash(key);
        if let Some(rec) = self.caches.valid.get(&h) {
            return Ok(rec);
        }
        if self.caches.unknown.get(&h).is_some() {
            return Err(AuthError::BadApiKey);
        }
        let stamps = (self.caches.valid.stamp(), self.caches.unknown.stamp());
        let found: Option<KeyRow> = on_read!(self.store, p => {
            sqlx::query_as("SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE key_hash = $1")
                .bind(&h)
                .fetch_optional(p)
                .await
                .map_err(|e| AuthError::Unavailable(e.to_string()))?
        });
        match found
            .map(ApiKeyRecord::from)
            .filter(|r| r.revoked_at.is_none())
        {
            Some(rec) => {
                self.caches.valid.insert_since(stamps.0, h, rec.clone());
                Ok(rec)
            }
            None => {
                self.caches.unknown.insert_since(stamps.1, h, ());
                Err(AuthError::BadApiKey)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn keys(tweak: impl FnOnce(&mut AuthConfig)) -> (ApiKeys, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig {
            url: crate::config::Secret::new(format!("sqlite://{}/k.db", dir.path().display())),
            ..Default::default()
        };
        let store = Store::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let mut auth = AuthConfig {
            api_key_cache_secs: 3600,
            api_key_negative_cache_secs: 3600,
            ..AuthConfig::default()
        };
        tweak(&mut auth);
        (ApiKeys::new(store.clone(), &auth), store, dir)
    }

    fn random_key() -> String {
        format!(
            "sk_{}_{}",
            hex::encode(rand::random::<[u8; 4]>()),
            hex::encode(rand::random::<[u8; 24]>())
        )
    }

    async fn drop_table(store: &Store) {
        crate::on_write!(store, p => {
            sqlx::query("DROP TABLE api_keys").execute(p).await.unwrap();
        });
    }

    #[test]
    fn only_generated_shapes_are_looked_up() {
        assert!(well_formed(&random_key()));
        assert!(!well_formed("sk_deadbeef_0000"));
        assert!(!well_formed(&random_key().to_uppercase()));
        assert!(!well_formed(&format!("{}0", random_key())));
        assert!(!well_formed("sk__"));
        assert!(!well_formed("pk_deadbeef_"));
    }

    #[tokio::test]
    async fn a_repeated_unknown_key_costs_no_query() {
        let (keys, store, _dir) = keys(|_| {}).await;
        let bad = random_key();
        assert!(matches!(keys.verify(&bad).await, Err(AuthError::BadApiKey)));
        // Without the table every query fails: the remembered key does not reach it.
        drop_table(&store).await;
        assert!(matches!(keys.verify(&bad).await, Err(AuthError::BadApiKey)));
        assert!(matches!(
            keys.verify(&random_key()).await,
            Err(AuthError::Unavailable(_))
        ));
        // Malformed keys never reach the store either.
        assert!(matches!(
            keys.verify("sk_deadbeef_0000").await,
            Err(AuthError::BadApiKey)
        ));
    }

    #[tokio::test]
    async fn a_key_created_after_it_was_refused_works_at_once() {
        let (keys, _store, _dir) = keys(|_| {}).await;
        let key = random_key();
        let id = &key[3..3 + ID_HEX];
        assert!(matches!(keys.verify(&key).await, Err(AuthError::BadApiKey)));
        keys.insert(&key, id, "late", &[]).await.unwrap();
        assert_eq!(keys.verify(&key).await.unwrap().name, "late");
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_at_once_despite_the_cache() {
        let (keys, _store, _dir) = keys(|_| {}).await;
        let (key, _) = keys.create("svc", &[]).await.unwrap();
        assert!(keys.verify(&key).await.is_ok());
        assert!(keys.revoke("svc").await.unwrap());
        assert!(matches!(keys.verify(&key).await, Err(AuthError::BadApiKey)));
        assert!(!keys.revoke("svc").await.unwrap());
    }

    #[tokio::test]
    async fn valid_keys_are_evicted_least_recently_used_first() {
        let (keys, store, _dir) = keys(|c| c.api_key_cache_entries = 2).await;
        let (a, _) = keys.create("a", &[]).await.unwrap();
        let (b, _) = keys.create("b", &[]).await.unwrap();
        let (c, _) = keys.create("c", &[]).await.unwrap();
        keys.verify(&a).await.unwrap();
        keys.verify(&b).await.unwrap();
        keys.verify(&a).await.unwrap(); // a is now the most recently used
        keys.verify(&c).await.unwrap(); // evicts b
        assert_eq!(keys.caches.valid.len(), 2);
        drop_table(&store).await;
        assert_eq!(keys.verify(&a).await.unwrap().name, "a");
        assert_eq!(keys.verify(&c).await.unwrap().name, "c");
        assert!(matches!(
            keys.verify(&b).await,
            Err(AuthError::Unavailable(_))
        ));
    }

    #[test]
    fn entries_expire_and_a_racing_lookup_does_not_undo_an_invalidation() {
        let c: TtlLru<u8> = TtlLru::new(4, Duration::from_secs(3600));
        let stamp = c.stamp();
        c.remove("k"); // an invalidation while a lookup was in flight
        c.insert_since(stamp, "k".into(), 1);
        assert_eq!(c.get("k"), None);
        c.insert_since(c.stamp(), "k".into(), 1);
        assert_eq!(c.get("k"), Some(1));
        let zero: TtlLru<u8> = TtlLru::new(4, Duration::ZERO);
        zero.insert_since(zero.stamp(), "k".into(), 1);
        assert_eq!(zero.get("k"), None);
    }

    #[test]
    fn notifications_invalidate_the_right_cache() {
        let c = Caches {
            valid: TtlLru::new(4, Duration::from_secs(3600)),
            unknown: TtlLru::new(4, Duration::from_secs(3600)),
        };
        let rec = ApiKeyRecord {
            id: "i".into(),
            name: "n".into(),
            scopes: vec![],
            created_at: 0,
            revoked_at: None,
        };
        c.valid.insert_since(0, "h1".into(), rec);
        c.unknown.insert_since(0, "h2".into(), ());
        c.apply("revoked:h1");
        c.apply("created:h2");
        c.apply("garbage");
        assert!(c.valid.get("h1").is_none());
        assert!(c.unknown.get("h2").is_none());
    }
}
