//! The PromQL subset, evaluated over an org's stored series for every step of a query at
//! once. Parsing is `promql-parser`'s; this evaluates: selectors with `=`, `!=`, `=~`, `!~`
//! matchers; the range functions `rate`, `increase`, `delta`, `deriv`, `irate`, `idelta`,
//! `changes`, `resets` and `avg|min|max|sum|count|last_over_time`; `sum`, `avg`, `min`,
//! `max`, `count` with `by`/`without`; arithmetic and comparison (with or without `bool`)
//! between scalars and vectors and between two vectors (one-to-one, `on`/`ignoring`); the
//! set operators `and`, `or`, `unless`; `time()`, `vector`, `scalar`, `abs`, `clamp_min`,
//! `clamp_max`, `timestamp`, `histogram_quantile`; unary minus and parentheses. Anything else (e.g.
//! `group_left`) is refused with [`QueryError::Unsupported`], never answered wrongly.
//!
//! The planner reads the coarsest rollup whose resolution divides the step, the start and
//! the range (`resolution`): instant selectors then take the `last` of the bucket ending at
//! each step, `*_over_time` combine the buckets' min/max/sum/count. `rate` and `increase`
//! and the other range functions need individual samples and always read raw samples, as
//! do instant queries. Range windows are left-open, `(t - range, t]`, as in Prometheus 3; over rollups
//! they are `[t - range, t)`, the buckets inside the window.

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use promql_parser::label::{Matcher, Matchers};
use promql_parser::parser::{
    AggregateExpr, BinModifier, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector,
    VectorMatchCardinality, VectorSelector,
};

use super::ops::Matching;
use crate::telemetry::store::metric::MetricTotals;
use crate::telemetry::store::read::{Bucket, LastTotals, Point, SeriesInfo};
use crate::telemetry::store::{RESOLUTIONS, Telemetry, TelemetryError};

pub type Labels = BTreeMap<String, String>;

const NAME: &str = "__name__";

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is malformed (400 `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// Valid PromQL outside the supported subset (400 `bad_data`).
    #[error("unsupported in substrate's PromQL subset: {0}")]
    Unsupported(String),
    /// The query is too large to run (422 `execution`).
    #[error("{0}")]
    Execution(String),
    #[error("storage: {0}")]
    Storage(#[from] TelemetryError),
}

/// The evaluation times, in unix milliseconds: `start, start + step, …, end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Steps {
    pub fn instant(t: i64) -> Self {
        Self {
            start: t,
            end: t,
            step: 1,
        }
    }

    pub fn len(&self) -> usize {
        ((self.end - self.start) / self.step.max(1) + 1).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn at(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }
}

/// A series' values at each step (`None`: no value at that step).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
}

pub struct Evaluator<'a> {
    pub tel: &'a Telemetry,
    pub org: &'a str,
    pub steps: Steps,
    /// Milliseconds an instant selector looks back.
    pub lookback: i64,
    pub max_series: usize,
    /// Whether rollups may serve (range queries).
    pub rollups: bool,
}

fn get<'l>(labels: &'l Labels, name: &str) -> &'l str {
    labels.get(name).map(String::as_str).unwrap_or("")
}

/// Whether `labels` satisfy the selector's matchers (`or` groups: any group, all of it).
pub fn selects(vs: &VectorSelector, labels: &Labels) -> bool {
    let all = |ms: &[Matcher]| ms.iter().all(|m| m.is_match(get(labels, &m.name)));
    let m: &Matchers = &vs.matchers;
    let named = vs.name.as_deref().is_none_or(|n| get(labels, NAME) == n);
    named
        && if m.or_matchers.is_empty() {
            all(&m.matchers)
        } else {
            m.or_matchers.iter().any(|g| all(g))
        }
}

/// The metric name an equality matcher pins, to narrow the series read.
fn pinned_name(vs: &VectorSelector) -> Option<&str> {
    vs.name.as_deref().or_else(|| {
        vs.matchers.matchers.iter().find_map(|m| {
            (m.name == NAME && matches!(m.op, promql_parser::label::MatchOp::Equal))
                .then_some(m.value.as_str())
        })
    })
}

