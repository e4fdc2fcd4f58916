//! Statements as the fault suites send them: one simple-protocol statement within a timeout,
//! its failure classified by what it means for a transaction's outcome, and a seedable random
//! source for clients' choices, and the suites' settings from the environment.

use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The longest any one statement may take. Above the gateway's 20 s routing timeout, so the
/// server's own error usually arrives first and says what happened.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Why a statement failed, classified by what it means for a transfer.
#[derive(Debug)]
pub(crate) enum StepError {
    /// SQLSTATE 40001: the transaction was aborted.
    Conflict(String),
    /// The server says the outcome is unknown.
    Ambiguous(String),
    /// The connection closed, or no reply came within [`STATEMENT_TIMEOUT`].
    Lost(String),
    /// Any other error from the server.
    Failed(String),
    /// An answer that breaks the schema's invariants: a bug, reported as a violation.
    Wrong(String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Conflict(m) => write!(f, "conflict: {m}"),
            StepError::Ambiguous(m) => write!(f, "ambiguous: {m}"),
            StepError::Lost(m) => write!(f, "connection lost: {m}"),
            StepError::Failed(m) => write!(f, "failed: {m}"),
            StepError::Wrong(m) => write!(f, "wrong answer: {m}"),
        }
    }
}

impl StepError {
    pub(crate) fn classify(error: &tokio_postgres::Error) -> StepError {
        let text = describe(error);
        if error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) {
            StepError::Conflict(text)
        } else if error.code() == Some(&SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN)
            || text.to_lowercase().contains("ambiguous")
        {
            StepError::Ambiguous(text)
        } else if error.is_closed() || error.as_db_error().is_none() {
            StepError::Lost(text)
        } else {
            StepError::Failed(text)
        }
    }
}

pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    meridian_tests::describe_error(error)
}

/// Runs one statement with the simple protocol within [`STATEMENT_TIMEOUT`]: its rows as text
/// and the row count of its command tag.
pub(crate) async fn run(
    connection: &Client,
    sql: &str,
) -> Result<(Vec<Vec<Option<String>>>, u64), StepError> {
    let messages = match timeout(STATEMENT_TIMEOUT, connection.simple_query(sql)).await {
        Ok(Ok(messages)) => messages,
        Ok(Err(error)) => return Err(StepError::classify(&error)),
        Err(_) => {
            return Err(StepError::Lost(format!(
                "`{sql}` got no reply within {STATEMENT_TIMEOUT:?}"
            )))
        }
    };
    let mut rows = Vec::new();
    let mut affected = 0;
    for message in &messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => affected = *n,
            _ => {}
        }
    }
    Ok((rows, affected))
}

/// SplitMix64: cheap, seedable, well-spread choices (the root package has no `rand`).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Ends whatever transaction is open; false if the connection did not answer, so it must not be
/// used again (a BEGIN inside a leftover transaction would only warn).
pub(crate) async fn rollback(connection: &Client) -> bool {
    run(connection, "ROLLBACK").await.is_ok()
}

/// A workload's length from the environment variable `name` (whole seconds), else `default`.
///
/// # Panics
///
/// If the variable is set to anything but a positive number of seconds.
pub(crate) fn duration_from_env(name: &str, default: Duration) -> Duration {
    match std::env::var(name) {
        Ok(value) => value
            .parse::<u64>()
            .ok()
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs)
            .unwrap_or_else(|| panic!("{name}={value:?} is not a positive number of seconds")),
        Err(_) => default,
    }
}

/// A random seed from the environment variable `name`, else from the clock (print it, so a
/// run can be repeated).
///
/// # Panics
///
/// If the variable is set to anything but a u64.
pub(crate) fn seed_from_env(name: &str) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
    }
}
