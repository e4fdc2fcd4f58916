//! The spanserver's gRPC services: the tablet data plane (`Tablet`) and the inbound side of the
//! Raft transport (`RaftTransport`).
//!
//! Handlers never touch Raft state directly: reads run against the engine at the leader using
//! the atomics the driver publishes in [`ReplicaShared`]; lock requests, transaction steps and
//! new replicas are events sent to the driver thread, and commit wait happens here, off that
//! thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_common::limits;
use meridian_proto as pb;
use meridian_proto::tablet_error::Kind;
use meridian_truetime::{Timestamp, TrueTime};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::driver::{
    CommitError, Creation, DriverHandle, Event, Outcome, Registry, ReplicaShared, ResolverWork,
    TxnAnswer, TxnCall, TxnOp,
};
use crate::raft::{GroupId, ServerId};
use crate::storage::engine::Engine;
use crate::storage::mvcc;
use crate::tablet::lock_table::Span;
use crate::tablet::reads::{self, ReadAt, ReadPlan, ReadRefusal, ReadState};
use crate::tablet::{self, KeyRange, ReplicaDescriptor, TxnMeta};

/// How long a commit may wait for its Raft round before its outcome is reported as unknown.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
pub use crate::tablet::reads::GC_HORIZON;

/// Scans of at most this many rows run on the calling task instead of the blocking pool.
const INLINE_SCAN_ROWS: usize = 16;
/// How long a transaction step may wait for locks before it gives up (wound-wait already
/// bounds waits; this catches a holder that stopped making progress).
pub const LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
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
        CommitError::KeyExists(key) => Kind::KeyExists(key),
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

/// The `Tablet` gRPC service. Clones share everything; a node also calls it in-process.
#[derive(Clone)]
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
    /// Where a coordinator hands the outcome to be pushed to participants.
    pub resolver: Option<tokio::sync::mpsc::UnboundedSender<ResolverWork>>,
}

impl TabletService {
    /// The replica of `group` hosted here, leader or not.
    fn any_replica(&self, group: GroupId) -> Result<Arc<ReplicaShared>, pb::TabletError> {
        self.registry
            .read()
            .get(&group)
            .cloned()
            .ok_or_else(|| pb::TabletError {
                kind: Some(Kind::Unavailable(format!("no replica of {group} here"))),
            })
    }

    /// The timestamp a lock-free read is served at, once this replica's safe time covers it
    /// (see `ScanRequest` in `meridian.proto`; the rules are [`reads::plan_read`]'s).
    async fn snapshot_ts(
        &self,
        group: GroupId,
        replica: &ReplicaShared,
        req: &pb::ScanRequest,
    ) -> Result<Timestamp, pb::TabletError> {
        let state = read_state(replica, self.tt.as_ref());
        let at = if req.read_ts > 0 {
            ReadAt::Exact(req.read_ts)
        } else if req.max_staleness_ns > 0 {
            ReadAt::Bounded {
                max_staleness_ns: req.max_staleness_ns,
            }
        } else {
            ReadAt::LeaderLatest
        };
        let refused = |refusal: ReadRefusal| pb::TabletError {
            kind: Some(match refusal {
                r if r.is_invalid_timestamp() => Kind::InvalidTimestamp(r.to_string()),
                ReadRefusal::NotLeader => Kind::NotLeader(pb::NotLeader {
                    group_id: group.0,
                    leader_server: replica.leader.load(Ordering::Acquire),
                }),
                r => Kind::Unavailable(r.to_string()),
            }),
        };
        match reads::plan_read(at, &state, self.tt.now()).map_err(refused)? {
            ReadPlan::Now { ts } => Ok(Timestamp(ts)),
            ReadPlan::Wait { ts, raise_floor } => {
                let budget = if state.leader {
                    LOCK_WAIT_TIMEOUT
                } else {
                    Duration::from_millis(u64::from(req.max_wait_ms))
                };
                wait_safe(replica, ts, raise_floor, budget)
                    .await
                    .map(|()| Timestamp(ts))
                    .map_err(|m| pb::TabletError {
                        kind: Some(Kind::Unavailable(m)),
                    })
            }
        }
    }

