//! The JSON body of a notification, in the spirit of Alertmanager's webhook:
//! `{type, version, org, rule, status, groupKey, alerts: [...]}`, one entry per alert (at most
//! one transition of each). Documented in docs/alerts-notifications.md; the body is built once,
//! when the notification is formed, and stored, so retries send the same bytes.

use serde_json::{Value, json};

use crate::alerts::event::{FIRING, Transition};

/// Version of the body's shape.
pub const VERSION: i64 = 1;

fn rfc3339_ms(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// One alert of the body.
fn alert(t: &Transition) -> Value {
    let ends = (t.to != FIRING && t.to != crate::alerts::event::PENDING).then_some(t.at);
    json!({
        "fingerprint": t.fingerprint,
        "status": t.to,
        "from": t.from,
        "to": t.to,
        "sequence": t.sequence,
        "transitionId": t.id,
        "labels": t.labels,
        "annotations": t.annotations,
        "severity": t.severity,
        "value": t.value,
        "startsAt": rfc3339_ms(t.active_since.unwrap_or(t.at)),
        "endsAt": ends.map(rfc3339_ms).unwrap_or(Value::Null),
    })
}

/// The body for `alerts` (transitions of one rule): the status is `firing` when any alert
/// fires, else that of the first alert; the type is `alert.<status>`.
pub fn body(org: &str, rule: &str, alerts: &[Transition]) -> String {
    let status = if alerts.iter().any(|t| t.to == FIRING) {
        FIRING.to_string()
    } else {
        alerts
            .first()
            .map(|t| t.to.clone())
            .unwrap_or_else(|| crate::alerts::event::RESOLVED.to_string())
    };
    json!({
        "type": format!("alert.{status}"),
        "version": VERSION,
        "org": org,
        "rule": rule,
        "status": status,
        "groupKey": format!("{org}/{rule}"),
        "alerts": alerts.iter().map(alert).collect::<Vec<_>>(),
    })
    .to_string()
}
