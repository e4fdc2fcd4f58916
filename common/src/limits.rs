//! Size limits on what one transaction may write, and on how many tablets one split request
//! may make. The KV client refuses a request past them at once, before anything is sent; the
//! tablet server refuses a commit, prepare or decision past them from any client before
//! proposing it, and the placement driver a split. Together with the gRPC message limit above
//! them (`meridian_proto::MAX_MESSAGE_BYTES`) they guarantee that every Raft entry a leader
//! proposes fits in one transport message, so no accepted commit can wedge replication.
//!
//! Modelled on Cloud Spanner's: 8 KiB keys, values of a few MiB, a bounded number of mutations
//! per commit. A write past a limit is SQLSTATE 54000 at the SQL layer.

/// The longest key (table prefix and encoded primary key).
pub const MAX_KEY_BYTES: usize = 8 << 10;

/// The longest value (one row's encoded non-key columns).
pub const MAX_VALUE_BYTES: usize = 8 << 20;

/// The most bytes (keys plus values) one commit may write.
pub const MAX_COMMIT_BYTES: usize = 32 << 20;

/// The most keys one commit may write or delete.
pub const MAX_COMMIT_WRITES: usize = 80_000;

/// The most split points one request may ask for: each makes a Raft group on every replica.
pub const MAX_SPLIT_KEYS: usize = 100;

/// Why a request to split at `keys` split points is refused, if it is.
pub fn check_split(keys: usize) -> Result<(), String> {
    if keys > MAX_SPLIT_KEYS {
        return Err(format!(
            "{keys} split points is over the limit of {MAX_SPLIT_KEYS} per request"
        ));
    }
    Ok(())
}

/// Why a write of `key` (and `value`, if a put) is refused, if it is.
pub fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key of {} bytes is over the limit of {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(value) = value {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "a value of {} bytes is over the limit of {MAX_VALUE_BYTES}",
                value.len()
            ));
        }
    }
    Ok(())
}

/// Why a commit of `writes` keys totalling `bytes` is refused, if it is.
pub fn check_commit(writes: usize, bytes: usize) -> Result<(), String> {
    if writes > MAX_COMMIT_WRITES {
        return Err(format!(
            "a transaction writing {writes} keys is over the limit of {MAX_COMMIT_WRITES}"
        ));
    }
    if bytes > MAX_COMMIT_BYTES {
        return Err(format!(
            "a transaction writing {bytes} bytes is over the limit of {MAX_COMMIT_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        assert!(check_write(&[0; MAX_KEY_BYTES], Some(&[0; 16])).is_ok());
        assert!(check_write(&[0; MAX_KEY_BYTES + 1], None).is_err());
        assert!(check_write(b"k", Some(&vec![0; MAX_VALUE_BYTES])).is_ok());
        assert!(check_write(b"k", Some(&vec![0; MAX_VALUE_BYTES + 1])).is_err());
        assert!(check_commit(MAX_COMMIT_WRITES, MAX_COMMIT_BYTES).is_ok());
        assert!(check_commit(MAX_COMMIT_WRITES + 1, 0).is_err());
        assert!(check_commit(1, MAX_COMMIT_BYTES + 1).is_err());
    }
}
