//! `meridian bench clock`: what one `TT.now()` costs on a spanserver's read path.
//!
//! Times a tight loop of calls for each clock source and prints the median over several runs
//! of the per-call cost. (PostgreSQL has no counterpart; the system clock calls are the floor.)

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meridian_truetime::{SystemTrueTime, TrueTime};

use super::stats::summarize;

const CALLS: u32 = 1_000_000;
const RUNS: usize = 7;

fn per_call(mut f: impl FnMut() -> u64) -> Duration {
    let mut sink = 0u64;
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        for _ in 0..CALLS {
            sink = sink.wrapping_add(f());
        }
        runs.push(t.elapsed() / CALLS);
    }
    std::hint::black_box(sink);
    summarize(&runs).median
}

/// Measures each source and returns the table.
pub fn run(agent_clock: Arc<dyn TrueTime>) -> String {
    let system_tt = SystemTrueTime::default();
    let rows: Vec<(&str, Duration)> = vec![
        (
            "Instant::now (CLOCK_MONOTONIC)",
            per_call(|| Instant::now().elapsed().as_nanos() as u64),
        ),
        (
            "SystemTime::now (CLOCK_REALTIME)",
            per_call(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
        ),
        (
            "SystemTrueTime::now (fixed ε)",
            per_call(|| system_tt.now().latest.0),
        ),
        (
            "AgentClock::now (agent-fed, extrapolated)",
            per_call(|| agent_clock.now().latest.0),
        ),
    ];
    let mut out = format!("TT.now() cost, median of {RUNS} runs of {CALLS} calls, one thread\n");
    out.push_str(&format!("{:<44} {:>10}\n", "source", "ns/call"));
    for (name, d) in rows {
        out.push_str(&format!("{:<44} {:>10}\n", name, d.as_nanos()));
    }
    out
}
