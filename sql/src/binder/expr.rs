//! Binding scalar expressions: name resolution, type checking and the typing of untyped
//! literals and parameters from their context.

use sqlparser::ast::{self, BinaryOperator, UnaryOperator};

use super::{ident_name, Binder, Scope};
use crate::error::{Result, SqlError};
use crate::expr::{AggCall, AggFunc, ArithOp, CmpOp, Func, ScalarExpr};
use crate::types::{can_cast, CastKind, DataType, Datum, TypeFamily};

/// Where an expression is being bound: which columns it sees and whether aggregates are
/// allowed (and if not, the clause to name in the error).
pub(super) struct ExprContext<'s> {
    pub scope: &'s Scope,
    pub aggregates: Result<(), &'static str>,
}

impl<'s> ExprContext<'s> {
    /// A context allowing aggregates.
    pub fn with_aggregates(scope: &'s Scope) -> Self {
        ExprContext {
            scope,
            aggregates: Ok(()),
        }
    }

    /// A context where aggregates are an error mentioning `clause`.
    pub fn no_aggregates(scope: &'s Scope, clause: &'static str) -> Self {
        ExprContext {
            scope,
            aggregates: Err(clause),
        }
    }
}

fn undefined_operator(op: &str, a: DataType, b: DataType) -> SqlError {
    SqlError::UndefinedFunction(format!(
        "operator does not exist: {} {op} {}",
        a.sql_name(),
        b.sql_name()
    ))
}

