//! The bank checker's own tests: it finds what it must, on histories made by hand.

use super::*;

fn transfer(from: usize, to: usize, amount: i64) -> Transfer {
    Transfer { from, to, amount }
}

fn committed(transfer: Transfer, began_ns: u64, returned_ns: u64, ts: u64) -> Committed {
    Committed {
        client: 0,
        transfer,
        began_ns,
        returned_ns,
        commit_ts: Some(ts),
    }
}

fn opening_plus(transfers: &[Transfer]) -> Balances {
    transfers
        .iter()
        .fold([INITIAL_BALANCE; ACCOUNTS], |b, t| add(&b, &t.delta()))
}

#[test]
fn checker_explains_balances_by_a_subset_of_unknowns() {
    let acked = committed(transfer(0, 1, 10), 0, 1, 1);
    let unknown = [transfer(2, 3, 5), transfer(3, 4, 7), transfer(5, 6, 1)];
    let balances = opening_plus(&[acked.transfer, unknown[1]]);
    let how =
        explain_balances(&balances, std::slice::from_ref(&acked), &unknown).expect("explained");
    assert_eq!(how, "explained exactly, e.g. with 1 of 3 applied");
    // A lost acknowledged transfer is not explained.
    let lost = opening_plus(&[unknown[0]]);
    explain_balances(&lost, &[acked], &unknown).expect_err("acknowledged transfer lost");
}

#[test]
fn checker_bounds_many_unknowns() {
    let unknown: Vec<Transfer> = (0..40).map(|i| transfer(i % 10, (i + 1) % 10, 1)).collect();
    let balances = opening_plus(&unknown[..5]);
    explain_balances(&balances, &[], &unknown).expect("within bounds");
    let mut invented = balances;
    invented[0] += 50;
    invented[1] -= 50;
    explain_balances(&invented, &[], &unknown).expect_err("beyond what unknowns allow");
}

#[test]
fn checker_finds_timestamp_inversions_and_stale_reads() {
    let t = transfer(0, 1, 1);
    let ordered = [committed(t, 0, 100, 50), committed(t, 150, 300, 200)];
    assert!(check_external_consistency(&ordered).is_empty());
    assert!(check_commit_wait(&ordered).is_empty());
    let inverted = [committed(t, 0, 100, 90), committed(t, 150, 300, 80)];
    assert_eq!(check_external_consistency(&inverted).len(), 1);
    // Overlapping transactions may commit in either order.
    let overlapping = [committed(t, 0, 200, 90), committed(t, 150, 300, 80)];
    assert!(check_external_consistency(&overlapping).is_empty());
    let late = [committed(t, 0, 100, 100)];
    assert_eq!(check_commit_wait(&late).len(), 1);

    let check = |began_ns, read_ts| ReadCheck {
        client: 1,
        began_ns,
        read_ts,
    };
    assert!(check_strong_reads(&[check(310, 200), check(120, 60)], &ordered).is_empty());
    assert_eq!(check_strong_reads(&[check(310, 199)], &ordered).len(), 1);
}
