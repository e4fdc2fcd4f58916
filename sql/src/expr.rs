//! Bound scalar expressions ([`ScalarExpr`]) and their evaluation.
//!
//! The binder turns parser expressions into `ScalarExpr`s whose column references are
//! positions in the input row and whose types are resolved, so evaluation does no name lookup
//! and no type inference. Evaluation follows SQL semantics: NULL propagates through operators,
//! AND/OR/NOT use three-valued logic, integer arithmetic is checked against the result type's
//! range (22003) and division by zero is an error (22012).

use std::cmp::Ordering;

use crate::error::{Result, SqlError};
use crate::types::{cast, check_int_range, round_float, CastKind, DataType, Datum};

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division truncates toward zero)
    Div,
    /// `%` (integers only)
    Mod,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` / `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// Built-in scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `lower(text)`
    Lower,
    /// `upper(text)`
    Upper,
    /// `length(text)` in characters, or `length(bytea)` in bytes.
    Length,
    /// `abs(number)`
    Abs,
    /// `coalesce(a, b, ...)`: the first non-NULL argument.
    Coalesce,
    /// `version()`
    Version,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// `count(*)` (no argument) or `count(x)` (non-NULL x).
    Count,
    /// `sum(x)`
    Sum,
    /// `min(x)`
    Min,
    /// `max(x)`
    Max,
    /// `avg(x)`
    Avg,
}

/// One aggregate computed by an aggregation: `func(DISTINCT? arg)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// The argument, evaluated on input rows; `None` for `count(*)`.
    pub arg: Option<ScalarExpr>,
    /// Whether duplicates of the argument are ignored.
    pub distinct: bool,
    /// The result type.
    pub ty: DataType,
}

/// A bound expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// A constant.
    Literal(Datum, DataType),
    /// The value at `index` of the input row.
    Column {
        /// Position in the input row.
        index: usize,
        /// Column type.
        ty: DataType,
        /// Column name, for messages and output naming.
        name: String,
    },
    /// Statement parameter `$index+1`, already converted to `ty` by the session.
    Param {
        /// Zero-based parameter index.
        index: usize,
        /// Parameter type.
        ty: DataType,
    },
    /// Unary minus.
    Negate(Box<ScalarExpr>, DataType),
    /// Logical NOT.
    Not(Box<ScalarExpr>),
    /// Arithmetic.
    Arith(ArithOp, Box<ScalarExpr>, Box<ScalarExpr>, DataType),
    /// Comparison.
    Compare(CmpOp, Box<ScalarExpr>, Box<ScalarExpr>),
    /// Logical AND.
    And(Box<ScalarExpr>, Box<ScalarExpr>),
    /// Logical OR.
    Or(Box<ScalarExpr>, Box<ScalarExpr>),
    /// `IS [NOT] NULL`.
    IsNull(Box<ScalarExpr>, bool),
    /// `expr [NOT] IN (list)`.
    InList(Box<ScalarExpr>, Vec<ScalarExpr>, bool),
    /// `expr [NOT] [I]LIKE pattern`.
    Like {
        /// The string tested.
        expr: Box<ScalarExpr>,
        /// The pattern (`%` any sequence, `_` one character, `\` escapes).
        pattern: Box<ScalarExpr>,
        /// NOT LIKE.
        negated: bool,
        /// ILIKE.
        case_insensitive: bool,
    },
    /// `||` on strings (result TEXT) or bytea (result BYTEA).
    Concat(Box<ScalarExpr>, Box<ScalarExpr>, DataType),
    /// `CAST(expr AS ty)` / `expr::ty` (explicit), or the conversion of a value assigned to
    /// a column (assignment: VARCHAR overflow is an error, not a truncation).
    Cast(Box<ScalarExpr>, DataType, CastKind),
    /// A scalar function call.
    Function(Func, Vec<ScalarExpr>, DataType),
    /// An aggregate call; only exists between binding and the aggregation rewrite, which
    /// replaces it with a column of the aggregation's output.
    Aggregate(Box<AggCall>),
}

