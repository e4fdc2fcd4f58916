//! Leader leases and closed timestamps: acquiring, renewing and (at shutdown) releasing the
//! lease, and the closed timestamps idle leaders propose so followers' safe time keeps up.

use super::*;

impl DriverLoop {
    /// Acquires the lease for every caught-up leader that lacks it, and renews leases at
    /// half-life.
    pub(super) fn maintain_leases(&mut self) {
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

    /// Gives up every lease this server serves under (graceful shutdown): stops serving at
    /// once and logs a lease that expires now, so the next leader need not wait out the rest.
    pub(super) fn release_leases(
        &mut self,
    ) -> Vec<oneshot::Receiver<Result<TxnAnswer, CommitError>>> {
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
    pub(super) fn close_idle_groups(&mut self) {
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
}
