//! `meridian bench txn`: what transactions cost on a 3-zone in-process cluster, beside
//! PostgreSQL 15 running the same statements on this machine, in three tables.
//!
//! 1. **Two-phase commit vs participants** (the shape of Spanner's Table 4). `bench_txn` is
//!    split into [`TABLETS`] tablets of equal key ranges, so tablet `i` holds keys
//!    `i·(rows/10) …`; each tablet is its own Raft group, with leaders spread over the servers.
//!    One client runs transactions `BEGIN; UPDATE` one row in each of N tablets `; COMMIT`. With
//!    one participant the gateway commits in one phase; with more it runs lock, prepare, decide
//!    (and resolves the participants in the background). Each transaction uses a different row
//!    per tablet than the one before it, so it never waits for locks the previous one holds
//!    until its asynchronous resolution. "commit" is the COMMIT statement alone, "txn" is BEGIN
//!    through COMMIT as the client sees it. Prepares run in parallel, so commit latency should
//!    grow slowly with N while txn latency grows by one UPDATE round trip per participant.
//!    PostgreSQL runs the same statements on an unsplit table, so its cost barely depends on N;
//!    the ratio column is Meridian's txn median over PostgreSQL's.
//! 2. **Read-only vs read-write throughput**. C clients for D seconds each read random rows of
//!    `bench_txn`: an autocommit SELECT and `BEGIN READ ONLY; SELECT; COMMIT` read a lock-free
//!    snapshot; `BEGIN; SELECT; COMMIT` takes a shared lock at the leader and releases it at
//!    COMMIT; `BEGIN; SELECT; UPDATE; COMMIT` writes back `v + 1` and may conflict (40001).
//!    Reading the table: the two read-only rows should beat the read-write one, and the gap is
//!    what lock-free snapshot reads buy.
//! 3. **Group commit**. 1, 4, 16, 32 clients each run autocommit single-row UPDATEs of their own
//!    rows of `bench_gc`, an unsplit table (one tablet, one leader), so any speed-up over one
//!    client comes from concurrent commits sharing a Raft round and an fsync, not from more
//!    leaders. PostgreSQL shares WAL flushes among concurrent commits the same way.
//!
//! Clients connect with tokio-postgres, one fresh connection each, spread over the three
//! servers as gateways (client `i` uses server `i mod 3`). Statements with parameters are
//! prepared once per connection; BEGIN and COMMIT go through the simple protocol, one round
//! trip each. A transaction that fails with 40001 (or 40P01) is rolled back and run again on the
//! same connection (where Meridian keeps its wound-wait priority); its latency includes the
//! retries, which the tables count. Any other error, or a wrong row count, is counted, its first
//! messages printed under the tables, and the operation retried; too many abort the benchmark.
//! Every committed UPDATE adds 1 to a row, so at the end each table's `sum(v)` must equal the
//! increments the clients saw commit; the last lines say whether it does (a mismatch means a
//! lost or doubled update, or a read that missed a committed write).
//! PostgreSQL runs with fsync on and, by default, `default_transaction_isolation =
//! 'serializable'` (Meridian's transactions are serializable), one node, so the comparison is
//! of guarantees as well as of code: Meridian replicates every commit to three zones.
//!
//! Meridian runs first, then the cluster is stopped and PostgreSQL started, so neither system's
//! background work disturbs the other's measurements. Quote medians and ratios: shared machines
//! are noisy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_truetime::TrueTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::postgres::TempPostgres;
use super::stats::{ms, summarize, Summary};
use super::BenchError;

/// The number of tablets `bench_txn` is split into, and so the most participants a transaction
/// of the first table can have.
pub const TABLETS: u64 = 10;
/// Transactions run before the measured ones of each participant count, to warm connections,
/// routing caches and leaders.
const WARMUP_TXNS: usize = 10;
/// How long each throughput run warms up before its measured window opens.
const WARMUP: Duration = Duration::from_millis(500);
/// Errors other than retryable conflicts one system may see before the benchmark gives up.
const MAX_ERRORS: u64 = 100;
/// How many error messages per system are kept for the report.
const ERROR_SAMPLES: usize = 5;
/// How long a client waits after an unexpected error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// Rows per multi-row INSERT while loading.
const LOAD_BATCH: u64 = 100;

