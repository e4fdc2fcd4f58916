//! Transactions across tablets: two-phase commit, wound-wait across groups, and a leader
//! killed at each failure point of the protocol. Each test runs in its own process (nextest),
//! so the failpoints armed here touch no other test.

mod common;

use std::time::{Duration, Instant};

use common::table_prefix;
use common::{get, key, leader_of, put, two_tables_with_distinct_leaders, Cluster};
use meridian_kv::Error as StoreError;
use meridian_spanserver::failpoints;
use meridian_spanserver::raft::GroupId;
use meridian_spanserver::storage::mvcc;
use meridian_spanserver::storage::rocks::RocksEngine;
use meridian_spanserver::tablet::TxnRecords;
use meridian_truetime::Timestamp;

/// The value of `key` in server `i`'s own replica (the server must be stopped), and how many
/// transactions its replica of the group holding `key` still has prepared.
fn replica_state(cluster: &Cluster, i: usize, key: &[u8]) -> (Option<Vec<u8>>, usize) {
    let engine = RocksEngine::open(&cluster.engine_path(i)).expect("open replica");
    let value = mvcc::get(&engine, key, Timestamp(u64::MAX))
        .expect("read")
        .and_then(|v| v.value);
    let mut prepared = 0;
    for group in 1..64 {
        prepared += TxnRecords::load(&engine, GroupId(group))
            .expect("records")
            .prepared
            .len();
    }
    (value, prepared)
}

/// Every replica agrees on `expected` for each key and holds nothing prepared. Replicas may
/// still be catching up when first checked, so the cluster runs a little longer between tries.
async fn all_replicas_agree(cluster: &mut Cluster, expected: &[(Vec<u8>, Option<Vec<u8>>)]) {
    let mut last = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.stop_all().await;
        last.clear();
        for i in 0..3 {
            for (k, want) in expected {
                let (value, prepared) = replica_state(cluster, i, k);
                if &value != want || prepared != 0 {
                    last.push(format!(
                        "server {}: key {k:?} = {value:?} (want {want:?}), {prepared} prepared",
                        i + 1
                    ));
                }
            }
        }
        if last.is_empty() {
            return;
        }
        for i in 0..3 {
            cluster.restart(i).await;
        }
    }
    panic!("replicas disagree: {last:#?}");
}

fn server_index(server_id: u64) -> usize {
    server_id as usize - 1
}