    /// The replica of `group` if it may serve leader requests now, else the error to return.
    fn leader_replica(&self, group: GroupId) -> Result<Arc<ReplicaShared>, pb::TabletError> {
        let replica = self.registry.read().get(&group).cloned();
        let Some(replica) = replica else {
            return Err(pb::TabletError {
                kind: Some(Kind::Unavailable(format!("no replica of {group} here"))),
            });
        };
        if serving_now(&replica, self.tt.as_ref()) {
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

/// The replica serves as leader and its lease is surely still valid.
fn serving_now(replica: &ReplicaShared, tt: &dyn TrueTime) -> bool {
    replica.serving.load(Ordering::Acquire)
        && tt.now().latest.0 < replica.lease_expiration.load(Ordering::Acquire)
}

/// What `replica` knows now, as the read rules need it.
fn read_state(replica: &ReplicaShared, tt: &dyn TrueTime) -> ReadState {
    let leader = serving_now(replica, tt);
    ReadState {
        leader,
        max_applied: replica.max_applied_ts.load(Ordering::Acquire),
        min_prepared: replica.min_prepared_ts.load(Ordering::Acquire),
        split_floor: replica.split_floor.load(Ordering::Acquire),
        lease_end: if leader {
            replica.lease_expiration.load(Ordering::Acquire)
        } else {
            u64::MAX
        },
    }
}

/// Waits until `replica` can serve a snapshot read at `ts`, for at most `budget`.
///
/// With `raise_floor` (a leader), `ts` first becomes a floor under every timestamp assigned
/// from now on, so only entries already assigned at or below `ts` must apply
/// ([`reads::applied_target`]); a follower waits for the leader's entries (commits or closed
/// timestamps) to carry its applied timestamp to `ts`. Either way, transactions prepared below
/// `ts` must be resolved first ([`reads::is_safe`]).
async fn wait_safe(
    replica: &ReplicaShared,
    ts: u64,
    raise_floor: bool,
    budget: Duration,
) -> Result<(), String> {
    let last_assigned = if raise_floor {
        let mut state = replica.ts.lock();
        state.read_floor = state.read_floor.max(ts);
        state.last_assigned
    } else {
        0
    };
    let target = reads::applied_target(ts, raise_floor, last_assigned);
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let state = ReadState {
            leader: raise_floor,
            max_applied: replica.max_applied_ts.load(Ordering::Acquire),
            min_prepared: replica.min_prepared_ts.load(Ordering::Acquire),
            split_floor: u64::MAX,
            lease_end: u64::MAX,
        };
        if reads::is_safe(ts, target, &state) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(reads::still_waiting(ts, &state));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Refuses a commit, prepare or decision whose writes are past the [`limits`], from any
/// client, before anything is locked or proposed: a Raft entry a leader proposes must fit in
/// one transport message, or replication would retry it forever.
fn check_limits(op: &pb::txn_request::Op) -> Result<(), String> {
    use pb::txn_request::Op;
    let ms = match op {
        Op::Commit(c) => &c.mutations,
        Op::Prepare(p) => &p.mutations,
        Op::Decide(d) => &d.mutations,
        _ => return Ok(()),
    };
    let mut bytes = 0usize;
    for m in ms {
        let value = (!m.delete).then_some(m.value.as_slice());
        limits::check_write(&m.key, value)?;
        bytes = bytes.saturating_add(m.key.len() + m.value.len());
    }
    limits::check_commit(ms.len(), bytes)
}

/// Converts a request's mutations; also returns the keys of its inserts (which must be
/// absent).
fn mutations(ms: Vec<pb::Mutation>) -> (Vec<tablet::Mutation>, Vec<Vec<u8>>) {
    let absent = ms
        .iter()
        .filter(|m| m.must_be_absent)
        .map(|m| m.key.clone())
        .collect();
    let mutations = ms
        .into_iter()
        .map(|m| tablet::Mutation {
            key: m.key,
            value: if m.delete { None } else { Some(m.value) },
        })
        .collect();
    (mutations, absent)
}

fn txn_op(op: pb::txn_request::Op) -> TxnOp {
    use pb::txn_request::Op;
    match op {
        Op::Lock(l) => TxnOp::LockExclusive { keys: l.keys },
        Op::Commit(c) => {
            let (mutations, absent) = mutations(c.mutations);
            TxnOp::Commit { mutations, absent }
        }
        Op::Prepare(p) => {
            let (mutations, absent) = mutations(p.mutations);
            TxnOp::Prepare {
                reads: p
                    .reads
                    .into_iter()
                    .map(|s| KeyRange {
                        start: s.start,
                        end: s.end,
                    })
                    .collect(),
                mutations,
                absent,
                coordinator: p.coordinator_group,
                participants: p.participant_groups,
            }
        }
        Op::Decide(d) => {
            let (mutations, absent) = mutations(d.mutations);
            TxnOp::Decide {
                mutations,
                absent,
                participants: d.participant_groups,
                min_ts: d.min_ts,
            }
        }
        Op::Finish(f) => TxnOp::Finish { abort: f.abort },
        Op::Resolve(r) => TxnOp::Resolve {
            commit: r.commit,
            ts: r.commit_ts,
        },
        Op::Status(_) => TxnOp::Status,
        Op::Forget(_) => TxnOp::Forget,
        Op::Heartbeat(_) => TxnOp::Heartbeat,
    }
}

impl TabletService {
    /// Sends a transaction step to the driver and waits for its answer. A step still waiting
    /// for locks after [`LOCK_WAIT_TIMEOUT`] is cancelled; one that was already proposed is
    /// given [`COMMIT_TIMEOUT`] more before its outcome is reported unknown.
    async fn call_driver(
        &self,
        group: GroupId,
        txn: TxnMeta,
        epoch: u64,
        op: TxnOp,
    ) -> Result<TxnAnswer, CommitError> {
        let waiter = self.driver.waiter_id();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let call = TxnCall {
            group,
            txn,
            epoch,
            op,
            waiter,
            reply: tx,
        };
        if !self.driver.send(Event::Txn(call)) {
            // The driver is gone (shutting down, or crashed): this server leads nothing.
            return Err(CommitError::NotLeader(None));
        }
        let stopped = || CommitError::Ambiguous("server stopped during the step".into());
        match tokio::time::timeout(LOCK_WAIT_TIMEOUT, &mut rx).await {
            Ok(answer) => return answer.map_err(|_| stopped())?,
            Err(_) => {
                self.driver.send(Event::CancelWait { group, waiter });
            }
        }
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(CommitError::Ambiguous("timed out in replication".into())),
        }
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
        let fail = |e: pb::TabletError| {
            Ok(Response::new(pb::ScanResponse {
                error: Some(e),
                ..Default::default()
            }))
        };
        let replica = match &req.txn {
            Some(_) => self.leader_replica(group),
            None => self.any_replica(group),
        };
        let replica = match replica {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if !replica.desc.range.covers(&req.start, &req.end) {
            return fail(pb::TabletError {
                kind: Some(Kind::KeyOutOfRange("scan outside the tablet".into())),
            });
        }
        let (read_ts, lock_epoch) = match &req.txn {
            Some(txn) => {
                // A locking read: once the shared lock is granted, no uncommitted write can
                // touch the span, and the latest versions are the ones to read.
                let txn = TxnMeta {
                    id: txn.id,
                    priority: txn.priority,
                };
                let spans = vec![Span {
                    start: req.start.clone(),
                    end: req.end.clone(),
                }];
                match self
                    .call_driver(group, txn, 0, TxnOp::LockShared { spans })
                    .await
                {
                    Ok(answer) => (Timestamp(u64::MAX), answer.epoch),
                    Err(e) => return fail(commit_error(e, group).unwrap_or_default()),
                }
            }
            None => match self.snapshot_ts(group, &replica, &req).await {
                Ok(ts) => (ts, 0),
                Err(e) => return fail(e),
            },
        };
        let limit = match req.limit as usize {
            0 => MAX_SCAN_ROWS,
            n => n.min(MAX_SCAN_ROWS),
        };
        let Some(engine) = self.engine.get() else {
            return Err(Status::unavailable("server shutting down"));
        };
        let (start, end) = (req.start, req.end);
        // A read of a few rows costs less than handing it to the blocking pool (a thread
        // switch each way); longer scans go there, off the network runtime's threads.
        let result = if limit <= INLINE_SCAN_ROWS {
            Ok(mvcc::scan(engine.as_ref(), &start, &end, read_ts, limit))
        } else {
            tokio::task::spawn_blocking(move || {
                mvcc::scan(engine.as_ref(), &start, &end, read_ts, limit)
            })
            .await
        };
        let scan = match result {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                return fail(pb::TabletError {
                    kind: Some(Kind::Internal(e.to_string())),
                })
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
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
            read_ts: if req.txn.is_some() { 0 } else { read_ts.0 },
            lock_epoch,
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        let Some(op) = req.op else {
            return Err(Status::invalid_argument("a transaction step needs an op"));
        };
        let Some(txn) = req.txn else {
            return Err(Status::invalid_argument("a transaction step needs a txn"));
        };
        let txn = TxnMeta {
            id: txn.id,
            priority: txn.priority,
        };
        if let Err(message) = check_limits(&op) {
            return Ok(Response::new(pb::TxnResponse {
                error: Some(pb::TabletError {
                    kind: Some(Kind::LimitExceeded(message)),
                }),
                ..Default::default()
            }));
        }
        let op = txn_op(op);
        let commits = match &op {
            TxnOp::Commit { .. } => Some(None),
            TxnOp::Decide { participants, .. } => Some(Some(participants.clone())),
            _ => None,
        };
        let started = std::time::Instant::now();
        let outcome = self.call_driver(group, txn, req.lock_epoch, op).await;
        let answer = match (outcome, commits) {
            (Ok(answer), Some(participants)) => {
                // Commit wait: the timestamp was chosen before the Raft round, so this only
                // waits for what is left of the uncertainty after replication.
                let waited = std::time::Instant::now();
                if self.commit_wait {
                    meridian_truetime::wait_until_after(self.tt.as_ref(), Timestamp(answer.ts))
                        .await;
                }
                let m = &self.metrics;
                m.commit_wait_seconds
                    .observe(waited.elapsed().as_secs_f64());
                m.commit_seconds.observe(started.elapsed().as_secs_f64());
                m.commits.with_label_values(&["committed"]).inc();
                if let (Some(participants), Some(resolver)) = (participants, &self.resolver) {
                    let _ = resolver.send(ResolverWork::Push {
                        coordinator: group,
                        txn: txn.id,
                        commit: true,
                        ts: answer.ts,
                        participants,
                    });
                }
                Ok(answer)
            }
            (Err(e), Some(_)) => {
                self.metrics.commits.with_label_values(&[e.outcome()]).inc();
                Err(e)
            }
            (other, None) => other,
        };
        Ok(Response::new(match answer {
            Ok(a) => pb::TxnResponse {
                error: None,
                lock_epoch: a.epoch,
                ts: a.ts,
                outcome: match a.outcome {
                    Outcome::Pending => pb::TxnOutcome::Pending,
                    Outcome::Committed => pb::TxnOutcome::Committed,
                    Outcome::Aborted => pb::TxnOutcome::Aborted,
                } as i32,
            },
            Err(e) => pb::TxnResponse {
                error: commit_error(e, group),
                ..Default::default()
            },
        }))
    }

    async fn change_replicas(
        &self,
        request: Request<pb::ChangeReplicasRequest>,
    ) -> Result<Response<pb::ChangeReplicasResponse>, Status> {
        let req = request.into_inner();
        let group = GroupId(req.group_id);
        let fail = |e: CommitError| {
            Ok(Response::new(pb::ChangeReplicasResponse {
                error: commit_error(e, group),
                replicas: Vec::new(),
            }))
        };
        let replica = match self.leader_replica(group) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Response::new(pb::ChangeReplicasResponse {
                    error: Some(e),
                    replicas: Vec::new(),
                }))
            }
        };
        let mut target: Vec<ServerId> = replica
            .desc
            .peers
            .iter()
            .copied()
            .filter(|p| !req.remove.contains(&p.0))
            .chain(req.add.iter().map(|s| ServerId(*s)))
            .collect();
        target.sort_unstable();
        target.dedup();
        if target.is_empty() {
            return Err(Status::invalid_argument("a group needs at least one voter"));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(Event::ChangeMembers {
            group,
            add: req.add.iter().map(|s| ServerId(*s)).collect(),
            remove: req.remove.iter().map(|s| ServerId(*s)).collect(),
            reply: tx,
        }) {
            return fail(CommitError::NotLeader(None));
        }
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return fail(e),
            _ => {
                return fail(CommitError::Ambiguous(
                    "the membership change's outcome is unknown".into(),
                ))
            }
        }
        // Joint consensus: wait for the leader to leave the joint configuration.
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        loop {
            let peers = self
                .registry
                .read()
                .get(&group)
                .map(|r| r.desc.peers.clone())
                .unwrap_or_default();
            if peers == target {
                return Ok(Response::new(pb::ChangeReplicasResponse {
                    error: None,
                    replicas: peers.iter().map(|p| p.0).collect(),
                }));
            }
            if tokio::time::Instant::now() > deadline {
                return fail(CommitError::Ambiguous(format!(
                    "the group is at {peers:?}, not yet {target:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn split(
        &self,
        request: Request<pb::SplitRequest>,
    ) -> Result<Response<pb::SplitResponse>, Status> {
        Ok(Response::new(
            match self.split_group(request.into_inner()).await {
                Ok(right) => pb::SplitResponse {
                    error: None,
                    right: Some(right),
                },
                Err(e) => pb::SplitResponse {
                    error: Some(e),
                    right: None,
                },
            },
        ))
    }

    async fn create_replica(
        &self,
        request: Request<pb::ReplicaDescriptor>,
    ) -> Result<Response<pb::CreateReplicaResponse>, Status> {
        let req = request.into_inner();
        let bootstrap = req.bootstrap;
        let desc = ReplicaDescriptor::from_pb(req);
        if desc.peers.is_empty() {
            return Err(Status::invalid_argument("a replica needs peers"));
        }
        let creation = if bootstrap {
            Creation::Bootstrap
        } else {
            Creation::Join
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(Event::CreateReplica {
            desc,
            creation,
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

impl TabletService {
    async fn split_group(
        &self,
        req: pb::SplitRequest,
    ) -> Result<pb::ReplicaDescriptor, pb::TabletError> {
        let group = GroupId(req.group_id);
        if req.new_group_id == 0 || req.new_group_id == req.group_id || req.split_key.is_empty() {
            return Err(pb::TabletError {
                kind: Some(Kind::Internal(
                    "a split needs a new group id and a key".into(),
                )),
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.driver.send(Event::Split {
            group,
            at: req.split_key.clone(),
            new_group: req.new_group_id,
            reply: tx,
        }) {
            return Err(pb::TabletError {
                kind: Some(Kind::Unavailable("server shutting down".into())),
            });
        }
        match tokio::time::timeout(COMMIT_TIMEOUT, rx).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return Err(commit_error(e, group).unwrap_or_default()),
            Ok(Err(_)) | Err(_) => {
                return Err(pb::TabletError {
                    kind: Some(Kind::Ambiguous("the split's outcome is unknown".into())),
                })
            }
        }
        // Applied: the new group is open here (or the range already ended at the key).
        let right = self
            .registry
            .read()
            .values()
            .find(|r| r.desc.range.start == req.split_key)
            .map(|r| r.desc.clone());
        match right {
            Some(d) => Ok(d.to_pb()),
            None => Err(pb::TabletError {
                kind: Some(Kind::Unavailable(
                    "the split's right half is not open yet".into(),
                )),
            }),
        }
    }
}

/// The inbound side of the Raft transport.
pub struct RaftService {
    pub driver: DriverHandle,
    pub metrics: Arc<crate::metrics::ServerMetrics>,
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
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    // Its data would be missing: installing it would empty the range.
                    return Err(Status::invalid_argument(
                        "snapshots go through SendSnapshot",
                    ));
                }
                if !self.driver.send(Event::Raft(GroupId(m.group_id), msg)) {
                    return Err(Status::unavailable("server shutting down"));
                }
            }
        }
        Ok(Response::new(pb::RaftAck {}))
    }

    /// Takes a whole streamed snapshot, then hands raft-rs the message with its data in place.
    /// A stream that breaks off, or holds anything but a snapshot of one tablet's range, is
    /// refused and nothing of it reaches the driver.
    async fn send_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))??;
        let mut msg = Message::parse_from_bytes(&first.message)
            .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "a snapshot stream must start with a snapshot message",
            ));
        }
        let mut assembler = tablet::snapshot::Assembler::new(msg.get_snapshot().get_data())
            .map_err(Status::invalid_argument)?;
        let mut done = false;
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if done {
                return Err(Status::invalid_argument("data after the snapshot's end"));
            }
            if !chunk.data.is_empty() {
                assembler
                    .add(&chunk.data)
                    .map_err(Status::invalid_argument)?;
                bytes += chunk.data.len() as u64;
            }
            done = chunk.done;
        }
        if !done {
            return Err(Status::aborted("the snapshot stream ended early"));
        }
        let data = assembler.finish();
        msg.mut_snapshot().set_data(data.into());
        if !self.driver.send(Event::Raft(GroupId(first.group_id), msg)) {
            return Err(Status::unavailable("server shutting down"));
        }
        self.metrics.snapshots_received.inc();
        self.metrics.snapshot_bytes_received.inc_by(bytes);
        Ok(Response::new(pb::RaftAck {}))
    }
}
