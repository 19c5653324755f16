//! The no-exporter trace path. When nothing exports spans (no `telemetry.otlp_endpoint`),
//! building OpenTelemetry span data for every span (tracing-opentelemetry's `OtelData`: a
//! span builder, its attributes, timings, and a finished span handed to a provider that drops
//! it) is pure cost: it was 8–10% of the gateway's CPU per single event (bench/RESULTS.md).
//! This layer keeps only what is observable without an exporter: each traced span gets a
//! W3C identity ([`LiteSpan`]: trace id, span id, flags), inherited from its parent span or
//! continued from a remote `traceparent`, so events still carry `traceparent` and log lines
//! still carry `trace_id`/`span_id`. Nothing else is recorded.

use std::any::TypeId;
use std::marker::PhantomData;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};
use rand::Rng;
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Span, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A traced span's W3C identity, kept in the span's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteSpan {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl LiteSpan {
    /// The `traceparent` naming this span as parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        )
    }
}

/// Reaches a span's [`LiteSpan`] through the dispatcher (the same pattern as
/// tracing-opentelemetry's `set_parent`): the layer hands out this function from
/// `downcast_raw`, typed for the subscriber it was built for.
#[derive(Clone, Copy)]
struct WithLite(WithLiteFn);

/// Calls its closure on the `LiteSpan` of span `Id` of the subscriber behind `Dispatch`.
type WithLiteFn = fn(&Dispatch, &Id, &mut dyn FnMut(&mut LiteSpan));

/// The layer: a [`LiteSpan`] for every span it sees (filter it like the OpenTelemetry layer).
pub struct LiteLayer<S> {
    /// The sampling ratio for new traces (`telemetry.trace_sample_ratio`); a continued trace
    /// keeps its parent's decision, as the SDK's parent-based sampler does.
    ratio: f64,
    with: WithLite,
    _subscriber: PhantomData<fn(S)>,
}

impl<S> LiteLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    pub fn new(ratio: f64) -> Self {
        LiteLayer {
            ratio,
            with: WithLite(Self::with_lite),
            _subscriber: PhantomData,
        }
    }

    fn with_lite(dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut LiteSpan)) {
        let Some(subscriber) = dispatch.downcast_ref::<S>() else {
            return;
        };
        if let Some(span) = subscriber.span(id)
            && let Some(lite) = span.extensions_mut().get_mut::<LiteSpan>()
        {
            f(lite);
        }
    }
}

/// Whether a new trace is sampled at `ratio`: the OpenTelemetry SDK's `TraceIdRatioBased`
/// rule (the trace id's low 63 bits against the ratio), so a ratio means the same whether or
/// not an exporter is configured.
fn sampled(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// A random non-zero span id (all zeros is invalid in W3C trace context).
fn new_span_id(rng: &mut impl Rng) -> SpanId {
    SpanId::from_bytes(rng.gen_range(1..=u64::MAX).to_be_bytes())
}

impl<S> Layer<S> for LiteLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = if let Some(p) = attrs.parent() {
            ctx.span(p)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        let inherited = parent.and_then(|p| p.extensions().get::<LiteSpan>().copied());
        let mut rng = rand::thread_rng();
        let lite = match inherited {
            Some(p) => LiteSpan {
                span_id: new_span_id(&mut rng),
                ..p
            },
            None => {
                let mut trace = [0u8; 16];
                while trace == [0u8; 16] {
                    rng.fill(&mut trace);
                }
                LiteSpan {
                    trace_id: TraceId::from_bytes(trace),
                    span_id: new_span_id(&mut rng),
                    flags: if sampled(self.ratio, &trace) {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                }
            }
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(lite);
        }
    }

    /// # Safety
    /// Hands out a pointer to `self` or to its `WithLite` only for their own `TypeId`s.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == TypeId::of::<WithLite>() {
            Some(&self.with as *const WithLite as *const ())
        } else {
            None
        }
    }
}

/// Runs `f` on `span`'s [`LiteSpan`], if the lite layer is installed and traced the span.
fn with_span(span: &Span, f: &mut dyn FnMut(&mut LiteSpan)) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(with) = dispatch.downcast_ref::<WithLite>() {
            (with.0)(dispatch, id, f);
        }
    });
}

/// `span`'s identity, when the lite layer traced it.
pub fn get(span: &Span) -> Option<LiteSpan> {
    let mut out = None;
    with_span(span, &mut |l| out = Some(*l));
    out
}

/// Continues the remote `parent` in `span`: its trace id and sampling decision (the span
/// keeps its own span id). Call it before the span is first entered, as its children inherit
/// the identity it has when they are made.
pub fn set_parent(span: &Span, parent: &SpanContext) {
    if !parent.is_valid() {
        return;
    }
    with_span(span, &mut |l| {
        l.trace_id = parent.trace_id();
        l.flags = parent.trace_flags();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn children_inherit_the_trace_and_a_remote_parent_is_continued() {
        let subscriber = tracing_subscriber::registry().with(LiteLayer::new(1.0));
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("root");
            let r = get(&root).expect("root traced");
            assert!(r.flags.is_sampled());
            let child = root.in_scope(|| tracing::info_span!("child"));
            let c = get(&child).expect("child traced");
            assert_eq!(c.trace_id, r.trace_id);
            assert_ne!(c.span_id, r.span_id);

            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
            let cx = super::super::context::extract(tp, None).expect("valid");
            let cont = tracing::info_span!("continued");
            use opentelemetry::trace::TraceContextExt;
            set_parent(&cont, cx.span().span_context());
            let k = get(&cont).expect("traced");
            assert_eq!(k.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
            assert!(!k.flags.is_sampled(), "the remote decision is kept");
            let out = k.traceparent();
            assert!(out.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
            assert!(out.ends_with("-00"));
        });
    }

    #[test]
    fn sampling_follows_the_ratio() {
        assert!(sampled(1.0, &[7; 16]));
        assert!(!sampled(0.0, &[7; 16]));
        let mut low = [0u8; 16];
        low[15] = 1;
        assert!(sampled(0.5, &low));
        assert!(!sampled(0.5, &[0xff; 16]));
    }

    #[test]
    fn without_the_layer_nothing_is_traced() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            assert!(get(&tracing::info_span!("x")).is_none());
        });
    }
}
