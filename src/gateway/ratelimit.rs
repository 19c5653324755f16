//! Rate limits, all token buckets: per principal (users and services have separate rates,
//! taken after authentication) and per client address (`addresses`, taken before any
//! credential is looked at). A refused request gets 429 with `Retry-After`.

use std::time::Instant;

use dashmap::DashMap;

use super::addresses::AddressLimiter;
use super::auth::{Principal, PrincipalKind};
use crate::config::RateLimitConfig;
use crate::http::error::ApiError;

/// A token bucket: refilled at `rate` per second up to `cap`. A request is admitted while at
/// least one token is left; what it costs may leave a debt (down to `-cap`), which delays the
/// next admission accordingly.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn full(cap: f64, now: Instant) -> Self {
        Self {
            tokens: cap,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, cap: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(cap);
        self.last = now;
    }

    /// Takes `cost` if a token is there, else says in how many seconds one will be.
    pub(crate) fn take(&mut self, now: Instant, rate: f64, cap: f64, cost: f64) -> Result<(), u64> {
        self.take_exact(now, rate, cap, cost)
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// `take`, saying exactly how long until a token is there (senders that wait for it,
    /// e.g. alert notifications, rather than answer 429).
    pub(crate) fn take_exact(
        &mut self,
        now: Instant,
        rate: f64,
        cap: f64,
        cost: f64,
    ) -> Result<(), std::time::Duration> {
        self.refill(now, rate, cap);
        if self.tokens >= 1.0 {
            self.tokens = (self.tokens - cost).max(-cap);
            Ok(())
        } else {
            // A zero rate never refills: as good as never.
            let secs = ((1.0 - self.tokens) / rate).max(0.001);
            Err(std::time::Duration::try_from_secs_f64(secs)
                .unwrap_or(std::time::Duration::from_secs(u64::from(u32::MAX))))
        }
    }

    /// Takes `cost` unconditionally (a cost learnt after admission).
    pub(crate) fn charge(&mut self, now: Instant, rate: f64, cap: f64, cost: f64) {
        self.refill(now, rate, cap);
        self.tokens = (self.tokens - cost).max(-cap);
    }

    /// Whether the bucket has refilled completely by `now` (it then equals a new one).
    pub(crate) fn is_full(&self, now: Instant, rate: f64, cap: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate >= cap
    }
}

/// The 429 answer of every rate limit; `limit` says which one (`principal` or `address`).
pub fn too_many_requests(limit: &str, retry_after_secs: u64) -> ApiError {
    ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        .with("retry_after_secs", retry_after_secs)
        .with("limit", limit.to_string())
        .header(
            axum::http::header::RETRY_AFTER,
            &retry_after_secs.to_string(),
        )
}

pub struct RateLimiter {
    cfg: RateLimitConfig,
    buckets: DashMap<String, Bucket>,
    /// The per-address limit in front of authentication.
    pub addresses: AddressLimiter,
}

impl RateLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        Self {
            addresses: AddressLimiter::new(&cfg),
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
        let mut b = self
            .buckets
            .entry(p.id.clone())
            .or_insert_with(|| Bucket::full(cap, now));
        b.take(now, rate, cap, 1.0)
    }

    pub fn check(&self, p: &Principal) -> Result<(), ApiError> {
        self.try_take(p)
            .map_err(|secs| too_many_requests("principal", secs))
    }

    /// Drops buckets that have been idle for 10 minutes, and full address buckets.
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| now.duration_since(b.last).as_secs_f64() < 600.0);
        self.addresses.prune();
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
            ..RateLimitConfig::default()
        });
        let p = user();
        for _ in 0..3 {
            assert!(rl.try_take(&p).is_ok());
        }
        assert_eq!(rl.try_take(&p), Err(1));
    }

    #[test]
    fn a_debt_delays_the_next_admission() {
        let now = Instant::now();
        let mut b = Bucket::full(10.0, now);
        assert_eq!(b.take(now, 1.0, 10.0, 1.0), Ok(()));
        b.charge(now, 1.0, 10.0, 14.0);
        // 9 - 14 = -5: six seconds until a whole token.
        assert_eq!(b.take(now, 1.0, 10.0, 1.0), Err(6));
        // The debt is bounded by the bucket size.
        b.charge(now, 1.0, 10.0, 1000.0);
        assert_eq!(b.take(now, 1.0, 10.0, 1.0), Err(11));
        assert!(!b.is_full(now, 1.0, 10.0));
        assert!(b.is_full(now + std::time::Duration::from_secs(20), 1.0, 10.0));
    }
}
