//! Typed identifiers. Each is a newtype over the integer the wire and the disk carry, so a
//! group id can never be passed where a server id is expected. They serialize as their bare
//! integer (serde newtype structs), so descriptors persisted before the newtypes read back
//! unchanged.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> $name {
                $name(v)
            }
        }
    };
}

id_type!(
    /// Identifies a Raft group: one per tablet, so also the tablet's id.
    GroupId(u64),
    "g"
);
id_type!(
    /// Identifies a spanserver; also the Raft peer id of the server's replica in every group.
    ServerId(u64),
    "s"
);
id_type!(
    /// Identifies a transaction across every group it touches.
    TxnId(u64),
    "t"
);
id_type!(
    /// Identifies a table; its rows live under [`crate::keys::table_prefix`].
    TableId(u32),
    "table "
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_with_their_kind() {
        assert_eq!(GroupId(7).to_string(), "g7");
        assert_eq!(ServerId(2).to_string(), "s2");
        assert_eq!(TxnId(9).to_string(), "t9");
        assert_eq!(TableId(100).to_string(), "table 100");
    }
}
