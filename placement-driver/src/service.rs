//! The PD's gRPC service and process entry point.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meridian_proto as pb;
use meridian_proto::tablet_client::TabletClient;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::placement::{choose_replicas, put_preferred_leader_first};
use crate::state::{DurableState, Server, StateFile, Tablet, FIRST_USER_TABLE_ID, SYSTEM_GROUP};

/// Replicas per tablet.
pub const REPLICATION_FACTOR: usize = 3;
/// A server silent for this long is not chosen for new replicas.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);

/// What the PD process needs.
#[derive(Clone, Debug)]
pub struct PdOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Replicas per tablet ([`REPLICATION_FACTOR`] by default). The system tablet is created
    /// once this many servers have registered. One replica is for single-node test clusters.
    pub replicas: usize,
}

/// Why the PD could not start.
#[derive(Debug, thiserror::Error)]
pub enum PdError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

struct Inner {
    durable: DurableState,
    /// group → (term, leader server), from heartbeats.
    leaders: HashMap<u64, (u64, u64)>,
    last_seen: HashMap<u64, Instant>,
}

/// The placement driver service.
pub struct Pd {
    file: StateFile,
    /// Replicas per tablet.
    replicas: usize,
    inner: Mutex<Inner>,
}

fn table_prefix(id: u32) -> Vec<u8> {
    meridian_common::keys::table_prefix(meridian_common::TableId(id))
}

impl Pd {
    /// Loads the PD's state from `data_dir`.
    pub fn open(data_dir: &std::path::Path, replicas: usize) -> Result<Pd, PdError> {
        std::fs::create_dir_all(data_dir)?;
        let file = StateFile::new(data_dir);
        let durable = file.load()?;
        Ok(Pd {
            file,
            replicas: replicas.max(1),
            inner: Mutex::new(Inner {
                durable,
                leaders: HashMap::new(),
                last_seen: HashMap::new(),
            }),
        })
    }

    fn save(&self, state: &DurableState) -> Result<(), Status> {
        self.file
            .save(state)
            .map_err(|e| Status::internal(format!("cannot persist PD state: {e}")))
    }

    fn descriptor(inner: &Inner, t: &Tablet) -> pb::TabletDescriptor {
        pb::TabletDescriptor {
            group_id: t.group,
            start: t.start.clone(),
            end: t.end.clone(),
            replicas: t.replicas.clone(),
            leader_hint: inner.leaders.get(&t.group).map_or(0, |(_, s)| *s),
            bootstrap: t.bootstrap,
        }
    }

    fn server_info(s: &Server) -> pb::ServerInfo {
        pb::ServerInfo {
            id: s.id,
            zone: s.zone.clone(),
            addr: s.addr.clone(),
            pg_addr: s.pg_addr.clone(),
        }
    }