impl Binder<'_> {
    /// Gives an untyped literal or parameter the type `ty`; typed expressions are returned
    /// unchanged. Untyped string literals are parsed as `ty` here, so `'abc'` for an INT is
    /// 22P02 at bind time, as in PostgreSQL.
    pub(super) fn coerce_unknown(&mut self, e: ScalarExpr, ty: DataType) -> Result<ScalarExpr> {
        if e.data_type() != DataType::Unknown || ty == DataType::Unknown {
            return Ok(e);
        }
        Ok(match e {
            ScalarExpr::Literal(Datum::Text(s), _) => {
                ScalarExpr::Literal(Datum::parse(&s, ty)?, ty)
            }
            ScalarExpr::Literal(v, _) => ScalarExpr::Literal(v, ty),
            ScalarExpr::Param { index, .. } => {
                if let Some(slot) = self.params.get_mut(index) {
                    *slot = ty;
                }
                ScalarExpr::Param { index, ty }
            }
            other => other,
        })
    }

    /// Binds `e` and, if it is untyped, gives it type `hint` (used for values assigned to a
    /// column).
    pub(super) fn bind_expr_as(
        &mut self,
        e: &ast::Expr,
        cx: &ExprContext,
        hint: DataType,
    ) -> Result<ScalarExpr> {
        let bound = self.bind_expr(e, cx)?;
        self.coerce_unknown(bound, hint)
    }

    /// Binds a predicate (WHERE, HAVING) that must be boolean.
    pub(super) fn bind_predicate(
        &mut self,
        e: &ast::Expr,
        cx: &ExprContext,
        clause: &str,
    ) -> Result<ScalarExpr> {
        let bound = self.bind_expr_as(e, cx, DataType::Bool)?;
        match bound.data_type() {
            DataType::Bool => Ok(bound),
            other => Err(SqlError::DatatypeMismatch(format!(
                "argument of {clause} must be type boolean, not type {}",
                other.sql_name()
            ))),
        }
    }

    /// Binds one expression.
    pub(super) fn bind_expr(&mut self, e: &ast::Expr, cx: &ExprContext) -> Result<ScalarExpr> {
        crate::limits::deeper(|| self.bind_expr_here(e, cx))
    }

    fn bind_expr_here(&mut self, e: &ast::Expr, cx: &ExprContext) -> Result<ScalarExpr> {
        match e {
            ast::Expr::Identifier(id) => self.bind_column(cx.scope, None, id),
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [table, column] => self.bind_column(cx.scope, Some(&ident_name(table)), column),
                [_schema, table, column] => {
                    self.bind_column(cx.scope, Some(&ident_name(table)), column)
                }
                _ => Err(SqlError::unsupported(format!("column reference {e}"))),
            },
            ast::Expr::Value(v) => self.bind_value(&v.value),
            ast::Expr::Nested(inner) => self.bind_expr(inner, cx),
            ast::Expr::BinaryOp { left, op, right } => self.bind_binary(left, op, right, cx),
            ast::Expr::UnaryOp { op, expr } => self.bind_unary(*op, expr, cx),
            ast::Expr::IsNull(inner) => Ok(ScalarExpr::IsNull(
                Box::new(self.bind_expr(inner, cx)?),
                false,
            )),
            ast::Expr::IsNotNull(inner) => Ok(ScalarExpr::IsNull(
                Box::new(self.bind_expr(inner, cx)?),
                true,
            )),
            ast::Expr::IsTrue(inner) => self.bind_is_bool(inner, true, false, cx),
            ast::Expr::IsNotTrue(inner) => self.bind_is_bool(inner, true, true, cx),
            ast::Expr::IsFalse(inner) => self.bind_is_bool(inner, false, false, cx),
            ast::Expr::IsNotFalse(inner) => self.bind_is_bool(inner, false, true, cx),
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let lower = self.bind_comparison(CmpOp::GtEq, expr, low, cx)?;
                let upper = self.bind_comparison(CmpOp::LtEq, expr, high, cx)?;
                let both = ScalarExpr::And(Box::new(lower), Box::new(upper));
                Ok(if *negated {
                    ScalarExpr::Not(Box::new(both))
                } else {
                    both
                })
            }
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => self.bind_in_list(expr, list, *negated, cx),
            ast::Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => self.bind_like(expr, pattern, *negated, false, cx),
            ast::Expr::ILike {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => self.bind_like(expr, pattern, *negated, true, cx),
            ast::Expr::Cast {
                kind: ast::CastKind::Cast | ast::CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => {
                let to = super::convert_data_type(data_type)?;
                let inner = self.bind_expr(expr, cx)?;
                let from = inner.data_type();
                if from == DataType::Unknown {
                    // An untyped literal is read directly as the target type ('1'::int).
                    return self.coerce_unknown(inner, to);
                }
                if !can_cast(from, to, CastKind::Explicit) {
                    return Err(SqlError::CannotCoerce {
                        from: from.sql_name(),
                        to: to.sql_name(),
                    });
                }
                Ok(ScalarExpr::Cast(Box::new(inner), to, CastKind::Explicit))
            }
            ast::Expr::Function(f) => self.bind_function(f, cx),
            ast::Expr::Subquery(_) | ast::Expr::InSubquery { .. } | ast::Expr::Exists { .. } => {
                Err(SqlError::unsupported("subqueries"))
            }
            ast::Expr::Case { .. } => Err(SqlError::unsupported("CASE expressions")),
            other => Err(SqlError::unsupported(format!("the expression {other}"))),
        }
    }

    fn bind_column(
        &mut self,
        scope: &Scope,
        qualifier: Option<&str>,
        id: &ast::Ident,
    ) -> Result<ScalarExpr> {
        let name = ident_name(id);
        let (index, column) = scope.resolve(qualifier, &name)?;
        Ok(ScalarExpr::Column {
            index,
            ty: column.ty,
            name: column.name.clone(),
        })
    }

    fn bind_value(&mut self, v: &ast::Value) -> Result<ScalarExpr> {
        Ok(match v {
            ast::Value::Number(text, _) => number_literal(text)?,
            ast::Value::SingleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s)
            | ast::Value::UnicodeStringLiteral(s)
            | ast::Value::NationalStringLiteral(s) => {
                ScalarExpr::Literal(Datum::Text(s.clone()), DataType::Unknown)
            }
            ast::Value::DollarQuotedString(s) => {
                ScalarExpr::Literal(Datum::Text(s.value.clone()), DataType::Unknown)
            }
            ast::Value::HexStringLiteral(hex) => ScalarExpr::Literal(
                Datum::parse(&format!("\\x{hex}"), DataType::Bytea)?,
                DataType::Bytea,
            ),
            ast::Value::Boolean(b) => ScalarExpr::Literal(Datum::Bool(*b), DataType::Bool),
            ast::Value::Null => ScalarExpr::Literal(Datum::Null, DataType::Unknown),
            ast::Value::Placeholder(p) => {
                let index = self.param_index(p)?;
                let ty = self.params.get(index).copied().unwrap_or(DataType::Unknown);
                ScalarExpr::Param { index, ty }
            }
            other => return Err(SqlError::unsupported(format!("the literal {other}"))),
        })
    }

    fn bind_unary(
        &mut self,
        op: UnaryOperator,
        e: &ast::Expr,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        match op {
            UnaryOperator::Not => {
                let inner = self.bind_predicate(e, cx, "NOT")?;
                Ok(ScalarExpr::Not(Box::new(inner)))
            }
            UnaryOperator::Minus | UnaryOperator::Plus => {
                // Fold `-<number>` so the most negative integers are literals of their type.
                if let (UnaryOperator::Minus, ast::Expr::Value(v)) = (op, e) {
                    if let ast::Value::Number(text, _) = &v.value {
                        return number_literal(&format!("-{text}"));
                    }
                }
                let inner = self.bind_expr_as(e, cx, DataType::Int8)?;
                let ty = inner.data_type();
                if ty.family() != TypeFamily::Numeric {
                    return Err(SqlError::UndefinedFunction(format!(
                        "operator does not exist: {op} {}",
                        ty.sql_name()
                    )));
                }
                Ok(if op == UnaryOperator::Minus {
                    ScalarExpr::Negate(Box::new(inner), ty)
                } else {
                    inner
                })
            }
            other => Err(SqlError::unsupported(format!("the operator {other}"))),
        }
    }

    fn bind_binary(
        &mut self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        let cmp = match op {
            BinaryOperator::Eq => Some(CmpOp::Eq),
            BinaryOperator::NotEq => Some(CmpOp::NotEq),
            BinaryOperator::Lt => Some(CmpOp::Lt),
            BinaryOperator::LtEq => Some(CmpOp::LtEq),
            BinaryOperator::Gt => Some(CmpOp::Gt),
            BinaryOperator::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(cmp) = cmp {
            return self.bind_comparison(cmp, left, right, cx);
        }
        let arith = match op {
            BinaryOperator::Plus => Some(ArithOp::Add),
            BinaryOperator::Minus => Some(ArithOp::Sub),
            BinaryOperator::Multiply => Some(ArithOp::Mul),
            BinaryOperator::Divide => Some(ArithOp::Div),
            BinaryOperator::Modulo => Some(ArithOp::Mod),
            _ => None,
        };
        if let Some(arith) = arith {
            return self.bind_arith(arith, op, left, right, cx);
        }
        match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let name = if *op == BinaryOperator::And {
                    "AND"
                } else {
                    "OR"
                };
                let a = Box::new(self.bind_predicate(left, cx, name)?);
                let b = Box::new(self.bind_predicate(right, cx, name)?);
                Ok(if *op == BinaryOperator::And {
                    ScalarExpr::And(a, b)
                } else {
                    ScalarExpr::Or(a, b)
                })
            }
            BinaryOperator::StringConcat => {
                let a = self.bind_expr(left, cx)?;
                let b = self.bind_expr(right, cx)?;
                let (a, b) = self.unify_pair(a, b, DataType::Text)?;
                let (ta, tb) = (a.data_type(), b.data_type());
                let ty = match (ta.family(), tb.family()) {
                    (TypeFamily::Bytes, TypeFamily::Bytes) => DataType::Bytea,
                    (TypeFamily::String, _) | (_, TypeFamily::String) => DataType::Text,
                    _ => return Err(undefined_operator("||", ta, tb)),
                };
                Ok(ScalarExpr::Concat(Box::new(a), Box::new(b), ty))
            }
            other => Err(SqlError::unsupported(format!("the operator {other}"))),
        }
    }

    /// Types an untyped side of a binary operator from the other side; if both are untyped
    /// they become `default`.
    fn unify_pair(
        &mut self,
        a: ScalarExpr,
        b: ScalarExpr,
        default: DataType,
    ) -> Result<(ScalarExpr, ScalarExpr)> {
        let (ta, tb) = (a.data_type(), b.data_type());
        match (ta, tb) {
            (DataType::Unknown, DataType::Unknown) => Ok((
                self.coerce_unknown(a, default)?,
                self.coerce_unknown(b, default)?,
            )),
            (DataType::Unknown, t) => Ok((self.coerce_unknown(a, t)?, b)),
            (t, DataType::Unknown) => Ok((a, self.coerce_unknown(b, t)?)),
            _ => Ok((a, b)),
        }
    }

    pub(super) fn bind_comparison(
        &mut self,
        op: CmpOp,
        left: &ast::Expr,
        right: &ast::Expr,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        let a = self.bind_expr(left, cx)?;
        let b = self.bind_expr(right, cx)?;
        let (a, b) = self.unify_pair(a, b, DataType::Text)?;
        check_comparable(&a, &b)?;
        Ok(ScalarExpr::Compare(op, Box::new(a), Box::new(b)))
    }

    fn bind_arith(
        &mut self,
        op: ArithOp,
        ast_op: &BinaryOperator,
        left: &ast::Expr,
        right: &ast::Expr,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        let a = self.bind_expr(left, cx)?;
        let b = self.bind_expr(right, cx)?;
        let (a, b) = self.unify_pair(a, b, DataType::Int8)?;
        let (ta, tb) = (a.data_type(), b.data_type());
        let numeric = ta.family() == TypeFamily::Numeric && tb.family() == TypeFamily::Numeric;
        if !numeric || (op == ArithOp::Mod && !(ta.is_integer() && tb.is_integer())) {
            return Err(undefined_operator(&ast_op.to_string(), ta, tb));
        }
        let ty = DataType::numeric_promotion(ta, tb);
        Ok(ScalarExpr::Arith(op, Box::new(a), Box::new(b), ty))
    }

    fn bind_is_bool(
        &mut self,
        e: &ast::Expr,
        value: bool,
        negated: bool,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        // x IS TRUE  = coalesce(x = true, false); IS NOT TRUE negates that (NULL -> true).
        let inner = self.bind_predicate(e, cx, "IS TRUE")?;
        let literal = |b| ScalarExpr::Literal(Datum::Bool(b), DataType::Bool);
        let test = ScalarExpr::Compare(CmpOp::Eq, Box::new(inner), Box::new(literal(value)));
        let is = ScalarExpr::Function(Func::Coalesce, vec![test, literal(false)], DataType::Bool);
        Ok(if negated {
            ScalarExpr::Not(Box::new(is))
        } else {
            is
        })
    }

    fn bind_in_list(
        &mut self,
        e: &ast::Expr,
        list: &[ast::Expr],
        negated: bool,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        let mut value = self.bind_expr(e, cx)?;
        let mut items = Vec::with_capacity(list.len());
        for item in list {
            let bound = self.bind_expr(item, cx)?;
            let (v, bound) = self.unify_pair(value, bound, DataType::Text)?;
            check_comparable(&v, &bound)?;
            value = v;
            items.push(bound);
        }
        Ok(ScalarExpr::InList(Box::new(value), items, negated))
    }

    fn bind_like(
        &mut self,
        e: &ast::Expr,
        pattern: &ast::Expr,
        negated: bool,
        case_insensitive: bool,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        let e = self.bind_expr_as(e, cx, DataType::Text)?;
        let pattern = self.bind_expr_as(pattern, cx, DataType::Text)?;
        let (te, tp) = (e.data_type(), pattern.data_type());
        if te.family() != TypeFamily::String || tp.family() != TypeFamily::String {
            return Err(undefined_operator("~~", te, tp));
        }
        Ok(ScalarExpr::Like {
            expr: Box::new(e),
            pattern: Box::new(pattern),
            negated,
            case_insensitive,
        })
    }

    fn bind_function(&mut self, f: &ast::Function, cx: &ExprContext) -> Result<ScalarExpr> {
        let name = function_name(&f.name)?;
        if f.over.is_some() {
            return Err(SqlError::unsupported("window functions"));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(SqlError::unsupported(format!(
                "FILTER / WITHIN GROUP / null treatment in {name}"
            )));
        }
        let (args, distinct) = match &f.args {
            ast::FunctionArguments::None => (Vec::new(), false),
            ast::FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return Err(SqlError::unsupported(format!("clauses in {name}()")));
                }
                let distinct = matches!(
                    list.duplicate_treatment,
                    Some(ast::DuplicateTreatment::Distinct)
                );
                (list.args.iter().collect::<Vec<_>>(), distinct)
            }
            ast::FunctionArguments::Subquery(_) => return Err(SqlError::unsupported("subqueries")),
        };
        let agg = match name.as_str() {
            "count" => Some(AggFunc::Count),
            "sum" => Some(AggFunc::Sum),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "avg" => Some(AggFunc::Avg),
            _ => None,
        };
        if let Some(func) = agg {
            return self.bind_aggregate(func, &name, &args, distinct, cx);
        }
        if distinct {
            return Err(SqlError::unsupported(format!("DISTINCT in {name}()")));
        }
        let mut bound = Vec::with_capacity(args.len());
        for arg in &args {
            match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                    bound.push(self.bind_expr(e, cx)?)
                }
                _ => {
                    return Err(SqlError::unsupported(format!(
                        "this argument form in {name}()"
                    )))
                }
            }
        }
        self.bind_scalar_function(&name, bound)
    }

    fn bind_scalar_function(&mut self, name: &str, args: Vec<ScalarExpr>) -> Result<ScalarExpr> {
        let signature = |args: &[ScalarExpr]| {
            let types: Vec<String> = args.iter().map(|a| a.data_type().sql_name()).collect();
            SqlError::UndefinedFunction(format!("{name}({})", types.join(", ")))
        };
        match (name, args.len()) {
            ("lower" | "upper" | "length", 1) => {
                let arg = args
                    .into_iter()
                    .next()
                    .unwrap_or(ScalarExpr::Literal(Datum::Null, DataType::Text));
                let arg = self.coerce_unknown(arg, DataType::Text)?;
                let family = arg.data_type().family();
                let ok = family == TypeFamily::String
                    || (name == "length" && family == TypeFamily::Bytes);
                if !ok {
                    return Err(signature(std::slice::from_ref(&arg)));
                }
                let (func, ty) = match name {
                    "lower" => (Func::Lower, DataType::Text),
                    "upper" => (Func::Upper, DataType::Text),
                    _ => (Func::Length, DataType::Int4),
                };
                Ok(ScalarExpr::Function(func, vec![arg], ty))
            }
            ("abs", 1) => {
                let arg = args
                    .into_iter()
                    .next()
                    .unwrap_or(ScalarExpr::Literal(Datum::Null, DataType::Float8));
                let arg = self.coerce_unknown(arg, DataType::Float8)?;
                let ty = arg.data_type();
                if ty.family() != TypeFamily::Numeric {
                    return Err(signature(std::slice::from_ref(&arg)));
                }
                Ok(ScalarExpr::Function(Func::Abs, vec![arg], ty))
            }
            ("coalesce", n) if n > 0 => {
                let mut ty = DataType::Unknown;
                for arg in &args {
                    let t = arg.data_type();
                    ty = match (ty, t) {
                        (DataType::Unknown, t) => t,
                        (acc, DataType::Unknown) => acc,
                        (acc, t)
                            if acc.family() == TypeFamily::Numeric
                                && t.family() == TypeFamily::Numeric =>
                        {
                            DataType::numeric_promotion(acc, t)
                        }
                        (acc, t) if acc.family() == t.family() => acc,
                        _ => {
                            return Err(SqlError::DatatypeMismatch(format!(
                                "COALESCE types {} and {} cannot be matched",
                                ty.sql_name(),
                                t.sql_name()
                            )))
                        }
                    };
                }
                let ty = ty.or_text();
                let args = args
                    .into_iter()
                    .map(|a| self.coerce_unknown(a, ty))
                    .collect::<Result<Vec<_>>>()?;
                Ok(ScalarExpr::Function(Func::Coalesce, args, ty))
            }
            ("version", 0) => Ok(ScalarExpr::Function(Func::Version, vec![], DataType::Text)),
            ("current_database", 0) => Ok(ScalarExpr::Literal(
                Datum::Text("meridian".into()),
                DataType::Text,
            )),
            (
                "lower" | "upper" | "length" | "abs" | "coalesce" | "version" | "current_database",
                _,
            ) => Err(signature(&args)),
            _ => Err(SqlError::UndefinedFunction(format!("{name}()"))),
        }
    }

    fn bind_aggregate(
        &mut self,
        func: AggFunc,
        name: &str,
        args: &[&ast::FunctionArg],
        distinct: bool,
        cx: &ExprContext,
    ) -> Result<ScalarExpr> {
        if let Err(clause) = cx.aggregates {
            return Err(SqlError::Grouping(format!(
                "aggregate functions are not allowed in {clause}"
            )));
        }
        let inner_cx = ExprContext::no_aggregates(cx.scope, "the arguments of an aggregate");
        let arg = match args {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if func == AggFunc::Count && !distinct =>
            {
                None
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => {
                let bound = self.bind_expr(e, &inner_cx).map_err(|err| match err {
                    SqlError::Grouping(_) => {
                        SqlError::Grouping("aggregate function calls cannot be nested".into())
                    }
                    other => other,
                })?;
                let hint = if func == AggFunc::Count {
                    DataType::Text
                } else {
                    DataType::Float8
                };
                Some(self.coerce_unknown(bound, hint)?)
            }
            _ => {
                return Err(SqlError::UndefinedFunction(format!(
                    "{name} with these arguments"
                )))
            }
        };
        let arg_ty = arg.as_ref().map(|a| a.data_type());
        let ty = match (func, arg_ty) {
            (AggFunc::Count, _) => DataType::Int8,
            (AggFunc::Min | AggFunc::Max, Some(t)) => t,
            (AggFunc::Sum, Some(t)) if t.is_integer() => DataType::Int8,
            (AggFunc::Sum, Some(DataType::Float4)) => DataType::Float4,
            (AggFunc::Sum | AggFunc::Avg, Some(t)) if t.family() == TypeFamily::Numeric => {
                DataType::Float8
            }
            (_, t) => {
                return Err(SqlError::UndefinedFunction(format!(
                    "{name}({})",
                    t.map(|t| t.sql_name()).unwrap_or_default()
                )))
            }
        };
        Ok(ScalarExpr::Aggregate(Box::new(AggCall {
            func,
            arg,
            distinct,
            ty,
        })))
    }
}

