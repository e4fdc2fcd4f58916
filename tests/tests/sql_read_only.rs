//! Read-only transactions, AS OF SYSTEM TIME, max_staleness and ALTER TABLE … SPLIT AT:
//! the behaviour `.slt` files cannot express, because it needs two sessions, timestamps read
//! back from the session, or a look at what the cluster holds. Every test runs on a real
//! one-node cluster.

mod common;

use common::{query, session};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_node::local::LocalCluster;
use meridian_spanserver::failpoints::COMMIT_CONFLICT;
use meridian_sql::encoding::{encode_key_datum, index_prefix, table_prefix, PRIMARY_INDEX_ID};
use meridian_sql::{Datum, Session, TransactionStatus};

async fn count(session: &mut Session, sql: &str) -> i64 {
    match query(session, sql).await.as_slice() {
        [row] => match row.as_slice() {
            [Datum::Int(n)] => *n,
            other => panic!("{sql}: not a count: {other:?}"),
        },
        other => panic!("{sql}: not one row: {other:?}"),
    }
}

/// A SHOW of an INT8 timestamp.
async fn timestamp(session: &mut Session, name: &str) -> u64 {
    let n = count(session, &format!("SHOW {name}")).await;
    u64::try_from(n).expect("timestamps are positive")
}

async fn error(session: &mut Session, sql: &str) -> (String, String) {
    match session.execute(sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(e) => (e.sqlstate().to_string(), e.to_string()),
    }
}

/// The storage key of the row (or key prefix) `values` of table `id`, built independently of
/// the SQL layer's split code.
fn row_key(id: u32, values: &[Datum]) -> Vec<u8> {
    let mut key = index_prefix(id, PRIMARY_INDEX_ID);
    for value in values {
        encode_key_datum(&mut key, value).unwrap();
    }
    key
}

/// Every key stored in table `id`.
async fn stored_keys(cluster: &LocalCluster, id: u32) -> Vec<Vec<u8>> {
    let mut txn = cluster
        .kv_client(0)
        .begin_read_only(meridian_kv::ReadBound::Strong);
    let rows = txn
        .scan(&table_prefix(id), &table_prefix(id + 1), None)
        .await
        .unwrap();
    rows.into_iter().map(|(key, _)| key).collect()
}

/// The keys user tablets start at, other than table boundaries: the split keys.
async fn split_keys(cluster: &LocalCluster) -> Vec<Vec<u8>> {
    let mut keys = common::user_tablet_starts(&cluster.pd_addr().to_string()).await;
    keys.retain(|k| k.len() > 4);
    keys
}

#[tokio::test]
async fn split_at_splits_tablets_at_row_key_prefixes() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE ints (k INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    s.execute("CREATE TABLE pairs (a INT, b TEXT, c FLOAT8, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    let (ints, pairs) = (100, 101);

    let results = s
        .execute("ALTER TABLE ints SPLIT AT VALUES (1), (5)")
        .await
        .unwrap();
    assert_eq!(results[0].tag.to_string(), "ALTER TABLE");
    assert_eq!(
        split_keys(&cluster).await,
        vec![
            row_key(ints, &[Datum::Int(1)]),
            row_key(ints, &[Datum::Int(5)])
        ]
    );

    // A split key equals the storage key of the row with that primary key.
    s.execute("INSERT INTO ints VALUES (5, 'five')")
        .await
        .unwrap();
    assert_eq!(
        stored_keys(&cluster, ints).await,
        vec![row_key(ints, &[Datum::Int(5)])]
    );

    // Composite keys: a whole key, and a prefix of one.
    s.execute("ALTER TABLE pairs SPLIT AT VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    s.execute("ALTER TABLE pairs SPLIT AT VALUES ('3')")
        .await
        .unwrap();
    let whole = row_key(pairs, &[Datum::Int(1), Datum::Text("a".into())]);
    let prefix = row_key(pairs, &[Datum::Int(3)]);
    let recorded = split_keys(&cluster).await;
    assert!(recorded.contains(&whole), "{recorded:?}");
    assert!(recorded.contains(&row_key(pairs, &[Datum::Int(2), Datum::Text("b".into())])));
    assert!(recorded.contains(&prefix));
    assert_eq!(recorded.len(), 5);
    s.execute("INSERT INTO pairs VALUES (1, 'a', 0.5), (3, 'zz', 1.5)")
        .await
        .unwrap();
    let stored = stored_keys(&cluster, pairs).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0], whole);
    assert!(stored[1].starts_with(&prefix) && stored[1] > prefix);

    // Parameters take the key column's type.
    let split = meridian_sql::session::parse("ALTER TABLE ints SPLIT AT VALUES ($1)").unwrap();
    let described = meridian_sql::session::describe(s.schema(), &split[0], &[])
        .await
        .unwrap();
    assert_eq!(described.params, vec![meridian_sql::DataType::Int4]);
    s.execute_statement(&split[0], &[Datum::Text("42".into())])
        .await
        .unwrap();
    assert!(split_keys(&cluster)
        .await
        .contains(&row_key(ints, &[Datum::Int(42)])));
    cluster.shutdown().await;
}