    /// Places a new tablet over `[start, end)` with id `group`; the caller saves the state.
    fn place(
        inner: &mut Inner,
        replication: usize,
        group: u64,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<Tablet, Status> {
        let mut load: BTreeMap<u64, usize> = BTreeMap::new();
        for t in inner.durable.tablets.values() {
            for r in &t.replicas {
                *load.entry(*r).or_default() += 1;
            }
        }
        let now = Instant::now();
        let live: Vec<&Server> = inner
            .durable
            .servers
            .values()
            .filter(|s| {
                inner
                    .last_seen
                    .get(&s.id)
                    .is_some_and(|t| now.duration_since(*t) < LIVENESS_TIMEOUT)
            })
            .collect();
        let candidates: Vec<&Server> = if live.len() >= replication {
            live
        } else {
            inner.durable.servers.values().collect()
        };
        let mut preferred_leaders: BTreeMap<u64, usize> = BTreeMap::new();
        for t in inner.durable.tablets.values() {
            if let Some(first) = t.replicas.first() {
                *preferred_leaders.entry(*first).or_default() += 1;
            }
        }
        let mut replicas = choose_replicas(&candidates, &load, replication).ok_or_else(|| {
            Status::unavailable(format!(
                "{} servers registered; a tablet needs {replication}",
                inner.durable.servers.len()
            ))
        })?;
        put_preferred_leader_first(&mut replicas, &preferred_leaders);
        Ok(Tablet {
            group,
            start,
            end,
            replicas,
            bootstrap: true,
        })
    }

    /// Creates the system tablet once enough servers have registered.
    fn maybe_bootstrap(&self, inner: &mut Inner) -> Result<Option<Tablet>, Status> {
        if inner.durable.tablets.contains_key(&SYSTEM_GROUP)
            || inner.durable.servers.len() < self.replicas
        {
            return Ok(None);
        }
        let tablet = Self::place(
            inner,
            self.replicas,
            SYSTEM_GROUP,
            Vec::new(),
            table_prefix(FIRST_USER_TABLE_ID),
        )?;
        let mut next = inner.durable.clone();
        next.tablets.insert(SYSTEM_GROUP, tablet.clone());
        self.save(&next)?;
        inner.durable = next;
        tracing::info!(replicas = ?tablet.replicas, "bootstrapped the system tablet");
        Ok(Some(tablet))
    }

    /// Tells each replica's server to create it, best effort: heartbeats repair what this misses.
    fn push_replicas(&self, tablet: &Tablet) -> Vec<tokio::task::JoinHandle<()>> {
        let inner = self.inner.lock();
        let mut tasks = Vec::new();
        for r in &tablet.replicas {
            let Some(server) = inner.durable.servers.get(r) else {
                continue;
            };
            let addr = server.addr.clone();
            let desc = pb::ReplicaDescriptor {
                group_id: tablet.group,
                start: tablet.start.clone(),
                end: tablet.end.clone(),
                replicas: tablet.replicas.clone(),
                bootstrap: tablet.bootstrap,
            };
            tasks.push(tokio::spawn(async move {
                let call = async {
                    let mut client = meridian_proto::limited!(TabletClient::new(meridian_proto::tls::connect(&addr).await.map_err(|e| e.to_string())?));
                    client.create_replica(desc).await.map_err(|e| e.to_string())?;
                    Ok::<(), String>(())
                };
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "create replica failed; heartbeat will retry"),
                    Err(_) => tracing::debug!(%addr, "create replica timed out; heartbeat will retry"),
                }
            }));
        }
        tasks
    }
}

/// How long a split keeps trying to reach the tablet's leader.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The tablet holding `key`.
fn tablet_containing<'a>(state: &'a DurableState, key: &[u8]) -> Option<&'a Tablet> {
    state
        .tablets
        .values()
        .find(|t| meridian_common::range_contains(&t.start, &t.end, key))
}