/// Checks two typed operands can be compared: same type family (all numbers compare with
/// each other). Mismatches are 42804, as for any datatype mismatch.
fn check_comparable(a: &ScalarExpr, b: &ScalarExpr) -> Result<()> {
    let (ta, tb) = (a.data_type(), b.data_type());
    if ta.family() == tb.family() || ta == DataType::Unknown || tb == DataType::Unknown {
        Ok(())
    } else {
        Err(SqlError::DatatypeMismatch(format!(
            "cannot compare {} with {}",
            ta.sql_name(),
            tb.sql_name()
        )))
    }
}

/// A function's name, allowing a `pg_catalog.` qualifier.
fn function_name(name: &ast::ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| match p {
            ast::ObjectNamePart::Identifier(id) => Some(ident_name(id)),
            ast::ObjectNamePart::Function(_) => None,
        })
        .collect();
    match parts.as_slice() {
        [f] => Ok(f.clone()),
        [schema, f] if schema == "pg_catalog" => Ok(f.clone()),
        _ => Err(SqlError::UndefinedFunction(format!("{name}()"))),
    }
}

/// The type of a numeric literal: INT4 if it fits, else INT8, else (or with a fraction or
/// exponent) DOUBLE PRECISION. NUMERIC does not exist yet, so `1.5` is a float.
fn number_literal(text: &str) -> Result<ScalarExpr> {
    if let Ok(i) = text.parse::<i64>() {
        let ty = if i32::try_from(i).is_ok() {
            DataType::Int4
        } else {
            DataType::Int8
        };
        return Ok(ScalarExpr::Literal(Datum::Int(i), ty));
    }
    text.parse::<f64>()
        .map(|f| ScalarExpr::Literal(Datum::Float(f), DataType::Float8))
        .map_err(|_| SqlError::Syntax(format!("invalid number {text}")))
}

