//! Shared helpers of the in-process cluster suites: the local cluster (`meridian-node`'s
//! [`LocalCluster`]) with per-node clocks, leases and crash points, a KV client over it, and
//! small read/write helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use meridian_kv::{Client, Error};
use meridian_node::local::{ClusterOptions, LocalCluster};
use meridian_spanserver::failpoints::Failpoints;
use meridian_truetime::{SystemTrueTime, TrueTime};

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

/// A local cluster whose nodes are numbered from 0 (server ids from 1), in zones `zone-1`, ….
pub struct Cluster {
    inner: LocalCluster,
    pub pd_addr: String,
    configs: Vec<NodeConfig>,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
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
        let mut opts = ClusterOptions::zones(configs.len());
        for (i, (node, config)) in opts.nodes.iter_mut().zip(&configs).enumerate() {
            node.zone = format!("zone-{}", i + 1);
            node.tt = config.tt.clone();
            node.commit_wait = config.commit_wait;
            node.failpoints = config.failpoints.clone();
            node.lease = config.lease;
            node.metrics = true;
        }
        let inner = LocalCluster::start(opts).await.expect("cluster starts");
        Cluster {
            pd_addr: inner.pd_addr().to_string(),
            inner,
            configs,
        }
    }

    /// The cluster underneath.
    pub fn local(&self) -> &LocalCluster {
        &self.inner
    }

    pub async fn stop(&mut self, i: usize) {
        self.inner.stop_node(i).await;
    }

    pub async fn restart(&mut self, i: usize) {
        self.inner.restart_node(i).await.expect("node restarts");
    }

    /// A fresh KV client (its own directory cache and connections) in zone-1.
    pub fn store(&self) -> Client {
        self.inner.kv_client(0)
    }

    /// Creates a table's key range, waiting for the cluster to bootstrap.
    pub async fn create_table(&self, store: &Client) -> u32 {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match store.create_table_range().await {
                    Ok(t) => return t.0,
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
        self.inner.engine_path(i)
    }

    /// Stops every server, keeping the data directories.
    pub async fn stop_all(&mut self) {
        self.inner.stop_all().await;
    }

    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }
}

/// The first key of table `id`.
pub fn table_prefix(id: u32) -> Vec<u8> {
    meridian_common::keys::table_prefix(meridian_common::TableId(id))
}

/// Reads `key` then writes `value` there in one transaction; returns the commit timestamp.
pub async fn put(store: &Client, key: &[u8], value: &[u8]) -> Result<u64, Error> {
    let mut txn = store.begin(None);
    txn.get(key).await?;
    txn.put(key.to_vec(), value.to_vec())
        .expect("a write within the limits");
    Ok(txn.commit().await?.expect("a write has a commit timestamp"))
}

pub async fn get(store: &Client, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let mut txn = store.begin(None);
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
    let dir = directory(pd_addr).await.ok()?;
    dir.tablets
        .into_iter()
        .find(|t| t.start == table_prefix(table))
        .map(|t| t.leader_hint)
        .filter(|l| *l != 0)
}

/// Creates tables until two have their leaders on different servers; returns them.
pub async fn two_tables_with_distinct_leaders(cluster: &Cluster, store: &Client) -> (u32, u32) {
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

/// A one-node cluster with one replica per tablet: the real store, as fast as it gets, for
/// the SQL suites.
pub async fn single_node() -> LocalCluster {
    LocalCluster::start(ClusterOptions::zones(1))
        .await
        .expect("single-node cluster starts")
}

/// How many tablets of the placement driver at `pd_addr` hold user tables.
pub async fn user_tablets(pd_addr: &str) -> usize {
    user_tablet_starts(pd_addr).await.len()
}

/// The start keys of the tablets holding user tables, in key order.
pub async fn user_tablet_starts(pd_addr: &str) -> Vec<Vec<u8>> {
    let dir = directory(pd_addr)
        .await
        .expect("the placement driver answers GetDirectory");
    let mut starts: Vec<Vec<u8>> = dir
        .tablets
        .into_iter()
        .map(|t| t.start)
        .filter(|s| !meridian_common::keys::is_system_key(s))
        .collect();
    starts.sort();
    starts
}

/// A SQL session on node 0 of `cluster`, with a schema cache of its own.
pub fn session(cluster: &LocalCluster) -> meridian_sql::Session {
    meridian_sql::Session::new(cluster.kv_client(0))
}

/// The rows of the last statement of `sql`, which must succeed.
pub async fn query(
    session: &mut meridian_sql::Session,
    sql: &str,
) -> Vec<Vec<meridian_sql::Datum>> {
    let results = session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    results.last().map(|r| r.rows.clone()).unwrap_or_default()
}

/// The placement driver's directory (tablets and servers).
pub async fn directory(
    pd_addr: &str,
) -> Result<meridian_proto::GetDirectoryResponse, Box<dyn std::error::Error>> {
    use meridian_proto::placement_driver_client::PlacementDriverClient;
    let mut client = PlacementDriverClient::connect(format!("http://{pd_addr}")).await?;
    Ok(client
        .get_directory(meridian_proto::GetDirectoryRequest {})
        .await?
        .into_inner())
}
