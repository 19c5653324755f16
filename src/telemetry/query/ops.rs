//! The arithmetic of the PromQL subset, on values already read: window functions over raw
//! samples or rollup buckets, Prometheus' extrapolated `rate`/`increase`, aggregation by
//! label groups, scalar/vector operators, and `histogram_quantile`'s bucket interpolation
//! (the same formulas as Prometheus, so answers agree).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::eval::{Labels, QueryError, Series, Value};
use crate::telemetry::store::read::{Bucket, Point};

const NAME: &str = "__name__";

pub fn negate(v: Value) -> Value {
    match v {
        Value::Scalar(s) => Value::Scalar(s.into_iter().map(|x| -x).collect()),
        Value::Vector(vs) => Value::Vector(
            vs.into_iter()
                .map(|mut s| {
                    s.labels.remove(NAME);
                    s.values = s.values.into_iter().map(|x| x.map(|x| -x)).collect();
                    s
                })
                .collect(),
        ),
    }
}

/// `*_over_time` over the raw samples of one window.
pub fn over_samples(name: &str, w: &[Point]) -> Option<f64> {
    if w.is_empty() {
        return None;
    }
    let vals = w.iter().map(|p| p.value);
    Some(match name {
        "sum_over_time" => vals.sum(),
        "count_over_time" => w.len() as f64,
        "avg_over_time" => vals.sum::<f64>() / w.len() as f64,
        "min_over_time" => vals.fold(f64::INFINITY, f64::min),
        _ => vals.fold(f64::NEG_INFINITY, f64::max),
    })
}

/// `*_over_time` over the rollup buckets inside one window.
pub fn over_buckets(name: &str, w: &[Bucket]) -> Option<f64> {
    let count: i64 = w.iter().map(|b| b.count_v).sum();
    if count == 0 {
        return None;
    }
    let sum: f64 = w.iter().map(|b| b.sum_v).sum();
    Some(match name {
        "sum_over_time" => sum,
        "count_over_time" => count as f64,
        "avg_over_time" => sum / count as f64,
        "min_over_time" => w.iter().map(|b| b.min_v).fold(f64::INFINITY, f64::min),
        _ => w.iter().map(|b| b.max_v).fold(f64::NEG_INFINITY, f64::max),
    })
}

