//! SQL types ([`DataType`]) and values ([`Datum`]): text input and output in PostgreSQL's
//! formats, casts, and comparison.
//!
//! A `Datum` does not carry its SQL type: every place that holds one (a column, a bound
//! expression) knows the type. All integer types share `Datum::Int(i64)` and both float types
//! share `Datum::Float(f64)`; the declared type is enforced by range checks
//! ([`check_int_range`]) and by rounding to `f32` for REAL. Keeping one physical representation
//! per family makes arithmetic and comparison across widths trivial, as in PostgreSQL where
//! `int2 < int8` just works.
//!
//! Guarantees: parsing and casting never panic on user input; out-of-range integers give
//! 22003, unparsable text gives 22P02, impossible casts give 42846.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};

/// A SQL data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// BOOLEAN.
    Bool,
    /// SMALLINT / INT2.
    Int2,
    /// INTEGER / INT / INT4.
    Int4,
    /// BIGINT / INT8.
    Int8,
    /// REAL / FLOAT4: held as f64, rounded to f32 precision on assignment.
    Float4,
    /// DOUBLE PRECISION / FLOAT8.
    Float8,
    /// TEXT.
    Text,
    /// VARCHAR / VARCHAR(n).
    Varchar(Option<u32>),
    /// BYTEA.
    Bytea,
    /// The type of an untyped literal (`'abc'`, `NULL`) or a parameter whose type is not known
    /// yet; it takes its type from context and defaults to TEXT.
    Unknown,
}

/// The broad kind of a type: values of one family compare and convert freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFamily {
    /// BOOLEAN.
    Bool,
    /// Integer and floating point types.
    Numeric,
    /// TEXT and VARCHAR.
    String,
    /// BYTEA.
    Bytes,
    /// Not known yet.
    Unknown,
}

impl DataType {
    /// The type's name as PostgreSQL prints it in error messages.
    pub fn sql_name(&self) -> String {
        match self {
            DataType::Bool => "boolean".into(),
            DataType::Int2 => "smallint".into(),
            DataType::Int4 => "integer".into(),
            DataType::Int8 => "bigint".into(),
            DataType::Float4 => "real".into(),
            DataType::Float8 => "double precision".into(),
            DataType::Text => "text".into(),
            DataType::Varchar(None) => "character varying".into(),
            DataType::Varchar(Some(n)) => format!("character varying({n})"),
            DataType::Bytea => "bytea".into(),
            DataType::Unknown => "unknown".into(),
        }
    }

    /// The type's family.
    pub fn family(&self) -> TypeFamily {
        match self {
            DataType::Bool => TypeFamily::Bool,
            DataType::Int2
            | DataType::Int4
            | DataType::Int8
            | DataType::Float4
            | DataType::Float8 => TypeFamily::Numeric,
            DataType::Text | DataType::Varchar(_) => TypeFamily::String,
            DataType::Bytea => TypeFamily::Bytes,
            DataType::Unknown => TypeFamily::Unknown,
        }
    }

    /// Whether this is one of the integer types.
    pub fn is_integer(&self) -> bool {
        matches!(self, DataType::Int2 | DataType::Int4 | DataType::Int8)
    }

    /// Whether this is one of the floating point types.
    pub fn is_float(&self) -> bool {
        matches!(self, DataType::Float4 | DataType::Float8)
    }

    /// The type an unknown-typed value becomes when nothing else decides: TEXT.
    pub fn or_text(self) -> DataType {
        if self == DataType::Unknown {
            DataType::Text
        } else {
            self
        }
    }

    /// The result type of arithmetic between two numeric types (PostgreSQL's promotion rules:
    /// the wider integer, or a float if either side is one).
    pub fn numeric_promotion(a: DataType, b: DataType) -> DataType {
        use DataType::*;
        match (a, b) {
            (Float4, Float4) => Float4,
            (x, y) if x.is_float() || y.is_float() => Float8,
            (Int8, _) | (_, Int8) => Int8,
            (Int4, _) | (_, Int4) => Int4,
            _ => Int2,
        }
    }
}

/// A SQL value. See the module doc for how it relates to [`DataType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// A BOOLEAN.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// Any float type.
    Float(f64),
    /// TEXT or VARCHAR.
    Text(String),
    /// BYTEA.
    Bytes(Vec<u8>),
}

