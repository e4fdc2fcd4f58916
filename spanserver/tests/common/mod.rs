//! An in-process cluster for spanserver tests: a placement driver and spanservers on loopback,
//! each with its own TrueTime clock and RocksDB in a temp dir, driven through the gateway's
//! `Store` trait.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use meridian_spanserver::failpoints::Failpoints;
use meridian_spanserver::gateway::{Gateway, GatewayStore};
use meridian_spanserver::server::{self, ServerOptions};
use meridian_sql::store::{table_prefix, Store, StoreError};
use meridian_truetime::{SystemTrueTime, TrueTime};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub struct Node {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

/// How each server is set up.
#[derive(Clone)]
pub struct NodeConfig {
    pub tt: Arc<dyn TrueTime>,
    pub commit_wait: bool,
    /// Crash points armed on this server (shared across its restarts: a fired point stays
    /// disarmed).
    pub failpoints: Arc<Failpoints>,
    /// The leader lease length.
    pub lease: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tt: Arc::new(SystemTrueTime::new(Duration::from_millis(1))),
            commit_wait: true,
            failpoints: Arc::default(),
            lease: meridian_spanserver::server::DEFAULT_LEASE,
        }
    }
}

pub struct Cluster {
    dir: tempfile::TempDir,
    pub pd_addr: String,
    pd_stop: watch::Sender<bool>,
    nodes: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
    grpc_ports: Vec<u16>,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn start_node(
    dir: &std::path::Path,
    pd: &str,
    id: u64,
    port: u16,
    config: &NodeConfig,
) -> (Node, u16) {
    let opts = ServerOptions {
        id,
        zone: format!("zone-{id}"),
        data_dir: dir.join(format!("s{id}")),
        listen: format!("127.0.0.1:{port}"),
        advertise: None,
        pg_listen: "127.0.0.1:0".parse().expect("addr"),
        pd: vec![pd.to_string()],
        metrics_listen: None,
        commit_wait: config.commit_wait,
        failpoints: config.failpoints.clone(),
        lease: config.lease,
    };
    let (stop, rx) = watch::channel(false);
    let (btx, brx) = oneshot::channel();
    let task = tokio::spawn(server::run(opts, config.tt.clone(), rx, Some(btx)));
    let bound = match brx.await {
        Ok(b) => b,
        Err(_) => panic!("server {id} did not start: {:?}", task.await),
    };
    (Node { stop, task }, bound.grpc.port())
}

impl Cluster {
    /// Three servers with default clocks.
    pub async fn start() -> Cluster {
        Self::start_with((0..3).map(|_| NodeConfig::default()).collect()).await
    }

    /// Three servers with default clocks and leader leases of `lease` (tests that crash a
    /// leader use short leases, since its successor waits the lease out).
    pub async fn start_with_lease(lease: Duration) -> Cluster {
        Self::start_with(
            (0..3)
                .map(|_| NodeConfig {
                    lease,
                    ..NodeConfig::default()
                })
                .collect(),
        )
        .await
    }

    /// One server per config, ids 1.., zones zone-1...
    pub async fn start_with(configs: Vec<NodeConfig>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pd_stop, rx) = watch::channel(false);
        let (btx, brx) = oneshot::channel();
        let opts = meridian_pd::PdOptions {
            data_dir: dir.path().join("pd"),
            listen: "127.0.0.1:0".parse().expect("addr"),
        };
        tokio::spawn(meridian_pd::run(opts, rx, Some(btx)));
        let pd_addr = brx.await.expect("pd started").to_string();
        let mut nodes = Vec::new();
        let mut grpc_ports = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let (node, port) = start_node(dir.path(), &pd_addr, i as u64 + 1, 0, config).await;
            nodes.push(Some(node));
            grpc_ports.push(port);
        }
        Cluster {
            dir,
            pd_addr,
            pd_stop,
            nodes,
            configs,
            grpc_ports,
        }
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            let _ = node.stop.send(true);
            let _ = node.task.await;
        }
    }

    pub async fn restart(&mut self, i: usize) {
        let config = self.configs[i].clone();
        let (node, _) = start_node(
            self.dir.path(),
            &self.pd_addr,
            i as u64 + 1,
            self.grpc_ports[i],
            &config,
        )
        .await;
        self.nodes[i] = Some(node);
    }

    /// A fresh gateway (its own directory cache and connections).
    pub fn store(&self) -> GatewayStore {
        GatewayStore {
            gateway: Gateway::new(
                vec![self.pd_addr.clone()],
                self.configs[0].tt.clone(),
                Some("zone-1".into()),
            ),
        }
    }

    /// Creates a table's key range, waiting for the cluster to bootstrap.
    pub async fn create_table(&self, store: &GatewayStore) -> u32 {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match store.create_table_range().await {
                    Ok(t) => return t,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .expect("cluster bootstraps")
    }

    /// The crash points of server `i`.
    pub fn failpoints(&self, i: usize) -> Arc<Failpoints> {
        self.configs[i].failpoints.clone()
    }

    /// Where server `i` keeps its RocksDB (readable once the server is stopped).
    pub fn engine_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("s{}", i + 1)).join("db")
    }

    /// Stops every server and the placement driver, keeping the data directories.
    pub async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        let _ = self.pd_stop.send(true);
    }
}

/// Reads `key` then writes `value` there in one transaction; returns the commit timestamp.
pub async fn put(store: &GatewayStore, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let mut txn = store.begin(None).await?;
    txn.get(key).await?;
    txn.put(key.to_vec(), value.to_vec());
    Ok(txn.commit().await?.expect("a write has a commit timestamp"))
}

pub async fn get(store: &GatewayStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let mut txn = store.begin(None).await?;
    let v = txn.get(key).await?;
    txn.rollback().await;
    Ok(v)
}

pub fn key(table: u32, k: u32) -> Vec<u8> {
    let mut v = table_prefix(table);
    v.extend_from_slice(&k.to_be_bytes());
    v
}

/// The server leading `table`'s tablet, as the placement driver last heard in heartbeats.
pub async fn leader_of(pd_addr: &str, table: u32) -> Option<u64> {
    use meridian_proto::placement_driver_client::PlacementDriverClient;
    let mut client = PlacementDriverClient::connect(format!("http://{pd_addr}"))
        .await
        .ok()?;
    let dir = client
        .get_directory(meridian_proto::GetDirectoryRequest {})
        .await
        .ok()?
        .into_inner();
    dir.tablets
        .into_iter()
        .find(|t| t.start == table_prefix(table))
        .map(|t| t.leader_hint)
        .filter(|l| *l != 0)
}

/// Creates tables until two have their leaders on different servers; returns them.
pub async fn two_tables_with_distinct_leaders(
    cluster: &Cluster,
    store: &GatewayStore,
) -> (u32, u32) {
    let mut seen: Vec<(u32, u64)> = Vec::new();
    for _ in 0..8 {
        let table = cluster.create_table(store).await;
        // Make the group elect and report: one write, then wait for a heartbeat.
        put(store, &key(table, 0), b"init")
            .await
            .expect("first write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let leader = loop {
            if let Some(l) = leader_of(&cluster.pd_addr, table).await {
                break l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader reported for table {table}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some((other, _)) = seen.iter().find(|(_, l)| *l != leader) {
            return (*other, table);
        }
        seen.push((table, leader));
    }
    panic!("every table's leader landed on one server: {seen:?}");
}
