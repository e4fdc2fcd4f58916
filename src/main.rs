//! The `meridian` binary: parses flags and calls the crates. Nothing else lives here.
//!
//! - `meridian start --id N --zone ZONE --data-dir DIR --listen HOST:PORT --pg-listen HOST:PORT --pd HOST:PORT[,HOST:PORT…]`
//! - `meridian pd --data-dir DIR --listen HOST:PORT [--replicas N]` (replicas per tablet, default 3)
//! - every server process takes `--certs-dir DIR` (mutual TLS; SQL logins) or `--insecure`
//! - `meridian demo [--pg-port PORT] [--no-shell] [--master-bound-us N]`
//! - `meridian sql --url postgresql://USER@HOST:PORT/DB [-e STATEMENT]`
//! - `meridian cert create-ca | create-node HOST… | create-client USER --certs-dir DIR --ca-key FILE`

mod bench;
mod demo;
mod truetime;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meridian_truetime::{SystemTrueTime, TrueTime};

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a Spanner-like, globally distributed SQL database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a placement driver.
    Pd {
        /// Where the placement driver keeps its state.
        #[arg(long)]
        data_dir: PathBuf,
        /// The gRPC address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Replicas per tablet; the system tablet is created once this many servers have
        /// registered.
        #[arg(long, default_value_t = meridian_pd::service::REPLICATION_FACTOR)]
        replicas: usize,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Run a spanserver.
    Start {
        /// This server's id (unique in the cluster, at least 1, never reused).
        #[arg(long)]
        id: u64,
        /// The zone (failure domain) this server runs in.
        #[arg(long)]
        zone: String,
        /// Where the server keeps its data (RocksDB).
        #[arg(long)]
        data_dir: PathBuf,
        /// The gRPC address (Raft and tablet traffic), HOST:PORT; HOST may be a name.
        #[arg(long)]
        listen: String,
        /// The gRPC address other servers should dial, if not the --listen address.
        #[arg(long)]
        advertise: Option<String>,
        /// The PostgreSQL wire-protocol address.
        #[arg(long)]
        pg_listen: SocketAddr,
        /// Placement driver addresses, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        pd: Vec<String>,
        /// Acknowledge commits without waiting out clock uncertainty. Breaks external
        /// consistency: only for tests and benchmarks that measure what commit wait buys.
        #[arg(long, hide = true)]
        unsafe_disable_commit_wait: bool,
        /// Serve Prometheus metrics (/metrics) and /health over HTTP here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Trust this machine's clock to stay within ε milliseconds of true time, unmeasured,
        /// instead of reading a truetime agent. Only for machines whose clock is known to be
        /// disciplined that well: a wrong ε breaks external consistency. Logged as a warning.
        #[arg(long, conflicts_with = "truetime")]
        clock_epsilon_ms: Option<u64>,
        /// The local truetime agent (HOST:PORT), which measures ε. A server needs this or
        /// --clock-epsilon-ms.
        #[arg(long)]
        truetime: Option<String>,
        /// Refuse read-write commits while ε exceeds this.
        #[arg(long, default_value_t = 20)]
        max_clock_epsilon_ms: u64,
        /// With --certs-dir, SQL clients also need TLS, then a client certificate signed by
        /// CA or a password.
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Run a local 3-zone cluster in this process, with a SQL prompt.
    Demo {
        /// The PostgreSQL port of the first server (0 picks a free one).
        #[arg(long, default_value_t = 26257)]
        pg_port: u16,
        /// Serve until SIGINT/SIGTERM instead of opening the shell.
        #[arg(long)]
        no_shell: bool,
        /// The error bound the demo's time master declares when the kernel does not report
        /// the clock disciplined, in µs: ε, and so commit wait, follow it.
        #[arg(long, default_value_t = 1000)]
        master_bound_us: u64,
    },
    /// Create the certificates of a secure cluster.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// TrueTime: run a time master or agent, or ask an agent for the time.
    Truetime {
        #[command(subcommand)]
        command: TruetimeCommand,
    },
    /// Run a benchmark: the same workload on Meridian and on PostgreSQL 15, printed as a table.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// Open the interactive SQL shell.
    Sql {
        /// The server to connect to.
        #[arg(long, default_value = "postgresql://root@127.0.0.1:26257/meridian")]
        url: String,
        /// Run this statement (or `;`-separated statements) and exit.
        #[arg(short = 'e', long = "execute")]
        execute: Option<String>,
        /// A secure cluster's certificates: TLS that trusts only ca.crt, logging in with
        /// client.<user>.crt if present, else the URL's password or PGPASSWORD.
        #[arg(long)]
        certs_dir: Option<PathBuf>,
    },
}

/// How a server process secures its connections (`start`, `pd`, `truetime master|agent`):
/// `--certs-dir` or an explicit `--insecure`.
#[derive(clap::Args, Clone)]
struct SecurityArgs {
    /// Secure every connection with the certificates here (see `meridian cert`): gRPC between
    /// processes is mutual TLS with node.crt, trusting only ca.crt.
    #[arg(long, conflicts_with = "insecure")]
    certs_dir: Option<PathBuf>,
    /// Run without TLS or authentication: anyone who reaches a port is trusted.
    #[arg(long)]
    insecure: bool,
}

impl SecurityArgs {
    /// Installs the TLS identity, or logs that there is none; refuses neither flag.
    fn apply(&self, what: &str) -> Result<Option<PathBuf>, String> {
        match (&self.certs_dir, self.insecure) {
            (Some(dir), _) => {
                meridian_proto::tls::install(dir, meridian_security::tls::is_node_certificate)
                    .map_err(|e| format!("--certs-dir {}: {e}", dir.display()))?;
                tracing::info!(certs_dir = %dir.display(), "gRPC is mutual TLS");
                Ok(Some(dir.clone()))
            }
            (None, true) => {
                tracing::warn!("running INSECURE (--insecure): no TLS, no authentication");
                Ok(None)
            }
            (None, false) => Err(format!(
                "{what} needs --certs-dir DIR (TLS; see `meridian cert`) or, to run without it, \
                 an explicit --insecure"
            )),
        }
    }
}

/// Where certificates go and which CA key signs them (every `cert` subcommand).
#[derive(clap::Args)]
struct CertDirs {
    /// The certs directory (ca.crt, node.crt/node.key, client.USER.crt/client.USER.key).
    #[arg(long)]
    certs_dir: PathBuf,
    /// The CA's private key, kept apart from the certs directory.
    #[arg(long)]
    ca_key: PathBuf,
}

// The subcommands' names are the contract (`create-ca`, `create-node`, `create-client`).
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum CertCommand {
    /// Create the cluster's CA: CERTS_DIR/ca.crt and the key at --ca-key.
    CreateCa {
        #[command(flatten)]
        dirs: CertDirs,
    },
    /// Create CERTS_DIR/node.crt and node.key, valid for the given host names and addresses.
    CreateNode {
        /// Host names and IP addresses the node is reached by.
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        dirs: CertDirs,
    },
    /// Create CERTS_DIR/client.USER.crt and client.USER.key for the SQL user USER.
    CreateClient {
        /// The SQL user the certificate logs in as.
        user: String,
        #[command(flatten)]
        dirs: CertDirs,
    },
}

#[derive(Subcommand)]
enum TruetimeCommand {
    /// A reference clock that agents poll.
    Master {
        /// The gRPC address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// The error bound to declare when the kernel does not report the clock disciplined.
        #[arg(long, default_value_t = 1000)]
        error_bound_us: u64,
        /// Shift the clock by this much (tests and chaos: makes the master lie).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        inject_offset_ms: i64,
        /// Make the clock drift by this rate (tests and chaos).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        inject_drift_ppm: i64,
        /// Serve Prometheus metrics (/metrics) and /health over HTTP here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// The per-machine daemon: polls masters, serves intervals to local servers.
    Agent {
        /// The gRPC address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Time master addresses, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        masters: Vec<String>,
        /// How often to poll every master.
        #[arg(long, default_value_t = 1000)]
        poll_interval_ms: u64,
        /// The local clock's worst drift between polls, parts per million (200 = 200 µs/s).
        #[arg(long, default_value_t = 200)]
        drift_ppm: u64,
        /// Above this ε the agent reports itself unusable.
        #[arg(long, default_value_t = 20)]
        max_epsilon_ms: u64,
        /// Serve Prometheus metrics (/metrics) and /health over HTTP here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Print an agent's current interval.
    Now {
        /// The agent's gRPC address.
        #[arg(long)]
        agent: String,
        /// Print exactly {"earliest_ns": …, "latest_ns": …, "epsilon_ns": …, "status": "…"}.
        #[arg(long)]
        json: bool,
        /// Connect with the node certificate here (to an agent run with --certs-dir).
        #[arg(long)]
        certs_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The cost of one TT.now() for each clock source, including the agent-fed one.
    Clock,
    /// Single-row writes with and without commit wait, beside PostgreSQL.
    Writes {
        /// Writes measured per system.
        #[arg(long, default_value_t = 500)]
        writes: usize,
        /// Use a fixed ε (milliseconds) instead of an in-process truetime master and agent.
        #[arg(long)]
        clock_epsilon_ms: Option<u64>,
        /// The bound the in-process time master declares when the kernel does not report the
        /// clock disciplined, in microseconds.
        #[arg(long, default_value_t = 1000)]
        master_bound_us: u64,
    },
    /// Transactions beside PostgreSQL: 2PC latency vs participants, read-only vs read-write
    /// throughput, group commit.
    Txn {
        /// Measured transactions per participant count.
        #[arg(long, default_value_t = 200)]
        txns: usize,
        /// Participant counts (tablets written per transaction), comma-separated, at most 10.
        #[arg(long, value_delimiter = ',', default_value = "1,2,5,10")]
        participants: Vec<usize>,
        /// Concurrent clients for the read-only vs read-write runs.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds each throughput run measures (after a short warm-up).
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Rows in each table.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Concurrent client counts for group commit, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
        group_commit_clients: Vec<usize>,
        /// PostgreSQL's isolation level: serializable, repeatable-read or read-committed.
        #[arg(long, default_value = "serializable")]
        pg_isolation: String,
        /// Use a fixed ε (milliseconds) instead of an in-process truetime master and agent.
        #[arg(long)]
        clock_epsilon_ms: Option<u64>,
        /// The bound the in-process time master declares when the kernel does not report the
        /// clock disciplined, in microseconds.
        #[arg(long, default_value_t = 1000)]
        master_bound_us: u64,
    },
}

pub(crate) fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A watch channel that turns true on SIGINT or SIGTERM.
pub(crate) fn shutdown_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How `meridian start` admits SQL clients: with the certs directory, TLS and a client
/// certificate or password; without one (`--insecure`), anyone.
fn sql_security(certs_dir: Option<PathBuf>) -> Result<meridian_node::SqlSecurity, String> {
    match certs_dir {
        Some(dir) => {
            let config = meridian_security::tls::server_config(&dir)
                .map_err(|e| format!("--certs-dir {}: {e}", dir.display()))?;
            Ok(meridian_node::SqlSecurity::Secure(config))
        }
        None => Ok(meridian_node::SqlSecurity::Insecure),
    }
}

/// Why `meridian start` without a clock refuses to run.
const NO_CLOCK: &str = "a spanserver needs a clock whose uncertainty is known: pass \
    --truetime HOST:PORT (the local truetime agent, which measures it), or --clock-epsilon-ms N \
    to trust this machine's clock to stay within N ms of true time without measuring it";

/// The system clock trusted at ±`epsilon`, unmeasured: refused if `epsilon` is over the bound
/// commits are allowed under (every commit would be refused), logged as a warning otherwise.
fn fixed_clock(epsilon: Duration, max: Duration) -> Result<Arc<dyn TrueTime>, String> {
    if epsilon > max {
        return Err(format!(
            "--clock-epsilon-ms {} is over --max-clock-epsilon-ms {}: no commit could ever run",
            epsilon.as_millis(),
            max.as_millis()
        ));
    }
    tracing::warn!(
        epsilon_ms = epsilon.as_millis() as u64,
        "the clock is NOT measured: trusting the system clock to stay within ±ε of true time \
         (--clock-epsilon-ms); run a truetime agent and pass --truetime instead"
    );
    Ok(Arc::new(SystemTrueTime::new(epsilon)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meridian: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Pd {
                data_dir,
                listen,
                replicas,
                security,
            } => {
                init_tracing("info");
                security.apply("a placement driver")?;
                let shutdown = shutdown_on_signals();
                let opts = meridian_pd::PdOptions {
                    data_dir,
                    listen,
                    replicas,
                };
                meridian_pd::run(opts, shutdown, None)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Start {
                id,
                zone,
                data_dir,
                listen,
                advertise,
                pg_listen,
                pd,
                unsafe_disable_commit_wait,
                metrics_listen,
                clock_epsilon_ms,
                truetime,
                max_clock_epsilon_ms,
                security,
            } => {
                init_tracing("info");
                // Before the clock: the truetime agent may speak TLS only.
                let certs_dir = security.apply("a spanserver")?;
                let shutdown = shutdown_on_signals();
                let max_epsilon = Duration::from_millis(max_clock_epsilon_ms);
                let tt: Arc<dyn TrueTime> = match (truetime, clock_epsilon_ms) {
                    (Some(agent), _) => {
                        match meridian_truetime_daemon::client::AgentClock::connect(
                            agent,
                            max_epsilon,
                            Duration::from_secs(30),
                            shutdown.clone(),
                        )
                        .await
                        {
                            Ok(clock) => clock,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    (None, Some(ms)) => fixed_clock(Duration::from_millis(ms), max_epsilon)?,
                    (None, None) => return Err(NO_CLOCK.into()),
                };
                let server = meridian_spanserver::server::ServerOptions {
                    id,
                    zone,
                    data_dir,
                    listen,
                    advertise,
                    sql_addr: None,
                    pd,
                    metrics_listen,
                    commit_wait: !unsafe_disable_commit_wait,
                    failpoints: Arc::new(
                        meridian_spanserver::failpoints::Failpoints::parse(
                            &std::env::var("MERIDIAN_FAILPOINTS").unwrap_or_default(),
                            true,
                        )
                        .map_err(|e| format!("MERIDIAN_FAILPOINTS: {e}"))?,
                    ),
                    lease: meridian_spanserver::server::DEFAULT_LEASE,
                };
                let sql_security = sql_security(certs_dir)?;
                let opts = meridian_node::NodeOptions {
                    server,
                    sql_listen: pg_listen,
                    sql_security,
                    local: Default::default(),
                };
                meridian_node::run(opts, tt, shutdown, None)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Demo {
                pg_port,
                no_shell,
                master_bound_us,
            } => {
                init_tracing("warn");
                demo::run(pg_port, no_shell, Duration::from_micros(master_bound_us)).await
            }
            Command::Bench { bench } => bench::run(bench).await,
            Command::Truetime { command } => truetime::run(command).await,
            Command::Cert { command } => {
                use meridian_security::certs;
                match command {
                    CertCommand::CreateCa { dirs } => {
                        certs::create_ca(&dirs.certs_dir, &dirs.ca_key)
                    }
                    CertCommand::CreateNode { hosts, dirs } => {
                        certs::create_node(&dirs.certs_dir, &dirs.ca_key, &hosts)
                    }
                    CertCommand::CreateClient { user, dirs } => {
                        certs::create_client(&dirs.certs_dir, &dirs.ca_key, &user)
                    }
                }
                .map_err(|e| e.to_string())
            }
            Command::Sql {
                url,
                execute,
                certs_dir,
            } => meridian_client::shell::run(meridian_client::shell::ShellOptions {
                url,
                execute,
                certs_dir,
            })
            .await
            .map_err(|e| e.to_string()),
        }
    });
    // Blocking tasks (a shell's line reader) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian: {e}");
            ExitCode::FAILURE
        }
    }
}
