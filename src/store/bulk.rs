//! Multi-row statements: `INSERT … VALUES (…), (…), …` over a whole batch of rows, written once
//! for both backends. Rows are lists of [`Val`]s, so one helper binds any table's columns on
//! either driver; a batch larger than one statement may bind is split into as few statements
//! as the bind limit allows (SQLite 32,766 parameters, PostgreSQL 65,535).

use super::{StoreError, Tx};
use crate::on_tx;

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

/// `head` (`INSERT INTO t (a, b) `), then `VALUES` with one tuple per row, then `tail`
/// (`ON CONFLICT …`, `RETURNING …`), as chunks within the bind limit. Every row has
/// `head`'s column count. Returns the rows each chunk's `RETURNING` gave as strings (its
/// first column), or nothing without one.
pub async fn insert(
    tx: &mut Tx,
    head: &str,
    rows: &[Vec<Val<'_>>],
    tail: &str,
) -> Result<Vec<String>, StoreError> {
    let Some(width) = rows.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    let returning = tail.contains("RETURNING");
    let mut out = Vec::new();
    for chunk in rows.chunks((MAX_PARAMS / width.max(1)).max(1)) {
        on_tx!(tx, c => {
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
                out.extend(qb.build_query_scalar::<String>().fetch_all(&mut *c).await?);
            } else {
                qb.build().execute(&mut *c).await?;
            }
        });
    }
    Ok(out)
}
