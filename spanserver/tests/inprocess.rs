//! An in-process cluster (placement driver + 3 spanservers on loopback, RocksDB in a temp dir)
//! driven through the gateway's `Store` trait: replication, commit validation, failover of a
//! stopped server and restart from disk, without the SQL layer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_spanserver::gateway::{Gateway, GatewayStore};
use meridian_spanserver::server::{self, BoundAddrs, ServerOptions};
use meridian_sql::store::{table_prefix, Store, StoreError};
use meridian_truetime::{SystemTrueTime, TrueTime};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

struct Node {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

struct Cluster {
    dir: tempfile::TempDir,
    pd_addr: String,
    pd_stop: watch::Sender<bool>,
    nodes: Vec<Option<Node>>,
    grpc_ports: Vec<u16>,
}

fn tt() -> Arc<dyn TrueTime> {
    Arc::new(SystemTrueTime::new(Duration::from_millis(1)))
}

async fn start_node(dir: &std::path::Path, pd: &str, id: u64, port: u16) -> (Node, BoundAddrs) {
    let opts = ServerOptions {
        id,
        zone: format!("zone-{id}"),
        data_dir: dir.join(format!("s{id}")),
        listen: format!("127.0.0.1:{port}"),
        advertise: None,
        pg_listen: "127.0.0.1:0".parse().expect("addr"),
        pd: vec![pd.to_string()],
        metrics_listen: None,
    };
    let (stop, rx) = watch::channel(false);
    let (btx, brx) = oneshot::channel();
    let task = tokio::spawn(server::run(opts, tt(), rx, Some(btx)));
    let bound = match brx.await {
        Ok(b) => b,
        Err(_) => panic!("server {id} did not start: {:?}", task.await),
    };
    (Node { stop, task }, bound)
}

impl Cluster {
    async fn start() -> Cluster {
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
        for id in 1..=3 {
            let (node, bound) = start_node(dir.path(), &pd_addr, id, 0).await;
            nodes.push(Some(node));
            grpc_ports.push(bound.grpc.port());
        }
        Cluster {
            dir,
            pd_addr,
            pd_stop,
            nodes,
            grpc_ports,
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            let _ = node.stop.send(true);
            let _ = node.task.await;
        }
    }

    async fn restart(&mut self, i: usize) {
        let (node, _) = start_node(
            self.dir.path(),
            &self.pd_addr,
            i as u64 + 1,
            self.grpc_ports[i],
        )
        .await;
        self.nodes[i] = Some(node);
    }

    fn store(&self) -> GatewayStore {
        GatewayStore {
            gateway: Gateway::new(vec![self.pd_addr.clone()]),
        }
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        let _ = self.pd_stop.send(true);
    }
}

async fn put(store: &GatewayStore, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let mut txn = store.begin().await?;
    txn.get(key).await?;
    txn.put(key.to_vec(), value.to_vec());
    Ok(txn.commit().await?.expect("a write has a commit timestamp"))
}

async fn get(store: &GatewayStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let mut txn = store.begin().await?;
    let v = txn.get(key).await?;
    txn.rollback().await;
    Ok(v)
}

fn key(table: u32, k: u32) -> Vec<u8> {
    let mut v = table_prefix(table);
    v.extend_from_slice(&k.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_commits_survive_failover_and_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start().await;
    let store = cluster.store();
    let table = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match store.create_table_range().await {
                Ok(t) => return t,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("cluster bootstraps");

    let mut last_ts = 0;
    for i in 0..20 {
        let ts = put(&store, &key(table, i), format!("v{i}").as_bytes())
            .await
            .expect("commit");
        assert!(ts > last_ts, "commit timestamps increase within a group");
        last_ts = ts;
    }
    // Commit wait: the timestamp is in the past when the commit returns.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(last_ts < now);

    // A conflicting pair: both read k0, both write it; the second to commit must fail.
    let mut t1 = store.begin().await.expect("begin");
    let mut t2 = store.begin().await.expect("begin");
    t1.get(&key(table, 0)).await.expect("read");
    t2.get(&key(table, 0)).await.expect("read");
    t1.put(key(table, 0), b"t1".to_vec());
    t2.put(key(table, 0), b"t2".to_vec());
    t1.commit().await.expect("first commit wins");
    assert!(matches!(t2.commit().await, Err(StoreError::Retryable(_))));

    // Stop each server in turn: the rest keep committing, and nothing acknowledged is lost.
    for victim in 0..3 {
        cluster.stop(victim).await;
        let started = Instant::now();
        put(&store, &key(table, 100 + victim as u32), b"after")
            .await
            .expect("commit with one server down");
        assert!(started.elapsed() < Duration::from_secs(15));
        for i in 1..20 {
            assert_eq!(
                get(&store, &key(table, i)).await.expect("read"),
                Some(format!("v{i}").into_bytes())
            );
        }
        cluster.restart(victim).await;
    }
    assert_eq!(
        get(&store, &key(table, 0)).await.expect("read"),
        Some(b"t1".to_vec())
    );

    // Restart everything from disk.
    for i in 0..3 {
        cluster.stop(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    let store = cluster.store();
    for i in 1..20 {
        assert_eq!(
            get(&store, &key(table, i))
                .await
                .expect("read after restart"),
            Some(format!("v{i}").into_bytes())
        );
    }
    for victim in 0..3u32 {
        assert_eq!(
            get(&store, &key(table, 100 + victim)).await.expect("read"),
            Some(b"after".to_vec())
        );
    }
    cluster.shutdown().await;
}
