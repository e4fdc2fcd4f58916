//! The time agent's logic as a pure state machine: poll results in, uncertainty intervals out.
//! No sockets and no clocks inside: monotonic time is passed in, so tests drive it with
//! simulated clocks (STYLE.md rules 4 and 5). The poll loop and the gRPC service wrap it.
//!
//! # From a master's reply to an interval
//!
//! The agent sends a request at local monotonic time `send` and gets the reply at `recv`. The
//! master read its clock at some unknown instant inside that round trip and answered `t_m` with
//! error bound `b`: true time at that instant was within `[t_m - b, t_m + b]`. By `recv`, between
//! zero and the whole round trip has passed since then, so true time at `recv` lies in
//!
//! ```text
//!     [t_m - b,  t_m + b + rtt⁺]        rtt⁺ = rtt widened by the drift rate
//! ```
//!
//! # Between polls
//!
//! Each poll's intervals are moved to one instant (the poll's end) and intersected with
//! Marzullo's algorithm ([`crate::marzullo`]). The result is anchored at that monotonic instant.
//! Later, `e` monotonic nanoseconds on, the local oscillator may have run fast or slow by up to
//! the drift rate `d` (default 200 ppm, the Spanner paper's 200 µs/s), so true elapsed time lies
//! in `[e / (1 + d), e / (1 - d)]`, and the interval widens accordingly. Integer arithmetic
//! rounds every widening outward.
//!
//! # States
//!
//! - `Unknown`: never had a quorum of masters.
//! - `Synchronized`: the last poll had a quorum.
//! - `FreeRunning`: the last poll had none; ε keeps growing from the last good interval.
//! - `Unusable`: ε exceeds the configured maximum; servers refuse read-write commits.

use std::time::Duration;

use crate::marzullo::{self, Interval};
use crate::{Timestamp, TtInterval};

/// Parts per million in one.
const PPM: u128 = 1_000_000;

/// Agent settings.
#[derive(Clone, Copy, Debug)]
pub struct AgentConfig {
    /// The most the local monotonic clock may drift from true time, in parts per million.
    pub drift_ppm: u64,
    /// Above this ε the agent reports `Unusable`.
    pub max_epsilon: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            drift_ppm: 200,
            max_epsilon: Duration::from_millis(20),
        }
    }
}

/// The agent's view of its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Unknown,
    Synchronized,
    FreeRunning,
    Unusable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Synchronized => "synchronized",
            Status::FreeRunning => "free-running",
            Status::Unusable => "unusable",
        }
    }

    /// Parses [`Status::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Unknown,
            Status::Synchronized,
            Status::FreeRunning,
            Status::Unusable,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A master's answer: its clock and the error bound it declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub time_ns: u64,
    pub error_bound_ns: u64,
}

/// One master's reply (or failure) in a poll, with the local monotonic times around it.
#[derive(Clone, Copy, Debug)]
pub struct PollResult {
    pub reading: Option<Reading>,
    pub send_mono: Duration,
    pub recv_mono: Duration,
}

/// What a poll concluded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub answered: usize,
    pub agreeing: usize,
    pub rejected: usize,
    pub quorum: bool,
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    earliest: u64,
    latest: u64,
    mono: Duration,
}

/// The agent state machine.
#[derive(Clone, Debug)]
pub struct Agent {
    config: AgentConfig,
    anchor: Option<Anchor>,
    last_poll_quorum: bool,
}

/// `ns * ppm / (1e6 ± ppm)`, rounded up.
fn widen(ns: u128, ppm: u64, denominator_sign_plus: bool) -> u128 {
    let ppm = ppm as u128;
    let den = if denominator_sign_plus {
        PPM + ppm
    } else {
        PPM.saturating_sub(ppm).max(1)
    };
    (ns * ppm).div_ceil(den)
}

fn to_u64(x: u128) -> u64 {
    x.min(u64::MAX as u128) as u64
}

/// Moves an interval `[lo, hi]` forward by `elapsed` of a local monotonic clock that may drift
/// by up to `drift_ppm`: true elapsed time lies in `[e / (1 + d), e / (1 - d)]`, rounded outward.
pub fn extrapolate(lo: u64, hi: u64, elapsed: Duration, drift_ppm: u64) -> (u64, u64) {
    let e = elapsed.as_nanos();
    let lo = lo as u128 + e - widen(e, drift_ppm, true);
    let hi = hi as u128 + e + widen(e, drift_ppm, false);
    (to_u64(lo), to_u64(hi))
}

