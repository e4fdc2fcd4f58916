//! The SQL layer's one error type, [`SqlError`], and its PostgreSQL SQLSTATE codes.
//!
//! Variants are grouped by what the caller should do about them:
//!
//! - **retry**: [`SqlError::Retryable`] (40001) — the transaction conflicted and was aborted; run
//!   it again. [`SqlError::Unavailable`] (58000) — the cluster could not serve the request in
//!   time; try later. 58000 (`system_error`, "an error external to the server") was chosen over
//!   08006 because 08xxx tells drivers the *connection* is broken, which it is not.
//! - **fix the request**: syntax, undefined objects, type errors, constraint violations, ...
//! - **transaction state**: [`SqlError::InFailedTransaction`] (25P02) until ROLLBACK;
//!   [`SqlError::ReadOnlyTransaction`] (25006) for a write in a read-only transaction;
//!   [`SqlError::ActiveTransaction`] (25001) for a statement that must run outside a
//!   transaction block, or before the first query of one.
//! - **report a bug**: [`SqlError::Internal`] (XX000).
//!
//! KV client errors ([`meridian_kv::Error`]) map as: `Aborted` → 40001, `Ambiguous` → 40003
//! (statement completion unknown: the commit may have applied, so it must not be retried
//! blindly), `Unavailable` → 58000, `InvalidTimestamp` and `InvalidArgument` → 22023 (a read
//! timestamp the store cannot serve, such as one in the future; the message is passed through),
//! `LimitExceeded` → 54000, `Internal` → XX000.

/// Everything that can go wrong while running a SQL statement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SqlError {
    // ---- retry ----
    /// The transaction conflicted with another one and was aborted (40001).
    #[error("restart transaction: {0}")]
    Retryable(String),
    /// The commit's outcome is unknown: it may or may not have applied (40003). Retrying
    /// blindly could apply it twice; read back to find out.
    #[error("result is ambiguous: {0}")]
    StatementCompletionUnknown(String),
    /// The cluster could not serve the request in time (58000).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),

    // ---- fix the request ----
    /// The SQL text does not parse (42601).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A table named in the statement does not exist (42P01).
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// A column named in the statement does not exist (42703).
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// A column reference matches more than one column (42702).
    #[error("column reference \"{0}\" is ambiguous")]
    AmbiguousColumn(String),
    /// CREATE TABLE of a name that is taken (42P07).
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// An invalid table definition, such as two primary keys (42P16).
    #[error("{0}")]
    InvalidTableDefinition(String),
    /// A column is named twice in a definition or column list (42701).
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// A function name or signature we do not know (42883).
    #[error("function {0} does not exist")]
    UndefinedFunction(String),
    /// A session setting we do not know (42704).
    #[error("unrecognized configuration parameter \"{0}\"")]
    UndefinedParameter(String),
    /// Misuse of aggregates: a non-aggregated column outside GROUP BY, an aggregate in WHERE,
    /// nested aggregates (42803).
    #[error("{0}")]
    Grouping(String),
    /// An ORDER BY or GROUP BY position or DISTINCT/ORDER BY mismatch (42P10).
    #[error("{0}")]
    InvalidColumnReference(String),
    /// A value or expression has the wrong type for where it is used (42804).
    #[error("{0}")]
    DatatypeMismatch(String),
    /// An explicit CAST between types that have no conversion (42846).
    #[error("cannot cast type {from} to {to}")]
    CannotCoerce {
        /// The source type's SQL name.
        from: String,
        /// The target type's SQL name.
        to: String,
    },
    /// A duplicate primary key (23505).
    #[error("duplicate key value violates unique constraint \"{table}_pkey\"")]
    UniqueViolation {
        /// The table whose primary key was violated.
        table: String,
    },
    /// A NULL in a NOT NULL column (23502).
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation {
        /// The table.
        table: String,
        /// The NOT NULL column.
        column: String,
    },
    /// Text that does not parse as the target type (22P02).
    #[error("invalid input syntax for type {type_name}: \"{value}\"")]
    InvalidTextRepresentation {
        /// The target type's SQL name.
        type_name: String,
        /// The offending text.
        value: String,
    },
    /// A number out of its type's range (22003).
    #[error("{0} out of range")]
    NumericOutOfRange(String),
    /// Division (or modulo) by zero (22012).
    #[error("division by zero")]
    DivisionByZero,
    /// A string longer than its VARCHAR(n) column (22001).
    #[error("value too long for type character varying({0})")]
    StringTooLong(u32),
    /// A negative LIMIT or OFFSET (2201W / 2201X share this variant; we report 2201W).
    #[error("{0}")]
    InvalidRowCount(String),
    /// A bad value for a setting or function argument (22023).
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A statement or feature that is not built yet (0A000); the text says which.
    #[error("{0} is not supported")]
    NotSupported(String),
    /// A wire-protocol level misuse, such as a wrong parameter count (08P01).
    #[error("{0}")]
    ProtocolViolation(String),

    // ---- transaction state ----
    /// A statement other than ROLLBACK/COMMIT in a failed explicit transaction (25P02).
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A write (INSERT, UPDATE, DELETE, SELECT FOR UPDATE, DDL) in a read-only transaction
    /// (25006); the text names the statement.
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnlyTransaction(String),
    /// A statement that needs to run outside a transaction block, or before the first query of
    /// one, ran inside or after it (25001).
    #[error("{0}")]
    ActiveTransaction(String),
    /// The session is not in the state the statement needs (55000).
    #[error("{0}")]
    ObjectNotInPrerequisiteState(String),

    // ---- report a bug ----
    /// The user may not do this (42501).
    #[error("permission denied: {0}")]
    InsufficientPrivilege(String),
    /// A user (or other object) that does not exist (42704).
    #[error("{0}")]
    UndefinedObject(String),
    /// A user (or other object) that exists already (42710).
    #[error("{0}")]
    DuplicateObject(String),
    /// A name that is not allowed (42602).
    #[error("{0}")]
    InvalidName(String),
    /// A resource the statement needs ran out (54000).
    #[error("limit exceeded: {0}")]
    ProgramLimitExceeded(String),
    /// A statement nested deeper than the server will parse, bind or evaluate (54001).
    #[error("statement too complex: {0}")]
    StatementTooComplex(String),
    /// A bug or corrupt data (XX000).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// The PostgreSQL SQLSTATE code clients see for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Retryable(_) => "40001",
            SqlError::StatementCompletionUnknown(_) => "40003",
            SqlError::ProgramLimitExceeded(_) => "54000",
            SqlError::StatementTooComplex(_) => "54001",
            SqlError::InsufficientPrivilege(_) => "42501",
            SqlError::UndefinedObject(_) => "42704",
            SqlError::DuplicateObject(_) => "42710",
            SqlError::InvalidName(_) => "42602",
            SqlError::Unavailable(_) => "58000",
            SqlError::Syntax(_) => "42601",
            SqlError::UndefinedTable(_) => "42P01",
            SqlError::UndefinedColumn(_) => "42703",
            SqlError::AmbiguousColumn(_) => "42702",
            SqlError::DuplicateTable(_) => "42P07",
            SqlError::DuplicateColumn(_) => "42701",
            SqlError::InvalidTableDefinition(_) => "42P16",
            SqlError::UndefinedFunction(_) => "42883",
            SqlError::UndefinedParameter(_) => "42704",
            SqlError::Grouping(_) => "42803",
            SqlError::InvalidColumnReference(_) => "42P10",
            SqlError::DatatypeMismatch(_) => "42804",
            SqlError::CannotCoerce { .. } => "42846",
            SqlError::UniqueViolation { .. } => "23505",
            SqlError::NotNullViolation { .. } => "23502",
            SqlError::InvalidTextRepresentation { .. } => "22P02",
            SqlError::NumericOutOfRange(_) => "22003",
            SqlError::DivisionByZero => "22012",
            SqlError::StringTooLong(_) => "22001",
            SqlError::InvalidRowCount(_) => "2201W",
            SqlError::InvalidParameterValue(_) => "22023",
            SqlError::NotSupported(_) => "0A000",
            SqlError::ProtocolViolation(_) => "08P01",
            SqlError::InFailedTransaction => "25P02",
            SqlError::ReadOnlyTransaction(_) => "25006",
            SqlError::ActiveTransaction(_) => "25001",
            SqlError::ObjectNotInPrerequisiteState(_) => "55000",
            SqlError::Internal(_) => "XX000",
        }
    }

    /// Whether running the same statement again may succeed (the conflict was transient).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqlError::Retryable(_))
    }

    /// Shorthand for [`SqlError::NotSupported`].
    pub fn unsupported(what: impl Into<String>) -> SqlError {
        SqlError::NotSupported(what.into())
    }
}

