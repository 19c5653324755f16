//! Every metric substrate exports, registered in one registry and served at `/metrics`.
//! Labels stay bounded: routes are matched paths, topics come from the schema folder, and no
//! label ever carries a user id.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub relay_published: IntCounterVec,
    pub relay_errors: IntCounterVec,
    pub relay_publish_seconds: Histogram,
    pub relay_lanes_held: IntGauge,
    pub relay_parked_rows: IntGauge,
    pub retention_held_rows: IntGaugeVec,
    pub consumer_blocked: IntGaugeVec,
    pub consumer_rejoins: IntCounterVec,
    pub relay_batches_cut: IntCounter,
    pub lease_writes_refused: IntCounterVec,
    pub consumer_handled: IntCounterVec,
    pub consumer_failed: IntCounterVec,
    pub consumer_dead_lettered: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_batch_seconds: HistogramVec,
    pub dlq_depth: IntGaugeVec,
    pub saga_steps: IntCounterVec,
    pub saga_duration: HistogramVec,
    pub realtime_connections: IntGaugeVec,
    pub realtime_dropped: IntCounterVec,
    pub realtime_delivered: IntCounterVec,
    pub analytics_rows: IntCounterVec,
    pub analytics_errors: IntCounterVec,
    pub analytics_flush_seconds: HistogramVec,
    pub probe_round_trip: Histogram,
    pub probe_failures: IntCounterVec,
    pub probe_last_success: Gauge,
    pub status_component_up: IntGaugeVec,
}

/// Who holds fenced leases (the `user` label of `lease_writes_refused_total`).
pub const LEASE_USERS: [&str; 4] = ["consumer", "relay", "probe", "timer"];

