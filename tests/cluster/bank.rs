//! The bank test: money moves between accounts on five tablets while servers are killed.
//!
//! Ten accounts of 1000 each live in table `accounts`, split into five tablets of two accounts
//! each, every tablet replicated in all three zones. Eight clients, spread round-robin over the
//! three gateways, run transfers as explicit read-write transactions that read both balances
//! and write both back as absolute values (read-modify-write, so a lost update or a torn
//! commit changes the total). Every third iteration a client instead sums all balances in a
//! strong read-only transaction. Meanwhile a chaos task SIGKILLs a random server every 10 s
//! and restarts it 2 s later. After the run, with every server back, the test checks:
//!
//! 1. the total is exactly 10 000 in the final state and in every read-only snapshot;
//! 2. nothing acknowledged was lost and nothing invented: each final balance is 1000 plus the
//!    acknowledged transfers' deltas plus the deltas of *some subset* of the transfers whose
//!    outcome the client could not learn;
//! 3. external consistency: a transfer that began after another's COMMIT returned has the
//!    larger commit timestamp, and every commit timestamp lies before the wall time at which
//!    its COMMIT returned (commit wait);
//! 4. strong reads: a read-only check's snapshot is at or above the commit timestamp of every
//!    transfer acknowledged before the check began ("at or above" because a snapshot at `ts`
//!    includes a commit at `ts`; commit wait in fact makes it strictly above).
//!
//! Wall times come from `SystemTime::now()` in this process, taken before a statement is sent
//! and after its reply arrives, so scheduling delays only widen the intervals: every reported
//! violation is real. The servers' TrueTime reads the same clock.
//!
//! How a transfer attempt ends, and what the client does next:
//!
//! | outcome | when | next |
//! |---|---|---|
//! | committed | COMMIT succeeded | record it, with `SHOW commit_timestamp` |
//! | conflict | 40001 from any statement, COMMIT included | retry the same transfer |
//! | failed before commit | any other error, or a lost connection, before COMMIT | reconnect, retry |
//! | rejected at commit | a non-ambiguous error from COMMIT other than 40001 | reconnect, retry |
//! | unknown | 40003 ("ambiguous"), lost connection or timeout during COMMIT | record it, move on |
//!
//! "Rejected at commit" trusts the server's word that a non-ambiguous failure did not apply; if
//! the balances then fail check 2, the failure says whether counting those transfers as unknown
//! would have explained them.
//!
//! `MERIDIAN_BANK_SECS` sets the workload's length (default 60 s) and `MERIDIAN_BANK_SEED` the
//! seed of the clients' choices (printed at start; timing still differs between runs). The test
//! takes the workload's length plus a few seconds (start-up, setup and verification), more when
//! a kill just before the end leaves transfers waiting for a new leader.
//!
//! Not checked: what each snapshot saw beyond its sum and count, and commit timestamps against
//! the *start* of their transactions.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_proto as pb;
use meridian_proto::placement_driver_client::PlacementDriverClient;
use meridian_sql::encoding::table_prefix;
use meridian_sql::encoding::{encode_key_datum, index_prefix, PRIMARY_INDEX_ID};
const FIRST_USER_TABLE_ID: u32 = meridian_common::keys::FIRST_USER_TABLE_ID.0;
use meridian_sql::types::Datum;
use meridian_tests::cluster::LOG_TAIL_LINES;
use meridian_tests::{log_tail, retry_until, BoxError, Cluster};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_postgres::Client;

use super::statements::{
    describe, duration_from_env, rollback, run, seed_from_env, Rng, StepError,
};
use super::{meridian, text_rows, READY_TIMEOUT, SERVERS};

/// How many accounts, and so the width of a balance vector.
const ACCOUNTS: usize = 10;
/// Every account's opening balance.
const INITIAL_BALANCE: i64 = 1000;
/// What the balances must always add up to.
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL_BALANCE;
/// `ALTER TABLE accounts SPLIT AT VALUES (2), (4), (6), (8)`: five tablets of two accounts.
const SPLIT_POINTS: [i64; 4] = [2, 4, 6, 8];
/// How many tablets the table must span.
const MIN_TABLETS: usize = 5;
/// Concurrent clients.
const CLIENTS: usize = 8;
/// The largest amount one transfer moves.
const MAX_AMOUNT: i64 = 100;
/// Every `CHECK_EVERY`-th iteration of a client is a read-only check instead of a transfer.
const CHECK_EVERY: u64 = 3;
/// The workload's length unless `MERIDIAN_BANK_SECS` says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// The environment variable that sets the workload's length in seconds.
const DURATION_ENV: &str = "MERIDIAN_BANK_SECS";
/// The environment variable that sets the random seed.
const SEED_ENV: &str = "MERIDIAN_BANK_SEED";
/// How often the chaos task kills a server.
const KILL_INTERVAL: Duration = Duration::from_secs(10);
/// How long a killed server stays down.
const DOWN_TIME: Duration = Duration::from_secs(2);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before trying the next gateway after a failure.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// How long setup statements, the placement check and the final read may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the workload's end the clients and chaos task may take to stop: an
/// in-flight transfer's statements, each bounded by `statements::STATEMENT_TIMEOUT`.
const STOP_TIMEOUT: Duration = Duration::from_secs(150);
/// Fewer commits than this means the cluster hardly served, and the checks would pass vacuously.
const MIN_COMMITS: usize = 20;
/// Up to this many unknown outcomes the balance check is exact (meet in the middle over the
/// subsets of two halves, 2^16 sums each); above it only bounds are checked.
const MAX_EXACT_UNKNOWN: usize = 32;
/// Width of the commits-per-window histogram.
const WINDOW: Duration = Duration::from_secs(10);
/// How many violations of one kind are listed.
const MAX_LISTED: usize = 10;