impl From<meridian_kv::Error> for SqlError {
    fn from(e: meridian_kv::Error) -> SqlError {
        use meridian_kv::Error;
        match e {
            Error::Aborted(m) => SqlError::Retryable(m),
            Error::Ambiguous(m) => SqlError::StatementCompletionUnknown(m),
            Error::Unavailable(m) => SqlError::Unavailable(m),
            Error::InvalidTimestamp(m) | Error::InvalidArgument(m) => {
                SqlError::InvalidParameterValue(m)
            }
            Error::LimitExceeded(m) => SqlError::ProgramLimitExceeded(m),
            // The session names the table when it can (`Session::kv_error`).
            Error::KeyExists { key } => SqlError::UniqueViolation {
                table: meridian_common::keys::table_of(&key)
                    .map_or_else(|| "unknown".to_string(), |t| t.to_string()),
            },
            Error::Internal(m) => SqlError::Internal(m),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_errors_map_to_the_sqlstate_that_says_what_to_do() {
        use meridian_kv::Error;
        let cases = [
            (Error::Aborted("wounded".into()), "40001"),
            (Error::Ambiguous("lost the leader".into()), "40003"),
            (Error::Unavailable("no leader".into()), "58000"),
            (Error::InvalidTimestamp("in the future".into()), "22023"),
            (Error::InvalidArgument("bad split key".into()), "22023"),
            (Error::LimitExceeded("table ids".into()), "54000"),
            (
                Error::KeyExists {
                    key: vec![0, 0, 0, 100, 1],
                },
                "23505",
            ),
            (Error::Internal("bug".into()), "XX000"),
        ];
        for (kv, code) in cases {
            let sql = SqlError::from(kv.clone());
            assert_eq!(sql.sqlstate(), code, "{kv:?}");
            assert_eq!(sql.is_retryable(), kv.is_retryable(), "{kv:?}");
        }
    }
}
