//! A SQL session: one client connection's state (its transaction and settings) and the
//! statement loop: parse → read catalog → bind → optimize → execute → commit.
//!
//! ## Transactions
//!
//! - **Autocommit** (no BEGIN): each statement runs in its own storage transaction, committed
//!   before its result is returned. A statement that fails with a retryable conflict (40001) is
//!   run again from scratch, up to [`MAX_AUTOCOMMIT_RETRIES`] times with a small randomized
//!   backoff: no result has reached the client yet, so the retry is invisible. A query (a
//!   SELECT without FOR UPDATE / FOR SHARE) runs in a *read-only* storage transaction
//!   ([`Client::begin_read_only`]): one lock-free snapshot, strong unless `max_staleness` is
//!   set. INSERT, UPDATE, DELETE and SELECT … FOR UPDATE / FOR SHARE run read-write.
//! - **Explicit** (BEGIN / START TRANSACTION … COMMIT / END, or ROLLBACK / ABORT): statements
//!   share one storage transaction. Any error aborts it, and the session then refuses every
//!   statement but COMMIT/ROLLBACK with 25P02, as PostgreSQL does; COMMIT of a failed
//!   transaction rolls back and answers `ROLLBACK`. A conflict detected at COMMIT is reported
//!   as 40001 and ends the transaction; the application retries it.
//! - **Read-only transactions**: `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`, `BEGIN
//!   TRANSACTION READ ONLY`, `SET TRANSACTION READ ONLY` (or `SET transaction_read_only = on`)
//!   before the transaction's first query, and `SET default_transaction_read_only = on` (or
//!   `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`), which makes every transaction,
//!   autocommit ones included, read-only unless it says `READ WRITE`. They read one snapshot
//!   through [`Client::begin_read_only`] and take no locks, so they never conflict; INSERT,
//!   UPDATE, DELETE, SELECT FOR UPDATE/SHARE and DDL in them fail with 25006. `SHOW
//!   transaction_read_only` reports the mode. The snapshot is [`ReadBound::Strong`] (it sees
//!   every transaction that committed before it), or, after `SET max_staleness = '10s'`
//!   (intervals such as `'500ms'`, `'1m'`, `'10 seconds'`; `'0'` or `RESET` turns it off),
//!   [`ReadBound::MaxStaleness`]: bounded staleness, the freshest snapshot a nearby replica
//!   can serve without waiting, at most that old. `max_staleness` applies to every read-only
//!   transaction that does not name its time, autocommit queries included.
//! - **AS OF SYSTEM TIME** (CockroachDB syntax): `SELECT … FROM t AS OF SYSTEM TIME '-10s'
//!   WHERE …` (or with the clause at the end) runs the query as a read-only transaction at
//!   exactly that time: a negative interval ([`ReadBound::ExactStaleness`]), an absolute
//!   timestamp such as `'2026-11-26 01:00:00'` (UTC unless an offset is given), or a number of
//!   ns since the epoch such as `SHOW commit_timestamp` returns ([`ReadBound::At`]); see
//!   [`crate::timestamp`] for the forms. `BEGIN [READ ONLY] AS OF SYSTEM TIME …` starts a
//!   read-only transaction at that time. Malformed values, non-negative intervals and times in
//!   the future are 22023; the clause on anything but SELECT or BEGIN, or with FOR UPDATE, is
//!   0A000; a SELECT … AS OF SYSTEM TIME inside a transaction block is 25001. Only the rows
//!   are read as of that time: the catalog is read as it is now, so a table dropped since
//!   cannot be queried, and one created since reads as empty.
//! - **DDL** (CREATE/DROP TABLE, ALTER TABLE … SPLIT AT) writes only the catalog or the
//!   placement, in its own transaction with retries. Inside an explicit transaction it is
//!   rejected with 0A000 (it would otherwise commit independently of the surrounding
//!   transaction, which is worse than refusing), and in a read-only one with 25006.
//!   `ALTER TABLE t SPLIT AT VALUES (1), (5, 'a')` binds each row against a prefix of `t`'s
//!   primary key columns and asks the placement driver to start a tablet at each resulting key
//!   ([`Client::split_at`]); the keys are exactly the storage-key prefixes of rows with those
//!   primary keys.
//!
//! Statements take table descriptors from the gateway's schema cache ([`crate::schema`]) and
//! their plans from the statement's own plan cache ([`crate::prepared`]): a prepared statement
//! is bound and optimized once per schema version, and no statement reads the catalog unless
//! the cached schema expired or lacks a table it names.
//!
//! `SHOW commit_timestamp` returns the commit timestamp of the session's latest transaction
//! that wrote something, and `SHOW read_timestamp` the snapshot timestamp of its latest
//! read-only transaction that read something ([`Transaction::read_ts`]); both in ns since the
//! epoch, 55000 if there is none yet.
//!
//! Submodules, by operation: `transaction` (BEGIN/COMMIT/ROLLBACK, SET TRANSACTION, running
//! queries and DML in the right kind of transaction), `ddl` (CREATE/DROP TABLE, SPLIT AT) and
//! `settings` (SET, RESET, SHOW).

