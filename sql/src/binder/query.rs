//! Binding SELECT (and standalone VALUES) into a plan:
//!
//! `Scan | Values` → `Filter` (WHERE) → `Aggregate` + `Filter` (GROUP BY / HAVING) →
//! `Project` (select list, plus any ORDER BY expressions not in it) → `Distinct` → `Sort` →
//! `Limit` → `Project` (dropping the extra ORDER BY columns).

use sqlparser::ast;

use super::expr::{check_assignable, output_name, ExprContext};
use super::{ident_name, Binder, Scope};
use crate::error::{Result, SqlError};
use crate::expr::{AggCall, ScalarExpr};
use crate::plan::{OutputColumn, Plan, SortKey};
use crate::types::{CastKind, DataType};

/// What an ORDER BY item sorts on.
enum OrderTarget {
    /// A select-list column (by name or position).
    Output(usize),
    /// Any other expression over the input.
    Expr(ScalarExpr),
}

impl Binder<'_> {
    /// Binds a query, returning its plan and result columns.
    pub(super) fn bind_query(&mut self, q: &ast::Query) -> Result<(Plan, Vec<OutputColumn>)> {
        if q.with.is_some() {
            return Err(SqlError::unsupported("WITH (common table expressions)"));
        }
        if q.fetch.is_some() || q.for_clause.is_some() {
            return Err(SqlError::unsupported("FETCH and FOR clauses"));
        }
        // FOR UPDATE / FOR SHARE need nothing here: the session runs such a query in a
        // read-write transaction, whose reads lock what they read until commit.
        if q.locks
            .iter()
            .any(|l| l.of.is_some() || l.nonblock.is_some())
        {
            return Err(SqlError::unsupported(
                "FOR UPDATE/SHARE OF, NOWAIT and SKIP LOCKED",
            ));
        }
        if q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(SqlError::unsupported("this query syntax"));
        }
        let order_by = match &q.order_by {
            None => &[][..],
            Some(ast::OrderBy {
                kind: ast::OrderByKind::Expressions(exprs),
                interpolate: None,
            }) => exprs.as_slice(),
            Some(_) => return Err(SqlError::unsupported("ORDER BY ALL / INTERPOLATE")),
        };
        let (limit, offset) = self.bind_limit(q.limit_clause.as_ref())?;
        let (plan, columns) = match q.body.as_ref() {
            ast::SetExpr::Select(select) => self.bind_select(select, order_by)?,
            ast::SetExpr::Values(values) if order_by.is_empty() => self.bind_values(values, &[])?,
            ast::SetExpr::Values(_) => return Err(SqlError::unsupported("ORDER BY on VALUES")),
            ast::SetExpr::Query(inner) if order_by.is_empty() && q.limit_clause.is_none() => {
                return self.bind_query(inner)
            }
            ast::SetExpr::SetOperation { op, .. } => {
                return Err(SqlError::unsupported(format!("{op}")))
            }
            other => return Err(SqlError::unsupported(format!("the query {other}"))),
        };
        let plan = if limit.is_some() || offset.is_some() {
            Plan::Limit {
                input: Box::new(plan),
                limit,
                offset,
            }
        } else {
            plan
        };
        Ok((plan, columns))
    }

    fn bind_limit(
        &mut self,
        clause: Option<&ast::LimitClause>,
    ) -> Result<(Option<ScalarExpr>, Option<ScalarExpr>)> {
        let (limit, offset) = match clause {
            None => return Ok((None, None)),
            Some(ast::LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) if limit_by.is_empty() => (limit.as_ref(), offset.as_ref().map(|o| &o.value)),
            Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
                (Some(limit), Some(offset))
            }
            Some(_) => return Err(SqlError::unsupported("LIMIT BY")),
        };
        let empty = Scope::default();
        let mut bind = |e: Option<&ast::Expr>, what: &'static str| -> Result<Option<ScalarExpr>> {
            let Some(e) = e else { return Ok(None) };
            let cx = ExprContext::no_aggregates(&empty, what);
            let bound = self.bind_expr_as(e, &cx, DataType::Int8)?;
            if !bound.data_type().is_integer() {
                return Err(SqlError::DatatypeMismatch(format!(
                    "argument of {what} must be type bigint, not type {}",
                    bound.data_type().sql_name()
                )));
            }
            Ok(Some(bound))
        };
        Ok((bind(limit, "LIMIT")?, bind(offset, "OFFSET")?))
    }

    /// Binds `VALUES (...), (...)`. `targets` are the (type, name) of the columns the values
    /// are assigned to (INSERT's target columns): untyped values take the column's type, and
    /// typed ones must be assignable to it. Without targets untyped values become TEXT and
    /// later rows follow the first row's types.
    pub(super) fn bind_values(
        &mut self,
        values: &ast::Values,
        targets: &[(DataType, String)],
    ) -> Result<(Plan, Vec<OutputColumn>)> {
        let empty = Scope::default();
        let cx = ExprContext::no_aggregates(&empty, "VALUES");
        let width = values.rows.first().map_or(0, |r| r.content.len());
        let mut types: Vec<DataType> = targets.iter().map(|(t, _)| *t).collect();
        let mut rows = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            if row.content.len() != width {
                return Err(SqlError::Syntax(
                    "VALUES lists must all be the same length".into(),
                ));
            }
            let mut bound_row = Vec::with_capacity(width);
            for (i, e) in row.content.iter().enumerate() {
                let hint = types.get(i).copied().unwrap_or(DataType::Unknown);
                let mut bound = self.bind_expr_as(e, &cx, hint)?;
                let ty = bound.data_type();
                if let Some((target, name)) = targets.get(i) {
                    check_assignable(ty, *target, name)?;
                    if ty != *target {
                        bound = ScalarExpr::Cast(Box::new(bound), *target, CastKind::Assignment);
                    }
                } else if i >= types.len() {
                    types.push(ty);
                } else if ty != hint && ty.family() != hint.family() {
                    return Err(SqlError::DatatypeMismatch(format!(
                        "VALUES types {} and {} cannot be matched",
                        hint.sql_name(),
                        ty.sql_name()
                    )));
                }
                bound_row.push(bound);
            }
            rows.push(bound_row);
        }
        let columns = types
            .iter()
            .take(width)
            .enumerate()
            .map(|(i, t)| OutputColumn::new(format!("column{}", i + 1), t.or_text()))
            .collect();
        Ok((Plan::Values { rows }, columns))
    }

    fn bind_select(
        &mut self,
        select: &ast::Select,
        order_by: &[ast::OrderByExpr],
    ) -> Result<(Plan, Vec<OutputColumn>)> {
        check_select_supported(select)?;
        let distinct = match &select.distinct {
            None | Some(ast::Distinct::All) => false,
            Some(ast::Distinct::Distinct) => true,
            Some(ast::Distinct::On(_)) => return Err(SqlError::unsupported("DISTINCT ON")),
        };

        // FROM and WHERE.
        let (mut plan, scope) = match select.from.as_slice() {
            [] => (Plan::Values { rows: vec![vec![]] }, Scope::default()),
            [from] if from.joins.is_empty() => {
                let (table, scope) = self.bind_table_factor(&from.relation)?;
                let scan = Plan::Scan {
                    table,
                    bounds: Default::default(),
                    filter: None,
                };
                (scan, scope)
            }
            _ => return Err(SqlError::unsupported("joins")),
        };
        if let Some(selection) = &select.selection {
            let cx = ExprContext::no_aggregates(&scope, "WHERE");
            let predicate = self.bind_predicate(selection, &cx, "WHERE")?;
            plan = Plan::Filter {
                input: Box::new(plan),
                predicate,
            };
        }

        // Select list.
        let cx = ExprContext::with_aggregates(&scope);
        let mut items: Vec<(ScalarExpr, String)> = Vec::new();
        for item in &select.projection {
            match item {
                ast::SelectItem::Wildcard(options) => {
                    check_wildcard_options(options)?;
                    items.extend(star(&scope, None));
                }
                ast::SelectItem::QualifiedWildcard(kind, options) => {
                    check_wildcard_options(options)?;
                    let ast::SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                        return Err(SqlError::unsupported("expression.*"));
                    };
                    let qualifier = super::table_name(name)?;
                    let expanded = star(&scope, Some(&qualifier));
                    if expanded.is_empty() {
                        return Err(SqlError::UndefinedTable(format!(
                            "missing FROM-clause entry for table \"{qualifier}\""
                        )));
                    }
                    items.extend(expanded);
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    let bound = self.bind_expr_as(e, &cx, DataType::Text)?;
                    items.push((bound, output_name(e)));
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    let bound = self.bind_expr_as(expr, &cx, DataType::Text)?;
                    items.push((bound, ident_name(alias)));
                }
                ast::SelectItem::ExprWithAliases { .. } => {
                    return Err(SqlError::unsupported("multiple aliases"))
                }
            }
        }

        // GROUP BY, HAVING, ORDER BY.
        let group_by = self.bind_group_by(&select.group_by, &scope, &items)?;
        let having = match &select.having {
            Some(h) => Some(self.bind_predicate(h, &cx, "HAVING")?),
            None => None,
        };
        let mut order = Vec::with_capacity(order_by.len());
        for key in order_by {
            order.push(self.bind_order_key(key, &scope, &items)?);
        }

        // Aggregation.
        let aggregating = !group_by.is_empty()
            || having.is_some()
            || items.iter().any(|(e, _)| e.has_aggregate())
            || order
                .iter()
                .any(|(t, ..)| matches!(t, OrderTarget::Expr(e) if e.has_aggregate()));
        if aggregating {
            let mut aggregates = Vec::new();
            for (e, _) in &mut items {
                *e = rewrite_for_aggregate(e.clone(), &group_by, &mut aggregates)?;
            }
            for (target, ..) in &mut order {
                if let OrderTarget::Expr(e) = target {
                    *e = rewrite_for_aggregate(e.clone(), &group_by, &mut aggregates)?;
                }
            }
            let having = having
                .map(|h| rewrite_for_aggregate(h, &group_by, &mut aggregates))
                .transpose()?;
            plan = Plan::Aggregate {
                input: Box::new(plan),
                group_by,
                aggregates,
            };
            if let Some(predicate) = having {
                plan = Plan::Filter {
                    input: Box::new(plan),
                    predicate,
                };
            }
        }

        // Projection (with extra ORDER BY columns), DISTINCT, sort.
        let width = items.len();
        let columns: Vec<OutputColumn> = items
            .iter()
            .map(|(e, name)| OutputColumn::new(name.clone(), e.data_type().or_text()))
            .collect();
        let mut exprs: Vec<ScalarExpr> = items.into_iter().map(|(e, _)| e).collect();
        let mut keys = Vec::with_capacity(order.len());
        for (target, desc, nulls_first) in order {
            let index = match target {
                OrderTarget::Output(i) => i,
                OrderTarget::Expr(e) => match exprs.iter().position(|x| *x == e) {
                    Some(i) => i,
                    None => {
                        exprs.push(e);
                        exprs.len() - 1
                    }
                },
            };
            let ty = exprs
                .get(index)
                .map_or(DataType::Unknown, |e| e.data_type());
            keys.push(SortKey {
                expr: ScalarExpr::Column {
                    index,
                    ty,
                    name: String::new(),
                },
                desc,
                nulls_first,
            });
        }
        let extra = exprs.len() > width;
        if distinct && extra {
            return Err(SqlError::InvalidColumnReference(
                "for SELECT DISTINCT, ORDER BY expressions must appear in select list".into(),
            ));
        }
        plan = Plan::Project {
            input: Box::new(plan),
            exprs,
        };
        if distinct {
            plan = Plan::Distinct {
                input: Box::new(plan),
            };
        }
        if !keys.is_empty() {
            plan = Plan::Sort {
                input: Box::new(plan),
                keys,
            };
        }
        if extra {
            plan = Plan::Project {
                input: Box::new(plan),
                exprs: columns
                    .iter()
                    .enumerate()
                    .map(|(index, c)| ScalarExpr::Column {
                        index,
                        ty: c.data_type,
                        name: c.name.clone(),
                    })
                    .collect(),
            };
        }
        Ok((plan, columns))
    }

    fn bind_group_by(
        &mut self,
        group_by: &ast::GroupByExpr,
        scope: &Scope,
        items: &[(ScalarExpr, String)],
    ) -> Result<Vec<ScalarExpr>> {
        let exprs = match group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
            _ => return Err(SqlError::unsupported("GROUP BY ALL / ROLLUP / CUBE")),
        };
        let cx = ExprContext::no_aggregates(scope, "GROUP BY");
        let mut bound = Vec::with_capacity(exprs.len());
        for e in exprs {
            let target = match output_reference(e, scope, items, false)? {
                Some(i) => {
                    let expr = items.get(i).map(|(x, _)| x.clone()).ok_or_else(|| {
                        SqlError::InvalidColumnReference(format!(
                            "GROUP BY position {} is not in select list",
                            i + 1
                        ))
                    })?;
                    if expr.has_aggregate() {
                        return Err(SqlError::Grouping(
                            "aggregate functions are not allowed in GROUP BY".into(),
                        ));
                    }
                    expr
                }
                None => self.bind_expr(e, &cx)?,
            };
            bound.push(target);
        }
        Ok(bound)
    }

    fn bind_order_key(
        &mut self,
        key: &ast::OrderByExpr,
        scope: &Scope,
        items: &[(ScalarExpr, String)],
    ) -> Result<(OrderTarget, bool, bool)> {
        if key.with_fill.is_some() {
            return Err(SqlError::unsupported("WITH FILL"));
        }
        let desc = match &key.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(ast::OrderBySort::Using(_)) => {
                return Err(SqlError::unsupported("ORDER BY USING"))
            }
        };
        // PostgreSQL's default: NULLs sort as if larger than any value.
        let nulls_first = key.options.nulls_first.unwrap_or(desc);
        let target = match output_reference(&key.expr, scope, items, true)? {
            Some(i) => OrderTarget::Output(i),
            None => {
                let cx = ExprContext::with_aggregates(scope);
                OrderTarget::Expr(self.bind_expr_as(&key.expr, &cx, DataType::Text)?)
            }
        };
        Ok((target, desc, nulls_first))
    }
}

