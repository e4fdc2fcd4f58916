//! The schema cache: each gateway keeps the catalog in memory, so a statement reads no catalog
//! row unless the schema changed, and prepared statements are planned once per schema version.
//!
//! ## The protocol
//!
//! - The catalog carries a **version** (a row of the catalog table, [`version_key`]) that every
//!   DDL transaction increments ([`bump_version`]), so DDLs serialize on it and each schema is
//!   named by its version.
//! - A gateway loads the whole catalog and the version in one strong snapshot at timestamp
//!   `t` ([`SchemaCache::load`]) and may use it while `TT.now().latest < t + SCHEMA_LEASE`;
//!   past half the lease the next statement reloads it. A statement that names a table the
//!   cached schema lacks reloads once (the table may be new).
//! - A DDL that commits at `s` returns only once `TT.after(s + SCHEMA_LEASE)`
//!   ([`SchemaCache::wait_out_leases`]): by then every schema loaded before `s`, on every
//!   gateway, has expired, and every one loaded after `s` includes the change. So once DDL
//!   returns, no statement anywhere runs on the schema before it, at the price of one lease of
//!   DDL latency. (Online schema changes, with intermediate states, build on these leases.)
//!
//! A DDL that changes nothing (`IF EXISTS`, `IF NOT EXISTS`) waits out the lease from the
//! moment it read the catalog, since it may have seen a change whose own DDL has not returned.
//!
//! What it does not do yet: a statement that started on the old schema, or an explicit
//! transaction whose earlier statements did, can still commit after the DDL returned (a write
//! into a table just dropped is then unreachable). Closing that needs a commit deadline of
//! `read_ts + SCHEMA_LEASE` enforced by the leaders, as CockroachDB's descriptor leases do; it
//! comes with online schema changes. The catalog is also loaded whole, which is fine for
//! thousands of tables, not millions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_kv::{Client, ReadBound, Txn};
use meridian_truetime::Timestamp;
use parking_lot::RwLock;

use crate::catalog::{self, TableDesc, TableSet, CATALOG_TABLE_ID};
use crate::encoding::index_prefix;
use crate::error::{Result, SqlError};
use crate::users::Privileges;

/// How long a loaded schema may be used.
pub const SCHEMA_LEASE: Duration = Duration::from_millis(250);

/// The catalog index holding the schema version row.
const VERSION_INDEX_ID: u8 = 2;

/// The key of the schema version row.
pub fn version_key() -> Vec<u8> {
    index_prefix(CATALOG_TABLE_ID, VERSION_INDEX_ID)
}

/// Reads the schema version inside `txn` (0 before the first DDL).
pub async fn read_version(txn: &mut Txn) -> Result<u64> {
    decode_version(txn.get(&version_key()).await?.as_deref())
}

/// The schema version stored as `bytes` (0 before the first DDL).
fn decode_version(bytes: Option<&[u8]>) -> Result<u64> {
    match bytes {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 8] = bytes
                .try_into()
                .map_err(|_| SqlError::Internal("corrupt schema version row".into()))?;
            Ok(u64::from_be_bytes(array))
        }
    }
}

/// Increments the schema version inside the DDL transaction `txn`.
pub async fn bump_version(txn: &mut Txn) -> Result<u64> {
    let next = read_version(txn).await?.saturating_add(1);
    txn.put(version_key(), next.to_be_bytes().to_vec())?;
    Ok(next)
}

/// One loaded schema.
#[derive(Debug)]
pub struct Schema {
    /// The catalog version it reflects.
    pub version: u64,
    /// Every table, by name.
    pub tables: HashMap<String, Arc<TableDesc>>,
    /// Every user's administrator flag, by name.
    admins: HashMap<String, bool>,
    /// Grants, by user, then table (looked up without allocating on every statement).
    grants: HashMap<String, HashMap<String, Privileges>>,
    /// The snapshot timestamp it was read at.
    read_ts: u64,
}

impl Schema {
    /// Whether `user` exists and administers the cluster.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.get(user).copied().unwrap_or(false)
    }

    /// What `user` may do to `table`: everything for an administrator, else its grants.
    pub fn privileges(&self, user: &str, table: &str) -> Privileges {
        if self.is_admin(user) {
            return Privileges::ALL;
        }
        self.grants
            .get(user)
            .and_then(|tables| tables.get(table))
            .copied()
            .unwrap_or_default()
    }

    /// Refuses (42501) unless `user` holds `needed` on `table`.
    pub fn check(&self, user: &str, table: &str, needed: Privileges) -> Result<()> {
        let missing = needed.without(self.privileges(user, table));
        if missing == Privileges::default() {
            return Ok(());
        }
        let names: Vec<&str> = [
            Privileges::SELECT,
            Privileges::INSERT,
            Privileges::UPDATE,
            Privileges::DELETE,
        ]
        .into_iter()
        .filter(|p| missing.contains(*p))
        .map(Privileges::name)
        .collect();
        Err(SqlError::InsufficientPrivilege(format!(
            "{user} lacks {} on table {table}",
            names.join(", ")
        )))
    }

    /// Refuses (42501) unless `user` is an administrator.
    pub fn check_admin(&self, user: &str, what: &str) -> Result<()> {
        if self.is_admin(user) {
            Ok(())
        } else {
            Err(SqlError::InsufficientPrivilege(format!(
                "{what} needs an administrator; {user} is not one"
            )))
        }
    }
}

