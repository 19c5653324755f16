//! The state machine of one rule's alerts, as a pure function: from the rule, the query's
//! output at `now` and the stored active alerts, the transitions to commit and the firing
//! alerts whose condition still holds. inactive → pending (condition true, `for` > 0) →
//! firing (held ≥ `for`) → resolved (condition false, after `keep_firing_for`); a pending
//! alert that clears goes back to inactive; `for` = 0 goes straight to firing. A rule that
//! no longer exists resolves all its alerts.

use std::collections::{BTreeMap, HashMap};

use super::model::{Rule, fingerprint};
use super::state::{Active, Change};
use crate::alerts::event::{FIRING, INACTIVE, PENDING, RESOLVED};

/// One output series of the rule's expression: its labels and value.
pub type Output = (BTreeMap<String, String>, f64);

/// What one evaluation of one rule leads to.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// Firing alerts whose condition still holds: (fingerprint, value), to record for
    /// `keep_firing_for`.
    pub still_true: Vec<(String, f64)>,
}

fn fresh(org: &str, rule: &Rule, labels: BTreeMap<String, String>, v: f64, now: i64) -> Active {
    let annotations = rule.expand_annotations(&labels, Some(v));
    Active {
        fingerprint: fingerprint(org, &rule.alert, &labels),
        org: org.to_string(),
        rule: rule.alert.clone(),
        state: PENDING.into(),
        labels,
        annotations,
        severity: rule.severity(),
        targets: rule.targets.clone(),
        public: rule.public,
        value: Some(v),
        active_since: now,
        fired_at: None,
        last_true_at: now,
    }
}

/// A stored alert refreshed from the (possibly edited) rule at a transition.
fn refreshed(a: &Active, rule: &Rule, v: f64, now: i64) -> Active {
    Active {
        annotations: rule.expand_annotations(&a.labels, Some(v)),
        severity: rule.severity(),
        targets: rule.targets.clone(),
        public: rule.public,
        value: Some(v),
        last_true_at: now,
        ..a.clone()
    }
}

/// The transitions of alerts whose condition holds at `now`.
fn holding(
    org: &str,
    rule: &Rule,
    outputs: Vec<Output>,
    current: &HashMap<String, Active>,
    now: i64,
    d: &mut Decision,
) -> Vec<String> {
    let mut seen = Vec::new();
    for (series, v) in outputs {
        let labels = rule.alert_labels(&series);
        let fp = fingerprint(org, &rule.alert, &labels);
        if seen.contains(&fp) {
            continue; // two series with the same labels but for __name__: one alert
        }
        seen.push(fp.clone());
        match current.get(&fp) {
            None if rule.for_ms() == 0 => {
                let mut a = fresh(org, rule, labels, v, now);
                a.state = FIRING.into();
                a.fired_at = Some(now);
                d.changes.push(Change {
                    from: INACTIVE,
                    to: FIRING,
                    alert: a,
                });
            }
            None => {
                let a = fresh(org, rule, labels, v, now);
                d.changes.push(Change {
                    from: INACTIVE,
                    to: PENDING,
                    alert: a,
                });
            }
            Some(a) if a.state == PENDING && now - a.active_since >= rule.for_ms() => {
                let mut a = refreshed(a, rule, v, now);
                a.state = FIRING.into();
                a.fired_at = Some(now);
                d.changes.push(Change {
                    from: PENDING,
                    to: FIRING,
                    alert: a,
                });
            }
            Some(a) if a.state == FIRING => d.still_true.push((a.fingerprint.clone(), v)),
            Some(_) => {} // pending, `for` not reached yet
        }
    }
    seen
}