#[tokio::test]
async fn read_only_transaction_reads_a_snapshot() {
    let cluster = common::single_node().await;
    let mut reader = session(&cluster);
    let mut writer = session(&cluster);
    writer
        .execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    reader.execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(count(&mut reader, "SELECT count(*) FROM t").await, 1);
    let read_ts = timestamp(&mut reader, "read_timestamp").await;

    writer.execute("INSERT INTO t VALUES (2)").await.unwrap();
    let commit_ts = timestamp(&mut writer, "commit_timestamp").await;
    assert!(commit_ts > read_ts);

    // The read-only transaction keeps reading its snapshot; an autocommit query sees the new
    // row, as does the reader once its transaction ends.
    assert_eq!(count(&mut reader, "SELECT count(*) FROM t").await, 1);
    assert_eq!(
        count(&mut reader, "SELECT count(*) FROM t WHERE k = 2").await,
        0
    );
    assert_eq!(timestamp(&mut reader, "read_timestamp").await, read_ts);
    assert_eq!(count(&mut writer, "SELECT count(*) FROM t").await, 2);
    reader.execute("COMMIT").await.unwrap();
    assert_eq!(count(&mut reader, "SELECT count(*) FROM t").await, 2);
    assert!(timestamp(&mut reader, "read_timestamp").await >= commit_ts);

    // Writes are refused with 25006 and fail the transaction.
    reader.execute("BEGIN READ ONLY").await.unwrap();
    let (code, message) = error(&mut reader, "INSERT INTO t VALUES (3)").await;
    assert_eq!(code, "25006");
    assert_eq!(message, "cannot execute INSERT in a read-only transaction");
    assert_eq!(reader.transaction_status(), TransactionStatus::Failed);
    reader.execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&mut reader, "SELECT count(*) FROM t").await, 2);
    cluster.shutdown().await;
}

/// `ns` since the epoch as `YYYY-MM-DD HH:MM:SS.fffffffff` UTC (Howard Hinnant's
/// `civil_from_days`).
fn format_utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap();
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