/// What to run.
#[derive(Clone, Debug)]
pub struct TxnOptions {
    /// Measured transactions per participant count (table 1).
    pub txns: usize,
    /// Participant counts to measure (table 1), each at most [`TABLETS`].
    pub participants: Vec<usize>,
    /// Concurrent clients for the read/write mix (table 2).
    pub clients: usize,
    /// How long each throughput run measures (tables 2 and 3).
    pub duration: Duration,
    /// Rows in each table.
    pub rows: u64,
    /// Concurrent client counts for group commit (table 3).
    pub group_commit_clients: Vec<usize>,
    /// PostgreSQL's `default_transaction_isolation`: `serializable`, `repeatable read` or
    /// `read committed` (hyphens allowed).
    pub pg_isolation: String,
}

impl TxnOptions {
    fn check(&self) -> Result<(), String> {
        if self.participants.is_empty()
            || self
                .participants
                .iter()
                .any(|&n| n == 0 || n as u64 > TABLETS)
        {
            return Err(format!("participants must be between 1 and {TABLETS}"));
        }
        if self.rows < TABLETS {
            return Err(format!("rows must be at least {TABLETS}"));
        }
        let most_clients = self.group_commit_clients.iter().copied().max().unwrap_or(0);
        if self.clients == 0 || self.group_commit_clients.contains(&0) {
            return Err("client counts must be at least 1".into());
        }
        if most_clients as u64 > self.rows {
            return Err("group commit needs at least one row per client".into());
        }
        Ok(())
    }

    fn rows_per_tablet(&self) -> u64 {
        self.rows / TABLETS
    }
}

/// The mixes of table 2, in the order they are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mix {
    AutocommitSelect,
    ReadOnlyTxn,
    ReadWriteTxn,
    ReadModifyWrite,
}

impl Mix {
    const ALL: [Mix; 4] = [
        Mix::AutocommitSelect,
        Mix::ReadOnlyTxn,
        Mix::ReadWriteTxn,
        Mix::ReadModifyWrite,
    ];

    fn label(self) -> &'static str {
        match self {
            Mix::AutocommitSelect => "autocommit SELECT",
            Mix::ReadOnlyTxn => "BEGIN READ ONLY; SELECT; COMMIT",
            Mix::ReadWriteTxn => "BEGIN; SELECT; COMMIT",
            Mix::ReadModifyWrite => "BEGIN; SELECT; UPDATE; COMMIT",
        }
    }

    fn op(self, key: i64) -> Op {
        match self {
            Mix::AutocommitSelect => Op::Select(key),
            Mix::ReadOnlyTxn => Op::SelectIn {
                begin: "BEGIN READ ONLY",
                key,
            },
            Mix::ReadWriteTxn => Op::SelectIn {
                begin: "BEGIN",
                key,
            },
            Mix::ReadModifyWrite => Op::ReadModifyWrite(key),
        }
    }
}

/// One unit of client work, run until it succeeds.
#[derive(Clone, Debug)]
enum Op {
    /// An autocommit `SELECT v FROM bench_txn WHERE k = $1`.
    Select(i64),
    /// `begin; SELECT …; COMMIT`.
    SelectIn { begin: &'static str, key: i64 },
    /// `BEGIN; SELECT …; UPDATE bench_txn SET v = <read + 1> …; COMMIT`.
    ReadModifyWrite(i64),
    /// `BEGIN; UPDATE bench_txn SET v = v + 1 WHERE k = $1` for each key `; COMMIT`.
    UpdateEach(Vec<i64>),
    /// An autocommit `UPDATE bench_gc SET v = v + 1 WHERE k = $1`.
    GroupCommitUpdate(i64),
}

impl Op {
    fn in_transaction(&self) -> bool {
        !matches!(self, Op::Select(_) | Op::GroupCommitUpdate(_))
    }
}

/// Which system a [`Target`] is, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Meridian,
    Postgres,
}

