//! Cluster-unique 64-bit ids without coordination per id: each [`crate::Client`] reserves
//! blocks of [`BLOCK`] ids from one counter row in the system range
//! ([`meridian_common::keys::unique_id_counter_key`]), each block in a read-write transaction
//! of its own, and hands them out one by one. Two ids from any clients of one cluster never
//! repeat, whatever the clocks do and however the clients restart: a block is the counter's
//! value before a committed increment, and a block reserved but never used is simply skipped.
//!
//! Ids are positive `i64`s, increasing per client and roughly (per block) across clients.
//! SQL's hidden row ids come from here.

use std::time::Duration;

use meridian_common::keys::unique_id_counter_key;

use crate::error::Error;
use crate::Client;

/// Ids reserved per transaction on the counter.
pub const BLOCK: u64 = 10_000;

/// Attempts at reserving a block before the last conflict is reported.
const MAX_ATTEMPTS: u32 = 10;

/// The next unused id of the current block, and its end (exclusive).
#[derive(Debug, Default)]
pub struct UniqueIds {
    block: tokio::sync::Mutex<(u64, u64)>,
}

impl UniqueIds {
    /// The next id, reserving a new block through `client` when the current one is used up.
    pub async fn next(&self, client: &Client) -> Result<i64, Error> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            *block = reserve(client).await?;
        }
        let id = block.0;
        block.0 += 1;
        i64::try_from(id).map_err(|_| Error::LimitExceeded("the unique id space is used up".into()))
    }
}

/// Reserves `[counter, counter + BLOCK)` and advances the counter, retrying conflicts with
/// other reservations.
async fn reserve(client: &Client) -> Result<(u64, u64), Error> {
    let key = unique_id_counter_key();
    let mut attempt = 0;
    let mut priority = None;
    loop {
        let mut txn = client.begin(priority);
        priority = Some(txn.priority());
        let outcome = async {
            let start = match txn.get(&key).await? {
                None => 1,
                Some(bytes) => {
                    let array: [u8; 8] = bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::Internal("the unique id counter is corrupt".into()))?;
                    u64::from_be_bytes(array)
                }
            };
            let end = start
                .checked_add(BLOCK)
                .filter(|end| *end <= i64::MAX as u64)
                .ok_or_else(|| Error::LimitExceeded("the unique id space is used up".into()))?;
            txn.put(key.clone(), end.to_be_bytes().to_vec())?;
            txn.commit().await?;
            Ok((start, end))
        }
        .await;
        match outcome {
            // An ambiguous commit is safe to retry: a block is used only once its reservation
            // is known to have committed, and a retry reads the counter afresh.
            Err(Error::Aborted(_) | Error::Ambiguous(_) | Error::Unavailable(_))
                if attempt + 1 < MAX_ATTEMPTS =>
            {
                txn.rollback().await;
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(1 << attempt.min(6))).await;
            }
            Err(e) => {
                txn.rollback().await;
                return Err(e);
            }
            Ok(block) => return Ok(block),
        }
    }
}