/// Prometheus 3's `extrapolatedRate`: the difference between the last and first samples in
/// `(start, end]` (for a counter, corrected for resets), extrapolated towards the window's
/// edges (not beyond half an average interval; a counter not below zero); divided by the
/// window for `rate`. `increase`/`rate` are the counter form, `delta` the gauge form.
pub fn extrapolated_rate(
    w: &[Point],
    start: i64,
    end: i64,
    counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.value - first.value;
    if counter {
        for pair in w.windows(2) {
            if pair[1].value < pair[0].value {
                result += pair[0].value;
            }
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let sampled = secs(last.ts_ms - first.ts_ms);
    let mut to_start = secs(first.ts_ms - start);
    let mut to_end = secs(end - last.ts_ms);
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    // A counter does not extrapolate below zero.
    if counter && result > 0.0 && first.value >= 0.0 {
        to_start = to_start.min(sampled * (first.value / result));
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut v = result * ((sampled + to_start + to_end) / sampled);
    if is_rate {
        v /= secs(end - start);
    }
    Some(v)
}

/// Prometheus' `deriv`: the least-squares slope of value over time (per second), with
/// times taken relative to the first sample for precision; a constant series gives 0.
pub fn deriv(w: &[Point]) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let t0 = w[0].ts_ms;
    if w.iter().all(|p| p.value == w[0].value) {
        return Some(if w[0].value.is_infinite() {
            f64::NAN
        } else {
            0.0
        });
    }
    let n = w.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0);
    for p in w {
        let x = (p.ts_ms - t0) as f64 / 1000.0;
        sx += x;
        sy += p.value;
        sxy += x * p.value;
        sx2 += x * x;
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    Some(cov / var)
}

/// `irate` / `idelta`: from the last two samples of the window. `irate` treats a drop as a
/// counter reset (the last value is the increase) and divides by their distance.
fn instant_delta(w: &[Point], is_rate: bool) -> Option<f64> {
    let [.., prev, last] = w else {
        return None;
    };
    let dt = last.ts_ms - prev.ts_ms;
    if dt == 0 {
        return None;
    }
    if !is_rate {
        return Some(last.value - prev.value);
    }
    let d = if last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    Some(d / (dt as f64 / 1000.0))
}

/// A range function over the raw samples of one window `(start, end]`.
pub fn over_window(name: &str, w: &[Point], start: i64, end: i64) -> Option<f64> {
    match name {
        "rate" | "increase" => extrapolated_rate(w, start, end, true, name == "rate"),
        "delta" => extrapolated_rate(w, start, end, false, false),
        "deriv" => deriv(w),
        "irate" => instant_delta(w, true),
        "idelta" => instant_delta(w, false),
        // Value changes and counter resets between consecutive samples (0 for one sample).
        "changes" => (!w.is_empty()).then(|| {
            w.windows(2)
                .filter(|p| {
                    !(p[0].value == p[1].value || p[0].value.is_nan() && p[1].value.is_nan())
                })
                .count() as f64
        }),
        "resets" => {
            (!w.is_empty()).then(|| w.windows(2).filter(|p| p[1].value < p[0].value).count() as f64)
        }
        "last_over_time" => w.last().map(|p| p.value),
        _ => over_samples(name, w),
    }
}

/// An instant-vector function applied to every value: `abs`, `clamp_min`, `clamp_max`
/// (`arg`: the bound at each step). The metric name is dropped, as Prometheus does.
pub fn map_values(name: &str, vs: Vec<Series>, arg: &[f64]) -> Vec<Series> {
    vs.into_iter()
        .map(|mut s| {
            s.labels.remove(NAME);
            for (i, v) in s.values.iter_mut().enumerate() {
                *v = v.map(|x| match name {
                    "clamp_min" => x.max(arg[i]),
                    "clamp_max" => x.min(arg[i]),
                    _ => x.abs(),
                });
            }
            s
        })
        .collect()
}

/// `scalar(v)`: the value of the vector's only element at each step, NaN otherwise.
pub fn scalar_of(vs: &[Series], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let mut present = vs.iter().filter_map(|s| s.values[i]);
            match (present.next(), present.next()) {
                (Some(v), None) => v,
                _ => f64::NAN,
            }
        })
        .collect()
}

/// Groups series by `key(labels)` and combines each step's present values with `op`.
pub fn aggregate(
    op: &str,
    input: Vec<Series>,
    key: impl Fn(&Labels) -> Labels,
    n: usize,
) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, Vec<Series>> = BTreeMap::new();
    for s in input {
        groups.entry(key(&s.labels)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..n)
                .map(|i| {
                    let xs: Vec<f64> = members.iter().filter_map(|m| m.values[i]).collect();
                    if xs.is_empty() {
                        return None;
                    }
                    Some(match op {
                        "sum" => xs.iter().sum(),
                        "avg" => xs.iter().sum::<f64>() / xs.len() as f64,
                        "min" => xs.iter().copied().fold(f64::INFINITY, f64::min),
                        "max" => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        _ => xs.len() as f64,
                    })
                })
                .collect();
            Series { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

/// `a op b` for one pair of numbers; comparisons give 1.0 / 0.0.
fn apply(op: &str, a: f64, b: f64) -> Result<f64, QueryError> {
    let t = |c: bool| if c { 1.0 } else { 0.0 };
    Ok(match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        "%" => a % b,
        "^" => a.powf(b),
        "==" => t(a == b),
        "!=" => t(a != b),
        ">" => t(a > b),
        "<" => t(a < b),
        ">=" => t(a >= b),
        "<=" => t(a <= b),
        other => return Err(QueryError::Unsupported(format!("the operator {other}"))),
    })
}

/// A vector against one scalar per step; `vector_left` tells the operand order.
fn vector_scalar(
    op: &str,
    cmp: bool,
    boolean: bool,
    vs: Vec<Series>,
    s: &[f64],
    vector_left: bool,
) -> Result<Vec<Series>, QueryError> {
    let mut out = Vec::with_capacity(vs.len());
    for mut series in vs {
        let mut values = Vec::with_capacity(series.values.len());
        for (i, x) in series.values.iter().enumerate() {
            let Some(x) = *x else {
                values.push(None);
                continue;
            };
            let (a, b) = if vector_left { (x, s[i]) } else { (s[i], x) };
            let r = apply(op, a, b)?;
            values.push(match (cmp, boolean) {
                // A filter keeps the vector's own value where the comparison holds.
                (true, false) => (r == 1.0).then_some(x),
                _ => Some(r),
            });
        }
        if !cmp || boolean {
            series.labels.remove(NAME);
        }
        series.values = values;
        if series.values.iter().any(Option::is_some) {
            out.push(series);
        }
    }
    Ok(out)
}

/// How the series of two vectors are paired: by the labels `on(…)` names, or by all labels
/// but `__name__` and those `ignoring(…)` names (the default: ignoring nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum Matching {
    On(Vec<String>),
    Ignoring(Vec<String>),
}

