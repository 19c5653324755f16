//! Test harness: start substrate in-process on a fresh store (a temp SQLite file, or a new
//! PostgreSQL database), mint tokens, make requests, and clean up.

#![allow(dead_code)]

pub mod gate;
pub mod kafka;
pub mod pg;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use substrate::app::AppContext;
use substrate::config::{Config, Secret};
use substrate::roles::Role;
use substrate::server::Running;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-test-secret-test-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `both!(scenario)` runs `async fn scenario(Backend)` once per backend.
macro_rules! both {
    ($f:ident) => {
        mod $f {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$f($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$f($crate::support::Backend::Postgres).await
            }
        }
    };
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const ROUTES: &str = r#"
routes:
  message:
    topic: public.user.message.events
    allow: [user, service]
    scopes: [events:write]
  login:
    topic: public.identity.login.events
    allow: [service]
    scopes: [identity:write]
  probe:
    topic: internal.platform.probe
    allow: [service]
webhooks:
  login:
    topic: public.identity.login.events
    secret: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
"#;

/// The raw bytes of the `login` webhook secret above.
pub const WEBHOOK_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Whether the production column runs on Kafka (the default) or, with
/// `SUBSTRATE_TEST_LOG=embedded`, on PostgreSQL's embedded log.
pub fn kafka_column() -> bool {
    std::env::var("SUBSTRATE_TEST_LOG").map_or(true, |v| v != "embedded")
}

/// A store for one test: where it lives and how to drop it afterwards. The production column
/// (PostgreSQL) comes with its own Kafka broker.
pub struct TestStore {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_db: Option<String>,
    pub kafka: Option<kafka::Broker>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> TestStore {
        let broker = (backend == Backend::Postgres && kafka_column()).then(kafka::Broker::start);
        Self::with_broker(backend, broker).await
    }

    /// A store with the given broker (`None`: the embedded log).
    pub async fn with_broker(backend: Backend, kafka: Option<kafka::Broker>) -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => TestStore {
                backend,
                url: format!("sqlite://{}/substrate.db", dir.path().display()),
                dir,
                pg_db: None,
                kafka,
            },
            Backend::Postgres => {
                let (url, name) = pg::create_database().await;
                TestStore {
                    backend,
                    url,
                    dir,
                    pg_db: Some(name),
                    kafka,
                }
            }
        }
    }

    /// `kafka` or `embedded`.
    pub fn log_name(&self) -> &'static str {
        if self.kafka.is_some() {
            "kafka"
        } else {
            "embedded"
        }
    }

    pub async fn drop_db(&self) {
        if let Some(name) = &self.pg_db {
            pg::drop_database(name).await;
        }
    }
}

/// A configuration for tests on `store`: schemas from the repository, routes in a temp file,
/// a fixed HS256 secret, and generous rate limits.
pub fn test_config(store: &TestStore) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.http.shutdown_grace_secs = 5;
    c.store.url = Secret::new(store.url.clone());
    c.store.migrate_on_start = Some(true);
    c.store.max_connections = 8;
    if let Some(b) = &store.kafka {
        c.log.url = b.url();
        c.log.partitions = 2;
        c.log.poll_interval_ms = 100;
    }
    c.schemas.dir = repo().join("avro");
    let routes = store.dir.path().join("routes.yaml");
    if !routes.exists() {
        std::fs::write(&routes, ROUTES).expect("write routes");
    }
    c.gateway.routes_file = routes;
    c.auth.hs256_secret = Some(Secret::new(SECRET));
    c.auth.dev_secret_file = store.dir.path().join("jwt-secret");
    c.gateway.rate_limit.user_per_sec = 10_000.0;
    c.gateway.rate_limit.service_per_sec = 10_000.0;
    // Every test client is 127.0.0.1: tests that exercise the per-address limit set their own.
    c.gateway.rate_limit.per_address_per_sec = 1_000_000.0;
    c.gateway.rate_limit.per_address_burst = 1_000_000.0;
    c.objects.url = format!("file://{}/objects", store.dir.path().display());
    c.telemetry.log_filter = "warn".into();
    // The probe appends to the outbox; tests that count rows must not see it. Status tests
    // set a short interval.
    c.probe.interval_secs = 3600;
    c
}

pub struct TestApp {
    pub base: String,
    pub ctx: AppContext,
    pub http: reqwest::Client,
    pub store: TestStore,
    running: Option<Running>,
}