/// Widens a round trip `rtt` by the drift rate, rounding up.
pub fn rtt_upper(rtt: Duration, drift_ppm: u64) -> u64 {
    let rtt = rtt.as_nanos();
    to_u64(rtt + widen(rtt, drift_ppm, false))
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            config,
            anchor: None,
            last_poll_quorum: false,
        }
    }

    pub fn config(&self) -> AgentConfig {
        self.config
    }

    /// Moves `[lo, hi]`, valid at monotonic `from`, to monotonic `to` (>= from).
    fn carry(&self, lo: u64, hi: u64, from: Duration, to: Duration) -> (u64, u64) {
        extrapolate(lo, hi, to.saturating_sub(from), self.config.drift_ppm)
    }

    /// Takes one poll's results, all received by `now_mono`.
    pub fn on_poll(&mut self, results: &[PollResult], now_mono: Duration) -> PollOutcome {
        let mut intervals = Vec::new();
        for r in results {
            let Some(reading) = r.reading else { continue };
            let rtt = r.recv_mono.saturating_sub(r.send_mono).as_nanos();
            let rtt_up = rtt + widen(rtt, self.config.drift_ppm, false);
            let lo = reading.time_ns.saturating_sub(reading.error_bound_ns);
            let hi = to_u64(reading.time_ns as u128 + reading.error_bound_ns as u128 + rtt_up);
            let (lo, hi) = self.carry(lo, hi, r.recv_mono, now_mono.max(r.recv_mono));
            intervals.push(Interval { lo, hi });
        }
        // A quorum is a majority of all masters polled, not only of those that answered.
        let mut outcome = PollOutcome {
            answered: intervals.len(),
            ..Default::default()
        };
        let agreement =
            marzullo::intersect(&intervals).filter(|a| a.agreeing.len() > results.len() / 2);
        match agreement {
            Some(a) => {
                outcome.agreeing = a.agreeing.len();
                outcome.rejected = a.rejected.len();
                outcome.quorum = true;
                self.anchor = Some(Anchor {
                    earliest: a.interval.lo,
                    latest: a.interval.hi,
                    mono: now_mono,
                });
                self.last_poll_quorum = true;
            }
            None => {
                outcome.rejected = intervals.len();
                self.last_poll_quorum = false;
            }
        }
        outcome
    }

    /// The interval at monotonic time `now_mono`, and the agent's status. `None` before the
    /// first quorum.
    pub fn bound_at(&self, now_mono: Duration) -> (Option<TtInterval>, Status) {
        let Some(a) = self.anchor else {
            return (None, Status::Unknown);
        };
        let (lo, hi) = self.carry(a.earliest, a.latest, a.mono, now_mono.max(a.mono));
        let interval = TtInterval {
            earliest: Timestamp(lo),
            latest: Timestamp(hi),
        };
        let status = if Duration::from_nanos(interval.epsilon_nanos()) > self.config.max_epsilon {
            Status::Unusable
        } else if self.last_poll_quorum {
            Status::Synchronized
        } else {
            Status::FreeRunning
        };
        (Some(interval), status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A simulated world: true time is `t` ns; the local monotonic clock reads
    /// `t * (1e6 + drift) / 1e6`; master `i` reads `t + offset_i` and declares `bound_i`.
    struct World {
        drift_ppm: i64,
        masters: Vec<(i64, u64)>,
    }

    impl World {
        fn mono(&self, t: u64) -> Duration {
            Duration::from_nanos(
                (t as i128 * (1_000_000 + self.drift_ppm as i128) / 1_000_000) as u64,
            )
        }

        /// Polls every master: request leaves at true `t`, master reads at `t + before`, reply
        /// arrives at `t + before + after`.
        fn poll(&self, t: u64, delays: &[(u64, u64)], down: &[bool]) -> (Vec<PollResult>, u64) {
            let mut results = Vec::new();
            let mut end = t;
            for (i, (offset, bound)) in self.masters.iter().enumerate() {
                let (before, after) = delays[i % delays.len()];
                let read_at = t + before;
                let recv = read_at + after;
                end = end.max(recv);
                let reading = (!down[i % down.len()]).then(|| Reading {
                    time_ns: (read_at as i64 + offset) as u64,
                    error_bound_ns: *bound,
                });
                results.push(PollResult {
                    reading,
                    send_mono: self.mono(t),
                    recv_mono: self.mono(recv),
                });
            }
            (results, end)
        }
    }

    fn contains(i: TtInterval, t: u64) -> bool {
        i.earliest.0 <= t && t <= i.latest.0
    }

    const START: u64 = 1_800_000_000_000_000_000;

    proptest! {
        /// Honest masters: every interval served at any later time contains true time.
        #[test]
        fn honest_masters_bound_true_time(
            drift in -200i64..=200,
            masters in prop::collection::vec((-500_000i64..500_000, 0u64..500_000), 3..6),
            delays in prop::collection::vec((0u64..200_000, 0u64..200_000), 1..4),
            checks in prop::collection::vec(0u64..5_000_000_000, 1..8),
        ) {
            let masters: Vec<(i64, u64)> =
                masters.into_iter().map(|(off, extra)| (off, off.unsigned_abs() + extra)).collect();
            let world = World { drift_ppm: drift, masters };
            let mut agent = Agent::new(AgentConfig { drift_ppm: 200, max_epsilon: Duration::from_secs(10) });
            let (results, end) = world.poll(START, &delays, &[false]);
            let outcome = agent.on_poll(&results, world.mono(end));
            prop_assert!(outcome.quorum);
            for c in checks {
                let t = end + c;
                let (interval, status) = agent.bound_at(world.mono(t));
                let interval = interval.expect("synchronized");
                prop_assert!(contains(interval, t), "{:?} does not contain {}", interval, t);
                prop_assert_eq!(status, Status::Synchronized);
            }
        }

        /// Several polls with varying round trips (the agent keeps the tighter of the fresh and
        /// the carried interval): every interval still contains true time.
        #[test]
        fn repeated_polls_stay_correct(
            drift in -200i64..=200,
            masters in prop::collection::vec((-300_000i64..300_000, 0u64..300_000), 3..5),
            polls in prop::collection::vec(
                (prop::collection::vec((0u64..3_000_000, 0u64..3_000_000), 1..3), 1_000_000u64..2_000_000_000),
                1..6,
            ),
        ) {
            let masters: Vec<(i64, u64)> =
                masters.into_iter().map(|(off, extra)| (off, off.unsigned_abs() + extra)).collect();
            let world = World { drift_ppm: drift, masters };
            let mut agent = Agent::new(AgentConfig { drift_ppm: 200, max_epsilon: Duration::from_secs(10) });
            let mut t = START;
            for (delays, gap) in polls {
                let (results, end) = world.poll(t, &delays, &[false]);
                agent.on_poll(&results, world.mono(end));
                for probe in [end, end + gap / 2] {
                    let (interval, _) = agent.bound_at(world.mono(probe));
                    prop_assert!(contains(interval.expect("bound"), probe));
                }
                t = end + gap;
            }
        }

        /// One falseticker among three: rejected, and the interval still contains true time.
        #[test]
        fn one_falseticker_of_three_is_rejected(
            lie in 5_000_000i64..1_000_000_000,
            sign in prop::bool::ANY,
            honest_off in -100_000i64..100_000,
            delay in 0u64..100_000,
        ) {
            let lie = if sign { lie } else { -lie };
            let world = World {
                drift_ppm: 0,
                masters: vec![(honest_off, 200_000), (lie, 1_000_000), (-honest_off, 200_000)],
            };
            let mut agent = Agent::new(AgentConfig::default());
            let (results, end) = world.poll(START, &[(delay, delay)], &[false]);
            let outcome = agent.on_poll(&results, world.mono(end));
            prop_assert!(outcome.quorum);
            prop_assert_eq!(outcome.rejected, 1);
            let (interval, _) = agent.bound_at(world.mono(end));
            prop_assert!(contains(interval.expect("bound"), end));
        }
    }

    #[test]
    fn without_masters_epsilon_grows_at_the_drift_rate_until_unusable_then_recovers() {
        let world = World {
            drift_ppm: 0,
            masters: vec![(0, 100_000), (0, 100_000), (0, 100_000)],
        };
        let config = AgentConfig {
            drift_ppm: 200,
            max_epsilon: Duration::from_millis(5),
        };
        let mut agent = Agent::new(config);
        let (results, end) = world.poll(START, &[(1_000, 1_000)], &[false]);
        assert!(agent.on_poll(&results, world.mono(end)).quorum);
        let (i0, s0) = agent.bound_at(world.mono(end));
        assert_eq!(s0, Status::Synchronized);
        let eps0 = i0.expect("bound").epsilon_nanos();

        // Masters unreachable: polls fail, ε grows by at least 200 µs per second.
        let mut t = end;
        let mut last_eps = eps0;
        let mut status = s0;
        for second in 1..=40u64 {
            t = end + second * 1_000_000_000;
            let (results, _) = world.poll(t, &[(0, 0)], &[true]);
            assert!(!agent.on_poll(&results, world.mono(t)).quorum);
            let (i, s) = agent.bound_at(world.mono(t));
            let eps = i.expect("still extrapolating").epsilon_nanos();
            assert!(contains(i.expect("bound"), t));
            assert!(
                eps >= last_eps + 200_000,
                "ε must grow at least at the drift rate"
            );
            last_eps = eps;
            status = s;
            if s == Status::Unusable {
                break;
            }
            assert_eq!(s, Status::FreeRunning);
        }
        assert_eq!(
            status,
            Status::Unusable,
            "ε beyond the maximum makes the agent unusable"
        );

        // Masters return: one good poll recovers.
        let (results, end2) = world.poll(t + 1_000_000, &[(1_000, 1_000)], &[false]);
        assert!(agent.on_poll(&results, world.mono(end2)).quorum);
        let (i, s) = agent.bound_at(world.mono(end2));
        assert_eq!(s, Status::Synchronized);
        assert!(i.expect("bound").epsilon_nanos() <= eps0 + 1_000);
    }

    #[test]
    fn a_minority_of_answers_is_no_quorum() {
        let world = World {
            drift_ppm: 0,
            masters: vec![(0, 1_000), (0, 1_000), (0, 1_000)],
        };
        let mut agent = Agent::new(AgentConfig::default());
        let (results, end) = world.poll(START, &[(10, 10)], &[false, true, true]);
        assert!(!agent.on_poll(&results, world.mono(end)).quorum);
        assert_eq!(agent.bound_at(world.mono(end)).1, Status::Unknown);
    }
}
