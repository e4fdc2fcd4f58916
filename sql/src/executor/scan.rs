//! Table scans: key bounds → a key range or point, paged reads, row decoding, filtering.

use crate::catalog::TableDesc;
use crate::encoding::{decode_key_datum, decode_row, encode_key_datum, encode_row, prefix_end};
use crate::error::{Result, SqlError};
use crate::expr::{truth, ScalarExpr};
use crate::plan::KeyBounds;
use crate::types::{DataType, Datum, Row, TypeFamily};
use meridian_kv::Txn;

/// Rows read per storage call.
pub const PAGE_SIZE: usize = 1000;

/// What a scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Nothing (a bound is NULL, or the range is empty).
    Empty,
    /// One key.
    Point(Vec<u8>),
    /// Keys in `[start, end)`.
    Range(Vec<u8>, Vec<u8>),
}

/// Converts a bound's value to the representation a key column of type `ty` holds.
fn key_value(ty: DataType, value: Datum) -> Result<Datum> {
    match (ty.family(), value) {
        (TypeFamily::Numeric, Datum::Int(i)) if ty.is_float() => Ok(Datum::Float(i as f64)),
        (_, value) => Ok(value),
    }
}

/// Evaluates `bounds` into the key range to read.
pub fn key_range(table: &TableDesc, bounds: &KeyBounds, params: &[Datum]) -> Result<KeyRange> {
    let mut prefix = table.primary_prefix();
    let key_types: Vec<DataType> = table
        .primary_key
        .iter()
        .filter_map(|&i| table.columns.get(i).map(|c| c.data_type))
        .collect();
    for (e, ty) in bounds.eq.iter().zip(&key_types) {
        let value = e.eval(&[], params)?;
        if value.is_null() {
            return Ok(KeyRange::Empty);
        }
        encode_key_datum(&mut prefix, &key_value(*ty, value)?)?;
    }
    if bounds.is_point(table) {
        return Ok(KeyRange::Point(prefix));
    }
    let next_type = key_types.get(bounds.eq.len()).copied();
    let prefix_limit = prefix_end(&prefix).unwrap_or_else(|| table.primary_end());
    let bound_key = |e: &ScalarExpr| -> Result<Option<Vec<u8>>> {
        let value = e.eval(&[], params)?;
        if value.is_null() {
            return Ok(None);
        }
        let ty = next_type.ok_or_else(|| SqlError::Internal("bound past the key".into()))?;
        let mut key = prefix.clone();
        encode_key_datum(&mut key, &key_value(ty, value)?)?;
        Ok(Some(key))
    };
    let start = match &bounds.lower {
        None => prefix.clone(),
        Some((e, inclusive)) => match bound_key(e)? {
            None => return Ok(KeyRange::Empty),
            Some(key) if *inclusive => key,
            Some(key) => prefix_end(&key).unwrap_or_else(|| prefix_limit.clone()),
        },
    };
    let end = match &bounds.upper {
        None => prefix_limit.clone(),
        Some((e, inclusive)) => match bound_key(e)? {
            None => return Ok(KeyRange::Empty),
            Some(key) if *inclusive => prefix_end(&key).unwrap_or_else(|| prefix_limit.clone()),
            Some(key) => key,
        },
    };
    if start >= end {
        return Ok(KeyRange::Empty);
    }
    Ok(KeyRange::Range(start, end))
}

/// Reads the rows of `table` within `bounds` for which `filter` holds, stopping once `budget`
/// rows are found; more than `max_bytes` of them (as stored) is 54000.
pub async fn run(
    table: &TableDesc,
    bounds: &KeyBounds,
    filter: Option<&ScalarExpr>,
    txn: &mut Txn,
    params: &[Datum],
    budget: Option<usize>,
    max_bytes: usize,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let collect = |page: Vec<(Row, usize)>| {
        for (row, size) in page {
            if budget.is_some_and(|b| rows.len() >= b) {
                break;
            }
            bytes += size;
            if bytes > max_bytes {
                return Err(crate::limits::result_too_large(max_bytes));
            }
            rows.push(row);
        }
        Ok(budget.is_none_or(|b| rows.len() < b))
    };
    for_each_page(table, bounds, filter, txn, params, collect).await?;
    Ok(rows)
}