impl TestApp {
    /// Starts every role on a fresh store.
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::start_roles(backend, substrate::roles::ALL.to_vec(), tweak).await
    }

    pub async fn start_roles(
        backend: Backend,
        roles: Vec<Role>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let store = TestStore::new(backend).await;
        let mut cfg = test_config(&store);
        tweak(&mut cfg);
        Self::start_on(store, cfg, roles).await
    }

    /// Starts on an existing store (restarts, several processes on one store).
    pub async fn start_on(store: TestStore, mut cfg: Config, roles: Vec<Role>) -> TestApp {
        substrate::telemetry::logging::init(&cfg.telemetry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        // Links the server hands out (signed blob URLs) point at this listener.
        if cfg.http.public_url.is_none() {
            cfg.http.public_url = Some(format!("http://{}", listener.local_addr().expect("addr")));
        }
        let ctx = AppContext::build(cfg).await.expect("build app");
        let running =
            substrate::server::start(ctx.clone(), roles, listener, CancellationToken::new())
                .expect("start");
        let base = format!("http://{}", running.addr);
        TestApp {
            base,
            ctx,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            store,
            running: Some(running),
        }
    }

    /// Stops the server (graceful) and hands back the store, for a restart.
    pub async fn stop_keep_store(mut self) -> TestStore {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        self.store
    }

    /// Stops the server and drops the store.
    pub async fn stop(self) {
        let store = self.stop_keep_store().await;
        store.drop_db().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn token(&self, sub: &str) -> String {
        token_with(sub, &[], None)
    }

    pub fn admin_token(&self) -> String {
        token_with("operator", &["admin"], None)
    }

    pub async fn api_key(&self, name: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.ctx
            .auth
            .api_keys
            .create(name, &scopes)
            .await
            .expect("api key")
            .0
    }

    pub async fn post_json(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Counts outbox rows (optionally for one event id), read straight from the store.
    pub async fn outbox_count(&self, event_id: Option<&str>) -> i64 {
        count_outbox(&self.store.url, event_id).await
    }
}

/// A second process on the same store as a `TestApp` (in-process, its own port).
pub struct Instance {
    pub ctx: AppContext,
    pub base: String,
    pub running: Running,
}

impl Instance {
    pub async fn start(app: &TestApp, roles: Vec<Role>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = test_config(&app.store);
        tweak(&mut cfg);
        let ctx = AppContext::build(cfg).await.expect("build");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running =
            substrate::server::start(ctx.clone(), roles, listener, CancellationToken::new())
                .expect("start");
        let base = format!("http://{}", running.addr);
        Instance { ctx, base, running }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(self) {
        self.running.stop().await.expect("clean stop");
    }
}

/// Reads the outbox with a connection of its own, so a test sees what is durably committed.
pub async fn count_outbox(url: &str, event_id: Option<&str>) -> i64 {
    use sqlx::Connection;
    let sql = match event_id {
        Some(_) => "SELECT COUNT(*) FROM outbox WHERE event_id = $1",
        None => "SELECT COUNT(*) FROM outbox WHERE $1 = $1",
    };
    let id = event_id.unwrap_or("");
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url)
            .await
            .expect("connect sqlite");
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&mut c)
            .await
            .expect("count")
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect pg");
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&mut c)
            .await
            .expect("count")
    }
}

/// An HS256 token signed with the test secret.
pub fn token_with(sub: &str, roles: &[&str], email: Option<&str>) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": sub, "exp": now + 600, "iat": now, "nbf": now,
        "roles": roles, "email": email.unwrap_or("user@example.com"),
    });
    sign_hs256(&claims, SECRET.as_bytes())
}

pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

pub fn message(text: &str) -> Value {
    serde_json::json!({ "message": text, "timestamp": "2026-01-01T00:00:00Z" })
}

/// Polls `f` until it returns `Some`, up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {secs}s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

pub fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture")
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

/// The `substrate` binary, configured for `app`'s store, log, schemas, routes and secret
/// (for commands and for processes that join or crash beside the in-process app).
pub fn substrate_cmd(app: &TestApp) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_substrate"));
    c.env("SUBSTRATE_STORE__URL", &app.store.url)
        .env("SUBSTRATE_STORE__MIGRATE_ON_START", "true")
        .env("SUBSTRATE_HTTP__LISTEN", "127.0.0.1:0")
        .env("SUBSTRATE_SCHEMAS__DIR", repo().join("avro"))
        .env("SUBSTRATE_AUTH__HS256_SECRET", SECRET)
        .env(
            "SUBSTRATE_GATEWAY__ROUTES_FILE",
            app.ctx.config.gateway.routes_file.to_str().expect("path"),
        )
        .env("SUBSTRATE_TELEMETRY__LOG_FILTER", "warn")
        .env("SUBSTRATE_PROBE__INTERVAL_SECS", "3600")
        .env(
            "SUBSTRATE_GATEWAY__RATE_LIMIT__PER_ADDRESS_PER_SEC",
            "1000000",
        )
        .env(
            "SUBSTRATE_GATEWAY__RATE_LIMIT__PER_ADDRESS_BURST",
            "1000000",
        );
    if let Some(b) = &app.store.kafka {
        c.env("SUBSTRATE_LOG__URL", b.url())
            .env("SUBSTRATE_LOG__POLL_INTERVAL_MS", "100");
    }
    c
}

/// A `substrate` process of the test's own, killed when the test ends — also when it fails.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the relay has published every outbox row (at once on the embedded log, where a
/// committed row already is in the log), so log lag then says whether consumers caught up.
pub async fn wait_relayed(app: &TestApp) {
    eventually(60, || async {
        let pending: i64 = substrate::on_read!(app.ctx.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(p)
                .await
                .ok()?
        });
        (pending == 0).then_some(())
    })
    .await
}

/// A tool the suite runs as a real server (`nisshi`, `s3s-fs`): `$env_override` if set, else on
/// PATH, else in ~/.cargo/bin (where `scripts/setup.sh` installs it).
pub fn installed_binary(name: &str, env_override: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_override) {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    home.join("bin").join(name)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The shard lease's expiry (unix micros), renewed by every evaluation round.
pub async fn alert_lease_expiry(app: &TestApp) -> Option<i64> {
    substrate::on_read!(app.ctx.store, p => {
        sqlx::query_scalar("SELECT expires_at FROM leases WHERE name = 'alerts.rules.shard.0'")
            .fetch_optional(p)
            .await
            .ok()
            .flatten()
    })
}

/// Waits until the evaluator has run at least two more rounds (its lease renewed twice).
pub async fn alert_rounds_pass(app: &TestApp) {
    let e0 = eventually(30, || alert_lease_expiry(app)).await;
    eventually(30, || async {
        alert_lease_expiry(app)
            .await
            .filter(|e| *e >= e0 + 1_900_000)
            .map(|_| ())
    })
    .await;
}
