//! The lock table of a tablet's Raft-group leader: the shared and exclusive locks that
//! read-write transactions hold on key spans until they commit or abort (Spanner §4.2.1), with
//! wound-wait to settle conflicts.
//!
//! A transaction reads under shared locks and writes under exclusive ones. A lock covers a span
//! `[start, end)`, so a scan's shared lock on its whole range also covers keys that do not exist
//! yet: an insert into a range another transaction scanned conflicts with that scan (no
//! phantoms). Two locks conflict when their spans overlap, they belong to different
//! transactions, and at least one is exclusive.
//!
//! Conflicts are settled by wound-wait on each transaction's [`Priority`] (smaller = older):
//!
//! - An older requester *wounds* every younger, unprepared holder it conflicts with: the holder
//!   loses all its locks at once, its waiting request (if any) is refused, and it becomes a
//!   tombstone, so its later calls get [`Refusal::Wounded`] and it must abort.
//! - A younger requester waits for an older holder, and anyone waits for a prepared holder.
//! - A request that conflicts with an older *waiting* request waits behind it even if no holder
//!   is in the way, so a stream of younger readers cannot starve an older writer.
//! - Whenever locks are freed, waiting requests are re-examined oldest first under the same
//!   rules, and the ones that may go are granted.
//!
//! What this guarantees:
//!
//! - **No two conflicting locks are held at once** (except between transactions installed by
//!   [`LockTable::restore_prepared`], which trusts that they were compatible when prepared).
//! - **No deadlocks, by construction.** A request only waits for an older transaction (holder
//!   or waiter) or for a prepared one, and a prepared transaction never waits: it can take no
//!   new lock, and it cannot prepare while it has a request waiting. So every chain of waits
//!   runs through strictly older transactions and ends, at the latest, at a prepared one.
//! - **A prepared transaction is never wounded or expired**: its locks are held until
//!   [`LockTable::release`] or [`LockTable::clear`], as two-phase commit requires.
//! - **A wounded or expired transaction can take no further lock and cannot prepare**, until
//!   the caller ends it with `release` (or the tombstone ages out in `expire_idle`, after which
//!   the transaction is unknown and a new request starts it afresh under a new epoch).
//!
//! Each live transaction has an *epoch*, handed out when its entry is created: the caller keeps
//! it with the transaction and compares it at prepare/commit, so locks lost to a leader change
//! or an expiry and then silently re-created are noticed (the caller passes an `epoch_base`
//! such as `term << 32` to keep epochs unique across leaderships).
//!
//! The table lives only in the leader's memory and is driven by the leader's single driver
//! thread: it is plain data whose `&mut self` methods return what happened ([`Effects`]),
//! never block, never read a clock (the caller passes `now`) and never panic. A new leader
//! starts from [`LockTable::clear`] and re-installs the locks of transactions its log shows as
//! prepared with [`LockTable::restore_prepared`]; everything else was lost and its owners get
//! [`Refusal::Lost`].
//!
//! Deliberately not here: deciding *what* to lock (the transaction logic), answering RPCs,
//! timers, and persistence.
//!
//! Locks are indexed by span start in two ordered maps: point locks (`[k, k ++ 0x00)`, by far
//! the most common) are found by a range query on the key, and range locks by scanning those
//! that start before the query's end. Waiting requests are few and scanned linearly.

#[cfg(test)]
mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::time::{Duration, Instant};

/// A transaction's identifier, chosen by the caller.
pub type TxnId = u64;

/// Identifies one waiting lock request, chosen by the caller (unique among waiting requests);
/// [`Effects`] names it when the request is finally granted or refused.
pub type WaiterId = u64;

/// Who wins a conflict: smaller is older and wins. Ordered by `(ts, txn)`.
///
/// A transaction keeps the priority of the request that created its entry for as long as the
/// entry lives; priorities passed with its later requests are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority {
    pub ts: u64,
    pub txn: TxnId,
}

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// For reads: compatible with other shared locks.
    Shared,
    /// For writes: conflicts with every other lock.
    Exclusive,
}

