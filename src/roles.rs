//! The roles one binary can play (`serve --roles=…`). Each is a task with one entry point,
//! `run(ctx, shutdown)`; the HTTP server runs beside them in every process.

use std::fmt;
use std::str::FromStr;

use tokio_util::sync::CancellationToken;

use crate::app::AppContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// HTTP ingest, webhooks, the registry API and the other public APIs.
    Gateway,
    /// Moves outbox rows to Kafka (and prunes the embedded log).
    Relay,
    /// Runs the consumer groups: projections and sinks.
    Consumers,
    /// Runs the saga supervisors and their timers.
    Sagas,
    /// Sends the synthetic probe around the loop.
    Probe,
    /// Evaluates alert rules and delivers their notifications.
    Alerts,
}

pub const ALL: [Role; 6] = [
    Role::Gateway,
    Role::Relay,
    Role::Consumers,
    Role::Sagas,
    Role::Probe,
    Role::Alerts,
];

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Relay => "relay",
            Role::Consumers => "consumers",
            Role::Sagas => "sagas",
            Role::Probe => "probe",
            Role::Alerts => "alerts",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown role `{0}`; valid roles: gateway, relay, consumers, sagas, probe, alerts (or all)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        ALL.iter()
            .copied()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRole(s.trim().to_string()))
    }
}

/// Parses `gateway,relay` (or `all`) into distinct roles.
pub fn parse_roles(s: &str) -> Result<Vec<Role>, UnknownRole> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            return Ok(ALL.to_vec());
        }
        let r: Role = part.parse()?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        return Err(UnknownRole(String::new()));
    }
    Ok(out)
}

/// Runs one role until `shutdown`.
pub async fn run(role: Role, ctx: AppContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    match role {
        Role::Gateway => crate::gateway::run(ctx, shutdown).await,
        Role::Consumers => {
            // The projections, and the ClickHouse sink when analytics.clickhouse_url is set.
            // Telemetry retention and the settling of whole-metric rollups run beside its
            // consumer group.
            let sink = crate::analytics::sink::run(ctx.clone(), shutdown.clone());
            let upkeep = crate::telemetry::store::run_upkeep(ctx.clone(), shutdown.clone());
            tokio::try_join!(crate::consumers::run(ctx, shutdown), sink, upkeep).map(|_| ())
        }
        Role::Relay => crate::relay::run(ctx, shutdown).await,
        Role::Sagas => crate::media::role::run(ctx, shutdown).await,
        Role::Probe => crate::probe::run(ctx, shutdown).await,
        Role::Alerts => crate::alerts::run(ctx, shutdown).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles() {
        assert_eq!(
            parse_roles("gateway, relay").unwrap(),
            vec![Role::Gateway, Role::Relay]
        );
        assert_eq!(parse_roles("all").unwrap().len(), ALL.len());
        let e = parse_roles("gateway,bogus").unwrap_err();
        assert!(e.to_string().contains("bogus"));
    }
}
