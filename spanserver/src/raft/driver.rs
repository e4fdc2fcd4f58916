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
use super::keys;
use super::transport::Transport;
use super::{GroupId, ServerId};
use crate::failpoints::{self, Failpoints};
use crate::storage::engine::{Cf, Engine, WriteBatch};
use crate::tablet::lock_table::{Acquired, Effects, LockMode, LockTable, Refusal, Span, WaiterId};
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
            CommitError::Internal(_) => "internal",
        }
    }
}

impl From<Refusal> for CommitError {
    fn from(r: Refusal) -> Self {
        CommitError::Conflict(r.to_string())
    }
}

/// One step of a read-write transaction at a group's leader (see `meridian.proto`, `TxnRequest`).
#[derive(Debug)]
pub enum TxnOp {
    /// Shared locks on spans (a locking read); answered when granted.
    LockShared { spans: Vec<Span> },
    /// Exclusive locks on keys (round 1 of two-phase commit); answered when granted.
    LockExclusive { keys: Vec<Vec<u8>> },
    /// Single-group commit.
    Commit { mutations: Vec<Mutation> },
    /// Two-phase commit: participant prepare.
    Prepare {
        reads: Vec<KeyRange>,
        mutations: Vec<Mutation>,
        coordinator: u64,
        participants: Vec<u64>,
    },
    /// Two-phase commit: coordinator commit.
    Decide {
        mutations: Vec<Mutation>,
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
        let floor = state
            .last_assigned
            .max(state.read_floor)
            .max(self.max_applied_ts.0)
            .saturating_add(1);
        let ts = tt
            .now()
            .latest
            .max(Timestamp(floor))
            .max(Timestamp(at_least));
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
    fn start_serving(&mut self) {
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
                tracing::error!(group = desc.group, error = %e, "opening replica");
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
                let voters: Vec<ServerId> = desc.peers.iter().map(|p| ServerId(*p)).collect();
                match creation {
                    Creation::Bootstrap => group::write_initial_state(id, &voters, 0, &mut b),
                    Creation::Join => group::write_uninitialized_state(id, &mut b),
                    Creation::Existing => {}
                }
            }
            engine.write(b, true).map_err(|e| e.to_string())?;
        }
        let peers: Vec<ServerId> = desc.peers.iter().map(|p| ServerId(*p)).collect();
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
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + SWEEP_INTERVAL;
            }
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
            // Leases start and end with time, not only with Raft activity.
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
                    new_group,
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

    /// Runs a transaction step at a leader, or parks it until its locks are granted.
    fn txn(&mut self, call: TxnCall) {
        let group = call.group;
        let r = match serving_leader(&mut self.replicas, group) {
            Ok(r) => r,
            Err(e) => {
                let _ = call.reply.send(Err(e));
                return;
            }
        };
        let range = &r.shared.desc.range;
        let in_range = match &call.op {
            TxnOp::LockShared { spans } => spans.iter().all(|s| range.covers(&s.start, &s.end)),
            TxnOp::LockExclusive { keys } => keys.iter().all(|k| range.contains(k)),
            TxnOp::Prepare {
                mutations, reads, ..
            } => {
                tablet::all_in_range(range, mutations)
                    && reads.iter().all(|s| range.covers(&s.start, &s.end))
            }
            TxnOp::Commit { mutations } | TxnOp::Decide { mutations, .. } => {
                tablet::all_in_range(range, mutations)
            }
            _ => true,
        };
        if !in_range {
            let _ = call.reply.send(Err(CommitError::OutOfRange));
            return;
        }
        let now = Instant::now();
        let (spans, mode) = match &call.op {
            TxnOp::LockShared { spans } => (spans.clone(), LockMode::Shared),
            TxnOp::LockExclusive { keys } => (
                keys.iter().map(|k| Span::point(k)).collect(),
                LockMode::Exclusive,
            ),
            TxnOp::Commit { mutations } => (
                mutations.iter().map(|m| Span::point(&m.key)).collect(),
                LockMode::Exclusive,
            ),
            _ => {
                self.locked_step(call, now);
                return;
            }
        };
        let (result, effects) = r.locks.acquire(
            call.txn.id,
            call.txn.lock_priority(),
            spans,
            mode,
            call.waiter,
            now,
        );
        match result {
            Ok(Acquired::Granted { .. }) => self.locked_step(call, now),
            Ok(Acquired::Waiting) => {
                r.waiting.insert(call.waiter, call);
            }
            Err(refusal) => {
                let _ = call.reply.send(Err(refusal.into()));
            }
        }
        self.answer_lock_effects(group, effects);
    }

    /// Continues a transaction step whose locks (if it needed any) are held.
    fn locked_step(&mut self, call: TxnCall, now: Instant) {
        let tt = self.config.tt.clone();
        let group = call.group;
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        let txn = call.txn.id;
        // The epoch the transaction's locks are held under here, if it still holds them.
        let held = r.locks.check(txn, now);
        let epoch_ok = |held: &Result<u64, Refusal>| -> Result<u64, CommitError> {
            match held {
                Ok(e) if call.epoch == 0 || call.epoch == *e => Ok(*e),
                Ok(_) => Err(Refusal::Lost.into()),
                Err(refusal) => Err(refusal.clone().into()),
            }
        };
        let needs_clock = matches!(
            call.op,
            TxnOp::Commit { .. } | TxnOp::Prepare { .. } | TxnOp::Decide { .. }
        );
        if needs_clock {
            // A step that proposes a commit or prepare: the clock must justify a timestamp, the
            // locks must still be the ones the transaction took, and from here on nothing may
            // wound it. Otherwise it ends here and gives its locks back.
            let ready = tt
                .check_usable()
                .map_err(|e| CommitError::ClockUncertain(e.to_string()))
                .and_then(|()| epoch_ok(&held))
                .and_then(|_| r.locks.mark_prepared(txn).map_err(CommitError::from));
            if let Err(e) = ready {
                let effects = r.locks.release(txn);
                let decide = matches!(call.op, TxnOp::Decide { .. });
                let _ = call.reply.send(Err(e));
                self.answer_lock_effects(group, effects);
                if decide {
                    // The coordinator logs the abort, so that participants asking later learn
                    // it rather than waiting for a decision that never comes.
                    self.propose_abort_decision(group, txn, None);
                }
                return;
            }
        }
        let (command, kind, ts) = match call.op {
            TxnOp::LockShared { .. } | TxnOp::LockExclusive { .. } | TxnOp::Heartbeat => {
                let answer = epoch_ok(&held).map(|epoch| TxnAnswer {
                    epoch,
                    ..Default::default()
                });
                let _ = call.reply.send(answer);
                return;
            }
            TxnOp::Finish { abort } => {
                if abort && r.records.prepared.contains_key(&txn) {
                    let command = Command::Resolve {
                        proposal: self.next_proposal,
                        txn,
                        commit: false,
                        ts: 0,
                    };
                    (command, ProposalKind::Abort, None)
                } else if abort || r.records.prepared.contains_key(&txn) {
                    // A rollback, or a validation of a transaction already prepared here.
                    let effects = r.locks.release(txn);
                    let _ = call.reply.send(Ok(TxnAnswer::default()));
                    self.answer_lock_effects(group, effects);
                    return;
                } else {
                    let answer = epoch_ok(&held).map(|epoch| TxnAnswer {
                        epoch,
                        ..Default::default()
                    });
                    let effects = r.locks.release(txn);
                    let _ = call.reply.send(answer);
                    self.answer_lock_effects(group, effects);
                    return;
                }
            }
            TxnOp::Commit { mutations } => {
                let ts = r.next_ts(tt.as_ref(), 0);
                let command = Command::Commit {
                    proposal: self.next_proposal,
                    generation: r.shared.desc.generation,
                    ts: ts.0,
                    mutations,
                };
                (command, ProposalKind::Commit, Some(ts))
            }
            TxnOp::Prepare {
                reads,
                mutations,
                coordinator,
                participants,
            } => {
                let ts = r.next_ts(tt.as_ref(), 0);
                let record = PreparedRecord {
                    txn: call.txn,
                    prepare_ts: ts.0,
                    coordinator,
                    participants,
                    reads,
                    mutations,
                };
                let command = Command::Prepare {
                    proposal: self.next_proposal,
                    generation: r.shared.desc.generation,
                    record,
                };
                (command, ProposalKind::Prepare, Some(ts))
            }
            TxnOp::Decide {
                mutations,
                participants,
                min_ts,
            } => {
                let ts = r.next_ts(tt.as_ref(), min_ts.saturating_add(1));
                let command = Command::Decide {
                    proposal: self.next_proposal,
                    generation: r.shared.desc.generation,
                    txn,
                    commit: true,
                    ts: ts.0,
                    mutations,
                    participants,
                    decided_at_ms: wall_ms(),
                };
                (command, ProposalKind::Decide, Some(ts))
            }
            TxnOp::Resolve { commit, ts } => {
                if !r.records.prepared.contains_key(&txn) {
                    let _ = call.reply.send(Ok(TxnAnswer::default()));
                    return;
                }
                r.assigned_at_least(ts);
                let command = Command::Resolve {
                    proposal: self.next_proposal,
                    txn,
                    commit,
                    ts,
                };
                (command, ProposalKind::Resolve, None)
            }
            TxnOp::Status => {
                if let Some(d) = r.records.decisions.get(&txn) {
                    let _ = call.reply.send(Ok(decision_answer(d.commit, d.ts)));
                    return;
                }
                // The locks go when the abort applies: a commit decision already in flight
                // would win, and must keep them until then.
                self.propose_abort_decision(group, txn, Some(call.reply));
                return;
            }
            TxnOp::Forget => {
                let command = Command::Forget {
                    proposal: self.next_proposal,
                    txn,
                };
                (command, ProposalKind::Forget, None)
            }
        };
        self.propose(group, command, kind, txn, ts, call.reply);
    }

    /// Logs an abort decision for `txn` at coordinator `group`.
    fn propose_abort_decision(&mut self, group: GroupId, txn: u64, reply: Option<TxnReply>) {
        let command = Command::Decide {
            proposal: self.next_proposal,
            generation: 0,
            txn,
            commit: false,
            ts: 0,
            mutations: Vec::new(),
            participants: Vec::new(),
            decided_at_ms: wall_ms(),
        };
        let reply = reply.unwrap_or_else(|| oneshot::channel().0);
        self.propose(group, command, ProposalKind::Status, txn, None, reply);
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

    /// Answers the waiting steps a lock-table call granted or refused.
    fn answer_lock_effects(&mut self, group: GroupId, effects: Effects) {
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        for (waiter, refusal) in effects.refused {
            if let Some(call) = r.waiting.remove(&waiter) {
                let _ = call.reply.send(Err(refusal.into()));
            }
        }
        if !effects.wounded.is_empty() {
            tracing::debug!(group = group.0, wounded = ?effects.wounded, "wound-wait");
        }
        let granted: Vec<TxnCall> = effects
            .granted
            .into_iter()
            .filter_map(|(waiter, _)| r.waiting.remove(&waiter))
            .collect();
        let now = Instant::now();
        for call in granted {
            self.locked_step(call, now);
        }
    }

    /// Releases the locks of commits whose timestamp has now surely passed.
    fn release_deferred(&mut self) {
        let tt = self.config.tt.clone();
        let groups: Vec<GroupId> = self
            .replicas
            .iter()
            .filter(|(_, r)| !r.deferred.is_empty())
            .map(|(g, _)| *g)
            .collect();
        for group in groups {
            let Some(r) = self.replicas.get_mut(&group) else {
                continue;
            };
            let mut effects = Effects::default();
            let mut keep = Vec::new();
            for (ts, txn) in std::mem::take(&mut r.deferred) {
                if tt.after(ts) {
                    merge(&mut effects, r.locks.release(txn));
                } else {
                    keep.push((ts, txn));
                }
            }
            r.deferred = keep;
            self.answer_lock_effects(group, effects);
        }
    }

    /// Acquires the lease for every caught-up leader that lacks it, and renews leases at
    /// half-life.
    fn maintain_leases(&mut self) {
        let tt = self.config.tt.clone();
        let duration = self.config.lease;
        let now = Instant::now();
        let mut proposals = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            if !r.caught_up_leader() || r.releasing {
                continue;
            }
            if r.lease_proposed
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
            {
                continue;
            }
            let clock = tt.now();
            let mine = r.lease.holder == self.config.server.0 && r.lease.term == r.group.term();
            let expiration = clock.latest.0.saturating_add(duration.as_nanos() as u64);
            let lease = if mine {
                let remaining = r.lease.expiration.saturating_sub(clock.latest.0);
                if remaining > (duration / 2).as_nanos() as u64 {
                    continue;
                }
                Lease {
                    expiration,
                    ..r.lease.clone()
                }
            } else {
                Lease {
                    holder: self.config.server.0,
                    term: r.group.term(),
                    expiration,
                    // The previous lease, whoever held it, must surely be over first.
                    start_after: r.lease.expiration.max(r.lease.start_after),
                }
            };
            r.lease_proposed = Some(now);
            proposals.push((*id, lease));
        }
        for (group, lease) in proposals {
            let command = Command::Lease {
                proposal: self.next_proposal,
                lease,
            };
            self.propose(
                group,
                command,
                ProposalKind::Lease,
                0,
                None,
                oneshot::channel().0,
            );
        }
    }

    /// Proposes a membership change. The log is compacted to the applied index first, so an
    /// added replica (which starts empty) is brought up by a snapshot.
    fn change_members(
        &mut self,
        group: GroupId,
        add: &[ServerId],
        remove: &[ServerId],
        reply: TxnReply,
    ) {
        let r = match serving_leader(&mut self.replicas, group) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if r.pending_conf.is_some() || !r.group.conf_state().voters_outgoing.is_empty() {
            let _ = reply.send(Err(CommitError::Unavailable(
                "a membership change is already in progress".into(),
            )));
            return;
        }
        let (_, applied) = r.group.log_span();
        let mut batch = WriteBatch::new();
        if let Err(e) = r.group.compact(applied, &mut batch) {
            let _ = reply.send(Err(CommitError::Internal(e.to_string())));
            return;
        }
        if let Err(e) = self.config.engine.write(batch, false) {
            let _ = reply.send(Err(CommitError::Internal(e.to_string())));
            return;
        }
        match r.group.propose_change_members(add, remove) {
            Ok(index) => r.pending_conf = Some((index, reply)),
            Err(e) => {
                let _ = reply.send(Err(CommitError::Unavailable(format!(
                    "membership change dropped: {e}"
                ))));
            }
        }
    }

    /// Deletes every trace of replicas whose group removed this server: its log and Raft
    /// state, descriptor, transaction records and the data of its range.
    fn destroy_removed(&mut self) -> Result<(), String> {
        let removed: Vec<GroupId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.removed)
            .map(|(g, _)| *g)
            .collect();
        for id in removed {
            let Some(r) = self.replicas.remove(&id) else {
                continue;
            };
            self.config.registry.write().remove(&id);
            let engine = self.config.engine.as_ref();
            let mut batch = WriteBatch::new();
            let (start, end) = keys::group_range(id);
            batch.delete_range(Cf::Raft, start, end);
            batch.delete(Cf::Meta, keys::replica(id));
            for (start, end) in [keys::prepared_range(id), keys::decisions_range(id)] {
                batch.delete_range(Cf::Meta, start, end);
            }
            let range = &r.shared.desc.range;
            let data_start = crate::storage::mvcc::encode_user_key(&range.start);
            let data_end =
                (!range.end.is_empty()).then(|| crate::storage::mvcc::encode_user_key(&range.end));
            for item in engine.scan(Cf::Data, &data_start, data_end.as_deref()) {
                let (key, _) = item.map_err(|e| e.to_string())?;
                batch.delete(Cf::Data, key);
            }
            engine.write(batch, true).map_err(|e| e.to_string())?;
            tracing::info!(group = id.0, "removed from the group: replica destroyed");
        }
        Ok(())
    }

    /// Gives up every lease this server serves under (graceful shutdown): stops serving at
    /// once and logs a lease that expires now, so the next leader need not wait out the rest.
    fn release_leases(&mut self) -> Vec<oneshot::Receiver<Result<TxnAnswer, CommitError>>> {
        let tt = self.config.tt.clone();
        let mut releases = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            if !r.serving() {
                continue;
            }
            r.releasing = true;
            r.sync_role();
            releases.push((
                *id,
                Lease {
                    holder: 0,
                    term: r.group.term(),
                    expiration: tt.now().latest.0,
                    start_after: r.lease.start_after,
                },
            ));
        }
        let mut waits = Vec::new();
        for (group, lease) in releases {
            let (tx, rx) = oneshot::channel();
            let command = Command::Lease {
                proposal: self.next_proposal,
                lease,
            };
            self.propose(group, command, ProposalKind::Lease, 0, None, tx);
            waits.push(rx);
        }
        waits
    }

    /// Proposes a closed timestamp on every serving leader that has been idle a while.
    fn close_idle_groups(&mut self) {
        let tt = self.config.tt.clone();
        if tt.check_usable().is_err() {
            return;
        }
        let now = Instant::now();
        let idle: Vec<GroupId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.serving() && now.duration_since(r.last_proposal) >= CLOSE_INTERVAL)
            .map(|(g, _)| *g)
            .collect();
        for group in idle {
            let Some(r) = self.replicas.get_mut(&group) else {
                continue;
            };
            let ts = r.next_ts(tt.as_ref(), 0);
            let command = Command::CloseTs {
                proposal: self.next_proposal,
                ts: ts.0,
            };
            self.propose(
                group,
                command,
                ProposalKind::Close,
                0,
                Some(ts),
                oneshot::channel().0,
            );
        }
    }

    /// Transaction housekeeping on every serving leader: wound idle transactions, ask
    /// coordinators about long-prepared ones, finish what a failed coordinator left, and drop
    /// old abort decisions.
    fn sweep(&mut self) {
        let now = Instant::now();
        let groups: Vec<GroupId> = self.replicas.keys().copied().collect();
        for group in groups {
            let Some(r) = self.replicas.get_mut(&group) else {
                continue;
            };
            if !r.serving() {
                continue;
            }
            let effects = r.locks.expire_idle(now, TXN_IDLE_TIMEOUT);
            let mut work = Vec::new();
            for rec in r.records.prepared.values() {
                let since = *r.inquired.entry(rec.txn.id).or_insert(now);
                if now.duration_since(since) >= INQUIRE_AFTER {
                    r.inquired.insert(rec.txn.id, now);
                    work.push(ResolverWork::Inquire {
                        group,
                        coordinator: GroupId(rec.coordinator),
                        txn: rec.txn.id,
                    });
                }
            }
            let mut forget = Vec::new();
            let wall = wall_ms();
            for d in r.records.decisions.values() {
                if !d.commit {
                    if wall.saturating_sub(d.decided_at_ms) > ABORT_DECISION_TTL.as_millis() as u64
                    {
                        forget.push(d.txn);
                    }
                    continue;
                }
                // Commit decisions are pushed by whoever decided them; one still here after a
                // while lost its pusher (a leader change or a failed push): push again.
                let seen = *r.inquired.entry(d.txn).or_insert(now);
                if now.duration_since(seen) >= INQUIRE_AFTER {
                    r.inquired.insert(d.txn, now);
                    work.push(ResolverWork::Push {
                        coordinator: group,
                        txn: d.txn,
                        commit: true,
                        ts: d.ts,
                        participants: d.participants.clone(),
                    });
                }
            }
            r.inquired.retain(|t, _| {
                r.records.prepared.contains_key(t) || r.records.decisions.contains_key(t)
            });
            self.answer_lock_effects(group, effects);
            if let Some(resolver) = &self.config.resolver {
                for w in work {
                    let _ = resolver.send(w);
                }
            }
            for txn in forget {
                let command = Command::Forget {
                    proposal: self.next_proposal,
                    txn,
                };
                self.propose(
                    group,
                    command,
                    ProposalKind::Forget,
                    txn,
                    None,
                    oneshot::channel().0,
                );
            }
        }
    }

    /// One round of Raft work for every group: persist, send, apply, answer.
    fn process_ready(&mut self) -> Result<(), String> {
        let mut committed: Vec<(GroupId, Vec<Entry>)> = Vec::new();
        let started = self.persist_ready(&mut committed)?;
        if started.is_empty() {
            return Ok(());
        }
        let mut apply_batch = WriteBatch::new();
        for id in &started {
            let Some(r) = self.replicas.get_mut(id) else {
                continue;
            };
            let out = r
                .group
                .finish_ready(&mut apply_batch)
                .map_err(|e| e.to_string())?;
            self.config.transport.send_all(*id, out.messages);
            if !out.committed.is_empty() {
                committed.push((*id, out.committed));
            }
        }
        let applied = self.apply_committed(committed, &mut apply_batch)?;
        if !apply_batch.is_empty() {
            self.config
                .engine
                .write(apply_batch, false)
                .map_err(|e| e.to_string())?;
        }
        for id in &started {
            if let Some(r) = self.replicas.get_mut(id) {
                r.group.advance_apply();
            }
        }
        self.answer_proposers(applied);
        for r in self.replicas.values_mut() {
            r.sync_role();
        }
        self.destroy_removed()?;
        self.maintain_logs()
    }

    /// Phase 1 for every group with work: their new entries and hard states go into one batch,
    /// written with one fsync. Returns the groups that took part.
    fn persist_ready(
        &mut self,
        committed: &mut Vec<(GroupId, Vec<Entry>)>,
    ) -> Result<Vec<GroupId>, String> {
        let mut persist = WriteBatch::new();
        let mut started = Vec::new();
        let mut installed = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            if !r.group.has_ready() {
                continue;
            }
            let out = r
                .group
                .start_ready(&mut persist)
                .map_err(|e| e.to_string())?;
            if let Some(snap) = &out.snapshot {
                // The state machine is replaced in the same durable batch as the log.
                let index = snap.get_metadata().index;
                let data = tablet::snapshot::install(
                    self.config.engine.as_ref(),
                    snap.get_data(),
                    index,
                    &mut persist,
                )
                .map_err(|e| format!("installing a snapshot of {id}: {e}"))?;
                installed.push((*id, index, data));
            }
            self.config.transport.send_all(*id, out.messages);
            if !out.committed.is_empty() {
                committed.push((*id, out.committed));
            }
            started.push(*id);
        }
        if !persist.is_empty() {
            self.config
                .engine
                .write(persist, true)
                .map_err(|e| e.to_string())?;
        }
        for (id, index, data) in installed {
            self.after_snapshot(id, index, data)?;
        }
        Ok(started)
    }

    /// After a snapshot is durable: the replica's in-memory state follows it.
    fn after_snapshot(
        &mut self,
        id: GroupId,
        index: u64,
        data: tablet::snapshot::SnapshotData,
    ) -> Result<(), String> {
        let Some(r) = self.replicas.get_mut(&id) else {
            return Ok(());
        };
        r.records = TxnRecords::load(self.config.engine.as_ref(), id)?;
        r.lease = data.lease;
        r.applied_index = index;
        r.max_applied_ts = r.max_applied_ts.max(Timestamp(data.max_applied_ts));
        r.inquired.clear();
        let shared = Arc::new(r.shared.with_desc(data.desc));
        shared
            .max_applied_ts
            .store(r.max_applied_ts.0, Ordering::Release);
        shared.applied_index.store(index, Ordering::Release);
        shared
            .min_prepared_ts
            .store(r.records.min_prepare_ts(), Ordering::Release);
        self.config.registry.write().insert(id, shared.clone());
        r.shared = shared;
        tracing::info!(group = id.0, index, "installed a snapshot");
        Ok(())
    }

    /// Compacts logs that have grown long behind their applied index, and builds the
    /// snapshots leaders were asked for.
    fn maintain_logs(&mut self) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        for (id, r) in self.replicas.iter_mut() {
            let (first, applied) = r.group.log_span();
            if applied >= first + COMPACT_AFTER {
                r.group
                    .compact(applied - LOG_KEEP, &mut batch)
                    .map_err(|e| e.to_string())?;
            }
            if r.group.wants_snapshot() {
                let data = tablet::snapshot::build(
                    self.config.engine.as_ref(),
                    &r.shared.desc,
                    &r.records,
                    &r.lease,
                    r.max_applied_ts.0,
                )?;
                tracing::info!(
                    group = id.0,
                    applied,
                    bytes = data.len(),
                    "built a snapshot"
                );
                r.group.offer_snapshot(data).map_err(|e| e.to_string())?;
            }
        }
        if !batch.is_empty() {
            self.config
                .engine
                .write(batch, false)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Adds the effects of every committed entry, and each group's applied index, to `batch`.
    fn apply_committed(
        &mut self,
        committed: Vec<(GroupId, Vec<Entry>)>,
        batch: &mut WriteBatch,
    ) -> Result<Vec<(GroupId, Vec<AppliedEntry>)>, String> {
        let mut applied = Vec::new();
        for (id, entries) in committed {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            let mut done = Vec::new();
            for e in entries {
                r.applied_index = e.index;
                // A new leader's empty entry carries nothing; an empty configuration change
                // does (it leaves a joint configuration).
                if e.data.is_empty() && e.get_entry_type() == EntryType::EntryNormal {
                    continue;
                }
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        let cmd = Command::decode(&e.data).map_err(|err| {
                            format!("undecodable command at {id} index {}: {err}", e.index)
                        })?;
                        let desc = r.shared.desc.clone();
                        let result = tablet::apply(&desc, &mut r.records, batch, &cmd);
                        if let (Applied::Split { right, .. }, Command::Split { floor, .. }) =
                            (&result, &cmd)
                        {
                            // The new group starts from its initial state with this group's
                            // voters, above every timestamp this one applied.
                            let voters: Vec<ServerId> = r
                                .group
                                .conf_state()
                                .voters
                                .iter()
                                .map(|v| ServerId(*v))
                                .collect();
                            group::write_initial_state(
                                right.group_id(),
                                &voters,
                                r.max_applied_ts.0.max(*floor),
                                batch,
                            );
                        }
                        let ts = match (&cmd, &result) {
                            (_, Applied::Committed { ts })
                            | (_, Applied::Prepared { ts })
                            | (_, Applied::Closed { ts }) => *ts,
                            _ => 0,
                        };
                        r.max_applied_ts = r.max_applied_ts.max(Timestamp(ts));
                        let resolved = match &cmd {
                            Command::Resolve { txn, .. } => Some(*txn),
                            _ => None,
                        };
                        done.push(AppliedEntry {
                            proposal: cmd.proposal(),
                            index: e.index,
                            result,
                            resolved,
                        });
                    }
                    EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                        let cs = r
                            .group
                            .apply_conf_change(&e, batch)
                            .map_err(|err| format!("configuration change of {id}: {err}"))?;
                        let mut peers: Vec<u64> = cs
                            .voters
                            .iter()
                            .chain(cs.voters_outgoing.iter())
                            .copied()
                            .collect();
                        peers.sort_unstable();
                        peers.dedup();
                        let removed = !peers.contains(&self.config.server.0)
                            && !cs.learners.contains(&self.config.server.0);
                        let desc = ReplicaDescriptor {
                            peers,
                            ..r.shared.desc.clone()
                        };
                        batch.put(
                            Cf::Meta,
                            keys::replica(id),
                            bincode::serialize(&desc).map_err(|e| e.to_string())?,
                        );
                        tracing::info!(group = id.0, voters = ?cs.voters, outgoing = ?cs.voters_outgoing, "configuration changed");
                        let shared = Arc::new(r.shared.with_desc(desc));
                        self.config.registry.write().insert(id, shared.clone());
                        r.shared = shared;
                        if let Some((index, reply)) = r.pending_conf.take() {
                            if e.index >= index {
                                let _ = reply.send(Ok(TxnAnswer::default()));
                            } else {
                                r.pending_conf = Some((index, reply));
                            }
                        }
                        if removed {
                            r.removed = true;
                        }
                    }
                }
            }
            let mut value = r.applied_index.to_be_bytes().to_vec();
            value.extend_from_slice(&r.max_applied_ts.0.to_be_bytes());
            batch.put(Cf::Raft, keys::applied_index(id), value);
            applied.push((id, done));
        }
        Ok(applied)
    }

    /// After the applies are visible: publish them, release locks and answer waiting proposers.
    fn answer_proposers(&mut self, applied: Vec<(GroupId, Vec<AppliedEntry>)>) {
        for (id, done) in applied {
            // Splits first, so that whoever hears a split applied finds the new group open.
            for c in &done {
                if let Applied::Split { left, right } = &c.result {
                    self.finish_split(id, left.clone(), right.clone());
                }
            }
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            r.shared
                .max_applied_ts
                .store(r.max_applied_ts.0, Ordering::Release);
            r.shared
                .applied_index
                .store(r.applied_index, Ordering::Release);
            r.shared
                .min_prepared_ts
                .store(r.records.min_prepare_ts(), Ordering::Release);
            let mut effects = Effects::default();
            for c in done {
                if let Applied::Lease(lease) = &c.result {
                    r.lease = lease.clone();
                    r.lease_proposed = None;
                }
                // A resolution ends the transaction here, whoever proposed it.
                if let Some(txn) = c.resolved {
                    r.inquired.remove(&txn);
                    match c.result {
                        Applied::Committed { ts } => r.deferred.push((Timestamp(ts), txn)),
                        _ => merge(&mut effects, r.locks.release(txn)),
                    }
                }
                let ours = r
                    .pending
                    .get(&c.proposal)
                    .is_some_and(|p| p.index == c.index);
                let Some(p) = ours.then(|| r.pending.remove(&c.proposal)).flatten() else {
                    continue;
                };
                let point = match (p.kind, &c.result) {
                    (ProposalKind::Prepare, _) => Some(failpoints::PARTICIPANT_AFTER_PREPARE),
                    (ProposalKind::Decide, Applied::Committed { .. }) => {
                        Some(failpoints::COORDINATOR_AFTER_DECIDE)
                    }
                    _ => None,
                };
                if point.is_some_and(|name| self.config.failpoints.fire(name)) {
                    self.crashed = true;
                    return;
                }
                let answer = match (p.kind, &c.result) {
                    (ProposalKind::Commit | ProposalKind::Decide, Applied::Committed { ts }) => {
                        r.deferred.push((Timestamp(*ts), p.txn));
                        Ok(decision_answer(true, *ts))
                    }
                    (ProposalKind::Decide, _) => {
                        merge(&mut effects, r.locks.release(p.txn));
                        Err(CommitError::Conflict(
                            "the coordinator had already decided to abort".into(),
                        ))
                    }
                    (_, Applied::Refused(m)) => {
                        r.shared.split_floor.store(u64::MAX, Ordering::Release);
                        merge(&mut effects, r.locks.release(p.txn));
                        Err(CommitError::Conflict(m.clone()))
                    }
                    (ProposalKind::Split, Applied::Split { .. } | Applied::Noop) => {
                        r.shared.split_floor.store(u64::MAX, Ordering::Release);
                        Ok(TxnAnswer::default())
                    }
                    (ProposalKind::Lease, Applied::Lease(_)) => Ok(TxnAnswer::default()),
                    (ProposalKind::Prepare, Applied::Noop) => {
                        match r.records.prepared.get(&p.txn) {
                            Some(rec) => Ok(TxnAnswer {
                                ts: rec.prepare_ts,
                                ..Default::default()
                            }),
                            None => Err(CommitError::Internal("a prepare vanished".into())),
                        }
                    }
                    (ProposalKind::Prepare, Applied::Prepared { ts }) => Ok(TxnAnswer {
                        ts: *ts,
                        ..Default::default()
                    }),
                    (ProposalKind::Status, Applied::Committed { ts }) => {
                        Ok(decision_answer(true, *ts))
                    }
                    (ProposalKind::Status, _) => {
                        merge(&mut effects, r.locks.release(p.txn));
                        Ok(decision_answer(false, 0))
                    }
                    (
                        ProposalKind::Resolve
                        | ProposalKind::Abort
                        | ProposalKind::Forget
                        | ProposalKind::Close,
                        _,
                    ) => Ok(TxnAnswer::default()),
                    (kind, result) => Err(CommitError::Internal(format!(
                        "{kind:?} applied as {result:?}"
                    ))),
                };
                let _ = p.reply.send(answer);
            }
            // Proposals whose index was applied with another entry were overwritten: they can
            // never commit, so the transaction is safe to retry.
            let applied_index = r.applied_index;
            let lost: Vec<u64> = r
                .pending
                .iter()
                .filter(|(_, p)| p.index <= applied_index)
                .map(|(k, _)| *k)
                .collect();
            for proposal in lost {
                if let Some(p) = r.pending.remove(&proposal) {
                    merge(&mut effects, r.locks.release(p.txn));
                    let _ = p.reply.send(Err(CommitError::Conflict(
                        "proposal lost to a leader change".into(),
                    )));
                }
            }
            self.answer_lock_effects(id, effects);
        }
    }

    /// After a split applied (its descriptors are durable): the parent takes its new range and
    /// the new group opens here. A leader of the parent drops every transaction's locks (they
    /// may cover the moved part; those transactions abort and retry).
    fn finish_split(&mut self, parent: GroupId, left: ReplicaDescriptor, right: ReplicaDescriptor) {
        let Some(r) = self.replicas.get_mut(&parent) else {
            return;
        };
        let shared = Arc::new(r.shared.with_desc(left));
        self.config.registry.write().insert(parent, shared.clone());
        r.shared = shared;
        let was_serving = r.serving();
        if was_serving {
            for (_, call) in r.waiting.drain() {
                let _ = call
                    .reply
                    .send(Err(CommitError::Conflict("the tablet was split".into())));
            }
            r.locks.clear();
            r.start_serving();
        }
        let right_id = right.group_id();
        let right_peers = right.peers.clone();
        if let Err(e) = self.open_replica(right, Creation::Existing) {
            tracing::error!(group = right_id.0, error = %e, "opening the right half of a split");
            return;
        }
        // One replica campaigns at once rather than waiting out an election timeout; which one
        // depends on the new group's id, so successive splits spread leadership over the
        // replicas instead of piling it on the parent's leader.
        let mut peers = right_peers;
        peers.sort_unstable();
        let chosen = peers.get((right_id.0 % peers.len().max(1) as u64) as usize);
        if chosen == Some(&self.config.server.0) {
            if let Some(child) = self.replicas.get_mut(&right_id) {
                let _ = child.group.campaign();
            }
        }
        tracing::info!(parent = parent.0, child = right_id.0, "split applied");
    }
}

