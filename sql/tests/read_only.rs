//! Read-only transactions, AS OF SYSTEM TIME, max_staleness and ALTER TABLE … SPLIT AT:
//! the behaviour `.slt` files cannot express, because it needs two sessions, timestamps read
//! back from the session, or a look at what the store was asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use meridian_sql::encoding::{encode_key_datum, index_prefix, PRIMARY_INDEX_ID};
use meridian_sql::store::{
    table_prefix, ReadBound, Store, StoreError, Transaction, FIRST_USER_TABLE_ID,
};
use meridian_sql::{Datum, MemStore, Session, TransactionStatus};

fn session(store: &MemStore) -> Session {
    Session::new(Arc::new(store.clone()))
}

async fn query(session: &mut Session, sql: &str) -> Vec<Vec<Datum>> {
    let results = session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    results.last().map(|r| r.rows.clone()).unwrap_or_default()
}

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
async fn stored_keys(store: &MemStore, id: u32) -> Vec<Vec<u8>> {
    let mut txn = store.begin(None).await.unwrap();
    let rows = txn
        .scan(&table_prefix(id), &table_prefix(id + 1), None)
        .await
        .unwrap();
    txn.rollback().await;
    rows.into_iter().map(|(key, _)| key).collect()
}

#[tokio::test]
async fn split_at_asks_the_store_for_row_key_prefixes() {
    let store = MemStore::new();
    let mut s = session(&store);
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
        store.split_keys(),
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
        stored_keys(&store, ints).await,
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
    let recorded = store.split_keys();
    assert!(recorded.contains(&whole), "{recorded:?}");
    assert!(recorded.contains(&row_key(pairs, &[Datum::Int(2), Datum::Text("b".into())])));
    assert!(recorded.contains(&prefix));
    assert_eq!(recorded.len(), 5);
    s.execute("INSERT INTO pairs VALUES (1, 'a', 0.5), (3, 'zz', 1.5)")
        .await
        .unwrap();
    let stored = stored_keys(&store, pairs).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0], whole);
    assert!(stored[1].starts_with(&prefix) && stored[1] > prefix);

    // Parameters take the key column's type.
    let split = meridian_sql::session::parse("ALTER TABLE ints SPLIT AT VALUES ($1)").unwrap();
    let described = meridian_sql::session::describe(&store, &split[0], &[])
        .await
        .unwrap();
    assert_eq!(described.params, vec![meridian_sql::DataType::Int4]);
    s.execute_statement(&split[0], &[Datum::Text("42".into())])
        .await
        .unwrap();
    assert!(store
        .split_keys()
        .contains(&row_key(ints, &[Datum::Int(42)])));
}

#[tokio::test]
async fn read_only_transaction_reads_a_snapshot() {
    let store = MemStore::new();
    let mut reader = session(&store);
    let mut writer = session(&store);
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
    let store = MemStore::new();
    let mut s = session(&store);
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
}

#[tokio::test]
async fn autocommit_queries_read_lock_free_snapshots() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        error(&mut s, "SHOW read_timestamp").await.0,
        "55000",
        "no read-only transaction yet"
    );

    // Read-write commits all fail now; a plain query does not commit anything that could.
    store.fail_next_commits(1000);
    assert_eq!(count(&mut s, "SELECT count(*) FROM t").await, 1);
    let read_ts = timestamp(&mut s, "read_timestamp").await;
    // FOR UPDATE runs read-write: it retries, then reports the conflicts.
    assert_eq!(
        error(&mut s, "SELECT * FROM t WHERE k = 1 FOR UPDATE")
            .await
            .0,
        "40001"
    );
    store.fail_next_commits(0);
    assert_eq!(
        query(&mut s, "SELECT k FROM t FOR UPDATE").await,
        vec![vec![Datum::Int(1)]]
    );
    assert_eq!(timestamp(&mut s, "read_timestamp").await, read_ts);
}

/// Wraps a [`MemStore`], recording the bound of every read-only transaction that reads a user
/// table and failing the next such reads with a retryable error on request. (Catalog lookups are
/// read-only transactions too; they are neither recorded nor failed.)
struct RecordingStore {
    inner: MemStore,
    bounds: Arc<Mutex<Vec<ReadBound>>>,
    failing_reads: Arc<AtomicUsize>,
}

struct FlakyReadOnly {
    inner: Box<dyn Transaction>,
    failing_reads: Arc<AtomicUsize>,
    bound: ReadBound,
    bounds: Arc<Mutex<Vec<ReadBound>>>,
    recorded: bool,
}

impl FlakyReadOnly {
    /// Called before a read of `key`: records the bound once and maybe fails, for user tables.
    fn before_read(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if key < table_prefix(FIRST_USER_TABLE_ID).as_slice() {
            return Ok(());
        }
        if !self.recorded {
            self.recorded = true;
            self.bounds.lock().unwrap().push(self.bound);
        }
        self.maybe_fail()
    }

    fn maybe_fail(&self) -> Result<(), StoreError> {
        let left = self
            .failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match left {
            Ok(_) => Err(StoreError::Retryable("injected read failure".into())),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait]
impl Store for RecordingStore {
    async fn begin(&self, priority: Option<u64>) -> Result<Box<dyn Transaction>, StoreError> {
        self.inner.begin(priority).await
    }

    async fn begin_read_only(&self, bound: ReadBound) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(FlakyReadOnly {
            inner: self.inner.begin_read_only(bound).await?,
            failing_reads: self.failing_reads.clone(),
            bound,
            bounds: self.bounds.clone(),
            recorded: false,
        }))
    }

