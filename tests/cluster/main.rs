//! End-to-end tests against real `meridian` processes.
//!
//! Every test starts its own cluster (or demo) from the binary cargo built for this package,
//! talks to it only through the PostgreSQL wire protocol with tokio-postgres, and checks what a
//! user would: rows come back exactly, errors carry the right SQLSTATE, acknowledged writes
//! survive SIGKILL of any one server and of the whole cluster, and the demo stops cleanly on
//! SIGTERM. Waits are bounded polls ([`retry_until`]) against deadlines, never sleeps; every
//! process dies with the test's `Cluster` or `Demo` value, and a failing test prints the tail
//! of every process's log (set `MERIDIAN_KEEP_TEST_DIR=1` to keep the logs and data).
//!
//! The harness runs one cluster at a time per test process (`MERIDIAN_TEST_CLUSTERS` raises
//! that), so these tests may run on cargo's default test threads.

mod anomalies;
mod bank;
mod hostile;
mod secure;
mod statements;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use meridian_tests::{describe_error, free_port, retry_until, BoxError, Cluster, Demo};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Servers in every test cluster: one per zone, three zones.
const SERVERS: usize = 3;
/// How long a freshly started or restarted cluster may take to serve SQL.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long statements may fail after one server is killed (the bound).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restarted server may take to serve reads that include every acknowledged row.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the demo may take to exit after SIGTERM (the bound).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

fn meridian() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meridian"))
}

async fn ready_cluster() -> Cluster {
    let cluster = Cluster::start(meridian(), SERVERS);
    cluster
        .wait_ready(READY_TIMEOUT)
        .await
        .expect("the cluster serves SQL");
    cluster
}

/// Runs `sql` with the simple protocol and returns its rows as text (`None` is NULL), so
/// checks do not depend on which integer or numeric type the server picks.
async fn text_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Text rows from literals, for comparisons.
fn expected(rows: &[&[&str]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| row.iter().map(|value| Some(value.to_string())).collect())
        .collect()
}

/// The `accounts` rows as `(id, owner, balance)`, in id order, with the extended protocol.
async fn accounts(client: &Client) -> Vec<(i64, String, i64)> {
    client
        .query("SELECT id, owner, balance FROM accounts ORDER BY id", &[])
        .await
        .expect("read accounts")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

fn account(id: i64, owner: &str, balance: i64) -> (i64, String, i64) {
    (id, owner.to_string(), balance)
}

#[tokio::test]
async fn crud_through_tokio_postgres() {
    let cluster = ready_cluster().await;
    let client = cluster.connect(0).await.expect("connect to server 1");
    // The harness's servers read a truetime agent: SHOW clock says so, with no warning.
    let clock = text_rows(&client, "SHOW clock").await.expect("SHOW clock");
    let clock = clock[0][0].clone().unwrap_or_default();
    assert!(clock.starts_with("measured by a truetime agent"), "{clock}");

    client
        .batch_execute("CREATE TABLE accounts (id INT8 PRIMARY KEY, owner TEXT, balance INT8)")
        .await
        .expect("create table");
    let inserted = client
        .execute(
            "INSERT INTO accounts (id, owner, balance) VALUES \
             (1, 'alice', 100), (2, 'bob', 200), (3, 'carol', 300), (4, 'dave', 400), (5, 'erin', 500)",
            &[],
        )
        .await
        .expect("multi-row insert");
    assert_eq!(inserted, 5, "rows reported by INSERT");

    let top = text_rows(
        &client,
        "SELECT id, owner, balance FROM accounts WHERE balance >= 200 ORDER BY balance DESC LIMIT 2",
    )
    .await
    .expect("filtered, ordered, limited select");
    assert_eq!(
        top,
        expected(&[&["5", "erin", "500"], &["4", "dave", "400"]])
    );

    let aggregates = text_rows(
        &client,
        "SELECT count(*), sum(balance), min(balance), max(balance) FROM accounts",
    )
    .await
    .expect("aggregates");
    assert_eq!(aggregates, expected(&[&["5", "1500", "100", "500"]]));

    let updated = client
        .execute(
            "UPDATE accounts SET balance = balance + 50 WHERE id = 2",
            &[],
        )
        .await
        .expect("update");
    assert_eq!(updated, 1, "rows reported by UPDATE");
    let deleted = client
        .execute("DELETE FROM accounts WHERE id = 5", &[])
        .await
        .expect("delete");
    assert_eq!(deleted, 1, "rows reported by DELETE");
    let after_changes = vec![
        account(1, "alice", 100),
        account(2, "bob", 250),
        account(3, "carol", 300),
        account(4, "dave", 400),
    ];
    assert_eq!(accounts(&client).await, after_changes);

    // Any server is a gateway: the second one sees the same rows and can write.
    let second = cluster.connect(1).await.expect("connect to server 2");
    assert_eq!(accounts(&second).await, after_changes);

    // Prepared statements with parameters, through the second server.
    let by_id = second
        .prepare("SELECT owner, balance FROM accounts WHERE id = $1")
        .await
        .expect("prepare a parameterized select");
    let row = second
        .query_one(&by_id, &[&2_i64])
        .await
        .expect("run the prepared select");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("bob".to_string(), 250)
    );
    let none = second
        .query(&by_id, &[&42_i64])
        .await
        .expect("prepared select with no match");
    assert!(none.is_empty(), "no account 42, got {} rows", none.len());
    let inserted = second
        .execute(
            "INSERT INTO accounts (id, owner, balance) VALUES ($1, $2, $3)",
            &[&6_i64, &"frank", &600_i64],
        )
        .await
        .expect("parameterized insert");
    assert_eq!(inserted, 1);
    let moved = second
        .execute(
            "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
            &[&25_i64, &1_i64],
        )
        .await
        .expect("parameterized update");
    assert_eq!(moved, 1);

    // The first server sees the second one's writes.
    let mut final_rows = after_changes;
    final_rows[0] = account(1, "alice", 75);
    final_rows.push(account(6, "frank", 600));
    assert_eq!(accounts(&client).await, final_rows);
    let third = cluster.connect(2).await.expect("connect to server 3");
    assert_eq!(accounts(&third).await, final_rows);
}

