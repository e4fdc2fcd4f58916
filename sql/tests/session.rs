//! Session behaviour that `.slt` files cannot express: retries and conflicts, commit
//! timestamps, parameters, the storage calls plans make, and the one-tablet rule.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use meridian_sql::session::CommandTag;
use meridian_sql::store::{ReadBound, Store, StoreError, Transaction, FIRST_USER_TABLE_ID};
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

async fn error_code(session: &mut Session, sql: &str) -> String {
    match session.execute(sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(e) => e.sqlstate().to_string(),
    }
}

#[tokio::test]
async fn autocommit_retries_conflicts_transparently() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    store.fail_next_commits(3);
    s.execute("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(
        query(&mut s, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(1)]]
    );

    // More conflicts than retries: the client finally sees 40001, and nothing was written.
    store.fail_next_commits(100);
    assert_eq!(
        error_code(&mut s, "INSERT INTO t VALUES (2)").await,
        "40001"
    );
    store.fail_next_commits(0);
    assert_eq!(
        query(&mut s, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(1)]]
    );
}

#[tokio::test]
async fn explicit_transaction_conflict_surfaces_40001_at_commit() {
    let store = MemStore::new();
    let mut a = session(&store);
    let mut b = session(&store);
    a.execute("CREATE TABLE acct (id INT PRIMARY KEY, bal INT)")
        .await
        .unwrap();
    a.execute("INSERT INTO acct VALUES (1, 100), (2, 100)")
        .await
        .unwrap();

    a.execute("BEGIN").await.unwrap();
    assert_eq!(
        query(&mut a, "SELECT bal FROM acct WHERE id = 1").await,
        vec![vec![Datum::Int(100)]]
    );
    b.execute("UPDATE acct SET bal = 0 WHERE id = 1")
        .await
        .unwrap();
    a.execute("UPDATE acct SET bal = bal + 100 WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(a.transaction_status(), TransactionStatus::InTransaction);
    assert_eq!(error_code(&mut a, "COMMIT").await, "40001");
    assert_eq!(a.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        query(&mut a, "SELECT bal FROM acct ORDER BY id").await,
        vec![vec![Datum::Int(0)], vec![Datum::Int(100)]]
    );
}

#[tokio::test]
async fn failed_transaction_refuses_statements_until_rollback() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("BEGIN").await.unwrap();
    assert_eq!(error_code(&mut s, "SELECT * FROM missing").await, "42P01");
    assert_eq!(s.transaction_status(), TransactionStatus::Failed);
    assert_eq!(error_code(&mut s, "SELECT 1").await, "25P02");
    let results = s.execute("COMMIT").await.unwrap();
    assert_eq!(results[0].tag, CommandTag::Rollback);
    assert_eq!(s.transaction_status(), TransactionStatus::Idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_serializable() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("CREATE TABLE counter (id INT PRIMARY KEY, n INT8)")
        .await
        .unwrap();
    s.execute("INSERT INTO counter VALUES (1, 0)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = session(&store);
            for _ in 0..25 {
                s.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        query(&mut s, "SELECT n FROM counter").await,
        vec![vec![Datum::Int(100)]]
    );
}

#[tokio::test]
async fn commit_timestamps_increase() {
    let store = MemStore::new();
    let mut s = session(&store);
    assert_eq!(error_code(&mut s, "SHOW commit_timestamp").await, "55000");
    s.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    s.execute("INSERT INTO t VALUES (1)").await.unwrap();
    let first = query(&mut s, "SHOW commit_timestamp").await;
    s.execute("BEGIN; INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let second = query(&mut s, "SHOW commit_timestamp").await;
    match (&first[..], &second[..]) {
        ([row1], [row2]) => match (&row1[..], &row2[..]) {
            ([Datum::Int(a)], [Datum::Int(b)]) => assert!(a < b && *a > 0),
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    // A read-only statement does not change it.
    query(&mut s, "SELECT * FROM t").await;
    assert_eq!(query(&mut s, "SHOW commit_timestamp").await, second);
}

#[tokio::test]
async fn parameters_take_types_from_context() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("CREATE TABLE t (id INT2 PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    let insert = meridian_sql::session::parse("INSERT INTO t VALUES ($1, $2)").unwrap();
    let params = [Datum::Text("7".into()), Datum::Text("seven".into())];
    s.execute_statement(&insert[0], &params).await.unwrap();
    let described = meridian_sql::session::describe(&store, &insert[0], &[])
        .await
        .unwrap();
    assert_eq!(
        described.params,
        vec![meridian_sql::DataType::Int2, meridian_sql::DataType::Text]
    );

    let select = meridian_sql::session::parse("SELECT name FROM t WHERE id = $1").unwrap();
    let result = s
        .execute_statement(&select[0], &[Datum::Int(7)])
        .await
        .unwrap();
    assert_eq!(result.rows, vec![vec![Datum::Text("seven".into())]]);

    let bad = [Datum::Text("x".into()), Datum::Text("y".into())];
    let err = s.execute_statement(&insert[0], &bad).await.unwrap_err();
    assert_eq!(err.sqlstate(), "22P02");
    let err = s
        .execute_statement(&insert[0], &params[..1])
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "08P01");
}

#[tokio::test]
async fn transactions_spanning_tables_commit_together() {
    let store = MemStore::new();
    let mut s = session(&store);
    s.execute("CREATE TABLE a (id INT PRIMARY KEY); CREATE TABLE b (id INT PRIMARY KEY)")
        .await
        .unwrap();
    s.execute("BEGIN; INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)")
        .await
        .unwrap();
    s.execute("COMMIT").await.unwrap();
    for table in ["a", "b"] {
        assert_eq!(
            query(&mut s, &format!("SELECT count(*) FROM {table}")).await,
            vec![vec![Datum::Int(1)]]
        );
    }
}

/// A storage call the SQL layer made against a user table.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Get,
    Scan { rows: usize },
}

/// Wraps a store and records the calls made on user tables.
struct CountingStore {
    inner: MemStore,
    calls: Arc<Mutex<Vec<Call>>>,
}

struct CountingTxn {
    inner: Box<dyn Transaction>,
    calls: Arc<Mutex<Vec<Call>>>,
}

fn is_user_key(key: &[u8]) -> bool {
    let mut id = [0u8; 4];
    id.iter_mut().zip(key).for_each(|(d, s)| *d = *s);
    u32::from_be_bytes(id) >= FIRST_USER_TABLE_ID
}

#[async_trait]
impl Store for CountingStore {
    async fn begin(&self, priority: Option<u64>) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(CountingTxn {
            inner: self.inner.begin(priority).await?,
            calls: self.calls.clone(),
        }))
    }

    async fn begin_read_only(&self, bound: ReadBound) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(CountingTxn {
            inner: self.inner.begin_read_only(bound).await?,
            calls: self.calls.clone(),
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
impl Transaction for CountingTxn {
    fn priority(&self) -> u64 {
        self.inner.priority()
    }

    fn read_ts(&self) -> Option<u64> {
        self.inner.read_ts()
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if is_user_key(key) {
            self.calls.lock().unwrap().push(Call::Get);
        }
        self.inner.get(key).await
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let rows = self.inner.scan(start, end, limit).await?;
        if is_user_key(start) {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Scan { rows: rows.len() });
        }
        Ok(rows)
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

/// Runs `sql`, returning its row count and the user-table calls it made.
async fn run(s: &mut Session, calls: &Mutex<Vec<Call>>, sql: &str) -> (usize, Vec<Call>) {
    calls.lock().unwrap().clear();
    let results = s
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = results.last().map_or(0, |r| r.rows.len());
    let made = calls.lock().unwrap().clone();
    (rows, made)
}

#[tokio::test]
async fn plans_use_point_reads_bounded_scans_pages_and_early_limits() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(CountingStore {
        inner: MemStore::new(),
        calls: calls.clone(),
    });
    let mut s = Session::new(store);
    s.execute("CREATE TABLE big (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let values: Vec<String> = (0..2500).map(|i| format!("({i}, 'v{i}')")).collect();
    s.execute(&format!("INSERT INTO big VALUES {}", values.join(", ")))
        .await
        .unwrap();

    let (rows, made) = run(&mut s, &calls, "SELECT * FROM big WHERE id = 7").await;
    assert_eq!((rows, made), (1, vec![Call::Get]));

    let (rows, made) = run(
        &mut s,
        &calls,
        "SELECT * FROM big WHERE id >= 10 AND id < 20",
    )
    .await;
    assert_eq!((rows, made), (10, vec![Call::Scan { rows: 10 }]));

    let (rows, made) = run(&mut s, &calls, "SELECT count(*) FROM big").await;
    assert_eq!(rows, 1);
    assert_eq!(
        made,
        vec![
            Call::Scan { rows: 1000 },
            Call::Scan { rows: 1000 },
            Call::Scan { rows: 500 }
        ]
    );

    let (rows, made) = run(&mut s, &calls, "SELECT * FROM big LIMIT 5").await;
    assert_eq!((rows, made), (5, vec![Call::Scan { rows: 1000 }]));

    let (rows, made) = run(&mut s, &calls, "SELECT * FROM big WHERE v = 'v2400'").await;
    assert_eq!(rows, 1);
    assert_eq!(made.len(), 3);

    let (rows, made) = run(&mut s, &calls, "UPDATE big SET v = 'x' WHERE id = 3").await;
    assert_eq!((rows, made), (0, vec![Call::Get]));
}
