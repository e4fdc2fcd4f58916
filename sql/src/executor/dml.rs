//! INSERT, UPDATE and DELETE.
//!
//! Uniqueness of primary keys costs no read: an INSERT buffers its rows as inserts
//! ([`meridian_kv::Txn::insert`]), and the leader checks that each key has no live row when it
//! locks the key for the commit, so two transactions inserting the same key cannot both commit
//! and the loser writes nothing (SQLSTATE 23505, reported by the statement that commits: the
//! INSERT itself in autocommit mode, COMMIT in an explicit transaction, as in Spanner).
//! Duplicates inside one transaction's own writes are caught at once. Rows of tables without a
//! primary key get a generated row id; those are checked by reading, so that a collision of
//! generated ids is drawn again instead of reported as a duplicate the user never wrote.
//!
//! UPDATE changes a row's key by deleting the old key and writing the new one. All deletions of
//! a statement happen before its writes, so `UPDATE t SET id = id + 1` succeeds whatever order
//! the rows come in (set semantics).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::scan::encode_table_row;
use super::{run, ExecOutput};
use crate::catalog::TableDesc;
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::plan::Plan;
use crate::types::{cast, CastKind, DataType, Datum, Row};
use meridian_kv::Txn;

/// Runs a DML plan.
pub async fn execute(plan: &Plan, txn: &mut Txn, params: &[Datum]) -> Result<ExecOutput> {
    match plan {
        Plan::Insert {
            table,
            columns,
            source_types,
            source,
            returning,
        } => {
            let rows = run(source, txn, params, None).await?;
            let mut written = Vec::with_capacity(rows.len());
            for source_row in rows {
                let row = build_insert_row(table, columns, source_types, source_row)?;
                written.push(insert_row(table, txn, row).await?);
            }
            finish(written, returning.as_deref(), params)
        }
        Plan::Update {
            table,
            source,
            assignments,
            returning,
        } => {
            let rows = run(source, txn, params, None).await?;
            let mut changes = Vec::with_capacity(rows.len());
            for old in rows {
                let mut new = old.clone();
                for (index, e) in assignments {
                    let column = table
                        .columns
                        .get(*index)
                        .ok_or_else(|| SqlError::Internal("column out of range".into()))?;
                    let value = cast(
                        e.eval(&old, params)?,
                        e.data_type(),
                        column.data_type,
                        CastKind::Assignment,
                    )?;
                    if let Some(slot) = new.get_mut(*index) {
                        *slot = value;
                    }
                }
                check_not_null(table, &new)?;
                changes.push((old, new));
            }
            let key_changes = assignments.iter().any(|(i, _)| table.is_key_column(*i));
            let mut encoded = Vec::with_capacity(changes.len());
            for (old, new) in &changes {
                let (old_key, _) = encode_table_row(table, old)?;
                let (new_key, value) = encode_table_row(table, new)?;
                if key_changes && old_key != new_key {
                    txn.delete(old_key.clone())?;
                }
                encoded.push((old_key, new_key, value));
            }
            for (old_key, new_key, value) in encoded {
                if old_key != new_key && txn.get(&new_key).await?.is_some() {
                    return Err(SqlError::UniqueViolation {
                        table: table.name.clone(),
                    });
                }
                txn.put(new_key, value)?;
            }
            let written = changes.into_iter().map(|(_, new)| new).collect();
            finish(written, returning.as_deref(), params)
        }
        Plan::Delete {
            table,
            source,
            returning,
        } => {
            let rows = run(source, txn, params, None).await?;
            for row in &rows {
                let (key, _) = encode_table_row(table, row)?;
                txn.delete(key)?;
            }
            finish(rows, returning.as_deref(), params)
        }
        _ => Err(SqlError::Internal("not a DML plan".into())),
    }
}

/// The affected count and RETURNING rows of a DML statement.
fn finish(
    written: Vec<Row>,
    returning: Option<&[ScalarExpr]>,
    params: &[Datum],
) -> Result<ExecOutput> {
    let count = written.len();
    let rows = match returning {
        Some(exprs) => written
            .iter()
            .map(|row| exprs.iter().map(|e| e.eval(row, params)).collect())
            .collect::<Result<Vec<Row>>>()?,
        None => Vec::new(),
    };
    Ok(ExecOutput { rows, count })
}

