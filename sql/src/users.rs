//! SQL users: who may log in, with which password, and who administers the rest. Users live
//! in the catalog table, one row each (key `table_prefix(1) ++ USERS_INDEX_ID ++ name`, value
//! a [`UserRecord`]), replicated and transactional like every other row. Passwords are kept as
//! SCRAM-SHA-256 verifiers ([`meridian_security::password::Verifier`]), never in the clear.
//!
//! `root` always exists and is an administrator; it has no password until one is set with
//! `ALTER USER root WITH PASSWORD …`, so on a secure cluster it logs in with its client
//! certificate. Administrators create, alter and drop users; anyone else gets 42501.

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

/// The format of a stored [`UserRecord`].
const RECORD_VERSION: u8 = 1;

/// The longest user name (PostgreSQL's NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// What is stored about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
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
        Some(bytes) => match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => bincode::deserialize(rest)
                .map(Some)
                .map_err(|e| SqlError::Internal(format!("corrupt user record: {e}"))),
            _ => Err(SqlError::Internal("unknown user record version".into())),
        },
        None if name == ROOT => Ok(Some(UserRecord {
            password: None,
            admin: true,
        })),
        None => Ok(None),
    }
}

/// Writes `record` as the user `name` in `txn`.
pub fn put(txn: &mut Txn, name: &str, record: &UserRecord) -> Result<()> {
    let mut value = vec![RECORD_VERSION];
    bincode::serialize_into(&mut value, record)
        .map_err(|e| SqlError::Internal(format!("encoding a user record: {e}")))?;
    txn.put(user_key(name), value)?;
    Ok(())
}

/// Deletes the user `name` in `txn`.
pub fn delete(txn: &mut Txn, name: &str) -> Result<()> {
    txn.delete(user_key(name))?;
    Ok(())
}
