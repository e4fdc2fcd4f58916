//! Scenario tests for [`LockTable`]: scripts under `spanserver/testdata/locks/` drive one table
//! through lock requests, wounds, prepares, releases, cancels, expiry and leader changes, and
//! their output is compared with recorded `.out` files (`UPDATE_GOLDEN=1` rewrites them; then
//! read the diff, a golden file is only as good as its review).
//!
//! The clock is fake: it starts at an arbitrary instant and moves only with `advance`, so runs
//! are deterministic.
//!
//! Commands (`T` a transaction, `W` a waiter id; a priority defaults to the transaction id):
//! - `acquire T [prio=P] s|x SPAN... w=W`: a lock request. A span is `[k]` (one key), `[a,c)`
//!   or `[a,)` (unbounded);
//! - `check T`, `prepare T`, `release T`, `cancel W`;
//! - `restore T [prio=P] SPAN... K...`: a prepared transaction recovered by a new leader, with
//!   shared locks on the spans it read and exclusive locks on the keys it writes;
//! - `advance 5s` / `advance 500ms`: move the clock; `expire idle=3s`: `expire_idle`;
//! - `clear`: leadership lost, prints the waiters to fail;
//! - `dump`: every transaction (locks, waiting request, idle time) and tombstone.
//!
//! Each call prints its result, then its effects indented: `wounded T`, `w=W refused R`,
//! `w=W granted to T`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{Acquired, Effects, LockMode, LockTable, Priority, Span, TxnState};

struct Harness {
    table: LockTable,
    start: Instant,
    elapsed: Duration,
}