#[tokio::test]
async fn as_of_system_time_reads_the_data_as_of_then() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (1, 'old')").await.unwrap();
    let first = timestamp(&mut s, "commit_timestamp").await;
    s.execute("UPDATE t SET v = 'new' WHERE k = 1; INSERT INTO t VALUES (2, 'two')")
        .await
        .unwrap();

    let at_first = [
        format!("'{first}'"),
        first.to_string(),
        format!("'{first}.0000000000'"),
        format!("'{}'", format_utc(first)),
        format!("'{}+00:00'", format_utc(first)),
    ];
    for value in &at_first {
        let sql = format!("SELECT k, v FROM t AS OF SYSTEM TIME {value} ORDER BY k");
        assert_eq!(
            query(&mut s, &sql).await,
            vec![vec![Datum::Int(1), Datum::Text("old".into())]],
            "{sql}"
        );
        assert_eq!(timestamp(&mut s, "read_timestamp").await, first, "{sql}");
        // At the end of the statement too.
        let sql = format!("SELECT v FROM t WHERE k = 1 AS OF SYSTEM TIME {value}");
        assert_eq!(
            query(&mut s, &sql).await,
            vec![vec![Datum::Text("old".into())]],
            "{sql}"
        );
    }
    // Just before the first commit there was nothing.
    let before = format!("SELECT count(*) FROM t AS OF SYSTEM TIME '{}'", first - 1);
    assert_eq!(count(&mut s, &before).await, 0);
    // A read-only transaction can be started at that time, too.
    s.execute(&format!("BEGIN AS OF SYSTEM TIME '{first}'"))
        .await
        .unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM t").await, 1);
    s.execute("COMMIT").await.unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM t").await, 2);

    // Malformed and future values are refused with clear messages.
    for (sql, expected_code, expected_text) in [
        (
            "SELECT * FROM t AS OF SYSTEM TIME 'soon'",
            "22023",
            "neither a timestamp",
        ),
        (
            "SELECT * FROM t AS OF SYSTEM TIME '10s'",
            "22023",
            "negative interval",
        ),
        (
            "SELECT * FROM t AS OF SYSTEM TIME '2999-01-01'",
            "22023",
            "future",
        ),
        (
            "SELECT * FROM t AS OF SYSTEM TIME '2026-13-01'",
            "22023",
            "out of range",
        ),
        (
            "SELECT * FROM t AS OF SYSTEM TIME now()",
            "42601",
            "string literal",
        ),
        (
            "INSERT INTO t VALUES (3, 'c') AS OF SYSTEM TIME '-1s'",
            "0A000",
            "AS OF SYSTEM TIME on INSERT",
        ),
    ] {
        let (code, message) = error(&mut s, sql).await;
        assert_eq!(code, expected_code, "{sql}: {message}");
        assert!(message.contains(expected_text), "{sql}: {message}");
    }
    s.execute("BEGIN").await.unwrap();
    let (code, message) = error(&mut s, "SELECT * FROM t AS OF SYSTEM TIME '-1s'").await;
    assert_eq!(code, "25001");
    assert!(message.contains("inside a transaction block"), "{message}");
    s.execute("ROLLBACK").await.unwrap();

    // Older than the garbage-collection horizon, or in the future: refused by the tablets.
    for sql in [
        "SELECT * FROM t AS OF SYSTEM TIME '2020-01-01 00:00:00'",
        "SELECT * FROM t AS OF SYSTEM TIME '9000000000000000000'",
    ] {
        let (code, message) = error(&mut s, sql).await;
        assert_eq!(code, "22023", "{sql}: {message}");
    }
    // A future read must not have raised the tablet's read floor: writes still commit at once.
    let started = std::time::Instant::now();
    s.execute("INSERT INTO t VALUES (9, 'after')")
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    cluster.shutdown().await;
}

#[tokio::test]
async fn autocommit_queries_read_lock_free_snapshots() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    let failpoints = cluster.failpoints(0);
    s.execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        error(&mut s, "SHOW read_timestamp").await.0,
        "55000",
        "no read-only transaction yet"
    );

    // Read-write commits all fail now; a plain query does not commit anything that could.
    failpoints.arm_times(COMMIT_CONFLICT, 1000).unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM t").await, 1);
    let read_ts = timestamp(&mut s, "read_timestamp").await;
    // FOR UPDATE runs read-write: it retries, then reports the conflicts.
    assert_eq!(
        error(&mut s, "SELECT * FROM t WHERE k = 1 FOR UPDATE")
            .await
            .0,
        "40001"
    );
    failpoints.arm_times(COMMIT_CONFLICT, 0).unwrap();
    assert_eq!(
        query(&mut s, "SELECT k FROM t FOR UPDATE").await,
        vec![vec![Datum::Int(1)]]
    );
    assert_eq!(timestamp(&mut s, "read_timestamp").await, read_ts);
    cluster.shutdown().await;
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `sql` and returns the wall-clock window around it and the read timestamp it left.
async fn read_ts_of(s: &mut Session, sql: &str) -> (u64, u64, u64) {
    let before = wall_ns();
    s.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let after = wall_ns();
    (before, timestamp(s, "read_timestamp").await, after)
}

