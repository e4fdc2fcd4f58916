//! A cluster of real `meridian` processes on the loopback interface.
//!
//! [`Cluster::start`] lays out a temporary directory and starts one placement driver and `n`
//! spanservers from the binary under test:
//!
//! ```text
//!                 truetime-master.log  meridian truetime master --listen 127.0.0.1:M
//!                                          --error-bound-us 1000 --insecure
//!                 truetime-agent.log   meridian truetime agent --listen 127.0.0.1:A
//!                                          --masters 127.0.0.1:M --insecure
//! <tempdir>/pd/   pd.log      meridian pd --data-dir <tempdir>/pd --listen 127.0.0.1:P --insecure
//! <tempdir>/s1/   s1.log      meridian start --id 1 --zone zone-a --data-dir <tempdir>/s1
//! <tempdir>/s2/   s2.log          --listen 127.0.0.1:L1 --pg-listen 127.0.0.1:Q1 --pd 127.0.0.1:P
//! …                               --truetime 127.0.0.1:A --insecure
//! ```
//!
//! With [`ClusterOptions::certs_dir`] every process runs `--certs-dir DIR` instead of
//! `--insecure`: gRPC between them is mutual TLS, and SQL needs TLS and a login.
//!
//! The time master and agent run for the cluster's life (server faults leave them alone), so
//! every server measures its clock's uncertainty as in production.
//!
//! Servers are addressed by **index** `0..n`: index `i` is server id `i + 1`, in zone
//! `zone-a`, `zone-b`, … (the `i`-th letter), with data directory and log `s{i+1}`. Every
//! port is chosen once, at start, and kept for the cluster's life, so a restarted process gets
//! exactly its old command line and data.
//!
//! Faults are real: [`Cluster::kill`] sends SIGKILL and reaps the process, so nothing is
//! flushed or shut down gracefully; [`Cluster::restart`] starts it again; [`Cluster::pause`]
//! and [`Cluster::resume`] freeze and thaw a server (SIGSTOP, SIGCONT); [`Cluster::skew_master`]
//! restarts the time master with its clock shifted. The harness never
//! decides that the cluster is healthy by waiting: [`Cluster::wait_ready`] probes every
//! running server with `SHOW TABLES` until it answers, and fails early, with the log's tail,
//! if a process exits.
//!
//! On drop every process is killed and the directory removed. If the test is panicking the
//! last [`LOG_TAIL_LINES`] lines of every log are printed to stderr first; with
//! `MERIDIAN_KEEP_TEST_DIR=1` the directory is kept and its path printed.
//!
//! All methods take `&self` (process handles sit behind mutexes), so a cluster can be shared
//! with tasks through an `Arc` while the test kills and restarts nodes.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use tempfile::TempDir;
use tokio_postgres::Client;

use crate::pg;
use crate::ports::{free_ports, loopback};
use crate::process::{log_tail, send_signal, ManagedProcess};
use crate::slot::Slot;
use crate::HarnessError;

/// How many lines of each log a failing test prints.
pub const LOG_TAIL_LINES: usize = 60;
/// The environment variable that keeps a cluster's directory after the test (`1` or `true`).
pub const KEEP_DIR_ENV: &str = "MERIDIAN_KEEP_TEST_DIR";
/// How long (re)starting the cluster waits, by default, for the placement driver's port to
/// accept connections before it starts the servers anyway. Servers must cope with a late PD;
/// the wait only makes start-up more predictable.
pub const PD_LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to lay out a cluster; [`Cluster::start`] uses the defaults with a server count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// How many spanservers to run (default 3, one per zone).
    pub servers: usize,
    /// How long starting the placement driver waits for its port (default
    /// [`PD_LISTEN_TIMEOUT`]).
    pub pd_listen_timeout: Duration,
    /// Serve SQL securely with this certs directory (`--certs-dir`); `None` (the default)
    /// runs `--insecure`.
    pub certs_dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            servers: 3,
            pd_listen_timeout: PD_LISTEN_TIMEOUT,
            certs_dir: None,
        }
    }
}

/// The placement driver's process and address.
#[derive(Debug)]
struct PlacementDriver {
    listen: SocketAddr,
    process: ManagedProcess,
}

/// The machine's time service: one time master and the agent every server reads TrueTime
/// from, as on a real machine. They run for the cluster's life: server faults leave them be.
#[derive(Debug)]
struct TimeService {
    master: ManagedProcess,
    agent: ManagedProcess,
    agent_listen: SocketAddr,
}

/// The error bound the harness's time master declares, in microseconds.
pub const MASTER_BOUND_US: u64 = 1000;

