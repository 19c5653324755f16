//! Per-principal token buckets. Users and services have separate rates; a request without
//! a token gets 429 with `Retry-After`.

use std::time::Instant;

use dashmap::DashMap;

use super::auth::{Principal, PrincipalKind};
use crate::config::RateLimitConfig;
use crate::http::error::ApiError;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    cfg: RateLimitConfig,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        Self {
            cfg,
            buckets: DashMap::new(),
        }
    }

    fn rate(&self, p: &Principal) -> f64 {
        match p.kind {
            PrincipalKind::User => self.cfg.user_per_sec,
            PrincipalKind::Service | PrincipalKind::Webhook => self.cfg.service_per_sec,
        }
    }

    /// Takes one token for `p`, or says how many seconds until one is available.
    pub fn try_take(&self, p: &Principal) -> Result<(), u64> {
        if !self.cfg.enabled {
            return Ok(());
        }
        let rate = self.rate(p).max(0.001);
        let cap = (rate * self.cfg.burst_factor).max(1.0);
        let now = Instant::now();
        let mut b = self.buckets.entry(p.id.clone()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    pub fn check(&self, p: &Principal) -> Result<(), ApiError> {
        self.try_take(p).map_err(|secs| {
            ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                .with("retry_after_secs", secs)
                .header(axum::http::header::RETRY_AFTER, &secs.to_string())
        })
    }

    /// Drops buckets that have refilled completely (idle principals).
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| now.duration_since(b.last).as_secs_f64() < 600.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Principal {
        Principal {
            id: "u".into(),
            kind: PrincipalKind::User,
            roles: vec![],
            scopes: vec![],
            admin: false,
            email: None,
        }
    }

    #[test]
    fn refuses_after_burst() {
        let rl = RateLimiter::new(RateLimitConfig {
            enabled: true,
            user_per_sec: 1.0,
            service_per_sec: 1.0,
            burst_factor: 3.0,
        });
        let p = user();
        for _ in 0..3 {
            assert!(rl.try_take(&p).is_ok());
        }
        assert_eq!(rl.try_take(&p), Err(1));
    }
}
