//! What the benchmark programs share (each includes it with `#[path = "common.rs"] mod
//! common;`): the HS256 secret they configure and sign with, a token for a user, and a fresh
//! PostgreSQL database per run, dropped afterwards.

#![allow(dead_code)]

use serde_json::json;

pub const SECRET: &str = "bench-secret-bench-secret-bench-secret";

/// An HS256 token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "exp": now + 3600, "iat": now, "email": format!("{sub}@example.com") }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A new database on the server of `admin_url`: its URL, and what `drop_db` needs.
pub async fn create_db(admin_url: &str, prefix: &str) -> (String, (String, String)) {
    use sqlx::Connection;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    let base = admin_url.rsplit_once('/').expect("pg url").0;
    (format!("{base}/{name}"), (admin_url.to_string(), name))
}

/// Drops a database made by `create_db`.
pub async fn drop_db(pg_db: Option<(String, String)>) {
    use sqlx::Connection;
    if let Some((admin, name)) = &pg_db
        && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
