//! What every Meridian layer shares, and nothing else: typed identifiers ([`ids`]), key ranges
//! with the one containment rule ([`KeyRange`]), the key layout that decides which table a key
//! belongs to ([`keys`]), and the size limits on what one transaction writes ([`limits`]).
//!
//! This crate is the leaf of the workspace: it depends on no other Meridian crate and on no
//! RPC, storage or async library, so the tablet server, the KV client, the SQL layer, the
//! placement driver and the Rust driver can all name the same types without pulling in one
//! another.

pub mod ids;
pub mod keys;
pub mod limits;
mod range;

pub use ids::{GroupId, ServerId, TableId, TxnId};
pub use range::{range_contains, KeyRange};