impl Matching {
    /// The labels two series must share to be paired.
    fn signature(&self, l: &Labels) -> Labels {
        let keep = |k: &String| match self {
            Matching::On(ls) => ls.contains(k),
            Matching::Ignoring(ls) => k != NAME && !ls.contains(k),
        };
        l.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Prometheus' `resultMetric` for one-to-one matching: the left side's labels, without
    /// the name for arithmetic (and `bool`), reduced to `on(…)` or without `ignoring(…)`.
    fn result_labels(&self, l: &Labels, drop_name: bool) -> Labels {
        let mut out = match self {
            Matching::On(ls) => l
                .iter()
                .filter(|(k, _)| ls.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Matching::Ignoring(ls) => {
                let mut out = l.clone();
                out.retain(|k, _| !ls.contains(k));
                out
            }
        };
        if drop_name {
            out.remove(NAME);
        }
        out
    }
}

/// Per-step output values by series labels; the labels are borrowed from the operands so
/// they are cloned once per output series, not once per step.
type Gathered<'a> = BTreeMap<&'a Labels, Vec<Option<f64>>>;

fn slot<'a, 'b>(
    out: &'b mut Gathered<'a>,
    labels: &'a Labels,
    n: usize,
) -> &'b mut Vec<Option<f64>> {
    out.entry(labels).or_insert_with(|| vec![None; n])
}

/// Series from per-step values gathered by labels, those with no value at all left out.
fn collect(out: Gathered<'_>) -> Vec<Series> {
    out.into_iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .map(|(labels, values)| Series {
            labels: labels.clone(),
            values,
        })
        .collect()
}

const MANY_TO_MANY: &str =
    "many-to-many matching not allowed: matching labels must be unique on one side";

/// Arithmetic or comparison between two vectors, one-to-one, each step on its own (as a
/// Prometheus range query evaluates each step): every left element meets the right element
/// with its signature. Duplicate signatures are an execution error, as in Prometheus.
fn vector_vector(
    op: &str,
    cmp: bool,
    boolean: bool,
    m: &Matching,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let lsig: Vec<Labels> = lhs.iter().map(|s| m.signature(&s.labels)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| m.signature(&s.labels)).collect();
    let lres: Vec<Labels> = lhs
        .iter()
        .map(|s| m.result_labels(&s.labels, !cmp || boolean))
        .collect();
    let mut out = Gathered::new();
    for i in 0..n {
        let mut right: HashMap<&Labels, f64> = HashMap::new();
        for (s, sig) in rhs.iter().zip(&rsig) {
            if let Some(v) = s.values[i]
                && right.insert(sig, v).is_some()
            {
                return Err(QueryError::Execution(format!(
                    "found duplicate series for the match group {sig:?} on the right hand-side \
                     of the operation; {MANY_TO_MANY}"
                )));
            }
        }
        let mut matched: HashSet<&Labels> = HashSet::new();
        for (j, s) in lhs.iter().enumerate() {
            let (Some(a), Some(b)) = (s.values[i], right.get(&lsig[j])) else {
                continue;
            };
            if !matched.insert(&lsig[j]) {
                return Err(QueryError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)"
                        .into(),
                ));
            }
            let r = apply(op, a, *b)?;
            let v = match (cmp, boolean) {
                // A filter keeps the left side's value where the comparison holds.
                (true, false) if r != 1.0 => continue,
                (true, false) => a,
                _ => r,
            };
            if slot(&mut out, &lres[j], n)[i].replace(v).is_some() {
                return Err(QueryError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
        }
    }
    Ok(collect(out))
}

/// The signatures of the elements of `side` present at step `i`.
fn present<'a>(side: &[Series], sigs: &'a [Labels], i: usize) -> HashSet<&'a Labels> {
    side.iter()
        .zip(sigs)
        .filter(|(s, _)| s.values[i].is_some())
        .map(|(_, sig)| sig)
        .collect()
}