/// A system under test: the servers its clients connect to.
struct Target {
    system: System,
    gateways: Vec<String>,
    /// Run on every new connection (PostgreSQL's isolation level).
    session_setup: Option<String>,
}

impl Target {
    fn fail(&self, message: String) -> BenchError {
        match self.system {
            System::Meridian => BenchError::Cluster(message),
            System::Postgres => BenchError::Postgres(message),
        }
    }

    /// A fresh connection for client `i`, through gateway `i mod` the number of gateways, with
    /// its statements prepared.
    async fn connect(&self, i: usize) -> Result<Conn, BenchError> {
        let config = &self.gateways[i % self.gateways.len()];
        let client = meridian_client::pg::connect(config).await.map_err(|e| {
            self.fail(format!(
                "connect {config}: {}",
                meridian_client::pg::describe_error(&e)
            ))
        })?;
        if let Some(sql) = &self.session_setup {
            execute(self, &client, sql).await?;
        }
        let prepare = |sql: &'static str| {
            let client = &client;
            async move {
                client.prepare(sql).await.map_err(|e| {
                    self.fail(format!(
                        "{sql}: {}",
                        meridian_client::pg::describe_error(&e)
                    ))
                })
            }
        };
        let statements = Statements {
            select: prepare("SELECT v FROM bench_txn WHERE k = $1").await?,
            add: prepare("UPDATE bench_txn SET v = v + 1 WHERE k = $1").await?,
            set: prepare("UPDATE bench_txn SET v = $2 WHERE k = $1").await?,
            add_gc: prepare("UPDATE bench_gc SET v = v + 1 WHERE k = $1").await?,
        };
        Ok(Conn { client, statements })
    }
}

/// One client's connection and prepared statements.
struct Conn {
    client: Client,
    statements: Statements,
}

struct Statements {
    select: Statement,
    add: Statement,
    set: Statement,
    add_gc: Statement,
}

/// Why one attempt at an [`Op`] failed.
enum AttemptError {
    Sql(tokio_postgres::Error),
    /// The statement succeeded but touched the wrong number of rows.
    WrongResult(String),
}

impl From<tokio_postgres::Error> for AttemptError {
    fn from(e: tokio_postgres::Error) -> Self {
        AttemptError::Sql(e)
    }
}

/// A finished [`Op`].
struct Done {
    /// From the first attempt's first statement to the successful attempt's last reply.
    latency: Duration,
    /// The successful attempt's COMMIT statement (zero for autocommit statements).
    commit: Duration,
    /// Attempts that failed with a retryable conflict.
    retries: u64,
}

/// What one client's operations did besides taking time: unexpected errors, and the
/// increments it committed to each table (checked against the tables' sums at the end).
#[derive(Default)]
struct Tally {
    errors: u64,
    error_samples: Vec<String>,
    txn_increments: u64,
    gc_increments: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.errors += other.errors;
        for s in other.error_samples {
            self.note_sample(s);
        }
        self.txn_increments += other.txn_increments;
        self.gc_increments += other.gc_increments;
    }

    fn note_sample(&mut self, message: String) {
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn committed(&mut self, op: &Op) {
        match op {
            Op::Select(_) | Op::SelectIn { .. } => {}
            Op::ReadModifyWrite(_) => self.txn_increments += 1,
            Op::UpdateEach(keys) => self.txn_increments += keys.len() as u64,
            Op::GroupCommitUpdate(_) => self.gc_increments += 1,
        }
    }
}

impl Conn {
    /// One attempt at `op`; returns the COMMIT statement's latency.
    async fn attempt(&self, op: &Op) -> Result<Duration, AttemptError> {
        let (c, st) = (&self.client, &self.statements);
        match op {
            Op::Select(key) => {
                read_value(c.query_opt(&st.select, &[key]).await?, *key)?;
                Ok(Duration::ZERO)
            }
            Op::SelectIn { begin, key } => {
                c.batch_execute(begin).await?;
                read_value(c.query_opt(&st.select, &[key]).await?, *key)?;
                self.commit().await
            }
            Op::ReadModifyWrite(key) => {
                c.batch_execute("BEGIN").await?;
                let v = read_value(c.query_opt(&st.select, &[key]).await?, *key)?;
                one_row(c.execute(&st.set, &[key, &(v + 1)]).await?, *key)?;
                self.commit().await
            }
            Op::UpdateEach(keys) => {
                c.batch_execute("BEGIN").await?;
                for key in keys {
                    one_row(c.execute(&st.add, &[key]).await?, *key)?;
                }
                self.commit().await
            }
            Op::GroupCommitUpdate(key) => {
                one_row(c.execute(&st.add_gc, &[key]).await?, *key)?;
                Ok(Duration::ZERO)
            }
        }
    }