impl Pd {
    /// Splits the tablet holding `key` so that `key` starts a tablet, through the tablet's
    /// leader (the split is replicated in its Raft group), then records both halves.
    async fn split_one(&self, key: &[u8]) -> Result<(), Status> {
        let (tablet, new_group, addrs, hint) = {
            let mut inner = self.inner.lock();
            let Some(tablet) = tablet_containing(&inner.durable, key).cloned() else {
                return Err(Status::not_found("no tablet holds the split key"));
            };
            if tablet.start == key {
                return Ok(());
            }
            // The id is persisted as used before anyone hears of it, so it is never reused.
            let mut next = inner.durable.clone();
            let new_group = next.next_group_id;
            next.next_group_id += 1;
            self.save(&next)?;
            inner.durable = next;
            let addrs: HashMap<u64, String> = tablet
                .replicas
                .iter()
                .filter_map(|r| inner.durable.servers.get(r).map(|s| (*r, s.addr.clone())))
                .collect();
            let hint = inner.leaders.get(&tablet.group).map(|(_, s)| *s);
            (tablet, new_group, addrs, hint)
        };
        let deadline = Instant::now() + SPLIT_TIMEOUT;
        let mut target = hint.or_else(|| tablet.replicas.first().copied());
        let mut attempt = 0usize;
        let right = loop {
            if Instant::now() > deadline {
                return Err(Status::unavailable(format!(
                    "tablet {} did not split in time",
                    tablet.group
                )));
            }
            let server = target.unwrap_or(tablet.replicas[attempt % tablet.replicas.len()]);
            attempt += 1;
            target = None;
            let Some(addr) = addrs.get(&server) else {
                continue;
            };
            let call = async {
                let mut client = meridian_proto::limited!(TabletClient::new(
                    meridian_proto::tls::connect(addr).await.ok()?
                ));
                client
                    .split(pb::SplitRequest {
                        group_id: tablet.group,
                        split_key: key.to_vec(),
                        new_group_id: new_group,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            };
            let resp = tokio::time::timeout(Duration::from_secs(12), call)
                .await
                .ok()
                .flatten();
            match resp {
                Some(pb::SplitResponse {
                    error: None,
                    right: Some(right),
                }) => break right,
                Some(pb::SplitResponse { error: Some(e), .. }) => match e.kind {
                    Some(pb::tablet_error::Kind::NotLeader(nl)) if nl.leader_server != 0 => {
                        target = Some(nl.leader_server);
                    }
                    Some(pb::tablet_error::Kind::Internal(m)) => {
                        return Err(Status::internal(format!("split refused: {m}")))
                    }
                    other => {
                        tracing::debug!(group = tablet.group, error = ?other, "split not done yet");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let mut inner = self.inner.lock();
        Self::record_split(&mut inner, tablet.group, &right);
        let next = inner.durable.clone();
        self.save(&next)?;
        tracing::info!(
            parent = tablet.group,
            child = right.group_id,
            "split recorded"
        );
        Ok(())
    }

    /// Records that `parent` now ends where `right` starts and `right` is a tablet.
    fn record_split(inner: &mut Inner, parent: u64, right: &pb::ReplicaDescriptor) {
        if let Some(p) = inner.durable.tablets.get_mut(&parent) {
            if p.end == right.end && p.start < right.start {
                p.end = right.start.clone();
            }
        }
        inner.durable.tablets.insert(
            right.group_id,
            Tablet {
                group: right.group_id,
                start: right.start.clone(),
                end: right.end.clone(),
                replicas: right.replicas.clone(),
                bootstrap: false,
            },
        );
        inner.durable.next_group_id = inner.durable.next_group_id.max(right.group_id + 1);
    }

    /// A heartbeat reported a replica of a group the directory does not have: the right half
    /// of a split whose recording was lost (the PD stopped in between). Adopt it.
    fn adopt_unrecorded_splits(&self, inner: &mut Inner, reported: &[pb::ReplicaStatus]) {
        let mut changed = false;
        for r in reported {
            if inner.durable.tablets.contains_key(&r.group_id) {
                continue;
            }
            let parent = inner.durable.tablets.values().find(|t| {
                t.start < r.start && t.end == r.end && (t.end.is_empty() || r.start < t.end)
            });
            if let Some(parent) = parent.cloned() {
                let right = pb::ReplicaDescriptor {
                    group_id: r.group_id,
                    start: r.start.clone(),
                    end: r.end.clone(),
                    replicas: parent.replicas.clone(),
                    bootstrap: false,
                };
                Self::record_split(inner, parent.group, &right);
                tracing::info!(
                    parent = parent.group,
                    child = r.group_id,
                    "adopted an unrecorded split"
                );
                changed = true;
            }
        }
        if changed {
            let next = inner.durable.clone();
            if let Err(e) = self.save(&next) {
                tracing::error!(error = %e, "persisting an adopted split");
            }
        }
    }
}

#[tonic::async_trait]
impl pb::placement_driver_server::PlacementDriver for Pd {
    async fn split_range(
        &self,
        request: Request<pb::SplitRangeRequest>,
    ) -> Result<Response<pb::SplitRangeResponse>, Status> {
        let mut keys = request.into_inner().keys;
        meridian_common::limits::check_split(keys.len()).map_err(Status::resource_exhausted)?;
        keys.sort();
        keys.dedup();
        for key in keys {
            if key.len() < 4 || meridian_common::keys::is_system_key(&key) {
                return Err(Status::invalid_argument(
                    "split keys must lie in a user table's range",
                ));
            }
            self.split_one(&key).await?;
        }
        Ok(Response::new(pb::SplitRangeResponse {}))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let info = request
            .into_inner()
            .server
            .ok_or_else(|| Status::invalid_argument("server is required"))?;
        if info.id == 0 {
            return Err(Status::invalid_argument("server id 0 is reserved"));
        }
        if info.zone.is_empty() || info.addr.is_empty() {
            return Err(Status::invalid_argument("zone and addr are required"));
        }
        let bootstrapped = {
            let mut inner = self.inner.lock();
            let server = Server {
                id: info.id,
                zone: info.zone,
                addr: info.addr,
                pg_addr: info.pg_addr,
            };
            if inner.durable.servers.get(&server.id) != Some(&server) {
                let mut next = inner.durable.clone();
                next.servers.insert(server.id, server.clone());
                self.save(&next)?;
                inner.durable = next;
            }
            inner.last_seen.insert(server.id, Instant::now());
            tracing::info!(server = server.id, zone = %server.zone, addr = %server.addr, "server registered");
            self.maybe_bootstrap(&mut inner)?
        };
        if let Some(t) = bootstrapped {
            self.push_replicas(&t);
        }
        Ok(Response::new(pb::RegisterResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let mut inner = self.inner.lock();
        if !inner.durable.servers.contains_key(&req.server_id) {
            return Err(Status::not_found(format!(
                "server {} is not registered",
                req.server_id
            )));
        }
        inner.last_seen.insert(req.server_id, Instant::now());
        self.adopt_unrecorded_splits(&mut inner, &req.replicas);
        for r in &req.replicas {
            if r.is_leader {
                let known = inner.leaders.get(&r.group_id).map_or(0, |(term, _)| *term);
                if r.term >= known {
                    inner.leaders.insert(r.group_id, (r.term, req.server_id));
                }
            }
        }
        let assigned = inner
            .durable
            .tablets
            .values()
            .filter(|t| t.replicas.contains(&req.server_id))
            .map(|t| Self::descriptor(&inner, t))
            .collect();
        let servers = inner
            .durable
            .servers
            .values()
            .map(Self::server_info)
            .collect();
        Ok(Response::new(pb::HeartbeatResponse { assigned, servers }))
    }

    async fn get_directory(
        &self,
        _request: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::GetDirectoryResponse>, Status> {
        let inner = self.inner.lock();
        let tablets = inner
            .durable
            .tablets
            .values()
            .map(|t| Self::descriptor(&inner, t))
            .collect();
        let servers = inner
            .durable
            .servers
            .values()
            .map(Self::server_info)
            .collect();
        Ok(Response::new(pb::GetDirectoryResponse { tablets, servers }))
    }

    async fn create_table_range(
        &self,
        _request: Request<pb::CreateTableRangeRequest>,
    ) -> Result<Response<pb::CreateTableRangeResponse>, Status> {
        let (table_id, tablet, descriptor) = {
            let mut inner = self.inner.lock();
            if !inner.durable.tablets.contains_key(&SYSTEM_GROUP) {
                return Err(Status::unavailable(
                    "the cluster is not bootstrapped yet (needs 3 servers)",
                ));
            }
            let table_id = inner.durable.next_table_id;
            let end_id = table_id
                .checked_add(1)
                .ok_or_else(|| Status::resource_exhausted("table ids exhausted"))?;
            let group = inner.durable.next_group_id;
            let tablet = Self::place(
                &mut inner,
                self.replicas,
                group,
                table_prefix(table_id),
                table_prefix(end_id),
            )?;
            let mut next = inner.durable.clone();
            next.next_table_id = end_id;
            next.next_group_id = group + 1;
            next.tablets.insert(group, tablet.clone());
            self.save(&next)?;
            inner.durable = next;
            let descriptor = Self::descriptor(&inner, &tablet);
            (table_id, tablet, descriptor)
        };
        tracing::info!(table_id, group = tablet.group, replicas = ?tablet.replicas, "placed a new table");
        for task in self.push_replicas(&tablet) {
            let _ = task.await;
        }
        Ok(Response::new(pb::CreateTableRangeResponse {
            table_id,
            tablet: Some(descriptor),
        }))
    }
}

/// Runs the PD until `shutdown` becomes true. `bound` learns the address it listens on.
pub async fn run(
    opts: PdOptions,
    mut shutdown: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), PdError> {
    let pd = Pd::open(&opts.data_dir, opts.replicas)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| PdError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %opts.data_dir.display(), "placement driver listening");
    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    meridian_proto::tls::server()
        .add_service(meridian_proto::node_service!(
            pb::placement_driver_server::PlacementDriverServer::new(pd)
        ))
        .serve_with_incoming_shutdown(meridian_proto::incoming_nodelay(listener), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    tracing::info!("placement driver stopped");
    Ok(())
}