    async fn create_table_range(&self) -> Result<u32, StoreError> {
        self.inner.create_table_range().await
    }

    async fn split_at(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.inner.split_at(keys).await
    }
}

#[async_trait]
impl Transaction for FlakyReadOnly {
    fn priority(&self) -> u64 {
        self.inner.priority()
    }

    fn read_ts(&self) -> Option<u64> {
        self.inner.read_ts()
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.before_read(key)?;
        self.inner.get(key).await
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.before_read(start)?;
        self.inner.scan(start, end, limit).await
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.inner.put(key, value)
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.inner.delete(key)
    }

    async fn commit(&mut self) -> Result<Option<u64>, StoreError> {
        self.inner.commit().await
    }

    async fn rollback(&mut self) {
        self.inner.rollback().await
    }
}

fn recording_store() -> (Session, Arc<Mutex<Vec<ReadBound>>>, Arc<AtomicUsize>) {
    let bounds = Arc::new(Mutex::new(Vec::new()));
    let failing_reads = Arc::new(AtomicUsize::new(0));
    let store = RecordingStore {
        inner: MemStore::new(),
        bounds: bounds.clone(),
        failing_reads: failing_reads.clone(),
    };
    (Session::new(Arc::new(store)), bounds, failing_reads)
}

/// Runs `sql`, returning the bounds of the read-only transactions it started.
async fn bounds_of(s: &mut Session, bounds: &Mutex<Vec<ReadBound>>, sql: &str) -> Vec<ReadBound> {
    bounds.lock().unwrap().clear();
    s.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    bounds.lock().unwrap().clone()
}

#[tokio::test]
async fn read_bounds_follow_the_statement_and_max_staleness() {
    let (mut s, bounds, _) = recording_store();
    s.execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let ten = Duration::from_secs(10);
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t").await,
        vec![ReadBound::Strong]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "INSERT INTO t VALUES (2)").await,
        vec![]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t FOR UPDATE").await,
        vec![]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "BEGIN READ ONLY; SELECT * FROM t; SELECT 1; COMMIT"
        )
        .await,
        vec![ReadBound::Strong]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t AS OF SYSTEM TIME '-10s'").await,
        vec![ReadBound::ExactStaleness(ten)]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "SELECT * FROM t AS OF SYSTEM TIME '-1m30s'"
        )
        .await,
        vec![ReadBound::ExactStaleness(Duration::from_secs(90))]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "SELECT * FROM t AS OF SYSTEM TIME '2020-01-01 00:00:00'"
        )
        .await,
        vec![ReadBound::At(1_577_836_800_000_000_000)]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "SELECT * FROM t AS OF SYSTEM TIME '1577836800000000001'"
        )
        .await,
        vec![ReadBound::At(1_577_836_800_000_000_001)]
    );

    assert_eq!(
        bounds_of(&mut s, &bounds, "SET max_staleness = '10s'").await,
        vec![]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t").await,
        vec![ReadBound::MaxStaleness(ten)]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "BEGIN READ ONLY; SELECT * FROM t; COMMIT").await,
        vec![ReadBound::MaxStaleness(ten)]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "BEGIN; SET TRANSACTION READ ONLY; SELECT * FROM t; COMMIT"
        )
        .await,
        vec![ReadBound::MaxStaleness(ten)]
    );
    // An explicit time wins over max_staleness; read-write transactions ignore it.
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t AS OF SYSTEM TIME '-10s'").await,
        vec![ReadBound::ExactStaleness(ten)]
    );
    assert_eq!(
        bounds_of(
            &mut s,
            &bounds,
            "BEGIN; SELECT * FROM t; INSERT INTO t VALUES (3); COMMIT"
        )
        .await,
        vec![]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SET max_staleness = '500ms'").await,
        vec![]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t").await,
        vec![ReadBound::MaxStaleness(Duration::from_millis(500))]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "RESET max_staleness").await,
        vec![]
    );
    assert_eq!(
        bounds_of(&mut s, &bounds, "SELECT * FROM t").await,
        vec![ReadBound::Strong]
    );
}

#[tokio::test]
async fn autocommit_read_only_queries_retry_conflicts() {
    let (mut s, _, failing_reads) = recording_store();
    s.execute("CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    failing_reads.store(3, Ordering::SeqCst);
    assert_eq!(count(&mut s, "SELECT count(*) FROM t").await, 1);
    assert_eq!(failing_reads.load(Ordering::SeqCst), 0);

    failing_reads.store(1000, Ordering::SeqCst);
    assert_eq!(error(&mut s, "SELECT count(*) FROM t").await.0, "40001");
    failing_reads.store(0, Ordering::SeqCst);

    // In an explicit read-only transaction the application retries.
    s.execute("BEGIN READ ONLY").await.unwrap();
    failing_reads.store(1, Ordering::SeqCst);
    assert_eq!(error(&mut s, "SELECT count(*) FROM t").await.0, "40001");
    assert_eq!(s.transaction_status(), TransactionStatus::Failed);
    s.execute("ROLLBACK").await.unwrap();
}
