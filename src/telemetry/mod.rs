//! The platform's own telemetry: Prometheus metrics (`metrics.rs`, all in one place) and
//! logs (`logging.rs`).

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
