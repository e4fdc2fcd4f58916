//! Raft log compaction, snapshots and membership changes on an in-process cluster.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::table_prefix;
use common::{get, key, put, Cluster, NodeConfig};
use meridian_proto as pb;
use meridian_proto::tablet_client::TabletClient;
use meridian_spanserver::raft::GroupId;
use meridian_spanserver::storage::engine::{Cf, Engine};
use meridian_spanserver::storage::keys;
use meridian_spanserver::storage::mvcc;
use meridian_spanserver::storage::rocks::RocksEngine;
use meridian_truetime::Timestamp;

async fn tablet_of(pd: &str, table: u32) -> (pb::TabletDescriptor, Vec<pb::ServerInfo>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dir = common::directory(pd).await.expect("directory");
        let t = dir
            .tablets
            .iter()
            .find(|t| t.start == table_prefix(table))
            .expect("tablet")
            .clone();
        if t.leader_hint != 0 {
            return (t, dir.servers);
        }
        assert!(Instant::now() < deadline, "no leader reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tablet_client(
    servers: &[pb::ServerInfo],
    id: u64,
) -> TabletClient<tonic::transport::Channel> {
    let addr = &servers.iter().find(|s| s.id == id).expect("server").addr;
    TabletClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// Of four servers, the one without `tablet`, and one of its followers.
fn newcomer_and_follower(tablet: &pb::TabletDescriptor) -> (u64, u64) {
    let newcomer = (1..=4u64)
        .find(|s| !tablet.replicas.contains(s))
        .expect("a server without the tablet");
    let leaving = *tablet
        .replicas
        .iter()
        .find(|r| **r != tablet.leader_hint)
        .expect("a follower");
    (newcomer, leaving)
}

/// Moves `tablet`'s replica from `leaving` to `newcomer`: an empty replica there, then one
/// membership change at the leader (which must accept it).
async fn move_replica(
    servers: &[pb::ServerInfo],
    tablet: &pb::TabletDescriptor,
    newcomer: u64,
    leaving: u64,
) -> pb::ChangeReplicasResponse {
    tablet_client(servers, newcomer)
        .await
        .create_replica(pb::ReplicaDescriptor {
            group_id: tablet.group_id,
            start: tablet.start.clone(),
            end: tablet.end.clone(),
            replicas: tablet.replicas.clone(),
            bootstrap: false,
        })
        .await
        .expect("create replica");
    let resp = tablet_client(servers, tablet.leader_hint)
        .await
        .change_replicas(pb::ChangeReplicasRequest {
            group_id: tablet.group_id,
            add: vec![newcomer],
            remove: vec![leaving],
        })
        .await
        .expect("change replicas")
        .into_inner();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    resp
}

/// How many of `rows` keys of `table` server `i`'s replica holds, read from its engine (the
/// server must be stopped), and where its group's log now starts.
fn replica_rows(
    cluster: &Cluster,
    i: usize,
    table: u32,
    rows: u32,
    group: u64,
) -> (u32, Option<u64>) {
    let engine = RocksEngine::open(&cluster.engine_path(i)).expect("open");
    let present = (0..rows)
        .filter(|r| {
            mvcc::get(&engine, &key(table, *r), Timestamp(u64::MAX))
                .expect("get")
                .is_some_and(|v| v.value.is_some())
        })
        .count() as u32;
    let truncated = engine
        .get(Cf::Raft, &keys::truncated(GroupId(group)))
        .expect("get")
        .and_then(|b| b.get(..8).and_then(keys::decode_u64));
    (present, truncated)
}

/// Commits the writes `fill` buffers, retrying a failed commit up to 20 times.
async fn commit_retrying(
    store: &meridian_kv::Client,
    what: &str,
    fill: impl Fn(&mut meridian_kv::ReadWriteTxn),
) {
    let mut attempt = 0;
    loop {
        let mut t = store.begin(None);
        fill(&mut t);
        match t.commit().await {
            Ok(_) => return,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(error = %e, what, "retrying a commit");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

async fn write_rows(store: &meridian_kv::Client, table: u32, rows: std::ops::Range<u32>) {
    // Several writers so the test does not take rows × one commit's latency.
    let rows: Vec<u32> = rows.collect();
    for chunk in rows.chunks(8) {
        let writes = chunk.iter().map(|r| {
            commit_retrying(store, "write a row", move |t| {
                t.put(key(table, *r), format!("row {r}").into_bytes())
                    .expect("a write within the limits");
            })
        });
        futures::future::join_all(writes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_far_behind_catches_up_from_a_snapshot() {
    common::init_tracing();
    let mut cluster = Cluster::start().await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    put(&store, &key(table, 0), b"row 0").await.expect("write");
    let (tablet, _) = tablet_of(&cluster.pd_addr, table).await;
    let lagging = tablet
        .replicas
        .iter()
        .map(|r| *r as usize - 1)
        .find(|i| *i as u64 + 1 != tablet.leader_hint)
        .expect("a follower");
    cluster.stop(lagging).await;
    // Enough commits that the leader compacts its log past where the stopped replica is.
    let rows = 1400;
    write_rows(&store, table, 1..rows).await;
    cluster.restart(lagging).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    put(&store, &key(table, rows), b"after")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop_all().await;
    let (present, truncated) = replica_rows(&cluster, lagging, table, rows, tablet.group_id);
    assert_eq!(present, rows, "the restarted replica has every row");
    assert!(
        truncated.is_some_and(|t| t > 1000),
        "its log restarts after a snapshot or compaction: {truncated:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_a_replica_moves_the_group_to_a_new_server() {
    common::init_tracing();
    let mut cluster = Cluster::start_with((0..4).map(|_| NodeConfig::default()).collect()).await;
    let store = cluster.store();
    let table = cluster.create_table(&store).await;
    write_rows(&store, table, 0..50).await;
    let (tablet, servers) = tablet_of(&cluster.pd_addr, table).await;
    let (newcomer, leaving) = newcomer_and_follower(&tablet);

    // The new replica starts empty; the leader's snapshot brings it up.
    let resp = move_replica(&servers, &tablet, newcomer, leaving).await;
    let mut expected: Vec<u64> = tablet
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leaving)
        .chain([newcomer])
        .collect();
    expected.sort_unstable();
    assert_eq!(resp.replicas, expected);
    write_rows(&store, table, 50..60).await;

    // The group no longer needs the server that left: with it and one more original member
    // down, the leader and the newcomer are a majority.
    cluster.stop(leaving as usize - 1).await;
    let other = tablet
        .replicas
        .iter()
        .copied()
        .find(|r| *r != leaving && *r != tablet.leader_hint)
        .expect("third member");
    cluster.stop(other as usize - 1).await;
    let started = Instant::now();
    put(&store, &key(table, 60), b"row 60")
        .await
        .expect("the new configuration commits without the removed server");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        get(&store, &key(table, 5)).await.expect("read"),
        Some(b"row 5".to_vec())
    );
    cluster.stop_all().await;
    let (present, _) = replica_rows(&cluster, newcomer as usize - 1, table, 61, tablet.group_id);
    assert_eq!(present, 61, "the newcomer holds every row");
    cluster.shutdown().await;
}

/// Writes `rows` rows of `value_len` bytes each to `table`, `per_commit` rows per transaction,
/// four transactions at a time.
async fn load_values(
    store: &meridian_kv::Client,
    table: u32,
    rows: u32,
    value_len: usize,
    per_commit: u32,
) {
    let batches: Vec<std::ops::Range<u32>> = (0..rows)
        .step_by(per_commit as usize)
        .map(|s| s..(s + per_commit).min(rows))
        .collect();
    for group in batches.chunks(4) {
        let commits = group.iter().map(|batch| {
            commit_retrying(store, "load rows", move |t| {
                for r in batch.clone() {
                    let mut value = vec![(r % 251) as u8; value_len];
                    value[..4].copy_from_slice(&r.to_be_bytes());
                    t.put(key(table, r), value).expect("within the limits");
                }
            })
        });
        futures::future::join_all(commits).await;
    }
}

/// One-row commits to `tables` in turn until `stop`; returns when each finished and how long
/// it took.
async fn commit_until(
    store: meridian_kv::Client,
    tables: Vec<u32>,
    stop: Arc<AtomicBool>,
) -> Vec<(Instant, Duration)> {
    let mut samples = Vec::new();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let table = tables[i as usize % tables.len()];
        let started = Instant::now();
        let mut t = store.begin(None);
        t.put(key(table, 1_000_000 + i % 64), i.to_be_bytes().to_vec())
            .expect("within the limits");
        if t.commit().await.is_ok() {
            samples.push((Instant::now(), started.elapsed()));
        }
        i += 1;
    }
    samples
}

/// The `q` quantile of the latencies of `samples` that finished in `[from, to)`, and how many
/// there were.
fn quantile(
    samples: &[(Instant, Duration)],
    from: Instant,
    to: Instant,
    q: f64,
) -> (Duration, usize) {
    let mut window: Vec<Duration> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, d)| *d)
        .collect();
    window.sort_unstable();
    let n = window.len();
    let at = ((n as f64 * q).ceil() as usize).clamp(1, n.max(1)) - 1;
    (window.get(at).copied().unwrap_or_default(), n)
}

/// A metric's value in Prometheus text (0 if absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A 64 MiB tablet moves to a new server, streamed as a snapshot, while writes go on to it and
/// to other tablets on the same servers; those keep committing throughout (their latency
/// before and during the move is printed), and the new replica ends with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_64_mib_tablet_moves_while_other_groups_keep_committing() {
    common::init_tracing();
    let mut cluster = Cluster::start_with((0..4).map(|_| NodeConfig::default()).collect()).await;
    let store = cluster.store();
    let big = cluster.create_table(&store).await;
    let busy = vec![
        cluster.create_table(&store).await,
        cluster.create_table(&store).await,
    ];
    const ROWS: u32 = 256;
    const VALUE: usize = 256 << 10;
    load_values(&store, big, ROWS, VALUE, 8).await;
    let (tablet, servers) = tablet_of(&cluster.pd_addr, big).await;
    let (newcomer, leaving) = newcomer_and_follower(&tablet);

    let stop = Arc::new(AtomicBool::new(false));
    let others = tokio::spawn(commit_until(cluster.store(), busy.clone(), stop.clone()));
    let same = tokio::spawn(commit_until(cluster.store(), vec![big], stop.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;

    let moved = Instant::now();
    move_replica(&servers, &tablet, newcomer, leaving).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let received = loop {
        let text = cluster
            .local()
            .scrape_metrics(newcomer as usize - 1)
            .await
            .expect("metrics");
        let bytes = metric(&text, "meridian_snapshot_bytes_received_total");
        if bytes >= (ROWS as usize * VALUE) as f64 {
            break bytes;
        }
        assert!(Instant::now() < deadline, "the snapshot never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let arrived = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let others = others.await.expect("writer");
    let same = same.await.expect("writer");

    // Before the move; while the data streams; and the second after it arrived, while the
    // newcomer installs it and catches up.
    let windows = [
        ("before", moved - Duration::from_secs(4), moved),
        ("streaming", moved, arrived),
        ("installing", arrived, arrived + Duration::from_secs(1)),
    ];
    let mut counts = Vec::new();
    let mut report = String::new();
    for (name, from, to) in windows {
        let (p50, n) = quantile(&others, from, to, 0.5);
        let (p99, _) = quantile(&others, from, to, 0.99);
        let (_, own) = quantile(&same, from, to, 0.5);
        report += &format!(
            "\n  {name:<10} other tablets: {n:>5} commits, p50 {p50:>10.2?}, p99 {p99:>10.2?}; \
             the moving tablet: {own} commits"
        );
        counts.push(n);
    }
    println!(
        "64 MiB snapshot ({received} bytes) from server {} to server {newcomer} in {:.2?}:{report}",
        tablet.leader_hint,
        arrived - moved,
    );
    let (n_before, n_during) = (counts[0], counts[1] + counts[2]);
    assert!(n_before > 0, "the other tablets committed before the move");
    assert!(
        n_during > 0,
        "the other tablets kept committing during the move"
    );

    // The group now needs the newcomer: with the server that left and one more original
    // member down, the leader and the newcomer are a majority.
    cluster.stop(leaving as usize - 1).await;
    let third = tablet
        .replicas
        .iter()
        .copied()
        .find(|r| *r != leaving && *r != tablet.leader_hint)
        .expect("third member");
    cluster.stop(third as usize - 1).await;
    // Leadership may have moved during the load (to the server just stopped): the first
    // attempts can meet an election and come back ambiguous. The write is idempotent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = put(&store, &key(big, ROWS), b"after the move").await {
        assert!(
            Instant::now() < deadline,
            "the new configuration never committed with the newcomer: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop_all().await;
    let engine = RocksEngine::open(&cluster.engine_path(newcomer as usize - 1)).expect("open");
    for r in 0..ROWS {
        let value = mvcc::get(&engine, &key(big, r), Timestamp(u64::MAX))
            .expect("get")
            .and_then(|v| v.value)
            .unwrap_or_else(|| panic!("row {r} missing on the newcomer"));
        assert_eq!(value.len(), VALUE);
        assert_eq!(value[..4], r.to_be_bytes());
    }
    drop(engine);
    cluster.shutdown().await;
}
