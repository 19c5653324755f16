//! The contract between the evaluator and the notifier: one `internal.alerts.transitions`
//! event per state change of one alert (`avro/internal/alerts/transitions.avsc`), keyed by
//! `{org}/{rule}` so one rule's transitions stay in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The topic of alert transitions.
pub const TOPIC: &str = "internal.alerts.transitions";

/// Alert states as they appear in events, history and the API.
pub const INACTIVE: &str = "inactive";
pub const PENDING: &str = "pending";
pub const FIRING: &str = "firing";
pub const RESOLVED: &str = "resolved";

/// One transition, as the event's JSON form (the Avro record's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    #[serde(default = "one")]
    pub version: i32,
    pub id: String,
    pub org: String,
    pub rule: String,
    pub fingerprint: String,
    pub sequence: i64,
    pub from: String,
    pub to: String,
    pub at: i64,
    #[serde(default)]
    pub active_since: Option<i64>,
    #[serde(default)]
    pub value: Option<f64>,
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub public: bool,
}

fn one() -> i32 {
    1
}

impl Transition {
    /// The event key: one rule's transitions on one partition, in order.
    pub fn key(&self) -> String {
        format!("{}/{}", self.org, self.rule)
    }
}
