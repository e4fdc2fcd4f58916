//! TrueTime: time as an interval that is guaranteed to contain the true time.
//!
//! `TrueTime::now()` returns `[earliest, latest]`. Everything above this crate (commit timestamps,
//! commit wait, snapshot reads) is only as correct as the promise that true time lies inside
//! that interval, so an implementation must never report an uncertainty (ε, half the width) it
//! cannot justify.
//!
//! This crate holds:
//! - [`Timestamp`]: nanoseconds since the Unix epoch, a newtype over `u64`;
//! - [`TtInterval`]: `[earliest, latest]`;
//! - [`TrueTime`]: the trait every clock implements, with `now`, `after` and `before`;
//! - [`SystemTrueTime`]: the local system clock with a configured ε bound (the first cut; the
//!   daemon with time masters and Marzullo's algorithm replaces the bound with a measured one);
//! - [`SimulatedClock`]: a clock for tests with a settable offset and ε.
//!
//! It depends on no other Meridian crate and on no RPC library: the daemon (time masters and
//! agents over gRPC) and the agent's client clock live in `meridian-truetime-daemon`, on top.

pub mod agent;
pub mod marzullo;
pub mod master;
pub mod timer;

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: nanoseconds since the Unix epoch.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp; no commit is ever assigned it.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp: a read at `MAX` sees every committed version.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Nanoseconds since the Unix epoch.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The next timestamp, saturating at `MAX`.
    pub fn next(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }

    /// Nanoseconds in `d`, saturating at `u64::MAX`.
    fn nanos_of(d: Duration) -> u64 {
        d.as_nanos().min(u64::MAX as u128) as u64
    }
}

/// `t + d`, saturating at `Timestamp::MAX`.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(Timestamp::nanos_of(d)))
    }
}

