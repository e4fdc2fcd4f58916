//! Transaction steps at a group's leader: locking, the checks before a commit, prepare or
//! decision is proposed, the lock waits wound-wait parks, lock release after commit wait, and
//! the periodic housekeeping (idle transactions, inquiries about long-prepared ones, pushes of
//! undelivered decisions).

use super::*;

impl DriverLoop {
    /// Runs a transaction step at a leader, or parks it until its locks are granted.
    pub(super) fn txn(&mut self, call: TxnCall) {
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
            TxnOp::Commit { mutations, .. } | TxnOp::Decide { mutations, .. } => {
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
            TxnOp::Commit { mutations, .. } => (
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
    pub(super) fn locked_step(&mut self, call: TxnCall, now: Instant) {
        let tt = self.config.tt.clone();
        let group = call.group;
        let Some(r) = self.replicas.get_mut(&group) else {
            return;
        };
        let txn = call.txn.id;
        // The epoch the transaction's locks are held under here, if it still holds them.
        let held = r.locks.check(txn, now);
        let epoch_ok = |held: &Result<u64, Refusal>| -> Result<u64, CommitError> {
            steps::check_epoch(call.epoch, held).map_err(CommitError::from)
        };
        let absent: Option<&[Vec<u8>]> = match &call.op {
            TxnOp::Commit { absent, .. }
            | TxnOp::Prepare { absent, .. }
            | TxnOp::Decide { absent, .. } => Some(absent),
            _ => None,
        };
        if let Some(absent) = absent {
            // A step that proposes a commit or prepare: the clock must justify a timestamp, the
            // locks must still be the ones the transaction took, and the inserts' keys (locked
            // exclusively now, so what is live stays live) must be free; from here on nothing
            // may wound it. Otherwise it ends here and gives its locks back.
            let ready = tablet::first_live_key(self.config.engine.as_ref(), absent)
                .map_err(|e| CommitError::Internal(e.to_string()))
                .and_then(|live| {
                    let refused = self.config.failpoints.refuse(failpoints::COMMIT_CONFLICT);
                    let held = if refused {
                        Err(Refusal::Wounded)
                    } else {
                        held.clone()
                    };
                    steps::check_proposal(tt.check_usable(), call.epoch, &held, live)
                        .map_err(CommitError::from)
                })
                .and_then(|_| r.locks.mark_prepared(txn).map_err(CommitError::from));
            if let Err(e) = ready {
                let effects = r.locks.release(txn);
                let decide = matches!(call.op, TxnOp::Decide { .. });
                // A refused decision is an abort (no commit was proposed, and the abort is
                // logged below): the client hears a definite abort, not an unknown outcome,
                // and rolls the participants back at once.
                let e = match e {
                    e @ CommitError::KeyExists(_) => e,
                    e if decide => CommitError::Conflict(format!("the coordinator aborted: {e}")),
                    e => e,
                };
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
                    // The validation of a transaction that wrote nothing here: its commit.
                    let answer = epoch_ok(&held)
                        .and_then(|epoch| {
                            if self.config.failpoints.refuse(failpoints::COMMIT_CONFLICT) {
                                Err(Refusal::Wounded.into())
                            } else {
                                Ok(epoch)
                            }
                        })
                        .map(|epoch| TxnAnswer {
                            epoch,
                            ..Default::default()
                        });
                    let effects = r.locks.release(txn);
                    let _ = call.reply.send(answer);
                    self.answer_lock_effects(group, effects);
                    return;
                }
            }
            TxnOp::Commit { mutations, .. } => {
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
                ..
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
                ..
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
    pub(super) fn propose_abort_decision(
        &mut self,
        group: GroupId,
        txn: u64,
        reply: Option<TxnReply>,
    ) {
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

    /// Answers the waiting steps a lock-table call granted or refused.
    pub(super) fn answer_lock_effects(&mut self, group: GroupId, effects: Effects) {
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
    pub(super) fn release_deferred(&mut self) {
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

    /// Transaction housekeeping on every serving leader: wound idle transactions, ask
    /// coordinators about long-prepared ones, finish what a failed coordinator left, and drop
    /// old abort decisions.
    pub(super) fn sweep(&mut self) {
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
}

/// The replica of `group` if it serves as leader now, else the error telling the caller where
/// to go or when to come back.
pub(super) fn serving_leader(
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

pub(super) fn decision_answer(commit: bool, ts: u64) -> TxnAnswer {
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

pub(super) fn merge(into: &mut Effects, from: Effects) {
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