/// The column name PostgreSQL gives an unaliased select-list expression.
pub(super) fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => ident_name(id),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident_name).unwrap_or_default(),
        ast::Expr::Nested(inner) => output_name(inner),
        ast::Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident_name)
            .unwrap_or_else(|| "?column?".into()),
        ast::Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => output_name(expr),
            _ => super::convert_data_type(data_type)
                .map(internal_type_name)
                .unwrap_or_else(|_| "?column?".into()),
        },
        ast::Expr::Value(v) if matches!(v.value, ast::Value::Boolean(_)) => "bool".into(),
        _ => "?column?".into(),
    }
}

/// PostgreSQL's internal type names, which it uses to name cast columns (`'1'::int` is `int4`).
fn internal_type_name(ty: DataType) -> String {
    match ty {
        DataType::Bool => "bool",
        DataType::Int2 => "int2",
        DataType::Int4 => "int4",
        DataType::Int8 => "int8",
        DataType::Float4 => "float4",
        DataType::Float8 => "float8",
        DataType::Text | DataType::Unknown => "text",
        DataType::Varchar(_) => "varchar",
        DataType::Bytea => "bytea",
    }
    .into()
}

/// Whether a value of type `from` may be stored in a column of type `to`.
pub(super) fn check_assignable(from: DataType, to: DataType, column: &str) -> Result<()> {
    if can_cast(from, to, CastKind::Assignment) {
        Ok(())
    } else {
        Err(SqlError::DatatypeMismatch(format!(
            "column \"{column}\" is of type {} but expression is of type {}",
            to.sql_name(),
            from.sql_name()
        )))
    }
}
