//! Byte encodings of keys and rows.
//!
//! ## Keys
//!
//! A row's key is `table_prefix(table_id) ++ index_id ++ key columns…` where `table_prefix` is
//! the 4-byte big-endian table id ([`table_prefix`], from `meridian_common::keys`), `index_id` is one byte
//! ([`PRIMARY_INDEX_ID`] = 1 for the primary key; secondary indexes will take 2, 3, …), and each
//! key column is encoded so that **byte order equals value order** and each encoding is
//! self-delimiting, so a composite key orders column by column:
//!
//! | type | encoding |
//! |---|---|
//! | BOOL | `0x00` false, `0x01` true |
//! | INT2/4/8 | 8 bytes big-endian of the `i64` with its sign bit flipped (all widths alike, so widening a column later keeps keys valid) |
//! | FLOAT4/8 | 8 bytes: the `f64` bits with the sign bit flipped if positive, all bits flipped if negative; `-0` is stored as `0` and every NaN as the one NaN that sorts last (as in PostgreSQL) |
//! | TEXT/VARCHAR/BYTEA | the bytes with `0x00` escaped as `0x00 0xFF`, then the terminator `0x00 0x01` |
//!
//! NULL is not allowed in a primary key, so keys have no NULL encoding. The same column
//! encodings, each preceded by a type tag (NULL has one), build hash keys for GROUP BY
//! ([`encode_group_key`]): equal values give equal bytes.
//!
//! ## Row values
//!
//! A row's value holds its non-key columns, addressed by **column id** (not position), so
//! adding or dropping a column later does not rewrite existing rows: a column missing from the
//! value is NULL. Format: a version byte (1), then per non-NULL column a varint column id, a
//! one-byte tag, and the payload (zigzag varint for integers, 8 bytes little-endian for floats,
//! varint length + bytes for text and bytea, nothing for booleans whose value is in the tag).
//!
//! Decoders validate lengths and tags and return [`SqlError::Internal`] on corrupt input; they
//! never panic.

use crate::error::{Result, SqlError};
/// The first key of table `id`'s rows: the key layout's table prefix.
pub fn table_prefix(id: u32) -> Vec<u8> {
    meridian_common::keys::table_prefix(meridian_common::TableId(id))
}
use crate::types::{DataType, Datum};

/// The index id of every table's primary index.
pub const PRIMARY_INDEX_ID: u8 = 1;

const ROW_FORMAT_VERSION: u8 = 1;

const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_FLOAT: u8 = 4;
const TAG_TEXT: u8 = 5;
const TAG_BYTES: u8 = 6;
const TAG_NULL: u8 = 0;

/// The key prefix shared by every entry of index `index_id` of table `table_id`.
pub fn index_prefix(table_id: u32, index_id: u8) -> Vec<u8> {
    let mut key = table_prefix(table_id);
    key.push(index_id);
    key
}

/// The smallest key greater than every key that starts with `prefix`, or `None` if there is
/// none (the prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Appends the order-preserving encoding of one key column. NULL is rejected.
pub fn encode_key_datum(out: &mut Vec<u8>, value: &Datum) -> Result<()> {
    match value {
        Datum::Null => {
            return Err(SqlError::Internal(
                "NULL cannot be encoded in a primary key".into(),
            ))
        }
        Datum::Bool(b) => out.push(u8::from(*b)),
        Datum::Int(i) => out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes()),
        Datum::Float(f) => out.extend_from_slice(&encode_float(*f).to_be_bytes()),
        Datum::Text(s) => encode_escaped(out, s.as_bytes()),
        Datum::Bytes(b) => encode_escaped(out, b),
    }
    Ok(())
}

