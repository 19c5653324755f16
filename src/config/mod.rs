//! The one configuration struct, loaded with figment: built-in defaults → `config/substrate.toml`
//! (or `--config PATH`) → environment `SUBSTRATE_…` (`__` for nesting). Every component reads its
//! settings from here; nothing else in the crate reads environment variables.

mod cidr;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use cidr::{Cidr, canonical_ip};
pub use secret::Secret;

/// Where the default config file lives, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/substrate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // figment's message names the key ("for key `default.http.listen`") and the source.
        let mut parts = Vec::new();
        for err in e {
            parts.push(err.to_string());
        }
        ConfigError::Invalid(parts.join("; "))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub schemas: SchemasConfig,
    pub auth: AuthConfig,
    pub gateway: GatewayConfig,
    pub log: LogConfig,
    pub consumers: ConsumersConfig,
    pub realtime: RealtimeConfig,
    pub media: MediaConfig,
    pub objects: ObjectsConfig,
    pub analytics: AnalyticsConfig,
    pub probe: ProbeConfig,
    pub telemetry: TelemetryConfig,
    /// The alerts role: rules, evaluation and webhook notifications.
    pub alerts: crate::alerts::AlertsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address the HTTP server binds (API, registry, health, metrics, status).
    pub listen: SocketAddr,
    /// Public base URL used in links the server hands out (signed blob URLs, docs).
    pub public_url: Option<String>,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a handler may take to produce its answer before it is cut with `503 timeout`.
    /// Only the time to the answer's head counts: SSE and WebSocket streams and downloads
    /// run on. Blob uploads (`/blobs/…`) and operator endpoints (`/api/v1/admin/…`) are
    /// exempt.
    pub request_timeout_secs: u64,
    /// Requests in their handlers at once; beyond this, `503 overloaded` with `Retry-After`
    /// (health, readiness and metrics are exempt).
    pub max_in_flight: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            shutdown_grace_secs: 20,
            request_timeout_secs: 30,
            max_in_flight: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `sqlite://path/to.db` (embedded) or `postgres://user:pass@host/db`.
    pub url: Secret,
    pub max_connections: u32,
    /// Run migrations when `serve` starts. Default: on for SQLite, off for PostgreSQL
    /// (run `substrate migrate` from the deploy pipeline instead).
    pub migrate_on_start: Option<bool>,
    /// SQLite `synchronous` pragma: `full` (fsync each commit) or `normal`.
    pub sqlite_synchronous: SqliteSync,
    /// Seconds a connection waits for a lock before failing.
    pub busy_timeout_secs: u64,
    /// Seconds start-up waits for the first PostgreSQL connection before it names the
    /// server and the cause ("connection refused") and stops.
    pub connect_timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://data/substrate.db"),
            max_connections: 16,
            migrate_on_start: None,
            sqlite_synchronous: SqliteSync::Full,
            busy_timeout_secs: 10,
            connect_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchemasConfig {
    /// Folder of `.avsc` files; the path below it is the topic name.
    pub dir: PathBuf,
    /// Use an external Confluent-compatible registry instead of the built-in one.
    pub registry_url: Option<String>,
    /// Basic-auth `user:password` for the external registry.
    pub registry_auth: Option<Secret>,
    /// Default compatibility level for subjects without their own.
    pub compatibility: String,
    /// Serve GET endpoints of the registry API without authentication.
    pub public_reads: bool,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("avro"),
            registry_url: None,
            registry_auth: None,
            compatibility: "BACKWARD".into(),
            public_reads: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// HS256 secret. When unset (and no other key is configured), a random secret is
    /// generated once and kept in `dev_secret_file`, so `substrate token mint` works at once.
    pub hs256_secret: Option<Secret>,
    /// File holding the generated development secret.
    pub dev_secret_file: PathBuf,
    /// PEM (or path to a PEM file) of the RS256 public key.
    pub rs256_public_key: Option<String>,
    /// PEM (or path to a PEM file) of the ES256 public key.
    pub es256_public_key: Option<String>,
    /// JWKS endpoint; keys are matched by `kid`.
    pub jwks_url: Option<String>,
    /// Minimum seconds between JWKS refreshes triggered by an unknown `kid`.
    pub jwks_min_refresh_secs: u64,
    /// Seconds between background JWKS refreshes.
    pub jwks_refresh_secs: u64,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Clock leeway in seconds for `exp`/`nbf`.
    pub leeway_secs: u64,
    /// Role name (JWT `role`/`roles` claim) that grants operator actions.
    pub admin_role: String,
    /// Scope (API keys, JWT `scope`) that grants operator actions.
    pub admin_scope: String,
    /// Default lifetime of `substrate token mint`.
    pub dev_token_ttl_secs: u64,
    /// Seconds a valid API key is cached. A revoked key stops working at once on the instance
    /// that revoked it, at once on others through NOTIFY (PostgreSQL), and within this time
    /// in every case.
    pub api_key_cache_secs: u64,
    /// Most valid API keys cached; the least recently used one is evicted first.
    pub api_key_cache_entries: usize,
    /// Seconds an unknown or revoked API key is remembered as such (no store query for it).
    pub api_key_negative_cache_secs: u64,
    /// Most unknown API keys remembered; the least recently used one is evicted first.
    pub api_key_negative_cache_entries: usize,
    /// Most verified JWTs cached (each until it expires; a token from a JWKS key only while
    /// the key is published); the least recently used one is evicted first. 0: verify every
    /// request's token in full.
    pub jwt_cache_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            dev_secret_file: PathBuf::from("data/jwt-secret"),
            rs256_public_key: None,
            es256_public_key: None,
            jwks_url: None,
            jwks_min_refresh_secs: 30,
            jwks_refresh_secs: 600,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            admin_role: "admin".into(),
            admin_scope: "admin".into(),
            dev_token_ttl_secs: 3600,
            api_key_cache_secs: 10,
            api_key_cache_entries: 10_000,
            api_key_negative_cache_secs: 5,
            api_key_negative_cache_entries: 10_000,
            jwt_cache_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// The allowlist of routes and webhooks; reloaded when it changes.
    pub routes_file: PathBuf,
    /// Request body limit in bytes (→ 413).
    pub body_limit_bytes: usize,
    /// Most events in one batch request.
    pub batch_max_events: usize,
    /// Webhook timestamp tolerance in seconds.
    pub webhook_tolerance_secs: u64,
    /// Secrets that routes.yaml webhooks refer to with `secret_ref`.
    pub webhook_secrets: BTreeMap<String, Secret>,
    pub rate_limit: RateLimitConfig,
    pub group_commit: GroupCommitConfig,
    /// Hours an idempotency record is kept.
    pub idempotency_ttl_hours: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes_file: PathBuf::from("config/routes.yaml"),
            body_limit_bytes: 1024 * 1024,
            batch_max_events: 1000,
            webhook_tolerance_secs: 300,
            webhook_secrets: BTreeMap::new(),
            rate_limit: RateLimitConfig::default(),
            group_commit: GroupCommitConfig::default(),
            idempotency_ttl_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second for a user (JWT) principal.
    pub user_per_sec: f64,
    /// Sustained requests per second for a service (API key / webhook) principal.
    pub service_per_sec: f64,
    /// Bucket size as a multiple of the per-second rate.
    pub burst_factor: f64,
    /// Requests per second from one client address (an IPv4 address or an IPv6 /64), taken
    /// before any credential is looked at. 0 turns this limit off (so does `enabled = false`).
    pub per_address_per_sec: f64,
    /// Bucket size of the per-address limit, in requests.
    pub per_address_burst: f64,
    /// What a request answered 401 costs its address (an authenticated one costs 1).
    pub failed_auth_cost: f64,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client; from any
    /// other peer the header is ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// Most client addresses tracked at once; past it, new addresses share one bucket.
    pub per_address_table_size: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            user_per_sec: 50.0,
            service_per_sec: 5000.0,
            burst_factor: 2.0,
            per_address_per_sec: 10_000.0,
            per_address_burst: 20_000.0,
            failed_auth_cost: 50.0,
            trusted_proxies: Vec::new(),
            per_address_table_size: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCommitConfig {
    /// Most events written in one transaction.
    pub max_batch_events: usize,
    /// Concurrent writer tasks (SQLite always uses one).
    pub writers: usize,
    /// Requests that may wait for a writer; beyond this, requests are refused at once with
    /// `503 overloaded` and `Retry-After` (load shedding) instead of waiting.
    pub queue_depth: usize,
    /// Bytes of events (payloads, keys, headers) that may wait for a writer; beyond this,
    /// `503 overloaded` as for `queue_depth`. Bounds the memory queued work can pin.
    pub max_queued_bytes: usize,
    /// Milliseconds a writer waits to begin a transaction (a pooled connection; on SQLite
    /// also the write lock) before the batch fails with `503 unavailable`: a lost store fails
    /// requests this fast instead of after the pool's acquire timeout.
    pub store_timeout_ms: u64,
    /// FOR TESTING ONLY: the writer panics on its first N batches, to exercise the panic
    /// path (callers answered, shutdown not held up). Leave at 0 in production.
    pub inject_writer_panics: u32,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            writers: 2,
            queue_depth: 8192,
            max_queued_bytes: 256 * 1024 * 1024,
            store_timeout_ms: 2000,
            inject_writer_panics: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `embedded` (the store's outbox is the log) or `kafka://host:port[,host:port]`.
    pub url: String,
    /// Hours the embedded log keeps published events (and the outbox keeps relayed rows).
    pub retention_hours: u64,
    /// Partitions for topics substrate creates.
    pub partitions: i32,
    /// Replication factor for topics substrate creates.
    pub replication: i32,
    /// Create topics from the schemas at start-up (Kafka).
    pub create_topics: bool,
    /// Extra librdkafka settings passed through as-is (both producer and consumer).
    pub kafka_options: BTreeMap<String, String>,
    /// Key-hash lanes the relay splits the outbox into (ordering unit for relays). Only seeds
    /// a new store: the count in use is kept in the store (`relay_layout`) and changed with
    /// `substrate relay set-lanes N`; a process whose setting differs warns and uses the stored one.
    pub relay_lanes: u32,
    /// Poll interval fallback in milliseconds when no wake-up arrives.
    pub poll_interval_ms: u64,
    /// Most outbox rows the relay sends before waiting for their acknowledgements.
    pub relay_batch: usize,
    /// Largest record the log carries, in bytes: key + value + headers + framing. The gateway
    /// refuses a larger event (`413 event_too_large`), and the relay's producer uses it as
    /// librdkafka's `message.max.bytes`. The broker's `message.max.bytes` (and topics'
    /// `max.message.bytes`) must be at least this. Must be at least
    /// `gateway.body_limit_bytes`.
    pub max_message_bytes: usize,
    /// Times the broker may refuse a row sent on its own before the relay parks it (its key
    /// then waits for an operator: `substrate relay parked list|redrive|discard`).
    pub relay_park_after: u32,
    /// Milliseconds a relay's lane lease lasts without renewal. Lanes are renewed every fifth
    /// of it; a batch still waiting for acknowledgements 70% into the lease is cut (its
    /// unacknowledged sends purged and retried later), so a relay never sends on a lane whose
    /// lease could have passed to another relay.
    pub relay_lease_ttl_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            url: "embedded".into(),
            retention_hours: 168,
            partitions: 4,
            replication: 1,
            create_topics: true,
            kafka_options: BTreeMap::new(),
            relay_lanes: 16,
            poll_interval_ms: 500,
            relay_batch: 5000,
            // 1 MiB: within Kafka's default broker limit (1 MiB + 12 bytes).
            max_message_bytes: 1024 * 1024,
            relay_park_after: 3,
            relay_lease_ttl_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumersConfig {
    /// Retries of a failing event before it is dead-lettered.
    pub max_retries: u32,
    /// First retry backoff in milliseconds (doubles each attempt).
    pub backoff_initial_ms: u64,
    /// Cap of the retry backoff in milliseconds.
    pub backoff_max_ms: u64,
    /// Most events handled in one transaction.
    pub batch_size: usize,
    /// Handlers that run in this process (empty = all registered).
    pub only: Vec<String>,
    /// Embedded log: milliseconds a group's lease lasts without renewal (one member of a group
    /// is active at a time). A standby member takes over this long after the active one died.
    pub lease_ttl_ms: u64,
    /// Embedded log: milliseconds a member may spend on one batch (handlers, retries) before
    /// it stops renewing its group's lease. Then another member takes over, and the stuck
    /// member's commit is refused (its effects roll back), as with Kafka's
    /// `max.poll.interval.ms`.
    pub max_poll_interval_ms: u64,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        Self {
            max_retries: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            batch_size: 500,
            only: Vec::new(),
            lease_ttl_ms: 10_000,
            max_poll_interval_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RealtimeConfig {
    /// Seconds between SSE/WebSocket heartbeats.
    pub heartbeat_secs: u64,
    /// Reconnect delay advertised to SSE clients, in milliseconds.
    pub retry_ms: u64,
    /// Notifications buffered per connection before a slow client is dropped.
    pub client_buffer: usize,
    /// Lifetime of a stream query token, in seconds.
    pub stream_token_ttl_secs: u64,
    /// How long a connection's buffer may stay full (the client reads nothing) before the
    /// client is dropped; it reconnects and resumes from its cursor, losing nothing.
    pub slow_client_timeout_ms: u64,
    /// Streams are closed after this many seconds so credentials are checked again; clients
    /// reconnect and resume from their cursor.
    pub max_stream_secs: u64,
    /// Recent notifications (all users) each process keeps in memory so live streams are fed
    /// without a query per client; a stream further behind reads the store.
    pub hub_buffer: usize,
    /// Upper bound of that buffer in bytes of notification JSON (whichever limit is hit first).
    pub hub_buffer_bytes: usize,
    /// Fallback poll of the notifications table, in milliseconds, for changes no wake-up
    /// announced (another process on SQLite, a lost LISTEN connection).
    pub poll_ms: u64,
    /// HMAC key for stream tokens. When unset, a key is generated once and kept in the store,
    /// so every instance sharing the store accepts every instance's tokens.
    pub stream_token_secret: Option<Secret>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 15,
            retry_ms: 2000,
            client_buffer: 1024,
            stream_token_ttl_secs: 60,
            slow_client_timeout_ms: 5000,
            max_stream_secs: 3600,
            hub_buffer: 10_000,
            hub_buffer_bytes: 64 * 1024 * 1024,
            poll_ms: 2000,
            stream_token_secret: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    /// Credits a first-time user starts with.
    pub starting_credits: i64,
    /// Largest accepted upload in bytes.
    pub max_file_size: i64,
    /// Seconds a presigned URL stays valid.
    pub url_ttl_secs: u64,
    /// Seconds an approved upload may take before it expires and is refunded.
    pub upload_ttl_secs: u64,
    /// Move retries before the upload is dead-lettered.
    pub move_max_retries: u32,
    /// Seconds between HEAD checks for uploads when no notification arrives (0 = off).
    pub head_check_secs: u64,
    /// Shared secret for `POST /webhooks/storage` (bucket notifications). Unset = the
    /// webhook is off (404); uploads are then found by the blob endpoint or the HEAD check.
    pub storage_webhook_secret: Option<Secret>,
    /// First backoff between move attempts in milliseconds (doubles each attempt).
    pub move_backoff_ms: u64,
    /// Milliseconds between checks for due saga timers (a local wake-up comes sooner).
    pub timer_poll_ms: u64,
    /// Seconds a sagas instance holds a claimed timer (by the database's clock); a crashed or
    /// stalled holder's timers are taken over by another instance (or by itself after a
    /// restart) once this has passed, and then only the new claim can complete the step.
    /// Keep it above the slowest step's object-storage I/O, or slow steps are started twice.
    pub timer_lease_secs: u64,
    /// FOR TESTING ONLY: fail the first N move attempts of every upload, to exercise the
    /// retry and dead-letter path. Leave at 0 in production.
    pub inject_move_failures: u32,
    /// Seconds after an ended upload's URL expires before whatever sits at its `uploads/` key
    /// is removed (the upload sweep): an upload that began before the expiry may still land.
    pub upload_sweep_grace_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            starting_credits: 10,
            max_file_size: 100 * 1024 * 1024,
            url_ttl_secs: 900,
            upload_ttl_secs: 900,
            move_max_retries: 3,
            head_check_secs: 30,
            storage_webhook_secret: None,
            move_backoff_ms: 1000,
            timer_poll_ms: 500,
            timer_lease_secs: 30,
            inject_move_failures: 0,
            upload_sweep_grace_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectsConfig {
    /// `file://path` (embedded), `s3://bucket` (AWS S3, MinIO, any S3-compatible server) or
    /// `gs://bucket` (Google Cloud Storage).
    pub url: String,
    /// S3 endpoint (MinIO, s3s-fs, …); unset for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// HMAC key for substrate-signed blob URLs (local backend). When unset, a random key is
    /// generated once into `signing_key_file`, shared by every process on the machine.
    pub signing_key: Option<Secret>,
    /// Where the generated blob-signing key lives. Default: `<root>.signing-key`, beside the
    /// local objects folder.
    pub signing_key_file: Option<PathBuf>,
    /// Endpoint clients reach the bucket at, when it differs from `endpoint` (e.g. MinIO
    /// behind a proxy). Presigned URLs are signed for this host.
    pub public_endpoint: Option<String>,
    /// Seconds one object-store request may take (S3/GCS).
    pub request_timeout_secs: u64,
    /// Retries of a failed object-store request inside the client (S3/GCS).
    pub max_retries: usize,
    /// Google Cloud Storage (`gs://`): path of the service-account JSON key. Unset = the
    /// application default credentials or the instance's metadata server.
    pub gcs_service_account_path: Option<PathBuf>,
    /// Local backend: seconds an unfinished PUT keeps its single-use blob URL reserved (another
    /// PUT with the URL gets 409 `upload_in_progress`); after that, as after a crash mid-upload,
    /// the URL can be used again.
    pub blob_put_claim_secs: u64,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            url: "file://data/objects".into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            signing_key: None,
            signing_key_file: None,
            public_endpoint: None,
            request_timeout_secs: 30,
            max_retries: 2,
            gcs_service_account_path: None,
            blob_put_claim_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsConfig {
    /// ClickHouse HTTP URL; unset = rollups in the store only.
    pub clickhouse_url: Option<String>,
    pub clickhouse_database: String,
    pub clickhouse_user: Option<String>,
    pub clickhouse_password: Option<Secret>,
    /// Rows per ClickHouse insert batch.
    pub batch_rows: usize,
    /// Longest a row waits before its batch is flushed, in milliseconds.
    pub flush_ms: u64,
    /// Most buckets one event-counts query may return (more → 400 `range_too_large`).
    pub max_buckets: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            clickhouse_url: None,
            clickhouse_database: "substrate".into(),
            clickhouse_user: None,
            clickhouse_password: None,
            batch_rows: 10_000,
            flush_ms: 1000,
            max_buckets: 1440,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeConfig {
    /// Seconds between probe runs.
    pub interval_secs: u64,
    /// Seconds before a probe round trip counts as failed.
    pub timeout_secs: u64,
    /// Days of status history kept.
    pub history_days: u64,
    /// Round trips slower than this (milliseconds) mark the projections degraded.
    pub degraded_round_trip_ms: u64,
    /// Seconds the oldest unpublished outbox row may wait before the relay counts as
    /// degraded, and as down.
    pub relay_degraded_age_secs: u64,
    pub relay_down_age_secs: u64,
    /// Records a consumer group may have left to read before it counts as degraded.
    pub lag_degraded_records: i64,
    /// Seconds a saga timer may be overdue before the sagas count as degraded, and as down.
    pub timer_overdue_degraded_secs: u64,
    pub timer_overdue_down_secs: u64,
    /// Milliseconds one dependency check may take before it counts as failed.
    pub check_timeout_ms: u64,
    /// Milliseconds after which an answering dependency counts as slow (degraded).
    pub slow_check_ms: u64,
    /// Seconds between reloads of the status page in the browser.
    pub page_refresh_secs: u64,
    /// Heading of the public status page.
    pub page_title: String,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            timeout_secs: 10,
            history_days: 90,
            degraded_round_trip_ms: 2000,
            relay_degraded_age_secs: 60,
            relay_down_age_secs: 600,
            lag_degraded_records: 10_000,
            timer_overdue_degraded_secs: 60,
            timer_overdue_down_secs: 900,
            check_timeout_ms: 2000,
            slow_check_ms: 1000,
            page_refresh_secs: 30,
            page_title: "Platform status".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    pub log_format: String,
    /// tracing filter directive, e.g. `info,substrate=debug`.
    pub log_filter: String,
    /// OTLP endpoint for traces; unset = no export. The collector's base URL:
    /// `http://collector:4318` for `http` (`/v1/traces` is appended unless present), or
    /// `http://collector:4317` for `grpc`.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http` (protobuf over HTTP).
    pub otlp_protocol: String,
    /// Service name reported in traces.
    pub service_name: String,
    /// Share of new traces recorded (0.0–1.0); a sampled or unsampled incoming
    /// `traceparent` is always followed.
    pub trace_sample_ratio: f64,
    /// Limits of the telemetry ingest endpoints (metrics and logs from agents).
    pub ingest: crate::telemetry::ingest::IngestConfig,
    /// Retention of stored samples, rollups and log lines.
    pub storage: crate::telemetry::store::StorageConfig,
    /// Bounds of the Prometheus query API and the log search.
    pub query: crate::telemetry::query::QueryConfig,
    /// Bounds of the live tails of log lines and alert transitions.
    pub tail: crate::telemetry::tail::TailConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "auto".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
            otlp_protocol: "http".into(),
            service_name: "substrate".into(),
            trace_sample_ratio: 1.0,
            ingest: Default::default(),
            storage: Default::default(),
            query: Default::default(),
            tail: Default::default(),
        }
    }
}

impl Config {
    /// Loads defaults → file → environment. `path` is `--config`; when it is `None` the
    /// default file is used if it exists.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::MissingFile(p.to_path_buf()));
                }
                fig = fig.merge(Toml::file(p));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    fig = fig.merge(Toml::file(DEFAULT_CONFIG_FILE));
                }
            }
        }
        fig = fig.merge(Env::prefixed("SUBSTRATE_").split("__"));
        Self::from_figment(fig)
    }

    /// Loads from a TOML string on top of the defaults (tests, tools).
    pub fn from_toml(toml_text: &str) -> Result<Config, ConfigError> {
        let fig =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml_text));
        Self::from_figment(fig)
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        let cfg: Config = fig.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that cannot be expressed in types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.store.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "store.url: expected sqlite://… or postgres://…".into(),
            ));
        }
        if self.log.url != "embedded" && !self.log.url.starts_with("kafka://") {
            return Err(ConfigError::Invalid(
                "log.url: expected `embedded` or kafka://host:port".into(),
            ));
        }
        self.validate_sizes()?;
        if self.gateway.batch_max_events == 0 {
            return Err(ConfigError::Invalid(
                "gateway.batch_max_events: must be at least 1".into(),
            ));
        }
        if !matches!(
            self.telemetry.log_format.as_str(),
            "auto" | "json" | "pretty"
        ) {
            return Err(ConfigError::Invalid(
                "telemetry.log_format: expected auto, json or pretty".into(),
            ));
        }
        if !(1..=604_800).contains(&self.media.url_ttl_secs) {
            return Err(ConfigError::Invalid(
                "media.url_ttl_secs: from 1 to 604800 (7 days, the longest S3 allows)".into(),
            ));
        }
        let objects = &self.objects.url;
        if !(objects.starts_with("file://")
            || objects.starts_with("s3://")
            || objects.starts_with("gs://"))
        {
            return Err(ConfigError::Invalid(
                "objects.url: expected file://path, s3://bucket or gs://bucket".into(),
            ));
        }
        if let Some(e) = self
            .telemetry
            .otlp_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
            && !url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConfigError::Invalid(
                "telemetry.otlp_endpoint: expected http(s)://host:port".into(),
            ));
        }
        if !matches!(self.telemetry.otlp_protocol.as_str(), "http" | "grpc") {
            return Err(ConfigError::Invalid(
                "telemetry.otlp_protocol: expected http or grpc".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.trace_sample_ratio) {
            return Err(ConfigError::Invalid(
                "telemetry.trace_sample_ratio: expected a number from 0.0 to 1.0".into(),
            ));
        }
        if self.probe.interval_secs == 0 || self.probe.timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "probe.interval_secs and probe.timeout_secs: must be at least 1".into(),
            ));
        }
        crate::schema::Compatibility::parse(&self.schemas.compatibility)
            .map_err(|e| ConfigError::Invalid(format!("schemas.compatibility: {e}")))?;
        Ok(())
    }

    /// The body limit, the log's record limit and the group-commit bounds agree.
    fn validate_sizes(&self) -> Result<(), ConfigError> {
        if self.gateway.body_limit_bytes > self.log.max_message_bytes {
            return Err(ConfigError::Invalid(format!(
                "gateway.body_limit_bytes ({}) is larger than log.max_message_bytes ({}): the \
                 gateway would accept bodies whose events the log cannot carry; lower the first \
                 or raise the second (and the broker's message.max.bytes with it)",
                self.gateway.body_limit_bytes, self.log.max_message_bytes
            )));
        }
        if self.log.kafka_options.contains_key("message.max.bytes") {
            return Err(ConfigError::Invalid(
                "log.kafka_options.message.max.bytes: set log.max_message_bytes instead (the \
                 gateway refuses events above it, and the producer uses it)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    pub fn is_sqlite(&self) -> bool {
        self.store.url.expose().starts_with("sqlite:")
    }

    pub fn is_embedded_log(&self) -> bool {
        self.log.url == "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded() {
        let c = Config::from_toml("").unwrap();
        assert!(c.is_sqlite());
        assert!(c.is_embedded_log());
        assert_eq!(c.gateway.body_limit_bytes, 1024 * 1024);
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = Config::from_toml("[http]\nlisten = 'not-an-address'").unwrap_err();
        assert!(err.to_string().contains("http.listen"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::from_toml(
            "[store]\nurl = 'postgres://u:hunter2@db/x'\n[auth]\nhs256_secret = 'topsecret'",
        )
        .unwrap();
        let out = c.to_redacted_toml().unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("topsecret"), "{out}");
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn telemetry_settings_are_checked() {
        let err = Config::from_toml("[telemetry]\notlp_endpoint = 'collector:4318'").unwrap_err();
        assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        let err = Config::from_toml("[telemetry]\notlp_protocol = 'udp'").unwrap_err();
        assert!(err.to_string().contains("telemetry.otlp_protocol"), "{err}");
        let err = Config::from_toml("[probe]\ninterval_secs = 0").unwrap_err();
        assert!(err.to_string().contains("probe.interval_secs"), "{err}");
        let c = Config::from_toml("[telemetry]\notlp_endpoint = 'http://collector:4318'").unwrap();
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
    }

    #[test]
    fn body_limit_and_log_record_limit_agree() {
        let err = Config::from_toml(
            "[gateway]\nbody_limit_bytes = 2000000\n[log]\nmax_message_bytes = 1000000",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gateway.body_limit_bytes") && err.contains("log.max_message_bytes"),
            "{err}"
        );
        let err = Config::from_toml("[log.kafka_options]\n'message.max.bytes' = '5000000'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.max_message_bytes"), "{err}");
        let c = Config::from_toml(
            "[gateway]\nbody_limit_bytes = 2000000\n[log]\nmax_message_bytes = 3000000",
        )
        .unwrap();
        assert_eq!(c.log.max_message_bytes, 3_000_000);
    }

    #[test]
    fn bad_store_url_is_refused() {
        let err = Config::from_toml("[store]\nurl = 'mysql://x'").unwrap_err();
        assert!(err.to_string().contains("store.url"));
    }
}