/// One balance per account.
type Balances = [i64; ACCOUNTS];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_the_books_through_kills() {
    let duration = duration_from_env(DURATION_ENV, DEFAULT_DURATION);
    let seed = seed_from_env(SEED_ENV);
    println!(
        "bank test: {CLIENTS} clients for {duration:?}, seed {seed} (set {SEED_ENV} to repeat)"
    );
    let cluster = Arc::new(Cluster::start(meridian(), SERVERS));
    cluster
        .wait_ready(READY_TIMEOUT)
        .await
        .expect("the cluster serves SQL");
    create_accounts(&cluster).await;
    check_placement(&cluster).await;

    let run = run_workload(&cluster, duration, seed).await;

    for index in 0..cluster.len() {
        if !cluster.is_running(index) {
            cluster.restart(index);
        }
    }
    cluster
        .wait_ready(READY_TIMEOUT)
        .await
        .expect("every server serves SQL after the workload");
    let balances = final_balances(&cluster).await;
    let verdict = verify(&run.history, &balances);
    println!("{}", summary(&run, &verdict, duration, seed));
    assert!(
        verdict.violations.is_empty(),
        "the bank test found {} violation(s):\n- {}",
        verdict.violations.len(),
        verdict.violations.join("\n- ")
    );
}

/// Nanoseconds since the Unix epoch on this machine's clock.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

// ---- setup ----

/// Creates `accounts`, splits it into five tablets and opens the ten accounts.
async fn create_accounts(cluster: &Cluster) {
    let client = timeout(CONNECT_TIMEOUT, cluster.connect(0))
        .await
        .expect("connecting to server 1 timed out")
        .expect("connect to server 1");
    let points: Vec<String> = SPLIT_POINTS.iter().map(|p| format!("({p})")).collect();
    let values: Vec<String> = (0..ACCOUNTS)
        .map(|id| format!("({id}, {INITIAL_BALANCE})"))
        .collect();
    for sql in [
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)".to_string(),
        format!("ALTER TABLE accounts SPLIT AT VALUES {}", points.join(", ")),
        format!(
            "INSERT INTO accounts (id, balance) VALUES {}",
            values.join(", ")
        ),
    ] {
        timeout(SETUP_TIMEOUT, client.batch_execute(&sql))
            .await
            .unwrap_or_else(|_| panic!("`{sql}` timed out"))
            .unwrap_or_else(|error| panic!("`{sql}` failed: {}", describe(&error)));
    }
}

/// Checks through the placement driver's directory that `accounts` spans at least five
/// tablets, starting at the split points, each with replicas in three distinct zones.
async fn check_placement(cluster: &Cluster) {
    let pd = format!("http://{}", cluster.pd_addr());
    let tablets = retry_until(SETUP_TIMEOUT, || async {
        let mut client = PlacementDriverClient::connect(pd.clone()).await?;
        let directory = client
            .get_directory(pb::GetDirectoryRequest {})
            .await?
            .into_inner();
        accounts_placement(&directory).map_err(BoxError::from)
    })
    .await
    .expect("the directory shows accounts on five tablets in three zones");
    println!("placement: {}", tablets.join("; "));
}

/// The storage key of the row (or split point) with primary key `id` in table `table_id`.
fn account_key(table_id: u32, id: i64) -> Vec<u8> {
    let mut key = index_prefix(table_id, PRIMARY_INDEX_ID);
    encode_key_datum(&mut key, &Datum::Int(id)).expect("an integer encodes as a key");
    key
}

/// Finds `accounts` in the directory (the user table with a tablet starting at the first split
/// point) and describes its tablets, or says what is wrong with its placement. The replicas'
/// zones are the ones servers registered with, so this also checks that the placement driver
/// knows where every replica is.
fn accounts_placement(directory: &pb::GetDirectoryResponse) -> Result<Vec<String>, String> {
    let table_id = directory
        .tablets
        .iter()
        .filter_map(|t| Some(u32::from_be_bytes(t.start.get(..4)?.try_into().ok()?)))
        .filter(|&id| id >= FIRST_USER_TABLE_ID)
        .find(|&id| {
            let first_split = account_key(id, SPLIT_POINTS[0]);
            directory.tablets.iter().any(|t| t.start == first_split)
        })
        .ok_or("no user table has a tablet starting at the first split point")?;
    let (start, end) = (table_prefix(table_id), table_prefix(table_id + 1));
    let mut tablets: Vec<&pb::TabletDescriptor> = directory
        .tablets
        .iter()
        .filter(|t| t.start < end && (t.end.is_empty() || t.end > start))
        .collect();
    tablets.sort_by(|a, b| a.start.cmp(&b.start));
    if tablets.len() < MIN_TABLETS {
        return Err(format!(
            "table {table_id} spans {} tablets, fewer than {MIN_TABLETS}",
            tablets.len()
        ));
    }
    for point in SPLIT_POINTS {
        if !tablets
            .iter()
            .any(|t| t.start == account_key(table_id, point))
        {
            return Err(format!("no tablet starts at split point {point}"));
        }
    }
    let zones: HashMap<u64, &str> = directory
        .servers
        .iter()
        .map(|s| (s.id, s.zone.as_str()))
        .collect();
    tablets
        .iter()
        .map(|t| {
            let mut replica_zones: Vec<&str> = t
                .replicas
                .iter()
                .map(|id| zones.get(id).copied().unwrap_or("unknown"))
                .collect();
            replica_zones.sort_unstable();
            replica_zones.dedup();
            // One server per zone: every replica set must span them all.
            if replica_zones.len() < SERVERS || replica_zones.contains(&"unknown") {
                return Err(format!(
                    "group {} has replicas {:?} in zones {replica_zones:?}",
                    t.group_id, t.replicas
                ));
            }
            Ok(format!(
                "group {} on servers {:?} in {}",
                t.group_id,
                t.replicas,
                replica_zones.join(", ")
            ))
        })
        .collect()
}