/// Rows written by a fault test: which keys were acknowledged, and which were attempted (an
/// attempt whose reply was lost may or may not have committed).
#[derive(Default)]
struct Ledger {
    acknowledged: BTreeSet<i64>,
    attempted: BTreeSet<i64>,
    next_key: i64,
}

impl Ledger {
    /// Inserts the next key through server `gateway`, retrying for up to `timeout` on fresh
    /// connections, and records it as acknowledged once a reply says it committed.
    async fn insert(&mut self, cluster: &Cluster, gateway: usize, timeout: Duration) {
        self.next_key += 1;
        let key = self.next_key;
        self.attempted.insert(key);
        let attempts = std::cell::Cell::new(0_u32);
        retry_until(timeout, || async {
            attempts.set(attempts.get() + 1);
            let client = cluster.connect(gateway).await?;
            match client
                .execute(
                    "INSERT INTO kv (k, v) VALUES ($1, $2)",
                    &[&key, &format!("value-{key}")],
                )
                .await
            {
                Ok(_) => Ok(()),
                // An earlier attempt committed but its reply was lost: keys are ours alone.
                // On the first attempt a duplicate means the server invented the row.
                Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    assert!(
                        attempts.get() > 1,
                        "key {key} already existed before it was first inserted"
                    );
                    Ok(())
                }
                Err(error) => Err(error),
            }
        })
        .await
        .unwrap_or_else(|error| {
            panic!(
                "insert of key {key} through server {} failed: {error}",
                gateway + 1
            )
        });
        self.acknowledged.insert(key);
    }

    /// Checks one read of the table: every acknowledged key is there with its value, and
    /// nothing that was never attempted.
    fn check(&self, rows: &[Vec<Option<String>>]) -> Result<(), String> {
        let mut present = BTreeSet::new();
        for row in rows {
            let key: i64 = row
                .first()
                .and_then(|k| k.as_deref())
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| format!("unreadable key in row {row:?}"))?;
            let value = row.get(1).and_then(|v| v.as_deref());
            if value != Some(format!("value-{key}").as_str()) {
                return Err(format!("key {key} has value {value:?}"));
            }
            present.insert(key);
        }
        let lost: Vec<_> = self.acknowledged.difference(&present).collect();
        let invented: Vec<_> = present.difference(&self.attempted).collect();
        if !lost.is_empty() || !invented.is_empty() {
            return Err(format!(
                "acknowledged keys missing: {lost:?}; keys never written: {invented:?}"
            ));
        }
        Ok(())
    }

    /// Reads the table through server `gateway` until a read passes [`Ledger::check`] or
    /// `timeout` passes.
    async fn verify_through(&self, cluster: &Cluster, gateway: usize, timeout: Duration) {
        retry_until(timeout, || async {
            let client = cluster.connect(gateway).await?;
            let rows = text_rows(&client, "SELECT k, v FROM kv ORDER BY k").await?;
            self.check(&rows)?;
            Ok::<_, BoxError>(())
        })
        .await
        .unwrap_or_else(|error| {
            panic!(
                "reading all acknowledged rows through server {} failed: {error}",
                gateway + 1
            )
        });
    }
}

