//! Webhook targets: where an alert's notifications go. A target is a URL, a Standard Webhooks
//! secret (`whsec_` + base64), a rate limit, a timeout and optional extra headers. Targets come
//! from the configuration (`alerts.notify.targets`, shared by every org) and from the admin API
//! (per org, in `alert_targets`); an org's own target shadows a configured one of the same
//! name. Everything a caller gives is validated here, once, for the API and the configuration.

use std::collections::BTreeMap;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::NotifyConfig;
use crate::app::AppContext;
use crate::store::{Store, StoreError, now_micros};
use crate::{on_read, on_write};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret.
const GENERATED_SECRET_BYTES: usize = 32;
/// Bounds on a secret's key (bytes after base64 decoding).
const SECRET_MIN_BYTES: usize = 16;
const SECRET_MAX_BYTES: usize = 128;

/// Why a target cannot be stored or used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A field is not acceptable; names the field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("target {0} exists already")]
    Exists(String),
    #[error("no target {0}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TargetError {
    TargetError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// One target as the sender uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub url: String,
    /// `whsec_…`.
    pub secret: String,
    pub rate_per_minute: f64,
    pub burst: u32,
    pub timeout_ms: u64,
    pub headers: BTreeMap<String, String>,
    /// "api" (the org's own) or "config".
    pub source: &'static str,
}

impl Target {
    /// The HMAC key: the secret's base64 part, decoded.
    pub fn key(&self) -> Result<Vec<u8>, TargetError> {
        secret_key(&self.secret)
    }

    /// The target as the API shows it: never the secret.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "url": self.url,
            "rate_per_minute": self.rate_per_minute,
            "burst": self.burst,
            "timeout_ms": self.timeout_ms,
            "headers": self.headers,
            "source": self.source,
        })
    }
}

/// What a caller gives for a target (the API's body; the configuration maps onto it).
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// 1–64 of A–Z a–z 0–9 _ . - (POST; on PUT it must match the path or be left out).
    #[serde(default)]
    pub name: Option<String>,
    /// http or https, without user info.
    pub url: String,
    /// `whsec_` + base64 of 16–128 bytes; generated when left out (create only).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub rate_per_minute: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// Whether `s` is a usable target name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A new random secret.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, TargetError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| invalid("secret", format!("must start with {SECRET_PREFIX}")))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| invalid("secret", format!("not base64 after {SECRET_PREFIX}: {e}")))?;
    if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
        return Err(invalid(
            "secret",
            format!("the key must be {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} bytes"),
        ));
    }
    Ok(key)
}

/// An http(s) URL with a host and no user info (credentials belong in the secret or headers,
/// not in a URL that ends up in logs).
pub fn validate_url(s: &str) -> Result<(), TargetError> {
    let u = url::Url::parse(s).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid("url", "the scheme must be http or https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid("url", "user info is not allowed in the URL"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "the URL needs a host"));
    }
    Ok(())
}

/// Header names the sender sets itself.
const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

fn validate_headers(h: &BTreeMap<String, String>) -> Result<(), TargetError> {
    if h.len() > 32 {
        return Err(invalid("headers", "at most 32 headers"));
    }
    for (k, v) in h {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid("headers", format!("{k:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(invalid("headers", format!("{k} is set by the sender")));
        }
        reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| invalid("headers", format!("the value of {k} is not a header value")))?;
    }
    Ok(())
}

/// Checks `spec` and fills in defaults; `secret` is the secret to keep when none is given.
pub fn build(
    cfg: &NotifyConfig,
    name: &str,
    spec: &TargetSpec,
    secret: Option<String>,
    source: &'static str,
) -> Result<Target, TargetError> {
    if !valid_name(name) {
        return Err(invalid("name", "1-64 of A-Z a-z 0-9 _ . -"));
    }
    validate_url(&spec.url)?;
    let secret = match spec.secret.clone().or(secret) {
        Some(s) => s,
        None => generate_secret(),
    };
    secret_key(&secret)?;
    let rate = spec.rate_per_minute.unwrap_or(cfg.default_rate_per_minute);
    if !rate.is_finite() || rate <= 0.0 || rate > 60_000.0 {
        return Err(invalid("rate_per_minute", "must be > 0 and at most 60000"));
    }
    let burst = spec.burst.unwrap_or(cfg.default_burst);
    if !(1..=10_000).contains(&burst) {
        return Err(invalid("burst", "must be 1-10000"));
    }
    let timeout_ms = spec.timeout_ms.unwrap_or(cfg.default_timeout_ms);
    if !(100..=120_000).contains(&timeout_ms) {
        return Err(invalid("timeout_ms", "must be 100-120000"));
    }
    let headers = spec.headers.clone().unwrap_or_default();
    validate_headers(&headers)?;
    Ok(Target {
        name: name.to_string(),
        url: spec.url.clone(),
        secret,
        rate_per_minute: rate,
        burst,
        timeout_ms,
        headers,
        source,
    })
}

/// The configured targets, validated (a bad one stops the role at start).
pub fn from_config(cfg: &NotifyConfig) -> Result<BTreeMap<String, Target>, TargetError> {
    let mut out = BTreeMap::new();
    for (name, t) in &cfg.targets {
        let spec = TargetSpec {
            name: Some(name.clone()),
            url: t.url.clone(),
            secret: Some(t.secret.expose().to_string()),
            rate_per_minute: t.rate_per_minute,
            burst: t.burst,
            timeout_ms: t.timeout_ms,
            headers: Some(t.headers.clone()),
        };
        let target = build(cfg, name, &spec, None, "config").map_err(|e| match e {
            TargetError::Invalid { field, reason } => TargetError::Invalid {
                field,
                reason: format!("alerts.notify.targets.{name}: {reason}"),
            },
            other => other,
        })?;
        out.insert(name.clone(), target);
    }
    Ok(out)
}

