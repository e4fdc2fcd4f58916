//! The router: the KV client's directory cache and its one routing and leader-chasing loop.
//!
//! It keeps a cache of the placement driver's directory (key range → group → replicas) and
//! routes each request to the group's leader, learning leaders from `NotLeader` hints and from
//! failed calls. Transactions ([`crate::ReadWriteTxn`], [`crate::ReadOnlyTxn`]) and the tablet
//! servers' own two-phase-commit housekeeping send through it.
//!
//! Retry rules, grouped by what is safe:
//! - reads are always safe to retry, at another replica or after a directory refresh;
//! - a commit is retried only when it certainly was not proposed (a `NotLeader` or
//!   `Unavailable` answer, or a connection that was never made); when its outcome is unknown
//!   the caller gets an "ambiguous result" error instead, so a retry can never apply it twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto as pb;
use meridian_proto::placement_driver_client::PlacementDriverClient;
use meridian_proto::tablet_client::TabletClient;
use meridian_proto::tablet_error::Kind;
use meridian_truetime::TrueTime;
use parking_lot::{Mutex, RwLock};
use tonic::transport::Channel;

use meridian_common::{GroupId, KeyRange, ServerId};

use crate::error::Error;

/// How often the gateway tells leaders its open transactions are alive (well inside the
/// leaders' idle timeout, the tablet server's `TXN_IDLE_TIMEOUT` of 10 s).
const TXN_HEARTBEAT: Duration = Duration::from_secs(3);
/// How long a follower may wait for its safe time to reach a snapshot read's timestamp before
/// the gateway asks the leader instead.
const FOLLOWER_WAIT_MS: u32 = 20;
/// How long a request keeps looking for a leader before giving up.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of one scan RPC.
const SCAN_RPC_TIMEOUT: Duration = Duration::from_secs(12);
/// Timeout of one transaction-step RPC (the server itself gives up after its lock-wait and
/// commit timeouts).
const COMMIT_RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// An open transaction as heartbeats need it: its identity, and each group where it holds
/// locks with their epoch.
type OpenTxn = (pb::TxnMeta, Vec<(Route, u64)>);

/// The directory cache and leader-chasing loop of one KV client (one per process).
pub struct Router {
    pd_addrs: Vec<String>,
    pub(crate) tt: Arc<dyn TrueTime>,
    zone: Option<String>,
    tablets: RwLock<Vec<pb::TabletDescriptor>>,
    servers: RwLock<HashMap<ServerId, pb::ServerInfo>>,
    leaders: RwLock<HashMap<GroupId, ServerId>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Open read-write transactions holding locks, by id: their identity and where they hold
    /// locks (with the epoch), for heartbeats.
    open_txns: Mutex<HashMap<u64, OpenTxn>>,
    heartbeats: std::sync::OnceLock<()>,
    stats: RouterStats,
    /// Tablet services running in this process, called directly instead of over gRPC.
    local: LocalTablets,
    /// The block of cluster-unique ids this router's clients hand out.
    pub(crate) unique_ids: crate::unique_ids::UniqueIds,
}

/// The tablet services running in this process, by server: a request to one of them skips
/// gRPC's encoding, socket and decoding but runs the very same service code, with its checks.
/// A node adds its service once it serves and removes it before it stops.
pub type LocalTablets = Arc<RwLock<HashMap<ServerId, Arc<dyn TabletService>>>>;

/// A tablet server's service, as generated from `meridian.proto` and implemented by the
/// spanserver.
pub use meridian_proto::tablet_server::Tablet as TabletService;

/// A way to one server's tablet service.
enum TabletConn {
    Remote(TabletClient<Channel>),
    Local(Arc<dyn TabletService>),
}

/// Calls `method` on `conn` with `request`: over gRPC with `timeout` as the RPC's deadline, or
/// in-process with the same deadline.
macro_rules! call_tablet {
    ($conn:expr, $method:ident, $request:expr, $timeout:expr) => {
        match $conn {
            TabletConn::Remote(mut client) => {
                let mut rpc = tonic::Request::new($request);
                rpc.set_timeout($timeout);
                client.$method(rpc).await.map(tonic::Response::into_inner)
            }
            TabletConn::Local(service) => {
                local_call($timeout, service.$method(tonic::Request::new($request))).await
            }
        }
    };
}

