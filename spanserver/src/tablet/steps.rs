//! The leader's rules for a transaction step, as pure functions of what the leader knows and a
//! clock reading. The driver gathers the inputs (the lock table's answer, the clock's state,
//! the live versions of inserted keys, the timestamp state), asks these functions, and then
//! proposes, answers or releases; nothing here touches a lock table, a log or a clock.
//!
//! - [`check_epoch`]: a step carries the epoch its locks were granted under (0 on the first
//!   step at a group); a different epoch, or locks the lock table no longer holds, means the
//!   locks were lost (leader change, idle timeout, a wound) and the transaction must restart.
//! - [`check_proposal`]: before a commit, prepare or decision is proposed, the clock must
//!   justify a timestamp, the locks must be the ones the transaction took, and every insert's
//!   key must still be free. The checks run in that order; the first failure is the answer.
//! - [`choose_ts`]: the timestamp rule, `s = max(now.latest, last assigned + 1, read floor + 1,
//!   max applied + 1, at_least)`: external consistency (`s` is not below true time at the
//!   start of commit), strictly increasing per group, and above every snapshot read the leader
//!   already served (the read floor).

use meridian_truetime::{ClockError, Timestamp, TtInterval};

use super::lock_table::Refusal;

/// Why a step may not go ahead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepRefusal {
    /// TrueTime cannot justify a timestamp now: retry later.
    #[error("clock uncertain: {0}")]
    ClockUncertain(String),
    /// The transaction's locks are gone or were refused: restart the transaction.
    #[error("{0}")]
    Locks(Refusal),
    /// An insert's key has a live version: nothing is written.
    #[error("key exists")]
    KeyExists(Vec<u8>),
}

/// The epoch a step may proceed under: the lock table's (`held`) if the step's `requested`
/// epoch matches it or is 0 (the first step at this group).
pub fn check_epoch(requested: u64, held: &Result<u64, Refusal>) -> Result<u64, StepRefusal> {
    match held {
        Ok(epoch) if requested == 0 || requested == *epoch => Ok(*epoch),
        Ok(_) => Err(StepRefusal::Locks(Refusal::Lost)),
        Err(refusal) => Err(StepRefusal::Locks(refusal.clone())),
    }
}

/// Whether a step that proposes a commit, prepare or decision may go ahead: the clock's
/// verdict, the epoch check, then the first inserted key found live (if any).
pub fn check_proposal(
    clock: Result<(), ClockError>,
    requested: u64,
    held: &Result<u64, Refusal>,
    live_insert: Option<Vec<u8>>,
) -> Result<u64, StepRefusal> {
    clock.map_err(|e| StepRefusal::ClockUncertain(e.to_string()))?;
    let epoch = check_epoch(requested, held)?;
    match live_insert {
        Some(key) => Err(StepRefusal::KeyExists(key)),
        None => Ok(epoch),
    }
}

/// What the timestamp rule needs to know about a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsInputs {
    /// The largest timestamp the leader assigned.
    pub last_assigned: u64,
    /// Every new timestamp must be above this: snapshot reads up to it have been served.
    pub read_floor: u64,
    /// The largest applied timestamp.
    pub max_applied: u64,
}

/// The next timestamp (see the module doc).
pub fn choose_ts(now: TtInterval, inputs: TsInputs, at_least: u64) -> Timestamp {
    let above = inputs
        .last_assigned
        .max(inputs.read_floor)
        .max(inputs.max_applied)
        .saturating_add(1);
    now.latest.max(Timestamp(above)).max(Timestamp(at_least))
}

#[cfg(test)]
mod scenario {
    //! Scenario scripts in `testdata/steps/`. Commands:
    //! - `clock ok` | `clock uncertain`: the clock's verdict;
    //! - `held epoch=N` | `held refused=wounded|lost`: the lock table's answer;
    //! - `live key=K` | `live none`: the first inserted key found live;
    //! - `step epoch=N`: [`check_epoch`]; `propose epoch=N`: [`check_proposal`];
    //! - `ts now=T eps=E assigned=A floor=F applied=P at_least=L`: [`choose_ts`].

    use std::collections::BTreeMap;

    use super::*;

    struct Harness {
        clock: Result<(), ClockError>,
        held: Result<u64, Refusal>,
        live: Option<Vec<u8>>,
    }

    fn num(args: &BTreeMap<&str, &str>, name: &str) -> Result<u64, String> {
        let text = args.get(name).ok_or_else(|| format!("missing {name}="))?;
        text.parse()
            .map_err(|_| format!("bad number {name}={text}"))
    }

    fn show(result: Result<u64, StepRefusal>) -> String {
        match result {
            Ok(epoch) => format!("proceed under epoch {epoch}\n"),
            Err(StepRefusal::KeyExists(key)) => {
                format!("refused: key {} exists\n", String::from_utf8_lossy(&key))
            }
            Err(e) => format!("refused: {e}\n"),
        }
    }

    impl Harness {
        fn run(&mut self, line: &str) -> Result<String, String> {
            let crate::scenarios::Line {
                command,
                args,
                bare,
            } = crate::scenarios::split_line(line);
            match command {
                "clock" => {
                    self.clock = match bare.as_slice() {
                        ["ok"] => Ok(()),
                        ["uncertain"] => Err(ClockError::Uncertain {
                            epsilon_ns: 9_000_000,
                            max_ns: 7_000_000,
                        }),
                        other => return Err(format!("clock ok|uncertain, not {other:?}")),
                    };
                    Ok(String::new())
                }
                "held" => {
                    self.held = match (args.get("epoch"), args.get("refused")) {
                        (Some(_), None) => Ok(num(&args, "epoch")?),
                        (None, Some(&"wounded")) => Err(Refusal::Wounded),
                        (None, Some(&"lost")) => Err(Refusal::Lost),
                        _ => return Err("held epoch=N | held refused=wounded|lost".into()),
                    };
                    Ok(String::new())
                }
                "live" => {
                    self.live = match (args.get("key"), bare.as_slice()) {
                        (Some(key), []) => Some(key.as_bytes().to_vec()),
                        (None, ["none"]) => None,
                        _ => return Err("live key=K | live none".into()),
                    };
                    Ok(String::new())
                }
                "step" => Ok(show(check_epoch(num(&args, "epoch")?, &self.held))),
                "propose" => Ok(show(check_proposal(
                    self.clock.clone(),
                    num(&args, "epoch")?,
                    &self.held,
                    self.live.clone(),
                ))),
                "ts" => {
                    let (at, eps) = (num(&args, "now")?, num(&args, "eps")?);
                    let now = TtInterval {
                        earliest: Timestamp(at.saturating_sub(eps)),
                        latest: Timestamp(at.saturating_add(eps)),
                    };
                    let inputs = TsInputs {
                        last_assigned: num(&args, "assigned")?,
                        read_floor: num(&args, "floor")?,
                        max_applied: num(&args, "applied")?,
                    };
                    let ts = choose_ts(now, inputs, num(&args, "at_least")?);
                    Ok(format!("ts {}\n", ts.0))
                }
                other => Err(format!("unknown command {other}")),
            }
        }
    }

    #[test]
    fn step_rule_scenarios() {
        crate::scenarios::check("steps", || {
            let mut harness = Harness {
                clock: Ok(()),
                held: Ok(1),
                live: None,
            };
            move |line: &str| harness.run(line)
        });
    }
}
