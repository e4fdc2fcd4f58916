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

/// Describes an error with its whole `source()` chain, `: `-separated, and the SQLSTATE when a
/// PostgreSQL error is in the chain. tokio-postgres's own `Display` says only "db error" or
/// "error connecting to server" and leaves the reason to the chain, which is what a failing
/// test needs to show.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut code = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(link) = current {
        if let Some(pg) = link.downcast_ref::<tokio_postgres::Error>() {
            code = code.or_else(|| pg.code().map(|code| code.code().to_string()));
        }
        if let Some(source) = link.source() {
            text.push_str(": ");
            text.push_str(&source.to_string());
        }
        current = link.source();
    }
    if let Some(code) = code {
        text.push_str(&format!(" (SQLSTATE {code})"));
    }
    text
}

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
