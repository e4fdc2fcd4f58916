//! The storage traits the SQL layer runs on. `meridian-sql` reaches storage only through these
//! (it never imports the spanserver): the spanserver's gateway implements them over Raft-replicated
//! tablets, and [`crate::memstore`] implements them in memory for tests.
//!
//! Keys are ordered bytes. Every user table owns the key range
//! `[table_prefix(id), table_prefix(id + 1))` where `table_prefix(id)` is the table id as a
//! 4-byte big-endian integer; ids below [`FIRST_USER_TABLE_ID`] are system tables (the catalog),
//! which live together in one system range.

use async_trait::async_trait;

/// Table ids below this belong to system tables.
pub const FIRST_USER_TABLE_ID: u32 = meridian_common::keys::FIRST_USER_TABLE_ID.0;

/// The first key of table `id`'s key range.
pub fn table_prefix(id: u32) -> Vec<u8> {
    meridian_common::keys::table_prefix(meridian_common::TableId(id))
}

/// Why a storage operation failed, grouped by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The transaction conflicted with another and was aborted: retry it whole (SQLSTATE 40001).
    #[error("restart transaction: {0}")]
    Retryable(String),
    /// The cluster could not serve the request in time (no leader, server down) (SQLSTATE 58000
    /// class: the caller may retry later).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request needs a capability that is not built yet (SQLSTATE 0A000).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// A read asked for a timestamp the store cannot serve: older than the MVCC garbage
    /// collection horizon, or in the future (SQLSTATE 22023, invalid parameter value).
    #[error("{0}")]
    InvalidTimestamp(String),
    /// A bug or storage failure (SQLSTATE XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A source of transactions and table key ranges.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Starts a read-write transaction with wound-wait `priority` (smaller = older = wins), or
    /// a fresh one (the current time) if `None`. A retry passes the aborted attempt's priority.
    async fn begin(&self, priority: Option<u64>) -> Result<Box<dyn Transaction>, StoreError>;

    /// Starts a read-only transaction: lock-free reads of one consistent snapshot, chosen by
    /// `bound` when the transaction first reads. Its `put`/`delete` must not be called (the
    /// SQL layer refuses writes in read-only transactions with 25006); `commit` returns `None`.
    async fn begin_read_only(&self, bound: ReadBound) -> Result<Box<dyn Transaction>, StoreError>;

    /// Allocates a fresh table id (>= FIRST_USER_TABLE_ID) and places its key range.
    async fn create_table_range(&self) -> Result<u32, StoreError>;

    /// Splits the tablets holding `keys` so that each key starts a tablet (`ALTER TABLE …
    /// SPLIT AT`). Keys that already start a tablet are left alone.
    async fn split_at(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError>;
}

/// Which snapshot a read-only transaction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Everything committed before the transaction started (external consistency).
    Strong,
    /// Exactly this timestamp (ns since the Unix epoch): `AS OF SYSTEM TIME`.
    At(u64),
    /// Exactly this long ago: `AS OF SYSTEM TIME '-10s'`.
    ExactStaleness(std::time::Duration),
    /// The freshest snapshot the nearest replica can serve without waiting, no older than this
    /// (`SET max_staleness`, bounded staleness).
    MaxStaleness(std::time::Duration),
}

/// A read-write transaction. Reads see the transaction's own buffered writes; writes become
/// visible to others atomically at commit. Serializable: reads lock what they read, and a
/// transaction that loses a conflict fails with `StoreError::Retryable`.
#[async_trait]
pub trait Transaction: Send {
    /// The transaction's wound-wait priority (0 for read-only transactions).
    fn priority(&self) -> u64;

    /// The snapshot timestamp of a read-only transaction, once it has read (`None` before, and
    /// for read-write transactions).
    fn read_ts(&self) -> Option<u64> {
        None
    }

    /// The value at `key`.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Rows in `[start, end)` in ascending key order, at most `limit` if given.
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

    /// Buffers a write of `value` at `key`.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);

    /// Buffers a deletion of `key`.
    fn delete(&mut self, key: Vec<u8>);

    /// Commits; returns the commit timestamp (ns since the Unix epoch) if anything was written.
    async fn commit(&mut self) -> Result<Option<u64>, StoreError>;

    /// Discards the buffered writes.
    async fn rollback(&mut self);
}
