//! Telemetry: the platform's own (Prometheus metrics in `metrics.rs`, logs in `logging.rs`,
//! traces in `tracing/`), and the telemetry feature for users' agents: ingest of metrics and
//! logs (`ingest/`), the Prometheus query API and log search (`query/`), the canonical batch (`model.rs`), tenancy (`tenant.rs`) and the
//! `telemetry` consumer group that stores samples, rollups and log lines (`store/`), and the
//! live tails of log lines and alert transitions (`tail/`).

pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod query;
pub mod store;
pub mod tail;
pub mod tenant;
pub mod tracing;

pub use metrics::Metrics;
