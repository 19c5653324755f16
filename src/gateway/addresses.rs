//! The per-client-address limit, taken before any credential is looked at (token
//! verification, the API-key query, a stream token or a webhook signature), so that a flood of
//! bad credentials costs its sender, not the store or other clients. The client is the TCP
//! peer, or, when the peer is a trusted proxy, the right-most untrusted hop of
//! `X-Forwarded-For`. IPv6 clients are counted per /64 (one host usually owns a whole /64).
//! A request answered 401 costs `failed_auth_cost` tokens, an authenticated one costs 1.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use parking_lot::Mutex;

use super::ratelimit::{Bucket, too_many_requests};
use crate::app::AppContext;
use crate::config::{Cidr, RateLimitConfig, canonical_ip};

/// The bucket that addresses share once the table is full of addresses that are being limited.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

pub struct AddressLimiter {
    on: bool,
    rate: f64,
    cap: f64,
    failed_cost: f64,
    trusted: Vec<Cidr>,
    table_size: usize,
    buckets: DashMap<IpAddr, Bucket>,
    last_sweep: Mutex<Instant>,
}

impl AddressLimiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let rate = cfg.per_address_per_sec.max(0.0);
        Self {
            on: cfg.enabled && rate > 0.0,
            rate,
            cap: cfg.per_address_burst.max(1.0),
            failed_cost: cfg.failed_auth_cost.max(1.0),
            trusted: cfg.trusted_proxies.clone(),
            table_size: cfg.per_address_table_size.max(1),
            buckets: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The client of a request from peer `peer` (None: not a TCP connection, not limited).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        peer.map(|p| client_ip(canonical_ip(p), headers, &self.trusted))
    }

    /// Admits one request from `ip` (cost 1), or says in how many seconds it may retry.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        self.with_bucket(ip, |b, now| b.take(now, self.rate, self.cap, 1.0))
            .unwrap_or(Ok(()))
    }

    /// Charges `ip` the rest of a failed authentication's cost (admission took 1).
    pub fn failed(&self, ip: Option<IpAddr>) {
        self.with_bucket(ip, |b, now| {
            b.charge(now, self.rate, self.cap, self.failed_cost - 1.0)
        });
    }

    /// Runs `f` on the bucket of `ip` (None when the limit is off or there is no address).
    fn with_bucket<R>(
        &self,
        ip: Option<IpAddr>,
        f: impl FnOnce(&mut Bucket, Instant) -> R,
    ) -> Option<R> {
        let ip = ip.filter(|_| self.on)?;
        let now = Instant::now();
        let key = self.slot(bucket_key(ip), now);
        let mut b = self
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(self.cap, now));
        Some(f(&mut b, now))
    }

    /// The table key for `key`: itself while the table has room (or already holds it); when
    /// full, full buckets (equal to new ones) are dropped, at most once a second, and if that
    /// frees nothing the address shares the overflow bucket. Memory stays bounded whatever
    /// the number of addresses.
    fn slot(&self, key: IpAddr, now: Instant) -> IpAddr {
        if self.buckets.len() < self.table_size || self.buckets.contains_key(&key) {
            return key;
        }
        {
            let mut last = self.last_sweep.lock();
            if now.saturating_duration_since(*last) >= Duration::from_secs(1) {
                *last = now;
                self.buckets
                    .retain(|_, b| !b.is_full(now, self.rate, self.cap));
            }
        }
        if self.buckets.len() < self.table_size {
            key
        } else {
            OVERFLOW
        }
    }

    /// Drops buckets that have refilled completely.
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| !b.is_full(now, self.rate, self.cap));
    }

    /// Addresses tracked now (tests, metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// One bucket per IPv4 address and per IPv6 /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; then
/// `X-Forwarded-For` is read from the right (each proxy appends the address it received the
/// request from), skipping trusted proxies, and the first other address is the client.
/// Entries left of it were written by the client and are not believed. An entry that is not
/// an address ends the walk at the last trusted hop.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Some(ip) = parse_hop(hop.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, or (some proxies) an address with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical_ip)
}

