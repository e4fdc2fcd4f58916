//! The spanserver: Meridian's data plane.
//!
//! A spanserver hosts replicas of many tablets. Each tablet is a contiguous key range whose
//! replicas form one Raft group spread across zones; every server runs all its groups on one
//! multi-Raft driver over one RocksDB instance. Any spanserver is also a gateway: its
//! PostgreSQL listener runs the SQL layer (`meridian-sql`) over [`gateway::GatewayStore`],
//! which routes reads and commits to tablet leaders.
//!
//! The modules, bottom up:
//! - [`storage`]: the engine trait (RocksDB and in-memory) and MVCC;
//! - [`raft`]: the synchronous Raft group, the multi-Raft driver thread and the transport;
//! - [`tablet`]: tablet descriptors, the commands replicated through Raft, commit validation
//!   and the leader's lock table;
//! - [`service`]: the gRPC services other servers and gateways call;
//! - [`gateway`]: routing and transactions for the SQL layer;
//! - [`server`]: wiring a process together, and its placement-driver heartbeats.
//!
//! The life of a write and of a query through these modules is told in
//! `docs/architecture/`.

pub mod failpoints;
pub mod gateway;
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