impl LockMode {
    fn conflicts_with(self, other: LockMode) -> bool {
        self == LockMode::Exclusive || other == LockMode::Exclusive
    }

    /// True if holding `self` makes also holding `other` on the same span pointless.
    fn subsumes(self, other: LockMode) -> bool {
        self == LockMode::Exclusive || other == LockMode::Shared
    }
}

/// A key span `[start, end)`; an empty `end` means unbounded. A span whose bounded end is not
/// after its start is empty and overlaps nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl Span {
    /// The span holding exactly `key`: `[key, key ++ 0x00)`.
    pub fn point(key: &[u8]) -> Span {
        let start = key.to_vec();
        let mut end = Vec::with_capacity(start.len() + 1);
        end.extend_from_slice(&start);
        end.push(0);
        Span { start, end }
    }

    /// `[start, end)`; an empty `end` means unbounded.
    pub fn range(start: &[u8], end: &[u8]) -> Span {
        Span {
            start: start.to_vec(),
            end: end.to_vec(),
        }
    }

    /// True if this span holds exactly one key.
    pub fn is_point(&self) -> bool {
        self.end.len() == self.start.len() + 1
            && self.end.starts_with(&self.start)
            && self.end.last() == Some(&0)
    }

    /// True if no key lies in this span.
    pub fn is_empty(&self) -> bool {
        !self.end.is_empty() && self.start >= self.end
    }

    /// True if some key lies in both spans.
    pub fn overlaps(&self, other: &Span) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && (self.end.is_empty() || other.start < self.end)
            && (other.end.is_empty() || self.start < other.end)
    }

    /// True if every key of `other` lies in this span.
    pub fn covers(&self, other: &Span) -> bool {
        other.is_empty()
            || (self.start <= other.start
                && (self.end.is_empty() || (!other.end.is_empty() && other.end <= self.end)))
    }
}

/// `[a]` for a point, `[a,c)` for a range, `[a,)` for an unbounded one; bytes outside
/// printable ASCII are escaped.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_point() {
            write!(f, "[{}]", self.start.escape_ascii())
        } else {
            write!(
                f,
                "[{},{})",
                self.start.escape_ascii(),
                self.end.escape_ascii()
            )
        }
    }
}

/// Why a transaction's call was refused. `Wounded` and `Lost` mean the transaction must abort
/// (and may retry); the others are caller bugs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("transaction was wounded by an older transaction")]
    Wounded,
    #[error("transaction's locks were lost (leader change or idle timeout)")]
    Lost,
    #[error("transaction already prepared")]
    AlreadyPrepared,
    #[error("transaction already has a lock request waiting")]
    AlreadyWaiting,
    #[error("waiter id is already used by a waiting lock request")]
    WaiterInUse,
}

/// The result of a lock request that was not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// Every span is locked; `epoch` is the transaction's epoch.
    Granted { epoch: u64 },
    /// The request waits; a later call's [`Effects`] grants or refuses it by its waiter id.
    Waiting,
}

/// What a call changed besides its own result; the caller answers these waiters.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Effects {
    /// Waiting requests that now hold their locks, oldest transaction first.
    pub granted: Vec<(WaiterId, TxnId)>,
    /// Waiting requests that failed: their transaction was wounded, expired or ended.
    pub refused: Vec<(WaiterId, Refusal)>,
    /// Transactions wounded by this call (for `expire_idle`: expired by it). Each lost every
    /// lock and is now a tombstone.
    pub wounded: Vec<TxnId>,
}

/// The lock table of one tablet leader; see the module documentation.
#[derive(Debug)]
pub struct LockTable {
    /// The last epoch handed out.
    last_epoch: u64,
    txns: BTreeMap<TxnId, TxnState>,
    index: LockIndex,
    waiters: BTreeMap<WaiterId, Request>,
    last_lock: LockId,
    /// The latest `now` passed in: the time of wounds and grants made by calls without a `now`.
    last_now: Option<Instant>,
}

/// Names one granted lock inside the index.
type LockId = u64;