impl ScalarExpr {
    /// The expression's result type.
    pub fn data_type(&self) -> DataType {
        match self {
            ScalarExpr::Literal(_, ty)
            | ScalarExpr::Column { ty, .. }
            | ScalarExpr::Param { ty, .. }
            | ScalarExpr::Negate(_, ty)
            | ScalarExpr::Arith(_, _, _, ty)
            | ScalarExpr::Concat(_, _, ty)
            | ScalarExpr::Cast(_, ty, _)
            | ScalarExpr::Function(_, _, ty) => *ty,
            ScalarExpr::Not(_)
            | ScalarExpr::Compare(..)
            | ScalarExpr::And(..)
            | ScalarExpr::Or(..)
            | ScalarExpr::IsNull(..)
            | ScalarExpr::InList(..)
            | ScalarExpr::Like { .. } => DataType::Bool,
            ScalarExpr::Aggregate(call) => call.ty,
        }
    }

    /// Whether the expression reads no input column (it may still read parameters), so it
    /// can be evaluated once before a scan.
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.visit(&mut |e| {
            if matches!(e, ScalarExpr::Column { .. } | ScalarExpr::Aggregate(_)) {
                constant = false;
            }
        });
        constant
    }

    /// Whether the expression contains an aggregate call.
    pub fn has_aggregate(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| {
            if matches!(e, ScalarExpr::Aggregate(_)) {
                found = true;
            }
        });
        found
    }

    /// Calls `f` on this expression and every sub-expression (pre-order). Does not descend
    /// into aggregate arguments.
    pub fn visit(&self, f: &mut impl FnMut(&ScalarExpr)) {
        crate::limits::deeper(|| self.visit_here(f))
    }

    fn visit_here(&self, f: &mut impl FnMut(&ScalarExpr)) {
        f(self);
        match self {
            ScalarExpr::Literal(..)
            | ScalarExpr::Column { .. }
            | ScalarExpr::Param { .. }
            | ScalarExpr::Aggregate(_) => {}
            ScalarExpr::Negate(e, _)
            | ScalarExpr::Not(e)
            | ScalarExpr::IsNull(e, _)
            | ScalarExpr::Cast(e, _, _) => e.visit(f),
            ScalarExpr::Arith(_, a, b, _)
            | ScalarExpr::Compare(_, a, b)
            | ScalarExpr::And(a, b)
            | ScalarExpr::Or(a, b)
            | ScalarExpr::Concat(a, b, _) => {
                a.visit(f);
                b.visit(f);
            }
            ScalarExpr::Like { expr, pattern, .. } => {
                expr.visit(f);
                pattern.visit(f);
            }
            ScalarExpr::InList(e, list, _) => {
                e.visit(f);
                list.iter().for_each(|x| x.visit(f));
            }
            ScalarExpr::Function(_, args, _) => args.iter().for_each(|x| x.visit(f)),
        }
    }

    /// Rebuilds the expression with `f` applied to each direct child.
    pub fn map_children(
        self,
        f: &mut impl FnMut(ScalarExpr) -> Result<ScalarExpr>,
    ) -> Result<ScalarExpr> {
        let mut b = |e: Box<ScalarExpr>| f(*e).map(Box::new);
        Ok(match self {
            e @ (ScalarExpr::Literal(..)
            | ScalarExpr::Column { .. }
            | ScalarExpr::Param { .. }
            | ScalarExpr::Aggregate(_)) => e,
            ScalarExpr::Negate(e, ty) => ScalarExpr::Negate(b(e)?, ty),
            ScalarExpr::Not(e) => ScalarExpr::Not(b(e)?),
            ScalarExpr::IsNull(e, n) => ScalarExpr::IsNull(b(e)?, n),
            ScalarExpr::Cast(e, ty, kind) => ScalarExpr::Cast(b(e)?, ty, kind),
            ScalarExpr::Arith(op, x, y, ty) => ScalarExpr::Arith(op, b(x)?, b(y)?, ty),
            ScalarExpr::Compare(op, x, y) => ScalarExpr::Compare(op, b(x)?, b(y)?),
            ScalarExpr::And(x, y) => ScalarExpr::And(b(x)?, b(y)?),
            ScalarExpr::Or(x, y) => ScalarExpr::Or(b(x)?, b(y)?),
            ScalarExpr::Concat(x, y, ty) => ScalarExpr::Concat(b(x)?, b(y)?, ty),
            ScalarExpr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => ScalarExpr::Like {
                expr: b(expr)?,
                pattern: b(pattern)?,
                negated,
                case_insensitive,
            },
            ScalarExpr::InList(e, list, n) => {
                let e = b(e)?;
                let list = list.into_iter().map(&mut *f).collect::<Result<_>>()?;
                ScalarExpr::InList(e, list, n)
            }
            ScalarExpr::Function(func, args, ty) => {
                let args = args.into_iter().map(&mut *f).collect::<Result<_>>()?;
                ScalarExpr::Function(func, args, ty)
            }
        })
    }

    /// Evaluates the expression against `row` with parameter values `params`.
    pub fn eval(&self, row: &[Datum], params: &[Datum]) -> Result<Datum> {
        crate::limits::deeper(|| self.eval_here(row, params))
    }

    fn eval_here(&self, row: &[Datum], params: &[Datum]) -> Result<Datum> {
        match self {
            ScalarExpr::Literal(v, _) => Ok(v.clone()),
            ScalarExpr::Column { index, .. } => row
                .get(*index)
                .cloned()
                .ok_or_else(|| SqlError::Internal(format!("column {index} out of row"))),
            ScalarExpr::Param { index, .. } => params.get(*index).cloned().ok_or_else(|| {
                SqlError::ProtocolViolation(format!(
                    "no value supplied for parameter ${}",
                    index + 1
                ))
            }),
            ScalarExpr::Negate(e, ty) => match e.eval(row, params)? {
                Datum::Int(i) => i
                    .checked_neg()
                    .ok_or_else(|| SqlError::NumericOutOfRange(ty.sql_name()))
                    .and_then(|v| check_int_range(v, *ty))
                    .map(Datum::Int),
                Datum::Float(f) => Ok(Datum::Float(-f)),
                Datum::Null => Ok(Datum::Null),
                other => Err(type_error("-", &other)),
            },
            ScalarExpr::Not(e) => Ok(match e.eval(row, params)? {
                Datum::Bool(b) => Datum::Bool(!b),
                _ => Datum::Null,
            }),
            ScalarExpr::Arith(op, a, b, ty) => {
                arith(*op, a.eval(row, params)?, b.eval(row, params)?, *ty)
            }
            ScalarExpr::Compare(op, a, b) => {
                let (a, b) = (a.eval(row, params)?, b.eval(row, params)?);
                Ok(match a.compare(&b) {
                    Some(ord) => Datum::Bool(op.holds(ord)),
                    None => Datum::Null,
                })
            }
            ScalarExpr::And(a, b) => {
                let left = truth(&a.eval(row, params)?);
                if left == Some(false) {
                    return Ok(Datum::Bool(false));
                }
                Ok(match (left, truth(&b.eval(row, params)?)) {
                    (_, Some(false)) => Datum::Bool(false),
                    (Some(true), Some(true)) => Datum::Bool(true),
                    _ => Datum::Null,
                })
            }
            ScalarExpr::Or(a, b) => {
                let left = truth(&a.eval(row, params)?);
                if left == Some(true) {
                    return Ok(Datum::Bool(true));
                }
                Ok(match (left, truth(&b.eval(row, params)?)) {
                    (_, Some(true)) => Datum::Bool(true),
                    (Some(false), Some(false)) => Datum::Bool(false),
                    _ => Datum::Null,
                })
            }
            ScalarExpr::IsNull(e, negated) => {
                Ok(Datum::Bool(e.eval(row, params)?.is_null() != *negated))
            }
            ScalarExpr::InList(e, list, negated) => {
                let value = e.eval(row, params)?;
                if value.is_null() {
                    return Ok(Datum::Null);
                }
                let mut saw_null = false;
                for item in list {
                    match value.compare(&item.eval(row, params)?) {
                        Some(Ordering::Equal) => return Ok(Datum::Bool(!negated)),
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                Ok(if saw_null {
                    Datum::Null
                } else {
                    Datum::Bool(*negated)
                })
            }
            ScalarExpr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => match (expr.eval(row, params)?, pattern.eval(row, params)?) {
                (Datum::Text(s), Datum::Text(p)) => {
                    let matched = if *case_insensitive {
                        like_match(&s.to_lowercase(), &p.to_lowercase())?
                    } else {
                        like_match(&s, &p)?
                    };
                    Ok(Datum::Bool(matched != *negated))
                }
                _ => Ok(Datum::Null),
            },
            ScalarExpr::Concat(a, b, ty) => {
                let (va, vb) = (a.eval(row, params)?, b.eval(row, params)?);
                match (va, vb) {
                    (Datum::Null, _) | (_, Datum::Null) => Ok(Datum::Null),
                    (Datum::Bytes(mut x), Datum::Bytes(y)) if *ty == DataType::Bytea => {
                        x.extend_from_slice(&y);
                        Ok(Datum::Bytes(x))
                    }
                    (x, y) => {
                        let mut s = as_text(x, a.data_type())?;
                        s.push_str(&as_text(y, b.data_type())?);
                        Ok(Datum::Text(s))
                    }
                }
            }
            ScalarExpr::Cast(e, to, kind) => cast(e.eval(row, params)?, e.data_type(), *to, *kind),
            ScalarExpr::Function(func, args, ty) => {
                let values = args
                    .iter()
                    .map(|a| a.eval(row, params))
                    .collect::<Result<Vec<_>>>()?;
                call_function(*func, values, args, *ty)
            }
            ScalarExpr::Aggregate(_) => Err(SqlError::Internal(
                "aggregate evaluated outside an aggregation".into(),
            )),
        }
    }
}

/// The truth value of a boolean datum; `None` for NULL (and non-booleans).
pub fn truth(d: &Datum) -> Option<bool> {
    match d {
        Datum::Bool(b) => Some(*b),
        _ => None,
    }
}

fn type_error(op: &str, value: &Datum) -> SqlError {
    SqlError::Internal(format!("operator {op} applied to {value:?}"))
}

fn as_text(value: Datum, ty: DataType) -> Result<String> {
    match cast(value, ty, DataType::Text, CastKind::Explicit)? {
        Datum::Text(s) => Ok(s),
        _ => Ok(String::new()),
    }
}

fn as_float(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(f) => Some(*f),
        _ => None,
    }
}

