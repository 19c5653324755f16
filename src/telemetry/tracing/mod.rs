//! Traces: when `telemetry.otlp_endpoint` is set, `tracing` spans become OpenTelemetry spans
//! (tracing-opentelemetry), exported over OTLP (HTTP/protobuf or gRPC). Without an endpoint no
//! span data is built at all (`lite.rs`: a W3C identity per span, nothing more). Trace and span
//! ids are made and propagated either way, so logs carry trace ids and events carry
//! `traceparent` even when nothing is exported. `context.rs`: the W3C `traceparent` in and out;
//! `spans.rs`: the spans of the event path (messaging conventions); `http.rs`: request ids
//! and server spans.

pub mod context;
pub mod http;
pub mod lite;
pub mod spans;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_subscriber::registry::LookupSpan;

use crate::config::TelemetryConfig;

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("invalid OTLP endpoint: {0}")]
    Endpoint(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// The provider behind the global subscriber, kept so that `shutdown` can flush it.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How long an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP/HTTP URL for traces: the collector's base URL plus `/v1/traces`.
pub fn http_traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

fn exporter(
    cfg: &TelemetryConfig,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TracingError> {
    url::Url::parse(endpoint).map_err(|e| TracingError::Endpoint(e.to_string()))?;
    let built = if cfg.otlp_protocol == "grpc" {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    } else {
        // The batch processor exports from a thread of its own, outside Tokio: a blocking
        // client, built off the runtime (building one on it would panic).
        let client = std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
        })
        .join()
        .map_err(|_| TracingError::Exporter("building the HTTP client panicked".into()))?
        .map_err(|e| TracingError::Exporter(e.to_string()))?;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(http_traces_url(endpoint))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
    };
    built.map_err(|e| TracingError::Exporter(e.to_string()))
}

/// The tracer provider for `cfg` when an endpoint is set: sampling by `trace_sample_ratio`
/// (an incoming decision is followed), the service name as resource, and the OTLP exporter.
/// `None` without an endpoint: nothing would export, so no OpenTelemetry span is built
/// (`lite`).
pub fn provider(cfg: &TelemetryConfig) -> Result<Option<SdkTracerProvider>, TracingError> {
    match cfg
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        Some(endpoint) => Ok(Some(
            base_provider(cfg)
                .with_batch_exporter(exporter(cfg, endpoint)?)
                .build(),
        )),
        None => Ok(None),
    }
}

/// A provider builder with sampling and resource set and no exporter (tests add their own).
pub fn base_provider(cfg: &TelemetryConfig) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
        .build();
    SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.trace_sample_ratio,
        ))))
        .with_resource(resource)
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("substrate"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// Keeps the provider of the global subscriber (if it exports) for `shutdown`, and makes the
/// W3C trace context the global propagator (for libraries that inject or extract by
/// themselves).
pub fn install_global(provider: Option<SdkTracerProvider>) {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if let Some(p) = provider {
        let _ = PROVIDER.set(p);
    }
}

/// Exports the spans still buffered and stops the exporter (at process exit).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        tracing::warn!(error = %e, "flushing traces failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn bad_endpoint_is_refused() {
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("not a url".into()),
            ..Default::default()
        };
        assert!(matches!(provider(&cfg), Err(TracingError::Endpoint(_))));
    }

    #[test]
    fn no_endpoint_no_provider() {
        let cfg = TelemetryConfig::default();
        assert!(matches!(provider(&cfg), Ok(None)));
    }
}
