//! Time masters' clock sources: where a master's reading and its error bound come from.
//!
//! A master must never declare a bound it cannot justify. [`SystemClockSource`] asks the kernel
//! (`adjtimex`, read-only) whether the clock is disciplined: if it is (STA_UNSYNC clear and the
//! call did not return TIME_ERROR), the bound is the kernel's `maxerror`, which the NTP/PTP
//! discipline keeps as a worst case; if not, it falls back to the bound configured on the
//! command line (`--error-bound-us`) and says so in every reading's `source`.
//!
//! [`Injected`] wraps a source with a fixed offset and a drift for tests and chaos runs. It
//! keeps declaring the wrapped source's bound, so an injected error beyond that bound makes the
//! master a falseticker, which is exactly what those tests need.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a reading's error bound came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundSource {
    /// The kernel's clock discipline (`adjtimex` maxerror).
    Kernel,
    /// The bound configured for an undisciplined clock.
    Configured,
}

impl BoundSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BoundSource::Kernel => "kernel",
            BoundSource::Configured => "configured",
        }
    }
}

/// A master's clock reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterReading {
    pub time_ns: u64,
    pub error_bound_ns: u64,
    pub source: BoundSource,
}

/// A master's clock.
pub trait ClockSource: Send + Sync + 'static {
    fn read(&self) -> MasterReading;
}

/// What the kernel says about the system clock's discipline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClockStatus {
    pub synchronized: bool,
    /// Maximum error, ns.
    pub max_error_ns: u64,
    /// Estimated error, ns.
    pub est_error_ns: u64,
}

/// Reads the kernel's clock discipline state without changing it (`adjtimex` with modes = 0).
pub fn kernel_clock_status() -> Option<KernelClockStatus> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are valid; with modes = 0
    // adjtimex only reads the kernel's state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, exclusively borrowed timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    let unsynced = (tx.status & libc::STA_UNSYNC) != 0 || state == libc::TIME_ERROR;
    Some(KernelClockStatus {
        synchronized: !unsynced,
        max_error_ns: (tx.maxerror.max(0) as u64).saturating_mul(1_000),
        est_error_ns: (tx.esterror.max(0) as u64).saturating_mul(1_000),
    })
}

fn system_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The system clock, with the kernel's bound when disciplined, else a configured one.
#[derive(Clone, Debug)]
pub struct SystemClockSource {
    configured_bound: Duration,
}

impl SystemClockSource {
    pub fn new(configured_bound: Duration) -> SystemClockSource {
        SystemClockSource { configured_bound }
    }
}

impl ClockSource for SystemClockSource {
    fn read(&self) -> MasterReading {
        let status = kernel_clock_status();
        let time_ns = system_now_ns();
        match status {
            Some(s) if s.synchronized => MasterReading {
                time_ns,
                error_bound_ns: s.max_error_ns,
                source: BoundSource::Kernel,
            },
            _ => MasterReading {
                time_ns,
                error_bound_ns: self.configured_bound.as_nanos() as u64,
                source: BoundSource::Configured,
            },
        }
    }
}

/// A clock source shifted by a fixed offset plus a drift since creation (tests and chaos).
pub struct Injected<S> {
    inner: S,
    offset_ns: i64,
    drift_ppm: i64,
    start: Instant,
}

impl<S: ClockSource> Injected<S> {
    pub fn new(inner: S, offset: i64, drift_ppm: i64) -> Injected<S> {
        Injected {
            inner,
            offset_ns: offset,
            drift_ppm,
            start: Instant::now(),
        }
    }
}

impl<S: ClockSource> ClockSource for Injected<S> {
    fn read(&self) -> MasterReading {
        let mut r = self.inner.read();
        let elapsed = self.start.elapsed().as_nanos() as i128;
        let shift = self.offset_ns as i128 + elapsed * self.drift_ppm as i128 / 1_000_000;
        r.time_ns = (r.time_ns as i128 + shift).clamp(0, u64::MAX as i128) as u64;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_status_is_readable_or_absent_and_never_panics() {
        if let Some(s) = kernel_clock_status() {
            assert!(s.max_error_ns >= s.est_error_ns || !s.synchronized);
        }
    }

    #[test]
    fn configured_bound_when_not_disciplined() {
        let r = SystemClockSource::new(Duration::from_micros(250)).read();
        match r.source {
            BoundSource::Configured => assert_eq!(r.error_bound_ns, 250_000),
            BoundSource::Kernel => {
                assert!(
                    kernel_clock_status().is_some_and(|s| s.synchronized),
                    "kernel bound only when synchronized"
                )
            }
        }
    }

    #[test]
    fn injection_shifts_the_reading() {
        let base = SystemClockSource::new(Duration::from_micros(100));
        let shifted = Injected::new(
            SystemClockSource::new(Duration::from_micros(100)),
            5_000_000_000,
            0,
        );
        let (a, b) = (base.read(), shifted.read());
        assert!(b.time_ns > a.time_ns + 4_000_000_000);
        assert_eq!(a.error_bound_ns, b.error_bound_ns);
    }
}