/// Reads the rows of `table` within `bounds` for which `filter` holds, a page at a time: each
/// page's rows, each with its size as stored, go to `sink`, until it answers false or the
/// range ends.
pub async fn for_each_page(
    table: &TableDesc,
    bounds: &KeyBounds,
    filter: Option<&ScalarExpr>,
    txn: &mut Txn,
    params: &[Datum],
    mut sink: impl FnMut(Vec<(Row, usize)>) -> Result<bool>,
) -> Result<()> {
    let mut cursor = Cursor::new(table, bounds, filter, params)?;
    while let Some(page) = cursor.next_page(txn, params).await? {
        if !sink(page)? {
            break;
        }
    }
    Ok(())
}

/// A scan in progress: each [`Cursor::next_page`] reads up to [`PAGE_SIZE`] keys and returns
/// the rows among them that pass the filter (possibly none), until the range is done.
pub struct Cursor<'p> {
    table: &'p TableDesc,
    filter: Option<&'p ScalarExpr>,
    /// What is left to read; `Empty` once done.
    left: KeyRange,
}

impl<'p> Cursor<'p> {
    pub fn new(
        table: &'p TableDesc,
        bounds: &KeyBounds,
        filter: Option<&'p ScalarExpr>,
        params: &[Datum],
    ) -> Result<Cursor<'p>> {
        Ok(Cursor {
            table,
            filter,
            left: key_range(table, bounds, params)?,
        })
    }

    /// The next page's rows that pass the filter, each with its size as stored; `None` once
    /// the range is done.
    pub async fn next_page(
        &mut self,
        txn: &mut Txn,
        params: &[Datum],
    ) -> Result<Option<Vec<(Row, usize)>>> {
        let pairs = match std::mem::replace(&mut self.left, KeyRange::Empty) {
            KeyRange::Empty => return Ok(None),
            KeyRange::Point(key) => match txn.get(&key).await? {
                Some(value) => vec![(key, value)],
                None => Vec::new(),
            },
            KeyRange::Range(start, end) => {
                let page = txn.scan(&start, &end, Some(PAGE_SIZE)).await?;
                if page.len() >= PAGE_SIZE {
                    if let Some((last, _)) = page.last() {
                        let mut next = last.clone();
                        next.push(0);
                        self.left = KeyRange::Range(next, end);
                    }
                }
                page
            }
        };
        let mut rows = Vec::with_capacity(pairs.len());
        for (key, value) in &pairs {
            let row = decode_table_row(self.table, key, value)?;
            let keep = match self.filter {
                Some(f) => truth(&f.eval(&row, params)?) == Some(true),
                None => true,
            };
            if keep {
                rows.push((row, key.len() + value.len()));
            }
        }
        Ok(Some(rows))
    }
}

/// The key and value storing `row` (a full table row in column order).
pub fn encode_table_row(table: &TableDesc, row: &[Datum]) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut key = table.primary_prefix();
    for &i in &table.primary_key {
        let value = row
            .get(i)
            .ok_or_else(|| SqlError::Internal("row shorter than table".into()))?;
        encode_key_datum(&mut key, value)?;
    }
    let value = encode_row(
        table
            .columns
            .iter()
            .zip(row)
            .enumerate()
            .filter(|(i, _)| !table.is_key_column(*i))
            .map(|(_, (c, v))| (c.id, v)),
    );
    Ok((key, value))
}

/// Decodes a stored row into a full table row in column order.
pub fn decode_table_row(table: &TableDesc, key: &[u8], value: &[u8]) -> Result<Row> {
    let mut row = vec![Datum::Null; table.columns.len()];
    let prefix_len = table.primary_prefix().len();
    let mut input = key
        .get(prefix_len..)
        .ok_or_else(|| SqlError::Internal("key shorter than its prefix".into()))?;
    for &i in &table.primary_key {
        let column = table
            .columns
            .get(i)
            .ok_or_else(|| SqlError::Internal("key column out of range".into()))?;
        let value = decode_key_datum(&mut input, column.data_type)?;
        if let Some(slot) = row.get_mut(i) {
            *slot = value;
        }
    }
    for (id, value) in decode_row(value)? {
        // Columns dropped since the row was written are skipped.
        if let Some(i) = table.columns.iter().position(|c| c.id == id) {
            if let Some(slot) = row.get_mut(i) {
                *slot = value;
            }
        }
    }
    Ok(row)
}
