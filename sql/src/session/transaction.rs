//! Transaction control (BEGIN, COMMIT, ROLLBACK, SET TRANSACTION) and running queries and DML
//! in the right kind of storage transaction: the explicit one, or an autocommit read-only or
//! read-write one with retries. See the module doc of [`super`] for the rules.

use sqlparser::ast;

use super::{
    retry_backoff, run_statement, Access, CommandTag, Env, OpenTxn, Session, StatementResult,
    TxnState, MAX_AUTOCOMMIT_RETRIES,
};
use crate::error::{Result, SqlError};
use crate::executor::stream::RowSink;
use crate::prepared::PlanCache;
use crate::timestamp::AsOf;
use crate::types::{DataType, Datum};
use meridian_kv::{ReadBound, Txn};

/// The access mode a list of transaction modes asks for, if any (the last one wins, as in
/// PostgreSQL). Isolation levels are accepted and ignored: every transaction is serializable,
/// which any requested level permits.
pub(super) fn requested_access(modes: &[ast::TransactionMode]) -> Option<Access> {
    modes.iter().rev().find_map(|mode| match mode {
        ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadOnly) => {
            Some(Access::ReadOnly)
        }
        ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadWrite) => {
            Some(Access::ReadWrite)
        }
        ast::TransactionMode::IsolationLevel(_) => None,
    })
}

/// What a statement writes or locks, named for the 25006 message; `None` for a plain query.
fn write_kind(stmt: &ast::Statement) -> Option<&'static str> {
    fn query_locks(q: &ast::Query) -> Option<&'static str> {
        if let Some(lock) = q.locks.first() {
            return Some(match lock.lock_type {
                ast::LockType::Update => "SELECT FOR UPDATE",
                ast::LockType::Share => "SELECT FOR SHARE",
            });
        }
        match q.body.as_ref() {
            ast::SetExpr::Query(inner) => query_locks(inner),
            _ => None,
        }
    }
    match stmt {
        ast::Statement::Insert(_) => Some("INSERT"),
        ast::Statement::Update(_) => Some("UPDATE"),
        ast::Statement::Delete(_) => Some("DELETE"),
        ast::Statement::Query(q) => query_locks(q),
        _ => None,
    }
}

impl Session {
    pub(super) async fn begin(
        &mut self,
        modes: &[ast::TransactionMode],
        as_of: Option<AsOf>,
    ) -> Result<StatementResult> {
        if !matches!(self.txn, TxnState::Idle) {
            // BEGIN inside a transaction only warns in PostgreSQL.
            return Ok(StatementResult::command(CommandTag::Begin));
        }
        let access = match (requested_access(modes), as_of) {
            (Some(Access::ReadWrite), Some(_)) => {
                return Err(SqlError::unsupported(
                    "AS OF SYSTEM TIME in a READ WRITE transaction",
                ))
            }
            (_, Some(_)) => Access::ReadOnly,
            (Some(access), None) => access,
            (None, None) if self.default_read_only => Access::ReadOnly,
            (None, None) => Access::ReadWrite,
        };
        let txn = self.start(access, as_of).await?;
        self.txn = TxnState::Open(OpenTxn {
            txn,
            access,
            as_of,
            queried: false,
        });
        Ok(StatementResult::command(CommandTag::Begin))
    }

    /// Starts a storage transaction of the given kind for an explicit transaction.
    async fn start(&mut self, access: Access, as_of: Option<AsOf>) -> Result<Txn> {
        Ok(match access {
            Access::ReadWrite => {
                let priority = self.retry_priority.take();
                Txn::from(self.store.begin(priority))
            }
            Access::ReadOnly => {
                let bound = as_of.map_or_else(|| self.default_read_bound(), AsOf::bound);
                Txn::from(self.store.begin_read_only(bound))
            }
        })
    }

    pub(super) async fn commit(&mut self) -> Result<StatementResult> {
        match std::mem::replace(&mut self.txn, TxnState::Idle) {
            TxnState::Idle => Ok(StatementResult::command(CommandTag::Commit)),
            TxnState::Failed => Ok(StatementResult::command(CommandTag::Rollback)),
            TxnState::Open(mut open) => {
                match open.txn.commit().await {
                    Ok(Some(ts)) => self.last_commit_ts = Some(ts),
                    Ok(None) => {}
                    Err(e) => {
                        let e = self.kv_error(e);
                        if e.is_retryable() {
                            self.retry_priority = Some(open.txn.priority());
                        }
                        return Err(e);
                    }
                }
                Ok(StatementResult::command(CommandTag::Commit))
            }
        }
    }

    /// A KV error as the client should see it: an insert's duplicate key names its table.
    fn kv_error(&self, e: meridian_kv::Error) -> SqlError {
        if let meridian_kv::Error::KeyExists { key } = &e {
            let name = meridian_common::keys::table_of(key)
                .and_then(|t| self.schema.cached_table_name(t.0));
            if let Some(table) = name {
                return SqlError::UniqueViolation { table };
            }
        }
        SqlError::from(e)
    }