impl TabletConn {
    async fn scan(
        self,
        request: pb::ScanRequest,
        timeout: Duration,
    ) -> Result<pb::ScanResponse, tonic::Status> {
        call_tablet!(self, scan, request, timeout)
    }

    async fn txn(
        self,
        request: pb::TxnRequest,
        timeout: Duration,
    ) -> Result<pb::TxnResponse, tonic::Status> {
        call_tablet!(self, txn, request, timeout)
    }
}

/// Runs an in-process call with the deadline a remote one would carry.
async fn local_call<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "in-process call timed out",
        )),
    }
}

/// Counters of the reads a router served, for metrics and for tests that check how many round
/// trips a plan costs. Reads of the system range (the catalog) are counted apart from reads of
/// user data.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Scan RPCs answered for user keys.
    pub user_scans: AtomicU64,
    /// Rows those scans returned.
    pub user_rows: AtomicU64,
    /// Scan RPCs answered for the system range.
    pub system_scans: AtomicU64,
}

impl RouterStats {
    fn note_scan(&self, start: &[u8], rows: usize) {
        if meridian_common::keys::is_system_key(start) {
            self.system_scans.fetch_add(1, Ordering::Relaxed);
        } else {
            self.user_scans.fetch_add(1, Ordering::Relaxed);
            self.user_rows.fetch_add(rows as u64, Ordering::Relaxed);
        }
    }
}

/// A tablet as routing needs it.
#[derive(Clone, Debug)]
pub struct Route {
    pub group: GroupId,
    pub range: KeyRange,
    pub replicas: Vec<ServerId>,
}

