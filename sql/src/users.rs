//! SQL users: who may log in, with which password, and who administers the rest. Users live
//! in the catalog table, one row each (key `table_prefix(1) ++ USERS_INDEX_ID ++ name`, value
//! a [`UserRecord`]), replicated and transactional like every other row. Passwords are kept as
//! SCRAM-SHA-256 verifiers ([`meridian_security::password::Verifier`]), never in the clear.
//!
//! `root` always exists and is an administrator; it has no password until one is set with
//! `ALTER USER root WITH PASSWORD …`, so on a secure cluster it logs in with its client
//! certificate. Administrators create, alter and drop users, grant and revoke, and run DDL;
//! anyone else gets 42501.
//!
//! Grants (`GRANT SELECT, INSERT, UPDATE, DELETE | ALL ON [TABLE] t TO u`) are rows of another
//! catalog index, one per user and table, holding a [`Privileges`] mask. Users and grants load
//! with the schema ([`crate::schema::SchemaCache`]), and every change to them bumps the schema
//! version, so a statement checks its privileges without reading the catalog, and a REVOKE
//! holds everywhere once the DDL returns.

use meridian_kv::Txn;
use meridian_security::password::Verifier;
use serde::{Deserialize, Serialize};

use crate::catalog::CATALOG_TABLE_ID;
use crate::encoding::{encode_key_datum, index_prefix};
use crate::error::{Result, SqlError};
use crate::types::Datum;

/// The built-in administrator.
pub const ROOT: &str = "root";

/// The catalog index holding users.
const USERS_INDEX_ID: u8 = 3;
/// The catalog index holding grants.
const GRANTS_INDEX_ID: u8 = 4;

/// The format of a stored [`UserRecord`].
const RECORD_VERSION: u8 = 1;

/// The longest user name (PostgreSQL's NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// What is stored about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's name.
    pub name: String,
    /// The SCRAM-SHA-256 verifier of the password, if one is set.
    pub password: Option<String>,
    /// Administers users (and, with grants, everything else).
    pub admin: bool,
}

impl UserRecord {
    /// The decoded password verifier, if any.
    pub fn verifier(&self) -> Result<Option<Verifier>> {
        self.password
            .as_deref()
            .map(Verifier::decode)
            .transpose()
            .map_err(|e| SqlError::Internal(format!("stored password: {e}")))
    }
}

fn user_key(name: &str) -> Vec<u8> {
    let mut key = index_prefix(CATALOG_TABLE_ID, USERS_INDEX_ID);
    // Text never fails to encode.
    let _ = encode_key_datum(&mut key, &Datum::Text(name.to_string()));
    key
}

/// Refuses names that are empty or too long (42602, PostgreSQL's invalid_name).
pub fn check_name(name: &str) -> Result<()> {
    if name == meridian_security::certs::NODE_NAME {
        return Err(SqlError::InvalidName(
            "\"node\" names the cluster's nodes, not a user".into(),
        ));
    }
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(SqlError::InvalidName(format!(
            "a user name must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The user called `name`, read in `txn`; `root` exists even when never written.
pub async fn get(txn: &mut Txn, name: &str) -> Result<Option<UserRecord>> {
    match txn.get(&user_key(name)).await? {
        Some(bytes) => decode(&bytes).map(Some),
        None if name == ROOT => Ok(Some(root())),
        None => Ok(None),
    }
}

/// The built-in administrator, as it is until its password is set.
fn root() -> UserRecord {
    UserRecord {
        name: ROOT.to_string(),
        password: None,
        admin: true,
    }
}

/// Privileges on a table, as a bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges(pub u8);

impl Privileges {
    pub const SELECT: Privileges = Privileges(1);
    pub const INSERT: Privileges = Privileges(2);
    pub const UPDATE: Privileges = Privileges(4);
    pub const DELETE: Privileges = Privileges(8);
    pub const ALL: Privileges = Privileges(15);

    pub fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Privileges) -> Privileges {
        Privileges(self.0 | other.0)
    }

    pub fn without(self, other: Privileges) -> Privileges {
        Privileges(self.0 & !other.0)
    }

    /// The privilege's SQL name (one bit).
    pub fn name(self) -> &'static str {
        match self {
            Privileges::SELECT => "SELECT",
            Privileges::INSERT => "INSERT",
            Privileges::UPDATE => "UPDATE",
            Privileges::DELETE => "DELETE",
            _ => "ALL",
        }
    }
}

/// One stored grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub user: String,
    pub table: String,
    pub privileges: Privileges,
}

fn grant_key(user: &str, table: &str) -> Vec<u8> {
    let mut key = index_prefix(CATALOG_TABLE_ID, GRANTS_INDEX_ID);
    let _ = encode_key_datum(&mut key, &Datum::Text(user.to_string()));
    let _ = encode_key_datum(&mut key, &Datum::Text(table.to_string()));
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    bincode::serialize_into(&mut out, value)
        .map_err(|e| SqlError::Internal(format!("encoding a catalog record: {e}")))?;
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => bincode::deserialize(rest)
            .map_err(|e| SqlError::Internal(format!("corrupt catalog record: {e}"))),
        _ => Err(SqlError::Internal("unknown catalog record version".into())),
    }
}

