//! Every metric substrate exports, registered in one registry and served at `/metrics`.
//! Labels stay bounded: routes are matched paths, topics come from the schema folder, and no
//! label ever carries a user id.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub outbox_backlog: IntGauge,
    pub outbox_oldest_age: Gauge,
    pub store_up: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("substrate".into()), None).unwrap_or_default();
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by matched route, method and status.",
            ),
            &["route", "method", "status"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by matched route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        ));
        let http_in_flight = must(IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being served.",
        ));
        let events_accepted = must(IntCounterVec::new(
            Opts::new(
                "events_accepted_total",
                "Events durably accepted by the gateway, by topic.",
            ),
            &["topic"],
        ));
        let events_rejected = must(IntCounterVec::new(
            Opts::new(
                "events_rejected_total",
                "Events refused by the gateway, by topic and reason.",
            ),
            &["topic", "reason"],
        ));
        let outbox_backlog = must(IntGauge::new(
            "outbox_backlog",
            "Outbox rows not yet acknowledged by the broker.",
        ));
        let outbox_oldest_age = must(Gauge::new(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not yet acknowledged by the broker.",
        ));
        let store_up = must(IntGaugeVec::new(
            Opts::new("store_up", "1 when the store answered the last check."),
            &["backend"],
        ));
        let m = Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            events_accepted,
            events_rejected,
            outbox_backlog,
            outbox_oldest_age,
            store_up,
        };
        m.register(Box::new(m.http_requests.clone()));
        m.register(Box::new(m.http_duration.clone()));
        m.register(Box::new(m.http_in_flight.clone()));
        m.register(Box::new(m.events_accepted.clone()));
        m.register(Box::new(m.events_rejected.clone()));
        m.register(Box::new(m.outbox_backlog.clone()));
        m.register(Box::new(m.outbox_oldest_age.clone()));
        m.register(Box::new(m.store_up.clone()));
        #[cfg(target_os = "linux")]
        m.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        m
    }

    /// Registers a collector from another component (consumers, relay, sagas, …).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!(error = %e, "metric registered twice");
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
