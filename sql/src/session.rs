//! A SQL session: one client connection's state (its transaction and settings) and the
//! statement loop: parse → read catalog → bind → optimize → execute → commit.
//!
//! ## Transactions
//!
//! - **Autocommit** (no BEGIN): each statement runs in its own storage transaction, committed
//!   before its result is returned. A statement that fails with a retryable conflict (40001) is
//!   run again from scratch, up to [`MAX_AUTOCOMMIT_RETRIES`] times with a small randomized
//!   backoff: no result has reached the client yet, so the retry is invisible.
//! - **Explicit** (BEGIN / START TRANSACTION … COMMIT / END, or ROLLBACK / ABORT): statements
//!   share one storage transaction. Any error aborts it, and the session then refuses every
//!   statement but COMMIT/ROLLBACK with 25P02, as PostgreSQL does; COMMIT of a failed
//!   transaction rolls back and answers `ROLLBACK`. A conflict detected at COMMIT is reported
//!   as 40001 and ends the transaction; the application retries it.
//! - **DDL** (CREATE/DROP TABLE) writes only the catalog, in its own transaction with retries.
//!   Inside an explicit transaction it is rejected with 0A000 (it would otherwise commit
//!   independently of the surrounding transaction, which is worse than refusing).
//!
//! Catalog reads happen in their own short transaction for every statement
//! ([`crate::catalog::read_tables`]); see [`crate::catalog`] for why.
//!
//! `SHOW commit_timestamp` returns the commit timestamp of the session's latest transaction
//! that wrote something (55000 if there is none yet).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::binder::{bind_create_table, bind_statement, referenced_tables, statement_name};
use crate::catalog::{self, read_tables};
use crate::error::{Result, SqlError};
use crate::executor::execute;
use crate::optimizer::optimize;
use crate::plan::OutputColumn;
use crate::store::{Store, Transaction};
use crate::types::{DataType, Datum, Row, TypeFamily};

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
    /// `BEGIN`
    Begin,
    /// `COMMIT`
    Commit,
    /// `ROLLBACK`
    Rollback,
    /// `SET`
    Set,
    /// `SHOW`
    Show,
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
            CommandTag::Begin => f.write_str("BEGIN"),
            CommandTag::Commit => f.write_str("COMMIT"),
            CommandTag::Rollback => f.write_str("ROLLBACK"),
            CommandTag::Set => f.write_str("SET"),
            CommandTag::Show => f.write_str("SHOW"),
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

/// Parses SQL text (PostgreSQL dialect) into statements; syntax errors are 42601.
pub fn parse(sql: &str) -> Result<Vec<ast::Statement>> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| SqlError::Syntax(e.to_string()))
}

