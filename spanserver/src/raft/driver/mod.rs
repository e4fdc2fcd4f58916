//! The multi-Raft driver: one thread that owns every Raft group (and its tablet's leader state)
//! on a spanserver.
//!
//! Everything that changes a group happens on this thread, in this order per iteration:
//!
//! 1. take events (messages from peers, commit requests, new replicas) and tick on schedule;
//! 2. [`RaftGroup::start_ready`] for every group with work, collecting all their log entries
//!    and hard states into **one** batch, written with one fsync (group commit across groups);
//! 3. send messages, [`RaftGroup::finish_ready`], then apply every committed entry of every
//!    group in one more batch that also records each group's applied index;
//! 4. answer the proposers whose entries were applied, and fail those whose entries were
//!    overwritten or whose leader stepped down.
//!
//! The thread is not a tokio task: RocksDB's fsyncs would stall the network runtime.
//!
//! This module holds the loop, its events and the per-replica state; the work is split by
//! operation: `round` (one Raft round: persist, send, apply, answer), `txn` (transaction
//! steps and their housekeeping), `lease` (leader leases and closed timestamps), `ranges`
//! (splits, membership changes, compaction and snapshots).

mod lease;
mod ranges;
mod round;
mod txn;

use txn::{decision_answer, merge, serving_leader};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_truetime::{Timestamp, TrueTime};
use parking_lot::{Mutex, RwLock};
use raft::prelude::{Entry, EntryType, Message};
use tokio::sync::oneshot;

use super::group::{self, RaftGroup, TICK_INTERVAL};
use super::transport::Transport;
use super::{GroupId, ServerId};
use crate::failpoints::{self, Failpoints};
use crate::storage::engine::{Cf, Engine, WriteBatch};
use crate::storage::keys;
use crate::tablet::lock_table::{Acquired, Effects, LockMode, LockTable, Refusal, Span, WaiterId};
use crate::tablet::steps::{self, StepRefusal};
use crate::tablet::{
    self, Applied, Command, KeyRange, Lease, Mutation, PreparedRecord, ReplicaDescriptor, TxnMeta,
    TxnRecords,
};

/// Why a transaction step failed, grouped by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Retry at the leader, if one is known.
    #[error("not leader (leader: {0:?})")]
    NotLeader(Option<ServerId>),
    /// Retry shortly (no replica here yet, leader still catching up).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The transaction was aborted (wounded, locks lost, coordinator decided abort): retry it
    /// whole.
    #[error("conflict: {0}")]
    Conflict(String),
    /// It may or may not have committed (the leader changed while it was in flight).
    #[error("result is ambiguous: {0}")]
    Ambiguous(String),
    /// TrueTime's uncertainty is too large to pick a timestamp: retry later.
    #[error("clock uncertain: {0}")]
    ClockUncertain(String),
    /// A key is outside this tablet: refresh the directory.
    #[error("key out of range")]
    OutOfRange,
    /// An insert found its key live: nothing was written.
    #[error("key exists")]
    KeyExists(Vec<u8>),
    #[error("internal: {0}")]
    Internal(String),
}

impl CommitError {
    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            CommitError::NotLeader(_) => "not_leader",
            CommitError::Unavailable(_) => "unavailable",
            CommitError::Conflict(_) => "conflict",
            CommitError::Ambiguous(_) => "ambiguous",
            CommitError::ClockUncertain(_) => "clock_uncertain",
            CommitError::OutOfRange => "out_of_range",
            CommitError::KeyExists(_) => "key_exists",
            CommitError::Internal(_) => "internal",
        }
    }
}

impl From<Refusal> for CommitError {
    fn from(r: Refusal) -> Self {
        CommitError::Conflict(r.to_string())
    }
}

