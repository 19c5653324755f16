//! The rule model, in the shape of a Prometheus alerting rule (`alert`, `expr`, `for`,
//! `keep_firing_for`, `labels`, `annotations`) plus substrate's extras (`severity`,
//! `targets`, `public`). The JSON of the API and the YAML of a rules file are the same shape,
//! so one struct reads both. Also the small template language of annotations
//! (`{{ $labels.x }}`, `{{ $value }}`) and the alert fingerprint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A rule as written by people (API body, rules file). `for` and `keep_firing_for` are
/// PromQL durations (`5m`); absent means 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name, unique per org (`[A-Za-z_][A-Za-z0-9_.:-]{0,127}`).
    pub alert: String,
    /// PromQL (the supported subset) returning an instant vector.
    pub expr: String,
    /// How long the condition must hold before the alert fires (`5m`; default 0).
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// How long a firing alert keeps firing after its condition cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// critical, warning, info, …; default `labels.severity`, else `warning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Names of notification targets (webhooks).
    #[serde(default)]
    pub targets: Vec<String>,
    /// A firing alert of this rule shows on the public `/status` page.
    #[serde(default)]
    pub public: bool,
}

/// Where a stored rule came from: only `api` rules may be changed through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    File,
    Builtin,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::File => "file",
            Source::Builtin => "builtin",
        }
    }

    pub fn parse(s: &str) -> Source {
        match s {
            "file" => Source::File,
            "builtin" => Source::Builtin,
            _ => Source::Api,
        }
    }
}

impl Rule {
    /// The effective severity: the field, else `labels.severity`, else `warning`.
    pub fn severity(&self) -> String {
        self.severity
            .clone()
            .or_else(|| self.labels.get("severity").cloned())
            .unwrap_or_else(|| "warning".into())
    }

    /// `for` in milliseconds (0 when absent; validation has checked it parses).
    pub fn for_ms(&self) -> i64 {
        duration_ms(self.for_.as_deref())
    }

    pub fn keep_firing_ms(&self) -> i64 {
        duration_ms(self.keep_firing_for.as_deref())
    }

    /// The labels of the alert of one output series: the series' labels (without
    /// `__name__`), the rule's labels over them, `alertname` and `severity`.
    pub fn alert_labels(&self, series: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = series
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &self.labels {
            out.insert(k.clone(), v.clone());
        }
        out.insert("alertname".into(), self.alert.clone());
        out.insert("severity".into(), self.severity());
        out
    }

    /// The annotations with `{{ $labels.x }}` and `{{ $value }}` expanded.
    pub fn expand_annotations(
        &self,
        labels: &BTreeMap<String, String>,
        value: Option<f64>,
    ) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .map(|(k, v)| (k.clone(), expand(v, labels, value)))
            .collect()
    }
}

/// A PromQL duration in milliseconds; 0 when absent or unreadable (validated before).
pub fn duration_ms(s: Option<&str>) -> i64 {
    s.and_then(|s| promql_parser::util::parse_duration(s).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// Expands `{{ $labels.name }}`, `{{ $value }}` (and `{{ $labels }}`-less text as is). An
/// unknown template is left as written, so a typo shows rather than vanishing.
pub fn expand(text: &str, labels: &BTreeMap<String, String>, value: Option<f64>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            rest = &rest[start..];
            break;
        };
        let inner = rest[start + 2..start + len].trim();
        let whole = &rest[start..start + len + 2];
        match inner {
            "$value" => out.push_str(&value.map(|v| v.to_string()).unwrap_or_default()),
            _ => match inner.strip_prefix("$labels.") {
                Some(name) => out.push_str(labels.get(name).map(String::as_str).unwrap_or("")),
                None => out.push_str(whole),
            },
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The stable id of one alert: a hash of its org, rule and sorted labels.
pub fn fingerprint(org: &str, rule: &str, labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for part in [org, rule] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([1u8]);
        h.update(v.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand() {
        let labels = BTreeMap::from([("job".to_string(), "api".to_string())]);
        assert_eq!(
            expand("{{ $labels.job }} at {{$value}}", &labels, Some(2.5)),
            "api at 2.5"
        );
        assert_eq!(expand("{{ $labels.nope }}!", &labels, None), "!");
        assert_eq!(expand("{{ other }} {{", &labels, None), "{{ other }} {{");
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let b = BTreeMap::from([("a".to_string(), "2".to_string())]);
        assert_eq!(fingerprint("o", "r", &a), fingerprint("o", "r", &a));
        assert_ne!(fingerprint("o", "r", &a), fingerprint("o", "r", &b));
        assert_ne!(fingerprint("o", "r", &a), fingerprint("p", "r", &a));
    }
}