/// Conflict order: the priority, then the transaction id, so that even two transactions given
/// the same priority are ordered and cannot wait for each other.
type Rank = (Priority, TxnId);

#[derive(Debug)]
enum TxnState {
    Live(Entry),
    /// Wounded or expired: the transaction holds nothing and every call for it is refused
    /// with `reason` until it is released or the tombstone is forgotten.
    Tombstone {
        reason: Refusal,
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    priority: Priority,
    epoch: u64,
    prepared: bool,
    last_active: Instant,
    locks: Vec<HeldLock>,
    waiting: Option<WaiterId>,
}

#[derive(Debug)]
struct HeldLock {
    id: LockId,
    span: Span,
}

/// A waiting lock request.
#[derive(Debug)]
struct Request {
    txn: TxnId,
    spans: Vec<Span>,
    mode: LockMode,
}

impl LockTable {
    /// An empty table whose epochs are `epoch_base + 1`, `epoch_base + 2`, ...
    pub fn new(epoch_base: u64) -> Self {
        LockTable {
            last_epoch: epoch_base,
            txns: BTreeMap::new(),
            index: LockIndex::default(),
            waiters: BTreeMap::new(),
            last_lock: 0,
            last_now: None,
        }
    }

    /// Acquires every span of `spans` in `mode` for `txn`, atomically: all are granted now, or,
    /// if anything is in the way, the whole request waits as `waiter`.
    ///
    /// Creates `txn`'s entry (a new epoch, priority `priority`) if it has none and refreshes
    /// its activity time. Refused with the tombstone's reason if `txn` was wounded or expired,
    /// with `AlreadyPrepared` if it is prepared, with `AlreadyWaiting` if it already has a
    /// request waiting (a second concurrent request is a caller bug; the first keeps waiting),
    /// and with `WaiterInUse` if another request waits as `waiter`. Spans that `txn` already
    /// holds in `mode` or stronger are not locked twice; locking a span exclusively that it
    /// holds shared adds an exclusive lock (an upgrade).
    pub fn acquire(
        &mut self,
        txn: TxnId,
        priority: Priority,
        spans: Vec<Span>,
        mode: LockMode,
        waiter: WaiterId,
        now: Instant,
    ) -> (Result<Acquired, Refusal>, Effects) {
        self.observe(now);
        let mut effects = Effects::default();
        let epoch = match self.admit(txn, priority, waiter, now) {
            Ok(epoch) => epoch,
            Err(refusal) => return (Err(refusal), effects),
        };
        let spans: Vec<Span> = spans.into_iter().filter(|s| !s.is_empty()).collect();
        let result = if self.resolve(txn, &spans, mode, &mut effects) {
            self.install(txn, &spans, mode);
            Acquired::Granted { epoch }
        } else {
            if let Some(entry) = self.live_mut(txn) {
                entry.waiting = Some(waiter);
            }
            self.waiters.insert(waiter, Request { txn, spans, mode });
            Acquired::Waiting
        };
        if !effects.wounded.is_empty() {
            self.grant_waiters(&mut effects);
        }
        (Ok(result), effects)
    }

    /// The epoch of `txn`'s live entry, or why it has none (`Lost` if it is unknown).
    /// Refreshes its activity time.
    pub fn check(&mut self, txn: TxnId, now: Instant) -> Result<u64, Refusal> {
        self.observe(now);
        match self.txns.get_mut(&txn) {
            Some(TxnState::Live(entry)) => {
                entry.last_active = now;
                Ok(entry.epoch)
            }
            Some(TxnState::Tombstone { reason, .. }) => Err(reason.clone()),
            None => Err(Refusal::Lost),
        }
    }