impl From<StepRefusal> for CommitError {
    fn from(r: StepRefusal) -> Self {
        match r {
            StepRefusal::ClockUncertain(m) => CommitError::ClockUncertain(m),
            StepRefusal::Locks(refusal) => refusal.into(),
            StepRefusal::KeyExists(key) => CommitError::KeyExists(key),
        }
    }
}

/// One step of a read-write transaction at a group's leader (see `meridian.proto`, `TxnRequest`).
#[derive(Debug)]
pub enum TxnOp {
    /// Shared locks on spans (a locking read); answered when granted.
    LockShared { spans: Vec<Span> },
    /// Exclusive locks on keys (round 1 of two-phase commit); answered when granted.
    LockExclusive { keys: Vec<Vec<u8>> },
    /// Single-group commit. `absent`: keys among the mutations (inserts) that must have no
    /// live version, checked under their exclusive locks before the commit is proposed.
    Commit {
        mutations: Vec<Mutation>,
        absent: Vec<Vec<u8>>,
    },
    /// Two-phase commit: participant prepare.
    Prepare {
        reads: Vec<KeyRange>,
        mutations: Vec<Mutation>,
        absent: Vec<Vec<u8>>,
        coordinator: u64,
        participants: Vec<u64>,
    },
    /// Two-phase commit: coordinator commit.
    Decide {
        mutations: Vec<Mutation>,
        absent: Vec<Vec<u8>>,
        participants: Vec<u64>,
        min_ts: u64,
    },
    /// Release without committing: validate the locks (`abort == false`) or roll back.
    Finish { abort: bool },
    /// Two-phase commit: participant outcome.
    Resolve { commit: bool, ts: u64 },
    /// Two-phase commit: the coordinator's decision, deciding abort if there is none.
    Status,
    /// Two-phase commit: drop the coordinator's decision record.
    Forget,
    /// The transaction is alive: refresh its locks' idle timer and answer their epoch.
    Heartbeat,
}

/// What a transaction step answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxnAnswer {
    /// The epoch of the transaction's locks at this leader.
    pub epoch: u64,
    /// A commit or prepare timestamp.
    pub ts: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    #[default]
    Pending,
    Committed,
    Aborted,
}

pub type TxnReply = oneshot::Sender<Result<TxnAnswer, CommitError>>;

/// A transaction step sent to the driver.
pub struct TxnCall {
    pub group: GroupId,
    pub txn: TxnMeta,
    /// The epoch the caller holds locks under here (0 = none yet).
    pub epoch: u64,
    pub op: TxnOp,
    /// Identifies the call if it has to wait for locks (see `Event::CancelWait`).
    pub waiter: WaiterId,
    pub reply: TxnReply,
}

/// Work the driver hands to the server's resolver task (two-phase commit housekeeping that
/// needs RPCs to other groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverWork {
    /// Tell `participants` the outcome of `txn`, then forget it at `coordinator`.
    Push {
        coordinator: GroupId,
        txn: u64,
        commit: bool,
        ts: u64,
        participants: Vec<u64>,
    },
    /// `group` has held `txn` prepared for a while: ask `coordinator` and resolve.
    Inquire {
        group: GroupId,
        coordinator: GroupId,
        txn: u64,
    },
}

/// Work sent to the driver thread.
pub enum Event {
    /// A Raft message from a peer.
    Raft(GroupId, Message),
    /// A transaction step.
    Txn(TxnCall),
    /// The caller of a waiting transaction step gave up.
    CancelWait { group: GroupId, waiter: WaiterId },
    /// Split a group's range (see `SplitRequest` in `meridian.proto`).
    Split {
        group: GroupId,
        at: Vec<u8>,
        new_group: u64,
        reply: TxnReply,
    },
    /// Change a group's voters through joint consensus (at its leader).
    ChangeMembers {
        group: GroupId,
        add: Vec<ServerId>,
        remove: Vec<ServerId>,
        reply: TxnReply,
    },
    /// Give up every lease (graceful shutdown); answered with one receiver per release, each
    /// answered when the release has applied.
    ReleaseLeases {
        reply: oneshot::Sender<Vec<oneshot::Receiver<Result<TxnAnswer, CommitError>>>>,
    },
    /// Host a replica (idempotent).
    CreateReplica {
        desc: ReplicaDescriptor,
        creation: Creation,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Stop the thread.
    Shutdown,
}

/// How a replica this server does not host yet comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Its state is already on disk (restart, the right half of a split applied here).
    Existing,
    /// A group created from scratch: the replica starts from the group's initial state.
    Bootstrap,
    /// A replica added to an existing group: it starts empty and waits for a snapshot.
    Join,
}

