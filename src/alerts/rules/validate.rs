//! Validation of a rule before it is stored (API, rules file, built-in rules): every refusal
//! names the field and the problem. The expression is checked by the telemetry query engine
//! itself — parsed by promql-parser and evaluated once on an org that holds no data — so the
//! subset the evaluator accepts and the subset validation accepts can never drift apart.

use std::collections::BTreeMap;

use super::RulesConfig;
use super::model::Rule;
use crate::app::AppContext;
use crate::telemetry::query::eval::{QueryError, Value};

/// Most labels or annotations one rule may carry.
const MAX_ENTRIES: usize = 64;
/// Longest label value.
const MAX_LABEL_VALUE: usize = 1024;
/// Longest annotation value.
const MAX_ANNOTATION: usize = 8192;
/// Longest expression.
const MAX_EXPR: usize = 16 * 1024;

/// A rule that cannot be stored: which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Whether `s` is a rule name: `[A-Za-z_][A-Za-z0-9_.:-]{0,127}` (it is a path segment).
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && s.len() <= 128
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

/// Whether `s` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), not a reserved `__` one.
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !s.starts_with("__")
}

/// Whether `s` is a notification target name: `[a-zA-Z0-9_.-]{1,64}`.
pub fn valid_target(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A PromQL duration, bounded by `max_secs`.
fn duration(field: &str, s: Option<&str>, max_secs: u64) -> Result<(), Invalid> {
    let Some(s) = s else { return Ok(()) };
    let d = promql_parser::util::parse_duration(s)
        .map_err(|e| invalid(field, format!("{s:?} is not a duration like 5m: {e}")))?;
    if d.as_secs() > max_secs {
        return Err(invalid(
            field,
            format!("{s} is longer than the allowed {max_secs} s (alerts.rules.max_for_secs)"),
        ));
    }
    Ok(())
}

fn map(
    field: &str,
    m: &BTreeMap<String, String>,
    max_value: usize,
    names: bool,
) -> Result<(), Invalid> {
    if m.len() > MAX_ENTRIES {
        return Err(invalid(field, format!("more than {MAX_ENTRIES} entries")));
    }
    for (k, v) in m {
        if names && !valid_label_name(k) {
            return Err(invalid(
                format!("{field}.{k}"),
                "not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            ));
        }
        if !names && (k.is_empty() || k.len() > 128) {
            return Err(invalid(field, "an annotation name is empty or too long"));
        }
        if v.len() > max_value || v.contains('\0') {
            return Err(invalid(
                format!("{field}.{k}"),
                format!("longer than {max_value} bytes, or holds a NUL"),
            ));
        }
    }
    Ok(())
}

/// Everything but the expression: names, durations, labels, annotations, severity, targets.
pub fn check_shape(rule: &Rule, cfg: &RulesConfig) -> Result<(), Invalid> {
    if !valid_name(&rule.alert) {
        return Err(invalid(
            "alert",
            "the name must be 1-128 of A-Z a-z 0-9 _ . : - starting with a letter or _",
        ));
    }
    duration("for", rule.for_.as_deref(), cfg.max_for_secs)?;
    duration(
        "keep_firing_for",
        rule.keep_firing_for.as_deref(),
        cfg.max_for_secs,
    )?;
    map("labels", &rule.labels, MAX_LABEL_VALUE, true)?;
    map("annotations", &rule.annotations, MAX_ANNOTATION, false)?;
    let sev = rule.severity();
    if sev.is_empty()
        || sev.len() > 32
        || !sev
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
    {
        return Err(invalid("severity", "1-32 of A-Z a-z 0-9 _ -"));
    }
    if rule.targets.len() > MAX_ENTRIES {
        return Err(invalid(
            "targets",
            format!("more than {MAX_ENTRIES} targets"),
        ));
    }
    if let Some(t) = rule.targets.iter().find(|t| !valid_target(t)) {
        return Err(invalid(
            "targets",
            format!("{t:?} is not a target name (1-64 of a-z A-Z 0-9 _ . -)"),
        ));
    }
    Ok(())
}

/// The expression: it parses, stays in the supported subset and returns an instant vector.
/// Evaluated once by the query engine on the org `""`, which can hold no data (no tenant has
/// an empty org id), so the check costs no reads of anyone's samples.
pub async fn check_expr(ctx: &AppContext, expr: &str) -> Result<(), Invalid> {
    if expr.trim().is_empty() || expr.len() > MAX_EXPR {
        return Err(invalid("expr", "empty, or longer than 16 KiB"));
    }
    let parsed = promql_parser::parser::parse(expr).map_err(|e| invalid("expr", e))?;
    let now = chrono::Utc::now().timestamp_millis();
    match crate::telemetry::query::instant_query(ctx, "", &parsed, now).await {
        Ok(Value::Vector(_)) => Ok(()),
        Ok(Value::Scalar(_)) => Err(invalid(
            "expr",
            "the expression returns a scalar; an alert needs an instant vector",
        )),
        Err(e @ (QueryError::BadData(_) | QueryError::Unsupported(_))) => {
            Err(invalid("expr", e.to_string()))
        }
        // Nothing was read: the engine's other failures say nothing about the expression.
        Err(e) => {
            tracing::warn!(error = %e, "checking an alert expression hit an engine error");
            Ok(())
        }
    }
}

/// The whole rule.
pub async fn check(ctx: &AppContext, rule: &Rule, cfg: &RulesConfig) -> Result<(), Invalid> {
    check_shape(rule, cfg)?;
    check_expr(ctx, &rule.expr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("HighLatency"));
        assert!(valid_name("_a.b:c-d"));
        assert!(!valid_name(""));
        assert!(!valid_name("1abc"));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(valid_label_name("job_1"));
        assert!(!valid_label_name("__name__"));
        assert!(!valid_label_name("a-b"));
        assert!(valid_target("ops.pager-1"));
        assert!(!valid_target("a b"));
    }

    #[test]
    fn shapes() {
        let cfg = RulesConfig::default();
        let mut r: Rule = serde_json::from_value(serde_json::json!({
            "alert": "A", "expr": "up == 0", "for": "5m", "labels": {"team": "x"}
        }))
        .unwrap();
        assert!(check_shape(&r, &cfg).is_ok());
        r.for_ = Some("five".into());
        assert_eq!(check_shape(&r, &cfg).unwrap_err().field, "for");
        r.for_ = Some("1000d".into());
        assert_eq!(check_shape(&r, &cfg).unwrap_err().field, "for");
        r.for_ = None;
        r.labels.insert("bad-name".into(), "v".into());
        assert_eq!(check_shape(&r, &cfg).unwrap_err().field, "labels.bad-name");
    }
}