    /// Marks `txn` prepared: from now on it cannot be wounded or expired and can take no new
    /// lock. Idempotent. Refused if `txn` was wounded, expired or is unknown, and with
    /// `AlreadyWaiting` if it has a request waiting (a prepared transaction must never wait).
    pub fn mark_prepared(&mut self, txn: TxnId) -> Result<(), Refusal> {
        match self.txns.get_mut(&txn) {
            Some(TxnState::Live(entry)) if entry.waiting.is_some() => Err(Refusal::AlreadyWaiting),
            Some(TxnState::Live(entry)) => {
                entry.prepared = true;
                Ok(())
            }
            Some(TxnState::Tombstone { reason, .. }) => Err(reason.clone()),
            None => Err(Refusal::Lost),
        }
    }

    /// Installs the locks of `txn`, which a new leader recovered from its log as prepared
    /// (shared on the spans it read, exclusive on the keys it writes), and marks it prepared.
    /// There is no conflict check: the locks were all held together when the transaction
    /// prepared, and this is meant for a table just created or [`clear`]ed.
    ///
    /// A tombstone for `txn` is replaced by a fresh entry; a live entry keeps its priority and
    /// epoch, and a request of it that was waiting is refused with `AlreadyPrepared` (in the
    /// returned effects) since a prepared transaction must not wait.
    ///
    /// [`clear`]: LockTable::clear
    pub fn restore_prepared(
        &mut self,
        txn: TxnId,
        priority: Priority,
        reads: Vec<Span>,
        keys: Vec<Vec<u8>>,
        now: Instant,
    ) -> Effects {
        self.observe(now);
        let mut effects = Effects::default();
        if !matches!(self.txns.get(&txn), Some(TxnState::Live(_))) {
            let epoch = self.next_epoch();
            self.txns
                .insert(txn, TxnState::Live(Entry::new(priority, epoch, now)));
        }
        let waiting = self.live_mut(txn).and_then(|entry| {
            entry.prepared = true;
            entry.last_active = now;
            entry.waiting.take()
        });
        if let Some(waiter) = waiting {
            self.waiters.remove(&waiter);
            effects.refused.push((waiter, Refusal::AlreadyPrepared));
        }
        let reads: Vec<Span> = reads.into_iter().filter(|s| !s.is_empty()).collect();
        self.install(txn, &reads, LockMode::Shared);
        let writes: Vec<Span> = keys.iter().map(|key| Span::point(key)).collect();
        self.install(txn, &writes, LockMode::Exclusive);
        if !effects.refused.is_empty() {
            // A waiter left the queue: younger requests queued behind it may go.
            self.grant_waiters(&mut effects);
        }
        effects
    }

    /// `txn` ended (committed or aborted): drops its locks, its entry or tombstone, and its
    /// waiting request (refused with `Lost`), then grants the waiters that can now go.
    pub fn release(&mut self, txn: TxnId) -> Effects {
        let mut effects = Effects::default();
        if let Some(TxnState::Live(entry)) = self.txns.remove(&txn) {
            self.drop_entry(entry, Refusal::Lost, &mut effects);
            self.grant_waiters(&mut effects);
        }
        effects
    }

    /// A waiting request gave up (its RPC timed out): forgets it, then grants the waiters that
    /// queued behind it and can now go. Unknown waiters are ignored.
    pub fn cancel(&mut self, waiter: WaiterId) -> Effects {
        let mut effects = Effects::default();
        if let Some(request) = self.waiters.remove(&waiter) {
            if let Some(entry) = self.live_mut(request.txn) {
                entry.waiting = None;
            }
            self.grant_waiters(&mut effects);
        }
        effects
    }

    /// Forgets tombstones older than `idle`, then expires every unprepared transaction idle (no
    /// `acquire` or `check`, including while a request of it waits) for longer than `idle`: it
    /// loses its locks, its waiting request is refused with `Lost`, it is listed in
    /// `effects.wounded` and becomes a tombstone whose calls get `Lost`. Then grants the waiters
    /// that can now go.
    pub fn expire_idle(&mut self, now: Instant, idle: Duration) -> Effects {
        self.observe(now);
        let mut effects = Effects::default();
        self.txns.retain(|_, state| match state {
            TxnState::Tombstone { since, .. } => now.saturating_duration_since(*since) <= idle,
            TxnState::Live(_) => true,
        });
        let expired: Vec<TxnId> = self
            .txns
            .iter()
            .filter_map(|(txn, state)| match state {
                TxnState::Live(entry)
                    if !entry.prepared
                        && now.saturating_duration_since(entry.last_active) > idle =>
                {
                    Some(*txn)
                }
                _ => None,
            })
            .collect();
        for txn in expired {
            self.kill(txn, Refusal::Lost, &mut effects);
        }
        if !effects.wounded.is_empty() {
            self.grant_waiters(&mut effects);
        }
        effects
    }