/// A gateway's cached schema, shared by its sessions.
pub struct SchemaCache {
    client: Client,
    current: RwLock<Option<Arc<Schema>>>,
    /// One load at a time; statements arriving meanwhile wait for it.
    loading: tokio::sync::Mutex<()>,
}

impl SchemaCache {
    pub fn new(client: Client) -> Arc<SchemaCache> {
        Arc::new(SchemaCache {
            client,
            current: RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
        })
    }

    fn now_latest(&self) -> u64 {
        self.client.clock().now().latest.0
    }

    /// The cached schema if it is fresh (within half its lease, so it stays valid while a
    /// statement runs on it).
    fn fresh(&self) -> Option<Arc<Schema>> {
        let schema = self.current.read().clone()?;
        let half = (SCHEMA_LEASE / 2).as_nanos() as u64;
        (self.now_latest() < schema.read_ts.saturating_add(half)).then_some(schema)
    }

    /// A schema valid for the statement about to run: the cached one, or a fresh load.
    pub async fn current(&self) -> Result<Arc<Schema>> {
        if let Some(schema) = self.fresh() {
            return Ok(schema);
        }
        self.reload(None).await
    }

    /// Loads the schema unless another caller did since `stale` (or, with `None`, unless a
    /// fresh one is already cached).
    async fn reload(&self, stale: Option<&Arc<Schema>>) -> Result<Arc<Schema>> {
        let _guard = self.loading.lock().await;
        if let Some(schema) = self.fresh() {
            if stale.is_none_or(|s| !Arc::ptr_eq(s, &schema)) {
                return Ok(schema);
            }
        }
        let schema = Arc::new(self.load().await?);
        *self.current.write() = Some(schema.clone());
        Ok(schema)
    }

    /// Reads the whole catalog and its version in one strong snapshot.
    async fn load(&self) -> Result<Schema> {
        let mut txn = Txn::from(self.client.begin_read_only(ReadBound::Strong));
        // The whole catalog in one scan: descriptors, version, users and grants.
        let rows = catalog::scan_all(&mut txn).await?;
        let index = |id| rows.get(&id).map_or(&[][..], Vec::as_slice);
        let version = decode_version(index(VERSION_INDEX_ID).first().map(Vec::as_slice))?;
        let tables = catalog::decode_tables(index(crate::encoding::PRIMARY_INDEX_ID))?;
        let (users, grants) = crate::users::from_catalog(&rows)?;
        let read_ts = txn
            .read_ts()
            .ok_or_else(|| SqlError::Internal("a catalog snapshot without a timestamp".into()))?;
        Ok(Schema {
            version,
            tables: tables
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            admins: users.into_iter().map(|u| (u.name, u.admin)).collect(),
            grants: grants.into_iter().fold(HashMap::new(), |mut by_user, g| {
                by_user
                    .entry(g.user)
                    .or_insert_with(HashMap::new)
                    .insert(g.table, g.privileges);
                by_user
            }),
            read_ts,
        })
    }

    /// The descriptors of `names` and the schema version they come from. A name the cached
    /// schema lacks triggers one reload, since the table may have been created since.
    pub async fn tables(&self, names: &[String]) -> Result<(TableSet, u64)> {
        let mut schema = self.current().await?;
        if names.iter().any(|n| !schema.tables.contains_key(n)) {
            schema = self.reload(Some(&schema)).await?;
        }
        let set = names
            .iter()
            .map(|n| (n.clone(), schema.tables.get(n).cloned()))
            .collect();
        Ok((set, schema.version))
    }

    /// The name of table `id` in the cached schema, if it is there (no reload).
    pub fn cached_table_name(&self, id: u32) -> Option<String> {
        let schema = self.current.read().clone()?;
        schema
            .tables
            .values()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
    }

    /// Forgets the cached schema (this gateway just changed it).
    pub fn invalidate(&self) {
        *self.current.write() = None;
    }

    /// After a DDL committed at `commit_ts`: forgets the cached schema and waits until every
    /// schema any gateway loaded before the commit has expired (see the module doc).
    pub async fn wait_out_leases(&self, commit_ts: u64) {
        self.invalidate();
        let until = Timestamp(commit_ts) + SCHEMA_LEASE;
        meridian_truetime::wait_until_after(self.client.clock().as_ref(), until).await;
        self.invalidate();
    }
}
