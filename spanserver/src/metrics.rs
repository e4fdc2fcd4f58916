//! Process metrics: a Prometheus registry for the spanserver's own series, and the HTTP
//! endpoint every Meridian process serves (`/metrics` in the Prometheus text format, `/health`).
//!
//! Each server owns its registry (no global default registry), so several servers can run in one
//! process (`meridian demo`, in-process tests) without their series colliding.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Buckets for latencies in seconds: 50 µs growing by a quarter each, up to about 2.8 s, fine
/// enough that a median read off them is within 25%.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00005, 1.25, 50)
        .unwrap_or_else(|_| vec![0.001, 0.01, 0.1, 1.0])
}

/// The spanserver's metrics.
pub struct ServerMetrics {
    pub registry: Registry,
    /// Commit wait: time from Raft apply to `TT.after(s)`.
    pub commit_wait_seconds: Histogram,
    /// Commit latency at the leader, from request to reply (validation, Raft, commit wait).
    pub commit_seconds: Histogram,
    /// Commit outcomes by result: committed, conflict, not_leader, unavailable, ambiguous, ...
    pub commits: IntCounterVec,
    /// Scans served at leaders.
    pub scans: IntCounter,
    /// Raft snapshots this server received whole (and handed to its replica to install).
    pub snapshots_received: IntCounter,
    /// Bytes of data pairs in those snapshots.
    pub snapshot_bytes_received: IntCounter,
}

impl ServerMetrics {
    /// New metrics registered in a fresh registry labelled with the server id.
    pub fn new(server_id: u64) -> Result<Arc<ServerMetrics>, prometheus::Error> {
        let labels =
            std::collections::HashMap::from([("server".to_string(), server_id.to_string())]);
        let registry = Registry::new_custom(Some("meridian".into()), Some(labels))?;
        let commit_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "commit_wait_seconds",
                "Time spent in commit wait after replication",
            )
            .buckets(latency_buckets()),
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new("commit_seconds", "Commit latency at the tablet leader")
                .buckets(latency_buckets()),
        )?;
        let commits = IntCounterVec::new(
            Opts::new("commits_total", "Commit requests by outcome"),
            &["outcome"],
        )?;
        let scans = IntCounter::new("scans_total", "Scans served at tablet leaders")?;
        let snapshots_received = IntCounter::new(
            "snapshots_received_total",
            "Raft snapshots received whole from leaders",
        )?;
        let snapshot_bytes_received = IntCounter::new(
            "snapshot_bytes_received_total",
            "Bytes of data in the Raft snapshots received",
        )?;
        registry.register(Box::new(commit_wait_seconds.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(scans.clone()))?;
        registry.register(Box::new(snapshots_received.clone()))?;
        registry.register(Box::new(snapshot_bytes_received.clone()))?;
        Ok(Arc::new(ServerMetrics {
            registry,
            commit_wait_seconds,
            commit_seconds,
            commits,
            scans,
            snapshots_received,
            snapshot_bytes_received,
        }))
    }
}

/// Renders every metric in `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return format!("# error encoding metrics: {e}\n");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: TcpListener,
    registries: Vec<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let registries = Arc::new(registries);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registries = registries.clone();
                async move {
                    let body: String = registries.iter().map(render).collect();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` for [`serve_http`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