impl Harness {
    fn new() -> Self {
        Harness {
            table: LockTable::new(0),
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
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
        let now = self.now();
        match words.first().copied() {
            Some("acquire") => {
                let txn = arg(1)?;
                let mut priority = Priority { ts: txn, txn };
                let mut mode = None;
                let mut spans = Vec::new();
                let mut waiter = None;
                for word in &words[2..] {
                    if let Some(p) = word.strip_prefix("prio=") {
                        priority.ts = p.parse().map_err(|_| format!("bad priority {p}"))?;
                    } else if let Some(w) = word.strip_prefix("w=") {
                        waiter = Some(w.parse().map_err(|_| format!("bad waiter {w}"))?);
                    } else if *word == "s" {
                        mode = Some(LockMode::Shared);
                    } else if *word == "x" {
                        mode = Some(LockMode::Exclusive);
                    } else {
                        spans.push(parse_span(word)?);
                    }
                }
                let mode = mode.ok_or("missing mode s|x")?;
                let waiter = waiter.ok_or("missing w=")?;
                let (result, effects) = self.table.acquire(txn, priority, spans, mode, waiter, now);
                let mut out = match result {
                    Ok(Acquired::Granted { epoch }) => format!("granted epoch={epoch}\n"),
                    Ok(Acquired::Waiting) => "waiting\n".to_string(),
                    Err(refusal) => format!("refused {refusal:?}\n"),
                };
                out.push_str(&format_effects(&effects));
                Ok(out)
            }
            Some("check") => Ok(match self.table.check(arg(1)?, now) {
                Ok(epoch) => format!("epoch={epoch}\n"),
                Err(refusal) => format!("refused {refusal:?}\n"),
            }),
            Some("prepare") => Ok(match self.table.mark_prepared(arg(1)?) {
                Ok(()) => "prepared\n".to_string(),
                Err(refusal) => format!("refused {refusal:?}\n"),
            }),
            Some("release") => Ok(format_effects(&self.table.release(arg(1)?))),
            Some("cancel") => Ok(format_effects(&self.table.cancel(arg(1)?))),
            Some("restore") => {
                let txn = arg(1)?;
                let mut priority = Priority { ts: txn, txn };
                let mut reads = Vec::new();
                let mut keys = Vec::new();
                for word in &words[2..] {
                    if let Some(p) = word.strip_prefix("prio=") {
                        priority.ts = p.parse().map_err(|_| format!("bad priority {p}"))?;
                    } else if word.starts_with('[') {
                        reads.push(parse_span(word)?);
                    } else {
                        keys.push(word.as_bytes().to_vec());
                    }
                }
                let effects = self.table.restore_prepared(txn, priority, reads, keys, now);
                Ok(format_effects(&effects))
            }
            Some("advance") => {
                self.elapsed += parse_duration(words.get(1).ok_or("missing duration")?)?;
                Ok(String::new())
            }
            Some("expire") => {
                let idle = words
                    .get(1)
                    .and_then(|w| w.strip_prefix("idle="))
                    .ok_or("expected idle=DURATION")?;
                let idle = parse_duration(idle)?;
                Ok(format_effects(&self.table.expire_idle(now, idle)))
            }
            Some("clear") => {
                let waiters: Vec<String> = self
                    .table
                    .clear()
                    .iter()
                    .map(|w| format!("w={w}"))
                    .collect();
                Ok(format!("waiters to fail: [{}]\n", waiters.join(" ")))
            }
            Some("dump") => Ok(self.dump()),
            Some(other) => Err(format!("unknown command {other}")),
            None => Ok(String::new()),
        }
    }

    fn dump(&self) -> String {
        let now = self.now();
        let mut out = String::new();
        for (txn, state) in &self.table.txns {
            let _ = match state {
                TxnState::Live(entry) => {
                    let locks: Vec<String> = entry
                        .locks
                        .iter()
                        .map(|l| {
                            let held = self.table.index.holder(l.id, &l.span);
                            format!("{}{}", held.map_or("?", |h| mode(h.mode)), l.span)
                        })
                        .collect();
                    let _ = write!(
                        out,
                        "txn {txn} prio={} epoch={} idle={:?}{}: [{}]",
                        entry.priority.ts,
                        entry.epoch,
                        now.saturating_duration_since(entry.last_active),
                        if entry.prepared { " prepared" } else { "" },
                        locks.join(" "),
                    );
                    match entry
                        .waiting
                        .and_then(|w| Some((w, self.table.waiters.get(&w)?)))
                    {
                        Some((w, request)) => {
                            let spans: Vec<String> =
                                request.spans.iter().map(Span::to_string).collect();
                            writeln!(
                                out,
                                " waiting w={w} {} {}",
                                mode(request.mode),
                                spans.join(" ")
                            )
                        }
                        None => writeln!(out),
                    }
                }
                TxnState::Tombstone { reason, since } => writeln!(
                    out,
                    "txn {txn} tombstone {reason:?} age={:?}",
                    now.saturating_duration_since(*since)
                ),
            };
        }
        if out.is_empty() {
            out.push_str("(empty)\n");
        }
        out
    }
}

fn mode(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "s",
        LockMode::Exclusive => "x",
    }
}

fn format_effects(effects: &Effects) -> String {
    let mut out = String::new();
    for txn in &effects.wounded {
        let _ = writeln!(out, "  wounded {txn}");
    }
    for (waiter, refusal) in &effects.refused {
        let _ = writeln!(out, "  w={waiter} refused {refusal:?}");
    }
    for (waiter, txn) in &effects.granted {
        let _ = writeln!(out, "  w={waiter} granted to {txn}");
    }
    out
}

/// `[k]`, `[a,c)` or `[a,)`.
fn parse_span(word: &str) -> Result<Span, String> {
    let inner = word
        .strip_prefix('[')
        .ok_or_else(|| format!("bad span {word}"))?;
    if let Some(key) = inner.strip_suffix(']') {
        return Ok(Span::point(key.as_bytes()));
    }
    let (start, end) = inner
        .strip_suffix(')')
        .and_then(|range| range.split_once(','))
        .ok_or_else(|| format!("bad span {word}"))?;
    Ok(Span::range(start.as_bytes(), end.as_bytes()))
}

/// `5s` or `500ms`.
fn parse_duration(word: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {word}");
    if let Some(ms) = word.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    word.strip_suffix('s')
        .ok_or_else(bad)?
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| bad())
}

#[test]
fn lock_table_scenarios() {
    crate::scenarios::check("locks", || {
        let mut harness = Harness::new();
        move |line: &str| harness.run(line)
    });
}
