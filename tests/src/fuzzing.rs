//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call these), kept here so that the
//! default test run replays every saved input through exactly the same code
//! (`tests/tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must return without
//! panicking, overflowing its stack or allocating without bound; any other outcome is a bug.

use bytes::BytesMut;
use meridian_sql::encoding::{decode_key_datum, decode_row};
use meridian_sql::DataType;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};

/// SQL text as a client sends it: parsed (with the statement limits), and each statement
/// printed back, as error messages and logs do.
pub fn sql_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(statements) = meridian_sql::parser::parse(text) {
        for statement in statements {
            let _ = statement.to_string();
        }
    }
}

/// A client's bytes on a PostgreSQL connection, decoded as pgwire decodes them: once as the
/// first bytes of a connection (SSL request, startup), once as later messages.
pub fn pgwire_frontend(data: &[u8]) {
    for at_start in [true, false] {
        let mut ctx = DecodeContext::default();
        ctx.awaiting_frontend_ssl = at_start;
        ctx.awaiting_frontend_startup = at_start;
        let mut buf = BytesMut::from(data);
        // Each decoded message consumes bytes; stop at the first error or incomplete one.
        for _ in 0..data.len().max(1) {
            match PgWireFrontendMessage::decode(&mut buf, &ctx) {
                Ok(Some(_)) if !buf.is_empty() => continue,
                _ => break,
            }
        }
    }
}

/// Bytes read back from storage: row values, primary-key columns of every type, and MVCC keys
/// and values, as a corrupt or hostile store might hold them.
pub fn stored_bytes(data: &[u8]) {
    let _ = decode_row(data);
    for ty in [
        DataType::Bool,
        DataType::Int2,
        DataType::Int4,
        DataType::Int8,
        DataType::Float4,
        DataType::Float8,
        DataType::Text,
        DataType::Varchar(Some(8)),
        DataType::Bytea,
    ] {
        let mut input = data;
        // A key holds several columns: decode until the input runs out or fails.
        while !input.is_empty() {
            if decode_key_datum(&mut input, ty).is_err() {
                break;
            }
        }
    }
    let _ = meridian_spanserver::storage::mvcc::decode_key(data);
    let _ = meridian_spanserver::storage::mvcc::decode_value(data);
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("sql_text", sql_text),
    ("pgwire_frontend", pgwire_frontend),
    ("stored_bytes", stored_bytes),
];