type Row = (String, String, String, f64, i64, i64, String);

fn from_row(r: Row) -> Target {
    let (name, url, secret, rate_per_minute, burst, timeout_ms, headers) = r;
    Target {
        name,
        url,
        secret,
        rate_per_minute,
        burst: u32::try_from(burst).unwrap_or(1),
        timeout_ms: u64::try_from(timeout_ms).unwrap_or(1_000),
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        source: "api",
    }
}

const COLUMNS: &str = "name, url, secret, rate_per_minute, burst, timeout_ms, headers";

/// The org's own target `name`.
pub async fn get(store: &Store, org: &str, name: &str) -> Result<Option<Target>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM alert_targets WHERE org = $1 AND name = $2");
    let row: Option<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org).bind(name).fetch_optional(p).await?
    });
    Ok(row.map(from_row))
}

/// The org's own targets, by name.
pub async fn list(store: &Store, org: &str) -> Result<Vec<Target>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM alert_targets WHERE org = $1 ORDER BY name");
    let rows: Vec<Row> = on_read!(store, p => {
        sqlx::query_as(&sql).bind(org).fetch_all(p).await?
    });
    Ok(rows.into_iter().map(from_row).collect())
}

/// Stores a new target of `org`; `Exists` when the name is taken.
pub async fn insert(store: &Store, org: &str, t: &Target) -> Result<(), TargetError> {
    let now = now_micros();
    let headers = serde_json::to_string(&t.headers).unwrap_or_else(|_| "{}".into());
    let r = on_write!(store, p => {
        sqlx::query(
            "INSERT INTO alert_targets (org, name, url, secret, rate_per_minute, burst, timeout_ms, headers, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(org).bind(&t.name).bind(&t.url).bind(&t.secret).bind(t.rate_per_minute)
        .bind(i64::from(t.burst)).bind(i64::try_from(t.timeout_ms).unwrap_or(i64::MAX)).bind(headers).bind(now)
        .execute(p)
        .await
        .map(|_| ())
    });
    match r.map_err(StoreError::from) {
        Ok(_) => Ok(()),
        Err(e) if e.is_unique_violation() => Err(TargetError::Exists(t.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the org's target `t.name`; `NotFound` when there is none.
pub async fn update(store: &Store, org: &str, t: &Target) -> Result<(), TargetError> {
    let headers = serde_json::to_string(&t.headers).unwrap_or_else(|_| "{}".into());
    let n = on_write!(store, p => {
        sqlx::query(
            "UPDATE alert_targets SET url = $3, secret = $4, rate_per_minute = $5, burst = $6, \
             timeout_ms = $7, headers = $8, updated_at = $9 WHERE org = $1 AND name = $2",
        )
        .bind(org).bind(&t.name).bind(&t.url).bind(&t.secret).bind(t.rate_per_minute)
        .bind(i64::from(t.burst)).bind(i64::try_from(t.timeout_ms).unwrap_or(i64::MAX)).bind(headers)
        .bind(now_micros())
        .execute(p)
        .await
        .map_err(StoreError::from)?
        .rows_affected()
    });
    if n == 0 {
        return Err(TargetError::NotFound(t.name.clone()));
    }
    Ok(())
}

/// Removes the org's target `name`; false when there was none.
pub async fn delete(store: &Store, org: &str, name: &str) -> Result<bool, StoreError> {
    let n = on_write!(store, p => {
        sqlx::query("DELETE FROM alert_targets WHERE org = $1 AND name = $2")
            .bind(org)
            .bind(name)
            .execute(p)
            .await?
            .rows_affected()
    });
    Ok(n > 0)
}

/// The target `name` as `org` sees it: its own, else the configured one.
pub async fn resolve(
    ctx: &AppContext,
    org: &str,
    name: &str,
) -> Result<Option<Target>, StoreError> {
    if let Some(t) = get(&ctx.store, org, name).await? {
        return Ok(Some(t));
    }
    Ok(configured(&ctx.config.alerts.notify, name))
}

/// A configured target, if it is valid (`from_config` reports invalid ones at start).
pub fn configured(cfg: &NotifyConfig, name: &str) -> Option<Target> {
    from_config(cfg).ok()?.remove(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> TargetSpec {
        TargetSpec {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        let cfg = NotifyConfig::default();
        assert!(build(&cfg, "ok", &spec("https://example.com/hook"), None, "api").is_ok());
        for bad in [
            "ftp://example.com",
            "https://user:pw@example.com/",
            "not a url",
            "file:///etc/passwd",
        ] {
            match build(&cfg, "t", &spec(bad), None, "api") {
                Err(TargetError::Invalid { field: "url", .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let mut s = spec("http://127.0.0.1:1/x");
        s.secret = Some("nope".into());
        assert!(matches!(
            build(&cfg, "t", &s, None, "api"),
            Err(TargetError::Invalid {
                field: "secret",
                ..
            })
        ));
        assert!(matches!(
            build(&cfg, "a/b", &spec("http://h/"), None, "api"),
            Err(TargetError::Invalid { field: "name", .. })
        ));
        let t = build(&cfg, "t", &spec("http://h/"), None, "api").unwrap();
        assert_eq!(t.key().unwrap().len(), GENERATED_SECRET_BYTES);
        let mut h = spec("http://h/");
        h.headers = Some(BTreeMap::from([("webhook-id".into(), "x".into())]));
        assert!(matches!(
            build(&cfg, "t", &h, None, "api"),
            Err(TargetError::Invalid {
                field: "headers",
                ..
            })
        ));
    }
}