/// The metric name when the selector picks every series of one name and nothing more: a
/// bare `name` or `{__name__="name"}`, no other matchers.
fn whole_metric(vs: &VectorSelector) -> Option<&str> {
    let name = pinned_name(vs)?;
    let only_name = vs.matchers.or_matchers.is_empty()
        && vs.matchers.matchers.iter().all(|m| {
            m.name == NAME
                && matches!(m.op, promql_parser::label::MatchOp::Equal)
                && m.value == name
        });
    only_name.then_some(name)
}

fn by_series<T>(rows: Vec<T>, id: impl Fn(&T) -> i64) -> HashMap<i64, Vec<T>> {
    let mut out: HashMap<i64, Vec<T>> = HashMap::new();
    for r in rows {
        out.entry(id(&r)).or_default().push(r);
    }
    out
}

/// The most groups an aggregation is pushed down to the store for (one statement each).
const MAX_PUSHED_GROUPS: usize = 64;

/// The labels of the group a series with `labels` falls into under `by`/`without`.
fn group_of(modifier: Option<&LabelModifier>, labels: &Labels) -> Labels {
    match modifier {
        Some(LabelModifier::Include(ls)) => labels
            .iter()
            .filter(|(k, _)| ls.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(ls)) => labels
            .iter()
            .filter(|(k, _)| *k != NAME && !ls.labels.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => Labels::new(),
    }
}

fn without_name(mut labels: Labels) -> Labels {
    labels.remove(NAME);
    labels
}

impl Evaluator<'_> {
    pub fn eval<'b>(&'b self, e: &'b Expr) -> BoxFuture<'b, Result<Value, QueryError>> {
        Box::pin(async move {
            match e {
                Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.steps.len()])),
                Expr::Paren(p) => self.eval(&p.expr).await,
                Expr::Unary(u) => Ok(super::ops::negate(self.eval(&u.expr).await?)),
                Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs, false).await?)),
                Expr::Aggregate(a) => self.aggregate(a).await,
                Expr::Binary(b) => self.binary(b).await,
                Expr::Call(c) => self.call(c).await,
                Expr::MatrixSelector(_) => Err(QueryError::Unsupported(
                    "a range vector is accepted only as the argument of a range function \
                     (rate, delta, *_over_time, …)"
                        .into(),
                )),
                Expr::StringLiteral(_) => Err(QueryError::Unsupported("string values".into())),
                Expr::Subquery(_) => Err(QueryError::Unsupported("subqueries".into())),
                Expr::Extension(_) => Err(QueryError::Unsupported("extensions".into())),
            }
        })
    }

    /// The coarsest rollup that fits: it divides the step, the start and `window`, and is
    /// no longer than `max`.
    fn resolution(&self, window: i64, max: i64) -> Option<i64> {
        if !self.rollups {
            return None;
        }
        RESOLUTIONS.iter().rev().copied().find(|r| {
            *r <= max && self.steps.step % r == 0 && self.steps.start % r == 0 && window % r == 0
        })
    }

    /// The org's series a selector picks.
    async fn select(&self, vs: &VectorSelector) -> Result<Vec<SeriesInfo>, QueryError> {
        if vs.offset.is_some() || vs.at.is_some() {
            return Err(QueryError::Unsupported("offset and @ modifiers".into()));
        }
        let all = self.tel.series(self.org, pinned_name(vs)).await?;
        let picked: Vec<SeriesInfo> = all.into_iter().filter(|s| selects(vs, &s.labels)).collect();
        if picked.len() > self.max_series {
            return Err(QueryError::Execution(format!(
                "the selector matches {} series, more than telemetry.query.max_series ({})",
                picked.len(),
                self.max_series
            )));
        }
        Ok(picked)
    }

    async fn raw(
        &self,
        picked: &[SeriesInfo],
        window: i64,
    ) -> Result<HashMap<i64, Vec<Point>>, QueryError> {
        let ids: Vec<i64> = picked.iter().map(|s| s.id).collect();
        let rows = self
            .tel
            .samples(
                self.org,
                &ids,
                self.steps.start - window,
                self.steps.end + 1,
            )
            .await?;
        Ok(by_series(rows, |p| p.series_id))
    }

    async fn buckets(
        &self,
        picked: &[SeriesInfo],
        res: i64,
        window: i64,
    ) -> Result<HashMap<i64, Vec<Bucket>>, QueryError> {
        let ids: Vec<i64> = picked.iter().map(|s| s.id).collect();
        let rows = self
            .tel
            .buckets(
                self.org,
                &ids,
                res,
                self.steps.start - window,
                self.steps.end,
            )
            .await?;
        Ok(by_series(rows, |b| b.series_id))
    }

    /// An instant selector: the latest sample within the lookback at each step; with
    /// `stamp`, that sample's timestamp in seconds instead of its value (`timestamp()`).
    async fn instant(&self, vs: &VectorSelector, stamp: bool) -> Result<Vec<Series>, QueryError> {
        self.instant_of(self.select(vs).await?, stamp).await
    }

    /// [`Self::instant`] of series already selected.
    async fn instant_of(
        &self,
        picked: Vec<SeriesInfo>,
        stamp: bool,
    ) -> Result<Vec<Series>, QueryError> {
        let secs = |ms: i64| ms as f64 / 1000.0;
        let n = self.steps.len();
        let mut out = Vec::with_capacity(picked.len());
        if let Some(r) = self.resolution(0, self.lookback) {
            // The bucket ending at each step holds the last sample before it.
            let data = self.buckets(&picked, r, r).await?;
            for s in picked {
                let rows = data.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
                let values = (0..n)
                    .map(|i| {
                        let t = self.steps.at(i);
                        let k = rows.partition_point(|b| b.bucket_ms < t - r);
                        rows.get(k)
                            .filter(|b| b.bucket_ms == t - r && b.last_ts_ms > t - self.lookback)
                            .map(|b| if stamp { secs(b.last_ts_ms) } else { b.last_v })
                    })
                    .collect();
                out.push(Series {
                    labels: s.labels,
                    values,
                });
            }
            return Ok(out);
        }
        let data = self.raw(&picked, self.lookback).await?;
        for s in picked {
            let pts = data.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
            let values = (0..n)
                .map(|i| {
                    let t = self.steps.at(i);
                    let k = pts.partition_point(|p| p.ts_ms <= t);
                    k.checked_sub(1)
                        .map(|j| pts[j])
                        .filter(|p| p.ts_ms > t - self.lookback)
                        .map(|p| if stamp { secs(p.ts_ms) } else { p.value })
                })
                .collect();
            out.push(Series {
                labels: s.labels,
                values,
            });
        }
        Ok(out)
    }

    async fn call(&self, c: &Call) -> Result<Value, QueryError> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg = |i: usize| args.get(i).map(|a| a.as_ref());
        match name {
            "rate" | "increase" | "delta" | "deriv" | "irate" | "idelta" | "changes" | "resets"
            | "avg_over_time" | "min_over_time" | "max_over_time" | "sum_over_time"
            | "count_over_time" | "last_over_time" => {
                let Some(Expr::MatrixSelector(ms)) = arg(0) else {
                    return Err(QueryError::BadData(format!(
                        "{name} expects a range vector"
                    )));
                };
                Ok(Value::Vector(self.range_fn(name, ms).await?))
            }
            "time" => Ok(Value::Scalar(
                (0..self.steps.len())
                    .map(|i| self.steps.at(i) as f64 / 1000.0)
                    .collect(),
            )),
            "vector" => {
                let values = self.scalar_arg(name, arg(0)).await?;
                Ok(Value::Vector(vec![Series {
                    labels: Labels::new(),
                    values: values.into_iter().map(Some).collect(),
                }]))
            }
            "scalar" => {
                let v = self.vector_arg(name, arg(0)).await?;
                Ok(Value::Scalar(super::ops::scalar_of(&v, self.steps.len())))
            }
            "abs" | "clamp_min" | "clamp_max" => {
                let v = self.vector_arg(name, arg(0)).await?;
                let bound = if name == "abs" {
                    Vec::new()
                } else {
                    self.scalar_arg(name, arg(1)).await?
                };
                Ok(Value::Vector(super::ops::map_values(name, v, &bound)))
            }
            "timestamp" => self.timestamp(arg(0)).await,
            "histogram_quantile" => {
                let q = self.scalar_arg(name, arg(0)).await?;
                let v = self.vector_arg(name, arg(1)).await?;
                Ok(Value::Vector(super::ops::histogram_quantile(&q, v)))
            }
            other => Err(QueryError::Unsupported(format!("the function {other}"))),
        }
    }

    /// `timestamp(v)`: for a selector, the timestamp of each series' sample; for any other
    /// expression, the evaluation time (its samples are computed at the step). The metric
    /// name is dropped, as Prometheus does.
    async fn timestamp(&self, arg: Option<&Expr>) -> Result<Value, QueryError> {
        let mut v = match arg {
            Some(Expr::VectorSelector(vs)) => self.instant(vs, true).await?,
            other => {
                let mut v = self.vector_arg("timestamp", other).await?;
                for s in &mut v {
                    for (i, x) in s.values.iter_mut().enumerate() {
                        *x = x.map(|_| self.steps.at(i) as f64 / 1000.0);
                    }
                }
                v
            }
        };
        for s in &mut v {
            s.labels.remove(NAME);
        }
        Ok(Value::Vector(v))
    }

    /// A function's argument that must be a scalar (one value per step).
    async fn scalar_arg(&self, func: &str, arg: Option<&Expr>) -> Result<Vec<f64>, QueryError> {
        match arg {
            Some(e) => match self.eval(e).await? {
                Value::Scalar(s) => Ok(s),
                Value::Vector(_) => Err(QueryError::BadData(format!(
                    "{func} expects a scalar argument"
                ))),
            },
            None => Err(QueryError::BadData(format!("{func}: missing argument"))),
        }
    }

    /// A function's argument that must be an instant vector.
    async fn vector_arg(&self, func: &str, arg: Option<&Expr>) -> Result<Vec<Series>, QueryError> {
        match arg {
            Some(e) => match self.eval(e).await? {
                Value::Vector(v) => Ok(v),
                Value::Scalar(_) => Err(QueryError::BadData(format!(
                    "{func} expects an instant vector argument"
                ))),
            },
            None => Err(QueryError::BadData(format!("{func}: missing argument"))),
        }
    }

    /// A range function over each step's window. Only `avg|min|max|sum|count_over_time`
    /// can be answered from rollup buckets; the others need the individual samples.
    async fn range_fn(&self, name: &str, ms: &MatrixSelector) -> Result<Vec<Series>, QueryError> {
        let w = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
        if w <= 0 {
            return Err(QueryError::BadData("the range must be positive".into()));
        }
        let picked = self.select(&ms.vs).await?;
        let n = self.steps.len();
        let raw_only = !matches!(
            name,
            "avg_over_time"
                | "min_over_time"
                | "max_over_time"
                | "sum_over_time"
                | "count_over_time"
        );
        // Prometheus keeps the metric name only for last_over_time.
        let labels = |l: Labels| {
            if name == "last_over_time" {
                l
            } else {
                without_name(l)
            }
        };
        let mut out = Vec::with_capacity(picked.len());
        if let Some(r) = (!raw_only).then(|| self.resolution(w, i64::MAX)).flatten() {
            let data = self.buckets(&picked, r, w).await?;
            for s in picked {
                let rows = data.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
                let values = (0..n)
                    .map(|i| {
                        let t = self.steps.at(i);
                        let lo = rows.partition_point(|b| b.bucket_ms < t - w);
                        let hi = rows.partition_point(|b| b.bucket_ms < t);
                        super::ops::over_buckets(name, &rows[lo..hi])
                    })
                    .collect();
                out.push(Series {
                    labels: without_name(s.labels),
                    values,
                });
            }
            return Ok(out);
        }
        let data = self.raw(&picked, w).await?;
        for s in picked {
            let pts = data.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
            let values = (0..n)
                .map(|i| {
                    let t = self.steps.at(i);
                    let lo = pts.partition_point(|p| p.ts_ms <= t - w);
                    let hi = pts.partition_point(|p| p.ts_ms <= t);
                    super::ops::over_window(name, &pts[lo..hi], t - w, t)
                })
                .collect();
            out.push(Series {
                labels: labels(s.labels),
                values,
            });
        }
        Ok(out)
    }

    async fn aggregate(&self, a: &AggregateExpr) -> Result<Value, QueryError> {
        let op = a.op.to_string();
        if !matches!(op.as_str(), "sum" | "avg" | "min" | "max" | "count") || a.param.is_some() {
            return Err(QueryError::Unsupported(format!("the aggregation {op}")));
        }
        if let Some(out) = self.pushed_down(a, &op).await? {
            return Ok(Value::Vector(out));
        }
        let Value::Vector(input) = self.eval(&a.expr).await? else {
            return Err(QueryError::BadData(format!(
                "{op} expects an instant vector"
            )));
        };
        let key = |labels: &Labels| group_of(a.modifier.as_ref(), labels);
        Ok(Value::Vector(super::ops::aggregate(
            &op,
            input,
            key,
            self.steps.len(),
        )))
    }

    /// `op` over an instant selector read from rollups, computed by the store: per group,
    /// one row per step leaves it instead of one per series and step (a 24 h query at a 1 m
    /// step over 1,000 series reads 1,440 rows, not 1.44 M). The same values as aggregating
    /// [`Self::instant`]'s series: the `last` of the bucket ending at each step, when its last
    /// sample lies within the lookback. When the selector is a bare metric name and every
    /// series falls into one group, the store's whole-metric rollups answer without reading
    /// per-series rows at all ([`Self::of_whole_metric`]). More than [`MAX_PUSHED_GROUPS`] groups
    /// are aggregated in memory from the series already selected. `None` when the shape does
    /// not fit (no rollup for the step, not a plain selector): the caller evaluates it in
    /// memory.
    async fn pushed_down(
        &self,
        a: &AggregateExpr,
        op: &str,
    ) -> Result<Option<Vec<Series>>, QueryError> {
        let mut inner = a.expr.as_ref();
        while let Expr::Paren(p) = inner {
            inner = p.expr.as_ref();
        }
        let (Expr::VectorSelector(vs), Some(r)) = (inner, self.resolution(0, self.lookback)) else {
            return Ok(None);
        };
        let whole = whole_metric(vs);
        // `op(metric)`: one group, holding every series of the name; none needs reading.
        if let (Some(name), None) = (whole, &a.modifier)
            && let Some(out) = self.of_whole_metric(op, name, r, Labels::new()).await?
        {
            return Ok(Some(out));
        }
        let picked = self.select(vs).await?;
        let key = |labels: &Labels| group_of(a.modifier.as_ref(), labels);
        let mut groups: BTreeMap<Labels, Vec<i64>> = BTreeMap::new();
        for s in &picked {
            groups.entry(key(&s.labels)).or_default().push(s.id);
        }
        if groups.len() > MAX_PUSHED_GROUPS {
            let input = self.instant_of(picked, false).await?;
            let n = self.steps.len();
            return Ok(Some(super::ops::aggregate(op, input, key, n)));
        }
        if let (Some(name), Some(labels)) = (whole, groups.keys().next())
            && groups.len() == 1
            && let Some(out) = self.of_whole_metric(op, name, r, labels.clone()).await?
        {
            return Ok(Some(out));
        }
        let mut out = Vec::with_capacity(groups.len());
        for (labels, ids) in groups {
            let totals = self
                .tel
                .last_totals(self.org, &ids, r, self.rollup_span(r), r - self.lookback)
                .await?;
            let values = self.per_step(op, r, &totals);
            if values.iter().any(Option::is_some) {
                out.push(Series { labels, values });
            }
        }
        Ok(Some(out))
    }

    /// The bucket starts a pushed-down aggregation at resolution `r` reads: from the bucket
    /// ending at the first step to the one ending at the last.
    fn rollup_span(&self, r: i64) -> (i64, i64) {
        (self.steps.start - r, self.steps.end)
    }

    /// `op` of every series named `name`, as one series with `labels`, from the store's
    /// whole-metric rollups at `r`. `None` when the store keeps none (ClickHouse), or when in
    /// some bucket a series' last sample lies outside the lookback (the whole-metric row
    /// counted it; the per-series path leaves it out).
    async fn of_whole_metric(
        &self,
        op: &str,
        name: &str,
        r: i64,
        labels: Labels,
    ) -> Result<Option<Vec<Series>>, QueryError> {
        let span = self.rollup_span(r);
        let Some(totals) = self.tel.metric_totals(self.org, name, r, span).await? else {
            return Ok(None);
        };
        let fresh = r - self.lookback;
        if totals.iter().any(|t| t.min_age_ms <= fresh) {
            return Ok(None);
        }
        let totals: Vec<LastTotals> = totals.iter().map(MetricTotals::last_totals).collect();
        let values = self.per_step(op, r, &totals);
        Ok(Some(if values.iter().any(Option::is_some) {
            vec![Series { labels, values }]
        } else {
            Vec::new()
        }))
    }

    /// Each step's value of `op` from `totals` (by bucket) of the buckets at `r` ending at
    /// the steps; `None` where no bucket ends at a step.
    fn per_step(&self, op: &str, r: i64, totals: &[LastTotals]) -> Vec<Option<f64>> {
        (0..self.steps.len())
            .map(|i| {
                let b = self.steps.at(i) - r;
                let k = totals.partition_point(|t| t.bucket_ms < b);
                totals
                    .get(k)
                    .filter(|t| t.bucket_ms == b)
                    .map(|t| match op {
                        "sum" => t.sum_v,
                        "avg" => t.sum_v / t.count_v as f64,
                        "min" => t.min_v,
                        "max" => t.max_v,
                        _ => t.count_v as f64,
                    })
            })
            .collect()
    }

    async fn binary(&self, b: &BinaryExpr) -> Result<Value, QueryError> {
        let op = b.op.to_string();
        let m = matching(b.modifier.as_ref())?;
        let lhs = self.eval(&b.lhs).await?;
        let rhs = self.eval(&b.rhs).await?;
        let n = self.steps.len();
        if b.op.is_set_operator() {
            let (Value::Vector(l), Value::Vector(r)) = (lhs, rhs) else {
                return Err(QueryError::BadData(format!(
                    "the set operator {op} is only allowed between two instant vectors"
                )));
            };
            return Ok(Value::Vector(super::ops::set_op(&op, &m, l, r, n)));
        }
        super::ops::binary(
            &op,
            b.op.is_comparison_operator(),
            b.return_bool(),
            &m,
            lhs,
            rhs,
            n,
        )
    }
}

