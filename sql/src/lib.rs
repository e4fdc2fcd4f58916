//! Meridian's SQL layer: parse → bind → logical plan → optimizer rules → execute, on top of
//! the transactional KV client (`meridian-kv`, the only way it reaches tablets), plus the
//! PostgreSQL wire-protocol front end ([`server`]).
//!
//! ## Life of a query
//!
//! 1. A client sends SQL over the PostgreSQL wire protocol; [`server::serve`] runs one task per
//!    connection, each owning a [`session::Session`].
//! 2. [`parser::parse`] parses it with `sqlparser`'s PostgreSQL dialect, after a token-level
//!    pre-pass that handles the CockroachDB syntax sqlparser lacks (`AS OF SYSTEM TIME`,
//!    `ALTER TABLE … SPLIT AT`).
//! 3. [`session::Session::execute_statement`] handles transaction control, SET/SHOW and DDL
//!    itself; for a query or DML statement it takes the descriptors of the tables it names from
//!    the gateway's schema cache ([`schema::SchemaCache`]; a prepared statement reuses its plan,
//!    [`prepared::PlanCache`], while the schema version holds), and picks the storage
//!    transaction: the explicit one, or for autocommit a read-only snapshot
//!    ([`meridian_kv::Client::begin_read_only`]) for queries and a read-write one for DML.
//! 4. [`binder::bind_statement`] resolves names and types and builds a logical [`plan::Plan`]
//!    (scan → filter → aggregate → project → sort → limit, or insert/update/delete over a scan).
//! 5. [`optimizer::optimize`] pushes the WHERE clause into the scan and derives primary-key
//!    bounds from it: a point `get`, a bounded `scan`, or the whole table.
//! 6. [`executor::execute`] runs the plan inside the statement's storage transaction, reading
//!    in pages; in autocommit mode the session commits and retries conflicts (40001) itself.
//!    On a connection a query streams instead ([`executor::stream`], through
//!    [`session::Session::execute_streaming`]): its rows go out a page at a time as the scan
//!    reads them, and only operators that must hold their input (sort, DISTINCT) hold it,
//!    up to `max_result_bytes`.
//! 7. The server encodes rows in text or binary per the client's request.
//!
//! ## Data layout
//!
//! See [`encoding`] for key and row formats and [`catalog`] for how table descriptors are
//! stored. Each table's rows live in `[table_prefix(id), table_prefix(id + 1))`, one tablet
//! per table; the catalog is system table 1.
//!
//! ## What is deliberately missing
//!
//! Joins, subqueries, secondary indexes, NUMERIC/DATE/TIMESTAMP types, DEFAULT, UNIQUE/CHECK
//! constraints, ALTER TABLE other than SPLIT AT, and DDL inside explicit transactions: each is
//! rejected with SQLSTATE 0A000 naming the feature.

pub mod binder;
pub mod catalog;
pub mod encoding;
pub mod error;
pub mod executor;
pub mod expr;
pub mod limits;
pub mod optimizer;
pub mod parser;
pub mod plan;
pub mod prepared;
pub mod schema;
pub mod server;
pub mod session;
pub mod timestamp;
pub mod types;
pub mod users;

pub use error::SqlError;
pub use server::{serve, Security};

pub use session::{Session, StatementResult, TransactionStatus};
pub use types::{DataType, Datum};
