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
/// reconnecting as needed (and waking readers once after a reconnect, in case a notification
/// was missed). One listener per process serves every reader in it.
pub fn listen_pg(pool: sqlx::PgPool, signal: OutboxSignal) {
    let on_connect = signal.clone();
    crate::store::notify::listen_pg(
        pool,
        super::PG_CHANNEL,
        move || on_connect.notify(),
        move |_| signal.notify(),
    );
}
