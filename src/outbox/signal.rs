//! In-process wake-up for new outbox rows: a counter on a watch channel that every
//! committed append bumps, so the relay, embedded consumers and streams wake at once
//! instead of polling. Other processes learn of rows by NOTIFY (PostgreSQL) or by polling.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct OutboxSignal {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for OutboxSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl OutboxSignal {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(0);
        Self { tx: Arc::new(tx) }
    }

    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next append.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Relays PostgreSQL `NOTIFY substrate_outbox` (appends by other processes) to `signal`,
/// reconnecting as needed. One listener per process serves every reader in it.
pub fn listen_pg(pool: sqlx::PgPool, signal: OutboxSignal) {
    tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(mut l) => {
                    if let Err(e) = l.listen(super::PG_CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        loop {
                            match l.recv().await {
                                Ok(_) => signal.notify(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "outbox listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "outbox listener cannot connect"),
            }
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}
