//! The lock table's unit and property tests.

use super::*;

use proptest::prelude::*;

fn prio(txn: TxnId) -> Priority {
    Priority { ts: txn, txn }
}

fn acquire(
    table: &mut LockTable,
    txn: TxnId,
    spans: &[Span],
    mode: LockMode,
    waiter: WaiterId,
    now: Instant,
) -> (Result<Acquired, Refusal>, Effects) {
    table.acquire(txn, prio(txn), spans.to_vec(), mode, waiter, now)
}

/// A request that must be granted at once; returns the epoch.
fn grant(
    table: &mut LockTable,
    txn: TxnId,
    spans: &[Span],
    mode: LockMode,
    waiter: WaiterId,
    now: Instant,
) -> u64 {
    match acquire(table, txn, spans, mode, waiter, now).0 {
        Ok(Acquired::Granted { epoch }) => epoch,
        other => panic!("txn {txn} not granted: {other:?}"),
    }
}

#[test]
fn spans() {
    let a = Span::point(b"a");
    assert!(a.is_point());
    assert_eq!(a.to_string(), "[a]");
    assert!(!Span::range(b"a", b"b").is_point());
    assert!(Span::range(b"b", b"b").is_empty());
    assert!(Span::range(b"c", b"b").is_empty());
    assert!(!Span::range(b"c", b"").is_empty());
    assert!(a.overlaps(&Span::range(b"", b"b")));
    assert!(!a.overlaps(&Span::range(b"a\0", b"")));
    assert!(!a.overlaps(&Span::range(b"", b"a")));
    assert!(!a.overlaps(&Span::range(b"b", b"a")));
    assert!(Span::range(b"a", b"").covers(&Span::range(b"b", b"")));
    assert!(!Span::range(b"a", b"c").covers(&Span::range(b"b", b"")));
    assert!(Span::range(b"a", b"c").covers(&a));
    assert_eq!(Span::range(b"a", b"").to_string(), "[a,)");
}

#[test]
fn shared_locks_coexist_and_exclusive_waits() {
    let now = Instant::now();
    let mut t = LockTable::new(100);
    let a = [Span::point(b"a")];
    let (r, e) = acquire(&mut t, 1, &a, LockMode::Shared, 1, now);
    assert_eq!(r, Ok(Acquired::Granted { epoch: 101 }));
    assert_eq!(e, Effects::default());
    let (r, _) = acquire(&mut t, 2, &a, LockMode::Shared, 2, now);
    assert_eq!(r, Ok(Acquired::Granted { epoch: 102 }));
    assert!(!t.is_exclusively_locked(b"a"));
    // Txn 3 is younger than both readers: it waits.
    let (r, e) = acquire(&mut t, 3, &a, LockMode::Exclusive, 3, now);
    assert_eq!(r, Ok(Acquired::Waiting));
    assert!(e.wounded.is_empty());
    assert_eq!(t.release(1), Effects::default());
    let e = t.release(2);
    assert_eq!(e.granted, vec![(3, 3)]);
    assert!(t.is_exclusively_locked(b"a"));
    assert_eq!(t.check(3, now), Ok(103));
    assert_eq!(t.len(), 1);
}

#[test]
fn older_wounds_younger_but_not_prepared() {
    let now = Instant::now();
    let mut t = LockTable::new(0);
    let a = [Span::point(b"a")];
    grant(&mut t, 5, &a, LockMode::Exclusive, 1, now);
    let (r, e) = acquire(&mut t, 2, &a, LockMode::Exclusive, 2, now);
    assert_eq!(r, Ok(Acquired::Granted { epoch: 2 }));
    assert_eq!(e.wounded, vec![5]);
    assert_eq!(t.check(5, now), Err(Refusal::Wounded));
    assert_eq!(t.mark_prepared(5), Err(Refusal::Wounded));
    let (r, _) = acquire(&mut t, 5, &[Span::point(b"z")], LockMode::Shared, 3, now);
    assert_eq!(r, Err(Refusal::Wounded));
    // Released, the tombstone is gone and the transaction may start afresh.
    t.release(5);
    assert_eq!(t.check(5, now), Err(Refusal::Lost));

    t.mark_prepared(2).expect("prepare");
    let (r, e) = acquire(&mut t, 1, &a, LockMode::Shared, 4, now);
    assert_eq!(r, Ok(Acquired::Waiting));
    assert!(e.wounded.is_empty());
    assert_eq!(t.mark_prepared(1), Err(Refusal::AlreadyWaiting));
    let (r, _) = acquire(&mut t, 2, &[Span::point(b"b")], LockMode::Shared, 5, now);
    assert_eq!(r, Err(Refusal::AlreadyPrepared));
    assert_eq!(t.release(2).granted, vec![(4, 1)]);
}

