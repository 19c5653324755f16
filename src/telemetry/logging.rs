//! Log output: JSON lines (or human-readable on a terminal), filtered by
//! `telemetry.log_filter`. A JSON line carries the event's fields plus `trace_id`/`span_id` of
//! the innermost traced span and the `request_id`/`event_id` of the spans it happened in.
//! The same subscriber feeds the trace layer (`telemetry::tracing`: OpenTelemetry when an
//! exporter is configured, else the lite layer that only gives spans their W3C ids), which
//! sees substrate's spans whatever the log filter says.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use super::tracing as otel;
use crate::config::TelemetryConfig;

/// Span fields every log line inside the span carries.
const CORRELATION_FIELDS: [&str; 3] = ["request_id", "event_id", "correlation_id"];

/// Installs the global subscriber (logs, and traces when configured). Safe to call twice
/// (the second call does nothing). Call `telemetry::tracing::shutdown` before exiting.
pub fn init(cfg: &TelemetryConfig) {
    let provider = otel::provider(cfg).unwrap_or_else(|e| {
        eprintln!("traces will not be exported: {e}");
        None
    });
    if subscriber(cfg, provider.as_ref()).try_init().is_ok() {
        otel::install_global(provider);
    }
}

/// The subscriber `init` installs, with spans going to `provider` (tests install their own);
/// without one, spans only get their W3C ids (`tracing::lite`): no OpenTelemetry span data is
/// built for spans nothing would export.
pub fn subscriber(
    cfg: &TelemetryConfig,
    provider: Option<&SdkTracerProvider>,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a> {
    let env = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cfg.log_format.as_str() {
        "json" => true,
        "pretty" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .fmt_fields(NoSpanFields)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let exporting =
        provider.map(|p| otel::layer(p).with_filter(tracing_subscriber::filter::filter_fn(traced)));
    let lite = provider.is_none().then(|| {
        otel::lite::LiteLayer::new(cfg.trace_sample_ratio)
            .with_filter(tracing_subscriber::filter::filter_fn(traced))
    });
    tracing_subscriber::registry()
        .with(CorrelationLayer)
        .with(exporting)
        .with(lite)
        .with(fmt.with_filter(LogFilter(env)))
}

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("substrate")
}

/// What becomes OpenTelemetry data: substrate's spans (info and up), and warnings and errors
/// as span events.
fn traced(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        ours(meta) && *meta.level() <= Level::INFO
    } else {
        *meta.level() <= Level::WARN
    }
}

/// The log filter: events by `telemetry.log_filter`; substrate's spans always, so a printed
/// line knows its request, event and trace even when the span itself is below the filter.
struct LogFilter(EnvFilter);

impl<S> Filter<S> for LogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        (meta.is_span() && ours(meta) && *meta.level() <= Level::DEBUG)
            || Filter::<S>::enabled(&self.0, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if meta.is_span() && ours(meta) && *meta.level() <= Level::DEBUG {
            tracing::subscriber::Interest::always()
        } else {
            Filter::<S>::callsite_enabled(&self.0, meta)
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let spans = tracing::level_filters::LevelFilter::DEBUG;
        Some(Filter::<S>::max_level_hint(&self.0).map_or(spans, |l| l.max(spans)))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.0, attrs, id, ctx)
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        Filter::<S>::on_record(&self.0, id, values, ctx)
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.0, id, ctx)
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.0, id, ctx)
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        Filter::<S>::on_close(&self.0, id, ctx)
    }
}

/// The correlation fields (`request_id`, `event_id`, …) a span was given.
#[derive(Default)]
struct Correlation(Vec<(&'static str, String)>);

impl Visit for Correlation {
    fn record_str(&mut self, field: &Field, value: &str) {
        if CORRELATION_FIELDS.contains(&field.name()) {
            self.0.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if CORRELATION_FIELDS.contains(&field.name()) {
            // `%value` fields arrive here; Display-formatted values have no quotes.
            self.0.push((field.name(), format!("{value:?}")));
        }
    }
}

/// Keeps each span's correlation fields in its extensions, for the JSON lines.
struct CorrelationLayer;

impl<S> Layer<S> for CorrelationLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Correlation::default();
        attrs.record(&mut c);
        if !c.0.is_empty()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(c);
        }
    }
}

/// An event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0
            .insert(f.name().into(), Value::from(format!("{v:?}")));
    }
}

/// JSON lines read span fields through `Correlation`; the fmt layer need not render them.
struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _: Writer<'w>, _: R) -> std::fmt::Result {
        Ok(())
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's fields,
/// `span`, `trace_id`, `span_id` and the correlation fields of the enclosing spans.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(crate::events::rfc3339_micros(crate::store::now_micros())),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        event.record(&mut JsonVisitor(&mut line));
        if let Some(scope) = ctx.event_scope() {
            let mut traced = false;
            for (i, span) in scope.enumerate() {
                if i == 0 {
                    line.insert("span".into(), Value::from(span.name()));
                }
                let ext = span.extensions();
                if !traced && let Some((trace_id, span_id)) = otel::context::ids(&ext) {
                    line.insert("trace_id".into(), Value::from(trace_id));
                    line.insert("span_id".into(), Value::from(span_id));
                    traced = true;
                }
                if let Some(c) = ext.get::<Correlation>() {
                    for (k, v) in &c.0 {
                        line.entry(*k).or_insert_with(|| Value::from(v.as_str()));
                    }
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}