/// A row of values, in the column order of whatever produced it.
pub type Row = Vec<Datum>;

/// Checks that `v` fits `ty` (an integer type), returning 22003 if not.
pub fn check_int_range(v: i64, ty: DataType) -> Result<i64> {
    let ok = match ty {
        DataType::Int2 => i16::try_from(v).is_ok(),
        DataType::Int4 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(v)
    } else {
        Err(SqlError::NumericOutOfRange(ty.sql_name()))
    }
}

impl Datum {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// Parses PostgreSQL text input for type `ty` (used for literals, text-format parameters
    /// and casts from text).
    pub fn parse(text: &str, ty: DataType) -> Result<Datum> {
        let invalid = || SqlError::InvalidTextRepresentation {
            type_name: ty.sql_name(),
            value: text.to_string(),
        };
        match ty {
            DataType::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Datum::Bool(true)),
                "f" | "false" | "n" | "no" | "off" | "0" => Ok(Datum::Bool(false)),
                _ => Err(invalid()),
            },
            DataType::Int2 | DataType::Int4 | DataType::Int8 => {
                let trimmed = text.trim();
                let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid());
                }
                let v: i64 = trimmed.parse().map_err(|_| {
                    SqlError::NumericOutOfRange(format!(
                        "value \"{text}\" is out of range for type {}",
                        ty.sql_name()
                    ))
                })?;
                check_int_range(v, ty).map(Datum::Int).map_err(|_| {
                    SqlError::NumericOutOfRange(format!(
                        "value \"{text}\" is out of range for type {}",
                        ty.sql_name()
                    ))
                })
            }
            DataType::Float4 | DataType::Float8 => {
                let trimmed = text.trim();
                // Rust accepts "inf"/"infinity"/"nan" in any case, as PostgreSQL does.
                let v: f64 = trimmed.parse().map_err(|_| invalid())?;
                Ok(Datum::Float(round_float(v, ty)))
            }
            DataType::Text | DataType::Varchar(_) | DataType::Unknown => {
                Ok(Datum::Text(text.to_string()))
            }
            DataType::Bytea => parse_bytea(text).map(Datum::Bytes).ok_or_else(invalid),
        }
    }

    /// Renders the value in PostgreSQL's text output format for type `ty`; `None` for NULL.
    pub fn to_pg_text(&self, ty: DataType) -> Option<String> {
        match self {
            Datum::Null => None,
            Datum::Bool(b) => Some(if *b { "t" } else { "f" }.to_string()),
            Datum::Int(i) => Some(i.to_string()),
            Datum::Float(f) => Some(format_float(*f, ty)),
            Datum::Text(s) => Some(s.clone()),
            Datum::Bytes(b) => {
                let mut s = String::with_capacity(2 + b.len() * 2);
                s.push_str("\\x");
                for byte in b {
                    let _ = write!(s, "{byte:02x}");
                }
                Some(s)
            }
        }
    }

    /// Compares two non-NULL values of compatible types; `None` if either is NULL or the
    /// types are not comparable. Floats order as in PostgreSQL: NaN above everything, and
    /// -0 equal to 0.
    pub fn compare(&self, other: &Datum) -> Option<Ordering> {
        match (self, other) {
            (Datum::Bool(a), Datum::Bool(b)) => Some(a.cmp(b)),
            (Datum::Int(a), Datum::Int(b)) => Some(a.cmp(b)),
            (Datum::Float(a), Datum::Float(b)) => Some(float_cmp(*a, *b)),
            (Datum::Int(a), Datum::Float(b)) => Some(float_cmp(*a as f64, *b)),
            (Datum::Float(a), Datum::Int(b)) => Some(float_cmp(*a, *b as f64)),
            (Datum::Text(a), Datum::Text(b)) => Some(a.cmp(b)),
            (Datum::Bytes(a), Datum::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A total order for sorting: NULLs compare greater than everything (PostgreSQL's
    /// default, "NULLS LAST" for ascending order); callers flip it for NULLS FIRST.
    pub fn sort_cmp(&self, other: &Datum) -> Ordering {
        match (self.is_null(), other.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.compare(other).unwrap_or(Ordering::Equal),
        }
    }
}

/// PostgreSQL's float order: NaN is the greatest value and equal to itself.
pub fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Rounds to `f32` precision for REAL; identity for DOUBLE PRECISION.
pub fn round_float(v: f64, ty: DataType) -> f64 {
    if ty == DataType::Float4 {
        v as f32 as f64
    } else {
        v
    }
}

/// Formats a float the way PostgreSQL 12+ does with the default `extra_float_digits = 1`:
/// the shortest text that reads back to the same value, in exponent form when the decimal
/// exponent is below -4 or at least the type's precision (15 for float8, 6 for float4).
pub fn format_float(v: f64, ty: DataType) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let (sci, plain, max_exp) = if ty == DataType::Float4 {
        let f = v as f32;
        (format!("{f:e}"), format!("{f}"), 6)
    } else {
        (format!("{v:e}"), format!("{v}"), 15)
    };
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return plain;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= max_exp {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        plain
    }
}

/// Parses BYTEA text input: `\x` followed by hex digits, or the escape format where `\\` is a
/// backslash and `\nnn` an octal byte.
fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        return digits
            .chunks(2)
            .map(|pair| match pair {
                [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
                _ => None,
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => {
                let octal = bytes.get(i + 1..i + 4)?;
                if !octal.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    return None;
                }
                let v = octal
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).ok()?);
                i += 4;
            }
        }
    }
    Some(out)
}