/// `t - d`, saturating at zero.
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(Timestamp::nanos_of(d)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An uncertainty interval: true time lies in `[earliest, latest]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtInterval {
    pub earliest: Timestamp,
    pub latest: Timestamp,
}

impl TtInterval {
    /// ε: half the interval's width, in nanoseconds.
    pub fn epsilon_nanos(&self) -> u64 {
        (self.latest.0.saturating_sub(self.earliest.0)) / 2
    }
}

/// Why a clock cannot give a trustworthy interval right now.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    /// ε grew past the configured maximum; commits must wait until it shrinks.
    #[error("clock uncertainty {epsilon_ns} ns exceeds the maximum {max_ns} ns")]
    Uncertain { epsilon_ns: u64, max_ns: u64 },
}

/// A source of uncertainty intervals that always contain true time.
pub trait TrueTime: Send + Sync + 'static {
    /// The current interval.
    fn now(&self) -> TtInterval;

    /// True if `t` has definitely passed: `t < now().earliest`.
    fn after(&self, t: Timestamp) -> bool {
        t < self.now().earliest
    }

    /// True if `t` has definitely not arrived: `t > now().latest`.
    fn before(&self, t: Timestamp) -> bool {
        t > self.now().latest
    }

    /// Fails when the clock cannot justify commit timestamps now (ε too large).
    fn check_usable(&self) -> Result<(), ClockError> {
        Ok(())
    }

    /// Where the interval comes from and how wide it is now, for operators (`SHOW clock`). A
    /// bound that nothing measures starts with `WARNING`.
    fn describe(&self) -> String {
        format!("ε {} µs", self.now().epsilon_nanos() / 1000)
    }
}

fn system_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The local system clock with a configured uncertainty bound ε.
///
/// Correct only if the machine's clock really is within ε of true time; the truetime daemon
/// (its own issue) measures ε instead of trusting a configured number.
#[derive(Debug, Clone)]
pub struct SystemTrueTime {
    epsilon: Duration,
}

impl SystemTrueTime {
    /// The default bound: 7 ms, the upper end of what the Spanner paper reports.
    pub const DEFAULT_EPSILON: Duration = Duration::from_millis(7);

    pub fn new(epsilon: Duration) -> Self {
        SystemTrueTime { epsilon }
    }
}

impl Default for SystemTrueTime {
    fn default() -> Self {
        SystemTrueTime::new(Self::DEFAULT_EPSILON)
    }
}

impl TrueTime for SystemTrueTime {
    fn now(&self) -> TtInterval {
        let t = Timestamp(system_nanos());
        TtInterval {
            earliest: t - self.epsilon,
            latest: t + self.epsilon,
        }
    }

    fn describe(&self) -> String {
        format!(
            "WARNING: the system clock with a declared bound of ±{} µs, not measured (no \
             truetime agent): commits are externally consistent only if the clock really is \
             that close to true time",
            self.epsilon.as_micros()
        )
    }
}

/// A clock for tests: the system clock shifted by a settable offset, with a settable ε.
///
/// The simulated clock's own reading (system time + offset) is what it believes; true time is
/// the system clock. An interval contains true time as long as `|offset| <= ε`; tests break that
/// on purpose to show what a lying clock does.
#[derive(Debug, Default)]
pub struct SimulatedClock {
    offset_ns: AtomicI64,
    epsilon_ns: AtomicU64,
    max_epsilon_ns: AtomicU64,
}

impl SimulatedClock {
    pub fn new(offset_ns: i64, epsilon: Duration) -> Self {
        SimulatedClock {
            offset_ns: AtomicI64::new(offset_ns),
            epsilon_ns: AtomicU64::new(epsilon.as_nanos() as u64),
            max_epsilon_ns: AtomicU64::new(u64::MAX),
        }
    }

    pub fn set_offset_ns(&self, offset_ns: i64) {
        self.offset_ns.store(offset_ns, Ordering::SeqCst);
    }

    pub fn set_epsilon(&self, epsilon: Duration) {
        self.epsilon_ns
            .store(epsilon.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Above this ε, `check_usable` fails.
    pub fn set_max_epsilon(&self, max: Duration) {
        self.max_epsilon_ns
            .store(max.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl TrueTime for SimulatedClock {
    fn now(&self) -> TtInterval {
        let local = (system_nanos() as i64).saturating_add(self.offset_ns.load(Ordering::SeqCst));
        let local = local.max(0) as u64;
        let eps = self.epsilon_ns.load(Ordering::SeqCst);
        TtInterval {
            earliest: Timestamp(local.saturating_sub(eps)),
            latest: Timestamp(local.saturating_add(eps)),
        }
    }

    fn check_usable(&self) -> Result<(), ClockError> {
        let eps = self.epsilon_ns.load(Ordering::SeqCst);
        let max = self.max_epsilon_ns.load(Ordering::SeqCst);
        if eps > max {
            return Err(ClockError::Uncertain {
                epsilon_ns: eps,
                max_ns: max,
            });
        }
        Ok(())
    }
}

/// Waits until `tt.after(t)`: the commit wait that makes `t` safe to expose.
pub async fn wait_until_after(tt: &dyn TrueTime, t: Timestamp) {
    loop {
        let now = tt.now();
        if t < now.earliest {
            return;
        }
        let remaining = Duration::from_nanos(t.0 - now.earliest.0 + 1);
        timer::sleep_precise(remaining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_interval_has_configured_width() {
        let tt = SystemTrueTime::new(Duration::from_millis(3));
        let i = tt.now();
        assert_eq!(i.epsilon_nanos(), 3_000_000);
        assert!(i.earliest < i.latest);
    }

    #[test]
    fn after_and_before() {
        let tt = SimulatedClock::new(0, Duration::from_millis(1));
        let now = tt.now();
        assert!(tt.after(now.earliest - Duration::from_millis(5)));
        assert!(!tt.after(now.latest));
        assert!(tt.before(now.latest + Duration::from_millis(50)));
    }

    #[test]
    fn simulated_offset_shifts_interval() {
        let a = SimulatedClock::new(0, Duration::from_millis(1));
        let b = SimulatedClock::new(1_000_000_000, Duration::from_millis(1));
        assert!(b.now().earliest > a.now().latest);
    }

    #[test]
    fn unusable_above_max_epsilon() {
        let tt = SimulatedClock::new(0, Duration::from_millis(5));
        tt.set_max_epsilon(Duration::from_millis(2));
        assert!(tt.check_usable().is_err());
        tt.set_epsilon(Duration::from_millis(1));
        assert!(tt.check_usable().is_ok());
    }
}
