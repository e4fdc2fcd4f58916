//! A local cluster in this process: a placement driver and `n` nodes on loopback, data in a
//! temporary directory removed at [`LocalCluster::shutdown`]. `meridian demo`, the benchmarks
//! and the tests all start clusters here, so there is one bootstrap to keep right.
//!
//! Nodes can be stopped and restarted (on the same gRPC port, with the same data) to test
//! recovery; every node's clock, commit wait, lease and crash points are chosen per node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_spanserver::failpoints::Failpoints;
use meridian_spanserver::server::{ServerOptions, DEFAULT_LEASE};
use meridian_truetime::{SystemTrueTime, TrueTime};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use meridian_kv::router::{LocalTablets, Router};

use crate::{NodeAddrs, NodeError, NodeOptions};

/// How long [`LocalCluster::start`] waits for the cluster to bootstrap its system tablet.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How one node of a local cluster is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node's zone.
    pub zone: String,
    /// Its clock.
    pub tt: Arc<dyn TrueTime>,
    /// Commit wait; off only to show what it buys.
    pub commit_wait: bool,
    /// Crash points armed on this node (kept across restarts: a fired point stays disarmed).
    pub failpoints: Arc<Failpoints>,
    /// The leader lease length.
    pub lease: Duration,
    /// The SQL port (0 = any free port).
    pub sql_port: u16,
    /// Serve `/metrics` on a free port.
    pub metrics: bool,
}

impl NodeConfig {
    /// A node in `zone` with a system clock of 1 ms uncertainty and default settings.
    pub fn in_zone(zone: impl Into<String>) -> NodeConfig {
        NodeConfig {
            zone: zone.into(),
            tt: Arc::new(SystemTrueTime::new(Duration::from_millis(1))),
            commit_wait: true,
            failpoints: Arc::default(),
            lease: DEFAULT_LEASE,
            sql_port: 0,
            metrics: false,
        }
    }
}

/// What to start.
#[derive(Clone)]
pub struct ClusterOptions {
    /// One entry per node; node `i` gets server id `i + 1`.
    pub nodes: Vec<NodeConfig>,
    /// Replicas per tablet (at most the number of nodes).
    pub replicas: usize,
    /// The temporary directory's name prefix.
    pub dir_prefix: String,
}

impl ClusterOptions {
    /// `n` nodes in zones `zone-a`, `zone-b`, … (wrapping after `zone-z`), replicated
    /// `min(n, 3)` ways.
    pub fn zones(n: usize) -> ClusterOptions {
        ClusterOptions {
            nodes: (0..n)
                .map(|i| NodeConfig::in_zone(format!("zone-{}", (b'a' + (i % 26) as u8) as char)))
                .collect(),
            replicas: n.clamp(1, 3),
            dir_prefix: "meridian-".into(),
        }
    }

    /// Applies `f` to every node's config.
    pub fn each_node(mut self, f: impl Fn(&mut NodeConfig)) -> ClusterOptions {
        self.nodes.iter_mut().for_each(f);
        self
    }
}

struct RunningNode {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), NodeError>>,
}

/// A running local cluster.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    pd_addr: SocketAddr,
    pd_stop: watch::Sender<bool>,
    pd_task: JoinHandle<()>,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<RunningNode>>,
    addrs: Vec<NodeAddrs>,
    /// The tablet services of the running nodes, which every node and client of this cluster
    /// calls in-process.
    local: LocalTablets,
}

