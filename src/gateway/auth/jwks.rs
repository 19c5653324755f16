//! A JWKS cache: keys by `kid`, fetched from the configured URL. An unknown `kid` triggers
//! a refresh, which picks up rotated keys: at most once per `jwks_min_refresh_secs` after a
//! good fetch, but after a failed one with a backoff (0.5 s, doubling up to that interval),
//! so a rotation that follows an outage of the key server is seen within seconds. A failed
//! fetch, or one that yields no usable key, keeps the last good key set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;

use super::AuthError;

/// The first retry after a failed fetch; each further failure doubles it, up to the
/// configured minimum interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

struct Entry {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

/// When the key set was last fetched, and how many fetches have failed since the last good one.
#[derive(Default)]
struct FetchState {
    last: Option<Instant>,
    failures: u32,
}

impl FetchState {
    /// How long after the last fetch the next one may start.
    fn wait(&self, min_interval: Duration) -> Duration {
        match self.failures {
            0 => min_interval,
            n => FIRST_RETRY
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(min_interval),
        }
    }

    fn due(&self, min_interval: Duration, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.wait(min_interval))
    }
}

pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, Entry>>,
    state: tokio::sync::Mutex<FetchState>,
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
            state: tokio::sync::Mutex::new(FetchState::default()),
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

    /// Whether the current key set still has `kid`, usable for `alg` (a cached token
    /// verified with a key that has since been withdrawn is verified again, and refused).
    pub fn has_key(&self, kid: &str, alg: Algorithm) -> bool {
        matches!(self.lookup(kid, alg), Some(Ok(_)))
    }

    pub async fn key_for(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        if let Some(found) = self.lookup(kid, alg) {
            return found;
        }
        {
            let mut state = self.state.lock().await;
            // Someone else may have refreshed while we waited for the lock.
            if let Some(found) = self.lookup(kid, alg) {
                return found;
            }
            if state.due(self.min_interval, Instant::now()) {
                self.fetch_with(&mut state).await?;
            } else if state.failures > 0 {
                // The key server is failing and the retry is not due yet: the kid may well be
                // valid, so this is not the caller's fault.
                return Err(AuthError::Unavailable(
                    "the JWKS endpoint is failing; retrying".into(),
                ));
            }
        }
        self.lookup(kid, alg)
            .unwrap_or_else(|| Err(AuthError::InvalidToken(format!("unknown key id {kid}"))))
    }

    /// Fetches the key set now (start-up and the periodic refresh).
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let mut state = self.state.lock().await;
        self.fetch_with(&mut state).await
    }

    /// Fetches, and records the attempt and its outcome for the backoff.
    async fn fetch_with(&self, state: &mut FetchState) -> Result<(), AuthError> {
        state.last = Some(Instant::now());
        match self.fetch().await {
            Ok(()) => {
                state.failures = 0;
                Ok(())
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                tracing::warn!(error = %e, failures = state.failures, retry_in = ?state.wait(self.min_interval), "JWKS fetch failed; keeping the last good key set");
                Err(e)
            }
        }
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
        let map = usable_keys(&set);
        if map.is_empty() {
            // An empty or broken set would lock every caller out; a rotation never does that.
            return Err(AuthError::Unavailable(format!(
                "JWKS has no usable key ({} published)",
                set.keys.len()
            )));
        }
        tracing::info!(keys = map.len(), "JWKS refreshed");
        *self.keys.write() = map;
        Ok(())
    }
}

/// The keys of `set` that have a `kid` and can verify.
fn usable_keys(set: &JwkSet) -> HashMap<String, Entry> {
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
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_after_failures_up_to_the_interval() {
        let min = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut s = FetchState::default();
        assert!(s.due(min, t0));
        s.last = Some(t0);
        // After a good fetch: the minimum interval.
        assert!(!s.due(min, t0 + Duration::from_secs(29)));
        assert!(s.due(min, t0 + min));
        // After failures: 0.5 s, 1 s, 2 s, … capped at the interval.
        let waits: Vec<Duration> = (1..=8)
            .map(|n| {
                s.failures = n;
                s.wait(min)
            })
            .collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[2], Duration::from_secs(2));
        assert_eq!(waits[7], min);
        s.failures = 1;
        assert!(s.due(min, t0 + Duration::from_millis(500)));
        s.failures = u32::MAX;
        assert_eq!(s.wait(min), min);
    }
}
