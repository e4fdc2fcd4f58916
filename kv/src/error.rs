//! The KV client's one error type, its variants grouped by what the caller should do.

/// Why a KV operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // --- Retry the whole transaction.
    /// The transaction lost a conflict (wound-wait), lost its locks, or raced a split, and was
    /// aborted: nothing it wrote is visible. Retry it from the start (SQLSTATE 40001).
    #[error("restart transaction: {0}")]
    Aborted(String),

    // --- Find out before retrying.
    /// The commit may or may not have applied: the gateway lost contact with the leader after
    /// the commit was proposed. Retrying blindly could apply it twice (SQLSTATE 40003).
    #[error("result is ambiguous: {0}")]
    Ambiguous(String),

    // --- Retry later.
    /// The cluster could not serve the request in time: no leader answered, the placement
    /// driver is unreachable, or commits are paused while the clock is uncertain.
    #[error("unavailable: {0}")]
    Unavailable(String),

    // --- Fix the request.
    /// A read asked for a timestamp the store cannot serve: older than the MVCC garbage
    /// collection horizon, or in the future.
    #[error("{0}")]
    InvalidTimestamp(String),
    /// The request itself is invalid (a split key outside any user table, say).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// An insert found its key already live: the transaction wrote nothing.
    #[error("key exists")]
    KeyExists { key: Vec<u8> },
    /// A resource ran out (table ids, say).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    // --- Report a bug.
    /// A bug or a storage failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True if retrying the whole transaction is safe and may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Aborted(_))
    }
}

/// Results of KV operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