fn encode_float(f: f64) -> u64 {
    let f = if f == 0.0 {
        0.0
    } else if f.is_nan() {
        f64::NAN
    } else {
        f
    };
    let bits = f.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn decode_float(bits: u64) -> f64 {
    if bits >> 63 == 1 {
        f64::from_bits(bits & !(1 << 63))
    } else {
        f64::from_bits(!bits)
    }
}

fn encode_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

fn corrupt(what: &str) -> SqlError {
    SqlError::Internal(format!("corrupt encoding: {what}"))
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if input.len() < n {
        return Err(corrupt("truncated"));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take_u64(input: &mut &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = take(input, 8)?
        .try_into()
        .map_err(|_| corrupt("truncated"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_escaped(input: &mut &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let b = take(input, 1)?[0];
        if b != 0 {
            out.push(b);
            continue;
        }
        match take(input, 1)?[0] {
            0xFF => out.push(0),
            0x01 => return Ok(out),
            _ => return Err(corrupt("bad escape")),
        }
    }
}

/// Decodes one key column of type `ty` from the front of `input`, advancing it.
pub fn decode_key_datum(input: &mut &[u8], ty: DataType) -> Result<Datum> {
    match ty {
        DataType::Bool => match take(input, 1)?[0] {
            0 => Ok(Datum::Bool(false)),
            1 => Ok(Datum::Bool(true)),
            _ => Err(corrupt("bad bool")),
        },
        DataType::Int2 | DataType::Int4 | DataType::Int8 => {
            Ok(Datum::Int((take_u64(input)? ^ (1 << 63)) as i64))
        }
        DataType::Float4 | DataType::Float8 => Ok(Datum::Float(decode_float(take_u64(input)?))),
        DataType::Text | DataType::Varchar(_) | DataType::Unknown => {
            String::from_utf8(decode_escaped(input)?)
                .map(Datum::Text)
                .map_err(|_| corrupt("invalid utf-8"))
        }
        DataType::Bytea => decode_escaped(input).map(Datum::Bytes),
    }
}

/// Encodes a group-by key: each value tagged with its kind, so NULLs group together and
/// values of one kind compare bytewise.
pub fn encode_group_key(values: &[Datum]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        let tag = match v {
            Datum::Null => TAG_NULL,
            Datum::Bool(_) => TAG_TRUE,
            Datum::Int(_) => TAG_INT,
            Datum::Float(_) => TAG_FLOAT,
            Datum::Text(_) => TAG_TEXT,
            Datum::Bytes(_) => TAG_BYTES,
        };
        out.push(tag);
        // NULL is the only value encode_key_datum rejects, and it has no payload here.
        let _ = encode_key_datum(&mut out, v);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take(input, 1)?[0];
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

/// Encodes a row value from `(column id, value)` pairs; NULLs are left out.
pub fn encode_row<'a>(columns: impl IntoIterator<Item = (u32, &'a Datum)>) -> Vec<u8> {
    let mut out = vec![ROW_FORMAT_VERSION];
    for (id, value) in columns {
        if value.is_null() {
            continue;
        }
        put_varint(&mut out, u64::from(id));
        match value {
            Datum::Null => {}
            Datum::Bool(false) => out.push(TAG_FALSE),
            Datum::Bool(true) => out.push(TAG_TRUE),
            Datum::Int(i) => {
                out.push(TAG_INT);
                put_varint(&mut out, ((i << 1) ^ (i >> 63)) as u64);
            }
            Datum::Float(f) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Datum::Text(s) => {
                out.push(TAG_TEXT);
                put_varint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Datum::Bytes(b) => {
                out.push(TAG_BYTES);
                put_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// Decodes a row value into `(column id, value)` pairs (non-NULL columns only).
pub fn decode_row(bytes: &[u8]) -> Result<Vec<(u32, Datum)>> {
    let mut input = bytes;
    if take(&mut input, 1)?[0] != ROW_FORMAT_VERSION {
        return Err(corrupt("unknown row format version"));
    }
    let mut columns = Vec::new();
    while !input.is_empty() {
        let id = u32::try_from(get_varint(&mut input)?).map_err(|_| corrupt("column id"))?;
        let tag = take(&mut input, 1)?[0];
        let value = match tag {
            TAG_FALSE => Datum::Bool(false),
            TAG_TRUE => Datum::Bool(true),
            TAG_INT => {
                let z = get_varint(&mut input)?;
                Datum::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            TAG_FLOAT => {
                let b: [u8; 8] = take(&mut input, 8)?
                    .try_into()
                    .map_err(|_| corrupt("float"))?;
                Datum::Float(f64::from_le_bytes(b))
            }
            TAG_TEXT | TAG_BYTES => {
                let len =
                    usize::try_from(get_varint(&mut input)?).map_err(|_| corrupt("length"))?;
                let payload = take(&mut input, len)?.to_vec();
                if tag == TAG_TEXT {
                    Datum::Text(String::from_utf8(payload).map_err(|_| corrupt("utf-8"))?)
                } else {
                    Datum::Bytes(payload)
                }
            }
            _ => return Err(corrupt("unknown value tag")),
        };
        columns.push((id, value));
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn key(values: &[Datum]) -> Vec<u8> {
        let mut out = index_prefix(100, PRIMARY_INDEX_ID);
        for v in values {
            encode_key_datum(&mut out, v).unwrap();
        }
        out
    }

    fn cmp_rows(a: &[Datum], b: &[Datum]) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            let o = x.compare(y).unwrap();
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    proptest! {
        #[test]
        fn int_keys_order(a: i64, b: i64) {
            prop_assert_eq!(key(&[Datum::Int(a)]).cmp(&key(&[Datum::Int(b)])), a.cmp(&b));
        }

        #[test]
        fn float_keys_order(a: f64, b: f64) {
            let expected = crate::types::float_cmp(a, b);
            prop_assert_eq!(key(&[Datum::Float(a)]).cmp(&key(&[Datum::Float(b)])), expected);
        }

        #[test]
        fn composite_keys_order(a: (Vec<u8>, i64, String), b: (Vec<u8>, i64, String)) {
            let ra = [Datum::Bytes(a.0), Datum::Int(a.1), Datum::Text(a.2)];
            let rb = [Datum::Bytes(b.0), Datum::Int(b.1), Datum::Text(b.2)];
            prop_assert_eq!(key(&ra).cmp(&key(&rb)), cmp_rows(&ra, &rb));
        }

        #[test]
        fn keys_round_trip(a: i64, s: String, bytes: Vec<u8>, f in -1e300f64..1e300, flag: bool) {
            let row = [Datum::Int(a), Datum::Text(s), Datum::Bytes(bytes), Datum::Float(f), Datum::Bool(flag)];
            let types = [DataType::Int8, DataType::Text, DataType::Bytea, DataType::Float8, DataType::Bool];
            let encoded = key(&row);
            let mut input = &encoded[5..];
            for (value, ty) in row.iter().zip(types) {
                prop_assert_eq!(&decode_key_datum(&mut input, ty).unwrap(), value);
            }
            prop_assert!(input.is_empty());
        }

        #[test]
        fn rows_round_trip(a: i64, s: String, bytes: Vec<u8>, f in -1e300f64..1e300, flag: bool, id: u32) {
            let values = [Datum::Int(a), Datum::Text(s), Datum::Null, Datum::Bytes(bytes), Datum::Float(f), Datum::Bool(flag)];
            let ids = [id, 1, 2, 3, 4, 5];
            let encoded = encode_row(ids.iter().copied().zip(values.iter()));
            let decoded = decode_row(&encoded).unwrap();
            let expected: Vec<(u32, Datum)> = ids.iter().copied().zip(values.iter().cloned())
                .filter(|(_, v)| !v.is_null()).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn decoders_never_panic(bytes: Vec<u8>) {
            let _ = decode_row(&bytes);
            let mut input = &bytes[..];
            let _ = decode_key_datum(&mut input, DataType::Text);
        }
    }

    #[test]
    fn negative_zero_and_nan_keys() {
        assert_eq!(key(&[Datum::Float(-0.0)]), key(&[Datum::Float(0.0)]));
        assert!(key(&[Datum::Float(f64::NAN)]) > key(&[Datum::Float(f64::INFINITY)]));
        assert!(key(&[Datum::Float(f64::NEG_INFINITY)]) < key(&[Datum::Float(-1e300)]));
    }

    #[test]
    fn strings_with_zero_bytes_order() {
        let a = key(&[Datum::Text("a".into()), Datum::Int(5)]);
        let b = key(&[Datum::Text("a\0".into()), Datum::Int(1)]);
        let c = key(&[Datum::Text("ab".into()), Datum::Int(0)]);
        assert!(a < b && b < c);
    }

    #[test]
    fn prefix_end_increments() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
