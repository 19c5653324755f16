//! The platform's status: each component is operational, degraded or down, judged from the
//! probe's latest run and live dependency checks (`checks.rs`). The same checks answer
//! `/readyz`, feed `status_component_up{component}`, the public page `/status` and
//! `/status.json` (`http.rs`, `page.rs`), and — recorded by the probe once per run — the
//! per-day history behind the uptime bars (`history.rs`).

pub mod checks;
pub mod doc;
pub mod history;
pub mod http;
pub mod page;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::app::AppContext;

/// A component's state; later variants are worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Operational,
    Degraded,
    Down,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Operational => "operational",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }
}

/// What the status page shows, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Gateway,
    Store,
    Log,
    Relay,
    Projections,
    Sagas,
    Objects,
    Analytics,
}

impl Component {
    pub const ALL: [Component; 8] = [
        Component::Gateway,
        Component::Store,
        Component::Log,
        Component::Relay,
        Component::Projections,
        Component::Sagas,
        Component::Objects,
        Component::Analytics,
    ];

    /// The machine name (JSON, metrics label, history).
    pub fn name(&self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Store => "store",
            Component::Log => "log",
            Component::Relay => "relay",
            Component::Projections => "projections",
            Component::Sagas => "sagas",
            Component::Objects => "objects",
            Component::Analytics => "analytics",
        }
    }

    /// The name people read.
    pub fn title(&self) -> &'static str {
        match self {
            Component::Gateway => "Event ingest API",
            Component::Store => "Database",
            Component::Log => "Event log",
            Component::Relay => "Event relay",
            Component::Projections => "Event projections",
            Component::Sagas => "Workflows (sagas)",
            Component::Objects => "File storage",
            Component::Analytics => "Analytics",
        }
    }
}

/// The verdict of one check: a state and, unless operational, a short reason code from a
/// fixed vocabulary (never an error message: they can carry hosts and credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Check {
    pub state: State,
    pub reason: Option<&'static str>,
}

impl Check {
    pub const OK: Check = Check {
        state: State::Operational,
        reason: None,
    };

    pub fn degraded(reason: &'static str) -> Check {
        Check {
            state: State::Degraded,
            reason: Some(reason),
        }
    }

    pub fn down(reason: &'static str) -> Check {
        Check {
            state: State::Down,
            reason: Some(reason),
        }
    }

    /// The worse of two verdicts.
    pub fn worst(self, other: Check) -> Check {
        if other.state > self.state {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    #[serde(serialize_with = "ser_component")]
    pub component: Component,
    pub state: State,
    pub reason: Option<&'static str>,
}

fn ser_component<S: serde::Serializer>(c: &Component, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

/// One evaluation of every component.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst component state.
    pub state: State,
    pub components: Vec<ComponentReport>,
    /// Unix microseconds.
    pub checked_at: i64,
}

impl Report {
    pub fn get(&self, c: Component) -> Option<&ComponentReport> {
        self.components.iter().find(|r| r.component == c)
    }
}

/// How long an evaluation is reused by `/status`, `/status.json`.
const CACHE_FOR: Duration = Duration::from_secs(2);
/// Window of this instance's HTTP answers the gateway's error ratio is computed over.
const ERROR_WINDOW: Duration = Duration::from_secs(300);

/// Evaluations, shared by the HTTP endpoints and the probe (one per process, in `AppContext`).
pub struct StatusService {
    cached: Mutex<Option<(Instant, Arc<Report>)>>,
    doc: Mutex<Option<(Instant, Arc<doc::StatusDoc>)>>,
    /// (when, answers, server errors) of this instance, oldest first.
    http_samples: parking_lot::Mutex<VecDeque<(Instant, f64, f64)>>,
    http: reqwest::Client,
}

impl Default for StatusService {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusService {
    pub fn new() -> Self {
        Self {
            cached: Mutex::new(None),
            doc: Mutex::new(None),
            http_samples: parking_lot::Mutex::new(VecDeque::new()),
            http: reqwest::Client::new(),
        }
    }

    /// A recent evaluation (at most `CACHE_FOR` old); concurrent callers share one.
    pub async fn current(&self, ctx: &AppContext) -> Arc<Report> {
        let mut slot = self.cached.lock().await;
        if let Some((at, r)) = slot.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return r.clone();
        }
        let r = Arc::new(self.evaluate(ctx).await);
        *slot = Some((Instant::now(), r.clone()));
        r
    }

    /// The status document (at most `CACHE_FOR` old), for `/status` and `/status.json`.
    pub async fn document(&self, ctx: &AppContext) -> Arc<doc::StatusDoc> {
        let mut slot = self.doc.lock().await;
        if let Some((at, d)) = slot.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return d.clone();
        }
        let report = self.current(ctx).await;
        let d = Arc::new(doc::build(ctx, &report).await);
        *slot = Some((Instant::now(), d.clone()));
        d
    }

    /// Evaluates every component now.
    pub async fn evaluate(&self, ctx: &AppContext) -> Report {
        checks::evaluate(ctx, self).await
    }

    /// Evaluates every component now and exports `status_component_up`. Only the probe role
    /// does this (every run), so the gauges are never left stale by a one-off page view.
    pub async fn evaluate_and_export(&self, ctx: &AppContext) -> Report {
        let r = self.evaluate(ctx).await;
        for c in &r.components {
            ctx.metrics
                .status_component_up
                .with_label_values(&[c.component.name()])
                .set(i64::from(c.state != State::Down));
        }
        r
    }

    /// The share of this instance's API answers that were server errors over the last few
    /// minutes, and how many answers that share is of. Machine endpoints are left out.
    pub(crate) fn http_error_ratio(&self, ctx: &AppContext) -> (f64, f64) {
        use prometheus::core::Collector;
        let (mut total, mut errors) = (0.0, 0.0);
        for mf in ctx.metrics.http_requests.collect() {
            for m in mf.get_metric() {
                let labels = m.get_label();
                let get = |name: &str| {
                    labels
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let route = get("route");
                if matches!(
                    route.as_str(),
                    "/healthz" | "/readyz" | "/metrics" | "/status" | "/status.json"
                ) {
                    continue;
                }
                let n = m.get_counter().value();
                total += n;
                if get("status").starts_with('5') {
                    errors += n;
                }
            }
        }
        let now = Instant::now();
        let mut samples = self.http_samples.lock();
        samples.push_back((now, total, errors));
        while samples.len() > 2
            && samples
                .get(1)
                .is_some_and(|(t, _, _)| now.duration_since(*t) >= ERROR_WINDOW)
        {
            samples.pop_front();
        }
        let (_, t0, e0) = samples.front().copied().unwrap_or((now, total, errors));
        let answers = total - t0;
        if answers <= 0.0 {
            return (0.0, 0.0);
        }
        ((errors - e0) / answers, answers)
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }
}
