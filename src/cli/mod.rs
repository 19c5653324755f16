//! The command line: `serve`, `migrate`, `config`, `openapi`, `token mint`, `apikey …`. Errors end here
//! as `anyhow` with context; everything below uses typed errors.

mod progress;
mod relay;
mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::config::Config;
use crate::gateway::auth::ApiKeys;
use crate::gateway::auth::jwt::{self, MintRequest};
use crate::store::Store;
use progress::{Progress, report};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "substrate",
    version,
    about = "An event-driven substrate in one binary"
)]
pub struct Cli {
    /// Configuration file (default: config/substrate.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run substrate: the HTTP server plus the given roles.
    Serve {
        /// Comma-separated roles: gateway, relay, consumers, sagas, probe, or all.
        #[arg(long, default_value = "all")]
        roles: String,
    },
    /// Apply the store's migrations (idempotent).
    Migrate,
    /// Print the effective configuration as TOML, secrets redacted.
    Config,
    /// Print the OpenAPI 3.1 document of the HTTP API (as `GET /openapi.json` serves it, with
    /// one operation per route of the configured routes.yaml).
    Openapi,
    /// Exit 0 when the local server answers /healthz (container health checks).
    Healthcheck,
    /// The status page's component table, from a running server's /status.json.
    Status {
        /// The server (default: http.listen of this configuration).
        #[arg(long)]
        url: Option<String>,
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read-model snapshots: take, list, restore.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// API keys for services.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Dead letters: list, show, redrive.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The relay: rows it parked, and the lane count.
    Relay {
        #[command(subcommand)]
        command: relay::RelayCommand,
    },
    /// Consumer groups of the embedded log: positions, and forgetting a removed group.
    Consumers {
        #[command(subcommand)]
        command: relay::ConsumersCommand,
    },
    /// Kafka topics: the schemas' topics and their dead-letter topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Rewind a consumer group on a topic (applied by the group's running consumer).
    Replay {
        #[arg(long)]
        topic: String,
        /// The group to rewind (default: every group that reads the topic).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, conflicts_with_all = ["from_offset", "from_time"])]
        from_beginning: bool,
        #[arg(long, conflicts_with = "from_time")]
        from_offset: Option<i64>,
        /// RFC 3339 time.
        #[arg(long)]
        from_time: Option<String>,
        /// Also empty the read model and forget the group's inbox, so it is rebuilt from the log.
        #[arg(long)]
        rebuild: bool,
        /// Seconds to wait for the running consumer to apply it (0 = do not wait).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a consumer group's read model.
    Take {
        #[arg(long)]
        group: String,
    },
    /// List snapshots.
    List {
        #[arg(long)]
        group: Option<String>,
    },
    /// Restore a snapshot: the group's running consumer loads it and resumes from its positions.
    Restore {
        #[arg(long)]
        id: i64,
        /// Seconds to wait for the running consumer to apply it (0 = do not wait).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create the missing topics (partitions and replication from `[log]`).
    Create,
    /// List the broker's topics with their partition counts.
    List,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List open dead letters.
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// Include redriven ones.
        #[arg(long)]
        all: bool,
    },
    /// Show one dead letter with its headers and decoded payload.
    Show { id: i64 },
    /// Republish dead letters to their topic for their group.
    Redrive {
        /// Dead-letter ids (repeatable).
        #[arg(long)]
        id: Vec<i64>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// RFC 3339: failed at or after.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339: failed before.
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint an HS256 JWT with the configured (or development) secret.
    Mint {
        /// The subject (user id).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds (default: auth.dev_token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
        /// A role to grant, e.g. admin (repeatable).
        #[arg(long)]
        role: Vec<String>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// The email claim.
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApikeyCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        /// Comma- or space-separated scopes, e.g. "events:write admin".
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&cfg.store)
        .await
        .context("connecting to the store")?;
    if cfg.store.migrate_on_start.unwrap_or(cfg.is_sqlite()) {
        store.migrate().await.context("migrating the store")?;
    }
    Ok(store)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    crate::telemetry::logging::init(&cfg.telemetry);
    match cli.command {
        Command::Serve { roles } => {
            let roles = crate::roles::parse_roles(&roles)?;
            let listen = cfg.http.listen;
            let ctx = AppContext::build(cfg).await.context("starting substrate")?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let shutdown = CancellationToken::new();
            crate::server::cancel_on_signals(shutdown.clone());
            let running = crate::server::start(ctx, roles, listener, shutdown.clone())?;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            let res = running.wait().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            crate::telemetry::tracing::shutdown();
            res
        }
        Command::Migrate => {
            let store = Store::connect(&cfg.store)
                .await
                .context("connecting to the store")?;
            let spin = Progress::spinner("applying migrations");
            let res = store.migrate().await.context("migrating");
            spin.done();
            res?;
            store.close().await;
            let backend = store.backend().as_str();
            report(
                format!("migrations applied ({backend})"),
                json!({ "migrated": true, "backend": backend }),
            );
            Ok(())
        }
        Command::Status { url, json } => status::run(&cfg, url, json).await,
        Command::Snapshot { command } => snapshot(cfg, command).await,
        Command::Config => {
            print!("{}", cfg.to_redacted_toml()?);
            Ok(())
        }
        Command::Openapi => {
            let ctx = AppContext::build(cfg).await.context("starting substrate")?;
            let (_, api) = crate::http::api_router(&crate::roles::ALL, None).split_for_parts();
            let doc = crate::http::openapi::document(&ctx, &crate::http::openapi::finish(api));
            println!("{}", serde_json::to_string_pretty(&doc)?);
            ctx.appender.close().await;
            ctx.store.close().await;
            Ok(())
        }
        Command::Relay { command } => relay::run_relay(cfg, command).await,
        Command::Consumers { command } => relay::run_consumers(cfg, command).await,
        Command::Topics { command } => {
            use crate::log::kafka::topics;
            if cfg.is_embedded_log() {
                anyhow::bail!("log.url is `embedded`: topics exist only with Kafka (kafka://…)");
            }
            match command {
                TopicsCommand::Create => {
                    let wanted = topics::wanted(&crate::schema::topics_in(&cfg.schemas.dir)?);
                    let spin = Progress::spinner(format!("creating {} topics", wanted.len()));
                    let created = topics::create(&cfg.log, &wanted).await;
                    spin.done();
                    let created = created?;
                    report(
                        format!(
                            "created {} of {} topics ({} existed)",
                            created.len(),
                            wanted.len(),
                            wanted.len() - created.len()
                        ),
                        json!({ "created": created, "wanted": wanted.len() }),
                    );
                }
                TopicsCommand::List => {
                    for t in topics::list(&cfg.log).await? {
                        println!("{}\t{}", t.name, t.partitions);
                    }
                }
            }
            Ok(())
        }
        Command::Healthcheck => {
            let base = status::local_base(&cfg);
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?
                .get(format!("{base}/healthz"))
                .send()
                .await
                .with_context(|| format!("no answer from {base}"))?;
            anyhow::ensure!(
                resp.status().is_success(),
                "/healthz answered {}",
                resp.status()
            );
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Mint {
                    sub,
                    ttl,
                    role,
                    scope,
                    email,
                },
        } => {
            let token = jwt::mint(
                &cfg.auth,
                MintRequest {
                    sub: &sub,
                    ttl_secs: ttl.unwrap_or(cfg.auth.dev_token_ttl_secs),
                    roles: role,
                    scope,
                    email,
                },
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Dlq { command } => {
            use crate::consumers::admin::DlqQuery;
            use crate::consumers::dlq;
            let ctx = AppContext::build(cfg).await.context("starting substrate")?;
            match command {
                DlqCommand::List { group, topic, all } => {
                    let q = DlqQuery {
                        group,
                        topic,
                        all,
                        ..Default::default()
                    };
                    for d in dlq::list(&ctx.store, &q.filter()?).await? {
                        let state = if d.redriven_at.is_some() {
                            "redriven"
                        } else {
                            "open"
                        };
                        println!(
                            "{}\t{}\t{}\t{}\t{}/{}\t{}\t{}",
                            d.id,
                            state,
                            crate::events::rfc3339_micros(d.failed_at),
                            d.group,
                            d.topic,
                            d.offset,
                            d.attempts,
                            d.error
                        );
                    }
                }
                DlqCommand::Show { id } => {
                    let f = dlq::Filter {
                        ids: vec![id],
                        include_redriven: true,
                        ..Default::default()
                    };
                    let d = dlq::list(&ctx.store, &f)
                        .await?
                        .into_iter()
                        .next()
                        .with_context(|| format!("no dead letter {id}"))?;
                    let payload = ctx.schemas.decode_json(&d.payload).await.ok();
                    let mut v = serde_json::to_value(&d)?;
                    v["payload"] = payload.unwrap_or(serde_json::Value::Null);
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                DlqCommand::Redrive {
                    id,
                    group,
                    topic,
                    since,
                    until,
                } => {
                    if id.is_empty()
                        && group.is_none()
                        && topic.is_none()
                        && since.is_none()
                        && until.is_none()
                    {
                        anyhow::bail!("give --id, --group, --topic, --since or --until");
                    }
                    let q = DlqQuery {
                        ids: id,
                        group,
                        topic,
                        since,
                        until,
                        ..Default::default()
                    };
                    let n = redrive_in_chunks(&ctx, &q.filter()?).await?;
                    report(
                        format!("redriven {n} dead letter(s)"),
                        json!({ "redriven": n }),
                    );
                }
            }
            ctx.appender.close().await;
            ctx.store.close().await;
            Ok(())
        }
        Command::Replay {
            topic,
            group,
            from_beginning,
            from_offset,
            from_time,
            rebuild,
            wait,
        } => {
            use crate::consumers::admin;
            let to = admin::target(from_beginning, from_offset, from_time.as_deref())?;
            let ctx = AppContext::build(cfg).await.context("starting substrate")?;
            let reqs = admin::request_replay(&ctx, &topic, group.as_deref(), to, rebuild).await?;
            let ids: Vec<i64> = reqs.iter().map(|(_, id)| *id).collect();
            let applied = wait > 0 && {
                let what = if rebuild { "rebuild" } else { "replay" };
                let spin = Progress::spinner(format!(
                    "waiting for {} group(s) to apply the {what}",
                    reqs.len()
                ));
                let r = admin::wait_applied(&ctx, &ids, std::time::Duration::from_secs(wait)).await;
                spin.done();
                r?
            };
            let groups: Vec<String> = reqs
                .iter()
                .map(|(g, id)| format!("group {g} (request {id})"))
                .collect();
            report(
                format!(
                    "replay of {topic} for {}: {}",
                    groups.join(", "),
                    if applied {
                        "applied"
                    } else {
                        "queued: it applies when the group's consumer next runs"
                    }
                ),
                json!({
                    "topic": topic,
                    "requests": reqs.iter().map(|(g, id)| json!({ "group": g, "request_id": id })).collect::<Vec<_>>(),
                    "applied": applied,
                }),
            );
            ctx.appender.close().await;
            ctx.store.close().await;
            Ok(())
        }
        Command::Apikey { command } => {
            let store = open_store(&cfg).await?;
            let keys = ApiKeys::new(store.clone(), &cfg.auth);
            match command {
                ApikeyCommand::Create { name, scopes } => {
                    let scopes: Vec<String> = scopes
                        .split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    let (key, rec) = keys
                        .create(&name, &scopes)
                        .await
                        .context("creating the key")?;
                    eprintln!(
                        "created API key {} ({}) with scopes [{}]; it is shown only once:",
                        rec.name,
                        rec.id,
                        rec.scopes.join(" ")
                    );
                    println!("{key}");
                }
                ApikeyCommand::List => {
                    for k in keys.list().await? {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!("{}\t{}\t{}\t{}", k.name, k.id, state, k.scopes.join(" "));
                    }
                }
                ApikeyCommand::Revoke { name } => {
                    if keys.revoke(&name).await? {
                        println!("revoked {name}");
                    } else {
                        anyhow::bail!("no active key named {name}");
                    }
                }
            }
            store.close().await;
            Ok(())
        }
    }
}

/// Redrives the dead letters `f` matches a chunk at a time, with a progress bar; returns how
/// many. Each chunk is one transaction, so an interruption keeps what was done.
async fn redrive_in_chunks(
    ctx: &AppContext,
    f: &crate::consumers::dlq::Filter,
) -> anyhow::Result<usize> {
    use crate::consumers::dlq;
    const CHUNK: usize = 100;
    let all = dlq::Filter {
        include_redriven: false,
        limit: Some(i64::MAX),
        ..f.clone()
    };
    let ids: Vec<i64> = dlq::list(&ctx.store, &all)
        .await?
        .iter()
        .map(|d| d.id)
        .collect();
    let bar = Progress::bar(ids.len() as u64, "redriving dead letters");
    let mut n = 0;
    for chunk in ids.chunks(CHUNK) {
        let one = dlq::Filter {
            ids: chunk.to_vec(),
            ..Default::default()
        };
        let done = dlq::redrive(&ctx.store, &ctx.outbox, &one).await;
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                bar.done();
                return Err(e.into());
            }
        };
        n += done.len();
        bar.inc(chunk.len() as u64);
    }
    bar.done();
    Ok(n)
}

/// `substrate snapshot …`.
async fn snapshot(cfg: Config, command: SnapshotCommand) -> anyhow::Result<()> {
    use crate::projections::snapshot as snap;
    let ctx = AppContext::build(cfg).await.context("starting substrate")?;
    let res = match command {
        SnapshotCommand::Take { group } => {
            let spin = Progress::spinner(format!("snapshotting {group}"));
            let info = snap::take(&ctx, &group).await;
            spin.done();
            info.map(|i| {
                report(
                    format!("snapshot {} of {}: {} rows", i.id, i.group, i.row_count),
                    serde_json::to_value(&i).unwrap_or_default(),
                )
            })
            .map_err(anyhow::Error::from)
        }
        SnapshotCommand::List { group } => snap::list(&ctx.store, group.as_deref())
            .await
            .map(|items| {
                for i in items {
                    report(
                        format!(
                            "{}\t{}\t{}\t{} rows",
                            i.id,
                            i.group,
                            crate::events::rfc3339_micros(i.created_at),
                            i.row_count
                        ),
                        serde_json::to_value(&i).unwrap_or_default(),
                    );
                }
            })
            .map_err(anyhow::Error::from),
        SnapshotCommand::Restore { id, wait } => restore(&ctx, id, wait).await,
    };
    ctx.appender.close().await;
    ctx.store.close().await;
    res
}

async fn restore(ctx: &AppContext, id: i64, wait: u64) -> anyhow::Result<()> {
    let (group, request) = crate::projections::snapshot::request_restore(ctx, id).await?;
    let applied = wait > 0 && {
        let spin = Progress::spinner(format!("waiting for {group} to load snapshot {id}"));
        let r = crate::consumers::admin::wait_applied(
            ctx,
            &[request],
            std::time::Duration::from_secs(wait),
        )
        .await;
        spin.done();
        r?
    };
    report(
        format!(
            "restore of snapshot {id} into {group} (request {request}): {}",
            if applied {
                "applied"
            } else {
                "queued: it applies when the group's consumer next runs"
            }
        ),
        json!({ "snapshot": id, "group": group, "request_id": request, "applied": applied }),
    );
    Ok(())
}