/// Whether a GROUP BY / ORDER BY item names a select-list column: a position (`ORDER BY 2`)
/// or a bare name of an output column. As in PostgreSQL, ORDER BY prefers output names over
/// input columns and GROUP BY the other way round (`prefer_output`).
fn output_reference(
    e: &ast::Expr,
    scope: &Scope,
    items: &[(ScalarExpr, String)],
    prefer_output: bool,
) -> Result<Option<usize>> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => {
                let position: usize = n.parse().map_err(|_| {
                    SqlError::InvalidColumnReference(format!("non-integer position {n}"))
                })?;
                if position == 0 || position > items.len() {
                    return Err(SqlError::InvalidColumnReference(format!(
                        "position {n} is not in select list"
                    )));
                }
                Ok(Some(position - 1))
            }
            _ => Ok(None),
        },
        ast::Expr::Identifier(id) => {
            let name = ident_name(id);
            let output = items.iter().position(|(_, n)| *n == name);
            if prefer_output || scope.resolve(None, &name).is_err() {
                Ok(output)
            } else {
                Ok(None)
            }
        }
        _ => Ok(None),
    }
}

/// The select-list items `*` (or `qualifier.*`) expands to: the visible columns in order.
fn star(scope: &Scope, qualifier: Option<&str>) -> Vec<(ScalarExpr, String)> {
    scope
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.hidden)
        .filter(|(_, c)| qualifier.is_none_or(|q| c.qualifier.as_deref() == Some(q)))
        .map(|(index, c)| {
            let expr = ScalarExpr::Column {
                index,
                ty: c.ty,
                name: c.name.clone(),
            };
            (expr, c.name.clone())
        })
        .collect()
}