/// The read timestamp `sql` chose lies `ago` before the wall clock around it (with the
/// cluster's 1 ms clock uncertainty and a little slack).
async fn assert_reads_ago(s: &mut Session, sql: &str, ago: Duration) -> u64 {
    let slack = Duration::from_millis(5).as_nanos() as u64;
    let ago = ago.as_nanos() as u64;
    let (before, ts, after) = read_ts_of(s, sql).await;
    assert!(
        ts + slack >= before - ago && ts <= after - ago + slack,
        "{sql}: read at {ts}, expected {ago} ns before [{before}, {after}]"
    );
    ts
}

#[tokio::test]
async fn read_timestamps_follow_the_statement_and_max_staleness() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let inserted = timestamp(&mut s, "commit_timestamp").await;
    let now = Duration::ZERO;
    // Autocommit queries and read-only transactions read strongly: now.
    let strong = assert_reads_ago(&mut s, "SELECT * FROM t", now).await;
    // Statements that read-write leave the read timestamp alone.
    for sql in [
        "INSERT INTO t VALUES (2)",
        "SELECT * FROM t FOR UPDATE",
        "BEGIN; SELECT * FROM t; INSERT INTO t VALUES (3); COMMIT",
    ] {
        s.execute(sql).await.unwrap();
        assert_eq!(timestamp(&mut s, "read_timestamp").await, strong, "{sql}");
    }
    assert_reads_ago(
        &mut s,
        "BEGIN READ ONLY; SELECT * FROM t; SELECT 1; COMMIT",
        now,
    )
    .await;
    // Exact staleness, and an exact time.
    assert_reads_ago(
        &mut s,
        "SELECT * FROM t AS OF SYSTEM TIME '-10s'",
        Duration::from_secs(10),
    )
    .await;
    assert_reads_ago(
        &mut s,
        "SELECT * FROM t AS OF SYSTEM TIME '-1m30s'",
        Duration::from_secs(90),
    )
    .await;
    s.execute(&format!("SELECT * FROM t AS OF SYSTEM TIME '{inserted}'"))
        .await
        .unwrap();
    assert_eq!(timestamp(&mut s, "read_timestamp").await, inserted);

    // Bounded staleness: anything from ten seconds ago to now (a one-node cluster's nearest
    // replica is the leader, which serves the freshest time).
    s.execute("SET max_staleness = '10s'").await.unwrap();
    for sql in [
        "SELECT * FROM t",
        "BEGIN READ ONLY; SELECT * FROM t; COMMIT",
        "BEGIN; SET TRANSACTION READ ONLY; SELECT * FROM t; COMMIT",
    ] {
        let (before, ts, after) = read_ts_of(&mut s, sql).await;
        assert!(
            ts + 10_000_000_000 >= before && ts <= after + 5_000_000,
            "{sql}: read at {ts}, outside [{before} - 10s, {after}]"
        );
    }
    // An explicit time wins over max_staleness.
    assert_reads_ago(
        &mut s,
        "SELECT * FROM t AS OF SYSTEM TIME '-10s'",
        Duration::from_secs(10),
    )
    .await;
    s.execute("RESET max_staleness").await.unwrap();
    assert_reads_ago(&mut s, "SELECT * FROM t", now).await;
    cluster.shutdown().await;
}
