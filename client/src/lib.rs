//! Meridian's client library.
//!
//! Today it holds the SQL shell behind `meridian sql` ([`shell`]): a PostgreSQL-wire client,
//! because every Meridian server speaks the PostgreSQL protocol. The native Rust driver the
//! design calls for (sessions, transactions with automatic retry, read-only and stale reads,
//! mutations over gRPC) will live beside it and is not written yet; until then, applications
//! use any PostgreSQL driver, as the end-to-end tests do with tokio-postgres.

pub mod pg;
pub mod shell;

pub use shell::{run as run_shell, ShellError, ShellOptions};
