//! Scenario tests for [`RaftGroup`]: scripts under `spanserver/testdata/raft/` drive a few
//! replicas of one group through elections, proposals, partitions, crashes and restarts, and
//! their output is compared with recorded `.out` files (`UPDATE_GOLDEN=1` rewrites them).
//!
//! The harness mirrors the driver: persist a ready's batch, then finish it, apply committed
//! entries and record the applied index in the same batch as the applied data. Election timeouts
//! are fixed per replica (replica `n` times out after `10 + 5(n-1)` ticks) so runs are
//! deterministic.
//!
//! Commands:
//! - `start 1 2 3`: replicas of group 1 on servers 1, 2, 3 (all voters);
//! - `campaign N`, `tick [K]`: start an election; tick every live replica K times, stabilizing
//!   after each tick;
//! - `propose N DATA`: propose on replica N, then stabilize;
//! - `partition N` / `heal`: drop every message to and from N / stop dropping;
//! - `crash N` / `restart N`: stop N (its engine survives) / reopen it from its engine;
//! - `status`: each replica's role, term, leader, commit index and applied data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use raft::prelude::Message;

use super::{RaftGroup, Timing};
use crate::raft::{GroupId, ServerId};
use crate::storage::engine::{Cf, Engine, WriteBatch};
use crate::storage::keys;
use crate::storage::mem::MemEngine;

const GROUP: GroupId = GroupId(1);

struct Replica {
    engine: Arc<MemEngine>,
    group: Option<RaftGroup>,
    applied: Vec<String>,
}

struct Harness {
    voters: Vec<ServerId>,
    replicas: BTreeMap<u64, Replica>,
    partitioned: BTreeSet<u64>,
    inflight: VecDeque<Message>,
    logger: slog::Logger,
}

fn timing(id: u64) -> Timing {
    let t = 10 + 5 * (id as usize - 1);
    Timing {
        election_ticks: t,
        heartbeat_ticks: 1,
        min_election_ticks: t,
        max_election_ticks: t + 1,
    }
}

impl Harness {
    fn new() -> Self {
        Harness {
            voters: Vec::new(),
            replicas: BTreeMap::new(),
            partitioned: BTreeSet::new(),
            inflight: VecDeque::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }

    fn open(&self, id: u64, engine: &MemEngine) -> RaftGroup {
        RaftGroup::open_with_timing(
            GROUP,
            ServerId(id),
            &self.voters,
            engine,
            &self.logger,
            timing(id),
        )
        .expect("open group")
    }

    /// Processes readies and delivers messages until nothing moves.
    fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<u64> = self.replicas.keys().copied().collect();
            for id in ids {
                let r = self.replicas.get_mut(&id).expect("replica");
                let Some(group) = r.group.as_mut() else {
                    continue;
                };
                if !group.has_ready() {
                    continue;
                }
                moved = true;
                let mut batch = WriteBatch::new();
                let first = group.start_ready(&mut batch).expect("start ready");
                r.engine.write(batch, true).expect("persist");
                let mut apply = WriteBatch::new();
                let second = group.finish_ready(&mut apply).expect("finish ready");
                let mut last_applied = None;
                for e in first.committed.iter().chain(second.committed.iter()) {
                    last_applied = Some(e.index);
                    if !e.data.is_empty() {
                        r.applied
                            .push(String::from_utf8_lossy(&e.data).into_owned());
                    }
                }
                if let Some(index) = last_applied {
                    let mut value = index.to_be_bytes().to_vec();
                    value.extend_from_slice(&0u64.to_be_bytes());
                    apply.put(Cf::Raft, keys::applied_index(GROUP), value);
                }
                r.engine.write(apply, false).expect("apply");
                group.advance_apply();
                self.inflight.extend(first.messages);
                self.inflight.extend(second.messages);
            }
            while let Some(m) = self.inflight.pop_front() {
                moved = true;
                if self.partitioned.contains(&m.from) || self.partitioned.contains(&m.to) {
                    continue;
                }
                if let Some(Some(g)) = self.replicas.get_mut(&m.to).map(|r| r.group.as_mut()) {
                    let _ = g.step(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the group did not stabilize");
    }

    fn group(&mut self, id: u64) -> Result<&mut RaftGroup, String> {
        self.replicas
            .get_mut(&id)
            .and_then(|r| r.group.as_mut())
            .ok_or_else(|| format!("replica {id} is not running"))
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .ok_or("missing argument")?
                .parse::<u64>()
                .map_err(|e| e.to_string())
        };
        match words.first().copied() {
            Some("start") => {
                self.voters = words[1..]
                    .iter()
                    .filter_map(|w| w.parse().ok())
                    .map(ServerId)
                    .collect();
                for v in self.voters.clone() {
                    let engine = Arc::new(MemEngine::new());
                    let group = self.open(v.0, &engine);
                    self.replicas.insert(
                        v.0,
                        Replica {
                            engine,
                            group: Some(group),
                            applied: Vec::new(),
                        },
                    );
                }
                Ok(String::new())
            }
            Some("campaign") => {
                self.group(arg(1)?)?.campaign().map_err(|e| e.to_string())?;
                self.stabilize();
                Ok(String::new())
            }
            Some("tick") => {
                let n = if words.len() > 1 { arg(1)? } else { 1 };
                for _ in 0..n {
                    for r in self.replicas.values_mut() {
                        if let Some(g) = r.group.as_mut() {
                            g.tick();
                        }
                    }
                    self.stabilize();
                }
                Ok(String::new())
            }
            Some("propose") => {
                let id = arg(1)?;
                let data = words.get(2).ok_or("missing data")?.as_bytes().to_vec();
                let out = match self.group(id)?.propose(data) {
                    Ok(index) => format!("proposed at index {index}\n"),
                    Err(e) => format!("error: {e}\n"),
                };
                self.stabilize();
                Ok(out)
            }
            Some("partition") => {
                self.partitioned.insert(arg(1)?);
                Ok(String::new())
            }
            Some("heal") => {
                self.partitioned.clear();
                Ok(String::new())
            }
            Some("crash") => {
                let id = arg(1)?;
                self.replicas.get_mut(&id).ok_or("no such replica")?.group = None;
                Ok(String::new())
            }
            Some("restart") => {
                let id = arg(1)?;
                let engine = self
                    .replicas
                    .get(&id)
                    .ok_or("no such replica")?
                    .engine
                    .clone();
                let group = self.open(id, &engine);
                self.replicas.get_mut(&id).ok_or("no such replica")?.group = Some(group);
                self.stabilize();
                Ok(String::new())
            }
            Some("status") => {
                let mut out = String::new();
                for (id, r) in &self.replicas {
                    match &r.group {
                        None => writeln!(out, "{id}: down applied=[{}]", r.applied.join(" ")),
                        Some(g) => writeln!(
                            out,
                            "{id}: {} term={} leader={} commit={} applied=[{}]",
                            if g.is_leader() { "leader" } else { "follower" },
                            g.term(),
                            g.leader().map_or(0, |l| l.0),
                            g.commit_index(),
                            r.applied.join(" ")
                        ),
                    }
                    .map_err(|e| e.to_string())?;
                }
                Ok(out)
            }
            Some(other) => Err(format!("unknown command {other}")),
            None => Ok(String::new()),
        }
    }
}

#[test]
fn raft_group_scenarios() {
    crate::scenarios::check("raft", || {
        let mut harness = Harness::new();
        move |line: &str| harness.run(line)
    });
}
