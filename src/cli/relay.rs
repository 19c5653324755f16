//! `substrate relay …` (parked rows, the lane count) and `substrate consumers …` (groups that
//! hold embedded retention back): operator commands on the store, shared with the admin HTTP
//! API through `crate::relay::parked`, `crate::relay::layout` and `crate::relay::retention`.

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::relay::{layout, parked, retention};

#[derive(Subcommand, Debug)]
pub enum RelayCommand {
    /// Rows the relay cannot send: list, redrive, discard.
    Parked {
        #[command(subcommand)]
        command: ParkedCommand,
    },
    /// Change the number of key-hash lanes (safe while relays run; see docs/log.md).
    SetLanes { lanes: u32 },
    /// Print the lane count in use (the store's) and the configured one.
    Lanes,
}

#[derive(Subcommand, Debug)]
pub enum ParkedCommand {
    /// List parked rows (open ones; --all also resolved ones).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Let the relay try parked rows again; their keys drain from them on, in order.
    Redrive {
        /// Parked-row ids (repeatable).
        #[arg(long)]
        id: Vec<i64>,
        /// Every open parked row.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Give up on parked rows: marked done without being sent; their keys go on without them.
    Discard {
        /// Parked-row ids (repeatable).
        #[arg(long, required = true)]
        id: Vec<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConsumersCommand {
    /// Committed positions of the embedded log's consumer groups (they hold retention back).
    List,
    /// Forget a decommissioned group's positions, so it no longer holds retention back.
    Forget {
        #[arg(long)]
        group: String,
    },
}

pub async fn run_relay(cfg: Config, command: RelayCommand) -> anyhow::Result<()> {
    let store = super::open_store(&cfg).await?;
    match command {
        RelayCommand::Parked { command } => parked_command(&store, command).await?,
        RelayCommand::SetLanes { lanes } => {
            anyhow::ensure!(lanes >= 1, "the lane count must be at least 1");
            let ttl = std::time::Duration::from_millis(cfg.log.relay_lease_ttl_ms);
            let done = layout::set_lanes(&store, lanes, ttl)
                .await
                .context("changing the lane count")?;
            println!("{}", serde_json::to_string(&done)?);
        }
        RelayCommand::Lanes => {
            let stored = layout::stored(&store).await?;
            println!(
                "{}",
                serde_json::json!({ "stored": stored, "configured": cfg.log.relay_lanes })
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn parked_command(store: &crate::store::Store, command: ParkedCommand) -> anyhow::Result<()> {
    match command {
        ParkedCommand::List { all } => {
            for p in parked::list(store, all).await? {
                let state = p.resolution.as_deref().unwrap_or("open");
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\theld={}\tattempts={}\t{}",
                    p.id,
                    state,
                    crate::events::rfc3339_micros(p.parked_at),
                    p.topic,
                    p.event_key,
                    p.event_id,
                    p.held_rows,
                    p.attempts,
                    p.error
                );
            }
        }
        ParkedCommand::Redrive { id, all } => {
            anyhow::ensure!(all || !id.is_empty(), "give --id (repeatable) or --all");
            let which = if all {
                parked::Which::All
            } else {
                parked::Which::Ids(id)
            };
            let done = parked::redrive(store, &which).await?;
            println!("redriven {} parked row(s)", done.len());
        }
        ParkedCommand::Discard { id } => {
            let done = parked::discard(store, &parked::Which::Ids(id)).await?;
            println!("discarded {} parked row(s)", done.len());
        }
    }
    Ok(())
}

pub async fn run_consumers(cfg: Config, command: ConsumersCommand) -> anyhow::Result<()> {
    let store = super::open_store(&cfg).await?;
    match command {
        ConsumersCommand::List => {
            for g in retention::positions(&store).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    g.group,
                    g.topic,
                    g.next_offset,
                    crate::events::rfc3339_micros(g.updated_at)
                );
            }
        }
        ConsumersCommand::Forget { group } => {
            let n = retention::forget_group(&store, &group).await?;
            anyhow::ensure!(n > 0, "no committed positions for group {group}");
            println!("forgot group {group} ({n} position(s))");
        }
    }
    store.close().await;
    Ok(())
}
