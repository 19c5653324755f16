//! `AppContext`: everything a role needs, built once from the configuration and shared
//! (cheaply cloned) by every task and HTTP handler.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::gateway::auth::Authenticator;
use crate::gateway::ratelimit::RateLimiter;
use crate::gateway::routes::Routes;
use crate::log::EventLog;
use crate::outbox::{Appender, Outbox};
use crate::schema::registry::builtin::BuiltinRegistry;
use crate::schema::registry::external::ExternalRegistry;
use crate::schema::{Compatibility, Registry, SchemaCatalog};
use crate::store::Store;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("store")]
    Store(#[from] crate::store::StoreError),
    #[error("schemas")]
    Schema(#[from] crate::schema::SchemaError),
    #[error("routes")]
    Routes(#[from] crate::gateway::routes::RoutesError),
    #[error("auth")]
    Auth(#[from] crate::gateway::auth::jwt::JwtConfigError),
    #[error("config: {0}")]
    Config(String),
    #[error("log")]
    Log(#[from] crate::log::LogError),
}

pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Store,
    pub schemas: Arc<SchemaCatalog>,
    pub outbox: Outbox,
    pub appender: Appender,
    pub auth: Arc<Authenticator>,
    pub rate_limiter: Arc<RateLimiter>,
    pub routes: Arc<Routes>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<dyn EventLog>,
    /// Object storage (local files, S3, GCS) and its signed URLs.
    pub objects: Arc<crate::objects::Objects>,
    /// The media component's process-wide state (timer wake-ups).
    pub media: Arc<crate::media::Media>,
    /// Notification streams: the fan-out hub and stream tokens.
    pub realtime: Arc<crate::realtime::Realtime>,
    /// Where event counts are read from (the store, or ClickHouse when configured).
    pub analytics: Arc<crate::analytics::Analytics>,
    /// Users' telemetry: where samples, rollups and log lines are written and read.
    pub telemetry: Arc<crate::telemetry::store::Telemetry>,
    /// Component checks and the status document (`/status`, `/readyz`, the probe).
    pub status: Arc<crate::status::StatusService>,
    /// Wakes a waiting probe when its event has been projected.
    pub probe: Arc<crate::probe::ProbeHub>,
}

#[derive(Clone)]
pub struct AppContext(Arc<AppInner>);

impl Deref for AppContext {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppContext {
    /// Connects the store (migrating when configured to), loads and registers the schemas,
    /// reads the routes, and starts the group-commit writers.
    pub async fn build(config: Config) -> Result<AppContext, BuildError> {
        let store = Store::connect(&config.store).await?;
        let migrate = config.store.migrate_on_start.unwrap_or(config.is_sqlite());
        if migrate {
            store.migrate().await?;
        }
        Self::build_with_store(config, store).await
    }

    pub async fn build_with_store(config: Config, store: Store) -> Result<AppContext, BuildError> {
        let level =
            Compatibility::parse(&config.schemas.compatibility).map_err(BuildError::Config)?;
        let registry: Arc<dyn Registry> = match &config.schemas.registry_url {
            Some(url) => Arc::new(ExternalRegistry::new(
                url,
                config.schemas.registry_auth.as_ref().map(|s| s.expose()),
            )),
            None => Arc::new(BuiltinRegistry::new(store.clone(), level)),
        };
        let rules = crate::schema::Rules::standard(&config.media);
        let schemas = Arc::new(SchemaCatalog::load(&config.schemas.dir, registry, rules).await?);
        let routes = Arc::new(Routes::load(
            &config.gateway.routes_file,
            schemas.clone(),
            config.gateway.webhook_secrets.clone(),
        )?);
        let auth = Arc::new(Authenticator::new(&config.auth, store.clone())?);
        if let Some(j) = auth.jwt.jwks()
            && let Err(e) = j.refresh().await
        {
            tracing::warn!(error = %e, "initial JWKS fetch failed; will retry on demand");
        }
        let outbox = Outbox::new(config.log.relay_lanes, config.is_embedded_log());
        let appender = Appender::start(store.clone(), outbox.clone(), &config.gateway.group_commit);
        if let Some(pool) = store.pg_pool() {
            crate::outbox::signal::listen_pg(pool.clone(), outbox.signal.clone());
        }
        let log = crate::log::open(&config, &store, &outbox.signal).await?;
        if !config.is_embedded_log() && config.log.create_topics {
            // Best effort: with the broker down the gateway still starts; the relay retries.
            if let Err(e) =
                crate::log::kafka::topics::ensure_for(&config.log, &schemas.topics()).await
            {
                tracing::warn!(error = %e, "creating topics at start-up failed");
            }
        }
        let metrics = Arc::new(Metrics::new());
        let objects = Arc::new(
            crate::objects::Objects::open(&config)
                .map_err(|e| BuildError::Config(e.to_string()))?,
        );
        // Every topic's relay series exist from the start (0 until something is relayed), so
        // dashboards and alerts see a value rather than no data.
        for t in schemas.topics() {
            metrics.relay_published.with_label_values(&[&t]);
            metrics.relay_errors.with_label_values(&[&t]);
        }
        metrics
            .store_up
            .with_label_values(&[store.backend().as_str()])
            .set(1);
        let realtime = Arc::new(crate::realtime::Realtime::new(
            &config.realtime,
            &config.telemetry.tail,
            store.clone(),
        ));
        let analytics = Arc::new(
            crate::analytics::Analytics::new(&config.analytics, store.clone())
                .map_err(|e| BuildError::Config(e.to_string()))?,
        );
        let telemetry = Arc::new(crate::telemetry::store::Telemetry::new(
            store.clone(),
            &analytics,
        ));
        Ok(AppContext(Arc::new(AppInner {
            rate_limiter: Arc::new(RateLimiter::new(config.gateway.rate_limit.clone())),
            config: Arc::new(config),
            store,
            schemas,
            outbox,
            appender,
            auth,
            routes,
            metrics,
            log,
            objects,
            media: Arc::new(crate::media::Media::new()),
            realtime,
            analytics,
            telemetry,
            status: Arc::new(crate::status::StatusService::new()),
            probe: Arc::new(crate::probe::ProbeHub::default()),
        })))
    }
}