/// `and`, `or`, `unless` between two vectors, each step on its own: `and` keeps the left
/// elements whose signature the right side has, `unless` those it has not, `or` adds to the
/// left side the right elements whose signature the left side lacks. Labels are kept whole.
pub fn set_op(op: &str, m: &Matching, lhs: Vec<Series>, rhs: Vec<Series>, n: usize) -> Vec<Series> {
    let lsig: Vec<Labels> = lhs.iter().map(|s| m.signature(&s.labels)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| m.signature(&s.labels)).collect();
    let mut out = Gathered::new();
    for i in 0..n {
        let in_right = present(&rhs, &rsig, i);
        for (s, sig) in lhs.iter().zip(&lsig) {
            let keep = match op {
                "and" => in_right.contains(sig),
                "unless" => !in_right.contains(sig),
                _ => true,
            };
            if let Some(v) = s.values[i].filter(|_| keep) {
                slot(&mut out, &s.labels, n)[i] = Some(v);
            }
        }
        if op == "or" {
            let in_left = present(&lhs, &lsig, i);
            for (s, sig) in rhs.iter().zip(&rsig) {
                if let Some(v) = s.values[i].filter(|_| !in_left.contains(sig)) {
                    slot(&mut out, &s.labels, n)[i] = Some(v);
                }
            }
        }
    }
    collect(out)
}

/// Arithmetic and comparison between scalars and vectors, and between two vectors
/// (one-to-one, paired by `m`); `n` is the number of steps.
pub fn binary(
    op: &str,
    cmp: bool,
    boolean: bool,
    m: &Matching,
    lhs: Value,
    rhs: Value,
    n: usize,
) -> Result<Value, QueryError> {
    match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(
            a.iter()
                .zip(&b)
                .map(|(x, y)| apply(op, *x, *y))
                .collect::<Result<_, _>>()?,
        )),
        (Value::Vector(v), Value::Scalar(s)) => {
            Ok(Value::Vector(vector_scalar(op, cmp, boolean, v, &s, true)?))
        }
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
            op, cmp, boolean, v, &s, false,
        )?)),
        (Value::Vector(l), Value::Vector(r)) => {
            Ok(Value::Vector(vector_vector(op, cmp, boolean, m, l, r, n)?))
        }
    }
}

/// Prometheus' `bucketQuantile` over (upper bound, cumulative count) pairs.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts must not go down from one bound to the next.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets.partition_point(|x| x.1 < rank);
    if b >= buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// A bucket series: its upper bound and its values at each step.
type BucketSeries = (f64, Vec<Option<f64>>);

