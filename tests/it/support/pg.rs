//! A fresh PostgreSQL database per test, on the server at `SUBSTRATE_TEST_PG`
//! (default postgres://postgres@127.0.0.1:5432/postgres).

use sqlx::Connection;

pub fn admin_url() -> String {
    std::env::var("SUBSTRATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db(admin: &str, db: &str) -> String {
    match admin.rfind('/') {
        Some(i) => format!("{}/{}", &admin[..i], db),
        None => format!("{admin}/{db}"),
    }
}

/// Creates `st_<random>` and returns its URL and name.
pub async fn create_database() -> (String, String) {
    let admin = admin_url();
    let name = format!("st_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} is required for the postgres tests: {e}")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    (with_db(&admin, &name), name)
}

pub async fn drop_database(name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
