//! The W3C trace context in and out of spans: continue a `traceparent` (from a request, an
//! outbox row or a Kafka header), render a span's own `traceparent` for the events it causes,
//! and read a span's trace and span ids (for log lines).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};

use crate::events::valid_traceparent;

/// The OpenTelemetry context a `traceparent` (and optional `tracestate`) describes.
pub fn extract(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    if !valid_traceparent(traceparent) {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_string(), ts.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of `traceparent` when it is well-formed. Call it before the span is
/// first entered.
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    // A disabled span (no subscriber wants it) has no parent to set: skip parsing the header
    // (consumers create a span per event, so this is on their hot path).
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = traceparent.and_then(|tp| extract(tp, None)) {
        set_parent(span, cx);
    }
}

/// Makes `span` a child of the remote context `cx`, under whichever trace layer is installed
/// (the OpenTelemetry one when exporting, else `lite`; each call is a no-op for the other).
pub fn set_parent(span: &Span, cx: opentelemetry::Context) {
    let sc = cx.span().span_context().clone();
    super::lite::set_parent(span, &sc);
    span.set_parent(cx);
}

/// The `traceparent` naming `span` as parent; `None` when the span is not traced (disabled,
/// or no trace layer installed).
pub fn traceparent(span: &Span) -> Option<String> {
    if let Some(lite) = super::lite::get(span) {
        return Some(lite.traceparent());
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent(&Span::current())
}

/// The trace and span id (hex) of a span, from its `lite` identity or its OpenTelemetry data —
/// for log lines.
pub fn ids(ext: &tracing_subscriber::registry::Extensions<'_>) -> Option<(String, String)> {
    if let Some(lite) = ext.get::<super::lite::LiteSpan>() {
        return Some((lite.trace_id.to_string(), lite.span_id.to_string()));
    }
    let data = ext.get::<OtelData>()?;
    let span_id = data.builder.span_id?;
    let trace_id = if data.parent_cx.has_active_span() {
        data.parent_cx.span().span_context().trace_id()
    } else {
        data.builder.trace_id?
    };
    Some((trace_id.to_string(), span_id.to_string()))
}

/// The trace id of a `traceparent`.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    valid_traceparent(traceparent).then(|| &traceparent[3..35])
}

/// The parent (span) id of a `traceparent`.
pub fn span_id_of(traceparent: &str) -> Option<&str> {
    valid_traceparent(traceparent).then(|| &traceparent[36..52])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_traceparent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(trace_id_of(tp), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(span_id_of(tp), Some("b7ad6b7169203331"));
        assert!(extract(tp, None).is_some());
        assert!(extract("00-xyz-01", None).is_none());
        assert_eq!(trace_id_of("garbage"), None);
    }
}