fn check_wildcard_options(options: &ast::WildcardAdditionalOptions) -> Result<()> {
    let plain = options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none();
    if plain {
        Ok(())
    } else {
        Err(SqlError::unsupported(
            "* with EXCLUDE/EXCEPT/REPLACE/RENAME",
        ))
    }
}

fn check_select_supported(select: &ast::Select) -> Result<()> {
    let unsupported = |what: &str| Err(SqlError::unsupported(what.to_string()));
    if select.top.is_some() {
        return unsupported("TOP");
    }
    if select.into.is_some() {
        return unsupported("SELECT INTO");
    }
    if !select.lateral_views.is_empty() {
        return unsupported("LATERAL VIEW");
    }
    if select.prewhere.is_some() || select.qualify.is_some() {
        return unsupported("PREWHERE / QUALIFY");
    }
    if !select.connect_by.is_empty() {
        return unsupported("CONNECT BY");
    }
    if !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
    {
        return unsupported("CLUSTER BY / DISTRIBUTE BY / SORT BY");
    }
    if !select.named_window.is_empty() {
        return unsupported("WINDOW");
    }
    if select.exclude.is_some() || select.value_table_mode.is_some() {
        return unsupported("this SELECT syntax");
    }
    Ok(())
}

/// Rewrites an expression bound against the aggregation's input into one over its output
/// (group values, then aggregate results): group-by expressions and aggregate calls become
/// column references, and any other column reference is a grouping error.
fn rewrite_for_aggregate(
    e: ScalarExpr,
    group_by: &[ScalarExpr],
    aggregates: &mut Vec<AggCall>,
) -> Result<ScalarExpr> {
    crate::limits::deeper(|| rewrite_for_aggregate_here(e, group_by, aggregates))
}

fn rewrite_for_aggregate_here(
    e: ScalarExpr,
    group_by: &[ScalarExpr],
    aggregates: &mut Vec<AggCall>,
) -> Result<ScalarExpr> {
    if let Some(index) = group_by.iter().position(|g| *g == e) {
        let name = match &e {
            ScalarExpr::Column { name, .. } => name.clone(),
            _ => String::new(),
        };
        return Ok(ScalarExpr::Column {
            index,
            ty: e.data_type(),
            name,
        });
    }
    match e {
        ScalarExpr::Aggregate(call) => {
            let position = aggregates.iter().position(|a| *a == *call);
            let j = match position {
                Some(j) => j,
                None => {
                    aggregates.push((*call).clone());
                    aggregates.len() - 1
                }
            };
            Ok(ScalarExpr::Column {
                index: group_by.len() + j,
                ty: call.ty,
                name: String::new(),
            })
        }
        ScalarExpr::Column { name, .. } => Err(SqlError::Grouping(format!(
            "column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"
        ))),
        other => other.map_children(&mut |c| rewrite_for_aggregate(c, group_by, aggregates)),
    }
}
