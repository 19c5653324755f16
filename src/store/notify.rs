//! PostgreSQL NOTIFY/LISTEN, the way processes on one store tell each other that something
//! changed (new outbox rows, a revoked API key). `notify` is sent inside a transaction, so it
//! is delivered only if, and when, that transaction commits; it does nothing on SQLite.
//! `listen_pg` keeps one reconnecting LISTEN; notifications sent while it was disconnected
//! are lost, so it calls `on_connect` after every (re)connect for the caller to resync.

use std::time::Duration;

use sqlx::PgPool;

use super::{Backend, StoreError, Tx};
use crate::on_tx;

/// `NOTIFY channel, payload` at the commit of `tx` (PostgreSQL only).
pub async fn notify(tx: &mut Tx, channel: &str, payload: &str) -> Result<(), StoreError> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, c => {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(())
}

/// Listens on `channel` until `pool` is closed: `on_connect` after each successful LISTEN,
/// `on_payload` for every notification.
pub fn listen_pg(
    pool: PgPool,
    channel: &'static str,
    on_connect: impl Fn() + Send + 'static,
    on_payload: impl Fn(&str) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(channel).await {
                    Ok(()) => {
                        on_connect();
                        loop {
                            match l.recv().await {
                                Ok(n) => on_payload(n.payload()),
                                Err(e) => {
                                    tracing::warn!(channel, error = %e, "listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(channel, error = %e, "LISTEN failed"),
                },
                Err(e) => tracing::debug!(channel, error = %e, "listener cannot connect"),
            }
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