/// What request handlers on other threads may read about a hosted replica.
#[derive(Debug)]
pub struct ReplicaShared {
    pub desc: ReplicaDescriptor,
    /// Leader, and every entry of earlier terms applied: may serve reads and commits.
    pub serving: AtomicBool,
    /// The leader this replica knows of (0 = unknown).
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub is_leader: AtomicBool,
    /// Every applied commit has a timestamp `<=` this. Updated only after the apply is visible.
    pub max_applied_ts: AtomicU64,
    pub applied_index: AtomicU64,
    /// Transactions prepared here and not yet resolved.
    pub prepared: AtomicU64,
    /// The smallest prepare timestamp still in doubt (`u64::MAX` if none): reads at or above it
    /// must wait for the outcome.
    pub min_prepared_ts: AtomicU64,
    /// Live transactions in the leader's lock table.
    pub lock_holders: AtomicU64,
    /// Timestamp assignment at the leader, shared with readers that need a floor under it.
    pub ts: Mutex<TsState>,
    /// While a split this leader proposed is in flight: no snapshot read above this timestamp
    /// may be served (the new group's timestamps start just above it). `u64::MAX` otherwise.
    pub split_floor: AtomicU64,
    /// While serving: when this leader's lease expires (ns); 0 otherwise. Readers check it
    /// against TrueTime themselves, so an expired lease stops reads at once.
    pub lease_expiration: AtomicU64,
}

impl ReplicaShared {
    /// A copy of this state for the same replica with a new descriptor (after a split).
    fn with_desc(&self, desc: ReplicaDescriptor) -> ReplicaShared {
        let ts = self.ts.lock();
        ReplicaShared {
            desc,
            serving: AtomicBool::new(self.serving.load(Ordering::Acquire)),
            leader: AtomicU64::new(self.leader.load(Ordering::Acquire)),
            term: AtomicU64::new(self.term.load(Ordering::Acquire)),
            is_leader: AtomicBool::new(self.is_leader.load(Ordering::Acquire)),
            max_applied_ts: AtomicU64::new(self.max_applied_ts.load(Ordering::Acquire)),
            applied_index: AtomicU64::new(self.applied_index.load(Ordering::Acquire)),
            prepared: AtomicU64::new(self.prepared.load(Ordering::Acquire)),
            min_prepared_ts: AtomicU64::new(self.min_prepared_ts.load(Ordering::Acquire)),
            lock_holders: AtomicU64::new(self.lock_holders.load(Ordering::Acquire)),
            lease_expiration: AtomicU64::new(self.lease_expiration.load(Ordering::Acquire)),
            split_floor: AtomicU64::new(u64::MAX),
            ts: Mutex::new(TsState {
                last_assigned: ts.last_assigned,
                read_floor: ts.read_floor,
            }),
        }
    }
}

/// A leader's timestamp assignment state.
#[derive(Debug, Default)]
pub struct TsState {
    /// The largest timestamp this leader has assigned.
    pub last_assigned: u64,
    /// Every timestamp assigned from now on is above this: snapshot reads at or below it have
    /// been served.
    pub read_floor: u64,
}

/// The replicas a server hosts, readable from any thread.
pub type Registry = Arc<RwLock<HashMap<GroupId, Arc<ReplicaShared>>>>;

