//! Connecting to a Meridian server over the PostgreSQL wire protocol.
//!
//! Test servers run insecure: user `root`, database `meridian`, no TLS, no password. The
//! connection task is spawned on the current tokio runtime and dropped silently when the
//! server goes away (a killed server is the point of many tests); the next statement on the
//! client then fails with a closed-connection error.

use std::time::Duration;

/// The user tests connect as.
pub const USER: &str = "root";
/// The database tests connect to.
pub const DATABASE: &str = "meridian";
/// The statement that proves a server serves SQL: it needs the catalog, so it needs the
/// cluster, not just an open port.
pub const READINESS_PROBE: &str = "SHOW TABLES";

/// The key-value connection string for a server's PostgreSQL port:
/// `host=127.0.0.1 port=P user=root dbname=meridian`.
pub fn pg_config(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user={USER} dbname={DATABASE}")
}

/// The URL form, for `psql` and `meridian sql`: `postgresql://root@127.0.0.1:P/meridian`.
pub fn pg_url(port: u16) -> String {
    format!("postgresql://{USER}@127.0.0.1:{port}/{DATABASE}")
}

pub use meridian_client::pg::{connect, CONNECT_TIMEOUT};

/// Connects and runs [`READINESS_PROBE`] once.
pub async fn probe(config: &str) -> Result<(), tokio_postgres::Error> {
    let client = connect(config).await?;
    client.simple_query(READINESS_PROBE).await?;
    Ok(())
}

/// How often readiness is probed.
pub(crate) const PROBE_INTERVAL: std::time::Duration = Duration::from_millis(200);

/// Probes `config` until it answers [`READINESS_PROBE`] or `deadline` passes. Before every
/// probe `exited` is asked whether a process the server depends on has died, which ends the
/// wait at once with that error instead of at the deadline.
pub(crate) async fn wait_serving(
    what: &str,
    config: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
    exited: &dyn Fn() -> Option<crate::HarnessError>,
) -> Result<(), crate::HarnessError> {
    let mut last_error = "no probe finished".to_string();
    loop {
        if let Some(error) = exited() {
            return Err(error);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(crate::HarnessError::Timeout {
                what: format!("{what} answering `{READINESS_PROBE}`"),
                timeout,
                last_error,
            });
        }
        let limit = crate::retry::ATTEMPT_TIMEOUT.min(left);
        match tokio::time::timeout(limit, probe(config)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => last_error = crate::describe_error(&error),
            Err(_) => last_error = format!("probe timed out after {limit:?}"),
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(PROBE_INTERVAL.min(left)).await;
    }
}