mod ddl;
mod roles;
mod settings;
mod transaction;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlparser::ast;

use crate::binder::{bind_statement, referenced_tables, statement_name};
use crate::error::{Result, SqlError};
use crate::executor::stream::{self, RowSink};
use crate::executor::{execute, ExecOutput};
use crate::optimizer::optimize;
use crate::plan::OutputColumn;
use crate::prepared::{CachedPlan, PlanCache};
use crate::schema::SchemaCache;
use crate::timestamp::AsOf;
use crate::types::{DataType, Datum, Row, TypeFamily};
use meridian_kv::{Client, ReadBound, Txn};

pub use crate::parser::{parse, Statement};

/// How many times an autocommit statement is retried after a 40001 conflict.
pub const MAX_AUTOCOMMIT_RETRIES: u32 = 10;

/// The transaction state clients see in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in an explicit transaction.
    Idle,
    /// In an explicit transaction.
    InTransaction,
    /// In an explicit transaction that failed; waiting for ROLLBACK.
    Failed,
}

/// What a statement did, for the CommandComplete tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTag {
    /// `SELECT n`
    Select(usize),
    /// `INSERT 0 n`
    Insert(usize),
    /// `UPDATE n`
    Update(usize),
    /// `DELETE n`
    Delete(usize),
    /// `CREATE TABLE`
    CreateTable,
    /// `DROP TABLE`
    DropTable,
    /// `ALTER TABLE`
    AlterTable,
    /// `BEGIN`
    Begin,
    /// `COMMIT`
    Commit,
    /// `ROLLBACK`
    Rollback,
    /// `SET`
    Set,
    /// `RESET`
    Reset,
    /// `SHOW`
    Show,
    /// `CREATE ROLE` (also for CREATE USER, as PostgreSQL answers)
    CreateRole,
    /// `ALTER ROLE`
    AlterRole,
    /// `DROP ROLE`
    DropRole,
    /// `GRANT`
    Grant,
    /// `REVOKE`
    Revoke,
}

impl std::fmt::Display for CommandTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandTag::Select(n) => write!(f, "SELECT {n}"),
            CommandTag::Insert(n) => write!(f, "INSERT 0 {n}"),
            CommandTag::Update(n) => write!(f, "UPDATE {n}"),
            CommandTag::Delete(n) => write!(f, "DELETE {n}"),
            CommandTag::CreateTable => f.write_str("CREATE TABLE"),
            CommandTag::DropTable => f.write_str("DROP TABLE"),
            CommandTag::AlterTable => f.write_str("ALTER TABLE"),
            CommandTag::Begin => f.write_str("BEGIN"),
            CommandTag::Commit => f.write_str("COMMIT"),
            CommandTag::Rollback => f.write_str("ROLLBACK"),
            CommandTag::Set => f.write_str("SET"),
            CommandTag::Reset => f.write_str("RESET"),
            CommandTag::Show => f.write_str("SHOW"),
            CommandTag::CreateRole => f.write_str("CREATE ROLE"),
            CommandTag::AlterRole => f.write_str("ALTER ROLE"),
            CommandTag::DropRole => f.write_str("DROP ROLE"),
            CommandTag::Grant => f.write_str("GRANT"),
            CommandTag::Revoke => f.write_str("REVOKE"),
        }
    }
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementResult {
    /// Result columns, for statements that return rows (even zero rows).
    pub columns: Option<Vec<OutputColumn>>,
    /// Result rows.
    pub rows: Vec<Row>,
    /// The command tag.
    pub tag: CommandTag,
}