// ---- the workload ----

/// A transfer of `amount` from account `from` to account `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transfer {
    from: usize,
    to: usize,
    amount: i64,
}

impl Transfer {
    /// What the transfer does to each balance.
    fn delta(&self) -> Balances {
        let mut delta = [0; ACCOUNTS];
        delta[self.from] -= self.amount;
        delta[self.to] += self.amount;
        delta
    }
}

/// A transfer whose COMMIT returned success.
#[derive(Debug, Clone)]
struct Committed {
    client: usize,
    transfer: Transfer,
    /// Just before BEGIN was sent.
    began_ns: u64,
    /// Just after COMMIT's reply arrived.
    returned_ns: u64,
    /// `SHOW commit_timestamp`, unless the connection broke first.
    commit_ts: Option<u64>,
}

/// A transfer that failed in a way whose meaning is recorded: unknown outcomes, and COMMITs
/// the server rejected without calling the outcome ambiguous.
#[derive(Debug, Clone)]
struct Failed {
    client: usize,
    transfer: Transfer,
    reason: String,
}

/// One read-only check of the total.
#[derive(Debug, Clone)]
struct ReadCheck {
    client: usize,
    /// Just before `BEGIN READ ONLY` was sent.
    began_ns: u64,
    /// `SHOW read_timestamp`.
    read_ts: u64,
}

/// Counts for the summary.
#[derive(Debug, Default, Clone)]
struct Counters {
    conflicts: usize,
    retries: usize,
    failed_before_commit: usize,
    skipped_insufficient: usize,
    abandoned_at_deadline: usize,
    checks_failed: usize,
    connections: usize,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
struct History {
    committed: Vec<Committed>,
    unknown: Vec<Failed>,
    rejected_at_commit: Vec<Failed>,
    checks: Vec<ReadCheck>,
    counters: Counters,
    /// Answers that break the schema's invariants (a wrong sum, a missing row): each one is a
    /// violation.
    anomalies: Vec<String>,
    /// How often each error was seen, for the summary.
    errors: BTreeMap<String, usize>,
}

impl History {
    fn merge(&mut self, other: History) {
        self.committed.extend(other.committed);
        self.unknown.extend(other.unknown);
        self.rejected_at_commit.extend(other.rejected_at_commit);
        self.checks.extend(other.checks);
        self.anomalies.extend(other.anomalies);
        for (error, count) in other.errors {
            *self.errors.entry(error).or_default() += count;
        }
        let (c, o) = (&mut self.counters, other.counters);
        c.conflicts += o.conflicts;
        c.retries += o.retries;
        c.failed_before_commit += o.failed_before_commit;
        c.skipped_insufficient += o.skipped_insufficient;
        c.abandoned_at_deadline += o.abandoned_at_deadline;
        c.checks_failed += o.checks_failed;
        c.connections += o.connections;
    }

    fn note_error(&mut self, error: &str) {
        *self.errors.entry(error.to_string()).or_default() += 1;
    }

    /// The most frequent errors with their counts.
    fn frequent_errors(&self) -> String {
        let mut errors: Vec<(&String, &usize)> = self.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1));
        let each: Vec<String> = errors
            .iter()
            .take(5)
            .map(|(error, count)| format!("{count}× {error}"))
            .collect();
        each.join("; ")
    }
}

/// A server killed by the chaos task.
#[derive(Debug, Clone)]
struct Kill {
    server: usize,
    after: Duration,
}

/// What the workload produced.
struct Run {
    history: History,
    kills: Vec<Kill>,
    started_ns: u64,
}

/// Runs [`CLIENTS`] clients and the chaos task for `duration`.
async fn run_workload(cluster: &Arc<Cluster>, duration: Duration, seed: u64) -> Run {
    let started_ns = wall_ns();
    let start = Instant::now();
    let deadline = start + duration;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let client = BankClient {
                index,
                cluster: Arc::clone(cluster),
                gateway: index % cluster.len(),
                connection: None,
                rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                deadline,
                history: History::default(),
            };
            tokio::spawn(client.run())
        })
        .collect();
    let chaos = tokio::spawn(chaos(Arc::clone(cluster), Rng::new(!seed), start, deadline));

    let stop_by = deadline + STOP_TIMEOUT;
    let mut history = History::default();
    for (index, client) in clients.into_iter().enumerate() {
        match timeout(stop_by.saturating_duration_since(Instant::now()), client).await {
            Ok(Ok(finished)) => history.merge(finished),
            Ok(Err(error)) => fail_with_logs(cluster, &format!("client {index} failed: {error}")),
            Err(_) => fail_with_logs(cluster, &format!("client {index} did not stop")),
        }
    }
    let kills = match timeout(stop_by.saturating_duration_since(Instant::now()), chaos).await {
        Ok(Ok(kills)) => kills,
        Ok(Err(error)) => fail_with_logs(cluster, &format!("the chaos task failed: {error}")),
        Err(_) => fail_with_logs(cluster, "the chaos task did not stop"),
    };
    Run {
        history,
        kills,
        started_ns,
    }
}

