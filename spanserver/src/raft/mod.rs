//! Multi-Raft replication: one raft-rs group per tablet, many groups per spanserver.
//!
//! The layering follows STYLE.md rule 4:
//!
//! - [`group::RaftGroup`] wraps raft-rs's `RawNode` and is synchronous and deterministic: it is
//!   driven by `step`, `tick` and `propose`, and hands back what must be persisted, what must be
//!   sent and which entries are committed. It does no I/O of its own; its persistence is
//!   expressed as [`crate::storage::WriteBatch`]es that the caller writes.
//! - [`driver::Driver`] owns every group of a server on one dedicated thread (off the async
//!   runtime). Each loop iteration gathers the ready state of every group, writes all their log
//!   entries and hard states in **one** synced RocksDB batch (so concurrent commits on different
//!   groups share an fsync), then sends messages and applies committed entries.
//! - [`transport::Transport`] carries raft-rs messages between servers: one gRPC client stream
//!   per peer server, batching every group's messages to that peer.
//!
//! # Invariants
//!
//! - A message that acknowledges entries (a follower's append response, a vote) leaves the
//!   server only after the entries or hard state it acknowledges are durable (raft-rs's
//!   "persisted messages"); the leader's own appends go out before its fsync (Raft thesis
//!   10.2.1), which is safe because the leader counts itself only after persisting.
//! - A committed entry is applied exactly once: the applied index is written in the same atomic
//!   batch as the entry's effects, and on restart raft-rs resumes after it.
//! - A new leader serves nothing until it has applied every entry up to the no-op that opened its
//!   term, so it never validates or reads against a state missing earlier terms' commits.
//!
//! # Not yet
//!
//! Log compaction and snapshots, membership changes (joint consensus) and leader leases arrive
//! with the transactions issue; until then the whole log is kept, in RocksDB and in memory.

pub mod driver;
pub mod group;
pub mod storage;
pub mod transport;

pub use meridian_common::{GroupId, ServerId};
