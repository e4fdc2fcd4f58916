//! The key layout. Keys are ordered bytes. Table `id` owns `[table_prefix(id),
//! table_prefix(id + 1))`, where the prefix is the id as a 4-byte big-endian integer, so tables
//! sort by id. Ids below [`FIRST_USER_TABLE_ID`] are system tables (the catalog); they share one
//! system range, held by [`SYSTEM_GROUP`], that ends where the first user table begins.

use crate::{GroupId, TableId};

/// Table ids below this belong to system tables.
pub const FIRST_USER_TABLE_ID: TableId = TableId(100);

/// The system table whose one row is the cluster's unique-id counter
/// ([`unique_id_counter_key`]).
pub const UNIQUE_ID_TABLE_ID: TableId = TableId(2);

/// The key of the counter the KV client reserves blocks of cluster-unique ids from.
pub fn unique_id_counter_key() -> Vec<u8> {
    table_prefix(UNIQUE_ID_TABLE_ID)
}

/// The group that holds the system range `[.., table_prefix(FIRST_USER_TABLE_ID))`.
pub const SYSTEM_GROUP: GroupId = GroupId(1);

/// The first key of table `id`'s key range.
pub fn table_prefix(id: TableId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

/// The table a key belongs to, if it is long enough to name one.
pub fn table_of(key: &[u8]) -> Option<TableId> {
    let prefix: [u8; 4] = key.get(..4)?.try_into().ok()?;
    Some(TableId(u32::from_be_bytes(prefix)))
}

/// True if `key` lies in the system range.
pub fn is_system_key(key: &[u8]) -> bool {
    key < table_prefix(FIRST_USER_TABLE_ID).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_sort_by_table_id() {
        assert!(table_prefix(TableId(99)) < table_prefix(TableId(100)));
        assert!(table_prefix(TableId(255)) < table_prefix(TableId(256)));
        assert_eq!(table_of(&table_prefix(TableId(300))), Some(TableId(300)));
        assert_eq!(table_of(b"ab"), None);
        assert!(is_system_key(&table_prefix(TableId(1))));
        assert!(!is_system_key(&table_prefix(FIRST_USER_TABLE_ID)));
    }
}
