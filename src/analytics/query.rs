//! The event-counts query, independent of where the counts live: parameter validation
//! (`from`, `to`, `step`, `topic`), bucket alignment, and the answer with every bucket present
//! (zeros filled in), as totals and as one series per topic and type.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::events::rfc3339_micros;
use crate::projections::counts::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    FiveMinutes,
    Hour,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "1m" => Some(Step::Minute),
            "5m" => Some(Step::FiveMinutes),
            "1h" => Some(Step::Hour),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
        }
    }

    pub fn secs(&self) -> i64 {
        match self {
            Step::Minute => 60,
            Step::FiveMinutes => 300,
            Step::Hour => 3600,
        }
    }

    pub fn micros(&self) -> i64 {
        self.secs() * 1_000_000
    }
}

/// The query string as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    pub topic: Option<String>,
}

/// A validated query: `[from, to)` in unix microseconds, both aligned to `step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsQuery {
    pub from: i64,
    pub to: i64,
    pub step: Step,
    pub topic: Option<String>,
}

impl CountsQuery {
    pub fn buckets(&self) -> usize {
        ((self.to - self.from) / self.step.micros()).max(0) as usize
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{parameter}: {reason}")]
    Invalid {
        parameter: &'static str,
        reason: String,
    },
    #[error("the range holds {buckets} buckets; at most {max} are allowed")]
    RangeTooLarge { buckets: i64, max: usize },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
}

/// RFC 3339, or unix seconds.
fn parse_time(parameter: &'static str, s: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    let t = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1_000_000))
    } else {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros())
    };
    match t {
        Some(t) if t >= 0 => Ok(t),
        _ => Err(QueryError::Invalid {
            parameter,
            reason:
                "expected an RFC 3339 time (2026-01-01T00:00:00Z) or unix seconds, not before 1970"
                    .into(),
        }),
    }
}

/// Validates `raw`. Defaults: `step=1m`, `to=now`, `from=to - 60 steps`. `from` is rounded
/// down and `to` up to the step.
pub fn parse(
    raw: &RawQuery,
    now: i64,
    max_buckets: usize,
    topic_exists: impl Fn(&str) -> bool,
) -> Result<CountsQuery, QueryError> {
    let step = match raw.step.as_deref().map(str::trim) {
        None | Some("") => Step::Minute,
        Some(s) => Step::parse(s).ok_or_else(|| QueryError::Invalid {
            parameter: "step",
            reason: "expected 1m, 5m or 1h".into(),
        })?,
    };
    let m = step.micros();
    let up = |t: i64| match t.rem_euclid(m) {
        0 => t,
        r => t.saturating_add(m - r),
    };
    let to = match raw.to.as_deref() {
        Some(t) => parse_time("to", t)?,
        None => up(now),
    };
    let from = match raw.from.as_deref() {
        Some(f) => parse_time("from", f)?,
        None => up(to).saturating_sub(60 * m).max(0),
    };
    if from >= to {
        return Err(QueryError::Invalid {
            parameter: "from",
            reason: "must be before `to`".into(),
        });
    }
    let from = from - from.rem_euclid(m);
    let to = up(to);
    let buckets = (to - from) / m;
    if buckets > max_buckets as i64 {
        return Err(QueryError::RangeTooLarge {
            buckets,
            max: max_buckets,
        });
    }
    let topic = match raw.topic.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if topic_exists(t) => Some(t.to_string()),
        Some(t) => return Err(QueryError::UnknownTopic(t.to_string())),
    };
    Ok(CountsQuery {
        from,
        to,
        step,
        topic,
    })
}

/// The answer: every bucket of the range, zeros included.
pub fn answer(q: &CountsQuery, cells: &[Cell], source: &str) -> Value {
    let n = q.buckets();
    let m = q.step.micros();
    let mut totals = vec![0i64; n];
    let mut series: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for c in cells {
        if c.bucket < q.from || c.bucket >= q.to {
            continue;
        }
        let i = ((c.bucket - q.from) / m) as usize;
        totals[i] += c.count;
        series
            .entry((c.topic.as_str(), c.event_type.as_str()))
            .or_insert_with(|| vec![0; n])[i] += c.count;
    }
    let buckets: Vec<Value> = totals
        .iter()
        .enumerate()
        .map(|(i, count)| json!({ "start": rfc3339_micros(q.from + i as i64 * m), "count": count }))
        .collect();
    let series: Vec<Value> = series
        .into_iter()
        .map(|((topic, event_type), counts)| {
            json!({
                "topic": topic,
                "event_type": event_type,
                "total": counts.iter().sum::<i64>(),
                "counts": counts,
            })
        })
        .collect();
    json!({
        "from": rfc3339_micros(q.from),
        "to": rfc3339_micros(q.to),
        "step": q.step.as_str(),
        "topic": q.topic,
        "source": source,
        "total": totals.iter().sum::<i64>(),
        "buckets": buckets,
        "series": series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    fn raw(from: &str, to: &str, step: &str) -> RawQuery {
        RawQuery {
            from: Some(from.into()),
            to: Some(to.into()),
            step: Some(step.into()),
            topic: None,
        }
    }

    #[test]
    fn aligns_and_validates() {
        let q = parse(
            &raw("2026-01-01T00:07:00Z", "2026-01-01T00:21:30Z", "5m"),
            0,
            100,
            |_| true,
        )
        .unwrap();
        assert_eq!(rfc3339_micros(q.from), "2026-01-01T00:05:00.000000Z");
        assert_eq!(rfc3339_micros(q.to), "2026-01-01T00:25:00.000000Z");
        assert_eq!(q.buckets(), 4);
        let bad = |r: RawQuery| parse(&r, 0, 1440, |t| t == "known").unwrap_err();
        assert!(matches!(
            bad(raw("x", "1", "1m")),
            QueryError::Invalid {
                parameter: "from",
                ..
            }
        ));
        assert!(matches!(
            bad(raw("0", "60", "2m")),
            QueryError::Invalid {
                parameter: "step",
                ..
            }
        ));
        assert!(matches!(
            bad(raw("60", "0", "1m")),
            QueryError::Invalid {
                parameter: "from",
                ..
            }
        ));
        assert_eq!(
            bad(raw("0", "86460", "1m")),
            QueryError::RangeTooLarge {
                buckets: 1441,
                max: 1440
            }
        );
        let mut r = raw("0", "60", "1m");
        r.topic = Some("nope".into());
        assert_eq!(bad(r), QueryError::UnknownTopic("nope".into()));
    }

    #[test]
    fn fills_zeros() {
        let q = CountsQuery {
            from: 0,
            to: 3 * H,
            step: Step::Hour,
            topic: None,
        };
        let cells = vec![
            Cell {
                bucket: H,
                topic: "a".into(),
                event_type: "x".into(),
                count: 2,
            },
            Cell {
                bucket: H,
                topic: "b".into(),
                event_type: "y".into(),
                count: 3,
            },
        ];
        let v = answer(&q, &cells, "store");
        let counts: Vec<i64> = v["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .collect();
        assert_eq!(counts, vec![0, 5, 0]);
        assert_eq!(v["series"][0]["counts"], json!([0, 2, 0]));
        assert_eq!(v["total"], 5);
    }
}
