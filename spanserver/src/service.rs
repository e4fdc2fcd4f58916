//! The spanserver's gRPC services: the tablet data plane (`Tablet`) and the inbound side of the
//! Raft transport (`RaftTransport`).
//!
//! Handlers never touch Raft state directly: reads run against the engine at the leader using
//! the atomics the driver publishes in [`ReplicaShared`]; commits and new replicas are events
//! sent to the driver thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto as pb;
use meridian_proto::tablet_error::Kind;
use meridian_truetime::{Timestamp, TrueTime};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::driver::{CommitError, DriverHandle, Event, Registry, ReplicaShared};
use crate::raft::GroupId;
use crate::storage::engine::Engine;
use crate::storage::mvcc;
use crate::tablet::{self, KeyRange, ReplicaDescriptor};

/// How long a commit may wait for its Raft round before its outcome is reported as unknown.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows a scan returns at most when the request sets no limit.
pub const MAX_SCAN_ROWS: usize = 10_000;

fn error(kind: Kind) -> Option<pb::TabletError> {
    Some(pb::TabletError { kind: Some(kind) })
}

fn commit_error(e: CommitError, group: GroupId) -> Option<pb::TabletError> {
    error(match e {
        CommitError::NotLeader(hint) => Kind::NotLeader(pb::NotLeader {
            group_id: group.0,
            leader_server: hint.map_or(0, |s| s.0),
        }),
        CommitError::Unavailable(m) => Kind::Unavailable(m),
        CommitError::Conflict(m) => Kind::Conflict(m),
        CommitError::Ambiguous(m) => Kind::Ambiguous(m),
        CommitError::ClockUncertain(m) => Kind::ClockUncertain(m),
        CommitError::OutOfRange => Kind::KeyOutOfRange("key outside the tablet".into()),
        CommitError::Internal(m) => Kind::Internal(m),
    })
}

/// The engine as request handlers see it: closed at shutdown so that connection tasks which
/// outlive the server (a peer's open stream) do not keep the data directory locked.
#[derive(Clone, Default)]
pub struct EngineSlot(Arc<parking_lot::RwLock<Option<Arc<dyn Engine>>>>);

impl EngineSlot {
    pub fn new(engine: Arc<dyn Engine>) -> EngineSlot {
        EngineSlot(Arc::new(parking_lot::RwLock::new(Some(engine))))
    }

    pub fn get(&self) -> Option<Arc<dyn Engine>> {
        self.0.read().clone()
    }

    /// Drops the slot's reference; later requests find the server shutting down.
    pub fn close(&self) {
        self.0.write().take();
    }
}

/// The `Tablet` gRPC service.
pub struct TabletService {
    /// False only in tests and benchmarks that measure what commit wait costs and buys: without
    /// it, commits are acknowledged before their timestamp has surely passed, and external
    /// consistency is lost.
    pub commit_wait: bool,
    pub metrics: Arc<crate::metrics::ServerMetrics>,
    pub engine: EngineSlot,
    pub tt: Arc<dyn TrueTime>,
    pub registry: Registry,
    pub driver: DriverHandle,
}

impl TabletService {
    /// The replica of `group` if it may serve leader requests now, else the error to return.
    fn leader_replica(&self, group: GroupId) -> Result<Arc<ReplicaShared>, pb::TabletError> {
        let replica = self.registry.read().get(&group).cloned();
        let Some(replica) = replica else {
            return Err(pb::TabletError {
                kind: Some(Kind::Unavailable(format!("no replica of {group} here"))),
            });
        };
        if replica.serving.load(Ordering::Acquire) {
            return Ok(replica);
        }
        if replica.is_leader.load(Ordering::Acquire) {
            return Err(pb::TabletError {
                kind: Some(Kind::Unavailable(
                    "new leader still applying earlier terms".into(),
                )),
            });
        }
        Err(pb::TabletError {
            kind: Some(Kind::NotLeader(pb::NotLeader {
                group_id: group.0,
                leader_server: replica.leader.load(Ordering::Acquire),
            })),
        })
    }
}

