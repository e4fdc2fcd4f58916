//! The anomaly checker: transactions over the PostgreSQL protocol, through every gateway, while
//! a nemesis kills, freezes and restarts servers and skews the time master; the history goes
//! to `adya` (an Elle-style checker), which must find it serializable and strictly
//! serializable (serializable in an order that respects real time: external consistency).
//!
//! Two workloads run one after the other on one three-server cluster:
//!
//! - **list-append**: table `lists (k INT8 PRIMARY KEY, v TEXT)`; a transaction of one to four
//!   micro-operations reads a list (`SELECT v`) or appends a unique element to it
//!   (`UPDATE … SET v = v || ',e'`). The lists' orders tell the checker each key's version
//!   order outright.
//! - **rw-register**: table `registers (k INT8 PRIMARY KEY, v INT8)`; reads and blind writes
//!   of unique values.
//!
//! Keys map to rows spread over four tablets (`SPLIT AT 250, 500, 750`), so most transactions
//! with more than one key commit through two-phase commit. Eight keys are active at a time; the
//! window slides every [`TXNS_PER_KEY`] transactions, so lists stay short and new keys keep
//! coming (Elle's advice for finding anomalies without huge reads).
//!
//! Each client is a process in the history. How a transaction ends decides its completion:
//! committed → `ok` (with what it read); 40001, any other definite error, or a lost connection
//! before `COMMIT` was sent → `fail`; 40003 ("ambiguous"), or a connection lost or timed out
//! during `COMMIT` → `info`, after which the client takes a new process id (Jepsen's rule: a
//! process with an operation in doubt never invokes again).
//!
//! The nemesis, every [`FAULT_EVERY`], picks a server and, in turn, one of: SIGKILL a server and restart it
//! [`DOWN_TIME`] later; SIGSTOP one for [`DOWN_TIME`] and SIGCONT it; restart the time master
//! with its clock shifted by ±1 ms (within the 1 ms bound it declares, so TrueTime stays honest)
//! and make it honest again [`DOWN_TIME`] later. Its faults are in the history as
//! non-transactional `info` operations (the checker skips them).
//!
//! `MERIDIAN_ANOMALY_SECS` sets each workload's length (default 15 s, in the default test run;
//! `scripts/check-anomalies` runs a long one) and `MERIDIAN_ANOMALY_SEED` the seed. A failing
//! run keeps its histories under cargo's target tmp directory and prints their paths.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adya::{check, History, Opts, Valid, Workload};
use meridian_tests::Cluster;
use serde_json::{json, Value};
use tokio::time::{sleep, timeout, Instant};
use tokio_postgres::Client;

use super::statements::{
    describe, duration_from_env, rollback, run, seed_from_env, Rng, StepError,
};
use super::{ready_cluster, SERVERS};

/// Clients, spread round-robin over the gateways.
const CLIENTS: usize = 6;
/// Each workload's default length.
const DEFAULT_SECS: u64 = 15;
/// The environment variable that sets each workload's length in seconds.
const DURATION_ENV: &str = "MERIDIAN_ANOMALY_SECS";
/// The environment variable that sets the random seed.
const SEED_ENV: &str = "MERIDIAN_ANOMALY_SEED";
/// Rows created per table; keys map onto them.
const ROWS: i64 = 1000;
/// Where the tables are split.
const SPLIT_POINTS: [i64; 3] = [250, 500, 750];
/// Keys in use at a time.
const ACTIVE_KEYS: u64 = 8;
/// Transactions (over all clients) before the key window moves by one.
const TXNS_PER_KEY: u64 = 60;
/// The most micro-operations in one transaction.
const MAX_MOPS: u64 = 4;
/// Time between the end of one fault and the start of the next.
const FAULT_EVERY: Duration = Duration::from_secs(2);
/// How long a server stays down or frozen, and the master skewed.
const DOWN_TIME: Duration = Duration::from_secs(2);
/// The time master's skew: its declared bound (`MASTER_BOUND_US`), in whole milliseconds.
const SKEW_MS: i64 = (meridian_tests::cluster::MASTER_BOUND_US / 1000) as i64;
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before reconnecting after a failure.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Setup statements' limit (creating, splitting and filling the tables).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Each workload must commit at least this many transactions for its verdict to mean much.
const MIN_OK: usize = 50;