/// A handle for sending work to the driver thread.
#[derive(Clone)]
pub struct DriverHandle {
    tx: Sender<Event>,
    next_waiter: Arc<AtomicU64>,
}

impl DriverHandle {
    /// Sends `event`; false if the driver has stopped.
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(event).is_ok()
    }

    /// A fresh waiter id for a `TxnCall`.
    pub fn waiter_id(&self) -> WaiterId {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a proposal is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProposalKind {
    Commit,
    Prepare,
    Decide,
    Status,
    Resolve,
    Abort,
    Forget,
    Close,
    Split,
    Lease,
}

struct Pending {
    index: u64,
    txn: u64,
    kind: ProposalKind,
    reply: TxnReply,
}

/// How long a read-write transaction may hold locks at a leader without a word from its
/// gateway before it is wounded.
pub const TXN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a participant holds a transaction prepared before asking its coordinator.
pub const INQUIRE_AFTER: Duration = Duration::from_secs(2);
/// How long an abort decision is kept (commit decisions are kept until every participant has
/// the outcome).
pub const ABORT_DECISION_TTL: Duration = Duration::from_secs(600);
/// A log is compacted once it holds this many applied entries...
const COMPACT_AFTER: u64 = 1024;
/// ...down to this many behind the applied index, so a replica a little behind still catches
/// up from the log; one further behind gets a snapshot.
const LOG_KEEP: u64 = 256;
/// How often the driver runs its transaction housekeeping.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How long a leader keeps a snapshot no transfer is reading, for a replica that asks again.
const SNAPSHOT_KEEP: Duration = Duration::from_secs(60);
/// A serving leader that proposed nothing for this long proposes a closed timestamp, so that
/// its followers' safe time keeps up with real time.
pub const CLOSE_INTERVAL: Duration = Duration::from_millis(200);

struct Replica {
    group: RaftGroup,
    shared: Arc<ReplicaShared>,
    locks: LockTable,
    records: TxnRecords,
    /// Transaction steps waiting for locks.
    waiting: HashMap<WaiterId, TxnCall>,
    /// Lock releases held back until their commit timestamp has surely passed.
    deferred: Vec<(Timestamp, u64)>,
    /// When this leader last asked about each prepared transaction (or first saw it).
    inquired: HashMap<u64, Instant>,
    /// When this leader last proposed anything (idle groups propose closed timestamps).
    last_proposal: Instant,
    /// How many times the lock table was rebuilt (part of its epochs).
    lock_resets: u64,
    /// The term the lock table was built for (0: none, not leading).
    locks_term: u64,
    /// The leader lease as last applied.
    lease: Lease,
    /// When this replica last proposed a lease that has not applied yet.
    lease_proposed: Option<Instant>,
    /// The lease is being given up (graceful shutdown): serve nothing more.
    releasing: bool,
    me: ServerId,
    tt: Arc<dyn TrueTime>,
    /// A membership change in flight: its log index and who waits for it.
    pending_conf: Option<(u64, TxnReply)>,
    /// A configuration without this server applied: the replica is to be destroyed.
    removed: bool,
    max_applied_ts: Timestamp,
    applied_index: u64,
    pending: HashMap<u64, Pending>,
    was_leader: bool,
    was_serving: bool,
}

impl Replica {
    /// Leader, everything of earlier terms applied, and holding the lease.
    fn serving(&self) -> bool {
        self.caught_up_leader() && self.holds_lease()
    }

    fn caught_up_leader(&self) -> bool {
        self.group.is_leader()
            && self
                .group
                .term_start_index()
                .is_some_and(|i| self.applied_index >= i)
    }

    /// The lease is this replica's, for its current term, and valid in TrueTime terms: surely
    /// not expired, and the previous holder's surely expired.
    fn holds_lease(&self) -> bool {
        let now = self.tt.now();
        !self.releasing
            && self.lease.holder == self.me.0
            && self.lease.term == self.group.term()
            && now.latest.0 < self.lease.expiration
            && now.earliest.0 > self.lease.start_after
    }

    /// Assigns the next timestamp: at least `TT.now().latest` and `at_least`, above everything
    /// assigned or applied, and above every timestamp a reader has been promised.
    fn next_ts(&self, tt: &dyn TrueTime, at_least: u64) -> Timestamp {
        let mut state = self.shared.ts.lock();
        let inputs = steps::TsInputs {
            last_assigned: state.last_assigned,
            read_floor: state.read_floor,
            max_applied: self.max_applied_ts.0,
        };
        let ts = steps::choose_ts(tt.now(), inputs, at_least);
        state.last_assigned = ts.0;
        ts
    }

    /// Raises the assignment floor to `ts` (a resolution at a coordinator's timestamp).
    fn assigned_at_least(&self, ts: u64) {
        let mut state = self.shared.ts.lock();
        state.last_assigned = state.last_assigned.max(ts);
    }

    /// Publishes leadership to other threads; on losing it, drops locks and fails waiters; on
    /// starting to serve, restores the locks of prepared transactions.
    fn sync_role(&mut self) {
        let leader = self.group.is_leader();
        if self.was_leader && !leader {
            self.releasing = false;
            if let Some((_, reply)) = self.pending_conf.take() {
                let _ = reply.send(Err(CommitError::Ambiguous(
                    "leadership changed during the membership change".into(),
                )));
            }
            self.locks.clear();
            self.locks_term = 0;
            for (_, call) in self.waiting.drain() {
                let _ = call
                    .reply
                    .send(Err(CommitError::NotLeader(self.group.leader())));
            }
            self.deferred.clear();
            self.inquired.clear();
            for (_, p) in self.pending.drain() {
                let _ = p.reply.send(Err(CommitError::Ambiguous(
                    "leadership changed while the commit was in flight".into(),
                )));
            }
        }
        let serving = self.serving();
        if serving && !self.was_serving {
            self.start_serving();
        }
        self.was_leader = leader;
        self.was_serving = serving;
        let s = &self.shared;
        s.is_leader.store(leader, Ordering::Release);
        s.serving.store(serving, Ordering::Release);
        s.leader
            .store(self.group.leader().map_or(0, |l| l.0), Ordering::Release);
        s.term.store(self.group.term(), Ordering::Release);
        s.prepared
            .store(self.records.prepared.len() as u64, Ordering::Relaxed);
        s.lock_holders
            .store(self.locks.len() as u64, Ordering::Relaxed);
        let expiration = if serving { self.lease.expiration } else { 0 };
        s.lease_expiration.store(expiration, Ordering::Release);
    }

    /// A new leader's lock table: fresh epochs, and every prepared transaction's locks back.
    ///
    /// A leader whose lease lapsed and was renewed in the same term keeps its lock table: a
    /// term has one leader, so nobody served in between, and the exclusive locks of commits it
    /// already proposed (and the shared locks of transactions still reading) stand.
    fn start_serving(&mut self) {
        if self.locks_term == self.group.term() {
            tracing::info!(
                group = self.group.id().0,
                term = self.group.term(),
                "serving as leader again: the lease is renewed, the lock table kept"
            );
            return;
        }
        self.locks_term = self.group.term();
        // Epochs must never repeat for this replica: a gateway compares them to detect locks
        // lost in between. Terms only grow, and resets within a term are counted.
        self.lock_resets += 1;
        self.locks = LockTable::new((self.group.term() << 40) | ((self.lock_resets & 0xff) << 32));
        let now = Instant::now();
        for r in self.records.prepared.values() {
            let keys = r.mutations.iter().map(|m| m.key.clone()).collect();
            let reads = r
                .reads
                .iter()
                .map(|k| Span {
                    start: k.start.clone(),
                    end: k.end.clone(),
                })
                .collect();
            self.locks
                .restore_prepared(r.txn.id, r.txn.lock_priority(), reads, keys, now);
            self.inquired.insert(r.txn.id, now);
        }
        let mut floor = self.max_applied_ts.0;
        for r in self.records.prepared.values() {
            floor = floor.max(r.prepare_ts);
        }
        for d in self.records.decisions.values() {
            floor = floor.max(d.ts);
        }
        self.assigned_at_least(floor);
        tracing::info!(
            group = self.group.id().0,
            term = self.group.term(),
            prepared = self.records.prepared.len(),
            decisions = self.records.decisions.len(),
            "serving as leader"
        );
    }
}

/// Configuration of the driver thread.
pub struct DriverConfig {
    pub server: ServerId,
    pub engine: Arc<dyn Engine>,
    pub tt: Arc<dyn TrueTime>,
    pub transport: Arc<Transport>,
    pub registry: Registry,
    pub logger: slog::Logger,
    /// Where two-phase commit housekeeping goes (none in tests of a lone driver).
    pub resolver: Option<tokio::sync::mpsc::UnboundedSender<ResolverWork>>,
    pub failpoints: Arc<Failpoints>,
    /// How long a leader lease lasts (renewed at half-life).
    pub lease: Duration,
}

/// Opens every replica recorded in the engine and starts the driver thread.
pub fn start(config: DriverConfig) -> std::io::Result<(DriverHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut driver = DriverLoop {
        config,
        replicas: BTreeMap::new(),
        rx,
        next_proposal: 1,
        crashed: false,
    };
    driver.open_existing();
    let handle = std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || driver.run())?;
    Ok((
        DriverHandle {
            tx,
            next_waiter: Arc::new(AtomicU64::new(1)),
        },
        handle,
    ))
}