#[test]
fn caller_bugs_are_refused() {
    let now = Instant::now();
    let mut t = LockTable::new(0);
    let a = [Span::point(b"a")];
    grant(&mut t, 1, &a, LockMode::Exclusive, 1, now);
    assert_eq!(
        acquire(&mut t, 2, &a, LockMode::Exclusive, 7, now).0,
        Ok(Acquired::Waiting)
    );
    assert_eq!(
        acquire(&mut t, 2, &a, LockMode::Exclusive, 8, now).0,
        Err(Refusal::AlreadyWaiting)
    );
    assert_eq!(
        acquire(&mut t, 3, &a, LockMode::Exclusive, 7, now).0,
        Err(Refusal::WaiterInUse)
    );
    assert_eq!(
        t.check(3, now),
        Err(Refusal::Lost),
        "a refused request creates nothing"
    );
    assert_eq!(t.mark_prepared(9), Err(Refusal::Lost));
    // Empty and inverted spans lock nothing.
    let (r, _) = acquire(
        &mut t,
        4,
        &[Span::range(b"b", b"a")],
        LockMode::Exclusive,
        9,
        now,
    );
    assert_eq!(r, Ok(Acquired::Granted { epoch: 3 }));
    assert_eq!(t.clear(), vec![7]);
    assert!(t.is_empty());
    assert_eq!(t.check(1, now), Err(Refusal::Lost));
    // Epochs keep counting after a clear.
    assert_eq!(
        acquire(&mut t, 1, &a, LockMode::Shared, 1, now).0,
        Ok(Acquired::Granted { epoch: 4 })
    );
}

#[test]
fn release_refuses_its_own_waiter_and_cancel_unblocks_queue() {
    let now = Instant::now();
    let mut t = LockTable::new(0);
    let a = [Span::point(b"a")];
    grant(&mut t, 1, &a, LockMode::Exclusive, 1, now);
    let (r, _) = acquire(&mut t, 2, &a, LockMode::Exclusive, 2, now);
    assert_eq!(r, Ok(Acquired::Waiting));
    // Txn 3's shared request on b is compatible with every holder but queues behind 2.
    let ab = [Span::point(b"a"), Span::point(b"b")];
    grant(&mut t, 3, &[Span::point(b"b")], LockMode::Shared, 3, now);
    let (r, _) = acquire(&mut t, 4, &ab, LockMode::Shared, 4, now);
    assert_eq!(r, Ok(Acquired::Waiting));
    let e = t.release(2);
    assert_eq!(e.refused, vec![(2, Refusal::Lost)]);
    assert!(
        e.granted.is_empty(),
        "4 still waits for 1's exclusive lock on a"
    );
    assert_eq!(t.cancel(4), Effects::default());
    assert_eq!(t.cancel(4), Effects::default());
    assert_eq!(t.len(), 3);
}

#[test]
fn expiry_spares_prepared_and_forgets_tombstones() {
    let start = Instant::now();
    let idle = Duration::from_secs(3);
    let mut t = LockTable::new(0);
    grant(
        &mut t,
        1,
        &[Span::point(b"a")],
        LockMode::Exclusive,
        1,
        start,
    );
    grant(
        &mut t,
        2,
        &[Span::point(b"b")],
        LockMode::Exclusive,
        2,
        start,
    );
    t.mark_prepared(2).expect("prepare");
    let later = start + Duration::from_secs(4);
    let (r, _) = acquire(
        &mut t,
        3,
        &[Span::point(b"a")],
        LockMode::Exclusive,
        3,
        later,
    );
    assert_eq!(r, Ok(Acquired::Waiting));
    let e = t.expire_idle(later, idle);
    assert_eq!(e.wounded, vec![1]);
    assert_eq!(e.granted, vec![(3, 3)]);
    assert_eq!(t.check(1, later), Err(Refusal::Lost));
    assert_eq!(t.check(2, later), Ok(2));
    let much_later = later + Duration::from_secs(4);
    t.expire_idle(much_later, idle);
    // The tombstone was forgotten: txn 1 starts afresh with a new epoch.
    assert_eq!(
        acquire(
            &mut t,
            1,
            &[Span::point(b"z")],
            LockMode::Shared,
            4,
            much_later
        )
        .0,
        Ok(Acquired::Granted { epoch: 4 })
    );
}