fn arith(op: ArithOp, a: Datum, b: Datum, ty: DataType) -> Result<Datum> {
    if a.is_null() || b.is_null() {
        return Ok(Datum::Null);
    }
    let overflow = || SqlError::NumericOutOfRange(ty.sql_name());
    if ty.is_integer() {
        let (Datum::Int(x), Datum::Int(y)) = (&a, &b) else {
            return Err(type_error("arithmetic", &a));
        };
        let (x, y) = (*x, *y);
        let result = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div | ArithOp::Mod if y == 0 => return Err(SqlError::DivisionByZero),
            ArithOp::Div => x.checked_div(y),
            // i64::MIN % -1 overflows in Rust but is 0 mathematically.
            ArithOp::Mod => Some(x.checked_rem(y).unwrap_or(0)),
        };
        return result
            .ok_or_else(overflow)
            .and_then(|v| check_int_range(v, ty))
            .map(Datum::Int);
    }
    let (Some(x), Some(y)) = (as_float(&a), as_float(&b)) else {
        return Err(type_error("arithmetic", &a));
    };
    let result = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div if y == 0.0 => return Err(SqlError::DivisionByZero),
        ArithOp::Div => x / y,
        ArithOp::Mod if y == 0.0 => return Err(SqlError::DivisionByZero),
        ArithOp::Mod => x % y,
    };
    let result = round_float(result, ty);
    if result.is_infinite() && x.is_finite() && y.is_finite() {
        return Err(overflow());
    }
    Ok(Datum::Float(result))
}

