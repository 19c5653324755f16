//! Who owns telemetry: the tenant (org) of a request comes from the caller's credentials, an
//! `org:<id>` scope on the API key or in the JWT's `scope` claim, never from the payload or a
//! header, so one tenant can neither write into nor read another's data. API keys also need
//! `telemetry:write` to write and `telemetry:read` (or `telemetry:write`) to read; a JWT user
//! of the org may do both.

use crate::gateway::auth::{Principal, PrincipalKind};
use crate::http::error::ApiError;

pub const WRITE_SCOPE: &str = "telemetry:write";
pub const READ_SCOPE: &str = "telemetry:read";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Write,
    Read,
}

/// Whether `s` is a usable org id: 1–64 of `[A-Za-z0-9_.-]` (it becomes part of object keys).
pub fn valid_org(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && s != "."
        && s != ".."
}

/// The caller's org, if it may have `access` to telemetry.
pub fn tenant(p: &Principal, access: Access) -> Result<String, ApiError> {
    if p.kind == PrincipalKind::Service {
        let ok = match access {
            Access::Write => p.has_scope(WRITE_SCOPE),
            Access::Read => p.has_scope(READ_SCOPE) || p.has_scope(WRITE_SCOPE),
        };
        if !ok {
            let need = if access == Access::Write {
                WRITE_SCOPE
            } else {
                READ_SCOPE
            };
            return Err(ApiError::forbidden(format!(
                "the API key needs the {need} scope"
            )));
        }
    }
    org_of(p)
}

/// The one org the credentials name (an `org:<id>` scope), whatever else they may do; used
/// by `tenant` and by admin APIs scoped to the caller's org (alert rules).
pub fn org_of(p: &Principal) -> Result<String, ApiError> {
    let mut orgs = p.scopes.iter().filter_map(|s| s.strip_prefix("org:"));
    match (orgs.next(), orgs.next()) {
        (Some(org), None) if valid_org(org) => Ok(org.to_string()),
        (Some(_), None) => Err(ApiError::forbidden(
            "the org scope must be org:<id> with 1-64 of A-Z a-z 0-9 _ . -",
        )),
        (Some(_), Some(_)) => Err(ApiError::forbidden(
            "the credentials name more than one org; exactly one is needed",
        )),
        (None, _) => Err(ApiError::forbidden(
            "no tenant: the API key or token needs an org:<id> scope",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: PrincipalKind, scopes: &[&str]) -> Principal {
        Principal {
            id: "x".into(),
            kind,
            roles: vec![],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            admin: false,
            email: None,
        }
    }

    #[test]
    fn org_comes_from_scopes() {
        let svc = p(PrincipalKind::Service, &["telemetry:write", "org:acme"]);
        assert_eq!(tenant(&svc, Access::Write).unwrap(), "acme");
        assert_eq!(tenant(&svc, Access::Read).unwrap(), "acme");
        let reader = p(PrincipalKind::Service, &["telemetry:read", "org:acme"]);
        assert!(tenant(&reader, Access::Write).is_err());
        assert!(tenant(&p(PrincipalKind::Service, &["org:acme"]), Access::Read).is_err());
        assert!(tenant(&p(PrincipalKind::User, &[]), Access::Read).is_err());
        assert!(tenant(&p(PrincipalKind::User, &["org:a", "org:b"]), Access::Read).is_err());
        assert!(tenant(&p(PrincipalKind::User, &["org:../x"]), Access::Read).is_err());
        assert_eq!(
            tenant(&p(PrincipalKind::User, &["org:acme"]), Access::Write).unwrap(),
            "acme"
        );
    }
}
