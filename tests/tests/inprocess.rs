//! An in-process cluster (placement driver + 3 spanservers on loopback, RocksDB in a temp dir)
//! driven through the gateway's `Store` trait: replication, commit validation, failover of a
//! stopped server and restart from disk, without the SQL layer.

mod common;

use std::time::{Duration, Instant};

use common::{get, key, put, Cluster};
use meridian_kv::Error as StoreError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_commits_survive_failover_and_restart() {
    common::init_tracing();
    let mut cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;

    let mut last_ts = 0;
    for i in 0..20 {
        let ts = put(&store, &key(table, i), format!("v{i}").as_bytes())
            .await
            .expect("commit");
        assert!(ts > last_ts, "commit timestamps increase within a group");
        last_ts = ts;
    }
    // Commit wait: the timestamp is in the past when the commit returns.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(last_ts < now);

    // A conflicting pair: both read k0, both write it. Wound-wait: the older t1's write lock
    // wounds t2, which holds a shared lock on k0; t2's commit fails as retryable.
    let mut t1 = store.begin(Some(1));
    let mut t2 = store.begin(Some(2));
    t1.get(&key(table, 0)).await.expect("read");
    t2.get(&key(table, 0)).await.expect("read");
    t1.put(key(table, 0), b"t1".to_vec())
        .expect("a write within the limits");
    t2.put(key(table, 0), b"t2".to_vec())
        .expect("a write within the limits");
    t1.commit().await.expect("first commit wins");
    assert!(matches!(t2.commit().await, Err(StoreError::Aborted(_))));

    // Stop each server in turn: the rest keep committing, and nothing acknowledged is lost.
    for victim in 0..3 {
        cluster.stop(victim).await;
        let started = Instant::now();
        put(&store, &key(table, 100 + victim as u32), b"after")
            .await
            .expect("commit with one server down");
        assert!(started.elapsed() < Duration::from_secs(15));
        for i in 1..20 {
            assert_eq!(
                get(&store, &key(table, i)).await.expect("read"),
                Some(format!("v{i}").into_bytes())
            );
        }
        cluster.restart(victim).await;
    }
    assert_eq!(
        get(&store, &key(table, 0)).await.expect("read"),
        Some(b"t1".to_vec())
    );

    // Restart everything from disk.
    for i in 0..3 {
        cluster.stop(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    let store = cluster.store();
    for i in 1..20 {
        assert_eq!(
            get(&store, &key(table, i))
                .await
                .expect("read after restart"),
            Some(format!("v{i}").into_bytes())
        );
    }
    for victim in 0..3u32 {
        assert_eq!(
            get(&store, &key(table, 100 + victim)).await.expect("read"),
            Some(b"after".to_vec())
        );
    }
    cluster.shutdown().await;
}

/// While TrueTime cannot justify timestamps (ε above the maximum), read-write commits are
/// refused with a clear error, reads keep working, and commits resume by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_pause_while_the_clock_is_uncertain() {
    common::init_tracing();
    let clocks: Vec<std::sync::Arc<meridian_truetime::SimulatedClock>> = (0..3)
        .map(|_| {
            std::sync::Arc::new(meridian_truetime::SimulatedClock::new(
                0,
                Duration::from_millis(1),
            ))
        })
        .collect();
    let configs = clocks
        .iter()
        .map(|c| common::NodeConfig {
            tt: c.clone(),
            commit_wait: true,
            failpoints: Default::default(),
            lease: meridian_spanserver::server::DEFAULT_LEASE,
        })
        .collect();
    let cluster = Cluster::start_with(configs).await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    put(&store, &key(table, 1), b"before")
        .await
        .expect("commit with a good clock");

    for c in &clocks {
        c.set_max_epsilon(Duration::from_millis(5));
        c.set_epsilon(Duration::from_millis(50));
    }
    match put(&store, &key(table, 1), b"during").await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("clock"), "unclear error: {m}"),
        other => panic!("a commit with an unusable clock must be refused, got {other:?}"),
    }
    assert_eq!(
        get(&store, &key(table, 1))
            .await
            .expect("reads keep working"),
        Some(b"before".to_vec())
    );

    for c in &clocks {
        c.set_epsilon(Duration::from_millis(1));
    }
    put(&store, &key(table, 1), b"after")
        .await
        .expect("commits resume by themselves");
    assert_eq!(
        get(&store, &key(table, 1)).await.expect("read"),
        Some(b"after".to_vec())
    );
    cluster.shutdown().await;
}