async fn create_kv(cluster: &Cluster) {
    let client = cluster.connect(0).await.expect("connect to server 1");
    client
        .batch_execute("CREATE TABLE kv (k INT8 PRIMARY KEY, v TEXT)")
        .await
        .expect("create table kv");
}

#[tokio::test]
async fn survives_kill_of_any_server() {
    let cluster = ready_cluster().await;
    create_kv(&cluster).await;
    let mut ledger = Ledger::default();
    for _ in 0..10 {
        ledger.insert(&cluster, 0, RECOVERY_TIMEOUT).await;
    }

    // Whichever server leads the table's Raft group, one of these kills hits it.
    for victim in 0..SERVERS {
        cluster.kill(victim);
        assert!(!cluster.is_running(victim));
        let gateway = (victim + 1) % SERVERS;
        // Writes and reads through a surviving server resume within the bound.
        let killed_at = Instant::now();
        ledger.insert(&cluster, gateway, RECOVERY_TIMEOUT).await;
        let left = RECOVERY_TIMEOUT.saturating_sub(killed_at.elapsed());
        ledger.verify_through(&cluster, gateway, left).await;
        for _ in 0..3 {
            ledger.insert(&cluster, gateway, RECOVERY_TIMEOUT).await;
        }

        // The restarted server catches up: reads through it show every acknowledged row.
        cluster.restart(victim);
        ledger
            .verify_through(&cluster, victim, CATCH_UP_TIMEOUT)
            .await;
        cluster
            .wait_ready(READY_TIMEOUT)
            .await
            .expect("the whole cluster serves again before the next kill");
    }
    ledger.verify_through(&cluster, 0, RECOVERY_TIMEOUT).await;
}

#[tokio::test]
async fn full_restart_keeps_acknowledged_rows() {
    let cluster = ready_cluster().await;
    create_kv(&cluster).await;
    let mut ledger = Ledger::default();
    for i in 0..12 {
        ledger.insert(&cluster, i % SERVERS, RECOVERY_TIMEOUT).await;
    }

    cluster.kill_all();
    for index in 0..SERVERS {
        assert!(!cluster.is_running(index));
    }
    cluster.restart_all();
    cluster
        .wait_ready(READY_TIMEOUT)
        .await
        .expect("the cluster serves SQL after a full restart");

    for gateway in 0..SERVERS {
        ledger
            .verify_through(&cluster, gateway, RECOVERY_TIMEOUT)
            .await;
    }
    // And it still takes writes.
    ledger.insert(&cluster, 1, RECOVERY_TIMEOUT).await;
    ledger.verify_through(&cluster, 2, RECOVERY_TIMEOUT).await;
}

/// Asserts that `result` failed with one of `codes`.
fn assert_sqlstate<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tokio_postgres::Error>,
    codes: &[SqlState],
) {
    match result {
        Ok(value) => panic!("{what}: expected SQLSTATE {codes:?}, but it succeeded: {value:?}"),
        Err(error) => assert!(
            error.code().is_some_and(|code| codes.contains(code)),
            "{what}: expected SQLSTATE {codes:?}, got {:?}: {}",
            error.code(),
            describe_error(&error)
        ),
    }
}