/// Prints every process's log tail and panics. For failures while tasks still share the
/// cluster: its `Drop`, which prints the tails otherwise, may then run on a runtime thread that
/// is not panicking.
fn fail_with_logs(cluster: &Cluster, message: &str) -> ! {
    let logs = (0..cluster.len())
        .map(|index| (format!("s{}", index + 1), cluster.log_path(index)))
        .chain(std::iter::once(("pd".to_string(), cluster.pd_log_path())));
    for (name, path) in logs {
        eprintln!(
            "----- last {LOG_TAIL_LINES} lines of {name} ({}) -----\n{}",
            path.display(),
            log_tail(path, LOG_TAIL_LINES)
        );
    }
    panic!("{message}");
}

/// Kills a random server every [`KILL_INTERVAL`] and restarts it [`DOWN_TIME`] later, until
/// `deadline`. Always leaves every server it killed restarted.
async fn chaos(
    cluster: Arc<Cluster>,
    mut rng: Rng,
    start: Instant,
    deadline: Instant,
) -> Vec<Kill> {
    let mut kills = Vec::new();
    let mut next = start + KILL_INTERVAL;
    while next < deadline {
        sleep_until(next).await;
        let server = rng.below(cluster.len() as u64) as usize;
        // SIGKILL and reaping take milliseconds: blocking a worker that long is harmless.
        cluster.kill(server);
        kills.push(Kill {
            server,
            after: start.elapsed(),
        });
        sleep(DOWN_TIME).await;
        cluster.restart(server);
        next += KILL_INTERVAL;
    }
    kills
}

/// One client: a connection to some gateway, its choices and its history.
struct BankClient {
    index: usize,
    cluster: Arc<Cluster>,
    /// The server it connects to next; moves on whenever a connection fails.
    gateway: usize,
    connection: Option<Client>,
    rng: Rng,
    deadline: Instant,
    history: History,
}

impl BankClient {
    async fn run(mut self) -> History {
        // Offset so that the clients' read-only checks do not all fall on the same round.
        let mut iteration = self.index as u64;
        while Instant::now() < self.deadline {
            iteration += 1;
            if iteration.is_multiple_of(CHECK_EVERY) {
                self.check().await;
            } else {
                self.transfer().await;
            }
        }
        self.history
    }

