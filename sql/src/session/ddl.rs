//! DDL: CREATE TABLE and DROP TABLE (catalog writes in transactions of their own, retried on
//! conflict) and ALTER TABLE … SPLIT AT (a placement request through the KV client). The session has
//! already refused them inside explicit and read-only transactions.

use std::sync::Arc;

use sqlparser::ast;

use super::{coerce_params, CommandTag, Session, StatementResult};
use crate::binder::{bind_create_table, bind_split_points, table_name, BoundSplitPoints};
use crate::catalog::{self, TableDesc};
use crate::encoding::encode_key_datum;
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::schema::{self, SchemaCache};
use crate::types::{DataType, Datum};

/// Reads `table`'s descriptor and binds the split points of `ALTER TABLE table SPLIT AT
/// values` against its primary key.
pub(super) async fn bind_split_at(
    schema: &SchemaCache,
    table: &ast::ObjectName,
    values: &ast::Values,
    param_types: &[DataType],
) -> Result<(Arc<TableDesc>, BoundSplitPoints)> {
    let name = table_name(table)?;
    let (tables, _) = schema.tables(std::slice::from_ref(&name)).await?;
    let desc = tables
        .get(&name)
        .cloned()
        .flatten()
        .ok_or(SqlError::UndefinedTable(name))?;
    let bound = bind_split_points(&desc, values, param_types)?;
    Ok((desc, bound))
}

/// The storage key of each split point: the table's primary index prefix followed by the
/// point's values in the key encoding rows use ([`crate::encoding`]), so a point naming a whole
/// primary key equals the key of the row with that primary key, and a shorter one is a prefix
/// of the keys of the rows that start with it.
fn split_keys(
    table: &TableDesc,
    rows: &[Vec<ScalarExpr>],
    params: &[Datum],
) -> Result<Vec<Vec<u8>>> {
    rows.iter()
        .map(|row| {
            let mut key = table.primary_prefix();
            for (e, &column) in row.iter().zip(&table.primary_key) {
                let value = e.eval(&[], params)?;
                if value.is_null() {
                    return Err(SqlError::NotNullViolation {
                        table: table.name.clone(),
                        column: table
                            .columns
                            .get(column)
                            .map_or_else(String::new, |c| c.name.clone()),
                    });
                }
                encode_key_datum(&mut key, &value)?;
            }
            Ok(key)
        })
        .collect()
}

impl Session {
    /// `ALTER TABLE t SPLIT AT VALUES …`: asks the placement driver to start a tablet at each point's key.
    /// Splitting is idempotent, so a retryable failure is simply retried.
    pub(super) async fn split_at(
        &mut self,
        table: &ast::ObjectName,
        values: &ast::Values,
        params: &[Datum],
        param_types: &[DataType],
    ) -> Result<StatementResult> {
        let (desc, bound) = bind_split_at(&self.schema, table, values, param_types).await?;
        let params = coerce_params(params, &bound.param_types)?;
        let keys = split_keys(&desc, &bound.rows, &params)?;
        let store = self.store.clone();
        super::retrying(|| async { Ok(store.split_at(keys.clone()).await?) }).await?;
        Ok(StatementResult::command(CommandTag::AlterTable))
    }

    pub(super) async fn create_table(
        &mut self,
        create: &ast::CreateTable,
    ) -> Result<StatementResult> {
        let (desc, if_not_exists) = bind_create_table(create)?;
        // The table id is allocated once; a retried attempt reuses it.
        let id = parking_lot::Mutex::new(None);
        let store = self.store.clone();
        let ts = super::retrying(|| async {
            let mut txn = meridian_kv::Txn::from(store.begin(None));
            if catalog::get_table(&mut txn, &desc.name).await?.is_some() {
                txn.rollback().await;
                return if if_not_exists {
                    Ok(None)
                } else {
                    Err(SqlError::DuplicateTable(desc.name.clone()))
                };
            }
            let known = *id.lock();
            let table_id = match known {
                Some(table_id) => table_id,
                None => {
                    let table_id = store.create_table_range().await?;
                    *id.lock() = Some(table_id);
                    table_id
                }
            };
            let mut desc = desc.clone();
            desc.id = table_id.0;
            catalog::put_table(&mut txn, &desc)?;
            schema::bump_version(&mut txn).await?;
            Ok(txn.commit().await?)
        })
        .await?;
        self.after_ddl(ts).await;
        Ok(StatementResult::command(CommandTag::CreateTable))
    }

    /// Drops tables by deleting their descriptors. Their rows stay in storage, unreachable
    /// (table ids are never reused), until range garbage collection exists.
    pub(super) async fn drop_tables(
        &mut self,
        names: &[ast::ObjectName],
        if_exists: bool,
    ) -> Result<StatementResult> {
        let names = names.iter().map(table_name).collect::<Result<Vec<_>>>()?;
        let store = self.store.clone();
        let ts = super::retrying(|| async {
            let mut txn = meridian_kv::Txn::from(store.begin(None));
            let mut dropped = false;
            for name in &names {
                if catalog::get_table(&mut txn, name).await?.is_some() {
                    catalog::delete_table(&mut txn, name)?;
                    // Its grants go too: a new table of the same name starts without them.
                    let (_, grants) = crate::users::list(&mut txn).await?;
                    for g in grants.iter().filter(|g| &g.table == name) {
                        crate::users::put_grant(
                            &mut txn,
                            &g.user,
                            name,
                            crate::users::Privileges::default(),
                        )?;
                    }
                    dropped = true;
                } else if !if_exists {
                    txn.rollback().await;
                    return Err(SqlError::UndefinedTable(name.clone()));
                }
            }
            if dropped {
                schema::bump_version(&mut txn).await?;
            }
            Ok(txn.commit().await?)
        })
        .await?;
        self.after_ddl(ts).await;
        Ok(StatementResult::command(CommandTag::DropTable))
    }

    /// After a DDL transaction that committed at `ts` (`None`: it wrote nothing): records the
    /// commit timestamp and waits out every gateway's schema lease. Even a DDL that changed
    /// nothing waits: it may have seen a change whose own DDL has not returned yet, and its
    /// client may rely on it everywhere.
    pub(super) async fn after_ddl(&mut self, ts: Option<u64>) {
        if let Some(ts) = ts {
            self.last_commit_ts = Some(ts);
        }
        let seen = ts.unwrap_or_else(|| self.store.clock().now().latest.0);
        self.schema.wait_out_leases(seen).await;
    }
}
