//! Benchmark programs: the same workload against Meridian and against PostgreSQL 15 on this
//! machine, in one run, printed as a table. Benchmarks are programs (`meridian bench …`), never
//! timed tests; quote medians and ratios, since shared machines are noisy.
//!
//! - [`clock`]: the cost of one `TT.now()` for each clock source.
//! - [`writes`]: single-row writes on a 3-zone in-process cluster, with and without commit wait:
//!   ε, commit wait and write latency (the "difference below ε" check).
//! - [`txn`]: transactions: two-phase commit latency vs participants, read-only vs read-write
//!   throughput, and group commit.

pub mod clock;
pub mod cluster;
pub mod postgres;
pub mod stats;
pub mod txn;
pub mod writes;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("meridian cluster: {0}")]
    Cluster(String),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("sql: {0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
