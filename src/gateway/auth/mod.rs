//! Who is calling: JWT bearer tokens (HS256/RS256/ES256, JWKS), API keys with scopes (sent as
//! `X-API-Key`, `Authorization: ApiKey …`, or as the password of Basic auth). The
//! `Principal` extractor authenticates and applies the per-principal rate limit; `Admin`
//! additionally requires the admin role or scope (operator actions). The per-address limit
//! (`gateway::addresses`) runs before any of this.

pub mod apikeys;
mod cache;
pub mod jwks;
pub mod jwt;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::AppContext;
use crate::config::AuthConfig;
use crate::http::error::ApiError;
use crate::store::Store;

pub use apikeys::ApiKeys;
pub use jwt::{Claims, JwtVerifier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An end user, from a JWT.
    User,
    /// A service, from an API key.
    Service,
    /// A signed webhook sender.
    Webhook,
}

impl PrincipalKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
            PrincipalKind::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Principal {
    /// JWT `sub`, `apikey:<name>` or `webhook:<name>`.
    pub id: String,
    pub kind: PrincipalKind,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub admin: bool,
    pub email: Option<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send Authorization: Bearer <jwt> or X-API-Key")]
    Missing,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("invalid token: claim {claim}: {reason}")]
    Claim { claim: String, reason: String },
    #[error("token expired")]
    Expired,
    #[error("unknown or revoked API key")]
    BadApiKey,
    #[error("auth backend unavailable: {0}")]
    Unavailable(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match &e {
            AuthError::Missing => {
                ApiError::unauthorized("missing_credentials").message(e.to_string())
            }
            AuthError::InvalidToken(r) => {
                ApiError::unauthorized("invalid_token").with("reason", r.clone())
            }
            AuthError::Claim { claim, reason } => ApiError::unauthorized("invalid_token")
                .with("claim", claim.clone())
                .with("reason", reason.clone()),
            AuthError::Expired => ApiError::unauthorized("token_expired"),
            AuthError::BadApiKey => ApiError::unauthorized("invalid_api_key"),
            AuthError::Unavailable(r) => ApiError::unavailable(r.clone()),
        }
    }
}

pub struct Authenticator {
    pub jwt: JwtVerifier,
    pub api_keys: ApiKeys,
    admin_role: String,
    admin_scope: String,
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig, store: Store) -> Result<Self, jwt::JwtConfigError> {
        let api_keys = ApiKeys::new(store, cfg);
        api_keys.listen();
        Ok(Self {
            jwt: JwtVerifier::from_config(cfg)?,
            api_keys,
            admin_role: cfg.admin_role.clone(),
            admin_scope: cfg.admin_scope.clone(),
        })
    }

    /// Authenticates a request from its headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let authz = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| authz.and_then(|a| strip_scheme(a, "apikey")))
            .map(str::to_string)
            // Basic auth with the API key as the password: what Prometheus, Grafana and
            // promtool send from credentials in a URL or a `basic_auth` block.
            .or_else(|| {
                authz
                    .and_then(|a| strip_scheme(a, "basic"))
                    .and_then(basic_password)
            });
        if let Some(key) = api_key {
            let rec = self.api_keys.verify(&key).await?;
            let admin = rec.scopes.iter().any(|s| s == &self.admin_scope);
            return Ok(Principal {
                id: format!("apikey:{}", rec.name),
                kind: PrincipalKind::Service,
                roles: Vec::new(),
                scopes: rec.scopes,
                admin,
                email: None,
            });
        }
        let token = authz
            .and_then(|a| strip_scheme(a, "bearer"))
            .ok_or(AuthError::Missing)?;
        self.principal_from_token(token).await
    }

    pub async fn principal_from_token(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.jwt.verify(token).await?;
        let roles = claims.roles();
        let scopes = claims.scopes();
        let admin = roles.iter().any(|r| r == &self.admin_role)
            || scopes.iter().any(|s| s == &self.admin_scope);
        Ok(Principal {
            id: claims.sub.clone(),
            kind: PrincipalKind::User,
            roles,
            scopes,
            admin,
            email: claims.email.clone(),
        })
    }
}

/// The password of a Basic credential (`base64(user:password)`); the user name is ignored.
fn basic_password(b64: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    if s.eq_ignore_ascii_case(scheme) {
        Some(rest.trim())
    } else {
        None
    }
}

impl FromRequestParts<AppContext> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppContext,
    ) -> Result<Self, Self::Rejection> {
        let p = ctx.auth.authenticate(&parts.headers).await?;
        ctx.rate_limiter.check(&p)?;
        Ok(p)
    }
}

/// A principal with the admin role or scope.
pub struct Admin(pub Principal);

impl FromRequestParts<AppContext> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppContext,
    ) -> Result<Self, Self::Rejection> {
        let p = Principal::from_request_parts(parts, ctx).await?;
        if !p.admin {
            return Err(ApiError::forbidden(
                "this operation needs the admin role or scope",
            ));
        }
        Ok(Admin(p))
    }
}
