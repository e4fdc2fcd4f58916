//! The spanserver: Meridian's data plane.
//!
//! A spanserver hosts replicas of many tablets. Each tablet is a contiguous key range whose
//! replicas form one Raft group spread across zones; every server runs all its groups on one
//! multi-Raft driver over one RocksDB instance. It knows nothing of SQL or of client-side
//! transactions: a process composes it with a SQL front end over the KV client
//! (`meridian-kv`), and its own two-phase-commit housekeeping reaches other groups through a
//! [`resolver::LeaderRouter`] that the composer passes in.
//!
//! The modules, bottom up:
//! - [`storage`]: the engine trait (RocksDB and in-memory) and MVCC;
//! - [`raft`]: the synchronous Raft group, the multi-Raft driver thread and the transport;
//! - [`tablet`]: tablet descriptors, the commands replicated through Raft, commit validation
//!   and the leader's lock table;
//! - [`service`]: the gRPC services other servers and gateways call;
//! - [`resolver`]: two-phase-commit housekeeping across groups (outcome pushes, inquiries);
//! - [`server`]: wiring a process together, and its placement-driver heartbeats.
//!
//! The life of a write and of a query through these modules is told in
//! `docs/architecture/`.

pub mod failpoints;
pub mod logging;
pub mod metrics;
pub mod raft;
pub mod resolver;
#[cfg(test)]
mod scenarios;
pub mod server;
pub mod service;
pub mod storage;
pub mod tablet;
