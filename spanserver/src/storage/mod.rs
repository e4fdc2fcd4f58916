//! Storage: the ordered key-value engines a spanserver keeps its state in, and MVCC on top.
//!
//! # Engines
//!
//! An [`Engine`] is an ordered byte-key store with three column families ([`Cf`]): `Raft` for
//! the Raft logs and hard states of every group on the server, `Data` for the MVCC data of every
//! tablet, and `Meta` for server metadata. It offers point reads, forward range scans and atomic
//! [`WriteBatch`]es. One engine instance serves the whole server (multi-Raft); tablets are
//! key ranges inside it, not separate databases.
//!
//! Two engines implement the trait, and one conformance suite (`tests.rs`) runs against both:
//! - [`RocksEngine`] (`rocks.rs`), the real one: RocksDB with one column family per [`Cf`];
//! - [`MemEngine`] (`mem.rs`), `BTreeMap`s behind locks, for tests and the demo.
//!
//! The trait's module (`engine.rs`) never imports RocksDB; only `rocks.rs` does.
//!
//! Every engine guarantees:
//! - keys within a column family iterate in ascending byte order;
//! - a batch applies atomically, across column families, and ops within it apply in order (a
//!   put after a delete of the same key leaves the key present);
//! - a batch written with `sync = true` is durable when `write` returns (for `RocksEngine`; the
//!   memory engine loses everything with the process);
//! - a `DeleteRange` whose end is not above its start deletes nothing, and a scan whose end is not
//!   above its start yields nothing.
//!
//! An engine iterator is not promised to be a snapshot: `RocksEngine` iterators are, but
//! `MemEngine` copies out chunks as it goes, so a write landing mid-scan may or may not show.
//! Nothing here depends on it: MVCC readers read below the safe time, where versions no longer
//! change.
//!
//! # MVCC
//!
//! [`mvcc`] stores every write in `Data` as a version of its key at its commit timestamp:
//!
//! ```text
//! engine key   = escape(user_key) 0x00 0x01 | be64(!commit_ts)    escape: 0x00 -> 0x00 0xFF
//! engine value = 0x01 value bytes | 0x00 (tombstone)
//! ```
//!
//! The escaping and terminator keep user-key order (even for keys that are prefixes of one
//! another) and keep each key's versions contiguous; the inverted timestamp sorts them newest
//! first. A read at `read_ts` returns the newest version at or below it; deletions are tombstone
//! versions, so reads below a deletion still see the old value. Readers seek past versions they
//! do not need rather than decoding them.
//!
//! # What this layer does not do
//!
//! - No garbage collection of old versions yet: every version ever written stays. GC past a
//!   horizon (default 1 h) comes later and will bound how stale a read may be.
//! - No locking, conflict detection or safe-time checks: the tablet and transaction layers decide
//!   when a read or write is allowed; this layer only stores and retrieves versions.
//! - No caching above the engine, and no snapshots beyond what an engine iterator gives.

pub mod engine;
pub mod keys;
pub mod mem;
pub mod mvcc;
pub mod rocks;

#[cfg(test)]
mod mvcc_scenarios;
#[cfg(test)]
mod tests;

pub use engine::{BatchOp, Cf, Engine, EngineError, EngineIter, EngineView, KvPair, WriteBatch};
pub use mem::MemEngine;
pub use rocks::RocksEngine;