/// The replica of `group` if it serves as leader now, else the error telling the caller where
/// to go or when to come back.
fn serving_leader(
    replicas: &mut BTreeMap<GroupId, Replica>,
    group: GroupId,
) -> Result<&mut Replica, CommitError> {
    let Some(r) = replicas.get_mut(&group) else {
        return Err(CommitError::Unavailable(format!(
            "no replica of {group} here"
        )));
    };
    if r.serving() {
        return Ok(r);
    }
    Err(if r.caught_up_leader() {
        CommitError::Unavailable("new leader waiting for its lease".into())
    } else if r.group.is_leader() {
        CommitError::Unavailable("new leader still applying earlier terms".into())
    } else {
        CommitError::NotLeader(r.group.leader())
    })
}

/// An entry that was just applied.
struct AppliedEntry {
    proposal: u64,
    index: u64,
    result: Applied,
    /// The transaction a `Resolve` ended.
    resolved: Option<u64>,
}

fn decision_answer(commit: bool, ts: u64) -> TxnAnswer {
    TxnAnswer {
        epoch: 0,
        ts,
        outcome: if commit {
            Outcome::Committed
        } else {
            Outcome::Aborted
        },
    }
}

fn merge(into: &mut Effects, from: Effects) {
    into.granted.extend(from.granted);
    into.refused.extend(from.refused);
    into.wounded.extend(from.wounded);
}

/// Wall-clock milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