    fn pick_transfer(&mut self) -> Transfer {
        let from = self.rng.below(ACCOUNTS as u64) as usize;
        let to = (from + 1 + self.rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = 1 + self.rng.below(MAX_AMOUNT as u64) as i64;
        Transfer { from, to, amount }
    }

    /// Runs one transfer to a final outcome, retrying it while it certainly did not apply.
    async fn transfer(&mut self) {
        let transfer = self.pick_transfer();
        let mut first = true;
        loop {
            if !first {
                self.history.counters.retries += 1;
            }
            first = false;
            let Some(connection) = self.connect().await else {
                self.history.counters.abandoned_at_deadline += 1;
                return;
            };
            let (outcome, keep) = attempt_transfer(&connection, transfer).await;
            self.give_back(connection, keep);
            let failed = |reason: String| Failed {
                client: self.index,
                transfer,
                reason,
            };
            match outcome {
                Attempt::Committed {
                    began_ns,
                    returned_ns,
                    commit_ts,
                } => {
                    let commit_ts = match commit_ts {
                        Ok(ts) => Some(ts),
                        Err(StepError::Lost(_)) => None,
                        Err(error) => {
                            self.history.anomalies.push(format!(
                                "client {} {transfer:?} committed, but SHOW commit_timestamp \
                                 answered {error}",
                                self.index
                            ));
                            None
                        }
                    };
                    self.history.committed.push(Committed {
                        client: self.index,
                        transfer,
                        began_ns,
                        returned_ns,
                        commit_ts,
                    });
                    return;
                }
                Attempt::InsufficientFunds => {
                    self.history.counters.skipped_insufficient += 1;
                    return;
                }
                Attempt::Unknown(reason) => {
                    self.history.note_error(&reason);
                    self.history.unknown.push(failed(reason));
                    return;
                }
                Attempt::Conflict => self.history.counters.conflicts += 1,
                Attempt::RejectedAtCommit(reason) => {
                    self.history.note_error(&reason);
                    self.history.rejected_at_commit.push(failed(reason));
                }
                Attempt::FailedBeforeCommit(error) => {
                    self.history.counters.failed_before_commit += 1;
                    self.fail_step(error).await;
                }
            }
            if Instant::now() >= self.deadline {
                self.history.counters.abandoned_at_deadline += 1;
                return;
            }
        }
    }

    /// One read-only check of the total.
    async fn check(&mut self) {
        let Some(connection) = self.connect().await else {
            return;
        };
        let began_ns = wall_ns();
        let result = read_total(&connection).await;
        // A failed check leaves its transaction open or its connection broken: start afresh.
        self.give_back(connection, result.is_ok());
        match result {
            Ok((sum, count, read_ts)) => {
                if sum != TOTAL || count != ACCOUNTS as i64 {
                    self.history.anomalies.push(format!(
                        "client {} read sum {sum} over {count} accounts (want {TOTAL} over \
                         {ACCOUNTS}) in a read-only transaction at {read_ts}",
                        self.index
                    ));
                }
                self.history.checks.push(ReadCheck {
                    client: self.index,
                    began_ns,
                    read_ts,
                });
            }
            Err(error) => {
                self.history.counters.checks_failed += 1;
                self.fail_step(error).await;
            }
        }
    }

    /// Records a failed step; a wrong answer is an anomaly, anything else an error to note.
    async fn fail_step(&mut self, error: StepError) {
        match error {
            StepError::Wrong(what) => self
                .history
                .anomalies
                .push(format!("client {}: {what}", self.index)),
            other => self.history.note_error(&other.to_string()),
        }
        sleep(RECONNECT_PAUSE).await;
    }

    /// The open connection, or a new one to the current gateway, moving on to the next gateway
    /// after each failure. `None` once the deadline has passed.
    async fn connect(&mut self) -> Option<Client> {
        if let Some(connection) = self.connection.take() {
            if !connection.is_closed() {
                return Some(connection);
            }
            self.gateway = (self.gateway + 1) % self.cluster.len();
        }
        while Instant::now() < self.deadline {
            if let Ok(Ok(connection)) =
                timeout(CONNECT_TIMEOUT, self.cluster.connect(self.gateway)).await
            {
                self.history.counters.connections += 1;
                return Some(connection);
            }
            self.gateway = (self.gateway + 1) % self.cluster.len();
            sleep(RECONNECT_PAUSE).await;
        }
        None
    }

    /// Keeps `connection` for the next attempt, or drops it and moves on to the next gateway.
    fn give_back(&mut self, connection: Client, keep: bool) {
        if keep && !connection.is_closed() {
            self.connection = Some(connection);
        } else {
            self.gateway = (self.gateway + 1) % self.cluster.len();
        }
    }
}

/// How one attempt at a transfer ended.
#[derive(Debug)]
enum Attempt {
    Committed {
        began_ns: u64,
        returned_ns: u64,
        /// `SHOW commit_timestamp`, which fails only if the connection broke or on a bug.
        commit_ts: Result<u64, StepError>,
    },
    InsufficientFunds,
    Conflict,
    FailedBeforeCommit(StepError),
    RejectedAtCommit(String),
    Unknown(String),
}

/// Runs `BEGIN; SELECT a; SELECT b; UPDATE a; UPDATE b; COMMIT` once, and says how it ended
/// and whether the connection is still fit for the next attempt.
async fn attempt_transfer(connection: &Client, transfer: Transfer) -> (Attempt, bool) {
    let began_ns = wall_ns();
    let before_commit = async {
        run(connection, "BEGIN").await?;
        let from = read_balance(connection, transfer.from).await?;
        let to = read_balance(connection, transfer.to).await?;
        if from < transfer.amount {
            return Ok(false);
        }
        write_balance(connection, transfer.from, from - transfer.amount).await?;
        write_balance(connection, transfer.to, to + transfer.amount).await?;
        Ok(true)
    };
    match before_commit.await {
        Ok(true) => {}
        Ok(false) => {
            let keep = rollback(connection).await;
            return (Attempt::InsufficientFunds, keep);
        }
        Err(StepError::Conflict(_)) => {
            let keep = rollback(connection).await;
            return (Attempt::Conflict, keep);
        }
        Err(error) => return (Attempt::FailedBeforeCommit(error), false),
    }
    match run(connection, "COMMIT").await {
        Ok(_) => {
            let returned_ns = wall_ns();
            let commit_ts = show_timestamp(connection, "commit_timestamp").await;
            let keep = commit_ts.is_ok();
            let attempt = Attempt::Committed {
                began_ns,
                returned_ns,
                commit_ts,
            };
            (attempt, keep)
        }
        Err(StepError::Conflict(_)) => (Attempt::Conflict, true),
        Err(error @ (StepError::Ambiguous(_) | StepError::Lost(_))) => {
            (Attempt::Unknown(error.to_string()), false)
        }
        Err(error @ (StepError::Failed(_) | StepError::Wrong(_))) => {
            (Attempt::RejectedAtCommit(error.to_string()), false)
        }
    }
}

/// `BEGIN READ ONLY; SELECT sum(balance), count(*) FROM accounts; COMMIT`, then the snapshot's
/// timestamp: `(sum, count, read_ts)`.
async fn read_total(connection: &Client) -> Result<(i64, i64, u64), StepError> {
    run(connection, "BEGIN READ ONLY").await?;
    let (rows, _) = run(connection, "SELECT sum(balance), count(*) FROM accounts").await?;
    let (sum, count) = match rows.as_slice() {
        [row] if row.len() == 2 => (parse_cell(&row[0], "sum")?, parse_cell(&row[1], "count")?),
        _ => {
            return Err(StepError::Wrong(format!(
                "sum and count came back as {rows:?}"
            )))
        }
    };
    run(connection, "COMMIT").await?;
    let read_ts = show_timestamp(connection, "read_timestamp").await?;
    Ok((sum, count, read_ts))
}

async fn read_balance(connection: &Client, id: usize) -> Result<i64, StepError> {
    let sql = format!("SELECT balance FROM accounts WHERE id = {id}");
    let (rows, _) = run(connection, &sql).await?;
    match rows.as_slice() {
        [row] if row.len() == 1 => parse_cell(&row[0], "balance"),
        _ => Err(StepError::Wrong(format!("`{sql}` returned {rows:?}"))),
    }
}

async fn write_balance(connection: &Client, id: usize, balance: i64) -> Result<(), StepError> {
    let sql = format!("UPDATE accounts SET balance = {balance} WHERE id = {id}");
    match run(connection, &sql).await? {
        (_, 1) => Ok(()),
        (_, n) => Err(StepError::Wrong(format!("`{sql}` updated {n} rows"))),
    }
}

async fn show_timestamp(connection: &Client, name: &str) -> Result<u64, StepError> {
    let (rows, _) = run(connection, &format!("SHOW {name}")).await?;
    match rows.as_slice() {
        [row] if row.len() == 1 => parse_cell(&row[0], name).map(|ts| ts as u64),
        _ => Err(StepError::Wrong(format!("SHOW {name} returned {rows:?}"))),
    }
}

fn parse_cell(cell: &Option<String>, what: &str) -> Result<i64, StepError> {
    cell.as_deref()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StepError::Wrong(format!("{what} came back as {cell:?}")))
}

