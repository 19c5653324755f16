//! The store seam: one `Store` over SQLite (embedded) or PostgreSQL (production), chosen by
//! URL. SQL is written once with `$1` placeholders (both drivers accept them) and run through
//! the `on_read!`/`on_write!`/`on_tx!` macros, which expand the same code for each driver.
//! Integers are BIGINT and times are unix microseconds on both backends. Where the SQL must
//! differ it goes through `dialect`; fenced leases (one holder at a time) are `lease`.

pub mod dialect;
pub mod lease;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

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
    /// A write under a lease that has since been granted to another holder (see `lease`).
    #[error("lease {0} was granted to another holder; the write is refused")]
    Fenced(String),
}

impl StoreError {
    /// A unique-constraint violation (the caller usually maps it to a conflict).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }

    /// A stale lease holder's write was refused (`lease::Fence::check`).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced(_))
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
                }),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(busy + Duration::from_secs(20))
                .connect_with(opts)
                .await?;
            Ok(Store {
                inner: Arc::new(Inner {
                    db: Db::Postgres(pool),
                    backend: Backend::Postgres,
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

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_read!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
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

/// Microseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
