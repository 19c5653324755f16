//! The allowlist: `config/routes.yaml` maps each ingest route to a topic and who may post to
//! it, and each webhook name to a topic and a secret. The file is watched and reloaded when
//! it changes; a broken file keeps the last good table and the reason is logged and kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::Watcher;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::auth::{Principal, PrincipalKind};
use crate::config::Secret;
use crate::schema::SchemaCatalog;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub topic: String,
    /// Principal kinds that may post: `user`, `service`. Admins always may.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// Scopes an API key needs (any one of them). Empty = any service.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_allow() -> Vec<String> {
    vec!["user".into(), "service".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub topic: String,
    /// The secret itself (`whsec_…` base64, or raw text)…
    #[serde(default)]
    pub secret: Option<String>,
    /// …or the name of an entry in `gateway.webhook_secrets`.
    #[serde(default)]
    pub secret_ref: Option<String>,
    /// Payload field whose value becomes the event key (default `user_id`).
    #[serde(default)]
    pub key_field: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: BTreeMap<String, RouteSpec>,
    #[serde(default)]
    webhooks: BTreeMap<String, WebhookSpec>,
}

/// A webhook with its secret resolved to bytes.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub topic: String,
    pub secret: Vec<u8>,
    pub key_field: String,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub routes: BTreeMap<String, RouteSpec>,
    pub webhooks: BTreeMap<String, Webhook>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0}: {1}")]
    Parse(String, String),
    #[error("{0}")]
    Invalid(String),
}

impl RouteSpec {
    /// Whether `p` may post to this route; `Err` carries the reason.
    pub fn permits(&self, p: &Principal) -> Result<(), String> {
        if p.admin {
            return Ok(());
        }
        if !self.allow.iter().any(|k| k == p.kind.as_str()) {
            return Err(format!(
                "{} principals may not post to this route",
                p.kind.as_str()
            ));
        }
        if p.kind == PrincipalKind::Service
            && !self.scopes.is_empty()
            && !self.scopes.iter().any(|s| p.has_scope(s))
        {
            return Err(format!(
                "needs one of the scopes: {}",
                self.scopes.join(", ")
            ));
        }
        Ok(())
    }
}

fn decode_secret(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match s.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("whsec_ secret is not base64: {e}")),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// Parses and checks a routes file: every topic must have a schema, every secret resolve.
pub fn parse(
    text: &str,
    origin: &str,
    schemas: &SchemaCatalog,
    secrets: &BTreeMap<String, Secret>,
) -> Result<RouteTable, RoutesError> {
    let file: RoutesFile =
        serde_yaml::from_str(text).map_err(|e| RoutesError::Parse(origin.into(), e.to_string()))?;
    for (name, r) in &file.routes {
        if schemas.topic(&r.topic).is_none() {
            return Err(RoutesError::Invalid(format!(
                "route {name}: no schema for topic {}",
                r.topic
            )));
        }
        for k in &r.allow {
            if k != "user" && k != "service" {
                return Err(RoutesError::Invalid(format!(
                    "route {name}: allow entries are `user` or `service`, not {k}"
                )));
            }
        }
    }
    let mut webhooks = BTreeMap::new();
    for (name, w) in file.webhooks {
        if schemas.topic(&w.topic).is_none() {
            return Err(RoutesError::Invalid(format!(
                "webhook {name}: no schema for topic {}",
                w.topic
            )));
        }
        let raw = match (&w.secret, &w.secret_ref) {
            (Some(s), None) => s.clone(),
            (None, Some(r)) => match secrets.get(r) {
                Some(s) => s.expose().to_string(),
                None => {
                    // Not configured in this deployment: the webhook stays closed.
                    tracing::warn!(webhook = %name, secret = %r, "gateway.webhook_secrets entry not set; webhook disabled");
                    continue;
                }
            },
            _ => {
                return Err(RoutesError::Invalid(format!(
                    "webhook {name}: give exactly one of secret or secret_ref"
                )));
            }
        };
        let secret = decode_secret(&raw)
            .map_err(|e| RoutesError::Invalid(format!("webhook {name}: {e}")))?;
        if secret.len() < 16 {
            return Err(RoutesError::Invalid(format!(
                "webhook {name}: secret shorter than 16 bytes"
            )));
        }
        webhooks.insert(
            name.clone(),
            Webhook {
                name,
                topic: w.topic,
                secret,
                key_field: w.key_field.unwrap_or_else(|| "user_id".into()),
            },
        );
    }
    Ok(RouteTable {
        routes: file.routes,
        webhooks,
    })
}

/// The live route table and the state of the last reload.
pub struct Routes {
    table: ArcSwap<RouteTable>,
    path: PathBuf,
    last_error: Mutex<Option<String>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    schemas: Arc<SchemaCatalog>,
    secrets: BTreeMap<String, Secret>,
}

impl Routes {
    /// Loads the file; a missing file is an empty table (nothing is routable), a broken one
    /// is an error at start-up.
    pub fn load(
        path: &Path,
        schemas: Arc<SchemaCatalog>,
        secrets: BTreeMap<String, Secret>,
    ) -> Result<Self, RoutesError> {
        let r = Routes {
            table: ArcSwap::from_pointee(RouteTable::default()),
            path: path.to_path_buf(),
            last_error: Mutex::new(None),
            stamp: Mutex::new(None),
            schemas,
            secrets,
        };
        if path.exists() {
            let t = r.read()?;
            r.table.store(Arc::new(t));
            *r.stamp.lock() = file_stamp(path);
        } else {
            tracing::warn!(path = %path.display(), "routes file not found: no ingest routes are open");
        }
        Ok(r)
    }

    fn read(&self) -> Result<RouteTable, RoutesError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| RoutesError::Read(self.path.display().to_string(), e.to_string()))?;
        parse(
            &text,
            &self.path.display().to_string(),
            &self.schemas,
            &self.secrets,
        )
    }

    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Re-reads the file if it changed since the last look.
    pub fn reload_if_changed(&self) {
        let now = file_stamp(&self.path);
        {
            let mut stamp = self.stamp.lock();
            if now == *stamp {
                return;
            }
            *stamp = now;
        }
        self.reload();
    }

    pub fn reload(&self) {
        match self.read() {
            Ok(t) => {
                tracing::info!(
                    routes = t.routes.len(),
                    webhooks = t.webhooks.len(),
                    "routes reloaded"
                );
                self.table.store(Arc::new(t));
                *self.last_error.lock() = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "routes file rejected; keeping the last good routes");
                *self.last_error.lock() = Some(e.to_string());
            }
        }
    }

    /// Watches the file (through its folder, so editors that replace files are seen) with a
    /// periodic check as a fallback, until `shutdown`.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = self.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let file_name = self.path.file_name().map(|f| f.to_os_string());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|f| f.to_os_string()) == file_name)
            {
                let _ = tx.send(());
            }
        })
        .ok();
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if let Some(w) = watcher.as_mut()
            && let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(error = %e, "cannot watch the routes folder; relying on periodic checks");
        }
        tokio::spawn(async move {
            let _keep = watcher;
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = rx.recv() => {
                        // Let a burst of events (truncate + write) settle.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        while rx.try_recv().is_ok() {}
                        me.reload_if_changed();
                    }
                    _ = tick.tick() => me.reload_if_changed(),
                }
            }
        });
    }
}

fn file_stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
