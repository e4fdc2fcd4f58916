//! The storage engine trait: an ordered byte-key store with column families and atomic batches.
//!
//! This module never imports RocksDB (STYLE.md rule 3): the RocksDB engine and the in-memory
//! engine both implement [`Engine`], and one conformance suite runs against both.
//!
//! Guarantees every engine gives:
//! - keys within a column family iterate in ascending byte order;
//! - a [`WriteBatch`] applies atomically: after a crash either all of it is visible or none;
//! - a batch written with `sync = true` is durable when `write` returns.

use std::fmt;
use std::sync::Arc;

/// The column families a spanserver keeps, one keyspace each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Raft logs, hard states and applied indexes of every group on the server.
    Raft,
    /// MVCC data of every tablet on the server.
    Data,
    /// Server metadata: which replicas it hosts, their ranges and peers.
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Raft, Cf::Data, Cf::Meta];

    /// The column family's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => "raft",
            Cf::Data => "data",
            Cf::Meta => "meta",
        }
    }
}

/// One write in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Writes that apply atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
    }

    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange {
            cf,
            start: start.into(),
            end: end.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Appends every op of `other`.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }
}

/// A storage failure: the engine could not read or write. Callers treat it as a bug or a dead
/// disk, never as a user error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError(pub String);

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage engine error: {}", self.0)
    }
}

impl std::error::Error for EngineError {}

/// A key-value pair as the engine stores it.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An iterator over a key range, ascending.
pub type EngineIter<'a> = Box<dyn Iterator<Item = Result<KvPair, EngineError>> + Send + 'a>;

/// A read-only view of every column family as it was at one moment: writes after the view was
/// taken do not show through it. A view keeps its engine alive (RocksDB also keeps the versions
/// it sees from compaction) until it is dropped, and may be read from any thread: Raft snapshots
/// stream from one while the driver goes on writing.
pub trait EngineView: Send + Sync {
    /// Keys in `[start, end)` ascending, as of the view's moment; `end = None` means unbounded.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a>;
}

/// An ordered key-value store with column families.
pub trait Engine: Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Keys in `[start, end)` ascending; `end = None` means unbounded.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a>;

    /// Applies `batch` atomically; with `sync`, durably (fsync'd WAL) before returning.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError>;

    /// A consistent view of the engine as it is now (see [`EngineView`]).
    fn view(self: Arc<Self>) -> Box<dyn EngineView>;
}