/// The privileges `user` holds on `table`, read in `txn`.
pub async fn get_grant(txn: &mut Txn, user: &str, table: &str) -> Result<Privileges> {
    match txn.get(&grant_key(user, table)).await? {
        Some(bytes) => Ok(decode::<Grant>(&bytes)?.privileges),
        None => Ok(Privileges::default()),
    }
}

/// Stores `privileges` for `user` on `table` (none deletes the row).
pub fn put_grant(txn: &mut Txn, user: &str, table: &str, privileges: Privileges) -> Result<()> {
    let key = grant_key(user, table);
    if privileges == Privileges::default() {
        txn.delete(key)?;
    } else {
        let grant = Grant {
            user: user.to_string(),
            table: table.to_string(),
            privileges,
        };
        txn.put(key, encode(&grant)?)?;
    }
    Ok(())
}

/// Every user (root included) and every grant, read in `txn`.
pub async fn list(txn: &mut Txn) -> Result<(Vec<UserRecord>, Vec<Grant>)> {
    let users = crate::catalog::scan_index(txn, USERS_INDEX_ID).await?;
    let grants = crate::catalog::scan_index(txn, GRANTS_INDEX_ID).await?;
    decode_all(&users, &grants)
}

/// Every user (root included) and every grant, from the rows of the catalog's user and grant
/// indexes (`catalog::scan_all` reads them with the rest of the catalog).
pub fn from_catalog(
    by_index: &std::collections::HashMap<u8, Vec<Vec<u8>>>,
) -> Result<(Vec<UserRecord>, Vec<Grant>)> {
    let rows = |index| by_index.get(&index).map_or(&[][..], Vec::as_slice);
    decode_all(rows(USERS_INDEX_ID), rows(GRANTS_INDEX_ID))
}

fn decode_all(users: &[Vec<u8>], grants: &[Vec<u8>]) -> Result<(Vec<UserRecord>, Vec<Grant>)> {
    let mut users: Vec<UserRecord> = users.iter().map(|v| decode(v)).collect::<Result<_>>()?;
    if !users.iter().any(|u| u.name == ROOT) {
        users.push(root());
    }
    let grants = grants.iter().map(|v| decode(v)).collect::<Result<_>>()?;
    Ok((users, grants))
}

/// Writes `record` as the user `name` in `txn`.
pub fn put(txn: &mut Txn, name: &str, record: &UserRecord) -> Result<()> {
    txn.put(user_key(name), encode(record)?)?;
    Ok(())
}

/// Deletes the user `name` in `txn` (the caller deletes their grants).
pub fn delete(txn: &mut Txn, name: &str) -> Result<()> {
    txn.delete(user_key(name))?;
    Ok(())
}