impl StatementResult {
    fn command(tag: CommandTag) -> StatementResult {
        StatementResult {
            columns: None,
            rows: Vec::new(),
            tag,
        }
    }
}

/// A statement's parameter and result types, without running it (for Describe).
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// Types of `$1..$n`.
    pub params: Vec<DataType>,
    /// Result columns, if the statement returns rows.
    pub columns: Option<Vec<OutputColumn>>,
}

/// Describes `stmt`: its parameter types (given `declared` ones from the client, `Unknown`
/// where not declared) and result columns. Reads the catalog but runs nothing.
pub async fn describe(
    schema: &SchemaCache,
    stmt: &Statement,
    declared: &[DataType],
) -> Result<Description> {
    let stmt = match stmt {
        Statement::Sql { statement, .. } => statement.as_ref(),
        Statement::SplitAt { table, values } => {
            let (_, bound) = ddl::bind_split_at(schema, table, values, declared).await?;
            return Ok(Description {
                params: bound.param_types,
                columns: None,
            });
        }
    };
    match stmt {
        ast::Statement::Query(_)
        | ast::Statement::Insert(_)
        | ast::Statement::Update(_)
        | ast::Statement::Delete(_) => {
            let (tables, _) = schema.tables(&referenced_tables(stmt)?).await?;
            let bound = bind_statement(stmt, &tables, declared)?;
            Ok(Description {
                params: bound.param_types,
                columns: bound.columns,
            })
        }
        ast::Statement::ShowVariable { variable } => Ok(Description {
            params: Vec::new(),
            columns: Some(vec![settings::show_column(&settings::variable_name(
                variable,
            ))]),
        }),
        ast::Statement::ShowTables { .. } => Ok(Description {
            params: Vec::new(),
            columns: Some(vec![OutputColumn::new("table_name", DataType::Text)]),
        }),
        _ => Ok(Description {
            params: declared.iter().map(|t| t.or_text()).collect(),
            columns: None,
        }),
    }
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// An explicit transaction in progress.
struct OpenTxn {
    txn: Txn,
    access: Access,
    /// The time given by `BEGIN … AS OF SYSTEM TIME`, if any (the transaction is read-only).
    as_of: Option<AsOf>,
    /// Whether a query or DML statement has run in it: its access mode is fixed from then on.
    queried: bool,
}

enum TxnState {
    Idle,
    Open(OpenTxn),
    Failed,
}

/// One client's SQL session.
pub struct Session {
    store: Client,
    /// The gateway's schema cache, shared with its other sessions.
    schema: Arc<SchemaCache>,
    txn: TxnState,
    last_commit_ts: Option<u64>,
    /// The snapshot timestamp of the latest read-only transaction that read something.
    last_read_ts: Option<u64>,
    /// The priority of the last transaction aborted as retryable: the next one inherits it, so
    /// a client that retries keeps its place under wound-wait and cannot starve.
    retry_priority: Option<u64>,
    /// `default_transaction_read_only`.
    default_read_only: bool,
    /// `max_staleness`: `Some` makes read-only transactions bounded-stale.
    max_staleness: Option<Duration>,
    /// `max_result_bytes`: the most bytes of rows one statement may read into memory.
    max_result_bytes: usize,
    /// Where the running statement streams its rows, if its connection takes them so.
    row_sink: Option<RowSink>,
    /// Other settings, as set (they change nothing).
    settings: BTreeMap<String, String>,
    /// Who is logged in ([`crate::users::ROOT`] until the connection says otherwise).
    user: String,
}

impl Session {
    /// The user this session runs as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Runs the session as `user` (the connection's authenticated user).
    pub fn set_user(&mut self, user: impl Into<String>) {
        self.user = user.into();
    }

    /// A new session in autocommit mode, with a schema cache of its own.
    pub fn new(store: Client) -> Session {
        let schema = SchemaCache::new(store.clone());
        Session::with_schema(store, schema)
    }

    /// A new session in autocommit mode sharing the gateway's schema cache.
    pub fn with_schema(store: Client, schema: Arc<SchemaCache>) -> Session {
        Session {
            store,
            schema,
            txn: TxnState::Idle,
            last_commit_ts: None,
            last_read_ts: None,
            retry_priority: None,
            default_read_only: false,
            max_staleness: None,
            max_result_bytes: crate::limits::DEFAULT_MAX_RESULT_BYTES,
            row_sink: None,
            settings: BTreeMap::new(),
            user: crate::users::ROOT.to_string(),
        }
    }

    /// The store this session runs on.
    pub fn store(&self) -> &Client {
        &self.store
    }

    /// The gateway's schema cache this session reads.
    pub fn schema(&self) -> &Arc<SchemaCache> {
        &self.schema
    }

    /// The session's transaction state.
    pub fn transaction_status(&self) -> TransactionStatus {
        match self.txn {
            TxnState::Idle => TransactionStatus::Idle,
            TxnState::Open(_) => TransactionStatus::InTransaction,
            TxnState::Failed => TransactionStatus::Failed,
        }
    }

    /// The commit timestamp (ns since the epoch) of the session's latest writing transaction.
    pub fn last_commit_timestamp(&self) -> Option<u64> {
        self.last_commit_ts
    }

    /// The snapshot timestamp (ns since the epoch) of the session's latest read-only
    /// transaction that read something.
    pub fn last_read_timestamp(&self) -> Option<u64> {
        self.last_read_ts
    }

    /// Rolls back any open transaction (call when the client goes away).
    pub async fn close(&mut self) {
        if let TxnState::Open(mut open) = std::mem::replace(&mut self.txn, TxnState::Idle) {
            open.txn.rollback().await;
        }
    }

    /// Parses and runs every statement in `sql`, stopping at the first error.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<StatementResult>> {
        let mut results = Vec::new();
        for stmt in parse(sql)? {
            results.push(self.execute_statement(&stmt, &[]).await?);
        }
        Ok(results)
    }

    /// Runs one parsed statement with parameter values for `$1..$n`. `Datum::Text` values are
    /// untyped and parsed as whatever type the statement gives the parameter; other values
    /// declare their natural type (INT8, FLOAT8, BOOL, BYTEA).
    pub async fn execute_statement(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
    ) -> Result<StatementResult> {
        let declared: Vec<DataType> = params.iter().map(declared_type).collect();
        self.execute_prepared(stmt, params, &declared).await
    }

    /// [`Session::execute_prepared`], streaming a query's result to `sink` (its columns, then
    /// its rows a page at a time) instead of returning its rows; the result's tag counts them.
    /// Statements that return no rows, or rows from a write, answer as usual. The sink is
    /// dropped when the statement ends, which ends its receiver's stream.
    pub async fn execute_streaming(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        param_types: &[DataType],
        sink: RowSink,
    ) -> Result<StatementResult> {
        self.row_sink = Some(sink);
        let result = self.execute_prepared(stmt, params, param_types).await;
        self.row_sink = None;
        result
    }

    /// Runs one parsed statement with parameter values and the parameter types the client
    /// declared or was told by [`describe`] (`Unknown` leaves a type to the statement).
    pub async fn execute_prepared(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let is_end = matches!(
            stmt,
            Statement::Sql { statement, .. }
                if matches!(
                    **statement,
                    ast::Statement::Commit { .. } | ast::Statement::Rollback { .. }
                )
        );
        if matches!(self.txn, TxnState::Failed) && !is_end {
            return Err(SqlError::InFailedTransaction);
        }
        let result = self.dispatch(stmt, params, param_types).await;
        if result.is_err() && matches!(self.txn, TxnState::Open(_)) {
            if let TxnState::Open(mut open) = std::mem::replace(&mut self.txn, TxnState::Failed) {
                if result.as_ref().is_err_and(|e| e.is_retryable()) {
                    self.retry_priority = Some(open.txn.priority());
                }
                open.txn.rollback().await;
            }
        }
        result
    }

    async fn dispatch(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let (stmt, as_of, plan) = match stmt {
            Statement::SplitAt { table, values } => {
                self.check_ddl_allowed("ALTER TABLE")?;
                self.check_admin("ALTER TABLE … SPLIT AT").await?;
                return self.split_at(table, values, params, param_types).await;
            }
            Statement::Sql {
                statement,
                as_of,
                plan,
            } => (statement.as_ref(), *as_of, plan),
        };
        if as_of.is_some()
            && !matches!(
                stmt,
                ast::Statement::Query(_) | ast::Statement::StartTransaction { .. }
            )
        {
            return Err(SqlError::unsupported(format!(
                "AS OF SYSTEM TIME on {} (only SELECT and BEGIN take it)",
                statement_name(stmt)
            )));
        }
        match stmt {
            ast::Statement::StartTransaction {
                modes, statements, ..
            } if statements.is_empty() => self.begin(modes, as_of).await,
            ast::Statement::Commit { chain: false, .. } => self.commit().await,
            ast::Statement::Rollback {
                chain: false,
                savepoint: None,
            } => self.rollback().await,
            ast::Statement::Query(_)
            | ast::Statement::Insert(_)
            | ast::Statement::Update(_)
            | ast::Statement::Delete(_) => {
                self.run_dml(stmt, plan, as_of, params, param_types).await
            }
            ast::Statement::CreateTable(create) => {
                self.check_ddl_allowed("CREATE TABLE")?;
                self.check_admin("CREATE TABLE").await?;
                self.create_table(create).await
            }
            ast::Statement::Drop {
                object_type: ast::ObjectType::Table,
                if_exists,
                names,
                temporary: false,
                purge: false,
                ..
            } => {
                self.check_ddl_allowed("DROP TABLE")?;
                self.check_admin("DROP TABLE").await?;
                self.drop_tables(names, *if_exists).await
            }
            ast::Statement::CreateRole(create) => self.create_role(create).await,
            ast::Statement::Grant(grant) => {
                self.grant_or_revoke(
                    &grant.privileges,
                    grant.objects.as_ref(),
                    &grant.grantees,
                    false,
                )
                .await
            }
            ast::Statement::Revoke(revoke) => {
                self.grant_or_revoke(
                    &revoke.privileges,
                    revoke.objects.as_ref(),
                    &revoke.grantees,
                    true,
                )
                .await
            }
            ast::Statement::AlterRole { name, operation } => self.alter_role(name, operation).await,
            ast::Statement::Drop {
                object_type: ast::ObjectType::Role | ast::ObjectType::User,
                if_exists,
                names,
                ..
            } => self.drop_roles(names, *if_exists).await,
            ast::Statement::ShowTables { .. } => self.show_tables().await,
            ast::Statement::ShowVariable { variable } => {
                self.show(&settings::variable_name(variable)).await
            }
            ast::Statement::Set(set) => self.set(set).await,
            ast::Statement::Reset(reset) => self.reset(reset),
            other => Err(SqlError::unsupported(statement_name(other))),
        }
    }

    /// DDL runs in its own transactions: refused in a read-only session or transaction
    /// (25006) and inside any explicit transaction (0A000).
    fn check_ddl_allowed(&self, what: &str) -> Result<()> {
        match &self.txn {
            TxnState::Open(open) if open.access == Access::ReadOnly => {
                Err(SqlError::ReadOnlyTransaction(what.to_string()))
            }
            TxnState::Idle if self.default_read_only => {
                Err(SqlError::ReadOnlyTransaction(what.to_string()))
            }
            TxnState::Idle => Ok(()),
            _ => Err(SqlError::unsupported(format!(
                "{what} inside a transaction block"
            ))),
        }
    }

    /// The bound of a read-only transaction that does not name its time.
    fn default_read_bound(&self) -> ReadBound {
        match self.max_staleness {
            Some(d) => ReadBound::MaxStaleness(d),
            None => ReadBound::Strong,
        }
    }
}

