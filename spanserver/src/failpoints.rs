//! Named crash points, for tests that kill a server at an exact step of a protocol.
//!
//! A point is armed by name; the first time the server reaches an armed point it disarms it
//! and crashes there: the Raft driver stops at once, without answering anyone or writing
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

use std::collections::HashSet;

use parking_lot::Mutex;

pub const PARTICIPANT_AFTER_PREPARE: &str = "participant-after-prepare";
pub const COORDINATOR_AFTER_DECIDE: &str = "coordinator-after-decide";
pub const CRASH_NOW: &str = "crash-now";
const KNOWN: [&str; 3] = [
    PARTICIPANT_AFTER_PREPARE,
    COORDINATOR_AFTER_DECIDE,
    CRASH_NOW,
];

/// The crash points armed on one server.
#[derive(Debug, Default)]
pub struct Failpoints {
    armed: Mutex<HashSet<String>>,
    /// Exit the process when a point fires (real servers) instead of stopping the driver
    /// (in-process test clusters).
    pub exit_process: bool,
}

impl Failpoints {
    /// Points from a comma-separated list; unknown names are an error.
    pub fn parse(list: &str, exit_process: bool) -> Result<Failpoints, String> {
        let f = Failpoints {
            armed: Mutex::default(),
            exit_process,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            f.arm(name)?;
        }
        Ok(f)
    }

    pub fn arm(&self, name: &str) -> Result<(), String> {
        if !KNOWN.contains(&name) {
            return Err(format!(
                "unknown failpoint {name:?} (known: {})",
                KNOWN.join(", ")
            ));
        }
        self.armed.lock().insert(name.to_string());
        Ok(())
    }

    /// True (once) if `name` is armed: the caller must crash now.
    pub fn fire(&self, name: &str) -> bool {
        let fired = self.armed.lock().remove(name);
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
    }
}