    pub(super) async fn rollback(&mut self) -> Result<StatementResult> {
        if let TxnState::Open(mut open) = std::mem::replace(&mut self.txn, TxnState::Idle) {
            open.txn.rollback().await;
        }
        Ok(StatementResult::command(CommandTag::Rollback))
    }

    /// `SET TRANSACTION READ ONLY | READ WRITE` (or `SET transaction_read_only`): changes the
    /// open transaction's mode before its first query by replacing its (unused) storage
    /// transaction. Outside a transaction block it does nothing, as in PostgreSQL (which
    /// warns).
    pub(super) async fn set_transaction_access(&mut self, access: Access) -> Result<()> {
        let (current, as_of, queried) = match &self.txn {
            TxnState::Open(open) => (open.access, open.as_of, open.queried),
            _ => return Ok(()),
        };
        if current == access {
            return Ok(());
        }
        let mode = match access {
            Access::ReadOnly => "READ ONLY",
            Access::ReadWrite => "READ WRITE",
        };
        if queried {
            return Err(SqlError::ActiveTransaction(format!(
                "SET TRANSACTION {mode} must be called before any query"
            )));
        }
        if as_of.is_some() {
            return Err(SqlError::unsupported(
                "AS OF SYSTEM TIME in a READ WRITE transaction",
            ));
        }
        let txn = self.start(access, None).await?;
        if let TxnState::Open(open) = &mut self.txn {
            let mut old = std::mem::replace(&mut open.txn, txn);
            old.rollback().await;
            open.access = access;
        }
        Ok(())
    }

    // ---- queries and DML ----

    pub(super) async fn run_dml(
        &mut self,
        stmt: &ast::Statement,
        plan: &PlanCache,
        as_of: Option<AsOf>,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let write = write_kind(stmt);
        if let Some(as_of) = as_of {
            if write.is_some() {
                return Err(SqlError::unsupported(
                    "AS OF SYSTEM TIME with FOR UPDATE or FOR SHARE",
                ));
            }
            if !matches!(self.txn, TxnState::Idle) {
                return Err(SqlError::ActiveTransaction(
                    "AS OF SYSTEM TIME cannot be used on a SELECT inside a transaction block; \
                     use BEGIN READ ONLY AS OF SYSTEM TIME … instead"
                        .into(),
                ));
            }
            return self
                .autocommit(stmt, plan, Some(as_of.bound()), params, param_types)
                .await;
        }
        if let TxnState::Open(open) = &mut self.txn {
            if open.access == Access::ReadOnly {
                if let Some(what) = write {
                    return Err(SqlError::ReadOnlyTransaction(what.into()));
                }
            }
            open.queried = true;
            let env = Env {
                schema: &self.schema,
                user: &self.user,
                max_result_bytes: self.max_result_bytes,
                sink: self.row_sink.as_ref(),
            };
            let result = run_statement(&env, plan, &mut open.txn, stmt, params, param_types).await;
            if open.access == Access::ReadOnly {
                if let Some(ts) = open.txn.read_ts() {
                    self.last_read_ts = Some(ts);
                }
            }
            return result;
        }
        match write {
            None => {
                let bound = self.default_read_bound();
                self.autocommit(stmt, plan, Some(bound), params, param_types)
                    .await
            }
            Some(what) if self.default_read_only => Err(SqlError::ReadOnlyTransaction(what.into())),
            Some(_) => self.autocommit(stmt, plan, None, params, param_types).await,
        }
    }

    /// Runs `stmt` in a transaction of its own: read-only at `read_only` if given, else
    /// read-write. Conflicts are retried (see the module doc of [`super`]).
    async fn autocommit(
        &mut self,
        stmt: &ast::Statement,
        plan: &PlanCache,
        read_only: Option<ReadBound>,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let mut attempt = 0;
        // Retries keep the first attempt's priority (wound-wait: they cannot starve).
        let mut priority = match read_only {
            Some(_) => None,
            None => self.retry_priority.take(),
        };
        loop {
            let outcome = async {
                let mut txn = match read_only {
                    Some(bound) => Txn::from(self.store.begin_read_only(bound)),
                    None => {
                        let txn = Txn::from(self.store.begin(priority));
                        priority = Some(txn.priority());
                        txn
                    }
                };
                let env = Env {
                    schema: &self.schema,
                    user: &self.user,
                    max_result_bytes: self.max_result_bytes,
                    sink: self.row_sink.as_ref(),
                };
                match run_statement(&env, plan, &mut txn, stmt, params, param_types).await {
                    Ok(result) => {
                        let committed = txn.commit().await.map_err(|e| self.kv_error(e))?;
                        if read_only.is_some() {
                            if let Some(ts) = txn.read_ts() {
                                self.last_read_ts = Some(ts);
                            }
                        }
                        if let Some(ts) = committed {
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
                // Rows already sent cannot be taken back: such a statement is not retried.
                Err(e)
                    if e.is_retryable()
                        && attempt < MAX_AUTOCOMMIT_RETRIES
                        && !self.row_sink.as_ref().is_some_and(RowSink::used) =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying autocommit statement");
                    tokio::time::sleep(retry_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}