/// What a statement runs with besides its transaction and parameters.
struct Env<'a> {
    schema: &'a SchemaCache,
    /// Whose privileges it needs.
    user: &'a str,
    /// `max_result_bytes`.
    max_result_bytes: usize,
    /// Where a query's rows go, if they stream.
    sink: Option<&'a RowSink>,
}

/// Binds, optimizes and runs a query or DML statement inside `txn`. The plan comes from the
/// statement's cache when it was bound for the current schema version and these declared
/// parameter types; otherwise it is bound against the gateway's cached schema and cached.
async fn run_statement(
    env: &Env<'_>,
    cache: &PlanCache,
    txn: &mut Txn,
    stmt: &ast::Statement,
    params: &[Datum],
    param_types: &[DataType],
) -> Result<StatementResult> {
    let Env {
        schema,
        user,
        max_result_bytes,
        sink,
    } = *env;
    let current = schema.current().await?;
    let planned = match cache.get(current.version, param_types) {
        Some(planned) => planned,
        None => {
            let names = referenced_tables(stmt)?;
            let (tables, version) = schema.tables(&names).await?;
            let bound = bind_statement(stmt, &tables, param_types)?;
            let needs = privileges_needed(&bound.kind, stmt, names);
            let planned = Arc::new(CachedPlan {
                version,
                declared: param_types.to_vec(),
                kind: bound.kind,
                columns: bound.columns,
                param_types: bound.param_types,
                plan: optimize(bound.plan),
                needs,
            });
            cache.put(planned.clone());
            planned
        }
    };
    for (table, needed) in &planned.needs {
        current.check(user, table, *needed)?;
    }
    let params = coerce_params(params, &planned.param_types)?;
    let output = match sink {
        Some(sink) if planned.kind == crate::binder::StatementKind::Select => {
            let columns = planned.columns.clone().unwrap_or_default();
            match stream::stream(&planned.plan, columns, txn, &params, max_result_bytes, sink)
                .await?
            {
                stream::Outcome::Held(rows) => ExecOutput {
                    count: rows.len(),
                    rows,
                },
                stream::Outcome::Sent(count) => ExecOutput {
                    rows: Vec::new(),
                    count,
                },
            }
        }
        _ => execute(&planned.plan, txn, &params, max_result_bytes).await?,
    };
    let tag = match planned.kind {
        crate::binder::StatementKind::Select => CommandTag::Select(output.count),
        crate::binder::StatementKind::Insert => CommandTag::Insert(output.count),
        crate::binder::StatementKind::Update => CommandTag::Update(output.count),
        crate::binder::StatementKind::Delete => CommandTag::Delete(output.count),
    };
    Ok(StatementResult {
        columns: planned.columns.clone(),
        rows: output.rows,
        tag,
    })
}