/// One spanserver's identity, addresses and process.
#[derive(Debug)]
struct Server {
    id: u64,
    zone: String,
    listen: SocketAddr,
    pg: SocketAddr,
    data_dir: PathBuf,
    process: ManagedProcess,
}

/// A running cluster: one placement driver and `n` spanservers. See the module docs.
#[derive(Debug)]
pub struct Cluster {
    /// `None` only inside `drop`, after the directory was kept.
    dir: Option<TempDir>,
    time: TimeService,
    pd: PlacementDriver,
    servers: Vec<Server>,
    pd_listen_timeout: Duration,
    /// Held for the cluster's life; see [`crate::slot`].
    _slot: Slot,
}

impl Cluster {
    /// Starts a placement driver and `servers` spanservers from the binary at `bin`, and
    /// returns without waiting for them to serve; call [`Cluster::wait_ready`] next.
    ///
    /// Blocks while another cluster of this test process holds the only slot (see
    /// [`crate::slot`]).
    ///
    /// # Panics
    ///
    /// If `servers` is zero, or the directory, a port or a process cannot be set up.
    pub fn start(bin: &Path, servers: usize) -> Cluster {
        Cluster::start_with(
            bin,
            ClusterOptions {
                servers,
                ..ClusterOptions::default()
            },
        )
    }

    /// [`Cluster::start`] with every option chosen.
    ///
    /// # Panics
    ///
    /// As [`Cluster::start`].
    pub fn start_with(bin: &Path, options: ClusterOptions) -> Cluster {
        let servers = options.servers;
        assert!(servers > 0, "a cluster needs at least one server");
        let slot = Slot::acquire();
        let dir = tempfile::Builder::new()
            .prefix("meridian-cluster-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create the cluster's directory: {error}"));
        eprintln!("cluster directory: {}", dir.path().display());

