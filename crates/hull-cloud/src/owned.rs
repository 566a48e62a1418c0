//! Rows that an owner (a tenant, or the operator) holds a bounded number
//! of: crons and functions.

use rusqlite::{OptionalExtension, Transaction};

/// Why an owner may not hold one more row.
pub(crate) enum NoRoom {
    /// The tenant is not (or no longer) known.
    NoTenant(String),
    /// The owner, named for a message, holds its most already.
    Full(String),
}

/// Whether `tenant` (none: the operator) may hold one more row of `table`
/// beside those it holds, within `max`. Called in the transaction that
/// inserts, so that the count and the insert see the same rows.
pub(crate) fn room(
    tx: &Transaction<'_>,
    table: &str,
    tenant: Option<&str>,
    max: usize,
) -> Result<Result<(), NoRoom>, rusqlite::Error> {
    if let Some(tenant) = tenant {
        let known: Option<i64> = tx
            .query_row("SELECT 1 FROM tenants WHERE name = ?1", [tenant], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_none() {
            return Ok(Err(NoRoom::NoTenant(tenant.to_owned())));
        }
    }
    let held: usize = tx.query_row(
        &format!("SELECT count(*) FROM {table} WHERE ifnull(tenant, '') = ifnull(?1, '')"),
        [tenant],
        |r| r.get(0),
    )?;
    if held >= max {
        let owner = tenant.map_or_else(|| "the operator".to_owned(), |t| format!("tenant {t}"));
        return Ok(Err(NoRoom::Full(owner)));
    }
    Ok(Ok(()))
}
