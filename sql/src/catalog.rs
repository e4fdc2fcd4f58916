//! The catalog: table descriptors stored in the database itself, in system table
//! [`CATALOG_TABLE_ID`] (keys under `table_prefix(1)`).
//!
//! Each table is one catalog row: key `table_prefix(1) ++ PRIMARY_INDEX_ID ++ name` (the name
//! encoded like a TEXT key column), value a version byte followed by the bincode of its
//! [`TableDesc`]. Keying by name makes CREATE TABLE's "does the name exist" check a point read,
//! which the read's shared lock makes race-free: two concurrent CREATEs of one name conflict
//! (wound-wait: the younger aborts) and the loser, on retry, sees the winner and reports 42P07.
//!
//! Statements read descriptors from the gateway's schema cache ([`crate::schema`]), loaded in
//! lock-free strong snapshots of their own and never inside the user's transaction, so user
//! transactions neither lock the catalog nor involve the system tablet in their commits. A
//! statement in an explicit transaction may see a schema newer than the one its earlier
//! statements saw.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::encoding::{encode_key_datum, index_prefix, prefix_end, PRIMARY_INDEX_ID};
use crate::error::{Result, SqlError};
use meridian_kv::Txn;

use crate::encoding::table_prefix;
use crate::types::{DataType, Datum};

/// The system table holding table descriptors.
pub const CATALOG_TABLE_ID: u32 = 1;

const DESCRIPTOR_VERSION: u8 = 1;

/// A table's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDesc {
    /// The table id; its rows live under `table_prefix(id)`.
    pub id: u32,
    /// The table's name (lower case unless it was quoted).
    pub name: String,
    /// Columns in declaration order (the hidden row id, if any, last).
    pub columns: Vec<ColumnDesc>,
    /// Positions in `columns` of the primary key columns, in key order.
    pub primary_key: Vec<usize>,
    /// The id the next added column gets; ids are never reused.
    pub next_column_id: u32,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDesc {
    /// Stable id, used in the row encoding.
    pub id: u32,
    /// Name (lower case unless quoted).
    pub name: String,
    /// Declared type.
    pub data_type: DataType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Hidden columns (the generated row id) are left out of `SELECT *` and INSERT's default
    /// column list but can be named explicitly.
    pub hidden: bool,
}

impl TableDesc {
    /// The position of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether column position `index` is part of the primary key.
    pub fn is_key_column(&self, index: usize) -> bool {
        self.primary_key.contains(&index)
    }

    /// The prefix of every key in this table's primary index.
    pub fn primary_prefix(&self) -> Vec<u8> {
        index_prefix(self.id, PRIMARY_INDEX_ID)
    }

    /// The end (exclusive) of this table's primary index.
    pub fn primary_end(&self) -> Vec<u8> {
        prefix_end(&self.primary_prefix()).unwrap_or_else(|| table_prefix(self.id + 1))
    }
}

/// The catalog key of the table called `name`.
fn descriptor_key(name: &str) -> Vec<u8> {
    let mut key = index_prefix(CATALOG_TABLE_ID, PRIMARY_INDEX_ID);
    // Text never fails to encode.
    let _ = encode_key_datum(&mut key, &Datum::Text(name.to_string()));
    key
}

fn encode_descriptor(desc: &TableDesc) -> Result<Vec<u8>> {
    let mut out = vec![DESCRIPTOR_VERSION];
    bincode::serialize_into(&mut out, desc)
        .map_err(|e| SqlError::Internal(format!("encoding descriptor: {e}")))?;
    Ok(out)
}

fn decode_descriptor(bytes: &[u8]) -> Result<TableDesc> {
    match bytes.split_first() {
        Some((&DESCRIPTOR_VERSION, rest)) => bincode::deserialize(rest)
            .map_err(|e| SqlError::Internal(format!("corrupt table descriptor: {e}"))),
        _ => Err(SqlError::Internal(
            "unknown table descriptor version".into(),
        )),
    }
}

/// Reads the descriptor of `name` inside `txn`.
pub async fn get_table(txn: &mut Txn, name: &str) -> Result<Option<TableDesc>> {
    match txn.get(&descriptor_key(name)).await? {
        Some(bytes) => decode_descriptor(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Writes a new descriptor inside `txn`; the caller has checked the name is free.
pub fn put_table(txn: &mut Txn, desc: &TableDesc) -> Result<()> {
    txn.put(descriptor_key(&desc.name), encode_descriptor(desc)?)?;
    Ok(())
}

/// Deletes the descriptor of `name` inside `txn`.
pub fn delete_table(txn: &mut Txn, name: &str) -> Result<()> {
    txn.delete(descriptor_key(name))?;
    Ok(())
}

/// All table descriptors, in name order, read inside `txn`.
pub async fn list_tables(txn: &mut Txn) -> Result<Vec<TableDesc>> {
    decode_tables(&scan_index(txn, PRIMARY_INDEX_ID).await?)
}

/// The table descriptors among the values of the primary catalog index.
pub fn decode_tables(values: &[Vec<u8>]) -> Result<Vec<TableDesc>> {
    values.iter().map(|v| decode_descriptor(v)).collect()
}

/// The values of every row of the catalog index `index`, in key order, read inside `txn` a
/// page at a time.
pub async fn scan_index(txn: &mut Txn, index: u8) -> Result<Vec<Vec<u8>>> {
    let start = index_prefix(CATALOG_TABLE_ID, index);
    let end = prefix_end(&start).unwrap_or_else(|| table_prefix(CATALOG_TABLE_ID + 1));
    Ok(scan_rows(txn, start, &end)
        .await?
        .into_iter()
        .map(|(_, value)| value)
        .collect())
}

/// Every row of the catalog table (descriptors, the schema version, users, grants), read in
/// one paged scan inside `txn`: the values of each index, by index id, in key order.
pub async fn scan_all(txn: &mut Txn) -> Result<HashMap<u8, Vec<Vec<u8>>>> {
    let start = table_prefix(CATALOG_TABLE_ID);
    let end = table_prefix(CATALOG_TABLE_ID + 1);
    let mut by_index: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
    for (key, value) in scan_rows(txn, start, &end).await? {
        if let Some(&index) = key.get(table_prefix(CATALOG_TABLE_ID).len()) {
            by_index.entry(index).or_default().push(value);
        }
    }
    Ok(by_index)
}

/// The rows in `[start, end)`, a page at a time.
async fn scan_rows(txn: &mut Txn, start: Vec<u8>, end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut rows = Vec::new();
    let mut cursor = start;
    loop {
        let page = txn.scan(&cursor, end, Some(CATALOG_PAGE_SIZE)).await?;
        let full = page.len() == CATALOG_PAGE_SIZE;
        for (key, value) in page {
            cursor = key.clone();
            cursor.push(0);
            rows.push((key, value));
        }
        if !full {
            return Ok(rows);
        }
    }
}

const CATALOG_PAGE_SIZE: usize = 1000;

/// Table descriptors a statement needs, looked up by name; `None` marks a name that does not
/// exist (the binder reports 42P01 if it needs it).
pub type TableSet = HashMap<String, Option<Arc<TableDesc>>>;
