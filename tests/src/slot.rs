//! A process-wide limit on how many clusters run at once.
//!
//! `cargo test` runs tests on several threads, and every cluster is four or more processes of
//! a debug build. On a small machine two clusters starving each other turn "recovers within
//! 15 s" into a flaky test, so each [`crate::Cluster`] and [`crate::Demo`] holds a slot while it
//! lives and the next one waits for a slot to free. The number of slots is
//! `MERIDIAN_TEST_CLUSTERS` (default [`DEFAULT_SLOTS`]).
//!
//! Waiting blocks the calling thread. Each `#[tokio::test]` runs its own runtime on its own
//! thread, so that only delays the waiting test.

use std::sync::{Condvar, Mutex, PoisonError};

/// How many clusters may run at once when `MERIDIAN_TEST_CLUSTERS` is not set.
pub const DEFAULT_SLOTS: usize = 1;

static IN_USE: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// A held slot; dropping it lets the next cluster start.
#[derive(Debug)]
pub(crate) struct Slot(());

impl Slot {
    /// Waits for a free slot and takes it.
    pub(crate) fn acquire() -> Slot {
        let limit = std::env::var("MERIDIAN_TEST_CLUSTERS")
            .ok()
            .and_then(|value| value.parse::<usize>().ok())
            .filter(|&limit| limit > 0)
            .unwrap_or(DEFAULT_SLOTS);
        let mut in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_use >= limit {
            in_use = FREED.wait(in_use).unwrap_or_else(PoisonError::into_inner);
        }
        *in_use += 1;
        Slot(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        *in_use = in_use.saturating_sub(1);
        FREED.notify_one();
    }
}
