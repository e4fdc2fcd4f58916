//! Meridian's transactional key-value client: the one way anything above the tablet server
//! (the SQL layer, the Rust driver, the placement driver's operators, benchmarks and tests)
//! reads and writes data.
//!
//! - [`router::Router`] caches the placement driver's directory (key range → group →
//!   replicas) and owns the one routing and leader-chasing loop: every request goes to the
//!   group's leader, learned from `NotLeader` hints and failed calls, with one backoff rule.
//! - [`ReadWriteTxn`] is a read-write transaction (DESIGN.md, Transactions): locking reads at
//!   leaders as they happen, writes buffered here until commit, single-group commit or
//!   two-phase commit across groups, heartbeats while its client thinks.
//! - [`ReadOnlyTxn`] reads one snapshot without locks: strong, at a timestamp, or stale
//!   (exact or bounded staleness) from the nearest replica that can serve it.
//! - [`Client`] starts transactions and asks the placement driver for table ranges and splits.
//! - [`Error`] says what the caller should do: retry the transaction, find out whether an
//!   ambiguous commit applied, retry later, or fix the request.
//!
//! Keys are opaque ordered bytes here; this crate knows nothing of tables, rows or SQL.

pub mod error;
pub mod readonly;
pub mod router;
pub mod txn;
pub mod unique_ids;

use std::sync::Arc;
use std::time::Duration;

use meridian_common::TableId;
use meridian_proto as pb;
use meridian_truetime::TrueTime;

pub use error::{Error, Result};
pub use readonly::ReadOnlyTxn;
pub use router::Router;
pub use txn::ReadWriteTxn;

/// Which snapshot a read-only transaction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Everything committed before the transaction started (external consistency).
    Strong,
    /// Exactly this timestamp (ns since the Unix epoch): `AS OF SYSTEM TIME`.
    At(u64),
    /// Exactly this long ago: `AS OF SYSTEM TIME '-10s'`.
    ExactStaleness(Duration),
    /// The freshest snapshot the nearest replica can serve without waiting, no older than this
    /// (bounded staleness).
    MaxStaleness(Duration),
}

/// The entry point: starts transactions over the cluster a [`Router`] reaches.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
}

impl Client {
    /// A client for the cluster whose placement driver is at `pd_addrs`; snapshot reads prefer
    /// replicas in `zone`, and read timestamps come from `tt`.
    pub fn new(pd_addrs: Vec<String>, tt: Arc<dyn TrueTime>, zone: Option<String>) -> Client {
        Client::with_router(Router::new(pd_addrs, tt, zone))
    }

    /// A client over an existing router (shared with a server's own housekeeping).
    pub fn with_router(router: Arc<Router>) -> Client {
        Client { router }
    }

    /// The clock this client picks read timestamps with.
    pub fn clock(&self) -> &Arc<dyn TrueTime> {
        &self.router.tt
    }

    /// The router this client sends requests through.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// An id no other call on any client of this cluster ever returns (see [`unique_ids`]).
    pub async fn unique_id(&self) -> Result<i64> {
        self.router.unique_ids.next(self).await
    }

    /// Starts a read-write transaction with wound-wait `priority` (smaller = older = wins), or
    /// a fresh one (the current time) if `None`. A retry passes the aborted attempt's priority.
    pub fn begin(&self, priority: Option<u64>) -> ReadWriteTxn {
        ReadWriteTxn::new(self.router.clone(), priority)
    }

    /// Starts a read-only transaction reading the snapshot `bound` chooses at its first read.
    pub fn begin_read_only(&self, bound: ReadBound) -> ReadOnlyTxn {
        ReadOnlyTxn::new(self.router.clone(), bound)
    }

    /// Allocates a fresh table id and has the placement driver place its key range.
    pub async fn create_table_range(&self) -> Result<TableId> {
        let mut client = self.router.pd_client().await?;
        let resp = client
            .create_table_range(pb::CreateTableRangeRequest {})
            .await
            .map_err(|s| match s.code() {
                tonic::Code::ResourceExhausted => Error::LimitExceeded(s.message().to_string()),
                _ => Error::Unavailable(format!("placement driver: {}", s.message())),
            })?
            .into_inner();
        if let Some(t) = resp.tablet {
            self.router.install_tablet(t);
        }
        Ok(TableId(resp.table_id))
    }

    /// Splits the tablets holding `keys` so that each key starts a tablet. Keys that already
    /// start a tablet are left alone.
    pub async fn split_at(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        self.router.split_at(keys).await
    }
}

/// A transaction of either kind, for callers that choose the kind at run time (the SQL layer's
/// autocommit reads are read-only, its explicit transactions read-write).
pub enum Txn {
    ReadWrite(ReadWriteTxn),
    ReadOnly(ReadOnlyTxn),
}

impl From<ReadWriteTxn> for Txn {
    fn from(t: ReadWriteTxn) -> Txn {
        Txn::ReadWrite(t)
    }
}

impl From<ReadOnlyTxn> for Txn {
    fn from(t: ReadOnlyTxn) -> Txn {
        Txn::ReadOnly(t)
    }
}

impl Txn {
    /// The wound-wait priority (0 for read-only transactions).
    pub fn priority(&self) -> u64 {
        match self {
            Txn::ReadWrite(t) => t.priority(),
            Txn::ReadOnly(_) => 0,
        }
    }

    /// The snapshot timestamp of a read-only transaction, once it has read.
    pub fn read_ts(&self) -> Option<u64> {
        match self {
            Txn::ReadWrite(_) => None,
            Txn::ReadOnly(t) => t.read_ts(),
        }
    }

    /// The value at `key`.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Txn::ReadWrite(t) => t.get(key).await,
            Txn::ReadOnly(t) => t.get(key).await,
        }
    }

    /// Rows in `[start, end)` (empty end = unbounded) in ascending key order, at most `limit`.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self {
            Txn::ReadWrite(t) => t.scan(start, end, limit).await,
            Txn::ReadOnly(t) => t.scan(start, end, limit).await,
        }
    }

    /// A cluster-unique id (see [`ReadWriteTxn::unique_id`]); a read-only transaction, which
    /// writes nothing, has no use for one and refuses.
    pub async fn unique_id(&self) -> Result<i64> {
        match self {
            Txn::ReadWrite(t) => t.unique_id().await,
            Txn::ReadOnly(_) => Err(read_only_write()),
        }
    }

    /// Buffers a write; a read-only transaction refuses it.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        match self {
            Txn::ReadWrite(t) => t.put(key, value),
            Txn::ReadOnly(_) => Err(read_only_write()),
        }
    }

    /// Buffers an insert (see [`ReadWriteTxn::insert`]); a read-only transaction refuses it.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        match self {
            Txn::ReadWrite(t) => t.insert(key, value),
            Txn::ReadOnly(_) => Err(read_only_write()),
        }
    }

    /// Buffers a deletion; a read-only transaction refuses it.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<()> {
        match self {
            Txn::ReadWrite(t) => t.delete(key),
            Txn::ReadOnly(_) => Err(read_only_write()),
        }
    }

    /// Commits; the commit timestamp if anything was written.
    pub async fn commit(&mut self) -> Result<Option<u64>> {
        match self {
            Txn::ReadWrite(t) => t.commit().await,
            Txn::ReadOnly(_) => Ok(None),
        }
    }

    /// Discards buffered writes and releases locks.
    pub async fn rollback(&mut self) {
        if let Txn::ReadWrite(t) = self {
            t.rollback().await;
        }
    }
}

fn read_only_write() -> Error {
    Error::Internal("a read-only transaction was asked to write".into())
}