/// A full table row from an INSERT source row: listed columns converted to their column types,
/// the rest NULL.
fn build_insert_row(
    table: &TableDesc,
    columns: &[usize],
    source_types: &[DataType],
    source_row: Row,
) -> Result<Row> {
    let mut row = vec![Datum::Null; table.columns.len()];
    for ((value, &target), &from) in source_row.into_iter().zip(columns).zip(source_types) {
        let column = table
            .columns
            .get(target)
            .ok_or_else(|| SqlError::Internal("insert target out of range".into()))?;
        let converted = cast(value, from, column.data_type, CastKind::Assignment)?;
        if let Some(slot) = row.get_mut(target) {
            *slot = converted;
        }
    }
    Ok(row)
}

/// Writes one new row, generating the hidden row id if the table has one and it was not given.
async fn insert_row(table: &TableDesc, txn: &mut Txn, mut row: Row) -> Result<Row> {
    let generated: Vec<usize> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| c.hidden && row.get(*i).is_some_and(Datum::is_null))
        .map(|(i, _)| i)
        .collect();
    check_not_null_except(table, &row, &generated)?;
    loop {
        for &i in &generated {
            if let Some(slot) = row.get_mut(i) {
                *slot = Datum::Int(unique_rowid());
            }
        }
        let (key, value) = encode_table_row(table, &row)?;
        if generated.is_empty() {
            return match txn.insert(key, value) {
                Ok(()) => Ok(row),
                Err(meridian_kv::Error::KeyExists { .. }) => Err(SqlError::UniqueViolation {
                    table: table.name.clone(),
                }),
                Err(e) => Err(e.into()),
            };
        }
        if txn.get(&key).await?.is_none() {
            txn.put(key, value)?;
            return Ok(row);
        }
        // A generated id that collides (another gateway, same millisecond and node bits) is
        // drawn again rather than reported as a duplicate the user never wrote.
    }
}

fn check_not_null(table: &TableDesc, row: &[Datum]) -> Result<()> {
    check_not_null_except(table, row, &[])
}

fn check_not_null_except(table: &TableDesc, row: &[Datum], except: &[usize]) -> Result<()> {
    for (i, (column, value)) in table.columns.iter().zip(row).enumerate() {
        if !column.nullable && value.is_null() && !except.contains(&i) {
            return Err(SqlError::NotNullViolation {
                table: table.name.clone(),
                column: column.name.clone(),
            });
        }
    }
    Ok(())
}

/// Milliseconds of the row id epoch (2025-01-01T00:00:00Z) since the Unix epoch.
const ROWID_EPOCH_MS: u64 = 1_735_689_600_000;

/// State of the row id generator: (last millisecond used, counter within it).
static ROWID_STATE: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// A process-random 10-bit node id, so gateways rarely generate the same ids.
fn rowid_node() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NODE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() & 0x3FF
    })
}

/// A unique, roughly time-ordered INT8 for hidden row ids, generated without coordination:
/// 41 bits of milliseconds since 2025 (good until 2094), 10 bits of node id, 12 bits of counter
/// (4096 ids per millisecond; past that the generator borrows from the next millisecond).
pub fn unique_rowid() -> i64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .saturating_sub(ROWID_EPOCH_MS);
    let mut state = ROWID_STATE.lock().unwrap_or_else(|p| p.into_inner());
    let (last_ms, counter) = *state;
    let (ms, counter) = if now_ms > last_ms {
        (now_ms, 0)
    } else if counter < 0xFFF {
        (last_ms, counter + 1)
    } else {
        (last_ms + 1, 0)
    };
    *state = (ms, counter);
    (((ms & ((1 << 41) - 1)) << 22) | (rowid_node() << 12) | counter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rowids_are_unique_and_increasing() {
        let mut last = unique_rowid();
        assert!(last > 0);
        for _ in 0..10_000 {
            let next = unique_rowid();
            assert!(next > last);
            last = next;
        }
    }
}