/// How a value is being converted: explicit `CAST`/`::` allows more conversions than the
/// implicit assignment of a value to a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastKind {
    /// `CAST(x AS t)` or `x::t`.
    Explicit,
    /// Storing into a column (INSERT, UPDATE SET).
    Assignment,
}

/// Whether a value of type `from` may be converted to `to` in the given context; checked at
/// bind time so mismatches are reported before anything runs.
pub fn can_cast(from: DataType, to: DataType, kind: CastKind) -> bool {
    use TypeFamily as F;
    match (from.family(), to.family()) {
        (F::Unknown, _) => true,
        (a, b) if a == b => true,
        // Every type converts to a string through its text output (PostgreSQL's I/O casts
        // to string types are allowed in assignment too).
        (_, F::String) => true,
        (F::String, _) => kind == CastKind::Explicit,
        (F::Bool, F::Numeric) | (F::Numeric, F::Bool) => {
            kind == CastKind::Explicit && (from == DataType::Int4 || to == DataType::Int4)
        }
        _ => false,
    }
}

/// Converts `value` of type `from` to type `to`. The caller has checked [`can_cast`] at bind
/// time; impossible combinations still return an error rather than panicking.
pub fn cast(value: Datum, from: DataType, to: DataType, kind: CastKind) -> Result<Datum> {
    if value.is_null() {
        return Ok(Datum::Null);
    }
    if !can_cast(from, to, kind) {
        return Err(cast_error(from, to, kind));
    }
    let to_string_type = matches!(to.family(), TypeFamily::String | TypeFamily::Unknown);
    match (value, to) {
        (Datum::Text(s), to) if from.family() != TypeFamily::Bytes => {
            if to_string_type {
                fit_varchar(s, to, kind)
            } else {
                Datum::parse(&s, to)
            }
        }
        (v, to) if to_string_type => {
            let text = if let Datum::Bool(b) = v {
                // `true::text` is 'true', unlike the 't' of the output format.
                if b { "true" } else { "false" }.to_string()
            } else {
                v.to_pg_text(from).unwrap_or_default()
            };
            fit_varchar(text, to, kind)
        }
        (Datum::Int(i), t) if t.is_integer() => check_int_range(i, t).map(Datum::Int),
        (Datum::Int(i), t) if t.is_float() => Ok(Datum::Float(round_float(i as f64, t))),
        (Datum::Float(f), t) if t.is_float() => Ok(Datum::Float(round_float(f, t))),
        (Datum::Float(f), t) if t.is_integer() => {
            let r = f.round_ties_even();
            if !r.is_finite() || r < i64::MIN as f64 || r >= i64::MAX as f64 {
                return Err(SqlError::NumericOutOfRange(t.sql_name()));
            }
            check_int_range(r as i64, t).map(Datum::Int)
        }
        (Datum::Bool(b), DataType::Int4) => Ok(Datum::Int(i64::from(b))),
        (Datum::Int(i), DataType::Bool) => Ok(Datum::Bool(i != 0)),
        (v @ Datum::Bool(_), DataType::Bool) | (v @ Datum::Bytes(_), DataType::Bytea) => Ok(v),
        _ => Err(cast_error(from, to, kind)),
    }
}