struct DriverLoop {
    config: DriverConfig,
    replicas: BTreeMap<GroupId, Replica>,
    rx: Receiver<Event>,
    next_proposal: u64,
    /// A failpoint fired: stop at once, as a killed process would.
    crashed: bool,
}

/// The most events handled before the driver processes readies again.
const MAX_EVENTS_PER_ROUND: usize = 4096;

impl DriverLoop {
    fn open_existing(&mut self) {
        let (start, end) = keys::replicas_range();
        let descs: Vec<ReplicaDescriptor> = self
            .config
            .engine
            .scan(Cf::Meta, &start, Some(&end))
            .filter_map(|item| match item {
                Ok((_, v)) => bincode::deserialize(&v).ok(),
                Err(e) => {
                    tracing::error!(error = %e, "reading replica descriptors");
                    None
                }
            })
            .collect();
        for desc in descs {
            if let Err(e) = self.open_replica(desc.clone(), Creation::Existing) {
                tracing::error!(group = desc.group.0, error = %e, "opening replica");
            }
        }
    }

    fn open_replica(&mut self, desc: ReplicaDescriptor, creation: Creation) -> Result<(), String> {
        let new = creation != Creation::Existing;
        let id = desc.group_id();
        if self.replicas.contains_key(&id) {
            return Ok(());
        }
        // A replica whose range overlaps one hosted here is the right half of a split this
        // server has not applied yet: applying it creates the replica, with the right state.
        if let Some(other) = self
            .replicas
            .values()
            .find(|r| tablet::ranges_overlap(&r.shared.desc.range, &desc.range))
        {
            return Err(format!(
                "range overlaps {}; waiting for its split to apply",
                other.shared.desc.group_id()
            ));
        }
        let engine = &self.config.engine;
        if new {
            let mut b = WriteBatch::new();
            let bytes = bincode::serialize(&desc).map_err(|e| e.to_string())?;
            b.put(Cf::Meta, keys::replica(id), bytes);
            let fresh = engine
                .get(Cf::Raft, &keys::hard_state(id))
                .map_err(|e| e.to_string())?
                .is_none();
            if fresh {
                let voters: Vec<ServerId> = desc.peers.clone();
                match creation {
                    Creation::Bootstrap => group::write_initial_state(id, &voters, 0, &mut b),
                    Creation::Join => group::write_uninitialized_state(id, &mut b),
                    Creation::Existing => {}
                }
            }
            engine.write(b, true).map_err(|e| e.to_string())?;
        }
        let peers: Vec<ServerId> = desc.peers.clone();
        let mut group = RaftGroup::open(
            id,
            self.config.server,
            &peers,
            engine.as_ref(),
            &self.config.logger,
        )
        .map_err(|e| e.to_string())?;
        let (applied_index, max_applied_ts) = match engine.get(Cf::Raft, &keys::applied_index(id)) {
            Ok(Some(b)) if b.len() == 16 => (
                keys::decode_u64(&b[..8]).unwrap_or(0),
                keys::decode_u64(&b[8..]).unwrap_or(0),
            ),
            Ok(_) => (0, 0),
            Err(e) => return Err(e.to_string()),
        };
        if creation == Creation::Bootstrap && peers.first() == Some(&self.config.server) {
            // Skip the first election timeout on a brand-new group.
            let _ = group.campaign();
        }
        let records = TxnRecords::load(engine.as_ref(), id)?;
        let lease: Lease = match engine.get(Cf::Raft, &keys::lease(id)) {
            Ok(Some(b)) => bincode::deserialize(&b).map_err(|e| format!("corrupt lease: {e}"))?,
            Ok(None) => Lease::default(),
            Err(e) => return Err(e.to_string()),
        };
        let shared = Arc::new(ReplicaShared {
            desc: desc.clone(),
            serving: AtomicBool::new(false),
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            is_leader: AtomicBool::new(false),
            max_applied_ts: AtomicU64::new(max_applied_ts),
            applied_index: AtomicU64::new(applied_index),
            prepared: AtomicU64::new(records.prepared.len() as u64),
            min_prepared_ts: AtomicU64::new(records.min_prepare_ts()),
            lock_holders: AtomicU64::new(0),
            lease_expiration: AtomicU64::new(0),
            split_floor: AtomicU64::new(u64::MAX),
            ts: Mutex::new(TsState {
                last_assigned: max_applied_ts,
                read_floor: 0,
            }),
        });
        self.config.registry.write().insert(id, shared.clone());
        tracing::info!(group = id.0, peers = ?desc.peers, applied_index, "replica opened");
        self.replicas.insert(
            id,
            Replica {
                group,
                shared,
                locks: LockTable::new(0),
                records,
                waiting: HashMap::new(),
                deferred: Vec::new(),
                inquired: HashMap::new(),
                last_proposal: Instant::now(),
                lock_resets: 0,
                locks_term: 0,
                lease,
                lease_proposed: None,
                releasing: false,
                me: self.config.server,
                tt: self.config.tt.clone(),
                pending_conf: None,
                removed: false,
                max_applied_ts: Timestamp(max_applied_ts),
                applied_index,
                pending: HashMap::new(),
                was_leader: false,
                was_serving: false,
            },
        );
        Ok(())
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(event) => {
                    self.handle(event);
                    let mut handled = 1;
                    while handled < MAX_EVENTS_PER_ROUND {
                        match self.rx.try_recv() {
                            Ok(Event::Shutdown) => return,
                            Ok(event) => self.handle(event),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                for r in self.replicas.values_mut() {
                    r.group.tick();
                }
                next_tick += TICK_INTERVAL;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + TICK_INTERVAL;
                }
            }
            self.release_deferred();
            self.maintain_leases();
            self.close_idle_groups();
            let sweep_now = Instant::now() >= next_sweep;
            if sweep_now {
                self.sweep();
                next_sweep = Instant::now() + SWEEP_INTERVAL;
            }
            self.settle_snapshots(sweep_now);
            if let Err(e) = self.process_ready() {
                // A storage failure here means the disk is gone; continuing could ack writes
                // that are not durable.
                tracing::error!(error = %e, "raft driver cannot persist; stopping the server");
                std::process::exit(70);
            }
            if self.config.failpoints.fire(failpoints::CRASH_NOW) {
                self.crashed = true;
            }
            if self.crashed {
                tracing::error!("raft driver crashed at a failpoint");
                return;
            }
            // Publish every replica's role once per iteration: leadership changes with Raft
            // rounds, leases also with time.
            for r in self.replicas.values_mut() {
                r.sync_role();
            }
        }
        tracing::info!("raft driver stopped");
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Raft(group, msg) => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    if let Err(e) = r.group.step(msg) {
                        tracing::debug!(group = group.0, error = %e, "step");
                    }
                }
            }
            Event::Txn(call) => self.txn(call),
            Event::CancelWait { group, waiter } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    if let Some(call) = r.waiting.remove(&waiter) {
                        let _ = call
                            .reply
                            .send(Err(CommitError::Conflict("lock wait timed out".into())));
                    }
                    let effects = r.locks.cancel(waiter);
                    self.answer_lock_effects(group, effects);
                }
            }
            Event::Split {
                group,
                at,
                new_group,
                reply,
            } => {
                if let Err(e) = serving_leader(&mut self.replicas, group) {
                    let _ = reply.send(Err(e));
                    return;
                }
                if let Some(existing) = self.replicas.get(&GroupId(new_group)) {
                    // A retried split that already happened answers as it did; anything else
                    // is a caller bug.
                    let answer = if existing.shared.desc.range.start == at {
                        Ok(TxnAnswer::default())
                    } else {
                        Err(CommitError::Internal(format!(
                            "group {new_group} already exists here"
                        )))
                    };
                    let _ = reply.send(answer);
                    return;
                }
                // Timestamps of the new group start above everything this leader assigned or
                // promised readers; until the split applies, no read above that is served.
                let Some(r) = self.replicas.get(&group) else {
                    return;
                };
                let floor = {
                    let state = r.shared.ts.lock();
                    state
                        .last_assigned
                        .max(state.read_floor)
                        .max(r.max_applied_ts.0)
                };
                r.shared.split_floor.store(floor, Ordering::Release);
                let command = Command::Split {
                    proposal: self.next_proposal,
                    at,
                    new_group: GroupId(new_group),
                    floor,
                };
                self.propose(group, command, ProposalKind::Split, 0, None, reply);
            }
            Event::ChangeMembers {
                group,
                add,
                remove,
                reply,
            } => self.change_members(group, &add, &remove, reply),
            Event::ReleaseLeases { reply } => {
                let waits = self.release_leases();
                let _ = reply.send(waits);
            }
            Event::CreateReplica {
                desc,
                creation,
                reply,
            } => {
                let result = self.open_replica(desc, creation);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Event::Shutdown => {}
        }
    }

    /// Proposes `command` and parks `reply` until it applies.
    fn propose(
        &mut self,
        group: GroupId,
        command: Command,
        kind: ProposalKind,
        txn: u64,
        ts: Option<Timestamp>,
        reply: TxnReply,
    ) {
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        let proposal = self.next_proposal;
        self.next_proposal += 1;
        match r.group.propose(command.encode()) {
            Ok(index) => {
                debug_assert!(ts.is_none_or(|ts| ts.0 <= r.shared.ts.lock().last_assigned));
                r.last_proposal = Instant::now();
                r.pending.insert(
                    proposal,
                    Pending {
                        index,
                        txn,
                        kind,
                        reply,
                    },
                );
            }
            Err(e) => {
                let effects = r.locks.release(txn);
                let _ = reply.send(Err(CommitError::Unavailable(format!(
                    "proposal dropped: {e}"
                ))));
                self.answer_lock_effects(group, effects);
            }
        }
    }
}