impl Route {
    fn from_descriptor(t: &pb::TabletDescriptor) -> Route {
        Route {
            group: GroupId(t.group_id),
            range: KeyRange::new(t.start.clone(), t.end.clone()),
            replicas: t.replicas.iter().map(|r| ServerId(*r)).collect(),
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((20u64 << attempt.min(5)).min(500))
}

impl Router {
    /// A router in `zone` (snapshot reads prefer replicas there) that picks read timestamps
    /// with `tt`.
    pub fn new(pd_addrs: Vec<String>, tt: Arc<dyn TrueTime>, zone: Option<String>) -> Arc<Router> {
        Router::with_local(pd_addrs, tt, zone, LocalTablets::default())
    }

    /// A router like [`Router::new`] that calls the tablet services in `local` in-process.
    pub fn with_local(
        pd_addrs: Vec<String>,
        tt: Arc<dyn TrueTime>,
        zone: Option<String>,
        local: LocalTablets,
    ) -> Arc<Router> {
        Arc::new(Router {
            pd_addrs,
            tt,
            zone,
            tablets: RwLock::new(Vec::new()),
            servers: RwLock::new(HashMap::new()),
            leaders: RwLock::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            open_txns: Mutex::new(HashMap::new()),
            heartbeats: std::sync::OnceLock::new(),
            stats: RouterStats::default(),
            local,
            unique_ids: Default::default(),
        })
    }

    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = meridian_proto::tls::endpoint(addr)
            .map_err(|e| Error::Internal(format!("bad address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub(crate) async fn pd_client(&self) -> Result<PlacementDriverClient<Channel>, Error> {
        let mut last = String::from("no placement driver address");
        for addr in &self.pd_addrs {
            match self.channel(addr) {
                Ok(c) => return Ok(meridian_proto::limited!(PlacementDriverClient::new(c))),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Unavailable(last))
    }

    /// What this router has read so far.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Reloads the directory from the placement driver.
    pub async fn refresh_directory(&self) -> Result<(), Error> {
        let mut last_error = String::new();
        for addr in &self.pd_addrs {
            let mut client =
                meridian_proto::limited!(PlacementDriverClient::new(self.channel(addr)?));
            match client.get_directory(pb::GetDirectoryRequest {}).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    self.install_directory(resp.tablets, resp.servers);
                    return Ok(());
                }
                Err(status) => last_error = status.message().to_string(),
            }
        }
        Err(Error::Unavailable(format!(
            "placement driver unreachable: {last_error}"
        )))
    }

    /// Replaces the cached directory (also fed by the server's heartbeats).
    pub fn install_directory(
        &self,
        mut tablets: Vec<pb::TabletDescriptor>,
        servers: Vec<pb::ServerInfo>,
    ) {
        tablets.sort_by(|a, b| a.start.cmp(&b.start));
        {
            let mut leaders = self.leaders.write();
            for t in &tablets {
                if t.leader_hint != 0 {
                    leaders
                        .entry(GroupId(t.group_id))
                        .or_insert(ServerId(t.leader_hint));
                }
            }
        }
        *self.tablets.write() = tablets;
        self.install_servers(servers);
    }

    /// Adds or replaces one tablet in the cached directory (a table range just placed).
    pub fn install_tablet(&self, tablet: pb::TabletDescriptor) {
        let mut tablets = self.tablets.read().clone();
        tablets.retain(|x| x.group_id != tablet.group_id);
        tablets.push(tablet);
        self.install_directory(tablets, Vec::new());
    }

    /// Adds or updates the addresses of servers.
    pub fn install_servers(&self, servers: Vec<pb::ServerInfo>) {
        let mut map = self.servers.write();
        for s in servers {
            map.insert(ServerId(s.id), s);
        }
    }

    fn cached_route(&self, key: &[u8]) -> Option<Route> {
        let tablets = self.tablets.read();
        let idx = tablets.partition_point(|t| t.start.as_slice() <= key);
        let t = tablets.get(idx.checked_sub(1)?)?;
        let route = Route::from_descriptor(t);
        route.range.contains(key).then_some(route)
    }

    /// The tablet holding `key`, refreshing the directory if the cache has none.
    pub async fn route(&self, key: &[u8]) -> Result<Route, Error> {
        if let Some(r) = self.cached_route(key) {
            return Ok(r);
        }
        let deadline = Instant::now() + ROUTE_TIMEOUT;
        let mut attempt = 0;
        loop {
            self.refresh_directory().await.ok();
            if let Some(r) = self.cached_route(key) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "no tablet holds this key; is the cluster bootstrapped?".into(),
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The server to try for `route` now.
    fn target(&self, route: &Route) -> Option<ServerId> {
        if let Some(l) = self.leaders.read().get(&route.group) {
            return Some(*l);
        }
        route.replicas.first().copied()
    }

    /// After `failed` did not answer for `route`, try the next replica.
    fn rotate(&self, route: &Route, failed: ServerId) {
        let n = route.replicas.len();
        if n == 0 {
            return;
        }
        let pos = route
            .replicas
            .iter()
            .position(|r| *r == failed)
            .unwrap_or(0);
        self.leaders
            .write()
            .insert(route.group, route.replicas[(pos + 1) % n]);
    }

    fn learn_leader(&self, route: &Route, not_leader: &pb::NotLeader, asked: ServerId) {
        if not_leader.leader_server != 0 && not_leader.leader_server != asked.0 {
            self.leaders
                .write()
                .insert(route.group, ServerId(not_leader.leader_server));
        } else {
            self.rotate(route, asked);
        }
    }

    /// How to reach `server`'s tablet service: in this process if it runs here, else gRPC.
    async fn tablet_conn(&self, server: ServerId) -> Result<TabletConn, Error> {
        if let Some(service) = self.local.read().get(&server) {
            return Ok(TabletConn::Local(service.clone()));
        }
        Ok(TabletConn::Remote(self.tablet_client(server).await?))
    }

    async fn tablet_client(&self, server: ServerId) -> Result<TabletClient<Channel>, Error> {
        let addr = self.servers.read().get(&server).map(|s| s.addr.clone());
        let addr = match addr {
            Some(a) => a,
            None => {
                self.refresh_directory().await?;
                self.servers
                    .read()
                    .get(&server)
                    .map(|s| s.addr.clone())
                    .ok_or_else(|| Error::Unavailable(format!("unknown server {server}")))?
            }
        };
        Ok(meridian_proto::limited!(TabletClient::new(
            self.channel(&addr)?
        )))
    }

    /// Scans `[start, end)` within one tablet at its leader. Retries until a leader answers.
    pub async fn scan_tablet(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        txn: Option<pb::TxnMeta>,
    ) -> Result<(Route, pb::ScanResponse), Error> {
        self.scan_tablet_with(start, end, limit, txn, 0).await
    }

    /// [`Gateway::scan_tablet`], or a snapshot read at `read_ts` at the leader.
    async fn scan_tablet_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        txn: Option<pb::TxnMeta>,
        read_ts: u64,
    ) -> Result<(Route, pb::ScanResponse), Error> {
        let deadline = Instant::now() + ROUTE_TIMEOUT;
        let mut attempt = 0;
        loop {
            let route = self.route(start).await?;
            let piece_end = route.range.clip_end(end);
            let Some(server) = self.target(&route) else {
                return Err(Error::Internal(format!(
                    "tablet {} has no replicas",
                    route.group
                )));
            };
            let conn = self.tablet_conn(server).await?;
            let request = pb::ScanRequest {
                group_id: route.group.0,
                start: start.to_vec(),
                end: piece_end,
                limit,
                txn,
                read_ts,
                max_staleness_ns: 0,
                max_wait_ms: 0,
            };
            match conn.scan(request, SCAN_RPC_TIMEOUT).await {
                Ok(resp) => match resp.error.as_ref().and_then(|e| e.kind.clone()) {
                    None => {
                        self.leaders.write().insert(route.group, server);
                        self.stats.note_scan(start, resp.rows.len());
                        return Ok((route, resp));
                    }
                    Some(Kind::NotLeader(nl)) => self.learn_leader(&route, &nl, server),
                    Some(Kind::Unavailable(_)) | Some(Kind::ClockUncertain(_)) => {}
                    Some(Kind::KeyOutOfRange(_)) => {
                        self.refresh_directory().await.ok();
                    }
                    Some(Kind::Conflict(m)) => return Err(Error::Aborted(m)),
                    Some(Kind::Ambiguous(m)) | Some(Kind::Internal(m)) => {
                        return Err(Error::Internal(m))
                    }
                    Some(Kind::InvalidTimestamp(m)) => return Err(Error::InvalidTimestamp(m)),
                    Some(Kind::KeyExists(_)) => {
                        return Err(Error::Internal("a scan answered key_exists".into()))
                    }
                    Some(Kind::LimitExceeded(m)) => return Err(Error::LimitExceeded(m)),
                },
                Err(status) if refused_unrun(&status) => return Err(status_error(&status)),
                Err(status) => {
                    tracing::debug!(group = route.group.0, server = server.0, %status, "scan failed");
                    self.rotate(&route, server);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "no leader of tablet {} answered",
                    route.group
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The route of `group` from the directory, refreshing it if the cache has none.
    pub async fn route_group(&self, group: GroupId) -> Result<Route, Error> {
        let find = |gw: &Router| {
            gw.tablets
                .read()
                .iter()
                .find(|t| t.group_id == group.0)
                .map(Route::from_descriptor)
        };
        if let Some(r) = find(self) {
            return Ok(r);
        }
        self.refresh_directory().await?;
        find(self).ok_or_else(|| Error::Unavailable(format!("unknown tablet {group}")))
    }

    /// Records where an open transaction holds locks, so that heartbeats keep them while its
    /// client thinks (an interactive `BEGIN … COMMIT` may idle longer than leaders allow).
    pub(crate) fn track_txn(router: &Arc<Router>, meta: pb::TxnMeta, groups: Vec<(Route, u64)>) {
        router.open_txns.lock().insert(meta.id, (meta, groups));
        router.heartbeats.get_or_init(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(heartbeat_loop(Arc::downgrade(router)));
            }
        });
    }

    /// The transaction ended: no more heartbeats for it.
    pub(crate) fn untrack_txn(&self, id: u64) {
        self.open_txns.lock().remove(&id);
    }

    /// Asks the placement driver to split the tablets holding `keys` so each starts one.
    pub async fn split_at(&self, keys: Vec<Vec<u8>>) -> Result<(), Error> {
        meridian_common::limits::check_split(keys.len()).map_err(Error::LimitExceeded)?;
        let mut client = self.pd_client().await?;
        client
            .split_range(pb::SplitRangeRequest { keys })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                    Error::InvalidArgument(format!("split: {}", s.message()))
                }
                tonic::Code::ResourceExhausted => {
                    Error::LimitExceeded(format!("split: {}", s.message()))
                }
                _ => Error::Unavailable(format!("split: {}", s.message())),
            })?;
        self.refresh_directory().await
    }

    /// A replica of `route` in this gateway's zone, if any.
    fn local_replica(&self, route: &Route) -> Option<ServerId> {
        let zone = self.zone.as_ref()?;
        let servers = self.servers.read();
        route
            .replicas
            .iter()
            .copied()
            .find(|r| servers.get(r).is_some_and(|s| &s.zone == zone))
    }

    /// A lock-free snapshot read of `[start, end)` within one tablet: at `read_ts`, or (when
    /// it is 0) at the freshest timestamp within `max_staleness` the nearest replica can serve.
    /// With `nearby`, tries a replica in this zone first (a stale read it can likely serve at
    /// once), then the leader (which serves a fresh timestamp without waiting for a closed
    /// timestamp to replicate). Returns the rows and the timestamp they were read at.
    pub async fn scan_snapshot(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        read_ts: u64,
        max_staleness: Option<Duration>,
        nearby: bool,
    ) -> Result<(Route, pb::ScanResponse), Error> {
        let route = self.route(start).await?;
        let piece_end = route.range.clip_end(end);
        let leader = self.leaders.read().get(&route.group).copied();
        let local = nearby
            .then(|| self.local_replica(&route))
            .flatten()
            .filter(|l| Some(*l) != leader);
        if let Some(local) = local {
            let request = pb::ScanRequest {
                group_id: route.group.0,
                start: start.to_vec(),
                end: piece_end.clone(),
                limit,
                txn: None,
                read_ts,
                max_staleness_ns: max_staleness.map_or(0, |d| d.as_nanos() as u64),
                max_wait_ms: FOLLOWER_WAIT_MS,
            };
            if let Ok(conn) = self.tablet_conn(local).await {
                if let Ok(resp) = conn.scan(request, SCAN_RPC_TIMEOUT).await {
                    match resp.error.as_ref().and_then(|e| e.kind.clone()) {
                        None => {
                            self.stats.note_scan(start, resp.rows.len());
                            return Ok((route, resp));
                        }
                        Some(Kind::InvalidTimestamp(m)) => return Err(Error::InvalidTimestamp(m)),
                        // Behind, or not hosting the range any more: ask the leader.
                        Some(_) => {}
                    }
                }
            }
        }
        // The leader: at the given timestamp, or (bounded staleness that no nearby replica
        // could serve) a strong read now.
        let read_ts = if read_ts == 0 {
            self.tt.now().latest.0
        } else {
            read_ts
        };
        self.scan_tablet_with(start, end, limit, None, read_ts)
            .await
    }

    /// Sends one transaction step to `route`'s leader. Retries while the step certainly did not
    /// run (a `NotLeader` or `Unavailable` answer, a connection never made); when its outcome
    /// is unknown the caller gets an "ambiguous result" error instead, so a retry can never
    /// apply it twice.
    pub async fn txn_step(
        &self,
        route: &Route,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, Error> {
        let deadline = Instant::now() + ROUTE_TIMEOUT;
        let mut attempt = 0;
        loop {
            let Some(server) = self.target(route) else {
                return Err(Error::Internal(format!(
                    "tablet {} has no replicas",
                    route.group
                )));
            };
            let conn = self.tablet_conn(server).await?;
            match conn.txn(request.clone(), COMMIT_RPC_TIMEOUT).await {
                Ok(mut resp) => match resp.error.take().and_then(|e| e.kind) {
                    None => {
                        self.leaders.write().insert(route.group, server);
                        return Ok(resp);
                    }
                    Some(Kind::NotLeader(nl)) => self.learn_leader(route, &nl, server),
                    Some(Kind::Unavailable(_)) => {}
                    Some(Kind::ClockUncertain(m)) => {
                        return Err(Error::Unavailable(format!("commits paused: {m}")))
                    }
                    Some(Kind::Conflict(m)) => return Err(Error::Aborted(m)),
                    Some(Kind::Ambiguous(m)) => return Err(Error::Ambiguous(m)),
                    Some(Kind::KeyOutOfRange(m)) => {
                        self.refresh_directory().await.ok();
                        return Err(Error::Aborted(format!("tablet boundaries changed: {m}")));
                    }
                    Some(Kind::Internal(m)) => return Err(Error::Internal(m)),
                    Some(Kind::InvalidTimestamp(m)) => return Err(Error::InvalidTimestamp(m)),
                    Some(Kind::KeyExists(key)) => return Err(Error::KeyExists { key }),
                    Some(Kind::LimitExceeded(m)) => return Err(Error::LimitExceeded(m)),
                },
                Err(status) if refused_unrun(&status) => return Err(status_error(&status)),
                Err(status) if never_sent(&status) => {
                    tracing::debug!(group = route.group.0, server = server.0, %status, "step not sent");
                    self.rotate(route, server);
                }
                Err(status) => {
                    self.rotate(route, server);
                    return Err(Error::Ambiguous(format!(
                        "lost contact with the leader ({})",
                        status.message()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "no leader of tablet {} answered",
                    route.group
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// Sends every open transaction's heartbeat to the leaders where it holds locks, every
/// [`TXN_HEARTBEAT`], until the gateway is dropped. Failures are ignored: a transaction whose
/// locks are gone learns it at its next step.
async fn heartbeat_loop(router: std::sync::Weak<Router>) {
    loop {
        tokio::time::sleep(TXN_HEARTBEAT).await;
        let Some(gw) = router.upgrade() else {
            return;
        };
        let open: Vec<OpenTxn> = gw.open_txns.lock().values().cloned().collect();
        let beats = open.into_iter().flat_map(|(meta, groups)| {
            let gw = gw.clone();
            groups.into_iter().map(move |(route, epoch)| {
                let gw = gw.clone();
                async move {
                    let req = pb::TxnRequest {
                        group_id: route.group.0,
                        txn: Some(meta),
                        lock_epoch: epoch,
                        op: Some(pb::txn_request::Op::Heartbeat(pb::HeartbeatOp {})),
                    };
                    let beat = gw.txn_step(&route, req);
                    let _ = tokio::time::timeout(TXN_HEARTBEAT, beat).await;
                }
            })
        });
        futures::future::join_all(beats).await;
    }
}

/// True when a failed RPC certainly never reached the server (the connection was never made).
///
/// Only failures to establish the connection qualify: tonic reports them as `Unavailable`
/// with a "tcp connect error" (refused, unreachable) or a connect timeout. A connection that
/// broke after the request went out ("connection reset", "error reading a body from
/// connection") does not, since the server may have acted on it.
/// Whether `status` says the request was refused before it ran: malformed, over a message
/// size limit (tonic refuses an oversized request before sending it, and the server one before
/// decoding it), not implemented, or not allowed. Such a step certainly did nothing, so its
/// failure is definite, never "ambiguous". (A response too large to decode would also be
/// OUT_OF_RANGE after the step ran, but no transaction step answers with more than a few
/// bytes.)
fn refused_unrun(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// The error a request [`refused_unrun`] reports.
fn status_error(status: &tonic::Status) -> Error {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => Error::LimitExceeded(message),
        Code::InvalidArgument => Error::InvalidArgument(message),
        _ => Error::Internal(format!("{:?}: {message}", status.code())),
    }
}

fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let text = format!("{status:?}");
    text.contains("tcp connect error") || text.contains("error trying to connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_are_known_unsent_and_broken_ones_are_not() {
        // A port with nothing listening: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_lazy();
        let status = TabletClient::new(channel)
            .txn(pb::TxnRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(
            never_sent(&status),
            "a refused connection must be retryable: {status:?}"
        );
        let broken =
            tonic::Status::unavailable("error reading a body from connection: connection reset");
        assert!(!never_sent(&broken));
        assert!(!never_sent(&tonic::Status::internal("tcp connect error")));
    }
}
