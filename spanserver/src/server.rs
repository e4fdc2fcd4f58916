//! A tablet server: storage, the multi-Raft driver, the gRPC services and two-phase-commit
//! housekeeping, wired together; plus registration and heartbeats with the placement driver.
//! The SQL front end is composed beside it by the process that runs it (`meridian-node`).
//!
//! [`run`] owns every task it starts and returns after `shutdown` fires and they have stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto as pb;
use meridian_proto::placement_driver_client::PlacementDriverClient;
use meridian_truetime::TrueTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::ServerMetrics;
use crate::raft::driver::{self, Creation, DriverConfig, DriverHandle, Event, Registry};
use crate::raft::transport::Transport;
use crate::raft::{GroupId, ServerId};
use crate::resolver::LeaderRouter;
use crate::service::{EngineSlot, RaftService, TabletService};
use crate::storage::engine::Engine;
use crate::storage::rocks::RocksEngine;
use crate::tablet::{KeyRange, ReplicaDescriptor};

/// How often a server heartbeats to the placement driver.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How long shutdown waits for in-flight requests before closing connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a spanserver needs to start.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// This server's id: unique in the cluster, never reused, never 0.
    pub id: u64,
    /// The zone (failure domain) the server runs in.
    pub zone: String,
    /// Where RocksDB keeps the server's data.
    pub data_dir: PathBuf,
    /// gRPC address (Raft transport and the tablet service), `HOST:PORT`; the host may be a
    /// name. Other servers reach this one at this address unless `advertise` is set.
    pub listen: String,
    /// The gRPC address to give other servers, when it differs from `listen` (e.g. listening on
    /// 0.0.0.0).
    pub advertise: Option<String>,
    /// The address of the SQL front end composed with this server, if any, as the placement
    /// driver should list it for clients.
    pub sql_addr: Option<String>,
    /// Placement driver addresses.
    pub pd: Vec<String>,
    /// Where to serve `/metrics` and `/health` over HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Commit wait; `false` only for tests and benchmarks that show what it buys (see
    /// [`TabletService::commit_wait`]).
    pub commit_wait: bool,
    /// Crash points armed for tests (see [`crate::failpoints`]).
    pub failpoints: Arc<crate::failpoints::Failpoints>,
    /// How long a leader lease lasts ([`DEFAULT_LEASE`] unless a test shortens it).
    pub lease: Duration,
}

/// The default leader lease: a leader serves reads without a Raft round for this long after
/// its lease was last extended, and a new leader waits out the rest of it after a crash.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Addresses a started server actually listens on.
/// Addresses a started server listens on, and its tablet service for in-process callers.
#[derive(Clone)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The service behind `grpc`, to call in-process (same code, no encoding or socket).
    pub tablet: Arc<TabletService>,
}

