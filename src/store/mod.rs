//! The store seam: one `Store` over SQLite (embedded) or PostgreSQL (production), chosen by
//! URL. SQL is written once with `$1` placeholders (both drivers accept them) and run through
//! the `on_read!`/`on_write!`/`on_tx!` macros, which expand the same code for each driver.
//! Integers are BIGINT and times are unix microseconds on both backends. Where the SQL must
//! differ it goes through `dialect`; fenced leases (one holder at a time) are `lease`.

pub mod bulk;
pub mod dialect;
pub mod lease;

pub mod notify;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::{MaybePoolConnection, PoolConnection};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, Pool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::config::{SqliteSync, StoreConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid store url: {0}")]
    Url(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Data(String),
    /// Start-up could not connect: names the server, the cause and where to look.
    #[error(
        "cannot reach {backend} at {target}: {cause} (is it running? check store.url / SUBSTRATE_STORE__URL)"
    )]
    Unreachable {
        backend: &'static str,
        target: String,
        cause: String,
    },
    /// No connection (SQLite: no write lock) within the caller's bound.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// A write under a lease that has since been granted to another holder (see `lease`).
    #[error("lease {0} was granted to another holder; the write is refused")]
    Fenced(String),
}

/// Whose fault a failed statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The data cannot be stored (PostgreSQL classes 22 "data exception" and 54 "program limit
    /// exceeded": an invalid byte sequence, a string too long for an index; SQLite TOOBIG,
    /// MISMATCH, RANGE): the request is at fault, retrying cannot help.
    Data,
    /// The store is away or overloaded (connections, I/O, locks, shutdown, timeouts).
    Unavailable,
    /// Anything else (constraints, serialization failures, bugs).
    Other,
}

impl StoreError {
    /// A unique-constraint violation (the caller usually maps it to a conflict).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// Classifies the error for the answer it deserves (400-class, 503, or other).
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Db(e) => db_fault(e),
            StoreError::Io(_) | StoreError::Unreachable { .. } | StoreError::Timeout(_) => {
                Fault::Unavailable
            }
            _ => Fault::Other,
        }
    }

    /// A stale lease holder's write was refused (`lease::Fence::check`).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced(_))
    }
}

