//! Meridian's cluster harness: real `meridian` processes on the loopback interface, for
//! end-to-end and fault tests.
//!
//! The harness starts the binary under test (its path comes from the caller, usually
//! `env!("CARGO_BIN_EXE_meridian")` in an integration test of the root package), kills and
//! restarts its processes, and connects to them through the PostgreSQL wire protocol with
//! tokio-postgres, the way applications do:
//!
//! - [`Cluster`]: a placement driver plus `n` spanservers in zones `zone-a`, `zone-b`, …, with
//!   fixed ports and data directories, so [`Cluster::kill`] (SIGKILL) and [`Cluster::restart`]
//!   model a machine that crashes and comes back.
//! - [`Demo`]: `meridian demo`, driven as a newcomer would, including SIGTERM.
//! - [`retry_until`]: the bounded loop behind every "succeeds again within 15 s" check.
//!
//! Principles: the harness never sleeps to decide that something has happened; it polls a
//! condition against a deadline and reports the last error when the deadline passes. Every
//! process belongs to a value whose `Drop` kills it and removes its files, and a failing test
//! prints the tail of every log. Clusters in one test process run one at a time by default
//! ([`slot`]), because debug-build clusters starve each other on small machines.
//!
//! What it does not do yet: network partitions and netem delays (they need network namespaces
//! and root), and in-process nodes with transport filters; those belong to suites
//! built on top of this one.

pub mod cluster;
pub mod demo;
mod error;
pub mod fuzzing;
pub mod pg;
pub mod ports;
mod process;
pub mod retry;
pub mod slot;

#[cfg(test)]
mod harness_tests;

pub use cluster::{Cluster, ClusterOptions};
pub use demo::Demo;
pub use error::{describe_error, HarnessError};
pub use pg::connect;
pub use ports::{free_port, free_ports};
pub use process::{log_tail, send_sigterm, DEFAULT_RUST_LOG};
pub use retry::{retry_until, retry_until_with, AttemptFailure, BoxError, RetryError};

/// Looks `program` up on `PATH`, as a shell would; `None` if it is not installed.
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