    async fn commit(&self) -> Result<Duration, AttemptError> {
        let started = Instant::now();
        self.client.batch_execute("COMMIT").await?;
        Ok(started.elapsed())
    }

    /// Runs `op` until it succeeds: conflicts are retried and counted in [`Done::retries`],
    /// other errors counted in `tally` and retried after [`ERROR_BACKOFF`]. Fails once the
    /// connection is gone or `tally` has more than [`MAX_ERRORS`].
    async fn run(&self, target: &Target, op: &Op, tally: &mut Tally) -> Result<Done, BenchError> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let error = match self.attempt(op).await {
                Ok(commit) => {
                    tally.committed(op);
                    return Ok(Done {
                        latency: started.elapsed(),
                        commit,
                        retries,
                    });
                }
                Err(e) => e,
            };
            if op.in_transaction() {
                // Ends a failed transaction; harmless when a failed COMMIT already ended it.
                let _ = self.client.batch_execute("ROLLBACK").await;
            }
            let message = match error {
                AttemptError::Sql(e) if is_conflict(&e) => {
                    retries += 1;
                    continue;
                }
                AttemptError::Sql(e) => meridian_client::pg::describe_error(&e),
                AttemptError::WrongResult(message) => message,
            };
            tally.errors += 1;
            tally.note_sample(message.clone());
            if self.client.is_closed() || tally.errors > MAX_ERRORS {
                return Err(target.fail(format!("{op:?} failed: {message}")));
            }
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

fn read_value(row: Option<tokio_postgres::Row>, key: i64) -> Result<i64, AttemptError> {
    let row = row.ok_or_else(|| AttemptError::WrongResult(format!("row {key} not found")))?;
    row.try_get::<_, i64>(0)
        .map_err(|e| AttemptError::WrongResult(format!("row {key}: {e}")))
}

fn one_row(updated: u64, key: i64) -> Result<(), AttemptError> {
    if updated == 1 {
        Ok(())
    } else {
        Err(AttemptError::WrongResult(format!(
            "UPDATE of row {key} touched {updated} rows"
        )))
    }
}

/// A small deterministic generator (splitmix64): random keys need no more, and the tests crate
/// has no `rand`.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

// ---- setup ----

/// Runs `sql` through the simple protocol, naming the statement and the SQLSTATE on failure.
async fn execute(target: &Target, client: &Client, sql: &str) -> Result<(), BenchError> {
    client.batch_execute(sql).await.map_err(|e| {
        target.fail(format!(
            "{sql}: {}",
            meridian_client::pg::describe_error(&e)
        ))
    })
}

/// Creates and fills `bench_txn` (split into [`TABLETS`] tablets when `split`) and `bench_gc`.
async fn load(target: &Target, opts: &TxnOptions, split: bool) -> Result<(), BenchError> {
    let client = meridian_client::pg::connect(&target.gateways[0]).await?;
    for table in ["bench_txn", "bench_gc"] {
        execute(target, &client, &format!("DROP TABLE IF EXISTS {table}")).await?;
        let create = format!("CREATE TABLE {table} (k INT8 PRIMARY KEY, v INT8)");
        execute(target, &client, &create).await?;
    }
    if split {
        let points: Vec<String> = (1..TABLETS)
            .map(|t| format!("({})", t * opts.rows_per_tablet()))
            .collect();
        let sql = format!(
            "ALTER TABLE bench_txn SPLIT AT VALUES {}",
            points.join(", ")
        );
        execute(target, &client, &sql).await?;
    }
    for table in ["bench_txn", "bench_gc"] {
        let mut start = 0;
        while start < opts.rows {
            let end = (start + LOAD_BATCH).min(opts.rows);
            let values: Vec<String> = (start..end).map(|k| format!("({k}, 0)")).collect();
            let insert = format!("INSERT INTO {table} VALUES {}", values.join(", "));
            execute(target, &client, &insert).await?;
            start = end;
        }
    }
    Ok(())
}

// ---- table 1: two-phase commit ----

/// Table 1's measurements for one participant count.
struct TwoPhase {
    commit: Summary,
    txn: Summary,
    retries: u64,
}

/// Runs table 1 on one connection through the first gateway.
async fn two_phase(
    target: &Target,
    opts: &TxnOptions,
    tally: &mut Tally,
) -> Result<Vec<TwoPhase>, BenchError> {
    let conn = target.connect(0).await?;
    let per_tablet = opts.rows_per_tablet() as i64;
    // Advances every transaction, so consecutive ones touch different rows.
    let mut next_row = 0i64;
    let mut results = Vec::new();
    for &n in &opts.participants {
        eprintln!("bench txn: {:?}: {n} participant(s)", target.system);
        let (mut commits, mut txns, mut retries) = (Vec::new(), Vec::new(), 0);
        for i in 0..WARMUP_TXNS + opts.txns {
            let row = next_row % per_tablet;
            next_row += 1;
            let keys = (0..n as i64).map(|t| t * per_tablet + row).collect();
            let done = conn.run(target, &Op::UpdateEach(keys), tally).await?;
            if i >= WARMUP_TXNS {
                commits.push(done.commit);
                txns.push(done.latency);
                retries += done.retries;
            }
        }
        results.push(TwoPhase {
            commit: summarize(&commits),
            txn: summarize(&txns),
            retries,
        });
    }
    Ok(results)
}

// ---- tables 2 and 3: throughput ----

/// One throughput run's result.
struct Throughput {
    ops_per_sec: f64,
    latency: Summary,
    retries: u64,
}

/// What one client measured.
struct ClientRun {
    samples: Vec<Duration>,
    retries: u64,
    tally: Tally,
}

/// Picks client `i`'s next operation.
type Pick = Arc<dyn Fn(usize, &mut SplitMix) -> Op + Send + Sync>;

/// Runs `clients` clients that each repeat `pick(i, rng)` for [`WARMUP`] and then for
/// `duration`, counting the operations that start inside the measured window.
async fn throughput(
    target: &Arc<Target>,
    clients: usize,
    duration: Duration,
    pick: Pick,
    tally: &mut Tally,
) -> Result<Throughput, BenchError> {
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(target.connect(i).await?);
    }
    let measure_from = Instant::now() + WARMUP;
    let measure_until = measure_from + duration;
    let mut tasks = Vec::with_capacity(clients);
    for (i, conn) in conns.into_iter().enumerate() {
        let (target, pick) = (target.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix(0x5EED ^ ((i as u64 + 1) << 32));
            let mut run = ClientRun {
                samples: Vec::new(),
                retries: 0,
                tally: Tally::default(),
            };
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                let done = conn
                    .run(&target, &pick(i, &mut rng), &mut run.tally)
                    .await?;
                if started >= measure_from {
                    run.samples.push(done.latency);
                    run.retries += done.retries;
                }
            }
            Ok::<_, BenchError>(run)
        }));
    }
    let (mut samples, mut retries) = (Vec::new(), 0);
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(run)) => {
                samples.extend(run.samples);
                retries += run.retries;
                tally.merge(run.tally);
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(target.fail(format!("client: {e}")))),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Throughput {
        ops_per_sec: samples.len() as f64 / duration.as_secs_f64(),
        latency: summarize(&samples),
        retries,
    })
}