    /// Leadership was lost: forgets every transaction, lock and tombstone, and returns every
    /// waiting request (in waiter order), for the caller to fail with `Lost`. Epochs keep
    /// counting, so none is handed out twice by this table.
    pub fn clear(&mut self) -> Vec<WaiterId> {
        self.txns.clear();
        self.index = LockIndex::default();
        std::mem::take(&mut self.waiters).into_keys().collect()
    }

    /// The number of live transactions (tombstones not counted).
    pub fn len(&self) -> usize {
        self.txns
            .values()
            .filter(|state| matches!(state, TxnState::Live(_)))
            .count()
    }

    /// True if no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if some transaction holds an exclusive lock covering `key`.
    pub fn is_exclusively_locked(&self, key: &[u8]) -> bool {
        self.index
            .overlapping(&Span::point(key))
            .any(|found| found.holder.mode == LockMode::Exclusive)
    }

    // ---- internals ----

    fn observe(&mut self, now: Instant) {
        self.last_now = Some(self.last_now.map_or(now, |last| last.max(now)));
    }

    fn next_epoch(&mut self) -> u64 {
        self.last_epoch = self.last_epoch.wrapping_add(1);
        self.last_epoch
    }

    fn live(&self, txn: TxnId) -> Option<&Entry> {
        match self.txns.get(&txn) {
            Some(TxnState::Live(entry)) => Some(entry),
            _ => None,
        }
    }

    fn live_mut(&mut self, txn: TxnId) -> Option<&mut Entry> {
        match self.txns.get_mut(&txn) {
            Some(TxnState::Live(entry)) => Some(entry),
            _ => None,
        }
    }

    fn rank(&self, txn: TxnId) -> Option<Rank> {
        self.live(txn).map(|entry| (entry.priority, txn))
    }

    /// Lets `txn` make a new request as `waiter`: refuses it, or returns its epoch after
    /// creating its entry if needed and refreshing its activity time.
    fn admit(
        &mut self,
        txn: TxnId,
        priority: Priority,
        waiter: WaiterId,
        now: Instant,
    ) -> Result<u64, Refusal> {
        match self.txns.get(&txn) {
            Some(TxnState::Tombstone { reason, .. }) => return Err(reason.clone()),
            Some(TxnState::Live(entry)) if entry.prepared => return Err(Refusal::AlreadyPrepared),
            Some(TxnState::Live(entry)) if entry.waiting.is_some() => {
                return Err(Refusal::AlreadyWaiting)
            }
            _ => {}
        }
        if self.waiters.contains_key(&waiter) {
            return Err(Refusal::WaiterInUse);
        }
        if let Some(entry) = self.live_mut(txn) {
            entry.last_active = now;
            return Ok(entry.epoch);
        }
        let epoch = self.next_epoch();
        self.txns
            .insert(txn, TxnState::Live(Entry::new(priority, epoch, now)));
        Ok(epoch)
    }

    /// Applies wound-wait to a request of `txn` (live, with no request waiting other than
    /// possibly this one): wounds every younger, unprepared holder the request conflicts with,
    /// and returns true if it may now be granted, that is if no conflicting lock is still held
    /// and no older waiting request conflicts with it.
    fn resolve(
        &mut self,
        txn: TxnId,
        spans: &[Span],
        mode: LockMode,
        effects: &mut Effects,
    ) -> bool {
        let Some(rank) = self.rank(txn) else {
            return false;
        };
        let holders: BTreeSet<TxnId> = spans
            .iter()
            .flat_map(|span| self.index.overlapping(span))
            .filter(|found| found.holder.txn != txn && found.holder.mode.conflicts_with(mode))
            .map(|found| found.holder.txn)
            .collect();
        let mut blocked = false;
        for holder in holders {
            match self.live(holder) {
                Some(entry) if !entry.prepared && rank < (entry.priority, holder) => {
                    self.kill(holder, Refusal::Wounded, effects);
                }
                _ => blocked = true,
            }
        }
        !blocked && !self.older_waiter_conflicts(txn, rank, spans, mode)
    }