        let security: Vec<OsString> = match &options.certs_dir {
            Some(dir) => vec!["--certs-dir".into(), dir.clone().into_os_string()],
            None => vec!["--insecure".into()],
        };
        let secured = |mut args: Vec<OsString>| {
            args.extend(security.iter().cloned());
            args
        };
        let ports = free_ports(3 + 2 * servers);
        let pd_listen = loopback(ports[0]);
        let (master_listen, agent_listen) = (loopback(ports[1]), loopback(ports[2]));
        let time = TimeService {
            master: ManagedProcess::new(
                "truetime-master",
                bin,
                secured(args([
                    "truetime".into(),
                    "master".into(),
                    "--listen".into(),
                    master_listen.to_string().into(),
                    "--error-bound-us".into(),
                    MASTER_BOUND_US.to_string().into(),
                ])),
                dir.path().join("truetime-master.log"),
            ),
            agent: ManagedProcess::new(
                "truetime-agent",
                bin,
                secured(args([
                    "truetime".into(),
                    "agent".into(),
                    "--listen".into(),
                    agent_listen.to_string().into(),
                    "--masters".into(),
                    master_listen.to_string().into(),
                ])),
                dir.path().join("truetime-agent.log"),
            ),
            agent_listen,
        };
        let pd_dir = create_dir(dir.path(), "pd");
        let pd = PlacementDriver {
            listen: pd_listen,
            process: ManagedProcess::new(
                "pd",
                bin,
                secured(args([
                    "pd".into(),
                    "--data-dir".into(),
                    pd_dir.into_os_string(),
                    "--listen".into(),
                    pd_listen.to_string().into(),
                ])),
                dir.path().join("pd.log"),
            ),
        };
        let servers = (0..servers)
            .map(|index| {
                let id = index as u64 + 1;
                let name = format!("s{id}");
                let zone = zone_name(index);
                let listen = loopback(ports[3 + 2 * index]);
                let pg = loopback(ports[4 + 2 * index]);
                let data_dir = create_dir(dir.path(), &name);
                let process = ManagedProcess::new(
                    &name,
                    bin,
                    args([
                        "start".into(),
                        "--id".into(),
                        id.to_string().into(),
                        "--zone".into(),
                        zone.clone().into(),
                        "--data-dir".into(),
                        data_dir.clone().into_os_string(),
                        "--listen".into(),
                        listen.to_string().into(),
                        "--pg-listen".into(),
                        pg.to_string().into(),
                        "--pd".into(),
                        pd_listen.to_string().into(),
                        "--truetime".into(),
                        agent_listen.to_string().into(),
                    ])
                    .into_iter()
                    .chain(security.iter().cloned())
                    .collect(),
                    dir.path().join(format!("{name}.log")),
                );
                Server {
                    id,
                    zone,
                    listen,
                    pg,
                    data_dir,
                    process,
                }
            })
            .collect();
        time.master.start();
        time.agent.start();
        let cluster = Cluster {
            dir: Some(dir),
            time,
            pd,
            servers,
            pd_listen_timeout: options.pd_listen_timeout,
            _slot: slot,
        };
        cluster.restart_all();
        cluster
    }

    /// Waits until every running server answers `SHOW TABLES` on its PostgreSQL port, all
    /// within `timeout`. Killed servers are skipped. Fails at once, with the log's tail, if a
    /// server or the placement driver has exited on its own.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for index in 0..self.servers.len() {
            if self.servers[index].process.pid().is_none() {
                continue;
            }
            self.wait_server(index, deadline, timeout).await?;
        }
        Ok(())
    }

    /// Waits until server `index` answers `SHOW TABLES`, within `timeout`.
    pub async fn wait_server_ready(
        &self,
        index: usize,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.wait_server(index, deadline, timeout).await
    }

    async fn wait_server(
        &self,
        index: usize,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let server = self.server(index);
        let exited = || {
            exited_error(&server.process)
                .or_else(|| exited_error(&self.pd.process))
                .or_else(|| exited_error(&self.time.agent))
                .or_else(|| exited_error(&self.time.master))
        };
        let what = format!("server {} ({})", server.id, server.pg);
        pg::wait_serving(&what, &self.pg_config(index), deadline, timeout, &exited).await
    }

    /// How many servers the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always false: a cluster has at least one server.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The cluster's directory, holding the data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or_else(|| Path::new(""))
    }

    /// The placement driver's address.
    pub fn pd_addr(&self) -> SocketAddr {
        self.pd.listen
    }

    /// Server `index`'s id (`index + 1`).
    pub fn server_id(&self, index: usize) -> u64 {
        self.server(index).id
    }

    /// Server `index`'s zone (`zone-a`, `zone-b`, …).
    pub fn zone(&self, index: usize) -> &str {
        &self.server(index).zone
    }

    /// Server `index`'s internal (gRPC and Raft) address.
    pub fn server_addr(&self, index: usize) -> SocketAddr {
        self.server(index).listen
    }

    /// Server `index`'s PostgreSQL address.
    pub fn pg_addr(&self, index: usize) -> SocketAddr {
        self.server(index).pg
    }

    /// Server `index`'s data directory.
    pub fn data_dir(&self, index: usize) -> &Path {
        &self.server(index).data_dir
    }

    /// Server `index`'s log file.
    pub fn log_path(&self, index: usize) -> &Path {
        self.server(index).process.log_path()
    }

    /// The placement driver's log file.
    pub fn pd_log_path(&self) -> &Path {
        self.pd.process.log_path()
    }

    /// `postgresql://root@127.0.0.1:P/meridian` for server `index`.
    pub fn pg_url(&self, index: usize) -> String {
        pg::pg_url(self.pg_addr(index).port())
    }

    /// `host=127.0.0.1 port=P user=root dbname=meridian` for server `index`.
    pub fn pg_config(&self, index: usize) -> String {
        pg::pg_config(self.pg_addr(index).port())
    }

    /// Connects to server `index` over the PostgreSQL protocol (no TLS), spawning the
    /// connection task on the current runtime.
    pub async fn connect(&self, index: usize) -> Result<Client, tokio_postgres::Error> {
        pg::connect(&self.pg_config(index)).await
    }

    /// Whether server `index` was started and has neither exited nor been killed.
    pub fn is_running(&self, index: usize) -> bool {
        self.server(index).process.is_running()
    }

    /// SIGKILLs server `index` and waits for it to die. No-op if it is not running.
    pub fn kill(&self, index: usize) {
        self.server(index).process.kill();
    }

    /// Starts server `index` again with the same id, zone, ports and data directory, killing it
    /// first if it is still running. Returns without waiting for it to serve.
    pub fn restart(&self, index: usize) {
        self.server(index).process.start();
    }

    /// Freezes server `index` with SIGSTOP: it holds its sockets and leases but answers
    /// nothing, as a machine in a long GC pause or swapped out would. No-op if it is not
    /// running.
    pub fn pause(&self, index: usize) {
        self.signal(index, "STOP");
    }

    /// Thaws server `index` after [`Cluster::pause`] (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.signal(index, "CONT");
    }

    fn signal(&self, index: usize, name: &str) {
        let server = self.server(index);
        if let Some(pid) = server.process.pid() {
            if let Err(error) = send_signal(pid, name) {
                panic!(
                    "cannot send SIG{name} to {}: {error}",
                    server.process.name()
                );
            }
        }
    }

    /// Restarts the time master with its clock shifted by `offset_ms` (0: honest again). With
    /// `|offset_ms|` at most [`MASTER_BOUND_US`] / 1000 the master still tells the truth within
    /// the bound it declares, so TrueTime stays correct; beyond it, the master lies.
    pub fn skew_master(&self, offset_ms: i64) {
        let extra: Vec<OsString> = if offset_ms == 0 {
            Vec::new()
        } else {
            vec!["--inject-offset-ms".into(), offset_ms.to_string().into()]
        };
        self.time.master.start_with(&extra);
    }

    /// The truetime agent every server reads its clock from.
    pub fn agent_addr(&self) -> SocketAddr {
        self.time.agent_listen
    }

    /// SIGKILLs the placement driver.
    pub fn kill_pd(&self) {
        self.pd.process.kill();
    }

    /// Starts the placement driver again on its old port and data directory (killing it first
    /// if it is still running), and waits up to [`ClusterOptions::pd_listen_timeout`] for its
    /// port to open.
    pub fn restart_pd(&self) {
        self.pd.process.start();
        wait_listening(&self.pd.process, self.pd.listen, self.pd_listen_timeout);
    }

    /// SIGKILLs every server and the placement driver.
    pub fn kill_all(&self) {
        for server in &self.servers {
            server.process.kill();
        }
        self.pd.process.kill();
    }

    /// Starts the placement driver and then every server (killing any still running), as at
    /// first start. Returns without waiting for the servers; call [`Cluster::wait_ready`].
    pub fn restart_all(&self) {
        self.restart_pd();
        for server in &self.servers {
            server.process.start();
        }
    }

    fn server(&self, index: usize) -> &Server {
        self.servers.get(index).unwrap_or_else(|| {
            panic!(
                "server index {index} out of range: the cluster has {} servers (indexes 0..{})",
                self.servers.len(),
                self.servers.len()
            )
        })
    }

    /// Every process: the time service, the placement driver, the servers.
    fn processes(&self) -> impl Iterator<Item = &ManagedProcess> {
        [&self.time.master, &self.time.agent, &self.pd.process]
            .into_iter()
            .chain(self.servers.iter().map(|s| &s.process))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.processes() {
            process.kill();
        }
        if std::thread::panicking() {
            for process in self.processes() {
                eprintln!(
                    "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}",
                    process.name(),
                    process.log_path().display(),
                    log_tail(process.log_path(), LOG_TAIL_LINES)
                );
            }
        }
        if let Some(dir) = self.dir.take() {
            if keep_dir_requested() {
                eprintln!(
                    "{KEEP_DIR_ENV} is set: kept cluster directory {}",
                    dir.keep().display()
                );
            } else if std::thread::panicking() {
                eprintln!("set {KEEP_DIR_ENV}=1 to keep the cluster directory and its logs");
            }
        }
    }
}

