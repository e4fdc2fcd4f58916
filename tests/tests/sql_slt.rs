//! Runs the `.slt` files in `tests/slt/` against a [`Session`] on a fresh one-node cluster each
//! (the real store: RocksDB, Raft, locks, the KV client).
//!
//! The format is a small subset of sqllogictest. Records are separated by blank lines:
//!
//! ```text
//! statement ok
//! <sql>
//!
//! statement error <sqlstate>
//! <sql>
//!
//! query <one type letter per column> [rowsort]
//! <sql>
//! ----
//! <expected rows: values separated by single spaces; NULL for null, (empty) for ''>
//! ```
//!
//! `# ...` lines are comments. SQL may span lines. A query's result is compared row by row in
//! order (after sorting both sides for `rowsort`). Every failure is reported with its file
//! and line, and the test fails if there is any.

mod common;

use std::path::Path;

use meridian_sql::{Datum, Session, SqlError};

#[derive(Debug)]
enum Expect {
    Ok,
    Error(String),
    Rows {
        columns: usize,
        rowsort: bool,
        rows: Vec<String>,
    },
}

#[derive(Debug)]
struct Record {
    line: usize,
    sql: String,
    expect: Expect,
}

fn parse_file(text: &str) -> Result<Vec<Record>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        let expect = match words.as_slice() {
            ["statement", "ok"] => Expect::Ok,
            ["statement" | "query", "error", code] => Expect::Error(code.to_string()),
            ["query", types, rest @ ..] => {
                if i >= lines.len() || lines[i].trim() != "----" {
                    return Err(format!("line {start}: query without ----"));
                }
                i += 1;
                let mut rows = Vec::new();
                while i < lines.len() && !lines[i].trim().is_empty() {
                    rows.push(lines[i].trim_end().to_string());
                    i += 1;
                }
                Expect::Rows {
                    columns: types.len(),
                    rowsort: rest.contains(&"rowsort"),
                    rows,
                }
            }
            _ => return Err(format!("line {start}: unknown record {line:?}")),
        };
        records.push(Record {
            line: start,
            sql,
            expect,
        });
    }
    Ok(records)
}

fn render(value: &Datum, ty: meridian_sql::DataType) -> String {
    match value.to_pg_text(ty) {
        None => "NULL".into(),
        Some(s) if s.is_empty() => "(empty)".into(),
        Some(s) => s,
    }
}

async fn run_record(session: &mut Session, record: &Record) -> Result<(), String> {
    let outcome = session.execute(&record.sql).await;
    match (&record.expect, outcome) {
        (Expect::Ok, Ok(_)) => Ok(()),
        (Expect::Ok, Err(e)) => Err(format!("expected ok, got {} {e}", e.sqlstate())),
        (Expect::Error(code), Err(e)) if e.sqlstate() == code => Ok(()),
        (Expect::Error(code), Err(e)) => {
            Err(format!("expected error {code}, got {} {e}", e.sqlstate()))
        }
        (Expect::Error(code), Ok(_)) => Err(format!("expected error {code}, got success")),
        (Expect::Rows { .. }, Err(e)) => Err(format!("query failed: {} {e}", e.sqlstate())),
        (
            Expect::Rows {
                columns,
                rowsort,
                rows,
            },
            Ok(results),
        ) => {
            let result = results.last().ok_or("no result")?;
            let described = result
                .columns
                .as_ref()
                .ok_or("statement returned no rows")?;
            if described.len() != *columns {
                return Err(format!(
                    "expected {columns} columns, got {}",
                    described.len()
                ));
            }
            let mut actual: Vec<String> = result
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(described)
                        .map(|(v, c)| render(v, c.data_type))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let mut expected = rows.clone();
            if *rowsort {
                actual.sort();
                expected.sort();
            }
            if actual == expected {
                Ok(())
            } else {
                Err(format!(
                    "wrong result\n--- expected\n{}\n--- actual\n{}",
                    expected.join("\n"),
                    actual.join("\n")
                ))
            }
        }
    }
}

async fn run_file(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let records = match parse_file(&text) {
        Ok(records) => records,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let cluster = common::single_node().await;
    let mut session = Session::new(cluster.kv_client(0));
    let mut failures = Vec::new();
    for record in &records {
        if let Err(message) = run_record(&mut session, record).await {
            failures.push(format!(
                "{}:{}: {}\n{}",
                path.display(),
                record.line,
                record.sql,
                message
            ));
        }
    }
    drop(session);
    cluster.shutdown().await;
    failures
}

#[tokio::test]
async fn slt_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("slt/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for path in &paths {
        failures.extend(run_file(path).await);
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The runner itself must be able to fail: a wrong expectation is reported.
#[tokio::test]
async fn runner_detects_wrong_results() {
    let records = parse_file("query I\nSELECT 1\n----\n2\n\nstatement error 42601\nSELECT 1\n")
        .expect("parses");
    let cluster = common::single_node().await;
    let mut session = Session::new(cluster.kv_client(0));
    for record in &records {
        assert!(run_record(&mut session, record).await.is_err());
    }
    drop(session);
    cluster.shutdown().await;
    let _: Option<SqlError> = None;
}