fn db_fault(e: &sqlx::Error) -> Fault {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or("");
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // SQLSTATE classes: 22 data exception, 54 program limit exceeded; 08
                // connection, 53 insufficient resources, 57 operator intervention, 58 system.
                return match code.get(..2) {
                    Some("22" | "54") => Fault::Data,
                    Some("08" | "53" | "57" | "58") => Fault::Unavailable,
                    _ => Fault::Other,
                };
            }
            // SQLite: extended result codes carry the primary code in their low byte.
            match code.parse::<i64>().map(|c| c & 0xff) {
                // SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE
                Ok(18 | 20 | 25) => Fault::Data,
                // PERM, BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
                Ok(3 | 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26) => Fault::Unavailable,
                _ => Fault::Other,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Fault::Unavailable,
        _ => Fault::Other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The connection pools. SQLite gets a single-connection write pool (SQLite has one writer
/// anyway; one connection avoids busy errors inside the process) and a read-only pool.
pub enum Db {
    Sqlite { write: SqlitePool, read: SqlitePool },
    Postgres(PgPool),
}

struct Inner {
    db: Db,
    backend: Backend,
    /// SQLite's configured busy timeout (restored after a bounded `BEGIN IMMEDIATE`).
    busy: Duration,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Runs `$body` with `$p` bound to the pool for reads (`&SqlitePool` or `&PgPool`).
#[macro_export]
macro_rules! on_read {
    ($store:expr, $p:ident => $body:expr) => {
        match $store.db() {
            $crate::store::Db::Sqlite { read: $p, .. } => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$p` bound to the pool for single-statement writes.
#[macro_export]
macro_rules! on_write {
    ($store:expr, $p:ident => $body:expr) => {
        match $store.db() {
            $crate::store::Db::Sqlite { write: $p, .. } => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx.raw() {
            $crate::store::RawTx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::RawTx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub enum RawTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A write transaction. Hooks registered with `after_commit` run once it has committed
/// (wake-ups for the relay, consumers and streams).
pub struct Tx {
    raw: RawTx,
    backend: Backend,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    locks: Vec<i64>,
}

impl Tx {
    pub fn raw(&mut self) -> &mut RawTx {
        &mut self.raw
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(f));
    }

    /// Takes a PostgreSQL transaction-level advisory lock once per transaction (SQLite
    /// transactions are already exclusive, so this does nothing there).
    pub async fn advisory_lock(&mut self, key: i64) -> Result<(), StoreError> {
        if self.locks.contains(&key) {
            return Ok(());
        }
        dialect::advisory_xact_lock(&mut self.raw, key).await?;
        self.locks.push(key);
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.raw {
            RawTx::Sqlite(t) => t.commit().await?,
            RawTx::Postgres(t) => t.commit().await?,
        }
        for f in self.after_commit {
            f();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.raw {
            RawTx::Sqlite(t) => t.rollback().await?,
            RawTx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Connects to the URL in `cfg` (creating the SQLite file and its folder if needed).
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let url = cfg.url.expose();
        let busy = Duration::from_secs(cfg.busy_timeout_secs);
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match cfg.sqlite_synchronous {
                    SqliteSync::Full => SqliteSynchronous::Full,
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(busy)
                .foreign_keys(true)
                .pragma("temp_store", "memory")
                .pragma("cache_size", "-65536");
            if let Some(parent) = Path::new(opts.get_filename()).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(busy + Duration::from_secs(20))
                .connect_with(opts.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections.max(2))
                .connect_with(opts.read_only(true))
                .await?;
            Ok(Store {
                inner: Arc::new(Inner {
                    db: Db::Sqlite { write, read },
                    backend: Backend::Sqlite,
                    busy,
                }),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
            check_reachable(&opts, Duration::from_secs(cfg.connect_timeout_secs.max(1))).await?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(busy + Duration::from_secs(20))
                .connect_with(opts)
                .await?;
            Ok(Store {
                inner: Arc::new(Inner {
                    db: Db::Postgres(pool),
                    backend: Backend::Postgres,
                    busy,
                }),
            })
        } else {
            Err(StoreError::Url(format!(
                "expected sqlite://… or postgres://…, got {}",
                url.split(':').next().unwrap_or("")
            )))
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The PostgreSQL pool, for what only PostgreSQL has (LISTEN/NOTIFY, advisory locks).
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.inner.db {
            Db::Postgres(p) => Some(p),
            Db::Sqlite { .. } => None,
        }
    }

    /// Applies the migrations of this backend; already applied ones are skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.inner.db {
            Db::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite, so a read-then-write
    /// transaction never fails to upgrade its lock). Never begin a second transaction while
    /// holding one: on SQLite both would wait for the same single writer connection.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let raw = match &self.inner.db {
            Db::Sqlite { write, .. } => RawTx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => RawTx::Postgres(p.begin().await?),
        };
        Ok(Tx {
            raw,
            backend: self.inner.backend,
            after_commit: Vec::new(),
            locks: Vec::new(),
        })
    }

    /// `begin`, bounded: gives up when no connection is had within `limit`
    /// (`StoreError::Timeout`), and on SQLite when the write lock, which another process may
    /// hold, is not had within the rest of it (SQLITE_BUSY). Both are `Fault::Unavailable`. A
    /// lost store then fails callers within `limit`, not after the pool's acquire timeout or
    /// the busy timeout.
    pub async fn begin_within(&self, limit: Duration) -> Result<Tx, StoreError> {
        let started = tokio::time::Instant::now();
        let raw = match &self.inner.db {
            Db::Sqlite { write, .. } => {
                let conn = acquire_within(write, limit).await?;
                let left = limit.saturating_sub(started.elapsed());
                RawTx::Sqlite(self.begin_sqlite_within(write, conn, left).await?)
            }
            Db::Postgres(p) => {
                let conn = acquire_within(p, limit).await?;
                RawTx::Postgres(
                    Transaction::begin(MaybePoolConnection::PoolConnection(conn), None).await?,
                )
            }
        };
        Ok(Tx {
            raw,
            backend: self.inner.backend,
            after_commit: Vec::new(),
            locks: Vec::new(),
        })
    }

    /// `BEGIN IMMEDIATE` waiting at most `left` for another process's write lock: the
    /// connection's busy timeout is shortened for the statement and restored after it.
    async fn begin_sqlite_within(
        &self,
        pool: &SqlitePool,
        mut conn: PoolConnection<Sqlite>,
        left: Duration,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        let busy = |d: Duration| format!("PRAGMA busy_timeout = {}", d.as_millis().max(1));
        sqlx::query(&busy(left)).execute(&mut *conn).await?;
        let restore = busy(self.inner.busy);
        match Transaction::begin(
            MaybePoolConnection::PoolConnection(conn),
            Some("BEGIN IMMEDIATE".into()),
        )
        .await
        {
            Ok(mut tx) => {
                sqlx::query(&restore).execute(&mut *tx).await?;
                Ok(tx)
            }
            Err(e) => {
                // The connection went back to the pool with the short timeout: restore it
                // (in the background, so the caller gets its answer now).
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Ok(mut c) = pool.acquire().await {
                        let _ = sqlx::query(&restore).execute(&mut *c).await;
                    }
                });
                Err(StoreError::Db(e))
            }
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_read!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Whether a write transaction can begin within `limit` (readiness: a store that answers
    /// reads but cannot take writes — SQLite locked by another process — cannot accept events).
    pub async fn ping_write(&self, limit: Duration) -> Result<(), StoreError> {
        self.begin_within(limit).await?.rollback().await
    }

    pub async fn close(&self) {
        match &self.inner.db {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// A pooled connection within `limit` (`StoreError::Timeout` after it).
async fn acquire_within<DB: sqlx::Database>(
    pool: &Pool<DB>,
    limit: Duration,
) -> Result<PoolConnection<DB>, StoreError> {
    match tokio::time::timeout(limit, pool.acquire()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Err(StoreError::Timeout(limit)),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// One direct connection attempt before the pool is built: the pool retries a refused
/// connection until its acquire timeout and then says only "pool timed out", while this names
/// the server and the cause within `limit`.
async fn check_reachable(opts: &PgConnectOptions, limit: Duration) -> Result<(), StoreError> {
    let target = match opts.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    };
    let unreachable = |cause: String| StoreError::Unreachable {
        backend: "PostgreSQL",
        target: target.clone(),
        cause,
    };
    match tokio::time::timeout(limit, PgConnection::connect_with(opts)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Io(e))) => Err(unreachable(io_cause(&e))),
        Ok(Err(sqlx::Error::Database(d))) => Err(unreachable(d.message().to_string())),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            limit.as_secs()
        ))),
    }
}

/// A connection failure in words ("connection refused", not "os error 111").
fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut => "timed out".into(),
        K::ConnectionReset => "connection reset".into(),
        K::NotFound => "no such socket".into(),
        K::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Microseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
