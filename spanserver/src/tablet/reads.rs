//! The read rules of a replica, as pure functions of what the replica knows and a clock
//! reading: which timestamp a lock-free snapshot read is served at, whether it must wait (and
//! for what), and when it is refused. The gRPC service reads the replica's state, asks
//! [`plan_read`], applies the plan (raising the leader's read floor) and polls [`is_safe`];
//! nothing here touches a lock, a socket or a clock.
//!
//! The rules (DESIGN.md, Transactions):
//! - **Safe time**: a replica has every write at or below `min(max applied timestamp, smallest
//!   prepare timestamp in doubt - 1)`; a read at `t` waits until both pass `t`.
//! - **Read floor**: a leader serving a read at `t` first promises never to assign a timestamp
//!   at or below `t` again (the floor), so only entries already assigned must apply: it waits for
//!   `min(last assigned, t)`, not for `t`.
//! - **Within the lease**: a leader serves (and raises its floor to) only timestamps below its
//!   lease's end. The next leader's lease starts after that end has surely passed, and it
//!   assigns timestamps above `now.latest`, so every read the old leader served stays below
//!   whatever the new one writes: reads repeat across a leader change with no floor handed over.
//! - **GC horizon**: versions older than [`GC_HORIZON`] may be collected, so reads below
//!   `now.earliest - GC_HORIZON` are refused.
//! - **The future**: a read above `now.latest + MAX_READ_AHEAD` is refused. Serving it would
//!   raise the read floor into the future and hold every later commit of the group until then;
//!   the allowance covers only another server's clock running ahead within its ε.
//! - **Bounded staleness** is served at the replica's safe time, if that is no older than the
//!   bound; **a strong single-group read** at the leader is served at its largest applied
//!   timestamp, which every acknowledged commit is at or below.

use std::time::Duration;

use meridian_truetime::TtInterval;

/// How far back reads may go: older versions may be garbage-collected.
pub const GC_HORIZON: Duration = Duration::from_secs(3600);

/// How far above its own `now.latest` a replica serves a read at an exact timestamp: room for
/// a gateway's clock that runs ahead within its uncertainty, and no more.
pub const MAX_READ_AHEAD: Duration = Duration::from_millis(500);

/// What a lock-free read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// Exactly this timestamp (a strong read picked by the gateway, a stale or historical read).
    Exact(u64),
    /// The freshest timestamp this replica can serve now, no older than this many ns.
    Bounded { max_staleness_ns: u64 },
    /// A strong read of this one group: the leader's latest applied timestamp.
    LeaderLatest,
}

/// What the replica knows when it plans a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// It leads the group and holds a valid lease.
    pub leader: bool,
    /// Its largest applied timestamp.
    pub max_applied: u64,
    /// The smallest prepare timestamp in doubt (`u64::MAX` if none).
    pub min_prepared: u64,
    /// A split in progress: no read above this may be served (`u64::MAX` if none).
    pub split_floor: u64,
    /// When its lease ends, if it leads (`u64::MAX` otherwise).
    pub lease_end: u64,
}

impl ReadState {
    /// The newest timestamp the replica can serve without waiting.
    pub fn safe_ts(&self) -> u64 {
        self.max_applied.min(self.min_prepared.saturating_sub(1))
    }
}

/// How to serve a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPlan {
    /// Serve at `ts` now.
    Now { ts: u64 },
    /// Serve at `ts` once [`is_safe`]; at a leader, first raise the read floor to `ts`.
    Wait { ts: u64, raise_floor: bool },
}

/// Why a read is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadRefusal {
    #[error(
        "read timestamp {ts} is older than the garbage collection horizon ({}s ago): versions \
         that old may be gone",
        GC_HORIZON.as_secs()
    )]
    BeforeHorizon { ts: u64 },
    #[error("read timestamp {ts} is in the future ({ahead_ms} ms past the latest possible now)")]
    InFuture { ts: u64, ahead_ms: u64 },
    #[error("this replica's safe time is {behind_ms} ms behind")]
    Behind { behind_ms: u64 },
    #[error("only the leader serves a strong read of the latest data")]
    NotLeader,
    #[error("the tablet is splitting; retry")]
    Splitting,
    #[error("read timestamp {ts} is at or past the end of the leader's lease; retry")]
    PastLease { ts: u64 },
}