// ---- invariants and a randomized test ----

/// Checks the table's internal invariants; returns a description of the first violation.
fn check_invariants(t: &LockTable) -> Result<(), String> {
    let mut locks: Vec<(TxnId, &Span, LockMode)> = Vec::new();
    for (txn, state) in &t.txns {
        let TxnState::Live(entry) = state else {
            continue;
        };
        for lock in &entry.locks {
            match t.index.holder(lock.id, &lock.span) {
                Some(h) if h.txn == *txn => locks.push((*txn, &lock.span, h.mode)),
                _ => return Err(format!("lock {} of txn {txn} not indexed", lock.id)),
            }
        }
        if let Some(w) = entry.waiting {
            if t.waiters.get(&w).map(|r| r.txn) != Some(*txn) {
                return Err(format!("txn {txn} waits as {w}, which is not its request"));
            }
            if entry.prepared {
                return Err(format!("prepared txn {txn} waits"));
            }
        }
    }
    let indexed = t.index.points.len() + t.index.ranges.len();
    if indexed != locks.len() {
        return Err(format!(
            "index holds {indexed} locks, live entries {} (tombstones hold locks?)",
            locks.len()
        ));
    }
    for (i, (ta, sa, ma)) in locks.iter().enumerate() {
        for (tb, sb, mb) in &locks[i + 1..] {
            if ta != tb && ma.conflicts_with(*mb) && sa.overlaps(sb) {
                return Err(format!("txn {ta} {sa} and txn {tb} {sb} conflict"));
            }
        }
    }
    for (w, request) in &t.waiters {
        let Some(entry) = t.live(request.txn) else {
            return Err(format!("waiter {w} of dead txn {}", request.txn));
        };
        if entry.waiting != Some(*w) {
            return Err(format!("waiter {w} unknown to txn {}", request.txn));
        }
        let rank = (entry.priority, request.txn);
        let mut blocked = false;
        for (holder, span, mode) in &locks {
            if *holder == request.txn
                || !mode.conflicts_with(request.mode)
                || !request.spans.iter().any(|s| s.overlaps(span))
            {
                continue;
            }
            blocked = true;
            let h = t.live(*holder).ok_or("holder not live")?;
            if !h.prepared && rank < (h.priority, *holder) {
                return Err(format!("waiter {w} should have wounded txn {holder}"));
            }
        }
        blocked =
            blocked || t.older_waiter_conflicts(request.txn, rank, &request.spans, request.mode);
        if !blocked {
            return Err(format!("waiter {w} could be granted"));
        }
    }
    Ok(())
}

/// A transaction restored as prepared: its id, written keys and read spans.
type Restore = (TxnId, Vec<u8>, Vec<SpanSeed>);

/// A span drawn at random: (kind, key, key), see [`span`].
type SpanSeed = (u8, u8, u8);

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        txn: TxnId,
        ts: u64,
        spans: Vec<SpanSeed>,
        exclusive: bool,
    },
    Check(TxnId),
    Prepare(TxnId),
    Release(TxnId),
    Cancel(u64),
    Advance(u64),
    Expire(u64),
    /// A leader change: each transaction comes back prepared with write keys and read spans.
    ClearAndRestore(Vec<Restore>),
}

fn op() -> impl Strategy<Value = Op> {
    let txn = 1..7u64;
    prop_oneof![
        8 => (txn.clone(), 0..8u64, prop::collection::vec((0..3u8, 0..6u8, 0..6u8), 1..3), any::<bool>())
            .prop_map(|(txn, ts, spans, exclusive)| Op::Acquire { txn, ts, spans, exclusive }),
        1 => txn.clone().prop_map(Op::Check),
        2 => txn.clone().prop_map(Op::Prepare),
        3 => txn.clone().prop_map(Op::Release),
        1 => (0..40u64).prop_map(Op::Cancel),
        1 => (0..3u64).prop_map(Op::Advance),
        1 => (1..4u64).prop_map(Op::Expire),
        1 => prop::collection::vec(
            (txn, prop::collection::vec(0..6u8, 0..3), prop::collection::vec((0..3u8, 0..6u8, 0..6u8), 0..2)),
            0..3,
        )
        .prop_map(Op::ClearAndRestore),
    ]
}

fn key(k: u8) -> Vec<u8> {
    vec![b'a' + k]
}

/// A point at `a` (kind 0), a range from `a` to `b` (1), or unbounded from `a` (2).
fn span((kind, a, b): SpanSeed) -> Span {
    match kind {
        0 => Span::point(&key(a)),
        1 => Span::range(&key(a.min(b)), &key(a.max(b) + 1)),
        _ => Span::range(&key(a), b""),
    }
}