/// `histogram_quantile(q, buckets)`: series grouped by their labels other than `le`.
pub fn histogram_quantile(q: &[f64], v: Vec<Series>) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, Vec<BucketSeries>> = BTreeMap::new();
    for s in v {
        let Some(le) = s.labels.get("le").and_then(|l| parse_le(l)) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        key.remove(NAME);
        groups.entry(key).or_default().push((le, s.values));
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..q.len())
                .map(|i| {
                    let bs: Vec<(f64, f64)> = members
                        .iter()
                        .filter_map(|(le, vals)| vals[i].map(|c| (*le, c)))
                        .collect();
                    (!bs.is_empty()).then(|| bucket_quantile(q[i], bs))
                })
                .collect();
            Series { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_ms: i64, value: f64) -> Point {
        Point {
            series_id: 1,
            ts_ms,
            value,
        }
    }

    #[test]
    fn rate_matches_prometheus() {
        // A counter going up 1/s, sampled every 10 s across a 60 s window: 6 samples from
        // t=10s to t=60s; extrapolated to the window start by one interval → 60 increase.
        let w: Vec<Point> = (1..=6).map(|i| p(i * 10_000, (i * 10) as f64)).collect();
        let inc = extrapolated_rate(&w, 0, 60_000, true, false).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
        let rate = extrapolated_rate(&w, 0, 60_000, true, true).unwrap();
        assert!((rate - 1.0).abs() < 1e-9);
        // A reset counts the value before it.
        let w = vec![p(10_000, 5.0), p(20_000, 10.0), p(30_000, 2.0)];
        // 5 → 10 → (reset) 2 is an increase of 7 over 20 s, extrapolated 5 s back: 8.75.
        let inc = extrapolated_rate(&w, 5_000, 30_000, true, false).unwrap();
        assert!((inc - 8.75).abs() < 1e-9, "{inc}");
        assert_eq!(extrapolated_rate(&w[..1], 0, 1, true, false), None);
    }

    #[test]
    fn quantiles_interpolate() {
        let b = vec![(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, b.clone()) - 0.3).abs() < 1e-9);
        assert_eq!(bucket_quantile(1.0, b.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).is_nan());
        assert_eq!(bucket_quantile(-1.0, b), f64::NEG_INFINITY);
    }

    #[test]
    fn operators_and_aggregation() {
        let s = |job: &str, v: f64| Series {
            labels: [
                ("__name__".to_string(), "up".to_string()),
                ("job".to_string(), job.to_string()),
            ]
            .into_iter()
            .collect(),
            values: vec![Some(v)],
        };
        let v = Value::Vector(vec![s("a", 1.0), s("b", 3.0)]);
        let Value::Vector(f) = binary(
            ">",
            true,
            false,
            &ignoring(&[]),
            v.clone(),
            Value::Scalar(vec![2.0]),
            1,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].labels["__name__"], "up", "a filter keeps the name");
        let Value::Vector(m) = binary(
            "*",
            false,
            false,
            &ignoring(&[]),
            v.clone(),
            Value::Scalar(vec![2.0]),
            1,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(m[1].values[0], Some(6.0));
        assert!(!m[0].labels.contains_key("__name__"));
        let Value::Vector(vs) = v else { panic!() };
        let sum = aggregate("sum", vs.clone(), |_| Labels::new(), 1);
        assert_eq!(sum[0].values[0], Some(4.0));
        let by_job = aggregate(
            "count",
            vs,
            |l| {
                l.iter()
                    .filter(|(k, _)| *k == "job")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
            1,
        );
        assert_eq!(by_job.len(), 2);
    }

    fn lab(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ser(pairs: &[(&str, &str)], values: Vec<Option<f64>>) -> Series {
        Series {
            labels: lab(pairs),
            values,
        }
    }

    fn ignoring(ls: &[&str]) -> Matching {
        Matching::Ignoring(ls.iter().map(|l| l.to_string()).collect())
    }

    fn on(ls: &[&str]) -> Matching {
        Matching::On(ls.iter().map(|l| l.to_string()).collect())
    }

    fn vv(
        op: &str,
        cmp: bool,
        boolean: bool,
        m: &Matching,
        l: &[Series],
        r: &[Series],
    ) -> Result<Vec<Series>, QueryError> {
        let n = l.first().map_or(1, |s| s.values.len());
        match binary(
            op,
            cmp,
            boolean,
            m,
            Value::Vector(l.to_vec()),
            Value::Vector(r.to_vec()),
            n,
        )? {
            Value::Vector(v) => Ok(v),
            Value::Scalar(_) => panic!("a vector"),
        }
    }

    #[test]
    fn delta_is_the_gauge_form_of_increase() {
        // 10 → 5 → 20 at 10/20/30 s in (0, 30 s]: a difference of 10 over 20 s, extrapolated
        // 10 s back to the window start (within 1.1 × the 10 s interval): 10 × 30/20 = 15.
        let w = vec![p(10_000, 10.0), p(20_000, 5.0), p(30_000, 20.0)];
        assert_eq!(over_window("delta", &w, 0, 30_000), Some(15.0));
        // As a counter the drop is a reset (+10), and extrapolation to zero caps the start
        // at 20 × 10/20 = 10 s: (10 + 10) × 30/20 = 30.
        assert_eq!(over_window("increase", &w, 0, 30_000), Some(30.0));
        // A negative delta is kept; far edges extrapolate only half an interval:
        // 20 → 10 over 10 s in (0, 60 s], extended by 5 s on each side: -10 × 20/10.
        let w = vec![p(25_000, 20.0), p(35_000, 10.0)];
        assert_eq!(over_window("delta", &w, 0, 60_000), Some(-20.0));
        assert_eq!(over_window("delta", &w[..1], 0, 60_000), None);
    }

    #[test]
    fn deriv_is_the_least_squares_slope() {
        // x = 0, 10, 20 s; y = 1, 3, 2: cov = 70 - 30·6/3 = 10, var = 500 - 30²/3 = 200.
        let w = vec![p(100_000, 1.0), p(110_000, 3.0), p(120_000, 2.0)];
        assert_eq!(over_window("deriv", &w, 0, 120_000), Some(0.05));
        let flat = vec![p(0, 4.0), p(10_000, 4.0)];
        assert_eq!(deriv(&flat), Some(0.0));
        let down = vec![p(0, 10.0), p(5_000, 0.0)];
        assert_eq!(deriv(&down), Some(-2.0));
        assert_eq!(deriv(&w[..1]), None);
    }

    #[test]
    fn instant_rates_changes_resets_and_last() {
        let w = vec![p(10_000, 5.0), p(20_000, 10.0), p(30_000, 2.0)];
        // The last two samples: 10 → 2 is a reset for irate (2 over 10 s), -8 for idelta.
        assert_eq!(over_window("irate", &w, 0, 30_000), Some(0.2));
        assert_eq!(over_window("idelta", &w, 0, 30_000), Some(-8.0));
        assert_eq!(over_window("irate", &w[..2], 0, 30_000), Some(0.5));
        assert_eq!(over_window("irate", &w[..1], 0, 30_000), None);
        let v: Vec<Point> = [1.0, 1.0, 2.0, 2.0, 1.0, 3.0, 0.0]
            .iter()
            .enumerate()
            .map(|(i, x)| p(i as i64 * 1000, *x))
            .collect();
        assert_eq!(over_window("changes", &v, -1, 7_000), Some(4.0));
        assert_eq!(over_window("resets", &v, -1, 7_000), Some(2.0));
        assert_eq!(over_window("changes", &v[..1], -1, 7_000), Some(0.0));
        assert_eq!(over_window("changes", &[], -1, 7_000), None);
        assert_eq!(over_window("last_over_time", &v, -1, 7_000), Some(0.0));
        assert_eq!(over_window("count_over_time", &v, -1, 7_000), Some(7.0));
    }

    #[test]
    fn vector_arithmetic_matches_one_to_one() {
        let l = [
            ser(&[("__name__", "a"), ("job", "x")], vec![Some(10.0)]),
            ser(&[("__name__", "a"), ("job", "y")], vec![Some(6.0)]),
        ];
        let r = [
            ser(&[("__name__", "b"), ("job", "x")], vec![Some(2.0)]),
            ser(&[("__name__", "b"), ("job", "z")], vec![Some(1.0)]),
        ];
        let none = ignoring(&[]);
        // Only job=x is on both sides; arithmetic drops the name.
        let d = vv("/", false, false, &none, &l, &r).unwrap();
        assert_eq!(d, vec![ser(&[("job", "x")], vec![Some(5.0)])]);
        // A comparison filters and keeps the left side's value and name; bool gives 0/1.
        let c = vv(">", true, false, &none, &l, &r).unwrap();
        assert_eq!(
            c,
            vec![ser(&[("__name__", "a"), ("job", "x")], vec![Some(10.0)])]
        );
        assert!(vv("<", true, false, &none, &l, &r).unwrap().is_empty());
        let c = vv("<", true, true, &none, &l, &r).unwrap();
        assert_eq!(c, vec![ser(&[("job", "x")], vec![Some(0.0)])]);
        // on() pairs everything: two right series with one signature is many-to-many.
        let e = vv("/", false, false, &on(&[]), &l, &r).unwrap_err();
        assert!(e.to_string().contains("many-to-many"), "{e}");
        // on(job) keeps only job; ignoring(inst) drops inst.
        let wide = [ser(
            &[("__name__", "a"), ("job", "x"), ("inst", "1")],
            vec![Some(8.0)],
        )];
        let d = vv("/", false, false, &on(&["job"]), &wide, &r).unwrap();
        assert_eq!(d, vec![ser(&[("job", "x")], vec![Some(4.0)])]);
        let d = vv("-", false, false, &ignoring(&["inst"]), &wide, &r).unwrap();
        assert_eq!(d, vec![ser(&[("job", "x")], vec![Some(6.0)])]);
        // Two left series meeting one right series need group_left: an error, not a guess.
        let two = [
            wide[0].clone(),
            ser(
                &[("__name__", "a"), ("job", "x"), ("inst", "2")],
                vec![Some(4.0)],
            ),
        ];
        let e = vv("/", false, false, &on(&["job"]), &two, &r).unwrap_err();
        assert!(e.to_string().contains("group_left"), "{e}");
        // Each step matches on its own: the pair exists only at the second step.
        let l = [ser(&[("job", "x")], vec![Some(1.0), Some(2.0)])];
        let r = [ser(&[("job", "x")], vec![None, Some(3.0)])];
        let d = vv("+", false, false, &none, &l, &r).unwrap();
        assert_eq!(d, vec![ser(&[("job", "x")], vec![None, Some(5.0)])]);
    }

    #[test]
    fn set_operators() {
        let l = vec![
            ser(
                &[("__name__", "a"), ("job", "x")],
                vec![Some(1.0), Some(1.0)],
            ),
            ser(&[("__name__", "a"), ("job", "y")], vec![Some(2.0), None]),
        ];
        let r = vec![
            ser(&[("__name__", "b"), ("job", "x")], vec![Some(5.0), None]),
            ser(
                &[("__name__", "b"), ("job", "z")],
                vec![Some(7.0), Some(7.0)],
            ),
        ];
        let none = ignoring(&[]);
        let and = set_op("and", &none, l.clone(), r.clone(), 2);
        assert_eq!(
            and,
            vec![ser(
                &[("__name__", "a"), ("job", "x")],
                vec![Some(1.0), None]
            )]
        );
        let unless = set_op("unless", &none, l.clone(), r.clone(), 2);
        assert_eq!(
            unless,
            vec![
                ser(&[("__name__", "a"), ("job", "x")], vec![None, Some(1.0)]),
                ser(&[("__name__", "a"), ("job", "y")], vec![Some(2.0), None]),
            ]
        );
        let or = set_op("or", &none, l.clone(), r.clone(), 2);
        assert_eq!(
            or,
            vec![
                ser(
                    &[("__name__", "a"), ("job", "x")],
                    vec![Some(1.0), Some(1.0)]
                ),
                ser(&[("__name__", "a"), ("job", "y")], vec![Some(2.0), None]),
                ser(
                    &[("__name__", "b"), ("job", "z")],
                    vec![Some(7.0), Some(7.0)]
                ),
            ]
        );
        // on(): any right element at that step lets every left element through.
        let and_on = set_op("and", &on(&[]), l.clone(), r, 2);
        assert_eq!(and_on, l);
    }

    #[test]
    fn value_functions() {
        let v = vec![ser(&[("__name__", "a")], vec![Some(-3.0), Some(5.0), None])];
        let abs = map_values("abs", v.clone(), &[]);
        assert_eq!(abs, vec![ser(&[], vec![Some(3.0), Some(5.0), None])]);
        let lo = map_values("clamp_min", v.clone(), &[0.0, 6.0, 0.0]);
        assert_eq!(lo[0].values, vec![Some(0.0), Some(6.0), None]);
        let hi = map_values("clamp_max", v.clone(), &[-4.0, 2.0, 0.0]);
        assert_eq!(hi[0].values, vec![Some(-4.0), Some(2.0), None]);
        let s = scalar_of(&v, 3);
        assert_eq!(s[..2], [-3.0, 5.0]);
        assert!(s[2].is_nan(), "no element: NaN");
        let two = [v[0].clone(), v[0].clone()];
        assert!(scalar_of(&two, 3)[0].is_nan(), "two elements: NaN");
    }
}