/// Runs a spanserver until `shutdown` changes to true. `bound` (if given) learns the addresses
/// it listens on once it does. Two-phase-commit housekeeping reaches other groups through
/// `router`.
pub async fn run(
    opts: ServerOptions,
    tt: Arc<dyn TrueTime>,
    router: Arc<dyn LeaderRouter>,
    mut shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<BoundAddrs>>,
) -> Result<(), ServerError> {
    if opts.id == 0 {
        return Err(ServerError::Options("--id must be at least 1".into()));
    }
    if opts.pd.is_empty() {
        return Err(ServerError::Options(
            "at least one --pd address is needed".into(),
        ));
    }
    std::fs::create_dir_all(&opts.data_dir)?;
    let engine: Arc<dyn Engine> = Arc::new(
        RocksEngine::open(&opts.data_dir.join("db"))
            .map_err(|e| ServerError::Storage(e.to_string()))?,
    );
    let grpc_listener = TcpListener::bind(opts.listen.as_str())
        .await
        .map_err(|source| ServerError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => {
            Some(
                crate::metrics::bind(addr)
                    .await
                    .map_err(|source| ServerError::Listen {
                        addr: addr.to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let metrics =
        ServerMetrics::new(opts.id).map_err(|e| ServerError::Options(format!("metrics: {e}")))?;
    let server = ServerId(opts.id);
    tracing::info!(server = opts.id, zone = %opts.zone, grpc = %grpc_addr, "spanserver starting");

    let transport = Transport::new(server, tokio::runtime::Handle::current());
    let registry: Registry = Default::default();
    let (resolver_tx, resolver_rx) = tokio::sync::mpsc::unbounded_channel();
    let (driver, driver_thread) = driver::start(DriverConfig {
        server,
        engine: engine.clone(),
        tt: tt.clone(),
        transport: transport.clone(),
        registry: registry.clone(),
        logger: crate::logging::raft_logger(),
        resolver: Some(resolver_tx.clone()),
        failpoints: opts.failpoints.clone(),
        lease: opts.lease,
    })?;

    let resolver = tokio::spawn(crate::resolver::run(router.clone(), resolver_rx));
    let engine_slot = EngineSlot::new(engine.clone());
    if !opts.commit_wait {
        tracing::warn!("commit wait is DISABLED: commits are not externally consistent");
    }
    let tablet_service = TabletService {
        commit_wait: opts.commit_wait,
        metrics: metrics.clone(),
        engine: engine_slot.clone(),
        tt: tt.clone(),
        registry: registry.clone(),
        driver: driver.clone(),
        resolver: Some(resolver_tx),
    };
    let raft_service = RaftService {
        driver: driver.clone(),
        metrics: metrics.clone(),
    };
    let mut grpc_shutdown = shutdown.clone();
    let grpc = tokio::spawn(
        meridian_proto::tls::server()
            .tcp_nodelay(true)
            .add_service(meridian_proto::node_service!(
                pb::tablet_server::TabletServer::new(tablet_service.clone())
            ))
            .add_service(meridian_proto::node_service!(
                pb::raft_transport_server::RaftTransportServer::new(raft_service)
            ))
            .serve_with_incoming_shutdown(
                meridian_proto::incoming_nodelay(grpc_listener),
                async move {
                    let _ = grpc_shutdown.wait_for(|s| *s).await;
                },
            ),
    );

    let metrics_http = metrics_listener.map(|listener| {
        let mut stop = shutdown.clone();
        let registries = vec![metrics.registry.clone()];
        tokio::spawn(crate::metrics::serve_http(
            listener,
            registries,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))
    });

    let info = pb::ServerInfo {
        id: opts.id,
        zone: opts.zone.clone(),
        addr: advertised_addr(&opts, grpc_addr),
        pg_addr: opts.sql_addr.clone().unwrap_or_default(),
    };
    let heartbeats = tokio::spawn(heartbeat_loop(
        opts.pd.clone(),
        info,
        registry.clone(),
        driver.clone(),
        transport.clone(),
        router,
        shutdown.clone(),
    ));
    if let Some(b) = bound {
        let _ = b.send(BoundAddrs {
            grpc: grpc_addr,
            metrics: metrics_addr,
            tablet: Arc::new(tablet_service.clone()),
        });
    }

    let _ = shutdown.wait_for(|s| *s).await;
    tracing::info!(server = opts.id, "spanserver shutting down");
    heartbeats.abort();
    resolver.abort();
    // Long-lived streams (peers' Raft transport, idle SQL sessions) would hold a graceful
    // shutdown open forever: give in-flight requests a moment, then cut the rest.
    if let Some(task) = metrics_http {
        stop_within_grace(task).await;
    }
    // Hand over leadership cleanly: give up every lease (logged through Raft, which still
    // needs the gRPC server for acknowledgements), so the next leaders need not wait out the
    // rest of ours.
    let (tx, rx) = tokio::sync::oneshot::channel();
    if driver.send(Event::ReleaseLeases { reply: tx }) {
        if let Ok(waits) = rx.await {
            let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(waits))
                .await;
        }
    }
    stop_within_grace(grpc).await;
    driver.send(Event::Shutdown);
    let _ = tokio::task::spawn_blocking(move || driver_thread.join()).await;
    // Offered snapshots and transfers hold engine views.
    transport.clear_snapshots();
    engine_slot.close();
    // In-flight reads finish quickly; after them this is the last reference, and dropping it
    // closes RocksDB.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while Arc::strong_count(&engine) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(engine);
    tracing::info!(server = opts.id, "spanserver stopped");
    Ok(())
}

/// Waits up to [`SHUTDOWN_GRACE`] for `task`, then aborts it. Awaiting the aborted task waits
/// until its future (and the engine it holds) is dropped, so the data directory is free when
/// `run` returns.
async fn stop_within_grace<T>(mut task: tokio::task::JoinHandle<T>) {
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
        .await
        .is_err()
    {
        task.abort();
        let _ = task.await;
    }
}

/// The gRPC address other servers should use: `--advertise` if given, else `--listen` as
/// written (it may be a host name), except that a port of 0 or an unspecified host is replaced by
/// what was actually bound.
fn advertised_addr(opts: &ServerOptions, bound: SocketAddr) -> String {
    if let Some(a) = &opts.advertise {
        return a.clone();
    }
    match opts.listen.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 || a.ip().is_unspecified() => bound.to_string(),
        Ok(a) => a.to_string(),
        Err(_) => opts.listen.clone(),
    }
}

/// Registers with the placement driver, then heartbeats: reports replicas and leadership, and
/// creates any replica the placement driver assigned that this server lacks.
async fn heartbeat_loop(
    pd: Vec<String>,
    info: pb::ServerInfo,
    registry: Registry,
    driver: DriverHandle,
    transport: Arc<Transport>,
    router: Arc<dyn LeaderRouter>,
    shutdown: watch::Receiver<bool>,
) {
    let mut registered = false;
    let mut pd_index = 0usize;
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if *shutdown.borrow() {
            return;
        }
        let addr = &pd[pd_index % pd.len()];
        let mut client = match meridian_proto::tls::connect(addr).await {
            Ok(c) => meridian_proto::limited!(PlacementDriverClient::new(c)),
            Err(e) => {
                tracing::debug!(pd = %addr, error = %e, "placement driver unreachable");
                pd_index += 1;
                registered = false;
                continue;
            }
        };
        if !registered {
            match client
                .register(pb::RegisterRequest {
                    server: Some(info.clone()),
                })
                .await
            {
                Ok(_) => {
                    registered = true;
                    tracing::info!(pd = %addr, "registered with the placement driver");
                }
                Err(status) => {
                    tracing::warn!(pd = %addr, %status, "registration failed");
                    continue;
                }
            }
        }
        let replicas: Vec<pb::ReplicaStatus> = registry
            .read()
            .iter()
            .map(|(g, r)| pb::ReplicaStatus {
                group_id: g.0,
                is_leader: r.is_leader.load(Ordering::Acquire),
                term: r.term.load(Ordering::Acquire),
                applied_index: r.applied_index.load(Ordering::Acquire),
                start: r.desc.range.start.clone(),
                end: r.desc.range.end.clone(),
            })
            .collect();
        let resp = match client
            .heartbeat(pb::HeartbeatRequest {
                server_id: info.id,
                replicas,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                tracing::warn!(pd = %addr, %status, "heartbeat failed");
                if status.code() == tonic::Code::NotFound {
                    registered = false;
                }
                continue;
            }
        };
        for s in &resp.servers {
            transport.set_address(ServerId(s.id), s.addr.clone());
        }
        router.learn_servers(resp.servers);
        for t in resp.assigned {
            if registry.read().contains_key(&GroupId(t.group_id)) {
                continue;
            }
            let bootstrap = t.bootstrap;
            let desc = ReplicaDescriptor {
                group: GroupId(t.group_id),
                range: KeyRange::new(t.start, t.end),
                peers: t.replicas.into_iter().map(ServerId).collect(),
                generation: 0,
            };
            let creation = if bootstrap {
                Creation::Bootstrap
            } else {
                Creation::Join
            };
            driver.send(Event::CreateReplica {
                desc,
                creation,
                reply: None,
            });
        }
    }
}
