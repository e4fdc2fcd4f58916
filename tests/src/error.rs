//! The harness's error type.
//!
//! Harness calls that wait on the system under test (readiness, graceful exit) return
//! [`HarnessError`], so a test can assert on the failure or `.expect()` it. Its `Debug` output
//! is its `Display` text, so an `expect` panic reads as a sentence with the log tail beneath it
//! rather than as an escaped struct.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the harness could not bring the system under test to the state a test asked for.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// A process exited on its own while the harness was waiting for it to serve.
    #[error("{name} exited with {status} while waiting for it; last lines of {}:\n{tail}", log.display())]
    Exited {
        /// The process's name (`pd`, `s1`, `demo`, …).
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Something did not happen within the time allowed.
    #[error("{what} did not happen within {timeout:?}; last error: {last_error}")]
    Timeout {
        /// What the harness waited for.
        what: String,
        /// The time allowed.
        timeout: Duration,
        /// The last error seen while waiting, or a note that there was none.
        last_error: String,
    },
    /// The harness could not talk to the operating system (signals, files).
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub use meridian_client::pg::describe_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_chain() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = HarnessError::Io {
            what: "probing".to_string(),
            source: inner,
        };
        assert_eq!(describe_error(&outer), "probing: refused: refused");
    }
}