#[derive(Clone, Copy, Debug)]
enum Kind {
    ListAppend,
    Register,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ListAppend => "list-append",
            Kind::Register => "rw-register",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::ListAppend => "lists",
            Kind::Register => "registers",
        }
    }

    fn workload(self) -> Workload {
        match self {
            Kind::ListAppend => Workload::ListAppend,
            Kind::Register => Workload::RwRegister,
        }
    }
}

/// One micro-operation on a key.
#[derive(Clone, Copy, Debug)]
enum Mop {
    Read(i64),
    /// Append the element (list-append) or write the value (rw-register).
    Write(i64, i64),
}

/// The row holding key `k`: consecutive keys go to different tablets.
fn row(k: i64) -> i64 {
    let per_tablet = ROWS / (SPLIT_POINTS.len() as i64 + 1);
    (k % (SPLIT_POINTS.len() as i64 + 1)) * per_tablet + (k / 4) % per_tablet
}

/// The history, in the order things happened (so the checker can read real-time order off it),
/// as JSON lines.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, op: Value) {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op.to_string());
    }

    fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

/// A transaction's micro-operations as the history writes them; `reads` fills in what each
/// read saw (`None`: not known, as in an invocation).
fn mops_json(kind: Kind, mops: &[Mop], reads: Option<&[Value]>) -> Value {
    let write = match kind {
        Kind::ListAppend => "append",
        Kind::Register => "w",
    };
    let mut next_read = reads.map(|r| r.iter());
    Value::Array(
        mops.iter()
            .map(|mop| match *mop {
                Mop::Read(k) => {
                    let seen = next_read
                        .as_mut()
                        .and_then(|r| r.next().cloned())
                        .unwrap_or(Value::Null);
                    json!(["r", k, seen])
                }
                Mop::Write(k, v) => json!([write, k, v]),
            })
            .collect(),
    )
}

/// What the workload did, for the verdict and the summary.
#[derive(Default, Debug)]
struct Counts {
    ok: usize,
    fail: usize,
    info: usize,
    wrong: Vec<String>,
}

/// Shared by one workload's clients.
struct Shared {
    cluster: Arc<Cluster>,
    kind: Kind,
    recorder: Recorder,
    /// Transactions started, over all clients: moves the key window.
    started: AtomicU64,
    /// The next element or value to write; unique across the run.
    next_value: AtomicI64,
    deadline: Instant,
}

struct Worker {
    shared: Arc<Shared>,
    process: i64,
    gateway: usize,
    connection: Option<Client>,
    rng: Rng,
    counts: Counts,
}

/// Why a transaction did not commit, and whether it surely did not.
struct NotCommitted {
    error: StepError,
    commit_sent: bool,
}