fn call_function(
    func: Func,
    values: Vec<Datum>,
    args: &[ScalarExpr],
    ty: DataType,
) -> Result<Datum> {
    let first = values.first().cloned().unwrap_or(Datum::Null);
    Ok(match func {
        Func::Coalesce => {
            for (value, arg) in values.into_iter().zip(args) {
                if !value.is_null() {
                    return cast(value, arg.data_type(), ty, CastKind::Explicit);
                }
            }
            Datum::Null
        }
        Func::Version => Datum::Text(format!(
            "PostgreSQL 16.0 (Meridian {})",
            env!("CARGO_PKG_VERSION")
        )),
        Func::Lower => match first {
            Datum::Text(s) => Datum::Text(s.to_lowercase()),
            _ => Datum::Null,
        },
        Func::Upper => match first {
            Datum::Text(s) => Datum::Text(s.to_uppercase()),
            _ => Datum::Null,
        },
        Func::Length => match first {
            Datum::Text(s) => Datum::Int(s.chars().count() as i64),
            Datum::Bytes(b) => Datum::Int(b.len() as i64),
            _ => Datum::Null,
        },
        Func::Abs => match first {
            Datum::Int(i) => Datum::Int(
                i.checked_abs()
                    .ok_or_else(|| SqlError::NumericOutOfRange(ty.sql_name()))
                    .and_then(|v| check_int_range(v, ty))?,
            ),
            Datum::Float(f) => Datum::Float(f.abs()),
            _ => Datum::Null,
        },
    })
}

