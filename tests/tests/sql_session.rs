//! Session behaviour that `.slt` files cannot express: retries and conflicts, commit
//! timestamps, parameters, and the storage round trips plans make. Every test runs on a real
//! one-node cluster (RocksDB, Raft, the lock table), through the KV client.

mod common;

use common::{query, session};

use std::sync::atomic::Ordering;

use meridian_spanserver::failpoints::COMMIT_CONFLICT;
use meridian_sql::session::CommandTag;
use meridian_sql::{Datum, Session, TransactionStatus};

async fn error_code(session: &mut Session, sql: &str) -> String {
    match session.execute(sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(e) => e.sqlstate().to_string(),
    }
}

#[tokio::test]
async fn autocommit_retries_conflicts_transparently() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // The leader refuses the next three commits as lost conflicts; autocommit retries them.
    let failpoints = cluster.failpoints(0);
    failpoints.arm_times(COMMIT_CONFLICT, 3).unwrap();
    s.execute("INSERT INTO t VALUES (1)").await.unwrap();
    assert!(
        !failpoints.refuse(COMMIT_CONFLICT),
        "all three refusals were used"
    );
    assert_eq!(
        query(&mut s, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(1)]]
    );

    // More conflicts than retries: the client finally sees 40001, and nothing was written.
    failpoints.arm_times(COMMIT_CONFLICT, 100).unwrap();
    assert_eq!(
        error_code(&mut s, "INSERT INTO t VALUES (2)").await,
        "40001"
    );
    failpoints.arm_times(COMMIT_CONFLICT, 0).unwrap();
    assert_eq!(
        query(&mut s, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(1)]]
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn explicit_transaction_conflict_surfaces_40001() {
    let cluster = common::single_node().await;
    let mut a = session(&cluster);
    let mut b = session(&cluster);
    a.execute("CREATE TABLE acct (id INT PRIMARY KEY, bal INT)")
        .await
        .unwrap();
    a.execute("INSERT INTO acct VALUES (1, 100), (2, 100)")
        .await
        .unwrap();

    // b begins first, so it is older and wins conflicts (wound-wait).
    b.execute("BEGIN").await.unwrap();
    a.execute("BEGIN").await.unwrap();
    assert_eq!(
        query(&mut a, "SELECT bal FROM acct WHERE id = 1").await,
        vec![vec![Datum::Int(100)]]
    );
    // b's write needs the row a has read: the older b wounds a and commits.
    b.execute("UPDATE acct SET bal = 0 WHERE id = 1")
        .await
        .unwrap();
    b.execute("COMMIT").await.unwrap();
    // a learns it lost at its next step: this statement or the commit.
    let code = match a
        .execute("UPDATE acct SET bal = bal + 100 WHERE id = 2")
        .await
    {
        Err(e) => {
            assert_eq!(a.transaction_status(), TransactionStatus::Failed);
            a.execute("ROLLBACK").await.unwrap();
            e.sqlstate().to_string()
        }
        Ok(_) => error_code(&mut a, "COMMIT").await,
    };
    assert_eq!(code, "40001");
    assert_eq!(a.transaction_status(), TransactionStatus::Idle);
    assert_eq!(
        query(&mut a, "SELECT bal FROM acct ORDER BY id").await,
        vec![vec![Datum::Int(0)], vec![Datum::Int(100)]]
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn failed_transaction_refuses_statements_until_rollback() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("BEGIN").await.unwrap();
    assert_eq!(error_code(&mut s, "SELECT * FROM missing").await, "42P01");
    assert_eq!(s.transaction_status(), TransactionStatus::Failed);
    assert_eq!(error_code(&mut s, "SELECT 1").await, "25P02");
    let results = s.execute("COMMIT").await.unwrap();
    assert_eq!(results[0].tag, CommandTag::Rollback);
    assert_eq!(s.transaction_status(), TransactionStatus::Idle);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_serializable() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE counter (id INT PRIMARY KEY, n INT8)")
        .await
        .unwrap();
    s.execute("INSERT INTO counter VALUES (1, 0)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let kv = cluster.kv_client(0);
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(kv);
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
    cluster.shutdown().await;
}

#[tokio::test]
async fn commit_timestamps_increase() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
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
    cluster.shutdown().await;
}

#[tokio::test]
async fn parameters_take_types_from_context() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE t (id INT2 PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    let insert = meridian_sql::session::parse("INSERT INTO t VALUES ($1, $2)").unwrap();
    let params = [Datum::Text("7".into()), Datum::Text("seven".into())];
    s.execute_statement(&insert[0], &params).await.unwrap();
    let described = meridian_sql::session::describe(s.schema(), &insert[0], &[])
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
    cluster.shutdown().await;
}

#[tokio::test]
async fn transactions_spanning_tables_commit_together() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
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
    cluster.shutdown().await;
}

