//! Bulk inserts: many rows in one statement, written once for both backends. Two shapes:
//! - [`insert_columns`], given column by column, for appends (the outbox; with a free
//!   `ON CONFLICT …` tail, [`insert_columns_tail`], and typed `RETURNING` rows,
//!   [`insert_columns_returning`]: the telemetry writer), in the fastest form each backend
//!   offers through sqlx (one of the places where the SQL must differ, next to `dialect`):
//!   - PostgreSQL: one `INSERT … SELECT … FROM UNNEST($1::text[], $2::bytea[], …)`, one array
//!     per column. Its text never changes with the row count, so it is prepared once per
//!     connection, and it is one round trip with no bind-parameter limit (a multi-row `VALUES`
//!     binds every cell, so it needs chunks and a new statement per row count).
//!   - SQLite: multi-row `VALUES` in chunks that stay below SQLite's bind limit (SQLite has no
//!     arrays; its statements run in-process, so a round trip costs little).
//! - [`insert`], given row by row as [`Val`]s, with a free `ON CONFLICT …`/`RETURNING …` tail
//!   (the consumers' inbox claim and projection batches):
//!   - PostgreSQL: the same `UNNEST` form, the rows turned into one array per column (text or
//!     int8, by the values' kind): one statement of fixed text per table, prepared once,
//!     whatever the row count. A multi-row `VALUES` of a 500-event batch bound 1,500–4,000
//!     parameters, each encoded and described on its own, and its text changed with the row
//!     count.
//!   - SQLite: multi-row `VALUES`, split into as few statements as the bind limit allows
//!     (32,766 parameters).
//!
//! Rows are inserted in the order given: a serial key draws its values in that order (the
//! outbox and the notifications read model rely on it).

use super::{RawTx, StoreError, Tx};

/// One column of a bulk insert: a value per row.
pub enum Column<'a> {
    Text(Vec<&'a str>),
    Bytes(Vec<&'a [u8]>),
    BigInt(Vec<i64>),
    /// A nullable BIGINT.
    OptBigInt(Vec<Option<i64>>),
    /// A DOUBLE PRECISION.
    Float(Vec<f64>),
}

impl Column<'_> {
    fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Bytes(v) => v.len(),
            Column::BigInt(v) => v.len(),
            Column::OptBigInt(v) => v.len(),
            Column::Float(v) => v.len(),
        }
    }

    /// The PostgreSQL array type the column is bound as.
    fn pg_array(&self) -> &'static str {
        match self {
            Column::Text(_) => "text[]",
            Column::Bytes(_) => "bytea[]",
            Column::BigInt(_) | Column::OptBigInt(_) => "int8[]",
            Column::Float(_) => "float8[]",
        }
    }
}

/// Binds SQLite allows per statement is 32766; a chunk stays far below it.
const SQLITE_MAX_BINDS: usize = 6000;

