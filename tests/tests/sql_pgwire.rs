//! Drives [`meridian_sql::serve`] with a real PostgreSQL driver (tokio-postgres): simple and
//! extended protocol, text and binary values, command tags, SQLSTATEs, transaction status, and
//! that the connection stays usable after every error.

mod common;

use meridian_node::local::LocalCluster;
use meridian_spanserver::failpoints::COMMIT_CONFLICT;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A one-node cluster, reached through its SQL listener.
struct Server {
    port: u16,
    cluster: LocalCluster,
}

async fn start() -> Server {
    let cluster = common::single_node().await;
    Server {
        port: cluster.addrs(0).sql.port(),
        cluster,
    }
}

impl Server {
    async fn connect(&self) -> Client {
        let config = format!(
            "host=127.0.0.1 port={} user=root dbname=meridian",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&config, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    async fn shutdown(self) {
        tokio::time::timeout(std::time::Duration::from_secs(30), self.cluster.shutdown())
            .await
            .expect("the cluster stops");
    }

    /// Makes the tablet leader refuse the next `n` commits as lost conflicts.
    fn fail_next_commits(&self, n: u32) {
        self.cluster
            .failpoints(0)
            .arm_times(COMMIT_CONFLICT, n)
            .expect("arm");
    }

    /// How many tablets hold user tables.
    async fn user_tablets(&self) -> usize {
        common::user_tablets(&self.cluster.pd_addr().to_string()).await
    }
}

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|db| db.code().code().to_string())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

/// The connection still answers, through both protocols.
async fn assert_usable(client: &Client) {
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(matches!(rows.get(1), Some(SimpleQueryMessage::Row(r)) if r.get(0) == Some("1")));
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

fn tags(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_and_extended_queries() {
    let server = start().await;
    let client = server.connect().await;

    // The harness's readiness probe works on an empty database.
    let empty = client.simple_query("SHOW TABLES").await.unwrap();
    assert!(simple_rows(&empty).is_empty());

    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, name TEXT, small INT2, big INT8, \
             f FLOAT8, r REAL, ok BOOL, data BYTEA)",
        )
        .await
        .unwrap();
    let inserted = client
        .simple_query("INSERT INTO t (id, name) VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    assert_eq!(tags(&inserted), vec![2]);

    // Prepared statement with inferred parameter types.
    let insert = client
        .prepare("INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .await
        .unwrap();
    let types: Vec<String> = insert
        .params()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(
        types,
        ["int4", "text", "int2", "int8", "float8", "float4", "bool", "bytea"]
    );
    let n = client
        .execute(
            &insert,
            &[
                &3i32,
                &"three",
                &7i16,
                &(1i64 << 40),
                &2.5f64,
                &1.5f32,
                &true,
                &vec![0u8, 255],
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Binary results.
    let row = client
        .query_one(
            "SELECT id, name, small, big, f, r, ok, data FROM t WHERE id = $1",
            &[&3i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "three");
    assert_eq!(row.get::<_, i16>(2), 7);
    assert_eq!(row.get::<_, i64>(3), 1 << 40);
    assert_eq!(row.get::<_, f64>(4), 2.5);
    assert_eq!(row.get::<_, f32>(5), 1.5);
    assert!(row.get::<_, bool>(6));
    assert_eq!(row.get::<_, Vec<u8>>(7), vec![0u8, 255]);
    let row = client
        .query_one("SELECT name, small FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i16>>(1), None);

    // Text parameters and a text comparison.
    let rows = client
        .query(
            "SELECT id FROM t WHERE name = $1 OR name = $2 ORDER BY id",
            &[&"one", &"three"],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 3]);

    // Text results through the simple protocol.
    let text = client
        .simple_query("SELECT id, name, f, ok, data FROM t WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&text),
        vec![vec![
            Some("3".to_string()),
            Some("three".to_string()),
            Some("2.5".to_string()),
            Some("t".to_string()),
            Some("\\x00ff".to_string())
        ]]
    );

    // Command tags.
    assert_eq!(
        client
            .execute("UPDATE t SET small = 1 WHERE id <= 2", &[])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        client
            .execute("DELETE FROM t WHERE id = 2", &[])
            .await
            .unwrap(),
        1
    );
    let returned = client
        .query(
            "INSERT INTO t (id, name) VALUES ($1, 'four') RETURNING id, name",
            &[&4i32],
        )
        .await
        .unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].get::<_, String>(1), "four");
    let messages = client
        .simple_query("SELECT * FROM t; DELETE FROM t WHERE id > 3")
        .await
        .unwrap();
    assert_eq!(tags(&messages), vec![3, 1]);

    // Explicit transactions through the driver.
    let mut client = client;
    let txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO t (id, name) VALUES (10, 'ten')", &[])
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    let txn = client.transaction().await.unwrap();
    txn.execute("INSERT INTO t (id, name) VALUES (11, 'eleven')", &[])
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM t WHERE id >= 10", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    let ts: i64 = client
        .query_one("SHOW commit_timestamp", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ts > 0);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn errors_carry_sqlstates_and_leave_the_connection_usable() {
    let server = start().await;
    let client = server.connect().await;

    // A fresh session has no commit timestamp.
    let e = client
        .simple_query("SHOW commit_timestamp")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000");
    assert_usable(&client).await;

    client
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, name TEXT NOT NULL, small INT2)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1, 'one', 1)")
        .await
        .unwrap();

    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing", "42P01"),
        ("SELECT nope FROM t", "42703"),
        ("CREATE TABLE t (id INT PRIMARY KEY)", "42P07"),
        ("INSERT INTO t VALUES (1, 'dup', 1)", "23505"),
        ("INSERT INTO t (id) VALUES (2)", "23502"),
        ("INSERT INTO t VALUES ('abc', 'x', 1)", "22P02"),
        ("INSERT INTO t VALUES (TRUE, 'x', 1)", "42804"),
        ("SELECT * FROM t WHERE id = 'a' || 'b'", "42804"),
        ("INSERT INTO t VALUES (3, 'x', 40000)", "22003"),
        ("SELECT 1 / 0", "22012"),
        ("SELECT * FROM t JOIN t AS u ON t.id = u.id", "0A000"),
        ("SELECT * FROM pg_catalog.pg_class", "0A000"),
    ];
    for (sql, expected) in cases {
        // Simple protocol.
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), expected, "simple: {sql}");
        assert_usable(&client).await;
        // Extended protocol (some fail at Parse, some at Execute).
        let e = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), expected, "extended: {sql}");
        assert_usable(&client).await;
    }

    // A prepared statement failing at execution with bound parameters.
    let stmt = client
        .prepare("INSERT INTO t VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let e = client
        .execute(&stmt, &[&1i32, &"dup", &1i16])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    assert_usable(&client).await;

    // Errors inside a transaction block: 25P02 until ROLLBACK, in both protocols.
    client.batch_execute("BEGIN").await.unwrap();
    let e = client.query("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(code(&e), "22012");
    let e = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    let e = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_usable(&client).await;

    // DDL inside a transaction block is refused.
    client.batch_execute("BEGIN").await.unwrap();
    let e = client.batch_execute("DROP TABLE t").await.unwrap_err();
    assert_eq!(code(&e), "0A000");
    client.batch_execute("ROLLBACK").await.unwrap();

    // A serialization conflict between two connections: the older transaction (`other`, which
    // began first) wounds the younger, which sees 40001 at its next statement or at COMMIT.
    let other = server.connect().await;
    other.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .query("SELECT name FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    other
        .execute("UPDATE t SET name = 'uno' WHERE id = 1", &[])
        .await
        .unwrap();
    other.batch_execute("COMMIT").await.unwrap();
    let e = match client
        .execute("INSERT INTO t VALUES (5, 'five', 5)", &[])
        .await
    {
        Err(e) => {
            client.batch_execute("ROLLBACK").await.unwrap();
            e
        }
        Ok(_) => client.batch_execute("COMMIT").await.unwrap_err(),
    };
    assert_eq!(code(&e), "40001");
    assert_usable(&client).await;
    let five: i64 = client
        .query_one("SELECT count(*) FROM t WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(five, 0);

    // Autocommit statements retry conflicts themselves.
    server.fail_next_commits(2);
    client
        .execute("INSERT INTO t VALUES (6, 'six', 6)", &[])
        .await
        .unwrap();

    drop(client);
    drop(other);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let server = start().await;
    let client = server.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    server.shutdown().await;
    assert!(client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test]
async fn read_only_transactions_as_of_system_time_and_split_at() {
    let server = start().await;
    let mut client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();

    // SPLIT AT through the extended protocol, with a parameter.
    assert_eq!(
        client
            .execute("ALTER TABLE t SPLIT AT VALUES ($1), (5)", &[&3i32])
            .await
            .unwrap(),
        0
    );
    assert_eq!(server.user_tablets().await, 3);

    // AS OF SYSTEM TIME in a prepared statement: ten seconds ago there were no rows.
    let row = client
        .query_one(
            "SELECT count(*) FROM t AS OF SYSTEM TIME '-10s' WHERE id > $1",
            &[&0i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    let row = client.query_one("SHOW read_timestamp", &[]).await.unwrap();
    assert!(row.get::<_, i64>(0) > 0);

    // The driver's own read-only transactions (START TRANSACTION READ ONLY).
    let txn = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .unwrap();
    let row = txn.query_one("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    let e = txn
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    txn.rollback().await.unwrap();
    assert_usable(&client).await;
    server.shutdown().await;
}

/// Sends one simple query over a raw socket and returns the ReadyForQuery status byte and the
/// SQLSTATEs of any errors (tokio-postgres does not expose the transaction status).
async fn raw_query(stream: &mut tokio::net::TcpStream, sql: &str) -> (u8, Vec<String>) {
    use tokio::io::AsyncWriteExt;
    let mut message = vec![b'Q'];
    message.extend_from_slice(&(4 + sql.len() as i32 + 1).to_be_bytes());
    message.extend_from_slice(sql.as_bytes());
    message.push(0);
    stream.write_all(&message).await.unwrap();
    read_until_ready(stream).await
}

async fn read_until_ready(stream: &mut tokio::net::TcpStream) -> (u8, Vec<String>) {
    use tokio::io::AsyncReadExt;
    let mut errors = Vec::new();
    loop {
        let kind = stream.read_u8().await.unwrap();
        let len = stream.read_i32().await.unwrap() as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await.unwrap();
        match kind {
            b'Z' => return (body[0], errors),
            b'E' => {
                // Fields: a type byte then a NUL-terminated string; 'C' is the SQLSTATE.
                for field in body.split(|b| *b == 0) {
                    if let Some((b'C', code)) = field.split_first() {
                        errors.push(String::from_utf8_lossy(code).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn ready_for_query_reports_transaction_status() {
    use tokio::io::AsyncWriteExt;
    let server = start().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let params = b"user\0root\0\0";
    let mut startup = Vec::new();
    startup.extend_from_slice(&(8 + params.len() as i32).to_be_bytes());
    startup.extend_from_slice(&196608i32.to_be_bytes());
    startup.extend_from_slice(params);
    stream.write_all(&startup).await.unwrap();
    assert_eq!(read_until_ready(&mut stream).await, (b'I', vec![]));

    let e = |code: &str| vec![code.to_string()];
    assert_eq!(
        raw_query(&mut stream, "SELECT 1 / 0").await,
        (b'I', e("22012"))
    );
    assert_eq!(raw_query(&mut stream, "BEGIN").await, (b'T', vec![]));
    assert_eq!(raw_query(&mut stream, "SELECT 1").await, (b'T', vec![]));
    assert_eq!(
        raw_query(&mut stream, "SELECT 1 / 0").await,
        (b'E', e("22012"))
    );
    assert_eq!(raw_query(&mut stream, "SELECT 1").await, (b'E', e("25P02")));
    assert_eq!(raw_query(&mut stream, "ROLLBACK").await, (b'I', vec![]));
    assert_eq!(
        raw_query(&mut stream, "CREATE TABLE t (id INT PRIMARY KEY)").await,
        (b'I', vec![])
    );
    // A conflict at COMMIT ends the transaction: idle, not failed.
    assert_eq!(
        raw_query(&mut stream, "BEGIN; INSERT INTO t VALUES (1)").await,
        (b'T', vec![])
    );
    server.fail_next_commits(1);
    assert_eq!(raw_query(&mut stream, "COMMIT").await, (b'I', e("40001")));
    // Several statements in one query stop at the first error.
    assert_eq!(
        raw_query(
            &mut stream,
            "INSERT INTO t VALUES (2); SELECT 1 / 0; INSERT INTO t VALUES (3)"
        )
        .await,
        (b'I', e("22012"))
    );
    let client = server.connect().await;
    let ids: Vec<i32> = client
        .query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2]);
    drop(client);
    drop(stream);
    server.shutdown().await;
}

/// A scan's rows stream to the client a page at a time instead of being held whole: with
/// `max_result_bytes` far below the result, a plain or filtered scan (simple and extended
/// protocol, in autocommit and in a transaction) still returns every row, while a sort, which
/// must hold its input, is refused with 54000; an error after rows were sent reaches the
/// client, and the connection goes on.
#[tokio::test]
async fn scans_stream_their_rows_and_only_held_results_are_bounded() {
    let server = start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE wide (id INT8 PRIMARY KEY, pad TEXT)")
        .await
        .unwrap();
    for chunk in (0..3000).collect::<Vec<i64>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i}, '{}')", "x".repeat(100)))
            .collect();
        client
            .batch_execute(&format!("INSERT INTO wide VALUES {}", rows.join(", ")))
            .await
            .unwrap();
    }
    // 3000 rows of ~110 bytes: over 300 KB, against a 50 KB limit.
    client
        .batch_execute("SET max_result_bytes = 50000")
        .await
        .unwrap();
    let simple = client.simple_query("SELECT * FROM wide").await.unwrap();
    let rows = simple
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 3000);
    assert!(matches!(
        simple.last(),
        Some(SimpleQueryMessage::CommandComplete(3000))
    ));
    let extended = client
        .query("SELECT id FROM wide WHERE id % $1 = 0", &[&2i64])
        .await
        .unwrap();
    assert_eq!(extended.len(), 1500);
    let limited = client
        .query("SELECT id FROM wide ORDER BY id LIMIT 2", &[])
        .await
        .map(|rows| rows.len())
        .map_err(|e| code(&e));
    assert_eq!(limited, Err("54000".to_string()), "a sort holds its input");
    let paged = client
        .query("SELECT id FROM wide LIMIT 5 OFFSET 2998", &[])
        .await
        .unwrap();
    assert_eq!(paged.len(), 2);
    client.batch_execute("BEGIN").await.unwrap();
    let in_txn = client.query("SELECT pad FROM wide", &[]).await.unwrap();
    assert_eq!(in_txn.len(), 3000);
    client.batch_execute("COMMIT").await.unwrap();
    // An error in the middle of a stream: rows went out, then the error.
    let failed = client
        .simple_query("SELECT 10 / (id - 2500) FROM wide")
        .await
        .map_err(|e| code(&e));
    assert_eq!(failed.err().as_deref(), Some("22012"));
    assert_usable(&client).await;
    server.shutdown().await;
}
