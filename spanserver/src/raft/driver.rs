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
use std::time::Instant;

use meridian_truetime::{Timestamp, TrueTime};
use parking_lot::RwLock;
use raft::prelude::{Entry, EntryType, Message};
use tokio::sync::oneshot;

use super::group::{RaftGroup, TICK_INTERVAL};
use super::keys;
use super::transport::Transport;
use super::{GroupId, ServerId};
use crate::storage::engine::{Cf, Engine, WriteBatch};
use crate::tablet::locks::LockTable;
use crate::tablet::{self, Command, CommitRequest, ReplicaDescriptor, ValidationError};

/// Why a commit did not happen, grouped by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Retry at the leader, if one is known.
    #[error("not leader (leader: {0:?})")]
    NotLeader(Option<ServerId>),
    /// Retry shortly (no replica here yet, leader still catching up).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The transaction conflicted and was not committed: retry it whole.
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

/// Reply channel for a commit: the commit timestamp once applied.
pub type CommitReply = oneshot::Sender<Result<Timestamp, CommitError>>;

/// Work sent to the driver thread.
pub enum Event {
    /// A Raft message from a peer.
    Raft(GroupId, Message),
    /// Validate and commit a single-group transaction.
    Commit {
        group: GroupId,
        request: CommitRequest,
        reply: CommitReply,
    },
    /// Host a replica (idempotent).
    CreateReplica {
        desc: ReplicaDescriptor,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Stop the thread.
    Shutdown,
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
}

/// The replicas a server hosts, readable from any thread.
pub type Registry = Arc<RwLock<HashMap<GroupId, Arc<ReplicaShared>>>>;

/// A handle for sending work to the driver thread.
#[derive(Clone)]
pub struct DriverHandle {
    tx: Sender<Event>,
}

impl DriverHandle {
    /// Sends `event`; false if the driver has stopped.
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(event).is_ok()
    }
}

struct Pending {
    index: u64,
    keys: Vec<Vec<u8>>,
    ts: Timestamp,
    reply: CommitReply,
}

struct Replica {
    group: RaftGroup,
    shared: Arc<ReplicaShared>,
    locks: LockTable,
    last_assigned: Timestamp,
    max_applied_ts: Timestamp,
    applied_index: u64,
    pending: HashMap<u64, Pending>,
    was_leader: bool,
}

impl Replica {
    fn serving(&self) -> bool {
        self.group.is_leader()
            && self
                .group
                .term_start_index()
                .is_some_and(|i| self.applied_index >= i)
    }

    /// Publishes leadership to other threads; on losing it, drops locks and fails waiters.
    fn sync_role(&mut self) {
        let leader = self.group.is_leader();
        if self.was_leader && !leader {
            self.locks.clear();
            for (_, p) in self.pending.drain() {
                let _ = p.reply.send(Err(CommitError::Ambiguous(
                    "leadership changed while the commit was in flight".into(),
                )));
            }
        }
        self.was_leader = leader;
        let s = &self.shared;
        s.is_leader.store(leader, Ordering::Release);
        s.serving.store(self.serving(), Ordering::Release);
        s.leader
            .store(self.group.leader().map_or(0, |l| l.0), Ordering::Release);
        s.term.store(self.group.term(), Ordering::Release);
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
}

/// Opens every replica recorded in the engine and starts the driver thread.
pub fn start(config: DriverConfig) -> std::io::Result<(DriverHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut driver = DriverLoop {
        config,
        replicas: BTreeMap::new(),
        rx,
        next_proposal: 1,
    };
    driver.open_existing();
    let handle = std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || driver.run())?;
    Ok((DriverHandle { tx }, handle))
}