impl ReadRefusal {
    /// True if the request itself is wrong (the timestamp), not the replica's state.
    pub fn is_invalid_timestamp(&self) -> bool {
        matches!(
            self,
            ReadRefusal::BeforeHorizon { .. } | ReadRefusal::InFuture { .. }
        )
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Decides how `state` serves `at`, with the clock reading `now`.
pub fn plan_read(at: ReadAt, state: &ReadState, now: TtInterval) -> Result<ReadPlan, ReadRefusal> {
    match at {
        ReadAt::Exact(ts) => {
            let horizon = now.earliest.0.saturating_sub(nanos(GC_HORIZON));
            if ts < horizon {
                return Err(ReadRefusal::BeforeHorizon { ts });
            }
            let limit = now.latest.0.saturating_add(nanos(MAX_READ_AHEAD));
            if ts > limit {
                return Err(ReadRefusal::InFuture {
                    ts,
                    ahead_ms: (ts - now.latest.0) / 1_000_000,
                });
            }
            if state.leader && ts > state.split_floor {
                return Err(ReadRefusal::Splitting);
            }
            if state.leader && ts >= state.lease_end {
                return Err(ReadRefusal::PastLease { ts });
            }
            Ok(ReadPlan::Wait {
                ts,
                raise_floor: state.leader,
            })
        }
        ReadAt::Bounded { max_staleness_ns } => {
            let safe = state.safe_ts();
            let oldest = now.earliest.0.saturating_sub(max_staleness_ns);
            if safe >= oldest {
                Ok(ReadPlan::Now { ts: safe })
            } else {
                Err(ReadRefusal::Behind {
                    behind_ms: now.earliest.0.saturating_sub(safe) / 1_000_000,
                })
            }
        }
        ReadAt::LeaderLatest => {
            if !state.leader {
                return Err(ReadRefusal::NotLeader);
            }
            let ts = state.max_applied;
            if ts > state.split_floor {
                return Err(ReadRefusal::Splitting);
            }
            Ok(ReadPlan::Wait {
                ts,
                raise_floor: true,
            })
        }
    }
}

/// The applied timestamp a read at `ts` waits for: at a leader that raised its floor to `ts`,
/// only what was already assigned (`last_assigned`); elsewhere, `ts` itself.
pub fn applied_target(ts: u64, raised_floor: bool, last_assigned: u64) -> u64 {
    if raised_floor {
        last_assigned.min(ts)
    } else {
        ts
    }
}

/// True once a read at `ts` waiting for `target` may be served: the replica applied up to
/// `target` and nothing below `ts` is prepared and in doubt.
pub fn is_safe(ts: u64, target: u64, state: &ReadState) -> bool {
    state.max_applied >= target && state.min_prepared >= ts
}

/// Why a read that waited past its budget is still not safe.
pub fn still_waiting(ts: u64, state: &ReadState) -> String {
    if state.min_prepared < ts {
        "a transaction prepared below the read timestamp is still in doubt".into()
    } else {
        format!(
            "this replica's safe time is {} ms behind the read timestamp",
            ts.saturating_sub(state.max_applied) / 1_000_000
        )
    }
}

#[cfg(test)]
mod scenario {
    //! Scenario scripts in `testdata/reads/`. Commands (times take `s`, `ms` or `us` suffixes,
    //! `none` is "no such timestamp"):
    //! - `now at=T eps=E`: the clock reads `[T - E, T + E]`;
    //! - `state leader=BOOL applied=T prepared=T|none split=T|none [lease=T|none]`: the
    //!   replica's knowledge (`lease`, its lease's end, defaults to none);
    //! - `read at=T` | `read bounded=D` | `read latest`: [`plan_read`]'s answer;
    //! - `wait ts=T floor=BOOL assigned=T`: the applied target ([`applied_target`]) and whether
    //!   the read may be served now ([`is_safe`]), else why not.

    use meridian_truetime::{Timestamp, TtInterval};

    use super::*;

    fn parse_time(text: &str) -> Result<u64, String> {
        if text == "none" {
            return Ok(u64::MAX);
        }
        let (digits, scale) = if let Some(d) = text.strip_suffix("ms") {
            (d, 1_000_000)
        } else if let Some(d) = text.strip_suffix("us") {
            (d, 1_000)
        } else if let Some(d) = text.strip_suffix('s') {
            (d, 1_000_000_000)
        } else {
            (text, 1)
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| format!("bad time {text}"))
    }

    fn fmt_time(ns: u64) -> String {
        match ns {
            u64::MAX => "none".into(),
            n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n => format!("{n}ns"),
        }
    }

    struct Harness {
        now: TtInterval,
        state: ReadState,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                now: TtInterval {
                    earliest: Timestamp(0),
                    latest: Timestamp(0),
                },
                state: ReadState {
                    leader: true,
                    max_applied: 0,
                    min_prepared: u64::MAX,
                    split_floor: u64::MAX,
                    lease_end: u64::MAX,
                },
            }
        }

        fn run(&mut self, line: &str) -> Result<String, String> {
            let crate::scenarios::Line {
                command,
                args,
                bare,
            } = crate::scenarios::split_line(line);
            let time = |name: &str| -> Result<u64, String> {
                parse_time(args.get(name).ok_or_else(|| format!("missing {name}="))?)
            };
            let flag = |name: &str| -> Result<bool, String> {
                match args.get(name).copied() {
                    Some("true") => Ok(true),
                    Some("false") => Ok(false),
                    other => Err(format!("{name}= must be true or false, not {other:?}")),
                }
            };
            match command {
                "now" => {
                    let (at, eps) = (time("at")?, time("eps")?);
                    self.now = TtInterval {
                        earliest: Timestamp(at.saturating_sub(eps)),
                        latest: Timestamp(at.saturating_add(eps)),
                    };
                    Ok(format!(
                        "now [{}, {}]\n",
                        fmt_time(self.now.earliest.0),
                        fmt_time(self.now.latest.0)
                    ))
                }
                "state" => {
                    self.state = ReadState {
                        leader: flag("leader")?,
                        max_applied: time("applied")?,
                        min_prepared: time("prepared")?,
                        split_floor: time("split")?,
                        lease_end: match args.get("lease") {
                            Some(_) => time("lease")?,
                            None => u64::MAX,
                        },
                    };
                    Ok(format!("safe {}\n", fmt_time(self.state.safe_ts())))
                }
                "read" => {
                    let at = if bare == ["latest"] {
                        ReadAt::LeaderLatest
                    } else if args.contains_key("at") {
                        ReadAt::Exact(time("at")?)
                    } else {
                        ReadAt::Bounded {
                            max_staleness_ns: time("bounded")?,
                        }
                    };
                    Ok(match plan_read(at, &self.state, self.now) {
                        Ok(ReadPlan::Now { ts }) => format!("serve now at {}\n", fmt_time(ts)),
                        Ok(ReadPlan::Wait { ts, raise_floor }) => format!(
                            "wait to serve at {}{}\n",
                            fmt_time(ts),
                            if raise_floor {
                                ", raising the read floor"
                            } else {
                                ""
                            }
                        ),
                        Err(r) => format!(
                            "refused ({}): {r}\n",
                            if r.is_invalid_timestamp() {
                                "invalid timestamp"
                            } else {
                                "retry elsewhere or later"
                            }
                        ),
                    })
                }
                "wait" => {
                    let ts = time("ts")?;
                    let target = applied_target(ts, flag("floor")?, time("assigned")?);
                    Ok(if is_safe(ts, target, &self.state) {
                        format!("target {}: safe now\n", fmt_time(target))
                    } else {
                        format!(
                            "target {}: not yet: {}\n",
                            fmt_time(target),
                            still_waiting(ts, &self.state)
                        )
                    })
                }
                other => Err(format!("unknown command {other}")),
            }
        }
    }

    #[test]
    fn read_rule_scenarios() {
        crate::scenarios::check("reads", || {
            let mut harness = Harness::new();
            move |line: &str| harness.run(line)
        });
    }
}