/// Middleware in front of the authenticated API: admits the request against its client's
/// bucket before any handler or extractor runs, and charges a 401 answer the extra cost of a
/// failed authentication.
pub async fn guard(State(ctx): State<AppContext>, req: Request, next: Next) -> Response {
    let limiter = &ctx.rate_limiter.addresses;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = limiter.client_ip(peer, req.headers());
    if let Err(secs) = limiter.admit(ip) {
        return too_many_requests("address", secs).into_response();
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        limiter.failed(ip);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cfg(rate: f64, burst: f64, trusted: &[&str]) -> RateLimitConfig {
        RateLimitConfig {
            per_address_per_sec: rate,
            per_address_burst: burst,
            failed_auth_cost: 5.0,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..RateLimitConfig::default()
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let l = AddressLimiter::new(&cfg(1.0, 1.0, &["10.0.0.0/8"]));
        let h = xff(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]);
        // Through two trusted proxies: the right-most untrusted hop; the client-written
        // 6.6.6.6 on its left is ignored.
        assert_eq!(l.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("1.2.3.4")));
        // Straight from the internet: the header is the client's own word.
        assert_eq!(l.client_ip(Some(ip("1.2.3.4")), &h), Some(ip("1.2.3.4")));
        assert_eq!(l.client_ip(Some(ip("9.9.9.9")), &h), Some(ip("9.9.9.9")));
        // Several header lines are one list; ports and mapped addresses are understood.
        let h = xff(&["1.1.1.1", "[::ffff:5.5.5.5]:4444, 10.1.1.1"]);
        assert_eq!(l.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("5.5.5.5")));
        // Garbage stops the walk at the last trusted hop.
        let h = xff(&["1.1.1.1, unknown, 10.1.1.1"]);
        assert_eq!(l.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("10.1.1.1")));
        // No header: the proxy itself.
        assert_eq!(
            l.client_ip(Some(ip("10.0.0.1")), &HeaderMap::new()),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(l.client_ip(None, &h), None);
    }

    #[test]
    fn failures_cost_more_and_addresses_are_separate() {
        let l = AddressLimiter::new(&cfg(0.001, 10.0, &[]));
        let bad = Some(ip("1.2.3.4"));
        // 10 tokens, a failure costs 5: two failures, then refused.
        for _ in 0..2 {
            l.admit(bad).unwrap();
            l.failed(bad);
        }
        assert!(l.admit(bad).is_err());
        // Successes cost 1: ten of them from another address.
        let good = Some(ip("5.6.7.8"));
        for _ in 0..10 {
            l.admit(good).unwrap();
        }
        assert!(l.admit(good).is_err());
        // An IPv6 /64 is one client.
        let a = Some(ip("2001:db8:1:2::1"));
        let b = Some(ip("2001:db8:1:2:ffff::9"));
        for _ in 0..2 {
            l.admit(a).unwrap();
            l.failed(a);
        }
        assert!(l.admit(b).is_err());
        assert!(l.admit(Some(ip("2001:db8:1:3::1"))).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut c = cfg(0.001, 2.0, &[]);
        c.per_address_table_size = 4;
        let l = AddressLimiter::new(&c);
        for i in 0..100u8 {
            let a = Some(IpAddr::from([192, 0, 2, i]));
            let _ = l.admit(a);
            l.failed(a);
        }
        // Four tracked addresses plus the shared overflow bucket.
        assert!(l.tracked() <= 5, "{}", l.tracked());
        // Addresses past the table share a bucket, which is exhausted.
        assert!(l.admit(Some(IpAddr::from([192, 0, 2, 200]))).is_err());
    }

    #[test]
    fn off_when_disabled() {
        let mut c = cfg(0.0, 1.0, &[]);
        let l = AddressLimiter::new(&c);
        for _ in 0..10 {
            l.admit(Some(ip("1.2.3.4"))).unwrap();
        }
        c.per_address_per_sec = 1.0;
        c.enabled = false;
        let l = AddressLimiter::new(&c);
        for _ in 0..10 {
            l.admit(Some(ip("1.2.3.4"))).unwrap();
        }
    }
}