    /// True if a waiting request of a transaction older than `rank` conflicts with this one.
    fn older_waiter_conflicts(
        &self,
        txn: TxnId,
        rank: Rank,
        spans: &[Span],
        mode: LockMode,
    ) -> bool {
        self.waiters.values().any(|other| {
            other.txn != txn
                && self.rank(other.txn).is_some_and(|r| r < rank)
                && requests_conflict(&other.spans, other.mode, spans, mode)
        })
    }

    /// Grants `spans` in `mode` to live `txn`, skipping spans it already holds as strongly.
    fn install(&mut self, txn: TxnId, spans: &[Span], mode: LockMode) {
        let Some(TxnState::Live(entry)) = self.txns.get_mut(&txn) else {
            return;
        };
        for span in spans {
            let held = span.is_empty()
                || self.index.overlapping(span).any(|found| {
                    found.holder.txn == txn
                        && found.holder.mode.subsumes(mode)
                        && found.covers(span)
                });
            if held {
                continue;
            }
            self.last_lock = self.last_lock.wrapping_add(1);
            let id = self.last_lock;
            self.index.insert(id, span, Holder { txn, mode });
            entry.locks.push(HeldLock {
                id,
                span: span.clone(),
            });
        }
    }

    /// Turns live `txn` into a tombstone with `reason`: drops its locks, refuses its waiting
    /// request with `reason` and lists it as wounded.
    fn kill(&mut self, txn: TxnId, reason: Refusal, effects: &mut Effects) {
        let Some(TxnState::Live(entry)) = self.txns.remove(&txn) else {
            return;
        };
        let since = self.last_now.unwrap_or(entry.last_active);
        self.drop_entry(entry, reason.clone(), effects);
        self.txns.insert(txn, TxnState::Tombstone { reason, since });
        effects.wounded.push(txn);
    }

    /// Removes a (removed) entry's locks from the index and refuses its waiting request.
    fn drop_entry(&mut self, entry: Entry, refusal: Refusal, effects: &mut Effects) {
        for lock in &entry.locks {
            self.index.remove(lock.id, &lock.span);
        }
        if let Some(waiter) = entry.waiting {
            if self.waiters.remove(&waiter).is_some() {
                effects.refused.push((waiter, refusal));
            }
        }
    }

