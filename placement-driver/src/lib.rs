//! The placement driver (PD): cluster membership and the directory of tablets.
//!
//! Spanservers register with their zone and heartbeat every half second, reporting the replicas
//! they host and which of them lead. The PD keeps:
//!
//! - the servers (id, zone, addresses, last heartbeat);
//! - the directory: each tablet's key range, Raft group and replicas, with a leader hint taken
//!   from the newest-term heartbeat;
//! - the id counters for tables and groups.
//!
//! Everything but leader hints and heartbeat times is durable: it is written to
//! `<data-dir>/pd.json` (write to a temporary file, fsync, rename) before any RPC that changed
//! it returns, so a restarted PD hands out no id twice and forgets no tablet.
//!
//! Placement: the system tablet (the catalog, keys below table 100) is created once three
//! servers have registered; every `CreateTableRange` makes one tablet whose replicas sit on
//! servers in distinct zones (falling back to distinct servers if there are fewer zones),
//! preferring servers with fewer replicas. The PD tells each chosen server at once, and also
//! lists each server's tablets in every heartbeat reply so a server that missed the call
//! catches up.
//!
//! Not yet (its own issue): PD replication through Raft, splits, merges, rebalancing and
//! replica repair.

pub mod placement;
pub mod service;
pub mod state;

pub use service::{run, PdOptions};
