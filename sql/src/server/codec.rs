//! Wire encodings: SQL types ↔ PostgreSQL type OIDs, result values in text or binary format,
//! and parameter values from text or binary format.
//!
//! Binary formats follow PostgreSQL's `*send`/`*recv` functions: big-endian integers of the
//! type's width, IEEE floats, one byte for booleans, raw bytes for text and bytea.

use bytes::{BufMut, BytesMut};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

use crate::error::{Result, SqlError};
use crate::plan::OutputColumn;
use crate::types::{DataType, Datum};

/// The PostgreSQL type clients see for a SQL type (untyped values are TEXT).
pub fn pg_type(ty: DataType) -> Type {
    match ty {
        DataType::Bool => Type::BOOL,
        DataType::Int2 => Type::INT2,
        DataType::Int4 => Type::INT4,
        DataType::Int8 => Type::INT8,
        DataType::Float4 => Type::FLOAT4,
        DataType::Float8 => Type::FLOAT8,
        DataType::Text | DataType::Unknown => Type::TEXT,
        DataType::Varchar(_) => Type::VARCHAR,
        DataType::Bytea => Type::BYTEA,
    }
}

/// The SQL type of a parameter type a client declared; `Unknown` for "infer it" (OID 0 or
/// `unknown`).
pub fn from_pg_type(ty: Option<&Type>) -> Result<DataType> {
    let Some(ty) = ty else {
        return Ok(DataType::Unknown);
    };
    Ok(match *ty {
        Type::BOOL => DataType::Bool,
        Type::INT2 => DataType::Int2,
        Type::INT4 => DataType::Int4,
        Type::INT8 => DataType::Int8,
        Type::FLOAT4 => DataType::Float4,
        Type::FLOAT8 => DataType::Float8,
        Type::TEXT | Type::NAME | Type::BPCHAR => DataType::Text,
        Type::VARCHAR => DataType::Varchar(None),
        Type::BYTEA => DataType::Bytea,
        Type::UNKNOWN => DataType::Unknown,
        ref other => {
            return Err(SqlError::unsupported(format!(
                "parameters of type {}",
                other.name()
            )))
        }
    })
}

/// Row description fields for `columns`, with `format(i)` giving column i's format.
pub fn fields(columns: &[OutputColumn], format: impl Fn(usize) -> FieldFormat) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| FieldInfo::new(c.name.clone(), None, None, pg_type(c.data_type), format(i)))
        .collect()
}

/// Encodes one result row for the client.
pub fn encode_row(
    row: &[Datum],
    fields: &[FieldInfo],
    columns: &[OutputColumn],
) -> Result<DataRow> {
    let mut data = BytesMut::with_capacity(16 * row.len());
    for ((value, field), column) in row.iter().zip(fields).zip(columns) {
        let bytes = match field.format() {
            FieldFormat::Text => value.to_pg_text(column.data_type).map(String::into_bytes),
            FieldFormat::Binary => encode_binary(value, column.data_type)?,
        };
        match bytes {
            None => data.put_i32(-1),
            Some(bytes) => {
                let len = i32::try_from(bytes.len())
                    .map_err(|_| SqlError::unsupported("values over 2 GiB"))?;
                data.put_i32(len);
                data.put_slice(&bytes);
            }
        }
    }
    let count =
        i16::try_from(row.len()).map_err(|_| SqlError::unsupported("over 32767 columns"))?;
    Ok(DataRow::new(data, count))
}

fn encode_binary(value: &Datum, ty: DataType) -> Result<Option<Vec<u8>>> {
    let out_of_range = || SqlError::NumericOutOfRange(ty.sql_name());
    Ok(Some(match (value, ty) {
        (Datum::Null, _) => return Ok(None),
        (Datum::Int(i), DataType::Int2) => i16::try_from(*i)
            .map_err(|_| out_of_range())?
            .to_be_bytes()
            .to_vec(),
        (Datum::Int(i), DataType::Int4) => i32::try_from(*i)
            .map_err(|_| out_of_range())?
            .to_be_bytes()
            .to_vec(),
        (Datum::Int(i), DataType::Int8) => i.to_be_bytes().to_vec(),
        (Datum::Float(f), DataType::Float4) => (*f as f32).to_be_bytes().to_vec(),
        (Datum::Float(f), DataType::Float8) => f.to_be_bytes().to_vec(),
        (Datum::Int(i), DataType::Float4) => (*i as f32).to_be_bytes().to_vec(),
        (Datum::Int(i), DataType::Float8) => (*i as f64).to_be_bytes().to_vec(),
        (Datum::Bool(b), DataType::Bool) => vec![u8::from(*b)],
        (Datum::Bytes(b), DataType::Bytea) => b.clone(),
        (Datum::Text(s), _) => s.as_bytes().to_vec(),
        // Anything else travels as its text form (e.g. a value in an untyped column).
        (other, _) => other.to_pg_text(ty).unwrap_or_default().into_bytes(),
    }))
}

/// Decodes one parameter value sent in `binary` or text format for a parameter of type `ty`.
/// Text values stay `Datum::Text` (the session parses them as the bound type).
pub fn decode_param(bytes: Option<&[u8]>, binary: bool, ty: DataType) -> Result<Datum> {
    let Some(bytes) = bytes else {
        return Ok(Datum::Null);
    };
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map(Datum::Text)
            .map_err(|_| SqlError::InvalidTextRepresentation {
                type_name: ty.sql_name(),
                value: String::from_utf8_lossy(bytes).into_owned(),
            })
    };
    if !binary {
        return text(bytes);
    }
    let bad_length = || {
        SqlError::ProtocolViolation(format!(
            "incorrect binary data length {} for a parameter of type {}",
            bytes.len(),
            ty.sql_name()
        ))
    };
    Ok(match ty {
        DataType::Bool => match bytes {
            [b] => Datum::Bool(*b != 0),
            _ => return Err(bad_length()),
        },
        DataType::Int2 => Datum::Int(i64::from(i16::from_be_bytes(
            bytes.try_into().map_err(|_| bad_length())?,
        ))),
        DataType::Int4 => Datum::Int(i64::from(i32::from_be_bytes(
            bytes.try_into().map_err(|_| bad_length())?,
        ))),
        DataType::Int8 => Datum::Int(i64::from_be_bytes(
            bytes.try_into().map_err(|_| bad_length())?,
        )),
        DataType::Float4 => Datum::Float(f64::from(f32::from_be_bytes(
            bytes.try_into().map_err(|_| bad_length())?,
        ))),
        DataType::Float8 => Datum::Float(f64::from_be_bytes(
            bytes.try_into().map_err(|_| bad_length())?,
        )),
        DataType::Bytea => Datum::Bytes(bytes.to_vec()),
        DataType::Text | DataType::Varchar(_) | DataType::Unknown => text(bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip() {
        for (value, ty) in [
            (Datum::Int(-7), DataType::Int2),
            (Datum::Int(1 << 20), DataType::Int4),
            (Datum::Int(i64::MIN), DataType::Int8),
            (Datum::Float(1.5), DataType::Float4),
            (Datum::Float(-0.1), DataType::Float8),
            (Datum::Bool(true), DataType::Bool),
            (Datum::Bytes(vec![0, 1, 2]), DataType::Bytea),
        ] {
            let bytes = encode_binary(&value, ty).unwrap();
            assert_eq!(decode_param(bytes.as_deref(), true, ty).unwrap(), value);
        }
        assert!(decode_param(Some(&[1, 2, 3]), true, DataType::Int4).is_err());
        assert!(encode_binary(&Datum::Int(70000), DataType::Int2).is_err());
    }
}