/// Table 2's operations: `mix` on a uniformly random row of `rows`.
fn mix_pick(mix: Mix, rows: u64) -> Pick {
    Arc::new(move |_, rng| mix.op(rng.below(rows) as i64))
}

/// Table 3's operations: client `i` of `clients` updates only rows `k ≡ i (mod clients)` of
/// `rows`, so no two clients ever touch the same row.
fn group_commit_pick(clients: usize, rows: u64) -> Pick {
    Arc::new(move |i, rng| {
        let owned = (rows - i as u64).div_ceil(clients as u64);
        Op::GroupCommitUpdate((i as u64 + rng.below(owned) * clients as u64) as i64)
    })
}

// ---- one system, all tables ----

/// Everything measured on one system.
struct Results {
    two_phase: Vec<TwoPhase>,
    mixes: Vec<Throughput>,
    group_commit: Vec<Throughput>,
    tally: Tally,
    /// `sum(v)` of `bench_txn` and `bench_gc` at the end, read by the client.
    sums: [i64; 2],
}

async fn measure(
    target: Arc<Target>,
    opts: &TxnOptions,
    split: bool,
) -> Result<Results, BenchError> {
    eprintln!("bench txn: {:?}: loading", target.system);
    load(&target, opts, split).await?;
    let mut tally = Tally::default();
    let two_phase = two_phase(&target, opts, &mut tally).await?;
    let mut mixes = Vec::new();
    for mix in Mix::ALL {
        eprintln!("bench txn: {:?}: {}", target.system, mix.label());
        let pick = mix_pick(mix, opts.rows);
        mixes.push(throughput(&target, opts.clients, opts.duration, pick, &mut tally).await?);
    }
    let mut group_commit = Vec::new();
    for &clients in &opts.group_commit_clients {
        eprintln!(
            "bench txn: {:?}: group commit, {clients} clients",
            target.system
        );
        let pick = group_commit_pick(clients, opts.rows);
        group_commit.push(throughput(&target, clients, opts.duration, pick, &mut tally).await?);
    }
    let conn = target.connect(0).await?;
    let mut sums = [0; 2];
    for (sum, table) in sums.iter_mut().zip(["bench_txn", "bench_gc"]) {
        let sql = format!("SELECT v FROM {table}");
        let rows = conn.client.query(&sql, &[]).await.map_err(|e| {
            target.fail(format!(
                "{sql}: {}",
                meridian_client::pg::describe_error(&e)
            ))
        })?;
        for row in rows {
            *sum += row.try_get::<_, i64>(0)?;
        }
    }
    Ok(Results {
        two_phase,
        mixes,
        group_commit,
        tally,
        sums,
    })
}

