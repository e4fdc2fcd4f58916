//! The binder: resolves a parsed statement's names and types against the catalog and builds
//! its logical [`Plan`].
//!
//! Binding is pure: the session first reads the descriptors the statement names
//! ([`referenced_tables`], [`crate::schema::SchemaCache::tables`]) and hands them in as a
//! [`TableSet`], so this module does no I/O. It
//!
//! - resolves table and column names (unquoted identifiers fold to lower case),
//! - types every expression, giving untyped literals (`'abc'`, `NULL`) and untyped parameters
//!   (`$1`) the type their context demands — a parameter compared to or assigned to a column
//!   takes the column's type, anything left over becomes TEXT — so prepared statements can
//!   report parameter types,
//! - rejects type errors up front (42804, 42883) and anything we do not support (0A000, naming
//!   the feature),
//! - builds the plan: scans with the WHERE clause as a filter (the optimizer turns it into key
//!   bounds), hash aggregation, projection, sort and limit.
//!
//! Submodules: `expr` binds scalar expressions, `query` binds SELECT and VALUES, `dml` binds
//! INSERT, UPDATE and DELETE, `ddl` turns CREATE TABLE into a descriptor and binds the split
//! points of ALTER TABLE … SPLIT AT.

mod ddl;
mod dml;
mod expr;
mod query;

use std::sync::Arc;

use sqlparser::ast;

pub use ddl::{bind_create_table, bind_split_points, convert_data_type, BoundSplitPoints};

use crate::catalog::{TableDesc, TableSet};
use crate::error::{Result, SqlError};
use crate::plan::{OutputColumn, Plan};
use crate::types::DataType;

/// What kind of row-producing or row-changing statement was bound (for command tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT or VALUES.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

/// A bound query or DML statement, ready to optimize and run.
#[derive(Debug, Clone)]
pub struct BoundStatement {
    /// What the statement is.
    pub kind: StatementKind,
    /// The logical plan.
    pub plan: Plan,
    /// The result columns if the statement returns rows (SELECT, or DML with RETURNING).
    pub columns: Option<Vec<OutputColumn>>,
    /// The type of each parameter `$1..$n`.
    pub param_types: Vec<DataType>,
}

/// Binds `stmt` (a query, INSERT, UPDATE or DELETE) against `tables`. `param_types` holds the
/// types the client declared for the parameters ([`DataType::Unknown`] where it did not).
pub fn bind_statement(
    stmt: &ast::Statement,
    tables: &TableSet,
    param_types: &[DataType],
) -> Result<BoundStatement> {
    let mut binder = Binder {
        tables,
        params: param_types.to_vec(),
    };
    let (kind, plan, columns) = match stmt {
        ast::Statement::Query(q) => {
            let (plan, columns) = binder.bind_query(q)?;
            (StatementKind::Select, plan, Some(columns))
        }
        ast::Statement::Insert(insert) => {
            let (plan, columns) = binder.bind_insert(insert)?;
            (StatementKind::Insert, plan, columns)
        }
        ast::Statement::Update(update) => {
            let (plan, columns) = binder.bind_update(update)?;
            (StatementKind::Update, plan, columns)
        }
        ast::Statement::Delete(delete) => {
            let (plan, columns) = binder.bind_delete(delete)?;
            (StatementKind::Delete, plan, columns)
        }
        other => {
            return Err(SqlError::Internal(format!(
                "bind_statement called on {}",
                statement_name(other)
            )))
        }
    };
    Ok(BoundStatement {
        kind,
        plan,
        columns,
        param_types: binder.params.iter().map(|t| t.or_text()).collect(),
    })
}

/// The tables a query or DML statement reads or writes, so the session can fetch their
/// descriptors before binding.
pub fn referenced_tables(stmt: &ast::Statement) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match stmt {
        ast::Statement::Query(q) => query_tables(q, &mut names)?,
        ast::Statement::Insert(insert) => {
            if let ast::TableObject::TableName(name) = &insert.table {
                names.push(table_name(name)?);
            }
            if let Some(source) = &insert.source {
                query_tables(source, &mut names)?;
            }
        }
        ast::Statement::Update(update) => {
            from_tables(std::slice::from_ref(&update.table), &mut names)?
        }
        ast::Statement::Delete(delete) => match &delete.from {
            ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from) => {
                from_tables(from, &mut names)?
            }
        },
        _ => {}
    }
    names.dedup();
    Ok(names)
}

fn query_tables(q: &ast::Query, names: &mut Vec<String>) -> Result<()> {
    if let ast::SetExpr::Select(select) = q.body.as_ref() {
        from_tables(&select.from, names)?;
    }
    Ok(())
}

fn from_tables(from: &[ast::TableWithJoins], names: &mut Vec<String>) -> Result<()> {
    for twj in from {
        if let ast::TableFactor::Table { name, .. } = &twj.relation {
            names.push(table_name(name)?);
        }
    }
    Ok(())
}

