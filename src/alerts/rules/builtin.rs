//! Built-in rules (`alerts.rules.builtin`): the platform's own alert rules,
//! `deploy/prometheus/alerts.yml`, loaded into `alerts.rules.builtin_org`, and the
//! self-scrape that feeds them without an external Prometheus: every interval the process's
//! own metric registry is gathered and ingested as one telemetry batch for that org, through
//! the same path the ingest endpoints take (`crate::telemetry::ingest::accept`).
//!
//! Every rule of the file is inside the supported PromQL subset (the test
//! `builtin_rules_load_validate_and_self_scrape` holds it so). Should a later rule not be, it
//! is skipped with a warning naming it and the reason, not loaded half-working; an external
//! Prometheus can still evaluate the file whole.

use axum::http::HeaderMap;
use prometheus::proto::{MetricFamily, MetricType};

use super::RulesConfig;
use super::file::{FileError, parse};
use super::model::Rule;
use super::validate;
use crate::app::AppContext;
use crate::telemetry::model::{Batch, Label, Sample, TimeSeries};

/// The platform's alert rules, as shipped.
pub const ALERTS_YML: &str = include_str!("../../../deploy/prometheus/alerts.yml");

/// The built-in rules the evaluator can run, and those it cannot (name, reason).
pub struct Builtin {
    pub rules: Vec<Rule>,
    pub skipped: Vec<(String, String)>,
}

/// Parses and validates the built-in rules; a rule outside the PromQL subset is skipped.
pub async fn load(ctx: &AppContext, cfg: &RulesConfig) -> Result<Builtin, FileError> {
    let mut out = Builtin {
        rules: Vec::new(),
        skipped: Vec::new(),
    };
    for loc in parse(ALERTS_YML, cfg)? {
        match validate::check_expr(ctx, &loc.rule.expr).await {
            Ok(()) => out.rules.push(loc.rule),
            Err(e) => {
                tracing::warn!(rule = %loc.rule.alert, reason = %e,
                    "built-in alert rule skipped: outside the supported PromQL subset");
                out.skipped.push((loc.rule.alert, e.to_string()));
            }
        }
    }
    Ok(out)
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// One series: `name` with the metric's labels plus `extra`, one sample at `ts`.
fn series(name: &str, base: &[Label], extra: Option<Label>, v: f64, ts: i64) -> TimeSeries {
    let mut labels = vec![label("__name__", name)];
    labels.extend(base.iter().cloned());
    labels.extend(extra);
    TimeSeries {
        labels,
        samples: vec![Sample {
            value: v,
            timestamp: ts,
        }],
    }
}

/// A le/quantile bound as Prometheus writes it.
fn bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        v.to_string()
    }
}

/// The series of one metric family, named and shaped as the text exposition names them
/// (`_total` already in counter names; histograms as `_bucket{le}`, `_sum`, `_count`).
fn family(f: &MetricFamily, ts: i64, out: &mut Vec<TimeSeries>) {
    let name = f.name();
    for m in f.get_metric() {
        let base: Vec<Label> = m
            .get_label()
            .iter()
            .map(|l| label(l.name(), l.value()))
            .collect();
        match f.get_field_type() {
            MetricType::COUNTER => out.push(series(name, &base, None, m.get_counter().value(), ts)),
            MetricType::GAUGE => out.push(series(name, &base, None, m.get_gauge().value(), ts)),
            MetricType::HISTOGRAM => {
                let h = m.get_histogram();
                let bucket = format!("{name}_bucket");
                for b in h.get_bucket() {
                    let le = Some(label("le", &bound(b.upper_bound())));
                    out.push(series(&bucket, &base, le, b.cumulative_count() as f64, ts));
                }
                let count = h.get_sample_count() as f64;
                let inf = Some(label("le", "+Inf"));
                out.push(series(&bucket, &base, inf, count, ts));
                out.push(series(
                    &format!("{name}_sum"),
                    &base,
                    None,
                    h.get_sample_sum(),
                    ts,
                ));
                out.push(series(&format!("{name}_count"), &base, None, count, ts));
            }
            MetricType::SUMMARY => {
                let s = m.get_summary();
                for q in s.get_quantile() {
                    let ql = Some(label("quantile", &bound(q.quantile())));
                    out.push(series(name, &base, ql, q.value(), ts));
                }
                out.push(series(
                    &format!("{name}_sum"),
                    &base,
                    None,
                    s.sample_sum(),
                    ts,
                ));
                let n = s.sample_count() as f64;
                out.push(series(&format!("{name}_count"), &base, None, n, ts));
            }
            // Untyped (and any type a later client library adds): its one value.
            _ => out.push(series(name, &base, None, m.untyped.value(), ts)),
        }
    }
}

/// The process's metrics now, as one telemetry batch; every series gets an `instance`
/// label (as a Prometheus scrape adds), so the processes of a deployment do not overwrite
/// each other's series.
pub fn gather(ctx: &AppContext, instance: &str) -> Batch {
    let ts = chrono::Utc::now().timestamp_millis();
    let mut timeseries = Vec::new();
    for f in ctx.metrics.registry.gather() {
        family(&f, ts, &mut timeseries);
    }
    for s in &mut timeseries {
        if !s.labels.iter().any(|l| l.name == "instance") {
            s.labels.push(label("instance", instance));
        }
    }
    Batch {
        timeseries,
        logs: Vec::new(),
    }
}

/// One self-scrape: gathers and ingests the metrics for `org`. A failure is logged; the
/// next round tries again.
pub async fn scrape_once(ctx: &AppContext, org: &str, instance: &str) {
    let batch = gather(ctx, instance);
    if let Err(e) = crate::telemetry::ingest::accept(
        ctx,
        "alerts:self-scrape",
        &HeaderMap::new(),
        org,
        "self-scrape",
        batch,
    )
    .await
    {
        tracing::warn!(error = ?e, "the alerts self-scrape could not ingest the metrics");
    }
}
