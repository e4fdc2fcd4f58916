//! One round of Raft work for every group: persist readies with one fsync (none when only
//! commit indexes moved), send, apply committed entries in one batch, then answer proposers
//! and lock waiters.

use super::*;

impl DriverLoop {
    /// One round of Raft work for every group: persist, send, apply, answer.
    pub(super) fn process_ready(&mut self) -> Result<(), String> {
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
        let mut sync = false;
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
            sync |= out.needs_sync;
            self.config.transport.send_all(*id, out.messages);
            if !out.committed.is_empty() {
                committed.push((*id, out.committed));
            }
            started.push(*id);
        }
        if !persist.is_empty() {
            self.config
                .engine
                .write(persist, sync)
                .map_err(|e| e.to_string())?;
        }
        for (id, index, data) in installed {
            self.after_snapshot(id, index, data)?;
        }
        Ok(started)
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
                        let mut peers: Vec<ServerId> = cs
                            .voters
                            .iter()
                            .chain(cs.voters_outgoing.iter())
                            .map(|p| ServerId(*p))
                            .collect();
                        peers.sort_unstable();
                        peers.dedup();
                        let removed = !peers.contains(&self.config.server)
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
}

/// An entry that was just applied.
struct AppliedEntry {
    proposal: u64,
    index: u64,
    result: Applied,
    /// The transaction a `Resolve` ended.
    resolved: Option<u64>,
}
