//! Binding INSERT, UPDATE and DELETE.
//!
//! Values assigned to columns are typed from the column (so `'5'` and `$1` become the column's
//! type) and checked for assignability (42804, e.g. a boolean into an INT column); NOT NULL,
//! primary key uniqueness and range checks happen when rows are written.

use std::sync::Arc;

use sqlparser::ast;

use super::expr::{check_assignable, output_name, ExprContext};
use super::{ident_name, Binder, Scope};
use crate::catalog::TableDesc;
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::plan::{OutputColumn, Plan};
use crate::types::DataType;

/// A bound RETURNING clause: expressions over the written row, and their columns.
type Returning = (Option<Vec<ScalarExpr>>, Option<Vec<OutputColumn>>);

impl Binder<'_> {
    pub(super) fn bind_insert(
        &mut self,
        insert: &ast::Insert,
    ) -> Result<(Plan, Option<Vec<OutputColumn>>)> {
        if insert.or.is_some() || insert.ignore || insert.overwrite || insert.replace_into {
            return Err(SqlError::unsupported(
                "INSERT OR / IGNORE / OVERWRITE / REPLACE",
            ));
        }
        if insert.on.is_some() {
            return Err(SqlError::unsupported("ON CONFLICT"));
        }
        if !insert.assignments.is_empty()
            || insert.partitioned.is_some()
            || !insert.after_columns.is_empty()
            || insert.priority.is_some()
            || insert.insert_alias.is_some()
            || insert.settings.is_some()
            || insert.format_clause.is_some()
            || insert.output.is_some()
            || insert.multi_table_insert_type.is_some()
        {
            return Err(SqlError::unsupported("this INSERT syntax"));
        }
        let ast::TableObject::TableName(name) = &insert.table else {
            return Err(SqlError::unsupported("INSERT INTO a table function"));
        };
        let table = self.table(name)?;
        let qualifier = match &insert.table_alias {
            Some(alias) => ident_name(&alias.alias),
            None => table.name.clone(),
        };

        // Target columns: the listed ones, else every visible column.
        let explicit = !insert.columns.is_empty();
        let mut targets: Vec<usize> = Vec::new();
        if explicit {
            for column in &insert.columns {
                let name = column
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(ident_name)
                    .ok_or_else(|| SqlError::Syntax(format!("bad column name {column}")))?;
                let index = table.column_index(&name).ok_or_else(|| {
                    SqlError::UndefinedColumn(format!("{name} of relation {}", table.name))
                })?;
                if targets.contains(&index) {
                    return Err(SqlError::DuplicateColumn(name));
                }
                targets.push(index);
            }
        } else {
            targets = (0..table.columns.len())
                .filter(|&i| table.columns.get(i).is_some_and(|c| !c.hidden))
                .collect();
        }
        let target_types: Vec<(DataType, String)> = targets
            .iter()
            .filter_map(|&i| table.columns.get(i).map(|c| (c.data_type, c.name.clone())))
            .collect();

        let Some(source) = &insert.source else {
            return Err(SqlError::unsupported("DEFAULT VALUES"));
        };
        let (source_plan, source_columns) = match source.body.as_ref() {
            ast::SetExpr::Values(values)
                if source.order_by.is_none() && source.limit_clause.is_none() =>
            {
                self.bind_values(values, &target_types)?
            }
            _ => self.bind_query(source)?,
        };
        if source_columns.len() > targets.len() {
            return Err(SqlError::Syntax(
                "INSERT has more expressions than target columns".into(),
            ));
        }
        if explicit && source_columns.len() < targets.len() {
            return Err(SqlError::Syntax(
                "INSERT has more target columns than expressions".into(),
            ));
        }
        targets.truncate(source_columns.len());
        for (column, &target) in source_columns.iter().zip(&targets) {
            let desc = table
                .columns
                .get(target)
                .ok_or_else(|| SqlError::Internal("target column out of range".into()))?;
            check_assignable(column.data_type, desc.data_type, &desc.name)?;
        }

        let scope = Scope::for_table(&table, &qualifier);
        let (returning, columns) = self.bind_returning(insert.returning.as_deref(), &scope)?;
        let plan = Plan::Insert {
            table,
            columns: targets,
            source_types: source_columns.iter().map(|c| c.data_type).collect(),
            source: Box::new(source_plan),
            returning,
        };
        Ok((plan, columns))
    }

    pub(super) fn bind_update(
        &mut self,
        update: &ast::Update,
    ) -> Result<(Plan, Option<Vec<OutputColumn>>)> {
        if update.from.is_some() {
            return Err(SqlError::unsupported("UPDATE ... FROM"));
        }
        if update.or.is_some()
            || !update.order_by.is_empty()
            || update.limit.is_some()
            || update.output.is_some()
        {
            return Err(SqlError::unsupported("this UPDATE syntax"));
        }
        if !update.table.joins.is_empty() {
            return Err(SqlError::unsupported("joins in UPDATE"));
        }
        let (table, scope) = self.bind_table_factor(&update.table.relation)?;
        let cx = ExprContext::no_aggregates(&scope, "UPDATE");
        let mut assignments: Vec<(usize, ScalarExpr)> = Vec::new();
        for assignment in &update.assignments {
            let ast::AssignmentTarget::ColumnName(column) = &assignment.target else {
                return Err(SqlError::unsupported("multiple-column assignment"));
            };
            let name = column
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(ident_name)
                .ok_or_else(|| SqlError::Syntax(format!("bad column name {column}")))?;
            let index = table.column_index(&name).ok_or_else(|| {
                SqlError::UndefinedColumn(format!("{name} of relation {}", table.name))
            })?;
            if assignments.iter().any(|(i, _)| *i == index) {
                return Err(SqlError::DuplicateColumn(name));
            }
            let desc = table
                .columns
                .get(index)
                .ok_or_else(|| SqlError::Internal("column out of range".into()))?;
            let value = self.bind_expr_as(&assignment.value, &cx, desc.data_type)?;
            check_assignable(value.data_type(), desc.data_type, &desc.name)?;
            assignments.push((index, value));
        }
        let source = self.filtered_scan(&table, &scope, update.selection.as_ref())?;
        let (returning, columns) = self.bind_returning(update.returning.as_deref(), &scope)?;
        let plan = Plan::Update {
            table,
            source: Box::new(source),
            assignments,
            returning,
        };
        Ok((plan, columns))
    }

    pub(super) fn bind_delete(
        &mut self,
        delete: &ast::Delete,
    ) -> Result<(Plan, Option<Vec<OutputColumn>>)> {
        if !delete.tables.is_empty() || delete.using.is_some() {
            return Err(SqlError::unsupported("multi-table DELETE / USING"));
        }
        if !delete.order_by.is_empty() || delete.limit.is_some() || delete.output.is_some() {
            return Err(SqlError::unsupported("this DELETE syntax"));
        }
        let from = match &delete.from {
            ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from) => from,
        };
        let [from] = from.as_slice() else {
            return Err(SqlError::unsupported("DELETE from several tables"));
        };
        if !from.joins.is_empty() {
            return Err(SqlError::unsupported("joins in DELETE"));
        }
        let (table, scope) = self.bind_table_factor(&from.relation)?;
        let source = self.filtered_scan(&table, &scope, delete.selection.as_ref())?;
        let (returning, columns) = self.bind_returning(delete.returning.as_deref(), &scope)?;
        let plan = Plan::Delete {
            table,
            source: Box::new(source),
            returning,
        };
        Ok((plan, columns))
    }

    /// A scan of `table` filtered by `selection` (the optimizer turns the filter into key
    /// bounds).
    fn filtered_scan(
        &mut self,
        table: &Arc<TableDesc>,
        scope: &Scope,
        selection: Option<&ast::Expr>,
    ) -> Result<Plan> {
        let scan = Plan::Scan {
            table: table.clone(),
            bounds: Default::default(),
            filter: None,
        };
        let Some(selection) = selection else {
            return Ok(scan);
        };
        let cx = ExprContext::no_aggregates(scope, "WHERE");
        let predicate = self.bind_predicate(selection, &cx, "WHERE")?;
        Ok(Plan::Filter {
            input: Box::new(scan),
            predicate,
        })
    }

    fn bind_returning(
        &mut self,
        items: Option<&[ast::SelectItem]>,
        scope: &Scope,
    ) -> Result<Returning> {
        let Some(items) = items else {
            return Ok((None, None));
        };
        let cx = ExprContext::no_aggregates(scope, "RETURNING");
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for item in items {
            let (expr, name) = match item {
                ast::SelectItem::Wildcard(_) => {
                    for (index, c) in scope.columns.iter().enumerate().filter(|(_, c)| !c.hidden) {
                        exprs.push(ScalarExpr::Column {
                            index,
                            ty: c.ty,
                            name: c.name.clone(),
                        });
                        columns.push(OutputColumn::new(c.name.clone(), c.ty));
                    }
                    continue;
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    (self.bind_expr_as(e, &cx, DataType::Text)?, output_name(e))
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => (
                    self.bind_expr_as(expr, &cx, DataType::Text)?,
                    ident_name(alias),
                ),
                _ => return Err(SqlError::unsupported("this RETURNING item")),
            };
            columns.push(OutputColumn::new(name, expr.data_type().or_text()));
            exprs.push(expr);
        }
        Ok((Some(exprs), Some(columns)))
    }
}