/// One element of a compiled LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LikeToken {
    Char(char),
    AnyOne,
    AnySeq,
}

fn compile_like(pattern: &str) -> Result<Vec<LikeToken>> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => LikeToken::AnySeq,
            '_' => LikeToken::AnyOne,
            '\\' => match chars.next() {
                Some(escaped) => LikeToken::Char(escaped),
                None => {
                    return Err(SqlError::InvalidParameterValue(
                        "LIKE pattern must not end with escape character".into(),
                    ))
                }
            },
            c => LikeToken::Char(c),
        });
    }
    Ok(tokens)
}

/// SQL LIKE matching with `\` as the escape character. Linear-ish backtracking on the last
/// `%` (the classic wildcard algorithm), so no pattern can make it exponential.
pub fn like_match(text: &str, pattern: &str) -> Result<bool> {
    let tokens = compile_like(pattern)?;
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(LikeToken::AnySeq) => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(LikeToken::AnyOne) => {
                t += 1;
                p += 1;
                continue;
            }
            Some(LikeToken::Char(c)) if text.get(t) == Some(c) => {
                t += 1;
                p += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((bp, bt)) => {
                backtrack = Some((bp, bt + 1));
                p = bp + 1;
                t = bt + 1;
            }
            None => return Ok(false),
        }
    }
    Ok(tokens
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|tok| *tok == LikeToken::AnySeq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let m = |t, p| like_match(t, p).unwrap();
        assert!(m("hello", "h%o"));
        assert!(m("hello", "h_llo"));
        assert!(!m("hello", "h_lo"));
        assert!(m("hello", "%"));
        assert!(m("", "%"));
        assert!(!m("", "_"));
        assert!(m("50%", "50\\%"));
        assert!(!m("500", "50\\%"));
        assert!(m("abcabc", "%abc"));
        assert!(m("aXbXc", "%b%c"));
        assert!(like_match("x", "abc\\").is_err());
    }

    #[test]
    fn three_valued_logic() {
        let lit = |d| Box::new(ScalarExpr::Literal(d, DataType::Bool));
        let and = ScalarExpr::And(lit(Datum::Null), lit(Datum::Bool(false)));
        assert_eq!(and.eval(&[], &[]), Ok(Datum::Bool(false)));
        let or = ScalarExpr::Or(lit(Datum::Null), lit(Datum::Bool(false)));
        assert_eq!(or.eval(&[], &[]), Ok(Datum::Null));
        let or = ScalarExpr::Or(lit(Datum::Null), lit(Datum::Bool(true)));
        assert_eq!(or.eval(&[], &[]), Ok(Datum::Bool(true)));
    }

    #[test]
    fn integer_overflow_and_division() {
        let int = |v| Datum::Int(v);
        assert_eq!(
            arith(ArithOp::Add, int(32767), int(1), DataType::Int2).map_err(|e| e.sqlstate()),
            Err("22003")
        );
        assert_eq!(
            arith(ArithOp::Div, int(7), int(-2), DataType::Int4),
            Ok(int(-3))
        );
        assert_eq!(
            arith(ArithOp::Div, int(1), int(0), DataType::Int4).map_err(|e| e.sqlstate()),
            Err("22012")
        );
        assert_eq!(
            arith(ArithOp::Div, int(i64::MIN), int(-1), DataType::Int8).map_err(|e| e.sqlstate()),
            Err("22003")
        );
        assert_eq!(
            arith(ArithOp::Mod, int(i64::MIN), int(-1), DataType::Int8),
            Ok(int(0))
        );
    }
}
