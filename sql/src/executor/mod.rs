//! The executor: runs a logical plan inside a storage transaction.
//!
//! Operators are materializing: each returns its rows as a `Vec`, which keeps them simple. A
//! query's result, though, goes to its connection a page at a time ([`stream`]) whenever its
//! plan is a scan with filters, projections and a limit over it. Three things keep big tables
//! from costing more than they must:
//!
//! - scans read in pages of [`scan::PAGE_SIZE`] rows, resuming after the last key, so no single
//!   storage call is huge;
//! - a scan reads at most `max_bytes` of rows into memory (`max_result_bytes`, 54000 beyond),
//!   except straight into an aggregation, which takes the scan page by page and holds only
//!   its groups;
//! - `Limit` passes a row budget (limit + offset) down through operators that neither drop nor
//!   add rows (projection), and scans stop once their filtered output meets it. Operators that
//!   need all input (sort, aggregate, distinct) drop the budget.
//!
//! One file per kind of operator: `scan` (key bounds → key range, row decoding), `aggregate`
//! (hash aggregation), `dml` (insert, update, delete); the small ones live here.

mod aggregate;
mod dml;
pub mod scan;
pub mod stream;

use std::cmp::Ordering;
use std::collections::HashSet;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::encoding::encode_group_key;
use crate::error::{Result, SqlError};
use crate::expr::{truth, ScalarExpr};
use crate::plan::{Plan, SortKey};
use crate::types::{Datum, Row};
use meridian_kv::Txn;

/// What running a plan produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    /// Result rows (for DML, the RETURNING rows, if any).
    pub rows: Vec<Row>,
    /// Rows returned (queries) or written (DML), for the command tag.
    pub count: usize,
}

/// Runs `plan` inside `txn` with parameter values `params` (already of the bound types),
/// reading at most `max_bytes` of rows into memory (54000 beyond).
pub async fn execute(
    plan: &Plan,
    txn: &mut Txn,
    params: &[Datum],
    max_bytes: usize,
) -> Result<ExecOutput> {
    match plan {
        Plan::Insert { .. } | Plan::Update { .. } | Plan::Delete { .. } => {
            dml::execute(plan, txn, params, max_bytes).await
        }
        query => {
            let rows = run(query, txn, params, None, max_bytes).await?;
            Ok(ExecOutput {
                count: rows.len(),
                rows,
            })
        }
    }
}

/// Runs a query operator, producing at least `budget` rows if it has them (more is fine).
/// Each scan reads at most `max_bytes` of rows.
pub(crate) fn run<'a>(
    plan: &'a Plan,
    txn: &'a mut Txn,
    params: &'a [Datum],
    budget: Option<usize>,
    max_bytes: usize,
) -> BoxFuture<'a, Result<Vec<Row>>> {
    async move {
        match plan {
            Plan::Values { rows } => rows
                .iter()
                .map(|row| row.iter().map(|e| e.eval(&[], params)).collect())
                .collect(),
            Plan::Scan {
                table,
                bounds,
                filter,
            } => {
                scan::run(
                    table,
                    bounds,
                    filter.as_ref(),
                    txn,
                    params,
                    budget,
                    max_bytes,
                )
                .await
            }
            Plan::Filter { input, predicate } => {
                let rows = run(input, txn, params, None, max_bytes).await?;
                filter_rows(rows, predicate, params)
            }
            Plan::Aggregate {
                input,
                group_by,
                aggregates,
            } => {
                let mut aggregation = aggregate::Aggregation::new(group_by, aggregates);
                match input.as_ref() {
                    // Straight from a scan, a page at a time: only the groups are held.
                    Plan::Scan {
                        table,
                        bounds,
                        filter,
                    } => {
                        let feed = |page: Vec<(Row, usize)>| {
                            let rows = page.into_iter().map(|(row, _)| row).collect();
                            aggregation.add(rows, params).map(|()| true)
                        };
                        scan::for_each_page(table, bounds, filter.as_ref(), txn, params, feed)
                            .await?
                    }
                    other => {
                        aggregation.add(run(other, txn, params, None, max_bytes).await?, params)?
                    }
                }
                aggregation.finish()
            }
            Plan::Project { input, exprs } => {
                let rows = run(input, txn, params, budget, max_bytes).await?;
                rows.iter()
                    .map(|row| exprs.iter().map(|e| e.eval(row, params)).collect())
                    .collect()
            }
            Plan::Distinct { input } => {
                let rows = run(input, txn, params, None, max_bytes).await?;
                let mut seen = HashSet::new();
                Ok(rows
                    .into_iter()
                    .filter(|row| seen.insert(encode_group_key(row)))
                    .collect())
            }
            Plan::Sort { input, keys } => {
                let rows = run(input, txn, params, None, max_bytes).await?;
                sort_rows(rows, keys, params)
            }
            Plan::Limit {
                input,
                limit,
                offset,
            } => {
                let limit = row_count(limit.as_ref(), params, "LIMIT")?;
                let offset = row_count(offset.as_ref(), params, "OFFSET")?.unwrap_or(0);
                let budget = limit.map(|l| l.saturating_add(offset));
                let rows = run(input, txn, params, budget, max_bytes).await?;
                Ok(rows
                    .into_iter()
                    .skip(offset)
                    .take(limit.unwrap_or(usize::MAX))
                    .collect())
            }
            Plan::Insert { .. } | Plan::Update { .. } | Plan::Delete { .. } => Err(
                SqlError::unsupported("INSERT, UPDATE or DELETE inside another statement"),
            ),
        }
    }
    .boxed()
}

/// Keeps the rows for which `predicate` is true (not false, not NULL).
fn filter_rows(rows: Vec<Row>, predicate: &ScalarExpr, params: &[Datum]) -> Result<Vec<Row>> {
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if truth(&predicate.eval(&row, params)?) == Some(true) {
            kept.push(row);
        }
    }
    Ok(kept)
}

/// Evaluates a LIMIT/OFFSET expression: NULL means none; negative is an error.
fn row_count(e: Option<&ScalarExpr>, params: &[Datum], what: &str) -> Result<Option<usize>> {
    let Some(e) = e else { return Ok(None) };
    match e.eval(&[], params)? {
        Datum::Null => Ok(None),
        Datum::Int(n) if n < 0 => Err(SqlError::InvalidRowCount(format!(
            "{what} must not be negative"
        ))),
        Datum::Int(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        other => Err(SqlError::DatatypeMismatch(format!(
            "{what} must be an integer, not {other:?}"
        ))),
    }
}

/// Stable sort on `keys`, with PostgreSQL's NULL placement.
fn sort_rows(rows: Vec<Row>, keys: &[SortKey], params: &[Datum]) -> Result<Vec<Row>> {
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let values = keys
            .iter()
            .map(|k| k.expr.eval(&row, params))
            .collect::<Result<Vec<_>>>()?;
        keyed.push((values, row));
    }
    keyed.sort_by(|(a, _), (b, _)| {
        for ((x, y), key) in a.iter().zip(b).zip(keys) {
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) if key.nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if key.nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let ord = x.compare(y).unwrap_or(Ordering::Equal);
                    if key.desc {
                        ord.reverse()
                    } else {
                        ord
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    Ok(keyed.into_iter().map(|(_, row)| row).collect())
}
