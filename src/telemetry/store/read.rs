//! What the query side reads, the same on both columns: an org's series (with labels), raw
//! samples and rollup buckets of chosen series over a time range, and log lines by filter,
//! newest first with a cursor. Every read is scoped to one org.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A series and its labels (`__name__` included).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub id: i64,
    pub labels: BTreeMap<String, String>,
}

impl SeriesInfo {
    pub fn from_json(id: i64, labels: &str) -> Self {
        Self {
            id,
            labels: serde_json::from_str(labels).unwrap_or_default(),
        }
    }
}

/// One raw sample of a series.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow, clickhouse::Row, Serialize, Deserialize)]
pub struct Point {
    pub series_id: i64,
    pub ts_ms: i64,
    pub value: f64,
}

/// One rollup bucket of a series.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, clickhouse::Row, Serialize, Deserialize)]
pub struct Bucket {
    pub series_id: i64,
    pub bucket_ms: i64,
    pub min_v: f64,
    pub max_v: f64,
    pub sum_v: f64,
    pub count_v: i64,
    pub last_ts_ms: i64,
    pub last_v: f64,
}

/// The `last` values of chosen series' buckets that start at one time, combined: what an
/// aggregation of an instant selector over rollups needs per step, computed by the store.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow, clickhouse::Row, Serialize, Deserialize)]
pub struct LastTotals {
    pub bucket_ms: i64,
    pub sum_v: f64,
    pub count_v: i64,
    pub min_v: f64,
    pub max_v: f64,
}

impl LastTotals {
    /// Both parts together (the same bucket, read for two sets of series).
    pub fn merge(&mut self, o: &LastTotals) {
        self.sum_v += o.sum_v;
        self.count_v += o.count_v;
        self.min_v = self.min_v.min(o.min_v);
        self.max_v = self.max_v.max(o.max_v);
    }
}

/// Totals read in several parts (chunks of series) merged per bucket, by bucket.
pub fn merge_totals(parts: Vec<LastTotals>) -> Vec<LastTotals> {
    let mut by: BTreeMap<i64, LastTotals> = BTreeMap::new();
    for t in parts {
        by.entry(t.bucket_ms)
            .and_modify(|x| x.merge(&t))
            .or_insert(t);
    }
    by.into_values().collect()
}

/// Which log lines to read. Times are unix nanoseconds, `[from_ns, to_ns)`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub service: Option<String>,
    pub level: Option<String>,
    /// Every pair must be among the line's labels.
    pub labels: Vec<(String, String)>,
    pub from_ns: i64,
    pub to_ns: i64,
    /// A substring of the message.
    pub text: Option<String>,
    /// Only lines strictly older than this (ts_ns, line_id): the cursor.
    pub before: Option<(i64, i64)>,
    pub limit: usize,
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, clickhouse::Row, Serialize, Deserialize)]
pub struct LogEntry {
    pub line_id: i64,
    pub ts_ns: i64,
    pub service: String,
    pub level: String,
    pub message: String,
    pub labels: String,
    pub attributes: String,
}

/// `s` with LIKE's wildcards escaped (`\` is the escape character).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text a label pair has inside the stored labels JSON (`"k":"v"`), escaped for LIKE.
/// The stored form is compact JSON, so the pair appears exactly like this when present.
pub fn label_pattern(k: &str, v: &str) -> String {
    let key = serde_json::to_string(k).unwrap_or_default();
    let val = serde_json::to_string(v).unwrap_or_default();
    format!("%{}%", like_escape(&format!("{key}:{val}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_escape_wildcards() {
        assert_eq!(super::like_escape("a%b_c\\"), "a\\%b\\_c\\\\");
        assert_eq!(super::label_pattern("job", "a_b"), "%\"job\":\"a\\_b\"%");
    }
}