/// The final balances, read through any server within [`SETUP_TIMEOUT`].
async fn final_balances(cluster: &Cluster) -> Balances {
    let attempt = std::cell::Cell::new(0_usize);
    retry_until(SETUP_TIMEOUT, || async {
        let gateway = attempt.replace(attempt.get() + 1) % cluster.len();
        let client = cluster.connect(gateway).await?;
        let rows = text_rows(&client, "SELECT id, balance FROM accounts ORDER BY id").await?;
        let mut balances = [0; ACCOUNTS];
        if rows.len() != ACCOUNTS {
            return Err(BoxError::from(format!("{} accounts: {rows:?}", rows.len())));
        }
        for (id, row) in rows.iter().enumerate() {
            let cells: Option<Vec<i64>> = row
                .iter()
                .map(|cell| cell.as_deref().and_then(|text| text.parse().ok()))
                .collect();
            match cells.as_deref() {
                Some(&[row_id, balance]) if row_id == id as i64 => balances[id] = balance,
                _ => return Err(format!("row {id} is {row:?}").into()),
            }
        }
        Ok(balances)
    })
    .await
    .expect("the final balances can be read")
}

// ---- verification ----

/// The checks' findings.
#[derive(Debug, Default)]
struct Verdict {
    violations: Vec<String>,
    /// How the unknown outcomes were accounted for.
    unknown_explanation: String,
    final_balances: Balances,
}

/// Runs every check on the history and the final balances.
fn verify(history: &History, balances: &Balances) -> Verdict {
    let mut violations = Vec::new();
    let total: i64 = balances.iter().sum();
    if total != TOTAL {
        violations.push(format!("final total {total}, want {TOTAL}: {balances:?}"));
    }
    violations.extend(history.anomalies.iter().cloned());
    let unknown: Vec<Transfer> = history.unknown.iter().map(|f| f.transfer).collect();
    let unknown_explanation = match explain_balances(balances, &history.committed, &unknown) {
        Ok(explanation) => explanation,
        Err(error) => {
            violations.push(balances_violation(history, balances, &unknown, error));
            String::from("not explained")
        }
    };
    violations.extend(check_commit_wait(&history.committed));
    violations.extend(check_external_consistency(&history.committed));
    violations.extend(check_strong_reads(&history.checks, &history.committed));
    let commits = history.committed.len();
    if commits < MIN_COMMITS {
        violations.push(format!(
            "only {commits} transfers committed (at least {MIN_COMMITS} expected): the cluster \
             barely served; errors: {}",
            history.frequent_errors()
        ));
    }
    Verdict {
        violations,
        unknown_explanation,
        final_balances: *balances,
    }
}

/// The violation for balances that the history does not explain, saying whether the COMMITs
/// the server rejected without calling them ambiguous would explain them if they had applied.
fn balances_violation(
    history: &History,
    balances: &Balances,
    unknown: &[Transfer],
    error: String,
) -> String {
    let mut message = format!("final balances {balances:?} are not explained: {error}");
    if !history.rejected_at_commit.is_empty() {
        let mut widened = unknown.to_vec();
        widened.extend(history.rejected_at_commit.iter().map(|f| f.transfer));
        let verdict = match explain_balances(balances, &history.committed, &widened) {
            Ok(how) => format!("they would be if rejected COMMITs could have applied ({how})"),
            Err(_) => "counting rejected COMMITs as unknown does not explain them either".into(),
        };
        let _ = write!(
            message,
            "; {} COMMITs were rejected without \"ambiguous\": {verdict}; rejections: {}",
            history.rejected_at_commit.len(),
            failures_text(&history.rejected_at_commit)
        );
    }
    if !history.unknown.is_empty() {
        let _ = write!(
            message,
            "; unknown outcomes: {}",
            failures_text(&history.unknown)
        );
    }
    message
}