impl Worker {
    async fn run(mut self) -> Counts {
        while Instant::now() < self.shared.deadline {
            let Some(connection) = self.connect().await else {
                break;
            };
            let mops = self.choose();
            let kind = self.shared.kind;
            self.shared.recorder.push(json!({
                "type": "invoke", "f": "txn", "process": self.process,
                "value": mops_json(kind, &mops, None),
            }));
            let outcome = transact(&connection, kind, &mops).await;
            let keep = match outcome {
                Ok(reads) => {
                    self.shared.recorder.push(json!({
                        "type": "ok", "f": "txn", "process": self.process,
                        "value": mops_json(kind, &mops, Some(&reads)),
                    }));
                    self.counts.ok += 1;
                    true
                }
                Err(NotCommitted { error, commit_sent }) => {
                    let in_doubt = match &error {
                        StepError::Ambiguous(_) => true,
                        StepError::Lost(_) => commit_sent,
                        StepError::Wrong(what) => {
                            self.counts.wrong.push(what.clone());
                            commit_sent
                        }
                        StepError::Conflict(_) | StepError::Failed(_) => false,
                    };
                    let kind_name = if in_doubt { "info" } else { "fail" };
                    self.shared.recorder.push(json!({
                        "type": kind_name, "f": "txn", "process": self.process,
                        "value": mops_json(kind, &mops, None), "error": error.to_string(),
                    }));
                    if in_doubt {
                        self.counts.info += 1;
                        self.process += CLIENTS as i64;
                    } else {
                        self.counts.fail += 1;
                    }
                    !matches!(error, StepError::Lost(_)) && rollback(&connection).await
                }
            };
            if keep && !connection.is_closed() {
                self.connection = Some(connection);
            } else {
                self.gateway = (self.gateway + 1) % self.shared.cluster.len();
                sleep(RECONNECT_PAUSE).await;
            }
        }
        self.counts
    }

    /// The open connection, or a new one to the current gateway, moving on to the next gateway
    /// after each failure. `None` once the deadline has passed.
    async fn connect(&mut self) -> Option<Client> {
        if let Some(connection) = self.connection.take() {
            return Some(connection);
        }
        while Instant::now() < self.shared.deadline {
            if let Ok(Ok(connection)) =
                timeout(CONNECT_TIMEOUT, self.shared.cluster.connect(self.gateway)).await
            {
                return Some(connection);
            }
            self.gateway = (self.gateway + 1) % self.shared.cluster.len();
            sleep(RECONNECT_PAUSE).await;
        }
        None
    }

    /// One to [`MAX_MOPS`] reads and writes over the active keys.
    fn choose(&mut self) -> Vec<Mop> {
        let started = self.shared.started.fetch_add(1, Ordering::Relaxed);
        let base = started / TXNS_PER_KEY;
        let n = 1 + self.rng.below(MAX_MOPS);
        (0..n)
            .map(|_| {
                let k = (base + self.rng.below(ACTIVE_KEYS)) as i64;
                if self.rng.below(2) == 0 {
                    Mop::Read(k)
                } else {
                    Mop::Write(k, self.shared.next_value.fetch_add(1, Ordering::Relaxed))
                }
            })
            .collect()
    }
}

/// Runs `mops` in one explicit transaction; what each read saw, in order.
async fn transact(
    connection: &Client,
    kind: Kind,
    mops: &[Mop],
) -> Result<Vec<Value>, NotCommitted> {
    let before = |error| NotCommitted {
        error,
        commit_sent: false,
    };
    run(connection, "BEGIN").await.map_err(before)?;
    let table = kind.table();
    let mut reads = Vec::new();
    for mop in mops {
        match *mop {
            Mop::Read(k) => {
                let sql = format!("SELECT v FROM {table} WHERE k = {}", row(k));
                let (rows, _) = run(connection, &sql).await.map_err(before)?;
                let cell = match rows.as_slice() {
                    [row] => row.first().cloned().flatten(),
                    _ => {
                        return Err(before(StepError::Wrong(format!(
                            "`{sql}` returned {} rows",
                            rows.len()
                        ))))
                    }
                };
                reads.push(parse_read(kind, cell).map_err(before)?);
            }
            Mop::Write(k, v) => {
                let sql = match kind {
                    Kind::ListAppend => {
                        format!("UPDATE lists SET v = v || ',{v}' WHERE k = {}", row(k))
                    }
                    Kind::Register => format!("UPDATE registers SET v = {v} WHERE k = {}", row(k)),
                };
                let (_, affected) = run(connection, &sql).await.map_err(before)?;
                if affected != 1 {
                    return Err(before(StepError::Wrong(format!(
                        "`{sql}` updated {affected} rows"
                    ))));
                }
            }
        }
    }
    run(connection, "COMMIT")
        .await
        .map_err(|error| NotCommitted {
            error,
            commit_sent: true,
        })?;
    Ok(reads)
}