#[tonic::async_trait]
impl pb::tablet_server::Tablet for TabletService {
    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        self.metrics.scans.inc();
        let replica = match self.leader_replica(group) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Response::new(pb::ScanResponse {
                    error: Some(e),
                    ..Default::default()
                }))
            }
        };
        if !replica.desc.range.covers(&req.start, &req.end) {
            return Ok(Response::new(pb::ScanResponse {
                error: error(Kind::KeyOutOfRange("scan outside the tablet".into())),
                ..Default::default()
            }));
        }
        // Everything applied so far has a timestamp <= observed; reading at observed gives a
        // consistent snapshot that commit validation can check against.
        let observed = Timestamp(replica.max_applied_ts.load(Ordering::Acquire));
        let limit = match req.limit as usize {
            0 => MAX_SCAN_ROWS,
            n => n.min(MAX_SCAN_ROWS),
        };
        let Some(engine) = self.engine.get() else {
            return Err(Status::unavailable("server shutting down"));
        };
        let (start, end) = (req.start, req.end);
        let result = tokio::task::spawn_blocking(move || {
            mvcc::scan(engine.as_ref(), &start, &end, observed, limit)
        })
        .await;
        let scan = match result {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                return Ok(Response::new(pb::ScanResponse {
                    error: error(Kind::Internal(e.to_string())),
                    ..Default::default()
                }))
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        // A commit is visible here once applied, possibly before its commit wait ended. Waiting
        // until its timestamp has surely passed keeps every reader behind the writer's
        // acknowledgement in TrueTime order.
        if self.commit_wait {
            meridian_truetime::wait_until_after(self.tt.as_ref(), observed).await;
        }
        let rows = scan
            .rows
            .into_iter()
            .filter_map(|(key, v)| {
                v.value.map(|value| pb::KvVersion {
                    key,
                    value,
                    version_ts: v.ts.0,
                })
            })
            .collect();
        Ok(Response::new(pb::ScanResponse {
            error: None,
            rows,
            resume_key: scan.resume_key.unwrap_or_default(),
            observed_ts: observed.0,
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        let commit = tablet::CommitRequest {
            reads: req
                .read_ranges
                .into_iter()
                .map(|r| tablet::ReadRange {
                    start: r.start,
                    end: r.end,
                    observed_ts: Timestamp(r.observed_ts),
                })
                .collect(),
            mutations: req
                .mutations
                .into_iter()
                .map(|m| tablet::Mutation {
                    key: m.key,
                    value: if m.delete { None } else { Some(m.value) },
                })
                .collect(),
        };
        let started = std::time::Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(Event::Commit {
            group,
            request: commit,
            reply: tx,
        }) {
            return Err(Status::unavailable("server shutting down"));
        }
        let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CommitError::Ambiguous(
                "server stopped during the commit".into(),
            )),
            Err(_) => Err(CommitError::Ambiguous(
                "commit timed out in replication".into(),
            )),
        };
        match outcome {
            Ok(ts) => {
                // Commit wait: ts was chosen before the Raft round, so this only waits for what
                // is left of the uncertainty after replication.
                let waited = std::time::Instant::now();
                if self.commit_wait {
                    meridian_truetime::wait_until_after(self.tt.as_ref(), ts).await;
                }
                let m = &self.metrics;
                m.commit_wait_seconds
                    .observe(waited.elapsed().as_secs_f64());
                m.commit_seconds.observe(started.elapsed().as_secs_f64());
                m.commits.with_label_values(&["committed"]).inc();
                Ok(Response::new(pb::CommitResponse {
                    error: None,
                    commit_ts: ts.0,
                }))
            }
            Err(e) => {
                self.metrics.commits.with_label_values(&[e.outcome()]).inc();
                Ok(Response::new(pb::CommitResponse {
                    error: commit_error(e, group),
                    commit_ts: 0,
                }))
            }
        }
    }

    async fn create_replica(
        &self,
        request: Request<pb::ReplicaDescriptor>,
    ) -> Result<Response<pb::CreateReplicaResponse>, Status> {
        let req = request.into_inner();
        let desc = ReplicaDescriptor {
            group: req.group_id,
            range: KeyRange {
                start: req.start,
                end: req.end,
            },
            peers: req.replicas,
        };
        if desc.peers.is_empty() {
            return Err(Status::invalid_argument("a replica needs peers"));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(Event::CreateReplica {
            desc,
            reply: Some(tx),
        }) {
            return Err(Status::unavailable("server shutting down"));
        }
        match rx.await {
            Ok(Ok(())) => Ok(Response::new(pb::CreateReplicaResponse {})),
            Ok(Err(e)) => Err(Status::internal(e)),
            Err(_) => Err(Status::unavailable("server shutting down")),
        }
    }
}

/// The inbound side of the Raft transport.
pub struct RaftService {
    pub driver: DriverHandle,
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            for m in batch.messages {
                let msg = Message::parse_from_bytes(&m.message)
                    .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
                if !self.driver.send(Event::Raft(GroupId(m.group_id), msg)) {
                    return Err(Status::unavailable("server shutting down"));
                }
            }
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}
