//! One Meridian process, composed: a tablet server (`meridian-spanserver`) and a SQL front end
//! (`meridian-sql`'s PostgreSQL listener) over one KV client (`meridian-kv`), whose router also
//! carries the tablet server's own two-phase-commit housekeeping. `meridian start` runs one
//! with [`run`]; [`local::LocalCluster`] runs a placement driver and several of them in this
//! process, for `meridian demo`, the benchmarks and the tests: the one local-cluster bootstrap.
//!
//! Layering: this crate is the only place the tablet server and the SQL layer meet. Neither
//! depends on the other, and the binary stays a parser of flags that calls in here.

pub mod local;

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_common::{GroupId, ServerId};
use meridian_kv::router::{LocalTablets, Router, TabletService};
use meridian_proto as pb;
use meridian_spanserver::resolver::LeaderRouter;
use meridian_spanserver::server::{ServerError, ServerOptions};
use meridian_truetime::TrueTime;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// How a node admits SQL clients (re-exported for the binary's flags).
pub use meridian_sql::Security as SqlSecurity;

/// What a node needs to start: the tablet server's options and where to serve SQL.
#[derive(Clone)]
pub struct NodeOptions {
    pub server: ServerOptions,
    /// PostgreSQL wire-protocol address.
    pub sql_listen: SocketAddr,
    /// Who may open a SQL connection (TLS and passwords, or neither).
    pub sql_security: meridian_sql::Security,
    /// The tablet services running in this process (this node's own is added once it serves),
    /// which the node's KV client calls in-process. Nodes of one local cluster share it.
    pub local: LocalTablets,
}

/// Addresses a started node actually listens on.
#[derive(Clone, Copy, Debug)]
pub struct NodeAddrs {
    /// Raft transport and tablet service.
    pub grpc: SocketAddr,
    /// PostgreSQL wire protocol.
    pub sql: SocketAddr,
    /// `/metrics` and `/health`, if served.
    pub metrics: Option<SocketAddr>,
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the tablet server stopped before it started listening")]
    NotStarted,
}

/// The KV client's router as the tablet server's resolver needs it.
struct ResolverRouter(Arc<meridian_kv::Router>);

#[async_trait::async_trait]
impl LeaderRouter for ResolverRouter {
    async fn txn_step(
        &self,
        group: GroupId,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, String> {
        let route = self.0.route_group(group).await.map_err(|e| e.to_string())?;
        self.0
            .txn_step(&route, request)
            .await
            .map_err(|e| e.to_string())
    }

    fn learn_servers(&self, servers: Vec<pb::ServerInfo>) {
        self.0.install_servers(servers);
    }
}

/// Runs a node until `shutdown` changes to true; `bound` (if given) learns its addresses once
/// it listens. Returns after both halves have stopped.
pub async fn run(
    opts: NodeOptions,
    tt: Arc<dyn TrueTime>,
    shutdown: watch::Receiver<bool>,
    bound: Option<oneshot::Sender<NodeAddrs>>,
) -> Result<(), NodeError> {
    let sql_listener =
        TcpListener::bind(opts.sql_listen)
            .await
            .map_err(|source| NodeError::Listen {
                addr: opts.sql_listen,
                source,
            })?;
    let sql_addr = sql_listener
        .local_addr()
        .map_err(|source| NodeError::Listen {
            addr: opts.sql_listen,
            source,
        })?;
    let mut server_opts = opts.server;
    server_opts.sql_addr = Some(sql_addr.to_string());
    let server_id = ServerId(server_opts.id);
    let kv = meridian_kv::Client::with_router(Router::with_local(
        server_opts.pd.clone(),
        tt.clone(),
        Some(server_opts.zone.clone()),
        opts.local.clone(),
    ));
    let router: Arc<dyn LeaderRouter> = Arc::new(ResolverRouter(kv.router().clone()));

    let (server_bound_tx, server_bound_rx) = oneshot::channel();
    let server = tokio::spawn(meridian_spanserver::server::run(
        server_opts,
        tt,
        router,
        shutdown.clone(),
        Some(server_bound_tx),
    ));
    let server_addrs = match server_bound_rx.await {
        Ok(a) => a,
        Err(_) => {
            return match server.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(NodeError::NotStarted),
            }
        }
    };

    let tablet: Arc<dyn TabletService> = server_addrs.tablet.clone();
    opts.local.write().insert(server_id, tablet);
    let mut sql_shutdown = shutdown.clone();
    let sql = tokio::spawn(meridian_sql::serve(
        sql_listener,
        kv,
        opts.sql_security.clone(),
        async move {
            let _ = sql_shutdown.wait_for(|s| *s).await;
        },
    ));
    if let Some(b) = bound {
        let _ = b.send(NodeAddrs {
            grpc: server_addrs.grpc,
            sql: sql_addr,
            metrics: server_addrs.metrics,
        });
    }
    let server_result = server.await;
    opts.local.write().remove(&server_id);
    // The tablet server returns once shutdown fired; the SQL listener closes its idle
    // connections within its own grace period.
    let mut sql = sql;
    if tokio::time::timeout(meridian_spanserver::server::SHUTDOWN_GRACE, &mut sql)
        .await
        .is_err()
    {
        tracing::warn!("the SQL front end did not stop in time");
        sql.abort();
    }
    match server_result {
        Ok(result) => result.map_err(NodeError::from),
        Err(e) => Err(NodeError::Server(ServerError::Options(format!(
            "the tablet server task failed: {e}"
        )))),
    }
}