/// The vector matching of a binary operation: `on(…)`, `ignoring(…)` or the default; only
/// one-to-one (and the set operators' many-to-many) is supported.
fn matching(modifier: Option<&BinModifier>) -> Result<Matching, QueryError> {
    let Some(m) = modifier else {
        return Ok(Matching::Ignoring(Vec::new()));
    };
    if matches!(
        m.card,
        VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_)
    ) {
        return Err(QueryError::Unsupported(
            "group_left / group_right (many-to-one matching)".into(),
        ));
    }
    if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
        return Err(QueryError::Unsupported("fill modifiers".into()));
    }
    Ok(match &m.matching {
        Some(LabelModifier::Include(ls)) => Matching::On(ls.labels.clone()),
        Some(LabelModifier::Exclude(ls)) => Matching::Ignoring(ls.labels.clone()),
        None => Matching::Ignoring(Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modifier(q: &str) -> Result<Matching, QueryError> {
        match promql_parser::parser::parse(q) {
            Ok(Expr::Binary(b)) => matching(b.modifier.as_ref()),
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn vector_matching_modifiers() {
        assert_eq!(modifier("a / b").unwrap(), Matching::Ignoring(vec![]));
        assert_eq!(
            modifier("a / on(job) b").unwrap(),
            Matching::On(vec!["job".into()])
        );
        assert_eq!(
            modifier("a and ignoring(x, y) b").unwrap(),
            Matching::Ignoring(vec!["x".into(), "y".into()])
        );
        assert_eq!(modifier("a > bool b").unwrap(), Matching::Ignoring(vec![]));
        for q in [
            "a / on(job) group_left b",
            "a * ignoring(x) group_right(y) b",
        ] {
            let e = modifier(q).unwrap_err();
            assert!(matches!(e, QueryError::Unsupported(_)), "{q}: {e}");
        }
    }
}