/// Asserts that the connection still runs statements after an error.
async fn assert_usable(client: &Client, after: &str) {
    let rows = text_rows(client, "SELECT 1").await.unwrap_or_else(|error| {
        panic!("SELECT 1 after {after} failed: {}", describe_error(&error))
    });
    assert_eq!(rows, expected(&[&["1"]]), "SELECT 1 after {after}");
}

#[tokio::test]
async fn errors_keep_connection_usable() {
    let cluster = ready_cluster().await;
    let client = cluster.connect(0).await.expect("connect to server 1");

    assert_sqlstate(
        "malformed SQL",
        client.batch_execute("SELEC 1 FROM").await,
        &[SqlState::SYNTAX_ERROR],
    );
    assert_usable(&client, "a syntax error").await;

    assert_sqlstate(
        "unknown table (simple protocol)",
        client.simple_query("SELECT * FROM no_such_table").await,
        &[SqlState::UNDEFINED_TABLE],
    );
    assert_usable(&client, "an unknown table").await;
    assert_sqlstate(
        "unknown table (extended protocol)",
        client.prepare("SELECT * FROM no_such_table").await,
        &[SqlState::UNDEFINED_TABLE],
    );
    assert_usable(&client, "an unknown table in a prepared statement").await;

    client
        .batch_execute("CREATE TABLE items (id INT8 PRIMARY KEY, name TEXT)")
        .await
        .expect("create table");
    client
        .batch_execute("INSERT INTO items (id, name) VALUES (1, 'first')")
        .await
        .expect("first insert");
    assert_sqlstate(
        "duplicate primary key",
        client
            .batch_execute("INSERT INTO items (id, name) VALUES (1, 'again')")
            .await,
        &[SqlState::UNIQUE_VIOLATION],
    );
    assert_usable(&client, "a duplicate key").await;

    let type_errors = [
        SqlState::INVALID_TEXT_REPRESENTATION,
        SqlState::DATATYPE_MISMATCH,
    ];
    assert_sqlstate(
        "text into an INT8 column",
        client
            .batch_execute("INSERT INTO items (id, name) VALUES ('abc', 'x')")
            .await,
        &type_errors,
    );
    assert_usable(&client, "a text-into-integer error").await;
    assert_sqlstate(
        "boolean into an INT8 column",
        client
            .batch_execute("INSERT INTO items (id, name) VALUES (TRUE, 'x')")
            .await,
        &type_errors,
    );
    assert_usable(&client, "a boolean-into-integer error").await;

    // None of the failed statements wrote anything.
    let rows = text_rows(&client, "SELECT id, name FROM items ORDER BY id")
        .await
        .expect("read items");
    assert_eq!(rows, expected(&[&["1", "first"]]));
}