/// Whether `MERIDIAN_KEEP_TEST_DIR` asks to keep test directories.
pub(crate) fn keep_dir_requested() -> bool {
    std::env::var(KEEP_DIR_ENV)
        .is_ok_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

/// The error for a process that exited on its own, if it has.
pub(crate) fn exited_error(process: &ManagedProcess) -> Option<HarnessError> {
    let status = process.exit_status()?;
    Some(HarnessError::Exited {
        name: process.name().to_string(),
        status,
        log: process.log_path().to_path_buf(),
        tail: log_tail(process.log_path(), LOG_TAIL_LINES),
    })
}

/// `zone-a` … `zone-z`, then `zone-26`, … for very large clusters.
fn zone_name(index: usize) -> String {
    match u8::try_from(index) {
        Ok(offset) if offset < 26 => format!("zone-{}", char::from(b'a' + offset)),
        _ => format!("zone-{index}"),
    }
}

fn create_dir(parent: &Path, name: &str) -> PathBuf {
    let path = parent.join(name);
    std::fs::create_dir_all(&path)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
    path
}

fn args<const N: usize>(args: [OsString; N]) -> Vec<OsString> {
    args.into()
}

/// Polls until `addr` accepts a TCP connection, `process` exits, or `timeout` passes. Gives no
/// verdict: whatever went wrong shows up in [`Cluster::wait_ready`].
fn wait_listening(process: &ManagedProcess, addr: SocketAddr, timeout: Duration) {
    let deadline = StdInstant::now() + timeout;
    while StdInstant::now() < deadline && process.exit_status().is_none() {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_lettered() {
        assert_eq!(zone_name(0), "zone-a");
        assert_eq!(zone_name(2), "zone-c");
        assert_eq!(zone_name(25), "zone-z");
        assert_eq!(zone_name(26), "zone-26");
    }
}