    /// Re-examines every waiting request, oldest transaction first, and grants those that may
    /// go. A grant only adds locks, which cannot unblock an older request; a wound frees locks,
    /// so after a pass that wounded anyone the pass starts over.
    fn grant_waiters(&mut self, effects: &mut Effects) {
        loop {
            let wounded_before = effects.wounded.len();
            let mut order: Vec<(Rank, WaiterId)> = self
                .waiters
                .iter()
                .filter_map(|(waiter, request)| Some((self.rank(request.txn)?, *waiter)))
                .collect();
            order.sort();
            for (_, waiter) in order {
                // Gone if its transaction was wounded earlier in this pass.
                let Some(request) = self.waiters.get(&waiter) else {
                    continue;
                };
                let (txn, spans, mode) = (request.txn, request.spans.clone(), request.mode);
                if self.resolve(txn, &spans, mode, effects) {
                    self.waiters.remove(&waiter);
                    self.install(txn, &spans, mode);
                    let now = self.last_now;
                    if let Some(entry) = self.live_mut(txn) {
                        entry.waiting = None;
                        // Its client hears back now: the idle clock restarts.
                        entry.last_active = now.unwrap_or(entry.last_active);
                    }
                    effects.granted.push((waiter, txn));
                }
            }
            if effects.wounded.len() == wounded_before {
                return;
            }
        }
    }
}

impl Entry {
    fn new(priority: Priority, epoch: u64, now: Instant) -> Entry {
        Entry {
            priority,
            epoch,
            prepared: false,
            last_active: now,
            locks: Vec::new(),
            waiting: None,
        }
    }
}

/// True if some lock of one request would conflict with some lock of the other.
fn requests_conflict(a: &[Span], a_mode: LockMode, b: &[Span], b_mode: LockMode) -> bool {
    a_mode.conflicts_with(b_mode) && a.iter().any(|x| b.iter().any(|y| x.overlaps(y)))
}

/// Who holds a lock, and how.
#[derive(Clone, Copy, Debug)]
struct Holder {
    txn: TxnId,
    mode: LockMode,
}

/// Every granted lock, by span start. Point locks are keyed by their key alone, so a query
/// finds them with one range lookup; range locks are the few that need their end checked.
#[derive(Debug, Default)]
struct LockIndex {
    points: BTreeMap<(Vec<u8>, LockId), Holder>,
    /// Value: the span's end (empty = unbounded) and the holder.
    ranges: BTreeMap<(Vec<u8>, LockId), (Vec<u8>, Holder)>,
}

/// A lock found by [`LockIndex::overlapping`].
struct Found<'a> {
    holder: Holder,
    start: &'a [u8],
    /// `None` for a point lock.
    end: Option<&'a [u8]>,
}

impl Found<'_> {
    /// True if the lock covers every key of `span`.
    fn covers(&self, span: &Span) -> bool {
        match self.end {
            None => span.is_point() && span.start == self.start,
            Some(end) => Span::range(self.start, end).covers(span),
        }
    }
}

impl LockIndex {
    fn insert(&mut self, id: LockId, span: &Span, holder: Holder) {
        if span.is_point() {
            self.points.insert((span.start.clone(), id), holder);
        } else {
            self.ranges
                .insert((span.start.clone(), id), (span.end.clone(), holder));
        }
    }

    fn remove(&mut self, id: LockId, span: &Span) {
        let key = (span.start.clone(), id);
        if span.is_point() {
            self.points.remove(&key);
        } else {
            self.ranges.remove(&key);
        }
    }

    /// The holder of lock `id` on `span`, if indexed.
    #[cfg(test)]
    fn holder(&self, id: LockId, span: &Span) -> Option<Holder> {
        let key = (span.start.clone(), id);
        if span.is_point() {
            self.points.get(&key).copied()
        } else {
            let (end, holder) = self.ranges.get(&key)?;
            (*end == span.end).then_some(*holder)
        }
    }

    /// Every lock whose span overlaps `span`.
    fn overlapping<'a>(&'a self, span: &Span) -> impl Iterator<Item = Found<'a>> + 'a {
        let empty = span.is_empty();
        // Keys are (start, id) and ids start at 1, so (key, 0) sorts before every lock at key.
        let upper = if span.end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded((span.end.clone(), 0))
        };
        // A point lock [k, k ++ 0x00) overlaps [start, end) iff start <= k < end: nothing sorts
        // strictly between k and k ++ 0x00.
        let points = (!empty)
            .then(|| {
                self.points
                    .range((Bound::Included((span.start.clone(), 0)), upper.clone()))
            })
            .into_iter()
            .flatten()
            .map(|((key, _), holder)| Found {
                holder: *holder,
                start: key.as_slice(),
                end: None,
            });
        let start = span.start.clone();
        let ranges = (!empty)
            .then(|| self.ranges.range((Bound::Unbounded, upper)))
            .into_iter()
            .flatten()
            .filter(move |(_, (end, _))| end.is_empty() || *end > start)
            .map(|((key, _), (end, holder))| Found {
                holder: *holder,
                start: key.as_slice(),
                end: Some(end.as_slice()),
            });
        points.chain(ranges)
    }
}

#[cfg(test)]
mod tests;