#[tokio::test]
async fn demo_serves_psql_and_stops_on_sigterm() {
    let port = free_port();
    let demo = Demo::start(meridian(), port);
    let data_dir = demo
        .data_dir(READY_TIMEOUT)
        .await
        .expect("the demo prints its data directory");
    demo.wait_ready(READY_TIMEOUT)
        .await
        .expect("the demo serves SQL");
    assert!(
        data_dir.is_dir(),
        "the announced data directory {} exists while the demo runs",
        data_dir.display()
    );

    let client = demo.connect().await.expect("connect to the demo");
    client
        .batch_execute(
            "CREATE TABLE greetings (id INT8 PRIMARY KEY, text TEXT); \
             INSERT INTO greetings (id, text) VALUES (1, 'hello'), (2, 'world')",
        )
        .await
        .expect("create and insert");
    let rows = text_rows(&client, "SELECT id, text FROM greetings ORDER BY id")
        .await
        .expect("select");
    assert_eq!(rows, expected(&[&["1", "hello"], &["2", "world"]]));
    drop(client);

    if let Some(psql) = meridian_tests::find_on_path("psql") {
        let output = run_psql(&psql, &demo.pg_url(), Duration::from_secs(30)).await;
        assert!(
            output.status.success(),
            "psql failed with {}: stdout {:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
    } else {
        eprintln!("psql is not on PATH; skipping the psql check");
    }

    check_truetime_now(&demo).await;

    let status = demo
        .terminate(SHUTDOWN_TIMEOUT)
        .await
        .expect("the demo exits after SIGTERM");
    assert!(status.success(), "the demo exited with {status}");
    assert!(
        !data_dir.exists(),
        "the demo left its data directory {} behind",
        data_dir.display()
    );
}

/// `meridian truetime now --agent A --json` on the demo's agent prints exactly the four fields,
/// synchronized, with an interval around the system clock whose width the master's 1 ms bound,
/// the poll round trip and at most one poll interval of drift explain.
async fn check_truetime_now(demo: &Demo) {
    let agent = demo
        .stdout_lines()
        .iter()
        .find_map(|l| {
            l.strip_prefix("truetime agent: ")
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .expect("the demo prints its truetime agent's address");
    let before = wall_ns();
    let output = tokio::process::Command::new(meridian())
        .args(["truetime", "now", "--agent", &agent, "--json"])
        .output()
        .await
        .expect("run meridian truetime now");
    let after = wall_ns();
    assert!(
        output.status.success(),
        "truetime now failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let field = |name: &str| -> String {
        let start = text
            .find(&format!("\"{name}\": "))
            .unwrap_or_else(|| panic!("{name} missing in {text}"));
        let rest = &text[start + name.len() + 4..];
        rest.split([',', '}'])
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .to_string()
    };
    assert!(
        text.starts_with("{\"earliest_ns\": ") && text.ends_with('}'),
        "{text}"
    );
    let earliest: u64 = field("earliest_ns").parse().expect("earliest_ns");
    let latest: u64 = field("latest_ns").parse().expect("latest_ns");
    let epsilon: u64 = field("epsilon_ns").parse().expect("epsilon_ns");
    assert_eq!(field("status"), "synchronized");
    assert_eq!(epsilon, (latest - earliest) / 2);
    assert!(
        earliest <= after && before <= latest,
        "[{earliest}, {latest}] vs [{before}, {after}]"
    );
    // The demo's master declares the kernel's maxerror when the clock is disciplined, else 1 ms.
    // ε is at least that bound, and at most the bound plus a generous round trip plus one
    // second (one poll interval) of drift at 200 µs/s.
    let bound = match meridian_truetime::master::kernel_clock_status() {
        Some(k) if k.synchronized => k.max_error_ns,
        _ => 1_000_000,
    };
    assert!(
        epsilon >= bound,
        "ε {epsilon} ns is below the master's declared bound {bound} ns"
    );
    assert!(
        epsilon < bound + 10_000_000 + 200_000,
        "ε {epsilon} ns is not explained by bound {bound} ns"
    );
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// Runs `psql -c "SELECT 1"` against `url`, killing it if it takes longer than `timeout`.
async fn run_psql(psql: &Path, url: &str, timeout: Duration) -> std::process::Output {
    let child = tokio::process::Command::new(psql)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", url, "-c", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn psql");
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("psql did not finish within {timeout:?}"))
        .expect("wait for psql")
}

/// `meridian start` never assumes a clock: without `--truetime` it refuses to run unless told
/// an ε to trust, and refuses an ε no commit could run under.
#[tokio::test]
async fn start_refuses_to_run_without_a_measured_or_declared_clock() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(meridian());
        command
            .args(["start", "--id", "1", "--zone", "zone-a", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0"])
            .args(["--pd", "127.0.0.1:1", "--insecure"])
            .args(extra)
            .kill_on_drop(true);
        async move {
            let output = tokio::time::timeout(SHUTDOWN_TIMEOUT, command.output())
                .await
                .expect("start refuses promptly")
                .expect("run meridian start");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (ok, stderr) = run(&[]).await;
    assert!(!ok && stderr.contains("needs a clock"), "{stderr}");
    let (ok, stderr) = run(&["--clock-epsilon-ms", "50"]).await;
    assert!(
        !ok && stderr.contains("over --max-clock-epsilon-ms"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["--clock-epsilon-ms", "5", "--truetime", "127.0.0.1:1"]).await;
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    // Nor does it run without saying how it is secured.
    let mut bare = tokio::process::Command::new(meridian());
    bare.args(["start", "--id", "1", "--zone", "zone-a", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0"])
        .args(["--pd", "127.0.0.1:1", "--clock-epsilon-ms", "5"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(SHUTDOWN_TIMEOUT, bare.output())
        .await
        .expect("start refuses promptly")
        .expect("run meridian start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--insecure"),
        "{stderr}"
    );
}