/// Sums `meridian_commits_total` by outcome over the servers' metrics texts.
fn commit_outcomes(texts: &[String]) -> BTreeMap<String, f64> {
    let mut outcomes = BTreeMap::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        let Some(rest) = line.strip_prefix("meridian_commits_total{") else {
            continue;
        };
        let outcome = rest
            .split("outcome=\"")
            .nth(1)
            .and_then(|s| s.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(outcome), Some(value)) = (outcome, value) {
            *outcomes.entry(outcome.to_string()).or_insert(0.0) += value;
        }
    }
    outcomes
}

fn pg_isolation(name: &str) -> Result<&'static str, BenchError> {
    match name.replace(['-', '_'], " ").to_lowercase().as_str() {
        "serializable" => Ok("serializable"),
        "repeatable read" => Ok("repeatable read"),
        "read committed" => Ok("read committed"),
        other => Err(BenchError::Postgres(format!(
            "unknown isolation level {other:?}: serializable, repeatable-read or read-committed"
        ))),
    }
}

/// Runs the benchmark with `tt` as every server's clock (commit wait on) and returns the
/// tables.
pub async fn run(tt: Arc<dyn TrueTime>, opts: TxnOptions) -> Result<String, BenchError> {
    opts.check()
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    let isolation = pg_isolation(&opts.pg_isolation)?;
    let epsilons: Vec<Duration> = (0..101)
        .map(|_| Duration::from_nanos(tt.now().epsilon_nanos()))
        .collect();
    let epsilon = summarize(&epsilons).median;

    let started = Instant::now();
    let cluster = super::cluster::start(tt, true).await?;
    let target = Arc::new(Target {
        system: System::Meridian,
        gateways: (0..cluster.len()).map(|i| cluster.pg_config(i)).collect(),
        session_setup: None,
    });
    let meridian = measure(target, &opts, true).await;
    let mut texts = Vec::new();
    for i in 0..cluster.len() {
        texts.push(cluster.scrape_metrics(i).await.unwrap_or_default());
    }
    cluster.shutdown().await;
    let meridian = meridian?;
    let outcomes = commit_outcomes(&texts);

    let postgres = if TempPostgres::available() {
        let pg = TempPostgres::start()?;
        let target = Arc::new(Target {
            system: System::Postgres,
            gateways: vec![pg.config()],
            session_setup: Some(format!("SET default_transaction_isolation = '{isolation}'")),
        });
        Some(measure(target, &opts, false).await?)
    } else {
        None
    };

    let mut out = String::new();
    out.push_str(&format!(
        "meridian: 3 servers in 3 zones on loopback, commit wait on, median epsilon {} ms; \
         postgresql 15: 1 node, fsync on, {isolation}{}\n",
        ms(epsilon),
        if postgres.is_none() {
            " (not installed: skipped)"
        } else {
            ""
        }
    ));
    out.push_str(&report_two_phase(&opts, &meridian, postgres.as_ref()));
    out.push_str(&report_mixes(&opts, &meridian, postgres.as_ref()));
    out.push_str(&report_group_commit(&opts, &meridian, postgres.as_ref()));
    out.push_str(&report_notes(&meridian, postgres.as_ref(), &outcomes));
    out.push_str(&format!(
        "wall time {:.0} s\n",
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

// ---- printing ----

fn report_two_phase(opts: &TxnOptions, m: &Results, pg: Option<&Results>) -> String {
    let mut rows = Vec::new();
    for (i, &n) in opts.participants.iter().enumerate() {
        let mt = &m.two_phase[i];
        let pt = pg.map(|p| &p.two_phase[i]);
        rows.push(vec![
            n.to_string(),
            ms(mt.commit.median),
            ms(mt.commit.p99),
            ms(mt.txn.median),
            ms(mt.txn.p99),
            mt.retries.to_string(),
            pt.map_or("-".into(), |p| ms(p.txn.median)),
            pt.map_or("-".into(), |p| ms(p.txn.p99)),
            pt.map_or("-".into(), |p| ratio(mt.txn.median, p.txn.median)),
        ]);
    }
    format!(
        "\n1. two-phase commit vs participants: {} transactions each, 1 client, \
         `BEGIN; UPDATE` one row in each of N tablets `; COMMIT` (ms)\n{}",
        opts.txns,
        table(
            &[
                "participants",
                "M commit p50",
                "M commit p99",
                "M txn p50",
                "M txn p99",
                "M retries",
                "PG txn p50",
                "PG txn p99",
                "M/PG txn p50",
            ],
            &rows,
        )
    )
}

fn report_mixes(opts: &TxnOptions, m: &Results, pg: Option<&Results>) -> String {
    let mut rows = Vec::new();
    for (i, mix) in Mix::ALL.iter().enumerate() {
        let mt = &m.mixes[i];
        let pt = pg.map(|p| &p.mixes[i]);
        rows.push(
            [
                vec![mix.label().to_string()],
                throughput_cells(mt),
                pt.map_or(vec!["-".into(); 4], throughput_cells),
                vec![pt.map_or("-".into(), |p| {
                    format!(
                        "{:.2}x",
                        mt.ops_per_sec / p.ops_per_sec.max(f64::MIN_POSITIVE)
                    )
                })],
            ]
            .concat(),
        );
    }
    format!(
        "\n2. point reads of random rows: {} clients for {} s each, {} rows (ms)\n{}",
        opts.clients,
        opts.duration.as_secs_f64(),
        opts.rows,
        table(
            &[
                "workload",
                "M ops/s",
                "M p50",
                "M p99",
                "M retries",
                "PG ops/s",
                "PG p50",
                "PG p99",
                "PG retries",
                "M/PG ops/s",
            ],
            &rows,
        )
    )
}

fn throughput_cells(t: &Throughput) -> Vec<String> {
    vec![
        format!("{:.0}", t.ops_per_sec),
        ms(t.latency.median),
        ms(t.latency.p99),
        t.retries.to_string(),
    ]
}

fn report_group_commit(opts: &TxnOptions, m: &Results, pg: Option<&Results>) -> String {
    let speedup = |runs: &[Throughput], i: usize| {
        let base = runs.first().map_or(0.0, |t| t.ops_per_sec);
        if base > 0.0 {
            format!("{:.2}x", runs[i].ops_per_sec / base)
        } else {
            "-".into()
        }
    };
    let mut rows = Vec::new();
    for (i, &clients) in opts.group_commit_clients.iter().enumerate() {
        let mt = &m.group_commit[i];
        let pt = pg.map(|p| &p.group_commit[i]);
        rows.push(vec![
            clients.to_string(),
            format!("{:.0}", mt.ops_per_sec),
            speedup(&m.group_commit, i),
            ms(mt.latency.median),
            pt.map_or("-".into(), |p| format!("{:.0}", p.ops_per_sec)),
            pg.map_or("-".into(), |p| speedup(&p.group_commit, i)),
            pt.map_or("-".into(), |p| ms(p.latency.median)),
        ]);
    }
    format!(
        "\n3. group commit: autocommit single-row UPDATEs of each client's own rows, one \
         tablet, {} s per run (speed-up over the first row; ms)\n{}",
        opts.duration.as_secs_f64(),
        table(
            &[
                "clients",
                "M commits/s",
                "M speed-up",
                "M p50",
                "PG commits/s",
                "PG speed-up",
                "PG p50",
            ],
            &rows,
        )
    )
}

fn report_notes(m: &Results, pg: Option<&Results>, outcomes: &BTreeMap<String, f64>) -> String {
    let mut out = String::from("\n");
    let outcomes: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!(
        "meridian leaders' commit requests by outcome (all tables, loading and warm-up \
         included): {}\n",
        if outcomes.is_empty() {
            "none reported".to_string()
        } else {
            outcomes.join(" ")
        }
    ));
    for (name, results) in [("meridian", Some(m)), ("postgresql", pg)] {
        let Some(r) = results else { continue };
        let t = &r.tally;
        let expected = [t.txn_increments, t.gc_increments];
        for ((table, sum), expected) in ["bench_txn", "bench_gc"].iter().zip(r.sums).zip(expected) {
            out.push_str(&format!(
                "{name}: {table} sum(v) = {sum}, committed increments = {expected}: {}\n",
                if sum as u64 == expected {
                    "ok"
                } else {
                    "MISMATCH (lost or duplicated updates)"
                }
            ));
        }
        out.push_str(&format!(
            "{name}: {} unexpected errors (each retried)\n",
            t.errors
        ));
        for s in &t.error_samples {
            out.push_str(&format!("  {s}\n"));
        }
    }
    out
}

/// `a / b` as `2.50x`; `-` when `b` is zero.
fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        "-".into()
    } else {
        format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
    }
}