struct DriverLoop {
    config: DriverConfig,
    replicas: BTreeMap<GroupId, Replica>,
    rx: Receiver<Event>,
    next_proposal: u64,
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
            if let Err(e) = self.open_replica(desc.clone(), false) {
                tracing::error!(group = desc.group, error = %e, "opening replica");
            }
        }
    }

    fn open_replica(&mut self, desc: ReplicaDescriptor, new: bool) -> Result<(), String> {
        let id = desc.group_id();
        if self.replicas.contains_key(&id) {
            return Ok(());
        }
        let engine = &self.config.engine;
        if new {
            let mut b = WriteBatch::new();
            let bytes = bincode::serialize(&desc).map_err(|e| e.to_string())?;
            b.put(Cf::Meta, keys::replica(id), bytes);
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
        if new && peers.first() == Some(&self.config.server) {
            // Skip the first election timeout on a brand-new group.
            let _ = group.campaign();
        }
        let shared = Arc::new(ReplicaShared {
            desc: desc.clone(),
            serving: AtomicBool::new(false),
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            is_leader: AtomicBool::new(false),
            max_applied_ts: AtomicU64::new(max_applied_ts),
            applied_index: AtomicU64::new(applied_index),
        });
        self.config.registry.write().insert(id, shared.clone());
        tracing::info!(group = id.0, peers = ?desc.peers, applied_index, "replica opened");
        self.replicas.insert(
            id,
            Replica {
                group,
                shared,
                locks: LockTable::default(),
                last_assigned: Timestamp(max_applied_ts),
                max_applied_ts: Timestamp(max_applied_ts),
                applied_index,
                pending: HashMap::new(),
                was_leader: false,
            },
        );
        Ok(())
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
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
            if let Err(e) = self.process_ready() {
                // A storage failure here means the disk is gone; continuing could ack writes
                // that are not durable.
                tracing::error!(error = %e, "raft driver cannot persist; stopping the server");
                std::process::exit(70);
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
            Event::Commit {
                group,
                request,
                reply,
            } => self.propose_commit(group, request, reply),
            Event::CreateReplica { desc, reply } => {
                let result = self.open_replica(desc, true);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Event::Shutdown => {}
        }
    }

    fn propose_commit(&mut self, group: GroupId, request: CommitRequest, reply: CommitReply) {
        let Some(r) = self.replicas.get_mut(&group) else {
            let _ = reply.send(Err(CommitError::Unavailable(format!(
                "no replica of {group} here"
            ))));
            return;
        };
        if !r.serving() {
            let err = if r.group.is_leader() {
                CommitError::Unavailable("new leader still applying earlier terms".into())
            } else {
                CommitError::NotLeader(r.group.leader())
            };
            let _ = reply.send(Err(err));
            return;
        }
        if let Err(e) = self.config.tt.check_usable() {
            let _ = reply.send(Err(CommitError::ClockUncertain(e.to_string())));
            return;
        }
        let engine = self.config.engine.as_ref();
        if let Err(e) = tablet::validate(engine, &r.shared.desc.range, &r.locks, &request) {
            let err = match e {
                ValidationError::OutOfRange => CommitError::OutOfRange,
                ValidationError::Engine(e) => CommitError::Internal(e),
                other => CommitError::Conflict(other.to_string()),
            };
            let _ = reply.send(Err(err));
            return;
        }
        let floor = r.last_assigned.max(r.max_applied_ts).next();
        let ts = self.config.tt.now().latest.max(floor);
        let proposal = self.next_proposal;
        self.next_proposal += 1;
        let keys: Vec<Vec<u8>> = request.mutations.iter().map(|m| m.key.clone()).collect();
        let command = Command::Commit {
            proposal,
            ts: ts.0,
            mutations: request.mutations,
        };
        match r.group.propose(command.encode()) {
            Ok(index) => {
                r.last_assigned = ts;
                r.locks.lock(keys.iter().cloned(), proposal);
                r.pending.insert(
                    proposal,
                    Pending {
                        index,
                        keys,
                        ts,
                        reply,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(CommitError::Unavailable(format!(
                    "proposal dropped: {e}"
                ))));
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
        Ok(())
    }

    /// Phase 1 for every group with work: their new entries and hard states go into one batch,
    /// written with one fsync. Returns the groups that took part.
    fn persist_ready(
        &mut self,
        committed: &mut Vec<(GroupId, Vec<Entry>)>,
    ) -> Result<Vec<GroupId>, String> {
        let mut persist = WriteBatch::new();
        let mut started = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            if !r.group.has_ready() {
                continue;
            }
            let out = r
                .group
                .start_ready(&mut persist)
                .map_err(|e| e.to_string())?;
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
        Ok(started)
    }

    /// Adds the effects of every committed entry, and each group's applied index, to `batch`.
    fn apply_committed(
        &mut self,
        committed: Vec<(GroupId, Vec<Entry>)>,
        batch: &mut WriteBatch,
    ) -> Result<Vec<(GroupId, Vec<AppliedCommit>)>, String> {
        let mut applied = Vec::new();
        for (id, entries) in committed {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            let mut done = Vec::new();
            for e in entries {
                r.applied_index = e.index;
                if e.data.is_empty() {
                    continue;
                }
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        let cmd = Command::decode(&e.data).map_err(|err| {
                            format!("undecodable command at {id} index {}: {err}", e.index)
                        })?;
                        tablet::apply(batch, &cmd);
                        let Command::Commit { proposal, ts, .. } = cmd;
                        r.max_applied_ts = r.max_applied_ts.max(Timestamp(ts));
                        done.push(AppliedCommit {
                            proposal,
                            index: e.index,
                            ts: Timestamp(ts),
                        });
                    }
                    other => {
                        tracing::warn!(group = id.0, entry_type = ?other, "ignoring configuration change entry");
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
    fn answer_proposers(&mut self, applied: Vec<(GroupId, Vec<AppliedCommit>)>) {
        for (id, done) in applied {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            r.shared
                .max_applied_ts
                .store(r.max_applied_ts.0, Ordering::Release);
            r.shared
                .applied_index
                .store(r.applied_index, Ordering::Release);
            for c in done {
                let ours = r
                    .pending
                    .get(&c.proposal)
                    .is_some_and(|p| p.index == c.index && p.ts == c.ts);
                if let Some(p) = ours.then(|| r.pending.remove(&c.proposal)).flatten() {
                    r.locks.release(&p.keys, c.proposal);
                    let _ = p.reply.send(Ok(c.ts));
                }
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
                    r.locks.release(&p.keys, proposal);
                    let _ = p.reply.send(Err(CommitError::Conflict(
                        "proposal lost to a leader change".into(),
                    )));
                }
            }
        }
    }
}

/// A commit entry that was just applied.
struct AppliedCommit {
    proposal: u64,
    index: u64,
    ts: Timestamp,
}
