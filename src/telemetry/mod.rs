//! The platform's own telemetry: Prometheus metrics (`metrics.rs`, all in one place), logs
//! (`logging.rs`) and traces (`tracing/`: OpenTelemetry, W3C trace context, the spans of the
//! event path).

pub mod logging;
pub mod metrics;
pub mod tracing;

pub use metrics::Metrics;
