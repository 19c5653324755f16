//! The arithmetic of the PromQL subset, on values already read: window functions over raw
//! samples or rollup buckets, Prometheus' extrapolated `rate`/`increase`, aggregation by
//! label groups, scalar/vector operators, and `histogram_quantile`'s bucket interpolation
//! (the same formulas as Prometheus, so answers agree).

use std::collections::BTreeMap;

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

/// Prometheus' `extrapolatedRate` for counters: the increase over the samples in
/// `(start, end]`, corrected for resets and extrapolated towards the window's edges (not
/// beyond half an average interval, nor below zero); divided by the window for `rate`.
pub fn extrapolated_rate(w: &[Point], start: i64, end: i64, is_rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.value - first.value;
    for pair in w.windows(2) {
        if pair[1].value < pair[0].value {
            result += pair[0].value;
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let sampled = secs(last.ts_ms - first.ts_ms);
    let mut to_start = secs(first.ts_ms - start);
    let to_end = secs(end - last.ts_ms);
    let avg = sampled / (w.len() - 1) as f64;
    if result > 0.0 && first.value >= 0.0 {
        let to_zero = sampled * (first.value / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    let mut v = result * (interval / sampled);
    if is_rate {
        v /= secs(end - start);
    }
    Some(v)
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

/// Arithmetic and comparison between scalars and vectors.
pub fn binary(
    op: &str,
    cmp: bool,
    boolean: bool,
    lhs: Value,
    rhs: Value,
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
        (Value::Vector(_), Value::Vector(_)) => Err(QueryError::Unsupported(
            "binary operations between two vectors (only with scalars)".into(),
        )),
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
        let inc = extrapolated_rate(&w, 0, 60_000, false).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
        let rate = extrapolated_rate(&w, 0, 60_000, true).unwrap();
        assert!((rate - 1.0).abs() < 1e-9);
        // A reset counts the value before it.
        let w = vec![p(10_000, 5.0), p(20_000, 10.0), p(30_000, 2.0)];
        // 5 → 10 → (reset) 2 is an increase of 7 over 20 s, extrapolated 5 s back: 8.75.
        let inc = extrapolated_rate(&w, 5_000, 30_000, false).unwrap();
        assert!((inc - 8.75).abs() < 1e-9, "{inc}");
        assert_eq!(extrapolated_rate(&w[..1], 0, 1, false), None);
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
        let Value::Vector(f) =
            binary(">", true, false, v.clone(), Value::Scalar(vec![2.0])).unwrap()
        else {
            panic!()
        };
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].labels["__name__"], "up", "a filter keeps the name");
        let Value::Vector(m) =
            binary("*", false, false, v.clone(), Value::Scalar(vec![2.0])).unwrap()
        else {
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
        assert!(
            binary(
                "+",
                false,
                false,
                Value::Vector(vec![]),
                Value::Vector(vec![])
            )
            .is_err()
        );
    }
}