/// Decides one rule's transitions. `rule` is `None` when it was deleted.
pub fn decide(
    org: &str,
    rule: Option<&Rule>,
    outputs: Vec<Output>,
    current: Vec<Active>,
    now: i64,
) -> Decision {
    let mut d = Decision::default();
    let by_fp: HashMap<String, Active> = current
        .into_iter()
        .map(|a| (a.fingerprint.clone(), a))
        .collect();
    let seen = match rule {
        Some(r) => holding(org, r, outputs, &by_fp, now, &mut d),
        None => Vec::new(),
    };
    let keep = rule.map(Rule::keep_firing_ms).unwrap_or(0);
    let mut gone: Vec<&Active> = by_fp
        .values()
        .filter(|a| !seen.contains(&a.fingerprint))
        .collect();
    gone.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for a in gone {
        let to = if a.state == FIRING {
            if rule.is_some() && now - a.last_true_at < keep {
                continue; // keep_firing_for
            }
            RESOLVED
        } else {
            INACTIVE
        };
        let from = if a.state == FIRING { FIRING } else { PENDING };
        d.changes.push(Change {
            from,
            to,
            alert: a.clone(),
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_: Option<&str>, keep: Option<&str>) -> Rule {
        serde_json::from_value(serde_json::json!({
            "alert": "High", "expr": "x > 1", "for": for_, "keep_firing_for": keep,
            "annotations": {"summary": "{{ $labels.job }} is {{ $value }}"}
        }))
        .unwrap()
    }

    fn out(v: f64) -> Vec<Output> {
        vec![(
            BTreeMap::from([
                ("__name__".to_string(), "x".to_string()),
                ("job".to_string(), "api".to_string()),
            ]),
            v,
        )]
    }

    /// Applies a decision's changes to the stored set, as the commits would.
    fn apply(cur: &mut Vec<Active>, d: &Decision) {
        for c in &d.changes {
            cur.retain(|a| a.fingerprint != c.alert.fingerprint);
            if c.to == PENDING || c.to == FIRING {
                let mut a = c.alert.clone();
                a.state = c.to.into();
                cur.push(a);
            }
        }
    }

    fn steps(d: &Decision) -> Vec<(&str, &str)> {
        d.changes.iter().map(|c| (c.from, c.to)).collect()
    }

    #[test]
    fn pending_firing_resolved() {
        let r = rule(Some("10s"), None);
        let mut cur = Vec::new();
        let d = decide("o", Some(&r), out(5.0), cur.clone(), 0);
        assert_eq!(steps(&d), vec![(INACTIVE, PENDING)]);
        assert_eq!(d.changes[0].alert.annotations["summary"], "api is 5");
        assert_eq!(d.changes[0].alert.labels["alertname"], "High");
        assert!(!d.changes[0].alert.labels.contains_key("__name__"));
        apply(&mut cur, &d);
        assert!(steps(&decide("o", Some(&r), out(5.0), cur.clone(), 5_000)).is_empty());
        let d = decide("o", Some(&r), out(6.0), cur.clone(), 10_000);
        assert_eq!(steps(&d), vec![(PENDING, FIRING)]);
        apply(&mut cur, &d);
        let d = decide("o", Some(&r), out(6.0), cur.clone(), 11_000);
        assert_eq!(d.still_true.len(), 1);
        let d = decide("o", Some(&r), vec![], cur.clone(), 12_000);
        assert_eq!(steps(&d), vec![(FIRING, RESOLVED)]);
    }

    #[test]
    fn pending_clears_and_zero_for_fires_at_once() {
        let r = rule(Some("1m"), None);
        let mut cur = Vec::new();
        let d = decide("o", Some(&r), out(5.0), cur.clone(), 0);
        apply(&mut cur, &d);
        let d = decide("o", Some(&r), vec![], cur.clone(), 1_000);
        assert_eq!(steps(&d), vec![(PENDING, INACTIVE)]);
        let r0 = rule(None, None);
        let d = decide("o", Some(&r0), out(5.0), vec![], 0);
        assert_eq!(steps(&d), vec![(INACTIVE, FIRING)]);
    }

    #[test]
    fn keep_firing_for_and_deleted_rule() {
        let r = rule(None, Some("30s"));
        let mut cur = Vec::new();
        let d = decide("o", Some(&r), out(5.0), cur.clone(), 0);
        apply(&mut cur, &d);
        assert!(steps(&decide("o", Some(&r), vec![], cur.clone(), 10_000)).is_empty());
        let d = decide("o", Some(&r), vec![], cur.clone(), 30_000);
        assert_eq!(steps(&d), vec![(FIRING, RESOLVED)]);
        let d = decide("o", None, vec![], cur.clone(), 1_000);
        assert_eq!(steps(&d), vec![(FIRING, RESOLVED)]);
    }
}
