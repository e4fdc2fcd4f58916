//! Changes to what a replica is: splits, membership changes (joint consensus), removal, log
//! compaction, and snapshots (built for lagging replicas, installed from the leader).

use super::*;

impl DriverLoop {
    /// Proposes a membership change. The log is compacted to the applied index first, so an
    /// added replica (which starts empty) is brought up by a snapshot.
    pub(super) fn change_members(
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
    pub(super) fn destroy_removed(&mut self) -> Result<(), String> {
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

    /// After a snapshot is durable: the replica's in-memory state follows it.
    pub(super) fn after_snapshot(
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
    pub(super) fn maintain_logs(&mut self) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        for (id, r) in self.replicas.iter_mut() {
            let (first, applied) = r.group.log_span();
            if applied >= first + COMPACT_AFTER {
                r.group
                    .compact(applied - LOG_KEEP, &mut batch)
                    .map_err(|e| e.to_string())?;
            }
            if r.group.wants_snapshot() {
                let (header, source) = tablet::snapshot::capture(
                    self.config.engine.clone(),
                    &r.shared.desc,
                    &r.records,
                    &r.lease,
                    r.max_applied_ts.0,
                )?;
                let index = r.group.offer_snapshot(header).map_err(|e| e.to_string())?;
                self.config
                    .transport
                    .offer_snapshot(*id, index, Arc::new(source));
                tracing::info!(group = id.0, index, "took a snapshot to stream");
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

    /// Hands raft-rs the outcome of every snapshot transfer that ended, and lets go of snapshots
    /// nobody has read for a while (or whose group this server no longer leads): each pins an
    /// engine view.
    pub(super) fn settle_snapshots(&mut self, expire: bool) {
        for report in self.config.transport.take_snapshot_reports() {
            if let Some(r) = self.replicas.get_mut(&report.group) {
                r.group.report_snapshot(report.to, report.delivered);
            }
        }
        if !expire {
            return;
        }
        let replicas = &self.replicas;
        let expired = self.config.transport.expire_snapshots(SNAPSHOT_KEEP, |g| {
            replicas.get(&g).is_some_and(|r| r.group.is_leader())
        });
        for group in expired {
            if let Some(r) = self.replicas.get_mut(&group) {
                r.group.forget_snapshot();
            }
        }
    }

    /// After a split applied (its descriptors are durable): the parent takes its new range and
    /// the new group opens here. A leader of the parent drops every transaction's locks (they
    /// may cover the moved part; those transactions abort and retry).
    pub(super) fn finish_split(
        &mut self,
        parent: GroupId,
        left: ReplicaDescriptor,
        right: ReplicaDescriptor,
    ) {
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
        if chosen == Some(&self.config.server) {
            if let Some(child) = self.replicas.get_mut(&right_id) {
                let _ = child.group.campaign();
            }
        }
        tracing::info!(parent = parent.0, child = right_id.0, "split applied");
    }
}