impl LocalCluster {
    /// Starts the placement driver and every node, and waits until the system tablet serves
    /// reads.
    pub async fn start(opts: ClusterOptions) -> Result<LocalCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix(&opts.dir_prefix)
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let (pd_stop, pd_rx) = watch::channel(false);
        let (pd_tx, pd_bound) = oneshot::channel();
        let pd_opts = meridian_pd::PdOptions {
            data_dir: dir.path().join("pd"),
            listen: loopback(0),
            replicas: opts.replicas.clamp(1, opts.nodes.len().max(1)),
        };
        let pd_task = tokio::spawn(async move {
            if let Err(e) = meridian_pd::run(pd_opts, pd_rx, Some(pd_tx)).await {
                tracing::error!(error = %e, "placement driver stopped");
            }
        });
        let pd_addr = pd_bound
            .await
            .map_err(|_| "the placement driver did not start".to_string())?;
        let mut cluster = LocalCluster {
            dir,
            pd_addr,
            pd_stop,
            pd_task,
            configs: opts.nodes,
            nodes: Vec::new(),
            addrs: Vec::new(),
            local: LocalTablets::default(),
        };
        for i in 0..cluster.configs.len() {
            match cluster.launch(i, 0).await {
                Ok((node, addrs)) => {
                    cluster.nodes.push(Some(node));
                    cluster.addrs.push(addrs);
                }
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(format!("node {} did not start: {e}", i + 1));
                }
            }
        }
        if let Err(e) = cluster.wait_ready(READY_TIMEOUT).await {
            cluster.shutdown().await;
            return Err(e);
        }
        Ok(cluster)
    }

    async fn launch(&self, i: usize, grpc_port: u16) -> Result<(RunningNode, NodeAddrs), String> {
        let config = &self.configs[i];
        let id = i as u64 + 1;
        let opts = NodeOptions {
            sql_security: meridian_sql::Security::Insecure,
            server: ServerOptions {
                id,
                zone: config.zone.clone(),
                data_dir: self.data_dir(i),
                listen: loopback(grpc_port).to_string(),
                advertise: None,
                sql_addr: None,
                pd: vec![self.pd_addr.to_string()],
                metrics_listen: config.metrics.then(|| loopback(0)),
                commit_wait: config.commit_wait,
                failpoints: config.failpoints.clone(),
                lease: config.lease,
            },
            sql_listen: loopback(config.sql_port),
            local: self.local.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (bound_tx, bound_rx) = oneshot::channel();
        let task = tokio::spawn(crate::run(opts, config.tt.clone(), stop_rx, Some(bound_tx)));
        match bound_rx.await {
            Ok(addrs) => Ok((RunningNode { stop, task }, addrs)),
            Err(_) => Err(match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "stopped at once".into(),
                Err(e) => e.to_string(),
            }),
        }
    }

    /// Waits until a strong read of the system range succeeds: the placement driver has
    /// bootstrapped the system tablet and its group has a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let client = self.kv_client(0);
        let deadline = Instant::now() + timeout;
        let end = meridian_common::keys::table_prefix(meridian_common::keys::FIRST_USER_TABLE_ID);
        loop {
            let mut txn = client.begin_read_only(meridian_kv::ReadBound::Strong);
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), txn.scan(&[], &end, Some(1))).await;
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if Instant::now() > deadline => {
                    return Err(format!(
                        "the cluster did not become ready in {timeout:?}: {e}"
                    ))
                }
                Err(_) if Instant::now() > deadline => {
                    return Err(format!("the cluster did not become ready in {timeout:?}"))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The placement driver's address.
    pub fn pd_addr(&self) -> SocketAddr {
        self.pd_addr
    }

    /// How many nodes the cluster has (running or stopped).
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// True if the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// Node `i`'s addresses (as of its last start).
    pub fn addrs(&self, i: usize) -> NodeAddrs {
        self.addrs[i]
    }

    /// Node `i`'s zone.
    pub fn zone(&self, i: usize) -> &str {
        &self.configs[i].zone
    }

    /// `host=… port=… user=root dbname=meridian` for node `i`'s SQL listener.
    pub fn pg_config(&self, i: usize) -> String {
        let a = self.addrs[i].sql;
        format!(
            "host={} port={} user=root dbname=meridian",
            a.ip(),
            a.port()
        )
    }

    /// `postgresql://root@HOST:PORT/meridian` for node `i`.
    pub fn pg_url(&self, i: usize) -> String {
        format!(
            "postgresql://root@{}/meridian?sslmode=disable",
            self.addrs[i].sql
        )
    }

    /// A fresh KV client (its own directory cache and connections) in node `i`'s zone, with
    /// node `i`'s clock.
    pub fn kv_client(&self, i: usize) -> meridian_kv::Client {
        meridian_kv::Client::with_router(Router::with_local(
            vec![self.pd_addr.to_string()],
            self.configs[i].tt.clone(),
            Some(self.configs[i].zone.clone()),
            self.local.clone(),
        ))
    }

    /// Node `i`'s crash points.
    pub fn failpoints(&self, i: usize) -> Arc<Failpoints> {
        self.configs[i].failpoints.clone()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s{}", i + 1))
    }

    /// Where node `i` keeps its RocksDB (readable once the node is stopped).
    pub fn engine_path(&self, i: usize) -> PathBuf {
        self.data_dir(i).join("db")
    }

    /// The cluster's data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops node `i` (cleanly: it hands over its leases), keeping its data.
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            let _ = node.stop.send(true);
            match node.task.await {
                Ok(Err(e)) => {
                    tracing::warn!(node = i + 1, error = %e, "node stopped with an error")
                }
                Err(e) => tracing::warn!(node = i + 1, error = %e, "node task failed"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Restarts a stopped node `i` on its old gRPC port, with its data.
    pub async fn restart_node(&mut self, i: usize) -> Result<(), String> {
        self.stop_node(i).await;
        let port = self.addrs[i].grpc.port();
        let (node, addrs) = self.launch(i, port).await?;
        self.nodes[i] = Some(node);
        self.addrs[i] = addrs;
        Ok(())
    }

    /// True if node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Stops every node, keeping the data (for tests that read the engines afterwards).
    pub async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }

    /// Stops everything and removes the data directory.
    pub async fn shutdown(mut self) {
        self.stop_all().await;
        let _ = self.pd_stop.send(true);
        let _ = (&mut self.pd_task).await;
        let path = self.dir.path().to_path_buf();
        if let Err(e) = self.dir.close() {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove the cluster's data");
        }
    }

    /// The Prometheus text of node `i`'s `/metrics` (empty if it serves none).
    pub async fn scrape_metrics(&self, i: usize) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(addr) = self.addrs[i].metrics else {
            return Ok(String::new());
        };
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok(body)
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