/// A short name for a statement type, for messages.
pub fn statement_name(stmt: &ast::Statement) -> String {
    let text = stmt.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// The name an identifier denotes: folded to lower case unless quoted.
pub fn ident_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The table a possibly schema-qualified name denotes. Only the `public` schema exists;
/// `pg_catalog` and `information_schema` are not implemented.
pub fn table_name(name: &ast::ObjectName) -> Result<String> {
    let parts = name
        .0
        .iter()
        .map(|part| match part {
            ast::ObjectNamePart::Identifier(id) => Ok(ident_name(id)),
            ast::ObjectNamePart::Function(_) => {
                Err(SqlError::unsupported(format!("table name {name}")))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == "public" => Ok(table.clone()),
        [schema, _] if schema == "pg_catalog" || schema == "information_schema" => Err(
            SqlError::unsupported(format!("the system catalog {schema}")),
        ),
        _ => Err(SqlError::unsupported(format!(
            "schemas other than public (in {name})"
        ))),
    }
}

/// One column visible to expressions: a table column or a query output.
#[derive(Debug, Clone)]
struct ScopeColumn {
    /// The table name or alias that qualifies it, if any.
    qualifier: Option<String>,
    name: String,
    ty: DataType,
    hidden: bool,
}

/// The columns expressions may reference, in input-row order.
#[derive(Debug, Clone, Default)]
struct Scope {
    columns: Vec<ScopeColumn>,
}

impl Scope {
    fn for_table(table: &TableDesc, qualifier: &str) -> Scope {
        Scope {
            columns: table
                .columns
                .iter()
                .map(|c| ScopeColumn {
                    qualifier: Some(qualifier.to_string()),
                    name: c.name.clone(),
                    ty: c.data_type,
                    hidden: c.hidden,
                })
                .collect(),
        }
    }

    /// Finds a column by name, optionally qualified.
    fn resolve(&self, qualifier: Option<&str>, name: &str) -> Result<(usize, &ScopeColumn)> {
        let mut found = self.columns.iter().enumerate().filter(|(_, c)| {
            c.name == name && qualifier.is_none_or(|q| c.qualifier.as_deref() == Some(q))
        });
        let full_name = || match qualifier {
            Some(q) => format!("{q}.{name}"),
            None => name.to_string(),
        };
        match (found.next(), found.next()) {
            (Some(hit), None) => Ok(hit),
            (Some(_), Some(_)) => Err(SqlError::AmbiguousColumn(full_name())),
            (None, _) => {
                if let Some(q) = qualifier {
                    if !self
                        .columns
                        .iter()
                        .any(|c| c.qualifier.as_deref() == Some(q))
                    {
                        return Err(SqlError::UndefinedTable(format!(
                            "missing FROM-clause entry for table \"{q}\""
                        )));
                    }
                }
                Err(SqlError::UndefinedColumn(full_name()))
            }
        }
    }
}

/// Binding state for one statement.
struct Binder<'a> {
    tables: &'a TableSet,
    /// Types of `$1..$n` so far; `Unknown` until the context decides.
    params: Vec<DataType>,
}

impl Binder<'_> {
    /// The descriptor of the table `name`, or 42P01.
    fn table(&self, name: &ast::ObjectName) -> Result<Arc<TableDesc>> {
        let name = table_name(name)?;
        match self.tables.get(&name) {
            Some(Some(desc)) => Ok(desc.clone()),
            Some(None) => Err(SqlError::UndefinedTable(name)),
            None => Err(SqlError::Internal(format!(
                "table {name} was not read before binding"
            ))),
        }
    }

    /// Resolves a table in a FROM / UPDATE / DELETE position: a plain table with an optional
    /// alias.
    fn bind_table_factor(&self, factor: &ast::TableFactor) -> Result<(Arc<TableDesc>, Scope)> {
        match factor {
            ast::TableFactor::Table {
                name,
                alias,
                args: None,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                ..
            } if with_hints.is_empty() && partitions.is_empty() => {
                let table = self.table(name)?;
                let qualifier = match alias {
                    Some(alias) if !alias.columns.is_empty() => {
                        return Err(SqlError::unsupported("column aliases in FROM"))
                    }
                    Some(alias) => ident_name(&alias.name),
                    None => table.name.clone(),
                };
                let scope = Scope::for_table(&table, &qualifier);
                Ok((table, scope))
            }
            ast::TableFactor::Derived { .. } => Err(SqlError::unsupported("subqueries in FROM")),
            other => Err(SqlError::unsupported(format!("FROM item {other}"))),
        }
    }

    /// A bare `$n` placeholder's zero-based index.
    fn param_index(&mut self, placeholder: &str) -> Result<usize> {
        let n: usize = placeholder
            .strip_prefix('$')
            .and_then(|d| d.parse().ok())
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| SqlError::Syntax(format!("invalid parameter {placeholder}")))?;
        if self.params.len() < n {
            self.params.resize(n, DataType::Unknown);
        }
        Ok(n - 1)
    }
}