/// The first [`MAX_LISTED`] failures, one per line.
fn failures_text(failures: &[Failed]) -> String {
    failures
        .iter()
        .take(MAX_LISTED)
        .map(|f| format!("\n    client {} {:?}: {}", f.client, f.transfer, f.reason))
        .collect()
}

/// Checks that `balances` equal the opening balances plus every committed transfer plus some
/// subset of the `unknown` ones; says how many unknown ones applied, or why none fits.
fn explain_balances(
    balances: &Balances,
    committed: &[Committed],
    unknown: &[Transfer],
) -> Result<String, String> {
    let mut residual = *balances;
    for account in &mut residual {
        *account -= INITIAL_BALANCE;
    }
    for transfer in committed {
        residual = sub(&residual, &transfer.transfer.delta());
    }
    if unknown.len() > MAX_EXACT_UNKNOWN {
        return within_bounds(&residual, unknown);
    }
    // Meet in the middle: a subset of the whole is a subset of each half.
    let (left, right) = unknown.split_at(unknown.len() / 2);
    let left_sums: HashMap<Balances, u64> = subset_sums(left).into_iter().collect();
    for (right_sum, right_mask) in subset_sums(right) {
        if let Some(left_mask) = left_sums.get(&sub(&residual, &right_sum)) {
            let applied = left_mask.count_ones() + right_mask.count_ones();
            return Ok(format!(
                "explained exactly, e.g. with {applied} of {} applied",
                unknown.len()
            ));
        }
    }
    Err(format!(
        "after the acknowledged transfers {residual:?} remains, and no subset of the {} unknown \
         transfers {unknown:?} adds up to it",
        unknown.len()
    ))
}

/// The sum of every subset of `items`, each with the bit mask of its members.
fn subset_sums(items: &[Transfer]) -> Vec<(Balances, u64)> {
    let mut sums = vec![([0; ACCOUNTS], 0_u64)];
    for (bit, item) in items.iter().enumerate() {
        let delta = item.delta();
        let with_item: Vec<_> = sums
            .iter()
            .map(|(sum, mask)| (add(sum, &delta), mask | 1 << bit))
            .collect();
        sums.extend(with_item);
    }
    sums
}

/// The weak check for many unknown outcomes: the residual sums to zero and each account's lies
/// between what the unknown transfers could at most take from it and give to it.
fn within_bounds(residual: &Balances, unknown: &[Transfer]) -> Result<String, String> {
    if residual.iter().sum::<i64>() != 0 {
        return Err(format!("residual {residual:?} does not sum to zero"));
    }
    for (account, &left) in residual.iter().enumerate() {
        let (lowest, highest) = unknown.iter().fold((0, 0), |(low, high), t| {
            let d = t.delta()[account];
            (low + d.min(0), high + d.max(0))
        });
        if left < lowest || left > highest {
            return Err(format!(
                "account {account} is off by {left}, outside what the unknown transfers allow \
                 [{lowest}, {highest}]"
            ));
        }
    }
    Ok(format!(
        "within bounds only ({} unknown transfers, more than {MAX_EXACT_UNKNOWN} for an exact check)",
        unknown.len()
    ))
}

fn add(a: &Balances, b: &Balances) -> Balances {
    std::array::from_fn(|i| a[i] + b[i])
}

fn sub(a: &Balances, b: &Balances) -> Balances {
    std::array::from_fn(|i| a[i] - b[i])
}

/// Commit wait: every commit timestamp lies before its COMMIT returned.
fn check_commit_wait(committed: &[Committed]) -> Vec<String> {
    let late: Vec<String> = committed
        .iter()
        .filter_map(|c| {
            let ts = c.commit_ts?;
            (ts >= c.returned_ns).then(|| {
                format!(
                    "client {} {:?}: commit timestamp {ts} is {} ns after its COMMIT returned at {}",
                    c.client,
                    c.transfer,
                    ts - c.returned_ns,
                    c.returned_ns
                )
            })
        })
        .collect();
    listed("commit wait", late)
}

/// The committed transfers with a known timestamp, sorted by when COMMIT returned, with the
/// running maximum of their timestamps, so that [`Acknowledged::latest_before`] finds the
/// largest timestamp acknowledged before a wall time in O(log n).
struct Acknowledged<'a> {
    by_return: Vec<&'a Committed>,
    /// `(max commit_ts, its index in by_return)` over `by_return[..=i]`.
    running_max: Vec<(u64, usize)>,
}

impl<'a> Acknowledged<'a> {
    fn new(committed: &'a [Committed]) -> Self {
        let mut by_return: Vec<&Committed> =
            committed.iter().filter(|c| c.commit_ts.is_some()).collect();
        by_return.sort_by_key(|c| c.returned_ns);
        let mut running_max: Vec<(u64, usize)> = Vec::with_capacity(by_return.len());
        for (i, c) in by_return.iter().enumerate() {
            let ts = c.commit_ts.unwrap_or(0);
            let best = match running_max.last() {
                Some(&(max, at)) if max >= ts => (max, at),
                _ => (ts, i),
            };
            running_max.push(best);
        }
        Acknowledged {
            by_return,
            running_max,
        }
    }