async fn leader_index(cluster: &Cluster, table: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = leader_of(&cluster.pd_addr, table).await {
            return server_index(l);
        }
        assert!(Instant::now() < deadline, "no leader for table {table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A write to both keys must go through within a few seconds: no lock or prepare record of an
/// earlier transaction is left blocking them.
async fn keys_are_free(store: &meridian_kv::Client, a: &[u8], b: &[u8]) {
    let started = Instant::now();
    let mut t = store.begin(None);
    t.put(a.to_vec(), b"free".to_vec())
        .expect("a write within the limits");
    t.put(b.to_vec(), b"free".to_vec())
        .expect("a write within the limits");
    t.commit()
        .await
        .expect("a later transaction on the same keys commits");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the keys were blocked for {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_across_tablets_commits_atomically() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let (a, b) = two_tables_with_distinct_leaders(&cluster, &store).await;

    let before = put(&store, &key(a, 9), b"x")
        .await
        .expect("single-group commit");
    let mut t = store.begin(None);
    assert_eq!(
        t.get(&key(a, 0)).await.expect("read"),
        Some(b"init".to_vec())
    );
    assert_eq!(
        t.get(&key(b, 0)).await.expect("read"),
        Some(b"init".to_vec())
    );
    t.put(key(a, 1), b"a1".to_vec())
        .expect("a write within the limits");
    t.put(key(b, 1), b"b1".to_vec())
        .expect("a write within the limits");
    t.delete(key(b, 0)).expect("a write within the limits");
    let ts = t
        .commit()
        .await
        .expect("two-phase commit")
        .expect("a commit timestamp");
    assert!(ts > before, "commit timestamps follow real time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(
        ts < now,
        "commit wait: the timestamp has passed when COMMIT returns"
    );
    assert_eq!(
        get(&store, &key(a, 1)).await.expect("read"),
        Some(b"a1".to_vec())
    );
    assert_eq!(
        get(&store, &key(b, 1)).await.expect("read"),
        Some(b"b1".to_vec())
    );
    assert_eq!(get(&store, &key(b, 0)).await.expect("read"), None);

    // A transaction that only reads across tablets commits with no timestamp.
    let mut r = store.begin(None);
    r.get(&key(a, 1)).await.expect("read");
    r.get(&key(b, 1)).await.expect("read");
    assert_eq!(r.commit().await.expect("read-only commit"), None);

    // A rollback gives the locks back at once.
    let mut rb = store.begin(None);
    rb.get(&key(a, 1)).await.expect("read");
    rb.put(key(b, 1), b"never".to_vec())
        .expect("a write within the limits");
    rb.rollback().await;
    keys_are_free(&store, &key(a, 1), &key(b, 1)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_transactions_do_not_deadlock_and_the_older_wins() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let (a, b) = two_tables_with_distinct_leaders(&cluster, &store).await;

    // t1 (older) reads a then writes b; t2 (younger) reads b then writes a: a cycle if both
    // waited. Wound-wait: t1's lock on b wounds t2; t2 waits for t1 at a, then fails.
    let mut t1 = store.begin(Some(1));
    let mut t2 = store.begin(Some(2));
    t1.get(&key(a, 0)).await.expect("t1 reads a");
    t2.get(&key(b, 0)).await.expect("t2 reads b");
    t1.put(key(b, 0), b"t1".to_vec())
        .expect("a write within the limits");
    t2.put(key(a, 0), b"t2".to_vec())
        .expect("a write within the limits");
    let started = Instant::now();
    let (r1, r2) = tokio::join!(t1.commit(), t2.commit());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(r1.is_ok(), "the older transaction commits: {r1:?}");
    assert!(
        matches!(r2, Err(StoreError::Aborted(_))),
        "the younger one is wounded: {r2:?}"
    );
    assert_eq!(
        get(&store, &key(b, 0)).await.expect("read"),
        Some(b"t1".to_vec())
    );
    assert_eq!(
        get(&store, &key(a, 0)).await.expect("read"),
        Some(b"init".to_vec())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participant_leader_killed_after_prepare_aborts_cleanly() {
    common::init_tracing();
    let mut cluster = Cluster::start_with_lease(Duration::from_secs(3)).await;
    let store = cluster.store();
    let (a, b) = two_tables_with_distinct_leaders(&cluster, &store).await;
    // The coordinator is the first written group: table a's (tables get increasing ids, so a's
    // keys sort first). Kill table b's leader right after it prepares.
    assert!(table_prefix(a) < table_prefix(b));
    let victim = leader_index(&cluster, b).await;
    cluster
        .failpoints(victim)
        .arm(failpoints::PARTICIPANT_AFTER_PREPARE)
        .expect("arm");

    let mut t = store.begin(None);
    t.put(key(a, 1), b"a1".to_vec())
        .expect("a write within the limits");
    t.put(key(b, 1), b"b1".to_vec())
        .expect("a write within the limits");
    let result = t.commit().await;
    assert!(
        result.is_err(),
        "the participant died before answering: {result:?}"
    );
    cluster.stop(victim).await;
    cluster.restart(victim).await;

    // Nobody decided commit, so the transaction is aborted everywhere, and its keys are free.
    let store = cluster.store();
    keys_are_free(&store, &key(a, 2), &key(b, 2)).await;
    assert_eq!(get(&store, &key(a, 1)).await.expect("read"), None);
    assert_eq!(get(&store, &key(b, 1)).await.expect("read"), None);
    keys_are_free(&store, &key(a, 1), &key(b, 1)).await;
    all_replicas_agree(
        &mut cluster,
        &[
            (key(a, 1), Some(b"free".to_vec())),
            (key(b, 1), Some(b"free".to_vec())),
        ],
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_killed_after_deciding_commit_still_commits_everywhere() {
    common::init_tracing();
    let mut cluster = Cluster::start_with_lease(Duration::from_secs(3)).await;
    let store = cluster.store();
    let (a, b) = two_tables_with_distinct_leaders(&cluster, &store).await;
    assert!(table_prefix(a) < table_prefix(b));
    let victim = leader_index(&cluster, a).await;
    cluster
        .failpoints(victim)
        .arm(failpoints::COORDINATOR_AFTER_DECIDE)
        .expect("arm");

    let mut t = store.begin(None);
    t.put(key(a, 1), b"a1".to_vec())
        .expect("a write within the limits");
    t.put(key(b, 1), b"b1".to_vec())
        .expect("a write within the limits");
    match t.commit().await {
        Err(StoreError::Ambiguous(_)) => {}
        other => panic!("the coordinator died before answering: {other:?}"),
    }
    cluster.stop(victim).await;

    // The decision was logged: the new coordinator leader and the participant, which asks it,
    // finish the commit with the dead server still down.
    let store = cluster.store();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Reads of b wait for the prepared transaction's locks and may time out meanwhile.
        let a1 = get(&store, &key(a, 1)).await;
        let b1 = get(&store, &key(b, 1)).await;
        if let (Ok(Some(_)), Ok(Some(_))) = (&a1, &b1) {
            assert_eq!(
                (a1.ok().flatten(), b1.ok().flatten()),
                (Some(b"a1".to_vec()), Some(b"b1".to_vec()))
            );
            break;
        }
        assert!(
            !matches!(a1, Ok(None)),
            "the decision was logged: a's write must be there"
        );
        assert!(
            Instant::now() < deadline,
            "the participant never resolved: {a1:?} {b1:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.restart(victim).await;
    keys_are_free(&store, &key(a, 1), &key(b, 1)).await;
    all_replicas_agree(
        &mut cluster,
        &[
            (key(a, 1), Some(b"free".to_vec())),
            (key(b, 1), Some(b"free".to_vec())),
        ],
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_interactive_transaction_keeps_its_locks() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let (a, b) = two_tables_with_distinct_leaders(&cluster, &store).await;
    let mut t = store.begin(None);
    t.get(&key(a, 0)).await.expect("read a");
    t.get(&key(b, 0)).await.expect("read b");
    // Longer than the leaders' idle timeout: only the gateway's heartbeats keep the locks.
    tokio::time::sleep(
        meridian_spanserver::raft::driver::TXN_IDLE_TIMEOUT + Duration::from_secs(2),
    )
    .await;
    t.put(key(a, 0), b"thought about it".to_vec())
        .expect("a write within the limits");
    t.put(key(b, 0), b"thought about it".to_vec())
        .expect("a write within the limits");
    t.commit()
        .await
        .expect("the transaction's locks survived its client's pause");
    assert_eq!(
        get(&store, &key(b, 0)).await.expect("read"),
        Some(b"thought about it".to_vec())
    );
    cluster.shutdown().await;
}

/// A leader whose lease lapses and is renewed within its term keeps its lock table: a
/// transaction that read under the old lease commits under the renewed one (its shared lock,
/// and the epoch it was taken in, still stand). The lapse is made by moving the leader's clock
/// past its lease's end; Raft's heartbeats go on, so no election happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_renewed_in_its_term_keeps_the_lock_table() {
    use meridian_truetime::SimulatedClock;
    common::init_tracing();
    let lease = Duration::from_secs(2);
    let clocks: Vec<std::sync::Arc<SimulatedClock>> = (0..3)
        .map(|_| std::sync::Arc::new(SimulatedClock::new(0, Duration::from_millis(1))))
        .collect();
    let configs = clocks
        .iter()
        .map(|clock| common::NodeConfig {
            tt: clock.clone(),
            lease,
            ..common::NodeConfig::default()
        })
        .collect();
    let cluster = Cluster::start_with(configs).await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    let k = key(table, 1);
    put(&store, &k, b"before").await.expect("write");
    let leader = leader_index(&cluster, table).await;

    let mut t = store.begin(None);
    assert_eq!(
        t.get(&k).await.expect("read under the first lease"),
        Some(b"before".to_vec())
    );
    // From now on the leader's lease is past: it serves nothing until it has renewed the lease
    // (in the same term), so the commit below lands under the renewed lease.
    clocks[leader].set_offset_ns((lease + Duration::from_secs(1)).as_nanos() as i64);
    t.put(k.clone(), b"after".to_vec())
        .expect("a write within the limits");
    t.commit()
        .await
        .expect("the read lock taken under the old lease still stands");
    assert_eq!(
        leader_index(&cluster, table).await,
        leader,
        "the leader stayed the leader"
    );
    assert_eq!(
        get(&store, &k).await.expect("read"),
        Some(b"after".to_vec())
    );
    cluster.shutdown().await;
}
