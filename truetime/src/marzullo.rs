//! Marzullo's algorithm: the smallest interval consistent with the most sources.
//!
//! Each time master contributes an interval that should contain true time. A correct master's
//! interval does; a falseticker's (a master whose clock is off by more than it declares) may
//! not. The intervals of all correct masters share at least one point (true time), so the
//! region covered by the most intervals is where true time must lie, provided the correct
//! masters outnumber the liars. [`intersect`] sweeps the interval ends in order, finds that
//! region, and reports which sources agree with it and which it rejected.
//!
//! With `n` sources it tolerates `f` falsetickers when at least `n - f` agree and those are a
//! majority: `f` of `2f + 1`. With fewer agreeing it returns `None`, and the caller must not
//! trust any of them.

/// An interval `[lo, hi]` in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub lo: u64,
    pub hi: u64,
}

/// The outcome of [`intersect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The smallest interval consistent with every agreeing source.
    pub interval: Interval,
    /// Indexes (into the input) of the sources whose intervals contain `interval`.
    pub agreeing: Vec<usize>,
    /// Indexes of the sources rejected as falsetickers.
    pub rejected: Vec<usize>,
}

/// The most falsetickers `n` sources can outvote: `f` such that `n >= 2f + 1`.
pub fn max_falsetickers(n: usize) -> usize {
    n.saturating_sub(1) / 2
}

/// Intersects `intervals`, tolerating up to `max_falsetickers(n)` sources that lie. Returns
/// `None` when fewer than `n - f` sources (or no majority) agree on a common region. Intervals
/// with `lo > hi` are malformed and count as falsetickers.
pub fn intersect(intervals: &[Interval]) -> Option<Agreement> {
    let n = intervals.len();
    if n == 0 {
        return None;
    }
    let required = (n - max_falsetickers(n)).max(n / 2 + 1);
    // Events: (offset, kind) with starts (-1) sorted before ends (+1) at equal offsets, so
    // intervals that touch at a point count as overlapping.
    let mut events: Vec<(u64, i8)> = Vec::with_capacity(2 * n);
    for iv in intervals.iter().filter(|iv| iv.lo <= iv.hi) {
        events.push((iv.lo, -1));
        events.push((iv.hi, 1));
    }
    events.sort_unstable();
    let (mut best, mut count) = (0usize, 0usize);
    let mut best_interval = None;
    for (i, (offset, kind)) in events.iter().enumerate() {
        if *kind < 0 {
            count += 1;
            if count > best {
                best = count;
                // The region of maximal overlap runs to the next event, which is an end.
                let end = events.get(i + 1).map_or(*offset, |e| e.0);
                best_interval = Some(Interval {
                    lo: *offset,
                    hi: end,
                });
            }
        } else {
            count = count.saturating_sub(1);
        }
    }
    let interval = best_interval?;
    if best < required {
        return None;
    }
    let (agreeing, rejected): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|i| intervals[*i].lo <= interval.lo && interval.hi <= intervals[*i].hi);
    Some(Agreement {
        interval,
        agreeing,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iv(lo: u64, hi: u64) -> Interval {
        Interval { lo, hi }
    }

    #[test]
    fn three_agree() {
        let a = intersect(&[iv(10, 20), iv(12, 25), iv(8, 15)]).expect("agreement");
        assert_eq!(a.interval, iv(12, 15));
        assert_eq!(a.agreeing, vec![0, 1, 2]);
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn one_falseticker_of_three_is_rejected() {
        let a = intersect(&[iv(10, 20), iv(100, 110), iv(15, 30)]).expect("agreement");
        assert_eq!(a.interval, iv(15, 20));
        assert_eq!(a.agreeing, vec![0, 2]);
        assert_eq!(a.rejected, vec![1]);
    }

    #[test]
    fn no_majority_no_answer() {
        assert_eq!(intersect(&[iv(0, 1), iv(5, 6), iv(10, 11)]), None);
        assert_eq!(intersect(&[iv(0, 1), iv(5, 6)]), None);
        assert_eq!(intersect(&[]), None);
    }

    #[test]
    fn touching_intervals_overlap() {
        let a = intersect(&[iv(0, 10), iv(10, 20)]).expect("agreement");
        assert_eq!(a.interval, iv(10, 10));
    }

    #[test]
    fn malformed_intervals_are_falsetickers() {
        let a = intersect(&[iv(10, 20), iv(30, 5), iv(12, 18)]).expect("agreement");
        assert_eq!(a.rejected, vec![1]);
    }

    proptest! {
        /// Whenever every source is correct (contains `truth`), the answer contains it too.
        #[test]
        fn correct_sources_keep_the_truth(
            truth in 1_000_000u64..2_000_000,
            widths in prop::collection::vec((0u64..50_000, 0u64..50_000), 1..7),
        ) {
            let ivs: Vec<Interval> = widths.iter().map(|(a, b)| iv(truth - a, truth + b)).collect();
            let a = intersect(&ivs).expect("correct sources always agree");
            prop_assert!(a.interval.lo <= truth && truth <= a.interval.hi);
            prop_assert_eq!(a.agreeing.len(), ivs.len());
        }

        /// With f liars among 2f+1 sources, the answer still contains the truth.
        #[test]
        fn minority_liars_are_outvoted(
            truth in 1_000_000u64..2_000_000,
            honest in prop::collection::vec((0u64..50_000, 0u64..50_000), 3..6),
            liars in prop::collection::vec((100_000u64..900_000, 0u64..20_000), 0..3),
        ) {
            prop_assume!(liars.len() <= max_falsetickers(honest.len() + liars.len()));
            let mut ivs: Vec<Interval> = honest.iter().map(|(a, b)| iv(truth - a, truth + b)).collect();
            ivs.extend(liars.iter().map(|(off, w)| iv(truth + off, truth + off + w)));
            let a = intersect(&ivs).expect("honest majority agrees");
            prop_assert!(a.interval.lo <= truth && truth <= a.interval.hi);
        }
    }
}