/// What running `stmt` (of `kind`, over `tables`, its target first) takes: SELECT on every
/// table it reads, plus the statement's own privilege on its target. An UPDATE or DELETE reads
/// its target (its WHERE clause and SET expressions see the rows, and so may its RETURNING),
/// and so does an INSERT that returns rows or whose source is a query (which may read the
/// target too: `referenced_tables` names each table once).
fn privileges_needed(
    kind: &crate::binder::StatementKind,
    stmt: &ast::Statement,
    tables: Vec<String>,
) -> Vec<(String, crate::users::Privileges)> {
    use crate::binder::StatementKind;
    use crate::users::Privileges;
    let target = match kind {
        StatementKind::Select => Privileges::SELECT,
        StatementKind::Insert => {
            let reads = match stmt {
                ast::Statement::Insert(insert) => {
                    insert.returning.is_some()
                        || insert
                            .source
                            .as_ref()
                            .is_some_and(|q| !matches!(*q.body, ast::SetExpr::Values(_)))
                }
                _ => true,
            };
            if reads {
                Privileges::INSERT.union(Privileges::SELECT)
            } else {
                Privileges::INSERT
            }
        }
        StatementKind::Update => Privileges::UPDATE.union(Privileges::SELECT),
        StatementKind::Delete => Privileges::DELETE.union(Privileges::SELECT),
    };
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, if i == 0 { target } else { Privileges::SELECT }))
        .collect()
}

