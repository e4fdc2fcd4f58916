//! Splits, lock-free snapshot reads, stale reads and safe time, on an in-process cluster.

mod common;

use std::time::{Duration, Instant};

use common::table_prefix;
use common::{get, key, put, Cluster};
use meridian_kv::{Error as StoreError, ReadBound};
use meridian_proto as pb;
use meridian_proto::tablet_client::TabletClient;

async fn directory(pd: &str) -> pb::GetDirectoryResponse {
    common::directory(pd).await.expect("directory")
}

/// The tablets of `table`, in key order.
async fn tablets_of(pd: &str, table: u32) -> Vec<pb::TabletDescriptor> {
    let (start, end) = (table_prefix(table), table_prefix(table + 1));
    let mut tablets: Vec<_> = directory(pd)
        .await
        .tablets
        .into_iter()
        .filter(|t| t.start >= start && t.start < end)
        .collect();
    tablets.sort_by(|a, b| a.start.cmp(&b.start));
    tablets
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_keeps_every_row_and_survives_restart() {
    common::init_tracing();
    let mut cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    for i in 0..20 {
        put(&store, &key(table, i), format!("v{i}").as_bytes())
            .await
            .expect("write");
    }
    store
        .split_at(vec![key(table, 10), key(table, 5)])
        .await
        .expect("split");
    // Splitting again at an existing boundary changes nothing.
    store
        .split_at(vec![key(table, 10)])
        .await
        .expect("re-split");
    let tablets = tablets_of(&cluster.pd_addr, table).await;
    let starts: Vec<Vec<u8>> = tablets.iter().map(|t| t.start.clone()).collect();
    assert_eq!(
        starts,
        vec![table_prefix(table), key(table, 5), key(table, 10)]
    );
    assert_eq!(tablets[0].end, key(table, 5));
    assert_eq!(tablets[2].end, table_prefix(table + 1));

    // Every row is readable once, through whichever tablet now holds it.
    let mut t = store.begin(None);
    let rows = t
        .scan(&table_prefix(table), &table_prefix(table + 1), None)
        .await
        .expect("scan across tablets");
    assert_eq!(rows.len(), 20);
    t.put(key(table, 3), b"left".to_vec())
        .expect("a write within the limits");
    t.put(key(table, 15), b"right".to_vec())
        .expect("a write within the limits");
    t.commit()
        .await
        .expect("a transaction across the halves commits");
    put(&store, &key(table, 12), b"w")
        .await
        .expect("write right half");

    cluster.stop_all().await;
    for i in 0..3 {
        cluster.restart(i).await;
    }
    let store = cluster.store();
    assert_eq!(
        get(&store, &key(table, 3)).await.expect("read"),
        Some(b"left".to_vec())
    );
    assert_eq!(
        get(&store, &key(table, 15)).await.expect("read"),
        Some(b"right".to_vec())
    );
    assert_eq!(
        get(&store, &key(table, 19)).await.expect("read"),
        Some(b"v19".to_vec())
    );
    let mut ro = store.begin_read_only(ReadBound::Strong);
    let rows = ro
        .scan(&table_prefix(table), &table_prefix(table + 1), None)
        .await
        .expect("snapshot scan across tablets");
    assert_eq!(rows.len(), 20);
    assert_eq!(tablets_of(&cluster.pd_addr, table).await.len(), 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_transactions_never_wait_for_locks() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    put(&store, &key(table, 1), b"committed")
        .await
        .expect("write");

    // A writer holds a lock on the row (its locking read), and a younger writer queues behind
    // it for an exclusive lock.
    let mut holder = store.begin(Some(1));
    holder.get(&key(table, 1)).await.expect("locking read");
    let waiter_store = cluster.store();
    let waiter = tokio::spawn(async move {
        let mut t = waiter_store.begin(None);
        t.put(key(table, 1), b"younger".to_vec())
            .expect("a write within the limits");
        t.commit().await
    });

    let started = Instant::now();
    for _ in 0..100 {
        let mut ro = store.begin_read_only(ReadBound::Strong);
        assert_eq!(
            ro.get(&key(table, 1)).await.expect("strong read"),
            Some(b"committed".to_vec())
        );
        let mut stale = store.begin_read_only(ReadBound::ExactStaleness(Duration::from_secs(1)));
        stale.get(&key(table, 1)).await.expect("stale read");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "200 lock-free reads took {elapsed:?} while the row was locked"
    );
    holder
        .put(key(table, 1), b"holder".to_vec())
        .expect("a write within the limits");
    holder.commit().await.expect("the holder commits");
    let _ = waiter.await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_reads_see_the_past_and_refuse_beyond_the_gc_horizon() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    let ts1 = put(&store, &key(table, 1), b"one").await.expect("write");
    let ts2 = put(&store, &key(table, 1), b"two").await.expect("write");
    assert!(ts2 > ts1);

    let mut at1 = store.begin_read_only(ReadBound::At(ts1));
    assert_eq!(
        at1.get(&key(table, 1)).await.expect("read"),
        Some(b"one".to_vec())
    );
    assert_eq!(at1.read_ts(), Some(ts1));
    let mut before = store.begin_read_only(ReadBound::At(ts1 - 1));
    assert_eq!(before.get(&key(table, 1)).await.expect("read"), None);

    let mut bounded = store.begin_read_only(ReadBound::MaxStaleness(Duration::from_secs(10)));
    // Bounded staleness reads whatever the nearest replica can serve at once: not necessarily
    // the latest, but a consistent snapshot no older than the bound.
    let value = bounded.get(&key(table, 1)).await.expect("read");
    let read_ts = bounded.read_ts().expect("read timestamp");
    let expected = if read_ts >= ts2 {
        Some(b"two".to_vec())
    } else if read_ts >= ts1 {
        Some(b"one".to_vec())
    } else {
        None
    };
    assert_eq!(value, expected, "read at {read_ts} (ts1 {ts1}, ts2 {ts2})");
    assert!(read_ts + 10_000_000_000 >= now_ns() - 1_000_000_000);
    assert!(read_ts <= now_ns() + 20_000_000);

    let mut ancient =
        store.begin_read_only(ReadBound::ExactStaleness(Duration::from_secs(2 * 3600)));
    match ancient.get(&key(table, 1)).await {
        Err(StoreError::InvalidTimestamp(m)) => assert!(m.contains("garbage collection"), "{m}"),
        other => panic!("a read older than the GC horizon must fail clearly: {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_followers_keep_up_with_real_time() {
    common::init_tracing();
    let cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    put(&store, &key(table, 1), b"x").await.expect("write");
    // Let the group go idle, then read at the current time on a follower: closed timestamps
    // from the idle leader carry its safe time forward.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = directory(&cluster.pd_addr).await;
    let tablet = dir
        .tablets
        .iter()
        .find(|t| t.start == table_prefix(table))
        .expect("tablet")
        .clone();
    let follower = tablet
        .replicas
        .iter()
        .find(|r| **r != tablet.leader_hint)
        .expect("a follower");
    let addr = &dir
        .servers
        .iter()
        .find(|s| s.id == *follower)
        .expect("server")
        .addr;
    let mut client = TabletClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    for _ in 0..5 {
        let read_ts = now_ns();
        let started = Instant::now();
        let resp = client
            .scan(pb::ScanRequest {
                group_id: tablet.group_id,
                start: table_prefix(table),
                end: table_prefix(table + 1),
                limit: 0,
                txn: None,
                read_ts,
                max_staleness_ns: 0,
                max_wait_ms: 2000,
            })
            .await
            .expect("scan")
            .into_inner();
        assert!(
            resp.error.is_none(),
            "follower read failed: {:?}",
            resp.error
        );
        assert_eq!(resp.rows.len(), 1);
        assert_eq!(resp.read_ts, read_ts);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the follower's safe time lagged {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.shutdown().await;
}

/// How long writes to `table` were refused after `stop` ran, measured by retrying one.
async fn write_gap(
    cluster: &mut Cluster,
    table: u32,
    stop: impl std::future::Future<Output = ()>,
) -> Duration {
    let started = Instant::now();
    stop.await;
    let store = cluster.store();
    loop {
        if put(&store, &key(table, 7), b"after").await.is_ok() {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no new leader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_waits_out_a_crashed_leaders_lease() {
    common::init_tracing();
    // Long enough that half of it clearly separates a crash (wait out the rest of the lease)
    // from a graceful stop (an election, about 1-2 s, more on a loaded machine).
    let lease = Duration::from_secs(10);
    let mut cluster = Cluster::start_with_lease(lease).await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    put(&store, &key(table, 1), b"x").await.expect("write");
    let leader = loop {
        if let Some(l) = common::leader_of(&cluster.pd_addr, table).await {
            break l as usize - 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Renewed at half-life, the lease has more than half its length left at any moment.
    cluster
        .failpoints(leader)
        .arm(meridian_spanserver::failpoints::CRASH_NOW)
        .expect("arm");
    let gap = write_gap(&mut cluster, table, async {}).await;
    assert!(
        gap >= lease / 2,
        "a new leader served {gap:?} after the old one crashed, inside its lease"
    );
    cluster.stop(leader).await;
    cluster.restart(leader).await;

    // A graceful stop hands the lease over: no waiting it out.
    tokio::time::sleep(Duration::from_secs(1)).await; // a heartbeat names the new leader
    let leader = loop {
        if let Some(l) = common::leader_of(&cluster.pd_addr, table).await {
            break l as usize - 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    put(&store, &key(table, 2), b"y").await.expect("write");
    let gap = {
        let c = &mut cluster;
        c.stop(leader).await;
        // From the moment it is gone: an election, and no lease to wait out.
        let started = Instant::now();
        let store = c.store();
        while put(&store, &key(table, 8), b"after").await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "no new leader");
        }
        started.elapsed()
    };
    assert!(
        gap < lease / 2,
        "after a graceful stop, the next leader took {gap:?}"
    );
    cluster.shutdown().await;
}

/// A read at a timestamp repeats after the leader that served it crashes: the next leader
/// commits nothing at or below any timestamp the old one read at (reads stay below the old
/// lease's end; the new leader's writes come after it), so the same read at the same time gives
/// the same answer, while a fresh read sees the new write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_at_a_timestamp_repeat_across_a_leader_crash() {
    common::init_tracing();
    let mut cluster = Cluster::start_with_lease(Duration::from_secs(3)).await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    let k = key(table, 1);
    put(&store, &k, b"before").await.expect("write");
    let leader = loop {
        if let Some(l) = common::leader_of(&cluster.pd_addr, table).await {
            break l as usize - 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read_at = |bound| {
        let store = store.clone();
        let k = k.clone();
        async move {
            let mut txn = store.begin_read_only(bound);
            let value = txn.get(&k).await;
            (value, txn.read_ts())
        }
    };
    let (first, ts) = read_at(meridian_kv::ReadBound::Strong).await;
    let ts = ts.expect("a strong read has a timestamp");
    assert_eq!(first.expect("read"), Some(b"before".to_vec()));

    cluster
        .failpoints(leader)
        .arm(meridian_spanserver::failpoints::CRASH_NOW)
        .expect("arm");
    let started = Instant::now();
    let written = loop {
        match put(&store, &k, b"after").await {
            Ok(commit_ts) => break commit_ts,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "no new leader: {e}"
            ),
        }
    };
    assert!(
        written > ts,
        "the new write at {written} is not after the read at {ts}"
    );
    let (again, _) = read_at(meridian_kv::ReadBound::At(ts)).await;
    assert_eq!(
        again.expect("the read at the same timestamp"),
        Some(b"before".to_vec()),
        "a read at {ts} changed after the leader changed"
    );
    let (fresh, _) = read_at(meridian_kv::ReadBound::Strong).await;
    assert_eq!(fresh.expect("read"), Some(b"after".to_vec()));
    cluster.stop(leader).await;
    cluster.shutdown().await;
}