/// Applies `ops`, checking after each that the invariants hold and that every waiting
/// request is answered exactly once (granted, refused, cancelled or cleared).
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut now = Instant::now();
    let mut t = LockTable::new(0);
    let mut outstanding: BTreeSet<WaiterId> = BTreeSet::new();
    let mut last_waiter = 0;
    for op in ops {
        let prepared: Vec<TxnId> = t
            .txns
            .iter()
            .filter(|(_, state)| matches!(state, TxnState::Live(e) if e.prepared))
            .map(|(txn, _)| *txn)
            .collect();
        let effects = match op.clone() {
            Op::Acquire {
                txn,
                ts,
                spans,
                exclusive,
            } => {
                last_waiter += 1;
                let tombstone = match t.txns.get(&txn) {
                    Some(TxnState::Tombstone { reason, .. }) => Some(reason.clone()),
                    _ => None,
                };
                let mode = if exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                let spans = spans.into_iter().map(span).collect();
                let priority = Priority { ts, txn };
                let (result, effects) = t.acquire(txn, priority, spans, mode, last_waiter, now);
                if let Some(reason) = tombstone {
                    prop_assert_eq!(&result, &Err(reason), "a tombstone was not refused");
                }
                match result {
                    Ok(Acquired::Waiting) => {
                        outstanding.insert(last_waiter);
                    }
                    Ok(Acquired::Granted { epoch }) => {
                        prop_assert_eq!(t.live(txn).map(|e| e.epoch), Some(epoch));
                    }
                    Err(_) => {}
                }
                effects
            }
            Op::Check(txn) => {
                let _ = t.check(txn, now);
                Effects::default()
            }
            Op::Prepare(txn) => {
                let _ = t.mark_prepared(txn);
                Effects::default()
            }
            Op::Release(txn) => t.release(txn),
            Op::Cancel(w) => {
                outstanding.remove(&w);
                t.cancel(w)
            }
            Op::Advance(secs) => {
                now += Duration::from_secs(secs);
                Effects::default()
            }
            Op::Expire(secs) => t.expire_idle(now, Duration::from_secs(secs)),
            Op::ClearAndRestore(restores) => {
                let cleared: BTreeSet<WaiterId> = t.clear().into_iter().collect();
                prop_assert_eq!(&cleared, &outstanding);
                outstanding.clear();
                // Prepared transactions held their locks together: keep them compatible.
                let mut written: Vec<Span> = Vec::new();
                let mut read: Vec<Span> = Vec::new();
                for (txn, keys, reads) in restores {
                    let keys: Vec<Vec<u8>> = keys
                        .into_iter()
                        .map(key)
                        .filter(|k| {
                            let p = Span::point(k);
                            !written.iter().chain(&read).any(|s| s.overlaps(&p))
                        })
                        .collect();
                    let reads: Vec<Span> = reads
                        .into_iter()
                        .map(span)
                        .filter(|r| !written.iter().any(|s| s.overlaps(r)))
                        .collect();
                    written.extend(keys.iter().map(|k| Span::point(k)));
                    read.extend(reads.iter().cloned());
                    let priority = Priority { ts: txn, txn };
                    t.restore_prepared(txn, priority, reads, keys, now);
                }
                Effects::default()
            }
        };
        let answered = effects.granted.iter().map(|(w, _)| *w);
        let answered = answered.chain(effects.refused.iter().map(|(w, _)| *w));
        for w in answered {
            prop_assert!(outstanding.remove(&w), "waiter {} answered twice", w);
        }
        for txn in &effects.wounded {
            prop_assert!(
                matches!(t.txns.get(txn), Some(TxnState::Tombstone { .. })),
                "wounded txn {} is not a tombstone",
                txn
            );
        }
        // A prepared transaction keeps its locks until it is released or the table cleared.
        for txn in prepared {
            let ended =
                matches!(op, Op::Release(r) if r == txn) || matches!(op, Op::ClearAndRestore(_));
            prop_assert!(
                ended || matches!(t.txns.get(&txn), Some(TxnState::Live(e)) if e.prepared),
                "prepared txn {} lost its locks after {:?}",
                txn,
                op
            );
        }
        let waiting: BTreeSet<WaiterId> = t.waiters.keys().copied().collect();
        prop_assert_eq!(&waiting, &outstanding, "after {:?}", op);
        if let Err(e) = check_invariants(&t) {
            return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
