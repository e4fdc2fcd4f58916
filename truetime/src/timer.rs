//! A sleep with sub-millisecond precision, for commit wait.
//!
//! tokio's timer wheel has millisecond resolution and rounds every sleep up to the next tick,
//! so a commit wait of 1.2 ms would last 2–3 ms: most of a commit's latency when ε is about a
//! millisecond. [`sleep_precise`] instead hands the deadline to one timer thread that sleeps on
//! a condition variable until the earliest deadline (the kernel's high-resolution timers wake
//! it within tens of microseconds) and completes the waiting futures. Nothing spins.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Entry {
    deadline: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
    /// False if the timer thread could not be started: sleeps then use tokio's timer.
    running: std::sync::atomic::AtomicBool,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            running: std::sync::atomic::AtomicBool::new(true),
        }));
        let spawned = std::thread::Builder::new()
            .name("truetime-timer".into())
            .spawn(move || run(timer));
        if let Err(e) = spawned {
            // Without the thread, sleep_precise falls back to tokio's timer (see there).
            timer
                .running
                .store(false, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %e, "truetime: cannot start the timer thread");
        }
        timer
    })
}

/// The timer thread: completes every entry whose deadline has passed, then sleeps until the
/// next one (or until a new entry arrives).
fn run(timer: &Timer) {
    let mut queue = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while queue
            .heap
            .peek()
            .is_some_and(|Reverse(e)| e.deadline <= now)
        {
            if let Some(Reverse(entry)) = queue.heap.pop() {
                let _ = entry.wake.send(());
            }
        }
        queue = match queue.heap.peek() {
            Some(Reverse(next)) => {
                let wait = next.deadline.saturating_duration_since(now);
                timer
                    .changed
                    .wait_timeout(queue, wait)
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0)
            }
            None => timer.changed.wait(queue).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Sleeps for `d`, waking within tens of microseconds of the deadline.
pub async fn sleep_precise(d: Duration) {
    let deadline = Instant::now() + d;
    let timer = timer();
    if !timer.running.load(std::sync::atomic::Ordering::Acquire) {
        // Late rather than early: tokio's millisecond wheel rounds up.
        tokio::time::sleep_until(deadline.into()).await;
        return;
    }
    let (wake, woken) = oneshot::channel();
    {
        let mut queue = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.heap.push(Reverse(Entry {
            deadline,
            seq,
            wake,
        }));
    }
    timer.changed.notify_one();
    if woken.await.is_err() {
        // The entry was dropped unanswered (the timer thread died): tokio's coarser timer
        // still ends the wait, late rather than early.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_end_at_their_deadline_in_order() {
        let started = Instant::now();
        let (short, long) = tokio::join!(
            async {
                sleep_precise(Duration::from_micros(300)).await;
                started.elapsed()
            },
            async {
                sleep_precise(Duration::from_micros(1500)).await;
                started.elapsed()
            }
        );
        assert!(short >= Duration::from_micros(300), "{short:?}");
        assert!(long >= Duration::from_micros(1500), "{long:?}");
        assert!(short < long, "{short:?} then {long:?}");
    }
}