/// A read's value as the history writes it: a list of elements, or a register's value (null
/// before any write).
fn parse_read(kind: Kind, cell: Option<String>) -> Result<Value, StepError> {
    match kind {
        Kind::ListAppend => {
            let text = cell.ok_or_else(|| StepError::Wrong("a list read as NULL".into()))?;
            text.split(',')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    e.parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| StepError::Wrong(format!("a list read as {text:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Kind::Register => match cell {
            None => Ok(Value::Null),
            Some(text) => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| StepError::Wrong(format!("a register read as {text:?}"))),
        },
    }
}

/// Faults until the deadline; returns them, one line each.
async fn nemesis(shared: Arc<Shared>, mut rng: Rng) -> Vec<String> {
    let cluster = &shared.cluster;
    let mut faults = Vec::new();
    let first_kind = rng.below(3);
    loop {
        sleep(FAULT_EVERY).await;
        if Instant::now() + DOWN_TIME >= shared.deadline {
            return faults;
        }
        let server = rng.below(SERVERS as u64) as usize;
        // The kinds take turns, so even a short run meets each of them.
        let (f, what) = match (first_kind + faults.len() as u64) % 3 {
            0 => {
                cluster.kill(server);
                ("kill", format!("SIGKILL s{}", server + 1))
            }
            1 => {
                cluster.pause(server);
                ("pause", format!("SIGSTOP s{}", server + 1))
            }
            _ => {
                let offset = if rng.below(2) == 0 { SKEW_MS } else { -SKEW_MS };
                cluster.skew_master(offset);
                ("skew", format!("time master skewed {offset:+} ms"))
            }
        };
        shared.recorder.push(json!({
            "type": "info", "f": f, "process": "nemesis", "value": what,
        }));
        sleep(DOWN_TIME).await;
        match f {
            "kill" => cluster.restart(server),
            "pause" => cluster.resume(server),
            _ => cluster.skew_master(0),
        }
        shared.recorder.push(json!({
            "type": "info", "f": "heal", "process": "nemesis", "value": what,
        }));
        faults.push(what);
    }
}

/// Creates `lists` and `registers`, splits each at [`SPLIT_POINTS`] and fills them with
/// [`ROWS`] empty rows.
async fn create_tables(cluster: &Cluster) {
    let client = timeout(CONNECT_TIMEOUT, cluster.connect(0))
        .await
        .expect("connecting to server 1 timed out")
        .expect("connect to server 1");
    let points: Vec<String> = SPLIT_POINTS.iter().map(|p| format!("({p})")).collect();
    let mut statements = vec![
        "CREATE TABLE lists (k INT8 PRIMARY KEY, v TEXT NOT NULL)".to_string(),
        "CREATE TABLE registers (k INT8 PRIMARY KEY, v INT8)".to_string(),
        format!("ALTER TABLE lists SPLIT AT VALUES {}", points.join(", ")),
        format!(
            "ALTER TABLE registers SPLIT AT VALUES {}",
            points.join(", ")
        ),
    ];
    for start in (0..ROWS).step_by(250) {
        let rows = start..(start + 250).min(ROWS);
        let lists: Vec<String> = rows.clone().map(|k| format!("({k}, '')")).collect();
        let registers: Vec<String> = rows.map(|k| format!("({k}, NULL)")).collect();
        statements.push(format!("INSERT INTO lists VALUES {}", lists.join(", ")));
        statements.push(format!(
            "INSERT INTO registers VALUES {}",
            registers.join(", ")
        ));
    }
    for sql in statements {
        timeout(SETUP_TIMEOUT, client.batch_execute(&sql))
            .await
            .unwrap_or_else(|_| panic!("`{sql}` timed out"))
            .unwrap_or_else(|error| panic!("`{sql}` failed: {}", describe(&error)));
    }
}

/// Runs one workload under faults and checks its history; returns a summary line, or panics
/// with the verdict.
async fn run_workload(cluster: &Arc<Cluster>, kind: Kind, length: Duration, seed: u64) -> String {
    let shared = Arc::new(Shared {
        cluster: Arc::clone(cluster),
        kind,
        recorder: Recorder::default(),
        started: AtomicU64::new(0),
        next_value: AtomicI64::new(1),
        deadline: Instant::now() + length,
    });
    let workers: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let worker = Worker {
                shared: Arc::clone(&shared),
                process: index as i64,
                gateway: index % cluster.len(),
                connection: None,
                rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                counts: Counts::default(),
            };
            tokio::spawn(worker.run())
        })
        .collect();
    let faults = tokio::spawn(nemesis(Arc::clone(&shared), Rng::new(!seed)))
        .await
        .expect("the nemesis panicked");
    let mut counts = Counts::default();
    for worker in workers {
        let c = worker.await.expect("a client panicked");
        counts.ok += c.ok;
        counts.fail += c.fail;
        counts.info += c.info;
        counts.wrong.extend(c.wrong);
    }

    let text = shared.recorder.text();
    let history = History::from_json(&text).expect("the recorded history parses");
    let verdicts: Vec<(&str, adya::Report)> = ["serializable", "strict-serializable"]
        .into_iter()
        .map(|model| {
            let opts = Opts {
                models: vec![model.to_string()],
                timeout: Duration::from_secs(30),
                ..Opts::default()
            };
            (model, check(&history, kind.workload(), &opts))
        })
        .collect();
    let anomalies: Vec<String> = verdicts
        .iter()
        .flat_map(|(_, r)| r.anomaly_types.iter().cloned())
        .collect();
    let summary = format!(
        "{}: {} transactions ({} ok, {} failed, {} in doubt), {} faults [{}]; adya: {}; \
         anomalies: {}",
        kind.name(),
        counts.ok + counts.fail + counts.info,
        counts.ok,
        counts.fail,
        counts.info,
        faults.len(),
        faults.join(", "),
        verdicts
            .iter()
            .map(|(model, r)| format!("{model} {:?}", r.valid))
            .collect::<Vec<_>>()
            .join(", "),
        if anomalies.is_empty() {
            "none".to_string()
        } else {
            anomalies.join(", ")
        },
    );
    let valid = verdicts.iter().all(|(_, r)| r.valid == Valid::True);
    if !valid || !counts.wrong.is_empty() || counts.ok < MIN_OK {
        let path = keep_history(kind, &text);
        let details: Vec<String> = verdicts
            .iter()
            .flat_map(|(_, r)| r.anomalies.values().flatten())
            .take(5)
            .map(|a| format!("{}: {}", a.kind, a.explanation))
            .collect();
        panic!(
            "{summary}\nwrong answers: {:?}\nfirst anomalies: {details:#?}\nhistory kept at {}",
            counts.wrong,
            path.display()
        );
    }
    summary
}

