//! Credits: one account per user and an append-only ledger. An account is opened at the
//! user's first contact (first upload intent or credits query) with `media.starting_credits`.
//! A charge is the conditional `balance >= 1` update plus a ledger row unique per
//! (user, request, kind), so it happens at most once per request; a refund likewise, and
//! only for a request that was charged. Everything runs inside the caller's transaction.

use serde::Serialize;
use sqlx::Row;

use crate::store::{Store, StoreError, Tx, now_micros};
use crate::{on_read, on_tx};

/// The ledger's request id for the starting grant.
pub const GRANT_REQUEST: &str = "account";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// One credit was taken; the balance after it.
    Charged { balance: i64 },
    /// This request was charged before; nothing changed.
    AlreadyCharged { balance: i64 },
    /// The balance is below one credit; nothing changed.
    Insufficient { balance: i64 },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: i64,
    pub request_id: String,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub reason: String,
    pub created_at: i64,
}

async fn append_ledger(
    tx: &mut Tx,
    user: &str,
    request_id: &str,
    kind: &str,
    amount: i64,
    balance_after: i64,
    reason: &str,
) -> Result<(), StoreError> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO credit_ledger (user_id, request_id, kind, amount, balance_after, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user)
        .bind(request_id)
        .bind(kind)
        .bind(amount)
        .bind(balance_after)
        .bind(reason)
        .bind(now_micros())
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

async fn balance_tx(tx: &mut Tx, user: &str) -> Result<Option<i64>, StoreError> {
    Ok(on_tx!(tx, c => {
        sqlx::query_scalar::<_, i64>("SELECT balance FROM credit_accounts WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?
    }))
}

async fn has_entry(
    tx: &mut Tx,
    user: &str,
    request_id: &str,
    kind: &str,
) -> Result<bool, StoreError> {
    let n: i64 = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT COUNT(*) FROM credit_ledger WHERE user_id = $1 AND request_id = $2 AND kind = $3")
            .bind(user)
            .bind(request_id)
            .bind(kind)
            .fetch_one(&mut *c)
            .await?
    });
    Ok(n > 0)
}

/// Opens `user`'s account with `starting` credits (and a `grant` ledger row) if it has none;
/// returns the balance.
pub async fn open_account(tx: &mut Tx, user: &str, starting: i64) -> Result<i64, StoreError> {
    let starting = starting.max(0);
    let now = now_micros();
    let inserted = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO credit_accounts (user_id, balance, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .bind(starting)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if inserted == 1 {
        append_ledger(
            tx,
            user,
            GRANT_REQUEST,
            "grant",
            starting,
            starting,
            "starting balance",
        )
        .await?;
        return Ok(starting);
    }
    Ok(balance_tx(tx, user).await?.unwrap_or(0))
}

/// Takes one credit from `user` for `request_id`, at most once.
pub async fn charge(
    tx: &mut Tx,
    user: &str,
    request_id: &str,
    starting: i64,
    reason: &str,
) -> Result<Charge, StoreError> {
    let balance = open_account(tx, user, starting).await?;
    if has_entry(tx, user, request_id, "charge").await? {
        return Ok(Charge::AlreadyCharged { balance });
    }
    let after: Option<i64> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "UPDATE credit_accounts SET balance = balance - 1, updated_at = $2 \
             WHERE user_id = $1 AND balance >= 1 RETURNING balance",
        )
        .bind(user)
        .bind(now_micros())
        .fetch_optional(&mut *c)
        .await?
    });
    let Some(after) = after else {
        return Ok(Charge::Insufficient {
            balance: balance_tx(tx, user).await?.unwrap_or(0),
        });
    };
    // Unique per (user, request, kind): a concurrent second charge fails here and rolls back.
    append_ledger(tx, user, request_id, "charge", -1, after, reason).await?;
    Ok(Charge::Charged { balance: after })
}

/// Gives back the credit charged for `request_id`, at most once. Returns whether it did
/// (false when the request was not charged or is already refunded).
pub async fn refund(
    tx: &mut Tx,
    user: &str,
    request_id: &str,
    reason: &str,
) -> Result<bool, StoreError> {
    if !has_entry(tx, user, request_id, "charge").await?
        || has_entry(tx, user, request_id, "refund").await?
    {
        return Ok(false);
    }
    let after: i64 = on_tx!(tx, c => {
        sqlx::query_scalar(
            "UPDATE credit_accounts SET balance = balance + 1, updated_at = $2 WHERE user_id = $1 RETURNING balance",
        )
        .bind(user)
        .bind(now_micros())
        .fetch_one(&mut *c)
        .await?
    });
    append_ledger(tx, user, request_id, "refund", 1, after, reason).await?;
    Ok(true)
}

/// The balance of `user`'s account, or `None` when they have none yet.
pub async fn account(store: &Store, user: &str) -> Result<Option<i64>, StoreError> {
    Ok(on_read!(store, p => {
        sqlx::query_scalar("SELECT balance FROM credit_accounts WHERE user_id = $1")
            .bind(user)
            .fetch_optional(p)
            .await?
    }))
}

/// The current balance of `user`: **0 for a user without an account** (one who has never
/// made an upload intent nor asked for their credits; the account, with the starting
/// balance, is opened then).
pub async fn balance(store: &Store, user: &str) -> Result<i64, StoreError> {
    Ok(account(store, user).await?.unwrap_or(0))
}

/// The newest `limit` ledger entries of `user`, newest first.
pub async fn ledger(store: &Store, user: &str, limit: i64) -> Result<Vec<LedgerEntry>, StoreError> {
    Ok(on_read!(store, p => {
        sqlx::query_as(
            "SELECT id, request_id, kind, amount, balance_after, reason, created_at FROM credit_ledger \
             WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(p)
        .await?
    }))
}

/// How many ledger rows of `kind` `user` has for `request_id` (tests, audits).
pub async fn entries_for(
    store: &Store,
    user: &str,
    request_id: &str,
    kind: &str,
) -> Result<i64, StoreError> {
    Ok(on_read!(store, p => {
        let row = sqlx::query("SELECT COUNT(*) FROM credit_ledger WHERE user_id = $1 AND request_id = $2 AND kind = $3")
            .bind(user)
            .bind(request_id)
            .bind(kind)
            .fetch_one(p)
            .await?;
        row.try_get::<i64, _>(0)?
    }))
}