/// Inserts the rows given by `columns` (name and values; every column holds one value per
/// row) into `table`. `table` and the names must be trusted identifiers: they are spliced
/// into the SQL.
pub async fn insert_columns(
    tx: &mut Tx,
    table: &str,
    columns: &[(&str, Column<'_>)],
) -> Result<(), StoreError> {
    insert_columns_tail(tx, table, columns, "").await
}

/// [`insert_columns`] with `tail` after the rows (`ON CONFLICT …`; trusted SQL).
pub async fn insert_columns_tail(
    tx: &mut Tx,
    table: &str,
    columns: &[(&str, Column<'_>)],
    tail: &str,
) -> Result<(), StoreError> {
    columns_run::<(i64,)>(tx, table, columns, tail, false).await?;
    Ok(())
}

/// [`insert_columns_tail`] whose `tail` ends in `RETURNING …`: the rows it returns, as `R`
/// (on PostgreSQL in one statement; on SQLite chunk by chunk, in order).
pub async fn insert_columns_returning<R>(
    tx: &mut Tx,
    table: &str,
    columns: &[(&str, Column<'_>)],
    tail: &str,
) -> Result<Vec<R>, StoreError>
where
    R: Send + Unpin,
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    columns_run::<R>(tx, table, columns, tail, true).await
}

/// The statements of the `insert_columns*` family; `returning` fetches rows as `R`.
async fn columns_run<R>(
    tx: &mut Tx,
    table: &str,
    columns: &[(&str, Column<'_>)],
    tail: &str,
    returning: bool,
) -> Result<Vec<R>, StoreError>
where
    R: Send + Unpin,
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    if rows == 0 {
        return Ok(Vec::new());
    }
    if columns.iter().any(|(_, c)| c.len() != rows) {
        return Err(StoreError::Data(format!(
            "bulk insert into {table}: columns of different lengths"
        )));
    }
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let names = names.join(", ");
    let mut out = Vec::new();
    match tx.raw() {
        RawTx::Postgres(t) => {
            let sql = pg_unnest_sql(table, &names, columns, tail);
            let mut q = sqlx::query_as::<_, R>(&sql);
            for (_, c) in columns {
                q = match c {
                    Column::Text(v) => q.bind(v),
                    Column::Bytes(v) => q.bind(v),
                    Column::BigInt(v) => q.bind(v),
                    Column::OptBigInt(v) => q.bind(v),
                    Column::Float(v) => q.bind(v),
                };
            }
            // Without `RETURNING` the statement gives no rows, so this is one round trip too.
            out = q.fetch_all(&mut **t).await?;
        }
        RawTx::Sqlite(t) => {
            let chunk = (SQLITE_MAX_BINDS / columns.len()).max(1);
            let mut start = 0;
            while start < rows {
                let end = (start + chunk).min(rows);
                let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO {table} ({names}) "));
                qb.push_values(start..end, |mut b, row| {
                    for (_, c) in columns {
                        match c {
                            Column::Text(v) => b.push_bind(v[row]),
                            Column::Bytes(v) => b.push_bind(v[row]),
                            Column::BigInt(v) => b.push_bind(v[row]),
                            Column::OptBigInt(v) => b.push_bind(v[row]),
                            Column::Float(v) => b.push_bind(v[row]),
                        };
                    }
                });
                qb.push(tail);
                if returning {
                    out.extend(qb.build_query_as::<R>().fetch_all(&mut **t).await?);
                } else {
                    qb.build().execute(&mut **t).await?;
                }
                start = end;
            }
        }
    }
    Ok(out)
}

/// PostgreSQL's one-statement form of [`insert_columns`]: `INSERT INTO table (names) SELECT
/// … FROM UNNEST($1::type[], …)`, then `tail`.
fn pg_unnest_sql(table: &str, names: &str, columns: &[(&str, Column<'_>)], tail: &str) -> String {
    let types: Vec<&str> = columns.iter().map(|(_, c)| c.pg_array()).collect();
    unnest_sql(&format!("INSERT INTO {table} ({names}) "), &types, tail)
}

/// `head SELECT c1, … FROM UNNEST($1::type1, …) WITH ORDINALITY AS u(c1, …, ord) ORDER BY
/// ord tail`, one array parameter per type: ordered by the ordinality, so a serial key
/// follows the order given whatever plan PostgreSQL picks. Both bulk forms use it.
fn unnest_sql(head: &str, types: &[&str], tail: &str) -> String {
    let names: Vec<String> = (1..=types.len()).map(|i| format!("c{i}")).collect();
    let names = names.join(", ");
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", i + 1))
        .collect();
    format!(
        "{head}SELECT {names} FROM UNNEST({}) WITH ORDINALITY AS u({names}, ord) ORDER BY ord{tail}",
        arrays.join(", ")
    )
}

/// Most bind parameters one statement gets (under both backends' limits).
const MAX_PARAMS: usize = 30_000;

/// One bound value of a row.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    I64(i64),
    OptI64(Option<i64>),
    Str(&'a str),
    OptStr(Option<&'a str>),
}

/// `head` (`INSERT INTO t (a, b) `), then the rows, then `tail` (`ON CONFLICT …`,
/// `RETURNING …`). Every row has `head`'s column count. Returns the rows the `RETURNING` gave
/// as strings (its first column), or nothing without one. Rows are inserted in the order
/// given. PostgreSQL: one `UNNEST` statement ([`pg_unnest`]); SQLite: multi-row `VALUES` in
/// chunks within the bind limit.
pub async fn insert(
    tx: &mut Tx,
    head: &str,
    rows: &[Vec<Val<'_>>],
    tail: &str,
) -> Result<Vec<String>, StoreError> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if rows.iter().any(|r| r.len() != width) {
        return Err(StoreError::Data(format!(
            "bulk insert `{head}`: rows of different lengths"
        )));
    }
    let returning = tail.contains("RETURNING");
    match tx.raw() {
        RawTx::Postgres(t) => pg_unnest(t, head, rows, width, tail, returning).await,
        RawTx::Sqlite(t) => {
            let mut out = Vec::new();
            for chunk in rows.chunks((MAX_PARAMS / width.max(1)).max(1)) {
                let mut qb = sqlx::QueryBuilder::new(head);
                qb.push_values(chunk.iter(), |mut b, row| {
                    for v in row {
                        match *v {
                            Val::I64(x) => b.push_bind(x),
                            Val::OptI64(x) => b.push_bind(x),
                            Val::Str(x) => b.push_bind(x),
                            Val::OptStr(x) => b.push_bind(x),
                        };
                    }
                });
                qb.push(tail);
                if returning {
                    out.extend(
                        qb.build_query_scalar::<String>()
                            .fetch_all(&mut **t)
                            .await?,
                    );
                } else {
                    qb.build().execute(&mut **t).await?;
                }
            }
            Ok(out)
        }
    }
}

/// One column of [`insert`]'s rows as a PostgreSQL array.
enum PgArray<'a> {
    Text(Vec<Option<&'a str>>),
    Int8(Vec<Option<i64>>),
}

/// [`insert`]'s rows column by column: a column is int8 or text by its first row's value,
/// and every row must agree.
fn pg_arrays<'a>(
    head: &str,
    rows: &[Vec<Val<'a>>],
    width: usize,
) -> Result<Vec<PgArray<'a>>, StoreError> {
    let mixed = || StoreError::Data(format!("bulk insert `{head}`: a column of mixed kinds"));
    let mut cols: Vec<PgArray<'a>> = rows[0]
        .iter()
        .map(|v| match v {
            Val::I64(_) | Val::OptI64(_) => PgArray::Int8(Vec::with_capacity(rows.len())),
            Val::Str(_) | Val::OptStr(_) => PgArray::Text(Vec::with_capacity(rows.len())),
        })
        .collect();
    for row in rows {
        for (col, v) in cols.iter_mut().zip(row).take(width) {
            match (col, *v) {
                (PgArray::Int8(c), Val::I64(x)) => c.push(Some(x)),
                (PgArray::Int8(c), Val::OptI64(x)) => c.push(x),
                (PgArray::Text(c), Val::Str(x)) => c.push(Some(x)),
                (PgArray::Text(c), Val::OptStr(x)) => c.push(x),
                _ => return Err(mixed()),
            }
        }
    }
    Ok(cols)
}

/// [`insert`]'s rows as one [`unnest_sql`] statement, an array per column.
async fn pg_unnest(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    head: &str,
    rows: &[Vec<Val<'_>>],
    width: usize,
    tail: &str,
    returning: bool,
) -> Result<Vec<String>, StoreError> {
    let cols = pg_arrays(head, rows, width)?;
    let types: Vec<&str> = cols
        .iter()
        .map(|c| match c {
            PgArray::Text(_) => "text[]",
            PgArray::Int8(_) => "int8[]",
        })
        .collect();
    let sql = unnest_sql(head, &types, tail);
    if returning {
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for c in &cols {
            q = match c {
                PgArray::Text(v) => q.bind(v),
                PgArray::Int8(v) => q.bind(v),
            };
        }
        Ok(q.fetch_all(&mut **t).await?)
    } else {
        let mut q = sqlx::query(&sql);
        for c in &cols {
            q = match c {
                PgArray::Text(v) => q.bind(v),
                PgArray::Int8(v) => q.bind(v),
            };
        }
        q.execute(&mut **t).await?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unnest_statement_orders_by_ordinality() {
        assert_eq!(
            super::unnest_sql(
                "INSERT INTO t (a, b) ",
                &["text[]", "int8[]"],
                " ON CONFLICT DO NOTHING"
            ),
            "INSERT INTO t (a, b) SELECT c1, c2 FROM UNNEST($1::text[], $2::int8[]) WITH ORDINALITY \
             AS u(c1, c2, ord) ORDER BY ord ON CONFLICT DO NOTHING"
        );
    }
}
