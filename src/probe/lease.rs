//! The probe's lease: a row in `probe_lease` that one instance holds at a time, renewed every
//! run and taken over by another instance once it expires (or at once after a clean stop).

use std::time::Duration;

use crate::on_write;
use crate::store::{Store, StoreError, now_micros};

pub struct Lease {
    store: Store,
    name: &'static str,
    owner: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(store: Store, name: &'static str, owner: &str, ttl: Duration) -> Self {
        Self {
            store,
            name,
            owner: owner.to_string(),
            ttl,
        }
    }

    /// Takes or renews the lease; false when another instance holds it.
    pub async fn acquire(&self) -> Result<bool, StoreError> {
        let now = now_micros();
        let until = now + self.ttl.as_micros() as i64;
        let n = on_write!(self.store, p => {
            sqlx::query(
                "INSERT INTO probe_lease (name, owner, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE probe_lease.owner = excluded.owner OR probe_lease.expires_at < $4",
            )
            .bind(self.name)
            .bind(&self.owner)
            .bind(until)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Hands the lease over at once (a clean stop).
    pub async fn release(&self) -> Result<(), StoreError> {
        on_write!(self.store, p => {
            sqlx::query("DELETE FROM probe_lease WHERE name = $1 AND owner = $2")
                .bind(self.name)
                .bind(&self.owner)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
