//! An in-process Meridian cluster for benchmarks: a placement driver and three spanservers in
//! three zones on loopback, data in a temp dir, with a chosen TrueTime source and commit wait on
//! or off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_spanserver::server::{BoundAddrs, ServerOptions};
use meridian_truetime::TrueTime;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::BenchError;

/// A running in-process cluster; [`BenchCluster::stop`] shuts it down and removes its data.
pub struct BenchCluster {
    dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Each server's bound addresses.
    pub servers: Vec<BoundAddrs>,
}

impl BenchCluster {
    pub async fn start(
        tt: Arc<dyn TrueTime>,
        commit_wait: bool,
    ) -> Result<BenchCluster, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-")
            .tempdir()?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let (pd_tx, pd_rx) = oneshot::channel();
        let pd_opts = meridian_pd::PdOptions {
            data_dir: dir.path().join("pd"),
            listen: loopback(),
        };
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = meridian_pd::run(pd_opts, rx, Some(pd_tx)).await {
                eprintln!("bench: placement driver: {e}");
            }
        }));
        let pd: SocketAddr = pd_rx
            .await
            .map_err(|_| BenchError::Cluster("placement driver did not start".into()))?;
        let mut servers = Vec::new();
        for id in 1..=3u64 {
            let opts = ServerOptions {
                id,
                zone: format!("zone-{}", (b'a' + id as u8 - 1) as char),
                data_dir: dir.path().join(format!("s{id}")),
                listen: loopback().to_string(),
                advertise: None,
                pg_listen: loopback(),
                pd: vec![pd.to_string()],
                metrics_listen: Some(loopback()),
                commit_wait,
                failpoints: Default::default(),
                lease: meridian_spanserver::server::DEFAULT_LEASE,
            };
            let (tx, rx_bound) = oneshot::channel();
            let (tt, rx) = (tt.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = meridian_spanserver::server::run(opts, tt, rx, Some(tx)).await {
                    eprintln!("bench: server {id}: {e}");
                }
            }));
            servers.push(
                rx_bound
                    .await
                    .map_err(|_| BenchError::Cluster(format!("server {id} did not start")))?,
            );
        }
        let cluster = BenchCluster {
            dir,
            stop,
            tasks,
            servers,
        };
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// `host=… port=… user=root dbname=meridian` for server `i`.
    pub fn pg_config(&self, i: usize) -> String {
        let a = self.servers[i].pg;
        format!(
            "host={} port={} user=root dbname=meridian",
            a.ip(),
            a.port()
        )
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(client) = crate::pg::connect(&self.pg_config(0)).await {
                if client.simple_query("SHOW TABLES").await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Cluster("cluster not ready in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Prometheus text of server `i`'s `/metrics`.
    pub async fn scrape(&self, i: usize) -> Result<String, BenchError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(addr) = self.servers[i].metrics else {
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

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.dir.close();
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