fn cast_error(from: DataType, to: DataType, kind: CastKind) -> SqlError {
    match kind {
        CastKind::Explicit => SqlError::CannotCoerce {
            from: from.sql_name(),
            to: to.sql_name(),
        },
        CastKind::Assignment => SqlError::DatatypeMismatch(format!(
            "value of type {} cannot be stored in a column of type {}",
            from.sql_name(),
            to.sql_name()
        )),
    }
}

/// Applies a VARCHAR(n) limit: an error on assignment, truncation on explicit cast (as in
/// PostgreSQL).
fn fit_varchar(s: String, to: DataType, kind: CastKind) -> Result<Datum> {
    if let DataType::Varchar(Some(n)) = to {
        let limit = n as usize;
        if s.chars().count() > limit {
            if kind == CastKind::Assignment {
                return Err(SqlError::StringTooLong(n));
            }
            return Ok(Datum::Text(s.chars().take(limit).collect()));
        }
    }
    Ok(Datum::Text(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ints_with_ranges() {
        assert_eq!(Datum::parse(" 42 ", DataType::Int4), Ok(Datum::Int(42)));
        assert_eq!(
            Datum::parse("40000", DataType::Int2).map_err(|e| e.sqlstate()),
            Err("22003")
        );
        assert_eq!(
            Datum::parse("abc", DataType::Int8).map_err(|e| e.sqlstate()),
            Err("22P02")
        );
        assert_eq!(
            Datum::parse("99999999999999999999", DataType::Int8).map_err(|e| e.sqlstate()),
            Err("22003")
        );
    }

    #[test]
    fn float_output_matches_postgres() {
        assert_eq!(format_float(0.1, DataType::Float8), "0.1");
        assert_eq!(format_float(1e20, DataType::Float8), "1e+20");
        assert_eq!(format_float(1.5e-5, DataType::Float8), "1.5e-05");
        assert_eq!(format_float(123456.0, DataType::Float8), "123456");
        assert_eq!(format_float(2.5, DataType::Float4), "2.5");
        assert_eq!(format_float(f64::NAN, DataType::Float8), "NaN");
        assert_eq!(
            format_float(f64::NEG_INFINITY, DataType::Float8),
            "-Infinity"
        );
    }

    #[test]
    fn bytea_round_trip() {
        let d = Datum::parse("\\x00ff10", DataType::Bytea).unwrap();
        assert_eq!(d, Datum::Bytes(vec![0, 255, 16]));
        assert_eq!(d.to_pg_text(DataType::Bytea).unwrap(), "\\x00ff10");
        assert_eq!(
            Datum::parse("a\\\\b\\001", DataType::Bytea).unwrap(),
            Datum::Bytes(vec![b'a', b'\\', b'b', 1])
        );
        assert!(Datum::parse("\\x0", DataType::Bytea).is_err());
        assert!(Datum::parse("\\9", DataType::Bytea).is_err());
    }

    #[test]
    fn casts() {
        let c = |v, f, t| cast(v, f, t, CastKind::Explicit);
        assert_eq!(
            c(Datum::Float(2.5), DataType::Float8, DataType::Int4),
            Ok(Datum::Int(2))
        );
        assert_eq!(
            c(Datum::Bool(true), DataType::Bool, DataType::Text),
            Ok(Datum::Text("true".into()))
        );
        assert!(cast(
            Datum::Bool(true),
            DataType::Bool,
            DataType::Int4,
            CastKind::Assignment
        )
        .is_err());
        assert_eq!(
            c(
                Datum::Text("abcdef".into()),
                DataType::Text,
                DataType::Varchar(Some(3))
            ),
            Ok(Datum::Text("abc".into()))
        );
        assert_eq!(
            c(Datum::Float(f64::NAN), DataType::Float8, DataType::Int8).map_err(|e| e.sqlstate()),
            Err("22003")
        );
    }
}