/// Runs `sql`; its row count, and the scan round trips and rows it read from user tables.
async fn run(s: &mut Session, kv: &meridian_kv::Client, sql: &str) -> (usize, u64, u64) {
    let stats = kv.router().stats();
    let (scans, rows) = (
        stats.user_scans.load(Ordering::Relaxed),
        stats.user_rows.load(Ordering::Relaxed),
    );
    let results = s
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let count = results.last().map_or(0, |r| r.rows.len());
    (
        count,
        stats.user_scans.load(Ordering::Relaxed) - scans,
        stats.user_rows.load(Ordering::Relaxed) - rows,
    )
}

#[tokio::test]
async fn plans_use_point_reads_bounded_scans_pages_and_early_limits() {
    let cluster = common::single_node().await;
    let kv = cluster.kv_client(0);
    let mut s = Session::new(kv.clone());
    s.execute("CREATE TABLE big (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let values: Vec<String> = (0..2500).map(|i| format!("({i}, 'v{i}')")).collect();
    s.execute(&format!("INSERT INTO big VALUES {}", values.join(", ")))
        .await
        .unwrap();

    // A point read: one round trip, one row.
    assert_eq!(
        run(&mut s, &kv, "SELECT * FROM big WHERE id = 7").await,
        (1, 1, 1)
    );
    // A bounded scan reads exactly its range.
    assert_eq!(
        run(&mut s, &kv, "SELECT * FROM big WHERE id >= 10 AND id < 20").await,
        (10, 1, 10)
    );
    // A full scan reads in pages of 1000 rows.
    assert_eq!(
        run(&mut s, &kv, "SELECT count(*) FROM big").await,
        (1, 3, 2500)
    );
    // A LIMIT stops after the first page.
    let (rows, scans, read) = run(&mut s, &kv, "SELECT * FROM big LIMIT 5").await;
    assert_eq!((rows, scans), (5, 1));
    assert!(read <= 1000, "read {read} rows for LIMIT 5");
    // A filter on a non-key column scans everything.
    let (rows, scans, read) = run(&mut s, &kv, "SELECT * FROM big WHERE v = 'v2400'").await;
    assert_eq!((rows, scans, read), (1, 3, 2500));
    // An update by key reads one row.
    assert_eq!(
        run(&mut s, &kv, "UPDATE big SET v = 'x' WHERE id = 3").await,
        (0, 1, 1)
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn schema_caches_skip_the_catalog_yet_see_every_finished_ddl() {
    let cluster = common::single_node().await;
    // Two sessions with schema caches of their own: two gateways.
    let kv = cluster.kv_client(0);
    let mut a = Session::new(kv.clone());
    let mut b = Session::new(cluster.kv_client(0));
    a.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    // b loads its schema now and caches it ...
    assert_eq!(
        query(&mut b, "SELECT count(*) FROM t").await,
        vec![vec![Datum::Int(0)]]
    );
    // ... yet a DROP that returned on a is seen by b's very next statement.
    a.execute("DROP TABLE t").await.unwrap();
    assert_eq!(error_code(&mut b, "SELECT count(*) FROM t").await, "42P01");
    // And a table created on a is visible on b at once.
    a.execute("CREATE TABLE u (id INT PRIMARY KEY)")
        .await
        .unwrap();
    a.execute("INSERT INTO u VALUES (1)").await.unwrap();
    assert_eq!(
        query(&mut b, "SELECT count(*) FROM u").await,
        vec![vec![Datum::Int(1)]]
    );

    // Statements on a warm cache read no catalog rows: at most a reload per half lease.
    let stats = kv.router().stats();
    let before = stats.system_scans.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let select = meridian_sql::session::parse("SELECT id FROM u WHERE id = $1").unwrap();
    for _ in 0..100 {
        let result = a
            .execute_statement(&select[0], &[Datum::Int(1)])
            .await
            .unwrap();
        assert_eq!(result.rows, vec![vec![Datum::Int(1)]]);
    }
    let catalog_scans = stats.system_scans.load(Ordering::Relaxed) - before;
    let half_leases = started.elapsed().as_millis() as u64
        / (meridian_sql::schema::SCHEMA_LEASE.as_millis() as u64 / 2);
    assert!(
        catalog_scans <= 2 * (half_leases + 1),
        "{catalog_scans} catalog scans for 100 statements in {:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_check_their_keys_at_commit_without_reading_them() {
    let cluster = common::single_node().await;
    let kv = cluster.kv_client(0);
    let mut s = Session::new(kv.clone());
    s.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();

    // A multi-row INSERT reads nothing: its keys are checked when the commit locks them.
    let stats = kv.router().stats();
    let scans = stats.user_scans.load(Ordering::Relaxed);
    s.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();
    assert_eq!(stats.user_scans.load(Ordering::Relaxed), scans);

    // One existing key fails the whole statement, which writes nothing.
    assert_eq!(
        error_code(&mut s, "INSERT INTO t VALUES (4, 'd'), (2, 'again')").await,
        "23505"
    );
    match s.execute("INSERT INTO t VALUES (3, 'x')").await {
        Err(e) => assert_eq!(
            e.to_string(),
            "duplicate key value violates unique constraint \"t_pkey\""
        ),
        Ok(_) => panic!("a duplicate insert succeeded"),
    }
    // A duplicate within the statement is caught before anything is sent.
    assert_eq!(
        error_code(&mut s, "INSERT INTO t VALUES (5, 'e'), (5, 'f')").await,
        "23505"
    );
    assert_eq!(
        query(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec![
            vec![Datum::Int(1), Datum::Text("a".into())],
            vec![Datum::Int(2), Datum::Text("b".into())],
            vec![Datum::Int(3), Datum::Text("c".into())],
        ]
    );
    // A deleted key can be inserted again, in another transaction or the same one.
    s.execute("DELETE FROM t WHERE id = 3").await.unwrap();
    s.execute("INSERT INTO t VALUES (3, 'back')").await.unwrap();
    s.execute("BEGIN; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (2, 'new'); COMMIT")
        .await
        .unwrap();
    // In an explicit transaction the duplicate is reported at COMMIT, and nothing is written.
    s.execute("BEGIN; INSERT INTO t VALUES (6, 'f'); INSERT INTO t VALUES (1, 'dup')")
        .await
        .unwrap();
    assert_eq!(error_code(&mut s, "COMMIT").await, "23505");
    assert_eq!(s.transaction_status(), TransactionStatus::Idle);
    // Inserting an existing key and then deleting (or moving) it must not remove the row the
    // transaction never read: the delete keeps the insert's check.
    s.execute("BEGIN; INSERT INTO t VALUES (1, 'x'); DELETE FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(error_code(&mut s, "COMMIT").await, "23505");
    s.execute("BEGIN; INSERT INTO t VALUES (1, 'x'); UPDATE t SET id = 7 WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(error_code(&mut s, "COMMIT").await, "23505");
    // A key that was free may be inserted and deleted in one transaction.
    s.execute("BEGIN; INSERT INTO t VALUES (8, 'y'); DELETE FROM t WHERE id = 8; COMMIT")
        .await
        .unwrap();
    assert_eq!(
        query(&mut s, "SELECT id, v FROM t ORDER BY id").await,
        vec![
            vec![Datum::Int(1), Datum::Text("a".into())],
            vec![Datum::Int(2), Datum::Text("new".into())],
            vec![Datum::Int(3), Datum::Text("back".into())],
        ]
    );

    // Concurrent inserts of one key: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..4 {
        let kv = cluster.kv_client(0);
        tasks.push(tokio::spawn(async move {
            let mut s = Session::new(kv);
            s.execute(&format!("INSERT INTO t VALUES (10, 'writer {i}')"))
                .await
                .map_err(|e| e.sqlstate().to_string())
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(code) => assert_eq!(code, "23505"),
        }
    }
    assert_eq!(won, 1);
    cluster.shutdown().await;
}

/// A statement may read at most `max_result_bytes` of rows into memory: past it, 54000 and
/// the session goes on; an aggregate takes its scan page by page and is not limited; LIMIT
/// stops the scan early; the setting is validated, shown and reset.
#[tokio::test]
async fn results_are_bounded_by_max_result_bytes_except_streamed_aggregates() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    s.execute("CREATE TABLE wide (id INT8 PRIMARY KEY, pad TEXT)")
        .await
        .expect("create");
    let rows: Vec<String> = (0..400)
        .map(|i| format!("({i}, '{}')", "x".repeat(200)))
        .collect();
    s.execute(&format!("INSERT INTO wide VALUES {}", rows.join(", ")))
        .await
        .expect("insert");
    assert_eq!(
        query(&mut s, "SHOW max_result_bytes").await,
        vec![vec![Datum::Text(
            meridian_sql::limits::DEFAULT_MAX_RESULT_BYTES.to_string()
        )]]
    );
    s.execute("SET max_result_bytes = 20000")
        .await
        .expect("set");
    assert_eq!(error_code(&mut s, "SELECT * FROM wide").await, "54000");
    assert_eq!(
        error_code(&mut s, "SELECT id FROM wide WHERE pad <> ''").await,
        "54000"
    );
    assert_eq!(
        query(&mut s, "SELECT count(*), sum(id) FROM wide").await,
        vec![vec![Datum::Int(400), Datum::Int(79800)]],
        "an aggregate streams its scan"
    );
    assert_eq!(query(&mut s, "SELECT id FROM wide LIMIT 3").await.len(), 3);
    assert_eq!(
        query(&mut s, "SELECT id FROM wide WHERE id < 10")
            .await
            .len(),
        10
    );
    for bad in ["0", "-1", "'lots'", "99999999999999999999"] {
        assert_eq!(
            error_code(&mut s, &format!("SET max_result_bytes = {bad}")).await,
            "22023",
            "{bad}"
        );
    }
    s.execute("RESET max_result_bytes").await.expect("reset");
    assert_eq!(query(&mut s, "SELECT * FROM wide").await.len(), 400);
    cluster.shutdown().await;
}

/// An in-process node's clock is a declared bound that nothing measures: `SHOW clock` warns.
#[tokio::test]
async fn show_clock_warns_of_an_unmeasured_bound() {
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    let rows = query(&mut s, "SHOW clock").await;
    let [row] = rows.as_slice() else {
        panic!("SHOW clock: {rows:?}");
    };
    assert!(
        matches!(&row[0], Datum::Text(t) if t.starts_with("WARNING") && t.contains("1000 µs")),
        "{row:?}"
    );
    cluster.shutdown().await;
}

/// The deepest statement the limits let through still binds, evaluates and drops on a default
/// 2 MiB stack; one level past them is refused with 54001 before it is parsed, and text past
/// the length limit with 54000.
#[tokio::test]
async fn statement_limits_refuse_what_could_exhaust_a_stack() {
    use meridian_sql::limits::{MAX_NESTING, MAX_STATEMENT_BYTES};
    let cluster = common::single_node().await;
    let mut s = session(&cluster);
    // `SELECT 1+1+…+1`: the bound counts one level per `+` and four for the statement.
    let terms = MAX_NESTING - 3;
    let chain = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
    assert_eq!(
        query(&mut s, &chain(terms)).await,
        vec![vec![Datum::Int(terms as i64)]]
    );
    assert_eq!(error_code(&mut s, &chain(terms + 1)).await, "54001");
    assert_eq!(error_code(&mut s, &chain(300_000)).await, "54001");
    let nested = |n: usize| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(query(&mut s, &nested(40)).await, vec![vec![Datum::Int(1)]]);
    assert_eq!(error_code(&mut s, &nested(10_000)).await, "54001");
    let negations = format!("SELECT {}1", "- ".repeat(100_000));
    assert_eq!(error_code(&mut s, &negations).await, "54001");
    let long = format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES));
    assert_eq!(error_code(&mut s, &long).await, "54000");
    // The session is still usable.
    assert_eq!(query(&mut s, "SELECT 2").await, vec![vec![Datum::Int(2)]]);
    cluster.shutdown().await;
}

/// Hidden row ids come from the cluster's id counter: two gateways inserting into a table
/// without a primary key, each past a block of ids, never produce the same id, and inserting
/// costs no read.
#[tokio::test]
async fn hidden_row_ids_are_unique_across_gateways() {
    let cluster = common::single_node().await;
    let mut a = session(&cluster);
    let mut b = session(&cluster);
    a.execute("CREATE TABLE notes (body TEXT)").await.unwrap();
    // Each gateway's second block starts after the other's first: interleave past a block.
    let per_gateway = meridian_kv::unique_ids::BLOCK as usize + 10;
    for (s, name) in [(&mut a, "a"), (&mut b, "b")] {
        let rows: Vec<String> = (0..per_gateway).map(|i| format!("('{name}{i}')")).collect();
        for chunk in rows.chunks(2_000) {
            s.execute(&format!("INSERT INTO notes VALUES {}", chunk.join(",")))
                .await
                .unwrap();
        }
    }
    a.execute("INSERT INTO notes VALUES ('last')")
        .await
        .unwrap();
    let ids = query(&mut a, "SELECT rowid FROM notes").await;
    let distinct: std::collections::BTreeSet<i64> = ids
        .iter()
        .map(|row| match row.as_slice() {
            [Datum::Int(id)] => *id,
            other => panic!("a row id row: {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2 * per_gateway + 1);
    assert_eq!(distinct.len(), ids.len(), "a row id repeated");
    cluster.shutdown().await;
}

/// Users: administrators create, alter and drop them; passwords are stored as SCRAM
/// verifiers; anyone else gets 42501, and root cannot be dropped or demoted.
#[tokio::test]
async fn user_ddl_is_for_administrators_and_stores_verifiers() {
    let cluster = common::single_node().await;
    let mut root = session(&cluster);
    root.execute("CREATE USER alice WITH PASSWORD 'secret'")
        .await
        .unwrap();
    assert_eq!(
        error_code(&mut root, "CREATE USER alice WITH PASSWORD 'x'").await,
        "42710"
    );
    root.execute("CREATE USER IF NOT EXISTS alice")
        .await
        .unwrap();
    let stored = |cluster: &meridian_node::local::LocalCluster, name: &'static str| {
        let client = cluster.kv_client(0);
        async move {
            let mut txn =
                meridian_kv::Txn::from(client.begin_read_only(meridian_kv::ReadBound::Strong));
            meridian_sql::users::get(&mut txn, name).await.unwrap()
        }
    };
    let alice = stored(&cluster, "alice").await.expect("alice exists");
    let verifier = alice.verifier().unwrap().expect("a password");
    assert!(verifier.matches("secret") && !verifier.matches("Secret"));
    assert!(!alice.admin);

    let mut as_alice = session(&cluster);
    as_alice.set_user("alice");
    assert_eq!(error_code(&mut as_alice, "CREATE USER bob").await, "42501");
    assert_eq!(error_code(&mut as_alice, "DROP USER alice").await, "42501");

    root.execute("ALTER USER alice WITH PASSWORD 'other' SUPERUSER")
        .await
        .unwrap();
    let alice = stored(&cluster, "alice").await.expect("alice exists");
    assert!(alice.admin);
    assert!(alice
        .verifier()
        .unwrap()
        .expect("a password")
        .matches("other"));
    as_alice.execute("CREATE USER bob").await.unwrap();

    assert_eq!(error_code(&mut root, "DROP USER root").await, "42501");
    assert_eq!(
        error_code(&mut root, "ALTER USER root WITH NOSUPERUSER").await,
        "42501"
    );
    assert_eq!(error_code(&mut root, "DROP USER nobody").await, "42704");
    root.execute("DROP USER IF EXISTS nobody").await.unwrap();
    // Names fold to lower case unless quoted, as table names do.
    root.execute("CREATE USER Carol").await.unwrap();
    root.execute("DROP USER carol").await.unwrap();
    assert_eq!(error_code(&mut root, "CREATE USER node").await, "42602");
    root.execute("DROP USER alice, bob").await.unwrap();
    assert!(stored(&cluster, "alice").await.is_none());
    assert!(stored(&cluster, "root").await.is_some_and(|r| r.admin));
    cluster.shutdown().await;
}

/// Grants: a user reads and writes a table only with the privilege for it; REVOKE holds as
/// soon as it returns; DDL and splits are for administrators; dropping a user drops its grants.
#[tokio::test]
async fn grants_decide_what_a_user_may_do_to_a_table() {
    let cluster = common::single_node().await;
    let mut root = session(&cluster);
    root.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    root.execute("INSERT INTO t VALUES (1, 10)").await.unwrap();
    root.execute("CREATE USER alice").await.unwrap();
    let mut alice = session(&cluster);
    alice.set_user("alice");

    assert_eq!(error_code(&mut alice, "SELECT v FROM t").await, "42501");
    let text = |v: &str| vec![vec![Datum::Text(v.to_string())]];
    assert_eq!(query(&mut alice, "SHOW is_superuser").await, text("off"));
    assert_eq!(query(&mut alice, "SHOW session_user").await, text("alice"));
    assert_eq!(query(&mut root, "SHOW is_superuser").await, text("on"));
    root.execute("GRANT SELECT ON TABLE t TO alice")
        .await
        .unwrap();
    assert_eq!(
        query(&mut alice, "SELECT v FROM t").await,
        vec![vec![Datum::Int(10)]]
    );
    assert_eq!(
        error_code(&mut alice, "INSERT INTO t VALUES (2, 20)").await,
        "42501"
    );
    assert_eq!(error_code(&mut alice, "UPDATE t SET v = 0").await, "42501");
    assert_eq!(error_code(&mut alice, "DELETE FROM t").await, "42501");
    root.execute("GRANT INSERT, UPDATE ON t TO alice")
        .await
        .unwrap();
    alice.execute("INSERT INTO t VALUES (2, 20)").await.unwrap();
    alice
        .execute("UPDATE t SET v = v + 1 WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(error_code(&mut alice, "DELETE FROM t").await, "42501");

    root.execute("REVOKE SELECT ON t FROM alice").await.unwrap();
    assert_eq!(error_code(&mut alice, "SELECT v FROM t").await, "42501");
    // Without SELECT, nothing that reads the table: UPDATE and DELETE (their WHERE sees the
    // rows), RETURNING, INSERT … SELECT from the table itself. A blind INSERT still works.
    alice.execute("INSERT INTO t VALUES (3, 30)").await.unwrap();
    assert_eq!(
        error_code(&mut alice, "UPDATE t SET v = 0 WHERE id = 3").await,
        "42501"
    );
    assert_eq!(
        error_code(&mut alice, "INSERT INTO t VALUES (4, 40) RETURNING v").await,
        "42501"
    );
    assert_eq!(
        error_code(&mut alice, "INSERT INTO t SELECT id + 100, v FROM t").await,
        "42501"
    );

    assert_eq!(
        error_code(&mut alice, "CREATE TABLE u (id INT PRIMARY KEY)").await,
        "42501"
    );
    assert_eq!(error_code(&mut alice, "DROP TABLE t").await, "42501");
    assert_eq!(
        error_code(&mut alice, "ALTER TABLE t SPLIT AT VALUES (5)").await,
        "42501"
    );
    assert_eq!(
        error_code(&mut alice, "GRANT ALL ON t TO alice").await,
        "42501"
    );
    assert_eq!(
        error_code(&mut root, "GRANT ALL ON t TO nobody").await,
        "42704"
    );
    assert_eq!(
        error_code(&mut root, "GRANT ALL ON missing TO alice").await,
        "42P01"
    );

    // A dropped table's grants go with it: a new table of the same name starts without them.
    root.execute("GRANT ALL ON t TO alice").await.unwrap();
    root.execute("DROP TABLE t").await.unwrap();
    root.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    assert_eq!(error_code(&mut alice, "SELECT v FROM t").await, "42501");

    // A dropped user's grants go with it.
    root.execute("GRANT ALL ON t TO alice").await.unwrap();
    root.execute("DROP USER alice").await.unwrap();
    root.execute("CREATE USER alice").await.unwrap();
    assert_eq!(error_code(&mut alice, "SELECT v FROM t").await, "42501");
    cluster.shutdown().await;
}
