//! Scenario tests for [`mvcc`](super::mvcc) with recorded output (STYLE.md rule 8).
//!
//! Each `spanserver/testdata/mvcc/*.txt` is a script; the runner executes it against a
//! [`MemEngine`] and compares the transcript with the golden file `*.out` next to it. Run with
//! `UPDATE_GOLDEN=1` to rewrite the golden files instead, then read the diff: a golden file is
//! only as good as its review. Every script also runs against a [`RocksEngine`], whose transcript
//! must match the memory engine's.
//!
//! The language, one command a line (`#` starts a comment, blank lines are kept):
//!
//! ```text
//! put <key>@<ts> <value>              write a version (one batch)
//! del <key>@<ts>                      write a tombstone
//! get <key>@<ts>                      mvcc::get
//! scan <start> <end> @<ts> [limit N]  mvcc::scan; end "" is unbounded, no limit means 0
//! newest <start> <end>                mvcc::newest_version_ts_in_range
//! dump                                every raw entry of the Data column family, in order
//! rawput <hex key> <hex value>        a raw engine write, to plant malformed data
//! ```
//!
//! Keys and values are byte strings: `\xHH` is any byte, `\\` a backslash, and `""` the empty
//! string. The transcript echoes each command after `> ` and indents its output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use meridian_truetime::Timestamp;

use super::engine::{Cf, Engine, WriteBatch};
use super::mem::MemEngine;
use super::mvcc::{self, Version};
use super::rocks::RocksEngine;

fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mvcc")
}