/// Describes `stmt`: its parameter types (given `declared` ones from the client, `Unknown`
/// where not declared) and result columns. Reads the catalog but runs nothing.
pub async fn describe(
    store: &dyn Store,
    stmt: &ast::Statement,
    declared: &[DataType],
) -> Result<Description> {
    match stmt {
        ast::Statement::Query(_)
        | ast::Statement::Insert(_)
        | ast::Statement::Update(_)
        | ast::Statement::Delete(_) => {
            let tables = read_tables(store, &referenced_tables(stmt)?).await?;
            let bound = bind_statement(stmt, &tables, declared)?;
            Ok(Description {
                params: bound.param_types,
                columns: bound.columns,
            })
        }
        ast::Statement::ShowVariable { variable } => Ok(Description {
            params: Vec::new(),
            columns: Some(vec![show_column(&variable_name(variable))]),
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

enum TxnState {
    Idle,
    Open(Box<dyn Transaction>),
    Failed,
}

/// One client's SQL session.
pub struct Session {
    store: Arc<dyn Store>,
    txn: TxnState,
    last_commit_ts: Option<u64>,
    /// The priority of the last transaction aborted as retryable: the next one inherits it, so
    /// a client that retries keeps its place under wound-wait and cannot starve.
    retry_priority: Option<u64>,
    settings: BTreeMap<String, String>,
}

impl Session {
    /// A new session in autocommit mode.
    pub fn new(store: Arc<dyn Store>) -> Session {
        Session {
            store,
            txn: TxnState::Idle,
            last_commit_ts: None,
            retry_priority: None,
            settings: BTreeMap::new(),
        }
    }

    /// The store this session runs on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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

    /// Rolls back any open transaction (call when the client goes away).
    pub async fn close(&mut self) {
        if let TxnState::Open(mut txn) = std::mem::replace(&mut self.txn, TxnState::Idle) {
            txn.rollback().await;
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
        stmt: &ast::Statement,
        params: &[Datum],
    ) -> Result<StatementResult> {
        let declared: Vec<DataType> = params.iter().map(declared_type).collect();
        self.execute_prepared(stmt, params, &declared).await
    }

    /// Runs one parsed statement with parameter values and the parameter types the client
    /// declared or was told by [`describe`] (`Unknown` leaves a type to the statement).
    pub async fn execute_prepared(
        &mut self,
        stmt: &ast::Statement,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let is_end = matches!(
            stmt,
            ast::Statement::Commit { .. } | ast::Statement::Rollback { .. }
        );
        if matches!(self.txn, TxnState::Failed) && !is_end {
            return Err(SqlError::InFailedTransaction);
        }
        let result = self.dispatch(stmt, params, param_types).await;
        if result.is_err() && matches!(self.txn, TxnState::Open(_)) {
            if let TxnState::Open(mut txn) = std::mem::replace(&mut self.txn, TxnState::Failed) {
                if result.as_ref().is_err_and(|e| e.is_retryable()) {
                    self.retry_priority = Some(txn.priority());
                }
                txn.rollback().await;
            }
        }
        result
    }

    async fn dispatch(
        &mut self,
        stmt: &ast::Statement,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        match stmt {
            ast::Statement::StartTransaction { statements, .. } if statements.is_empty() => {
                self.begin().await
            }
            ast::Statement::Commit { chain: false, .. } => self.commit().await,
            ast::Statement::Rollback {
                chain: false,
                savepoint: None,
            } => self.rollback().await,
            ast::Statement::Query(_)
            | ast::Statement::Insert(_)
            | ast::Statement::Update(_)
            | ast::Statement::Delete(_) => self.run_dml(stmt, params, param_types).await,
            ast::Statement::CreateTable(create) => {
                self.reject_ddl_in_transaction("CREATE TABLE")?;
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
                self.reject_ddl_in_transaction("DROP TABLE")?;
                self.drop_tables(names, *if_exists).await
            }
            ast::Statement::ShowTables { .. } => self.show_tables().await,
            ast::Statement::ShowVariable { variable } => self.show(&variable_name(variable)),
            ast::Statement::Set(set) => self.set(set),
            other => Err(SqlError::unsupported(statement_name(other))),
        }
    }

    // ---- transaction control ----

    async fn begin(&mut self) -> Result<StatementResult> {
        if matches!(self.txn, TxnState::Idle) {
            let priority = self.retry_priority.take();
            self.txn = TxnState::Open(self.store.begin(priority).await?);
        }
        // BEGIN inside a transaction only warns in PostgreSQL.
        Ok(StatementResult::command(CommandTag::Begin))
    }

    async fn commit(&mut self) -> Result<StatementResult> {
        match std::mem::replace(&mut self.txn, TxnState::Idle) {
            TxnState::Idle => Ok(StatementResult::command(CommandTag::Commit)),
            TxnState::Failed => Ok(StatementResult::command(CommandTag::Rollback)),
            TxnState::Open(mut txn) => {
                match txn.commit().await {
                    Ok(Some(ts)) => self.last_commit_ts = Some(ts),
                    Ok(None) => {}
                    Err(e) => {
                        let e = SqlError::from(e);
                        if e.is_retryable() {
                            self.retry_priority = Some(txn.priority());
                        }
                        return Err(e);
                    }
                }
                Ok(StatementResult::command(CommandTag::Commit))
            }
        }
    }

    async fn rollback(&mut self) -> Result<StatementResult> {
        if let TxnState::Open(mut txn) = std::mem::replace(&mut self.txn, TxnState::Idle) {
            txn.rollback().await;
        }
        Ok(StatementResult::command(CommandTag::Rollback))
    }

    fn reject_ddl_in_transaction(&self, what: &str) -> Result<()> {
        if matches!(self.txn, TxnState::Idle) {
            Ok(())
        } else {
            Err(SqlError::unsupported(format!(
                "{what} inside a transaction block"
            )))
        }
    }

    // ---- queries and DML ----

    async fn run_dml(
        &mut self,
        stmt: &ast::Statement,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        if let TxnState::Open(txn) = &mut self.txn {
            return run_statement(self.store.as_ref(), txn.as_mut(), stmt, params, param_types)
                .await;
        }
        let mut attempt = 0;
        // Retries keep the first attempt's priority (wound-wait: they cannot starve).
        let mut priority = self.retry_priority.take();
        loop {
            let outcome = async {
                let mut txn = self.store.begin(priority).await?;
                priority = Some(txn.priority());
                match run_statement(self.store.as_ref(), txn.as_mut(), stmt, params, param_types)
                    .await
                {
                    Ok(result) => {
                        if let Some(ts) = txn.commit().await? {
                            self.last_commit_ts = Some(ts);
                        }
                        Ok(result)
                    }
                    Err(e) => {
                        txn.rollback().await;
                        Err(e)
                    }
                }
            }
            .await;
            match outcome {
                Err(e) if e.is_retryable() && attempt < MAX_AUTOCOMMIT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying autocommit statement");
                    tokio::time::sleep(retry_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    // ---- DDL ----

    async fn create_table(&mut self, create: &ast::CreateTable) -> Result<StatementResult> {
        let (mut desc, if_not_exists) = bind_create_table(create)?;
        let mut id = None;
        let mut attempt = 0;
        loop {
            let outcome: Result<Option<u64>> = async {
                let mut txn = self.store.begin(None).await?;
                if catalog::get_table(txn.as_mut(), &desc.name)
                    .await?
                    .is_some()
                {
                    txn.rollback().await;
                    return if if_not_exists {
                        Ok(None)
                    } else {
                        Err(SqlError::DuplicateTable(desc.name.clone()))
                    };
                }
                let table_id = match id {
                    Some(table_id) => table_id,
                    None => {
                        let table_id = self.store.create_table_range().await?;
                        id = Some(table_id);
                        table_id
                    }
                };
                desc.id = table_id;
                catalog::put_table(txn.as_mut(), &desc)?;
                Ok(txn.commit().await?)
            }
            .await;
            match outcome {
                Err(e) if e.is_retryable() && attempt < MAX_AUTOCOMMIT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(retry_backoff(attempt)).await;
                }
                Err(e) => return Err(e),
                Ok(ts) => {
                    if ts.is_some() {
                        self.last_commit_ts = ts;
                    }
                    return Ok(StatementResult::command(CommandTag::CreateTable));
                }
            }
        }
    }

    /// Drops tables by deleting their descriptors. Their rows stay in storage, unreachable
    /// (table ids are never reused), until range garbage collection exists.
    async fn drop_tables(
        &mut self,
        names: &[ast::ObjectName],
        if_exists: bool,
    ) -> Result<StatementResult> {
        let names = names
            .iter()
            .map(crate::binder::table_name)
            .collect::<Result<Vec<_>>>()?;
        let mut attempt = 0;
        loop {
            let outcome: Result<Option<u64>> = async {
                let mut txn = self.store.begin(None).await?;
                for name in &names {
                    if catalog::get_table(txn.as_mut(), name).await?.is_some() {
                        catalog::delete_table(txn.as_mut(), name);
                    } else if !if_exists {
                        txn.rollback().await;
                        return Err(SqlError::UndefinedTable(name.clone()));
                    }
                }
                Ok(txn.commit().await?)
            }
            .await;
            match outcome {
                Err(e) if e.is_retryable() && attempt < MAX_AUTOCOMMIT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(retry_backoff(attempt)).await;
                }
                Err(e) => return Err(e),
                Ok(ts) => {
                    if ts.is_some() {
                        self.last_commit_ts = ts;
                    }
                    return Ok(StatementResult::command(CommandTag::DropTable));
                }
            }
        }
    }

    // ---- SHOW and SET ----

    async fn show_tables(&mut self) -> Result<StatementResult> {
        let mut txn = self.store.begin(None).await?;
        let tables = catalog::list_tables(txn.as_mut()).await;
        txn.rollback().await;
        let rows: Vec<Row> = tables?
            .into_iter()
            .map(|t| vec![Datum::Text(t.name)])
            .collect();
        Ok(StatementResult {
            columns: Some(vec![OutputColumn::new("table_name", DataType::Text)]),
            tag: CommandTag::Select(rows.len()),
            rows,
        })
    }

    fn show(&self, name: &str) -> Result<StatementResult> {
        let value = if name == "commit_timestamp" {
            let ts = self.last_commit_ts.ok_or_else(|| {
                SqlError::ObjectNotInPrerequisiteState(
                    "no transaction has committed in this session yet".into(),
                )
            })?;
            Datum::Int(i64::try_from(ts).map_err(|_| SqlError::NumericOutOfRange("bigint".into()))?)
        } else {
            Datum::Text(self.setting(name)?)
        };
        Ok(StatementResult {
            columns: Some(vec![show_column(name)]),
            rows: vec![vec![value]],
            tag: CommandTag::Show,
        })
    }

    fn setting(&self, name: &str) -> Result<String> {
        if let Some(value) = self.settings.get(name) {
            return Ok(value.clone());
        }
        let value = match name {
            "server_version" => "16.0",
            "server_version_num" => "160000",
            "server_encoding" | "client_encoding" => "UTF8",
            "transaction_isolation"
            | "transaction isolation level"
            | "default_transaction_isolation" => "serializable",
            "datestyle" => "ISO, MDY",
            "timezone" => "UTC",
            "intervalstyle" => "postgres",
            "search_path" => "public",
            "standard_conforming_strings" | "integer_datetimes" | "is_superuser" => "on",
            "default_transaction_read_only" | "transaction_read_only" => "off",
            "extra_float_digits" => "1",
            "application_name" => "",
            "bytea_output" => "hex",
            "max_identifier_length" => "63",
            "client_min_messages" => "notice",
            "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
            _ if is_known_setting(name) => "",
            _ => return Err(SqlError::UndefinedParameter(name.to_string())),
        };
        Ok(value.to_string())
    }

    fn set(&mut self, set: &ast::Set) -> Result<StatementResult> {
        match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                let value = values
                    .iter()
                    .map(setting_value)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.set_variable(&name, value)?;
            }
            ast::Set::SetTimeZone { value, .. } => {
                self.set_variable("timezone", setting_value(value))?;
            }
            // SET NAMES, SET TRANSACTION ISOLATION LEVEL ...: we only speak UTF-8 and every
            // transaction is serializable (which any requested level permits).
            ast::Set::SetNames { .. }
            | ast::Set::SetNamesDefault {}
            | ast::Set::SetTransaction { .. } => {}
            other => return Err(SqlError::unsupported(format!("{other}"))),
        }
        Ok(StatementResult::command(CommandTag::Set))
    }

    fn set_variable(&mut self, name: &str, value: String) -> Result<()> {
        if !is_known_setting(name) {
            return Err(SqlError::UndefinedParameter(name.to_string()));
        }
        let lower = value.to_lowercase();
        let accepted = match name {
            "client_encoding" => matches!(lower.as_str(), "utf8" | "utf-8" | "unicode"),
            "bytea_output" => lower == "hex",
            "standard_conforming_strings" => matches!(lower.as_str(), "on" | "true"),
            _ => true,
        };
        if !accepted {
            return Err(SqlError::unsupported(format!("{name} = {value}")));
        }
        self.settings.insert(name.to_string(), value);
        Ok(())
    }
}

/// Settings clients commonly set; we accept them (and echo them in SHOW) but they change
/// nothing.
fn is_known_setting(name: &str) -> bool {
    matches!(
        name,
        "client_encoding"
            | "application_name"
            | "extra_float_digits"
            | "datestyle"
            | "search_path"
            | "timezone"
            | "time zone"
            | "statement_timeout"
            | "lock_timeout"
            | "idle_in_transaction_session_timeout"
            | "intervalstyle"
            | "standard_conforming_strings"
            | "client_min_messages"
            | "bytea_output"
            | "default_transaction_isolation"
            | "transaction_isolation"
            | "default_transaction_read_only"
            | "synchronous_commit"
            | "row_security"
            | "escape_string_warning"
            | "jit"
            | "geqo"
            | "enable_seqscan"
            | "work_mem"
            | "max_parallel_workers_per_gather"
    )
}

fn setting_value(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

fn variable_name(parts: &[ast::Ident]) -> String {
    parts
        .iter()
        .map(|p| p.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn show_column(name: &str) -> OutputColumn {
    if name == "commit_timestamp" {
        OutputColumn::new("commit_timestamp", DataType::Int8)
    } else {
        OutputColumn::new(name.replace(' ', "_"), DataType::Text)
    }
}

/// Binds, optimizes and runs a query or DML statement inside `txn`.
async fn run_statement(
    store: &dyn Store,
    txn: &mut dyn Transaction,
    stmt: &ast::Statement,
    params: &[Datum],
    param_types: &[DataType],
) -> Result<StatementResult> {
    let tables = read_tables(store, &referenced_tables(stmt)?).await?;
    let bound = bind_statement(stmt, &tables, param_types)?;
    if params.len() < bound.param_types.len() {
        return Err(SqlError::ProtocolViolation(format!(
            "bind message supplies {} parameters, but the statement requires {}",
            params.len(),
            bound.param_types.len()
        )));
    }
    let params = params
        .iter()
        .zip(&bound.param_types)
        .map(|(value, ty)| coerce_param(value.clone(), *ty))
        .collect::<Result<Vec<_>>>()?;
    let plan = optimize(bound.plan);
    let output = execute(&plan, txn, &params).await?;
    let tag = match bound.kind {
        crate::binder::StatementKind::Select => CommandTag::Select(output.count),
        crate::binder::StatementKind::Insert => CommandTag::Insert(output.count),
        crate::binder::StatementKind::Update => CommandTag::Update(output.count),
        crate::binder::StatementKind::Delete => CommandTag::Delete(output.count),
    };
    Ok(StatementResult {
        columns: bound.columns,
        rows: output.rows,
        tag,
    })
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

/// Randomized exponential backoff: about 1, 2, 4, … ms, at most ~100 ms, times 0.5–1.5.
fn retry_backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base_us = 1000u64 << attempt.min(7);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % 1000; // 0..1000 per mille
    Duration::from_micros(base_us.min(100_000) * (500 + jitter) / 1000)
}