/// Writes a failing run's history where it outlives the cluster's directory.
fn keep_history(kind: Kind, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "anomalies-{}-{}.jsonl",
        kind.name(),
        std::process::id()
    ));
    if let Err(error) = std::fs::write(&path, text) {
        eprintln!("cannot keep the history at {}: {error}", path.display());
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomaly_under_kills_pauses_and_clock_skew() {
    let length = duration_from_env(DURATION_ENV, Duration::from_secs(DEFAULT_SECS));
    let seed = seed_from_env(SEED_ENV);
    println!("anomaly checker: {CLIENTS} clients, {length:?} per workload, seed {seed} (set {SEED_ENV} to repeat)");
    let cluster = Arc::new(ready_cluster().await);
    create_tables(&cluster).await;
    let mut summaries = Vec::new();
    for (i, kind) in [Kind::ListAppend, Kind::Register].into_iter().enumerate() {
        summaries.push(run_workload(&cluster, kind, length, seed.wrapping_add(i as u64)).await);
    }
    for summary in summaries {
        println!("{summary}");
    }
}

#[test]
fn keys_spread_over_the_tablets_and_stay_in_range() {
    let tablets: std::collections::BTreeSet<usize> = (0..4)
        .map(|k| SPLIT_POINTS.iter().filter(|p| row(k) >= **p).count())
        .collect();
    assert_eq!(tablets.len(), 4, "four consecutive keys, four tablets");
    for k in [0, 1, 999, 1000, 123_456] {
        assert!((0..ROWS).contains(&row(k)), "key {k} -> row {}", row(k));
    }
}

#[test]
fn reads_parse_into_the_checkers_values() {
    let list = parse_read(Kind::ListAppend, Some(",3,7".into())).expect("a list");
    assert_eq!(list, json!([3, 7]));
    assert_eq!(
        parse_read(Kind::ListAppend, Some(String::new())).expect("empty"),
        json!([])
    );
    assert!(parse_read(Kind::ListAppend, Some(",x".into())).is_err());
    assert_eq!(parse_read(Kind::Register, None).expect("nil"), Value::Null);
    assert_eq!(
        parse_read(Kind::Register, Some("42".into())).expect("a value"),
        json!(42)
    );
}

/// The checker itself finds what it must: a lost update in list-append and a stale read after
/// a completed write (a real-time violation only strict serializability forbids).
#[test]
fn the_checker_finds_planted_anomalies() {
    let lost_update = [
        r#"{"type":"invoke","f":"txn","process":0,"value":[["r",1,null],["append",1,1]]}"#,
        r#"{"type":"invoke","f":"txn","process":1,"value":[["r",1,null],["append",1,2]]}"#,
        r#"{"type":"ok","f":"txn","process":0,"value":[["r",1,[]],["append",1,1]]}"#,
        r#"{"type":"ok","f":"txn","process":1,"value":[["r",1,[]],["append",1,2]]}"#,
        r#"{"type":"invoke","f":"txn","process":2,"value":[["r",1,null]]}"#,
        r#"{"type":"ok","f":"txn","process":2,"value":[["r",1,[1,2]]]}"#,
    ]
    .join("\n");
    let history = History::from_json(&lost_update).expect("parses");
    let serializable = Opts {
        models: vec!["serializable".into()],
        ..Opts::default()
    };
    assert_eq!(
        check(&history, Workload::ListAppend, &serializable).valid,
        Valid::False
    );

    let stale = [
        r#"{"type":"invoke","f":"txn","process":0,"value":[["append",1,1]]}"#,
        r#"{"type":"ok","f":"txn","process":0,"value":[["append",1,1]]}"#,
        r#"{"type":"invoke","f":"txn","process":1,"value":[["r",1,null]]}"#,
        r#"{"type":"ok","f":"txn","process":1,"value":[["r",1,[]]]}"#,
        r#"{"type":"invoke","f":"txn","process":2,"value":[["r",1,null]]}"#,
        r#"{"type":"ok","f":"txn","process":2,"value":[["r",1,[1]]]}"#,
    ]
    .join("\n");
    let history = History::from_json(&stale).expect("parses");
    assert_eq!(
        check(&history, Workload::ListAppend, &serializable).valid,
        Valid::True,
        "serializable allows reading before the append"
    );
    let strict = Opts {
        models: vec!["strict-serializable".into()],
        ..Opts::default()
    };
    assert_eq!(
        check(&history, Workload::ListAppend, &strict).valid,
        Valid::False,
        "strict serializability does not: the append had completed"
    );
}