/// Checks that every bound parameter has a value and converts the values to their types.
fn coerce_params(params: &[Datum], types: &[DataType]) -> Result<Vec<Datum>> {
    if params.len() < types.len() {
        return Err(SqlError::ProtocolViolation(format!(
            "bind message supplies {} parameters, but the statement requires {}",
            params.len(),
            types.len()
        )));
    }
    params
        .iter()
        .zip(types)
        .map(|(value, ty)| coerce_param(value.clone(), *ty))
        .collect()
}

/// The type a supplied parameter value implies before binding: text values are untyped
/// (their type comes from context), others have their natural type.
fn declared_type(value: &Datum) -> DataType {
    match value {
        Datum::Null | Datum::Text(_) => DataType::Unknown,
        Datum::Bool(_) => DataType::Bool,
        Datum::Int(_) => DataType::Int8,
        Datum::Float(_) => DataType::Float8,
        Datum::Bytes(_) => DataType::Bytea,
    }
}

/// Converts a supplied parameter value to its bound type: text is parsed, integers widen to
/// floats; anything else of the wrong family is 42804.
fn coerce_param(value: Datum, ty: DataType) -> Result<Datum> {
    match (value, ty.family()) {
        (Datum::Null, _) => Ok(Datum::Null),
        (Datum::Text(s), TypeFamily::String | TypeFamily::Unknown) => Ok(Datum::Text(s)),
        (Datum::Text(s), _) => Datum::parse(&s, ty),
        (Datum::Int(i), TypeFamily::Numeric) if ty.is_float() => Ok(Datum::Float(i as f64)),
        (v @ Datum::Int(_), TypeFamily::Numeric) => Ok(v),
        (v @ Datum::Float(_), TypeFamily::Numeric) if ty.is_float() => Ok(v),
        (v @ Datum::Bool(_), TypeFamily::Bool) | (v @ Datum::Bytes(_), TypeFamily::Bytes) => Ok(v),
        (v, _) => Err(SqlError::DatatypeMismatch(format!(
            "parameter value {v:?} does not match type {}",
            ty.sql_name()
        ))),
    }
}

/// Runs `attempt` (one whole transaction) until it succeeds or fails for good, running it
/// again after a retryable abort (40001) up to [`MAX_AUTOCOMMIT_RETRIES`] times, with
/// [`retry_backoff`] between tries.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && tries < MAX_AUTOCOMMIT_RETRIES => {
                tries += 1;
                tokio::time::sleep(retry_backoff(tries)).await;
            }
            other => return other,
        }
    }
}

/// Randomized exponential backoff: about 1, 2, 4, … ms, at most ~100 ms, times 0.5–1.5.
fn retry_backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base_us = 1000u64 << attempt.min(7);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % 1000; // 0..1000 per mille
    Duration::from_micros(base_us.min(100_000) * (500 + jitter) / 1000)
}
