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

use super::scan::encode_table_row;
use super::{run, ExecOutput};
use crate::catalog::TableDesc;
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::plan::Plan;
use crate::types::{cast, CastKind, DataType, Datum, Row};
use meridian_kv::Txn;

/// Runs a DML plan.
pub async fn execute(
    plan: &Plan,
    txn: &mut Txn,
    params: &[Datum],
    max_bytes: usize,
) -> Result<ExecOutput> {
    match plan {
        Plan::Insert {
            table,
            columns,
            source_types,
            source,
            returning,
        } => {
            let rows = run(source, txn, params, None, max_bytes).await?;
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
            let rows = run(source, txn, params, None, max_bytes).await?;
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
            let rows = run(source, txn, params, None, max_bytes).await?;
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
    for &i in &generated {
        if let Some(slot) = row.get_mut(i) {
            *slot = Datum::Int(txn.unique_id().await?);
        }
    }
    // Generated ids never repeat (they come from the cluster's id counter), so an existing key
    // means the user wrote it: a duplicate either way, as with a PostgreSQL sequence.
    let (key, value) = encode_table_row(table, &row)?;
    match txn.insert(key, value) {
        Ok(()) => Ok(row),
        Err(meridian_kv::Error::KeyExists { .. }) => Err(SqlError::UniqueViolation {
            table: table.name.clone(),
        }),
        Err(e) => Err(e.into()),
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