#[test]
fn mvcc_scenarios() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(testdata_dir())
        .expect("read testdata/mvcc")
        .map(|entry| entry.expect("read testdata/mvcc entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    scripts.sort();
    assert!(
        !scripts.is_empty(),
        "no scripts in {}",
        testdata_dir().display()
    );

    let mut failures = Vec::new();
    for script_path in &scripts {
        let script = std::fs::read_to_string(script_path).expect("read script");
        let transcript = run(&MemEngine::new(), &script);

        let dir = tempfile::tempdir().expect("tempdir");
        let rocks = RocksEngine::open(dir.path()).expect("open rocksdb");
        let rocks_transcript = run(&rocks, &script);
        if rocks_transcript != transcript {
            failures.push(format!(
                "{}: RocksEngine and MemEngine disagree\n{}",
                script_path.display(),
                first_difference(&transcript, &rocks_transcript)
            ));
        }

        let golden_path = script_path.with_extension("out");
        if update {
            std::fs::write(&golden_path, &transcript).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&golden_path) {
            Ok(golden) if golden == transcript => {}
            Ok(golden) => failures.push(format!(
                "{} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)\n{}",
                script_path.display(),
                first_difference(&golden, &transcript)
            )),
            Err(e) => failures.push(format!(
                "{}: no golden file ({e}); run with UPDATE_GOLDEN=1",
                golden_path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    for line in 1.. {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => break,
            (e, a) if e == a => continue,
            (e, a) => {
                return format!(
                    "first difference at line {line}:\n  expected: {}\n  actual:   {}",
                    e.unwrap_or("<end of file>"),
                    a.unwrap_or("<end of file>")
                )
            }
        }
    }
    "no difference".to_string()
}

/// Runs a script and returns its transcript. Script errors (bad syntax) panic: they are bugs in
/// the test data. Engine errors are part of the transcript.
fn run(engine: &dyn Engine, script: &str) -> String {
    let mut out = String::new();
    for (number, line) in script.lines().enumerate() {
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str("> ");
        out.push_str(command);
        out.push('\n');
        let result = execute(engine, command)
            .unwrap_or_else(|e| panic!("script line {}: {e}: {command}", number + 1));
        for result_line in result {
            out.push_str("  ");
            out.push_str(&result_line);
            out.push('\n');
        }
    }
    out
}

/// Executes one command; `Err` is a malformed command, engine errors are output lines.
fn execute(engine: &dyn Engine, command: &str) -> Result<Vec<String>, String> {
    let tokens: Vec<&str> = command.split_whitespace().collect();
    let mut lines = Vec::new();
    match tokens.as_slice() {
        ["put", key_at, value] => {
            let (key, ts) = parse_key_at(key_at)?;
            write_version(engine, &key, ts, Some(&parse_bytes(value)?), &mut lines);
        }
        ["del", key_at] => {
            let (key, ts) = parse_key_at(key_at)?;
            write_version(engine, &key, ts, None, &mut lines);
        }
        ["get", key_at] => {
            let (key, ts) = parse_key_at(key_at)?;
            match mvcc::get(engine, &key, ts) {
                Ok(Some(version)) => lines.push(format_version(&key, &version)),
                Ok(None) => lines.push("<none>".to_string()),
                Err(e) => lines.push(format!("error: {e}")),
            }
        }
        ["scan", start, end, at, rest @ ..] => {
            let start = parse_bytes(start)?;
            let end = parse_bytes(end)?;
            let ts = parse_ts(at.strip_prefix('@').ok_or("expected @<ts>")?)?;
            let limit = match rest {
                [] => 0,
                ["limit", n] => n.parse().map_err(|e| format!("bad limit: {e}"))?,
                _ => return Err("expected `limit N` or nothing after the timestamp".into()),
            };
            match mvcc::scan(engine, &start, &end, ts, limit) {
                Ok(result) => {
                    lines.extend(result.rows.iter().map(|(k, v)| format_version(k, v)));
                    lines.push(match &result.resume_key {
                        Some(key) => format!("resume at {}", format_bytes(key)),
                        None => "end".to_string(),
                    });
                }
                Err(e) => lines.push(format!("error: {e}")),
            }
        }
        ["newest", start, end] => {
            let start = parse_bytes(start)?;
            let end = parse_bytes(end)?;
            match mvcc::newest_version_ts_in_range(engine, &start, &end) {
                Ok(Some(ts)) => lines.push(format!("@{ts}")),
                Ok(None) => lines.push("<none>".to_string()),
                Err(e) => lines.push(format!("error: {e}")),
            }
        }
        ["dump"] => {
            for item in engine.scan(Cf::Data, b"", None) {
                let (raw_key, raw_value) = match item {
                    Ok(pair) => pair,
                    Err(e) => {
                        lines.push(format!("error: {e}"));
                        break;
                    }
                };
                let decoded = match (mvcc::decode_key(&raw_key), mvcc::decode_value(&raw_value)) {
                    (Ok((key, ts)), Ok(value)) => format_version(&key, &Version { ts, value }),
                    (Err(e), _) | (_, Err(e)) => format!("error: {e}"),
                };
                lines.push(format!(
                    "{} {} => {decoded}",
                    hex(&raw_key),
                    hex(&raw_value)
                ));
            }
        }
        ["rawput", key, value] => {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Data, parse_hex(key)?, parse_hex(value)?);
            if let Err(e) = engine.write(batch, false) {
                lines.push(format!("error: {e}"));
            }
        }
        _ => return Err("unknown command".into()),
    }
    Ok(lines)
}

fn write_version(
    engine: &dyn Engine,
    key: &[u8],
    ts: Timestamp,
    value: Option<&[u8]>,
    lines: &mut Vec<String>,
) {
    let mut batch = WriteBatch::new();
    mvcc::put_version(&mut batch, key, ts, value);
    if let Err(e) = engine.write(batch, false) {
        lines.push(format!("error: {e}"));
    }
}

fn format_version(key: &[u8], version: &Version) -> String {
    let value = match &version.value {
        Some(value) => format_bytes(value),
        None => "<tombstone>".to_string(),
    };
    format!("{}@{} = {value}", format_bytes(key), version.ts)
}

/// `key@ts`, split at the last `@`.
fn parse_key_at(token: &str) -> Result<(Vec<u8>, Timestamp), String> {
    let (key, ts) = token.rsplit_once('@').ok_or("expected <key>@<ts>")?;
    Ok((parse_bytes(key)?, parse_ts(ts)?))
}

fn parse_ts(token: &str) -> Result<Timestamp, String> {
    match token {
        "max" => Ok(Timestamp::MAX),
        _ => token
            .parse()
            .map(Timestamp)
            .map_err(|e| format!("bad timestamp {token:?}: {e}")),
    }
}

fn parse_bytes(token: &str) -> Result<Vec<u8>, String> {
    if token == "\"\"" {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                bytes.push(b'\\');
                rest = tail;
            }
            [b'x', hi, lo, tail @ ..] => {
                let digits = std::str::from_utf8(&[*hi, *lo])
                    .map_err(|e| e.to_string())?
                    .to_owned();
                bytes.push(u8::from_str_radix(&digits, 16).map_err(|e| format!("bad \\x: {e}"))?);
                rest = tail;
            }
            _ => return Err(format!("bad escape in {token:?}")),
        }
    }
    Ok(bytes)
}

/// The inverse of [`parse_bytes`]: printable ASCII as is, everything else (and `"`, so that
/// nothing prints as the empty string's `""`) as `\xHH`.
fn format_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "\"\"".to_string();
    }
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x21..=0x7e if b != b'"' => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

fn parse_hex(token: &str) -> Result<Vec<u8>, String> {
    if token == "\"\"" {
        return Ok(Vec::new());
    }
    if !token.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {token:?}"));
    }
    (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| format!("bad hex {token:?}"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn byte_strings_round_trip() {
    for bytes in [&b""[..], b"a", b"a\x00", b"\\x", b" \xff\x7f", b"\""] {
        assert_eq!(parse_bytes(&format_bytes(bytes)).unwrap(), bytes);
    }
}
