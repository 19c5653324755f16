//! JWT verification (HS256, RS256, ES256; JWKS by `kid`) and development-token minting.
//! The header's `alg` picks the key; a key only verifies its own algorithm family, so
//! `alg: none` and an HS256 token "signed" with the RSA public key are refused.
//! A verified token is cached (bounded, `auth.jwt_cache_entries`) until it expires, so a
//! client that sends the same token with every request pays for one verification; a cached
//! token from a JWKS key is accepted only while that key is still published.

use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::cache::TtlLru;
use super::jwks::Jwks;
use crate::config::{AuthConfig, Secret};

#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("auth.{key}: {reason}")]
    Key { key: &'static str, reason: String },
    #[error("cannot read or write {path}")]
    DevSecret {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Claims {
    pub fn roles(&self) -> Vec<String> {
        let mut r = self.roles.clone().unwrap_or_default();
        if let Some(one) = &self.role {
            r.push(one.clone());
        }
        r
    }

    pub fn scopes(&self) -> Vec<String> {
        self.scope
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

pub struct JwtVerifier {
    hs: Option<DecodingKey>,
    rs: Option<DecodingKey>,
    es: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    /// Tokens that passed `verify_uncached`, until they expire.
    verified: TtlLru<Verified>,
}

/// A cached verification: the claims, and the JWKS key (`kid`, `alg`) that verified them.
#[derive(Clone)]
struct Verified {
    claims: Claims,
    jwks_key: Option<(String, Algorithm)>,
}

/// Longest a verified token stays cached, whatever its expiry (tokens rarely live longer).
const MAX_CACHED: Duration = Duration::from_secs(24 * 3600);

/// How long a token that verified at `now` (unix seconds) may stay cached: until `exp` plus
/// the leeway, the last second `verify` would still accept it. `nbf` needs no bound: a token
/// that verified is already valid, and stays so until it expires. `None`: not at all.
fn cache_for(exp: i64, leeway: u64, now: i64) -> Option<Duration> {
    let left = exp.saturating_add(leeway.min(i64::MAX as u64) as i64) - now;
    (left > 0).then(|| Duration::from_secs(left as u64))
}

/// A PEM given inline or as a path to a file.
fn read_pem(value: &str, key: &'static str) -> Result<Vec<u8>, JwtConfigError> {
    if value.trim_start().starts_with("-----BEGIN") {
        Ok(value.as_bytes().to_vec())
    } else {
        std::fs::read(value).map_err(|e| JwtConfigError::Key {
            key,
            reason: format!("cannot read {value}: {e}"),
        })
    }
}

/// The HS256 secret: configured, or (when no key of any kind is configured) a random
/// development secret generated once into `auth.dev_secret_file`.
pub fn hs256_secret(cfg: &AuthConfig) -> Result<Option<Secret>, JwtConfigError> {
    if let Some(s) = &cfg.hs256_secret {
        return Ok(Some(s.clone()));
    }
    if cfg.rs256_public_key.is_some() || cfg.es256_public_key.is_some() || cfg.jwks_url.is_some() {
        return Ok(None);
    }
    let path: &Path = &cfg.dev_secret_file;
    let io = |source| JwtConfigError::DevSecret {
        path: path.display().to_string(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim();
        if !t.is_empty() {
            return Ok(Some(Secret::new(t)));
        }
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(path, &secret).map_err(io)?;
    tracing::warn!(path = %path.display(), "no auth key configured: generated a development HS256 secret");
    Ok(Some(Secret::new(secret)))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    match opts.open(path) {
        Ok(mut f) => f.write_all(text.as_bytes()),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl JwtVerifier {
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, JwtConfigError> {
        let hs = hs256_secret(cfg)?.map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let rs = match &cfg.rs256_public_key {
            Some(v) => Some(
                DecodingKey::from_rsa_pem(&read_pem(v, "rs256_public_key")?).map_err(|e| {
                    JwtConfigError::Key {
                        key: "rs256_public_key",
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        let es = match &cfg.es256_public_key {
            Some(v) => Some(
                DecodingKey::from_ec_pem(&read_pem(v, "es256_public_key")?).map_err(|e| {
                    JwtConfigError::Key {
                        key: "es256_public_key",
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        let jwks = cfg
            .jwks_url
            .as_ref()
            .map(|u| Jwks::new(u, cfg.jwks_min_refresh_secs));
        Ok(Self {
            hs,
            rs,
            es,
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
            verified: TtlLru::new(
                cfg.jwt_cache_entries,
                if cfg.jwt_cache_entries == 0 {
                    Duration::ZERO
                } else {
                    MAX_CACHED
                },
            ),
        })
    }

    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_ref()
    }

    /// The claims of a valid token: from the cache when this token verified before and is
    /// still valid (its JWKS key still published), else verified in full.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(v) = self.verified.get(token) {
            let key_kept = match (&v.jwks_key, &self.jwks) {
                (Some((kid, alg)), Some(jwks)) => jwks.has_key(kid, *alg),
                _ => true,
            };
            if key_kept {
                return Ok(v.claims);
            }
            self.verified.remove(token);
        }
        let stamp = self.verified.stamp();
        let (claims, jwks_key) = self.verify_uncached(token).await?;
        let now = chrono::Utc::now().timestamp();
        if let Some(left) = cache_for(claims.exp, self.leeway, now) {
            let v = Verified {
                claims: claims.clone(),
                jwks_key,
            };
            self.verified
                .insert_until(stamp, token.to_string(), v, Instant::now() + left);
        }
        Ok(claims)
    }

    /// Checks the signature and the claims; also says which JWKS key verified the token.
    async fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(Claims, Option<(String, Algorithm)>), AuthError> {
        let mut jwks_key = None;
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::InvalidToken(format!("malformed token or unsupported algorithm: {e}"))
        })?;
        let key: DecodingKey = match header.alg {
            Algorithm::HS256 => self
                .hs
                .clone()
                .ok_or_else(|| AuthError::InvalidToken("HS256 tokens are not accepted".into()))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let static_key = if header.alg == Algorithm::RS256 {
                    &self.rs
                } else {
                    &self.es
                };
                match (&header.kid, &self.jwks, static_key) {
                    (Some(kid), Some(jwks), _) => {
                        jwks_key = Some((kid.clone(), header.alg));
                        jwks.key_for(kid, header.alg).await?
                    }
                    (_, _, Some(k)) => k.clone(),
                    (None, Some(_), None) => {
                        return Err(AuthError::InvalidToken("token has no kid".into()));
                    }
                    _ => {
                        return Err(AuthError::InvalidToken(format!(
                            "{:?} tokens are not accepted",
                            header.alg
                        )));
                    }
                }
            }
            other => {
                return Err(AuthError::InvalidToken(format!(
                    "algorithm {other:?} is not allowed"
                )));
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
            .map_err(decode_error)?
            .claims;
        check_stored_claims(&claims)?;
        Ok((claims, jwks_key))
    }

    /// What a token must satisfy besides its signature. `iss` and `aud` are required, not
    /// just compared, when an issuer or audience is configured: jsonwebtoken only compares
    /// the claims that are present, so a token without them would otherwise pass.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        v
    }
}

/// The answer for a token jsonwebtoken refused; claim problems name the claim.
fn decode_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let claim = |claim: &str, reason: &str| AuthError::Claim {
        claim: claim.to_string(),
        reason: reason.to_string(),
    };
    match e.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => claim("nbf", "token not valid yet"),
        K::InvalidIssuer => claim("iss", "wrong issuer"),
        K::InvalidAudience => claim("aud", "wrong audience"),
        K::InvalidSubject => claim("sub", "wrong subject"),
        K::MissingRequiredClaim(c) => claim(c, "missing"),
        K::InvalidClaimFormat(c) => claim(c, "wrong type"),
        K::InvalidSignature => AuthError::InvalidToken("bad signature".into()),
        K::InvalidAlgorithm => AuthError::InvalidToken("algorithm does not match the key".into()),
        _ => AuthError::InvalidToken(e.to_string()),
    }
}

/// Longest `sub` accepted, in bytes: it becomes the event key and the `principal` header.
pub const MAX_SUBJECT_BYTES: usize = 255;
/// Longest `email` accepted, in bytes (64 for the local part, @, 255 for the domain).
pub const MAX_EMAIL_BYTES: usize = 320;

/// Claims that become stored strings (`sub`: event keys, the `principal` header, stream and
/// read-model rows; `email`: event payloads) must be storable by every consumer on both
/// backends: PostgreSQL `TEXT` cannot hold a NUL character, and their length is bounded.
fn check_stored_claims(c: &Claims) -> Result<(), AuthError> {
    check_stored("sub", &c.sub, MAX_SUBJECT_BYTES)?;
    if c.sub.is_empty() {
        return Err(AuthError::Claim {
            claim: "sub".into(),
            reason: "empty".into(),
        });
    }
    if let Some(email) = &c.email {
        check_stored("email", email, MAX_EMAIL_BYTES)?;
    }
    Ok(())
}

fn check_stored(claim: &str, value: &str, max_bytes: usize) -> Result<(), AuthError> {
    let reason = if value.contains('\0') {
        "contains a NUL character".to_string()
    } else if value.len() > max_bytes {
        format!("longer than {max_bytes} bytes")
    } else {
        return Ok(());
    };
    Err(AuthError::Claim {
        claim: claim.to_string(),
        reason,
    })
}

/// Parameters of a minted token.
pub struct MintRequest<'a> {
    pub sub: &'a str,
    pub ttl_secs: u64,
    pub roles: Vec<String>,
    pub scope: Option<String>,
    pub email: Option<String>,
}

/// Mints an HS256 token with the configured (or development) secret.
pub fn mint(cfg: &AuthConfig, req: MintRequest<'_>) -> Result<String, JwtConfigError> {
    let secret = hs256_secret(cfg)?.ok_or(JwtConfigError::Key {
        key: "hs256_secret",
        reason: "no HS256 secret is configured, so tokens cannot be minted".into(),
    })?;
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: req.sub.to_string(),
        exp: now + req.ttl_secs as i64,
        iat: Some(now),
        nbf: Some(now),
        iss: cfg.issuer.clone(),
        aud: cfg.audience.clone().map(serde_json::Value::String),
        role: None,
        roles: if req.roles.is_empty() {
            None
        } else {
            Some(req.roles)
        },
        scope: req.scope,
        email: req.email,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| JwtConfigError::Key {
        key: "hs256_secret",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(entries: usize, leeway: u64) -> (JwtVerifier, AuthConfig) {
        let cfg = AuthConfig {
            hs256_secret: Some(Secret::new("unit-test-secret-unit-test-secret")),
            leeway_secs: leeway,
            jwt_cache_entries: entries,
            ..AuthConfig::default()
        };
        (JwtVerifier::from_config(&cfg).expect("verifier"), cfg)
    }

    fn token(cfg: &AuthConfig, sub: &str, exp: i64) -> String {
        let claims = serde_json::json!({ "sub": sub, "exp": exp });
        let secret = cfg.hs256_secret.as_ref().expect("secret");
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .expect("sign")
    }

    #[test]
    fn a_token_is_cached_until_its_expiry_plus_leeway() {
        assert_eq!(cache_for(1_000, 30, 900), Some(Duration::from_secs(130)));
        assert_eq!(cache_for(1_000, 0, 1_000), None);
        assert_eq!(cache_for(1_000, 30, 1_031), None);
        assert_eq!(
            cache_for(i64::MAX, u64::MAX, 0),
            Some(Duration::from_secs(i64::MAX as u64))
        );
    }

    #[tokio::test]
    async fn a_cached_token_is_refused_once_it_expires() {
        let (v, cfg) = verifier(16, 0);
        let now = chrono::Utc::now().timestamp();
        let t = token(&cfg, "alice", now + 2);
        assert_eq!(v.verify(&t).await.expect("valid").sub, "alice");
        assert_eq!(v.verified.len(), 1, "the verified token is cached");
        assert_eq!(v.verify(&t).await.expect("cached").sub, "alice");
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert!(matches!(v.verify(&t).await, Err(AuthError::Expired)));
    }

    #[tokio::test]
    async fn refused_tokens_are_not_cached_and_the_bound_holds() {
        let (v, cfg) = verifier(2, 0);
        let now = chrono::Utc::now().timestamp();
        let mut forged = token(&cfg, "mallory", now + 600);
        forged.push('x');
        assert!(v.verify(&forged).await.is_err());
        assert!(
            v.verify(&forged).await.is_err(),
            "a refused token stays refused"
        );
        assert_eq!(v.verified.len(), 0);
        for who in ["a", "b", "c"] {
            v.verify(&token(&cfg, who, now + 600)).await.expect("valid");
        }
        assert_eq!(v.verified.len(), 2, "at most auth.jwt_cache_entries tokens");
        let (off, cfg) = verifier(0, 0);
        off.verify(&token(&cfg, "a", now + 600))
            .await
            .expect("valid");
        assert_eq!(off.verified.len(), 0, "0 turns the cache off");
    }
}