/// Why a probe run failed (the `reason` label of `probe_failures_total`).
pub const PROBE_FAILURE_REASONS: [&str; 3] = ["timeout", "append_failed", "store_unavailable"];

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
        let relay_published = must(IntCounterVec::new(
            Opts::new(
                "relay_published_total",
                "Outbox rows the broker acknowledged, by topic.",
            ),
            &["topic"],
        ));
        let relay_errors = must(IntCounterVec::new(
            Opts::new(
                "relay_publish_errors_total",
                "Outbox rows the broker did not acknowledge (retried later), by topic.",
            ),
            &["topic"],
        ));
        let relay_publish_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "relay_publish_duration_seconds",
                "Time from sending a relay batch to the broker's last acknowledgement.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        ));
        let relay_lanes_held = must(IntGauge::new(
            "relay_lanes_held",
            "Outbox lanes this relay instance holds the lease of.",
        ));
        let relay_parked_rows = must(IntGauge::new(
            "relay_parked_rows",
            "Outbox rows the relay parked (cannot send); each holds the later rows of its key.",
        ));
        let retention_held_rows = must(IntGaugeVec::new(
            Opts::new(
                "retention_held_rows",
                "Embedded log: records past retention kept because this consumer group has not read them yet.",
            ),
            &["group"],
        ));
        let consumer_blocked = must(IntGaugeVec::new(
            Opts::new(
                "consumer_blocked",
                "1 while a consumer group cannot go on, by reason (registry_unavailable).",
            ),
            &["group", "reason"],
        ));
        let consumer_rejoins = must(IntCounterVec::new(
            Opts::new(
                "consumer_rejoins_total",
                "Times a member left its consumer group and joined again (replays; never a failed commit).",
            ),
            &["group"],
        ));
        let relay_batches_cut = must(IntCounter::new(
            "relay_batches_cut_total",
            "Relay batches still unacknowledged when their lanes' leases neared their end; the \
             unacknowledged sends were purged and are sent again later.",
        ));
        let lease_writes_refused = must(IntCounterVec::new(
            Opts::new(
                "lease_writes_refused_total",
                "Writes refused because the lease (or timer claim) they were made under had \
                 passed to another holder.",
            ),
            &["user"],
        ));
        for u in LEASE_USERS {
            lease_writes_refused.with_label_values(&[u]);
        }
        let consumer_handled = must(IntCounterVec::new(
            Opts::new(
                "consumer_events_handled_total",
                "Events a consumer group applied.",
            ),
            &["group"],
        ));
        let consumer_failed = must(IntCounterVec::new(
            Opts::new(
                "consumer_events_failed_total",
                "Handler failures (each failed attempt).",
            ),
            &["group"],
        ));
        let consumer_dead_lettered = must(IntCounterVec::new(
            Opts::new(
                "consumer_events_dead_lettered_total",
                "Events sent to the dead-letter topic.",
            ),
            &["group"],
        ));
        let consumer_lag = must(IntGaugeVec::new(
            Opts::new(
                "consumer_lag",
                "Records a consumer group has yet to read, per partition.",
            ),
            &["group", "topic", "partition"],
        ));
        let consumer_batch_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "consumer_batch_duration_seconds",
                "Time to apply one polled batch.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["group"],
        ));
        let dlq_depth = must(IntGaugeVec::new(
            Opts::new(
                "dlq_depth",
                "Dead letters not yet redriven, per consumer group.",
            ),
            &["group"],
        ));
        let saga_steps = must(IntCounterVec::new(
            Opts::new(
                "saga_steps_total",
                "Saga steps committed (the funnel: intent, approved, rejected, signed, received, confirmed, expired, dead_lettered, …).",
            ),
            &["saga", "step"],
        ));
        let saga_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "saga_duration_seconds",
                "Time from a saga's intent to its end, by outcome.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["saga", "outcome"],
        ));
        let realtime_connections = must(IntGaugeVec::new(
            Opts::new(
                "realtime_connections",
                "Open notification streams, by transport (sse, websocket).",
            ),
            &["transport"],
        ));
        let realtime_dropped = must(IntCounterVec::new(
            Opts::new(
                "realtime_dropped_total",
                "Streams the server closed, by reason (slow_client, lifetime, shutdown, error).",
            ),
            &["reason"],
        ));
        let realtime_delivered = must(IntCounterVec::new(
            Opts::new(
                "realtime_delivered_total",
                "Notifications written to streams, by transport.",
            ),
            &["transport"],
        ));
        let analytics_rows = must(IntCounterVec::new(
            Opts::new(
                "analytics_rows_written_total",
                "Rows the analytics sink wrote, by backend.",
            ),
            &["backend"],
        ));
        let analytics_errors = must(IntCounterVec::new(
            Opts::new(
                "analytics_write_errors_total",
                "Failed analytics batch writes (each is retried), by backend.",
            ),
            &["backend"],
        ));
        let analytics_flush_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "analytics_flush_duration_seconds",
                "Time to write one analytics batch.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["backend"],
        ));
        let probe_round_trip = must(Histogram::with_opts(
            HistogramOpts::new(
                "probe_round_trip_seconds",
                "Time from the probe appending its event to the probe projection applying it.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        ));
        let probe_failures = must(IntCounterVec::new(
            Opts::new(
                "probe_failures_total",
                "Probe runs that did not complete the loop, by reason.",
            ),
            &["reason"],
        ));
        for r in PROBE_FAILURE_REASONS {
            probe_failures.with_label_values(&[r]);
        }
        let probe_last_success = must(Gauge::new(
            "probe_last_success_timestamp_seconds",
            "Unix time of this instance's last successful probe run (0 = none yet).",
        ));
        let status_component_up = must(IntGaugeVec::new(
            Opts::new(
                "status_component_up",
                "1 while a status component is operational or degraded, 0 while it is down.",
            ),
            &["component"],
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
            relay_published,
            relay_errors,
            relay_publish_seconds,
            relay_lanes_held,
            relay_parked_rows,
            retention_held_rows,
            consumer_blocked,
            consumer_rejoins,
            relay_batches_cut,
            lease_writes_refused,
            consumer_handled,
            consumer_failed,
            consumer_dead_lettered,
            consumer_lag,
            consumer_batch_seconds,
            dlq_depth,
            saga_steps,
            saga_duration,
            realtime_connections,
            realtime_dropped,
            realtime_delivered,
            analytics_rows,
            analytics_errors,
            analytics_flush_seconds,
            probe_round_trip,
            probe_failures,
            probe_last_success,
            status_component_up,
        };
        m.register(Box::new(m.http_requests.clone()));
        m.register(Box::new(m.http_duration.clone()));
        m.register(Box::new(m.http_in_flight.clone()));
        m.register(Box::new(m.events_accepted.clone()));
        m.register(Box::new(m.events_rejected.clone()));
        m.register(Box::new(m.outbox_backlog.clone()));
        m.register(Box::new(m.outbox_oldest_age.clone()));
        m.register(Box::new(m.store_up.clone()));
        m.register(Box::new(m.relay_published.clone()));
        m.register(Box::new(m.relay_errors.clone()));
        m.register(Box::new(m.relay_publish_seconds.clone()));
        m.register(Box::new(m.relay_lanes_held.clone()));
        m.register(Box::new(m.relay_parked_rows.clone()));
        m.register(Box::new(m.retention_held_rows.clone()));
        m.register(Box::new(m.consumer_blocked.clone()));
        m.register(Box::new(m.consumer_rejoins.clone()));
        m.register(Box::new(m.relay_batches_cut.clone()));
        m.register(Box::new(m.lease_writes_refused.clone()));
        m.register(Box::new(m.consumer_handled.clone()));
        m.register(Box::new(m.consumer_failed.clone()));
        m.register(Box::new(m.consumer_dead_lettered.clone()));
        m.register(Box::new(m.consumer_lag.clone()));
        m.register(Box::new(m.consumer_batch_seconds.clone()));
        m.register(Box::new(m.dlq_depth.clone()));
        m.register(Box::new(m.saga_steps.clone()));
        m.register(Box::new(m.saga_duration.clone()));
        m.register(Box::new(m.realtime_connections.clone()));
        m.register(Box::new(m.realtime_dropped.clone()));
        m.register(Box::new(m.realtime_delivered.clone()));
        m.register(Box::new(m.analytics_rows.clone()));
        m.register(Box::new(m.analytics_errors.clone()));
        m.register(Box::new(m.analytics_flush_seconds.clone()));
        m.register(Box::new(m.probe_round_trip.clone()));
        m.register(Box::new(m.probe_failures.clone()));
        m.register(Box::new(m.probe_last_success.clone()));
        m.register(Box::new(m.status_component_up.clone()));
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
