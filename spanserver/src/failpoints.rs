//! Named fault points, for tests that crash a server at an exact step of a protocol or make
//! it refuse a step as a real conflict would.
//!
//! A crash point is armed by name; the first time the server reaches an armed point it
//! disarms it and crashes there: the Raft driver stops at once, without answering anyone or writing
//! anything more, as a killed process would. A server started by `meridian start` arms the
//! points named in `MERIDIAN_FAILPOINTS` (comma-separated) and exits the process with status 137
//! (as if killed with SIGKILL) when one fires.
//!
//! Points:
//! - `participant-after-prepare`: a two-phase commit participant leader has applied its prepare
//!   record and not yet answered;
//! - `coordinator-after-decide`: a coordinator leader has applied its commit decision and not
//!   yet answered or told any participant;
//! - `crash-now`: the driver's next loop iteration (a crash at no particular step, without the
//!   lease hand-over of a graceful shutdown).
//!
//! A refusal point does not crash: armed `n` times (`name=n` in the list, [`Failpoints::arm_times`]),
//! it makes the next `n` steps that reach it fail as the real fault would.
//! - `commit-conflict`: a leader refuses a commit, prepare or decision (or the validation that
//!   commits a transaction that only read there) as if the transaction had been wounded: the
//!   client sees a retryable abort (SQLSTATE 40001), and the locks are released.

use std::collections::HashMap;

use parking_lot::Mutex;

pub const PARTICIPANT_AFTER_PREPARE: &str = "participant-after-prepare";
pub const COORDINATOR_AFTER_DECIDE: &str = "coordinator-after-decide";
pub const CRASH_NOW: &str = "crash-now";
pub const COMMIT_CONFLICT: &str = "commit-conflict";
const KNOWN: [&str; 4] = [
    PARTICIPANT_AFTER_PREPARE,
    COORDINATOR_AFTER_DECIDE,
    CRASH_NOW,
    COMMIT_CONFLICT,
];

/// The crash points armed on one server.
#[derive(Debug, Default)]
pub struct Failpoints {
    /// Armed points and how many more times each fires.
    armed: Mutex<HashMap<String, u32>>,
    /// Exit the process when a point fires (real servers) instead of stopping the driver
    /// (in-process test clusters).
    pub exit_process: bool,
}

impl Failpoints {
    /// Points from a comma-separated list of `name` or `name=times`; unknown names and bad
    /// counts are an error.
    pub fn parse(list: &str, exit_process: bool) -> Result<Failpoints, String> {
        let f = Failpoints {
            armed: Mutex::default(),
            exit_process,
        };
        for item in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match item.split_once('=') {
                None => f.arm(item)?,
                Some((name, times)) => {
                    let times = times
                        .trim()
                        .parse::<u32>()
                        .map_err(|e| format!("failpoint {name:?}: bad count {times:?}: {e}"))?;
                    f.arm_times(name.trim(), times)?
                }
            }
        }
        Ok(f)
    }

    /// Arms `name` once.
    pub fn arm(&self, name: &str) -> Result<(), String> {
        self.arm_times(name, 1)
    }

    /// Arms `name` to fire the next `times` times it is reached (0 disarms it).
    pub fn arm_times(&self, name: &str, times: u32) -> Result<(), String> {
        if !KNOWN.contains(&name) {
            return Err(format!(
                "unknown failpoint {name:?} (known: {})",
                KNOWN.join(", ")
            ));
        }
        let mut armed = self.armed.lock();
        if times == 0 {
            armed.remove(name);
        } else {
            armed.insert(name.to_string(), times);
        }
        Ok(())
    }

    /// Counts one firing of `name` if it is armed.
    fn take(&self, name: &str) -> bool {
        let mut armed = self.armed.lock();
        match armed.get_mut(name) {
            Some(left) if *left > 1 => {
                *left -= 1;
                true
            }
            Some(_) => {
                armed.remove(name);
                true
            }
            None => false,
        }
    }

    /// True if refusal point `name` is armed: the caller must refuse this step. Never crashes.
    pub fn refuse(&self, name: &str) -> bool {
        let fired = self.take(name);
        if fired {
            tracing::warn!(failpoint = name, "failpoint reached: refusing the step");
        }
        fired
    }

    /// True (once) if crash point `name` is armed: the caller must crash now.
    pub fn fire(&self, name: &str) -> bool {
        let fired = self.take(name);
        if fired {
            tracing::error!(failpoint = name, "failpoint reached: crashing");
            if self.exit_process {
                std::process::exit(137);
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_fire_once_and_unknown_names_are_refused() {
        let f = Failpoints::parse(" participant-after-prepare ,", false).expect("parse");
        assert!(!f.fire(COORDINATOR_AFTER_DECIDE));
        assert!(f.fire(PARTICIPANT_AFTER_PREPARE));
        assert!(!f.fire(PARTICIPANT_AFTER_PREPARE));
        assert!(Failpoints::parse("nope", false).is_err());
        assert!(Failpoints::parse("commit-conflict=x", false).is_err());
    }

    #[test]
    fn refusal_points_fire_as_many_times_as_armed() {
        let f = Failpoints::parse("commit-conflict=2", false).expect("parse");
        assert!(f.refuse(COMMIT_CONFLICT));
        assert!(f.refuse(COMMIT_CONFLICT));
        assert!(!f.refuse(COMMIT_CONFLICT));
        f.arm_times(COMMIT_CONFLICT, 1).expect("arm");
        f.arm_times(COMMIT_CONFLICT, 0).expect("disarm");
        assert!(!f.refuse(COMMIT_CONFLICT));
    }
}