/// Lays `rows` out under `header`: the first column left-aligned, the others right-aligned,
/// each as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_clients_never_share_rows() {
        let (rows, clients) = (1000u64, 32usize);
        let mut owner = BTreeMap::new();
        let (pick, mut rng) = (group_commit_pick(clients, rows), SplitMix(1));
        for i in 0..clients {
            for _ in 0..2000 {
                let Op::GroupCommitUpdate(k) = pick(i, &mut rng) else {
                    panic!("not a group commit update");
                };
                assert!((0..rows as i64).contains(&k));
                assert_eq!(*owner.entry(k).or_insert(i), i);
            }
        }
        assert_eq!(owner.len() as u64, rows);
    }

    #[test]
    fn outcomes_are_summed_over_servers() {
        let a = "meridian_commits_total{outcome=\"committed\",server=\"1\"} 3\n".to_string();
        let b = "meridian_commits_total{outcome=\"committed\",server=\"2\"} 4\n\
                 meridian_commits_total{outcome=\"conflict\",server=\"2\"} 1\n"
            .to_string();
        let sums = commit_outcomes(&[a, b]);
        assert_eq!(sums.get("committed"), Some(&7.0));
        assert_eq!(sums.get("conflict"), Some(&1.0));
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\nxyz   1\n");
    }
}