    /// The transfer with the largest timestamp among those whose COMMIT returned before `ns`.
    fn latest_before(&self, ns: u64) -> Option<(u64, &'a Committed)> {
        let count = self.by_return.partition_point(|c| c.returned_ns < ns);
        let &(ts, at) = self.running_max.get(count.checked_sub(1)?)?;
        Some((ts, self.by_return[at]))
    }
}

/// External consistency: a transfer that began after another's COMMIT returned has a larger
/// commit timestamp.
fn check_external_consistency(committed: &[Committed]) -> Vec<String> {
    let acknowledged = Acknowledged::new(committed);
    let inversions: Vec<String> = committed
        .iter()
        .filter_map(|later| {
            let ts = later.commit_ts?;
            let (earlier_ts, earlier) = acknowledged.latest_before(later.began_ns)?;
            (earlier_ts >= ts).then(|| {
                format!(
                    "client {} {:?} began at {} after client {} {:?} committed at {earlier_ts} \
                     returned at {}, but got commit timestamp {ts}",
                    later.client,
                    later.transfer,
                    later.began_ns,
                    earlier.client,
                    earlier.transfer,
                    earlier.returned_ns
                )
            })
        })
        .collect();
    listed("external consistency", inversions)
}

/// Strong reads: a check's snapshot is at or above every commit acknowledged before it began.
fn check_strong_reads(checks: &[ReadCheck], committed: &[Committed]) -> Vec<String> {
    let acknowledged = Acknowledged::new(committed);
    let stale: Vec<String> = checks
        .iter()
        .filter_map(|check| {
            let read_ts = check.read_ts;
            let (ts, earlier) = acknowledged.latest_before(check.began_ns)?;
            (ts > read_ts).then(|| {
                format!(
                    "client {} read at {read_ts} (began at {}), below the commit timestamp {ts} \
                     of client {} {:?}, acknowledged at {}",
                    check.client,
                    check.began_ns,
                    earlier.client,
                    earlier.transfer,
                    earlier.returned_ns
                )
            })
        })
        .collect();
    listed("strong reads", stale)
}

/// The first [`MAX_LISTED`] violations of one check, and a count of the rest.
fn listed(check: &str, mut violations: Vec<String>) -> Vec<String> {
    let more = violations.len().saturating_sub(MAX_LISTED);
    violations.truncate(MAX_LISTED);
    for violation in &mut violations {
        violation.insert_str(0, &format!("{check}: "));
    }
    if more > 0 {
        violations.push(format!("{check}: … and {more} more"));
    }
    violations
}

// ---- reporting ----

/// The summary table printed at the end of every run.
fn summary(run: &Run, verdict: &Verdict, duration: Duration, seed: u64) -> String {
    let history = &run.history;
    let c = &history.counters;
    let mut rows: Vec<(&str, String)> = vec![
        (
            "duration",
            format!("{duration:?}, {CLIENTS} clients, seed {seed}"),
        ),
        ("committed transfers", history.committed.len().to_string()),
        ("aborts (40001)", c.conflicts.to_string()),
        ("retries", c.retries.to_string()),
        ("failed before commit", c.failed_before_commit.to_string()),
        (
            "rejected at commit",
            history.rejected_at_commit.len().to_string(),
        ),
        (
            "unknown outcomes",
            format!(
                "{} ({})",
                history.unknown.len(),
                verdict.unknown_explanation
            ),
        ),
        (
            "skipped (insufficient funds)",
            c.skipped_insufficient.to_string(),
        ),
        (
            "abandoned at the deadline",
            c.abandoned_at_deadline.to_string(),
        ),
        (
            "read-only checks",
            format!(
                "{} ok, {} failed to run",
                history.checks.len(),
                c.checks_failed
            ),
        ),
        ("connections opened", c.connections.to_string()),
        ("kills", kills_text(&run.kills)),
        ("commits per 10 s", windows_text(run, duration)),
        ("final balances", format!("{:?}", verdict.final_balances)),
        ("errors seen", history.frequent_errors()),
        ("violations", verdict.violations.len().to_string()),
    ];
    let without_ts = history
        .committed
        .iter()
        .filter(|c| c.commit_ts.is_none())
        .count();
    if without_ts > 0 {
        rows.push(("commits without a timestamp", without_ts.to_string()));
    }
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = String::from("bank test summary\n");
    for (name, value) in rows {
        let _ = writeln!(text, "  {name:<width$}  {value}");
    }
    text
}

fn kills_text(kills: &[Kill]) -> String {
    let each: Vec<String> = kills
        .iter()
        .map(|k| format!("s{} at {:.1} s", k.server + 1, k.after.as_secs_f64()))
        .collect();
    format!("{}: {}", kills.len(), each.join(", "))
}

fn windows_text(run: &Run, duration: Duration) -> String {
    let width = WINDOW.as_nanos() as u64;
    let windows = duration.as_nanos().div_ceil(WINDOW.as_nanos()) as usize;
    let mut counts = vec![0_usize; windows.max(1)];
    for committed in &run.history.committed {
        let window = (committed.returned_ns.saturating_sub(run.started_ns) / width) as usize;
        // A transfer in flight at the deadline lands in the last window.
        let last = counts.len() - 1;
        counts[window.min(last)] += 1;
    }
    let each: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}-{}s: {n}", i * 10, (i + 1) * 10))
        .collect();
    each.join(" | ")
}

#[cfg(test)]
mod checker_tests;
