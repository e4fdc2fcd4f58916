//! Hostile input against a running three-server cluster: every class of oversized, deep,
//! future, malformed or truncated input gets a clear error (or, within the limits, works),
//! and afterwards every server is still up, its tablets still commit, and a bank's total is
//! exact.

use std::time::Duration;

use meridian_common::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use meridian_proto as pb;
use meridian_tests::{describe_error, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{assert_sqlstate, assert_usable, ready_cluster, text_rows};

const ACCOUNTS: i64 = 10;
const OPENING: i64 = 100;

async fn bank_total(client: &Client) -> i64 {
    let rows = text_rows(client, "SELECT sum(balance), count(*) FROM bank")
        .await
        .unwrap_or_else(|e| panic!("read the bank: {}", describe_error(&e)));
    assert_eq!(rows[0][1].as_deref(), Some(ACCOUNTS.to_string().as_str()));
    rows[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a numeric total")
}

async fn transfer(client: &Client, from: i64, to: i64, amount: i64) {
    let sql = format!(
        "BEGIN; UPDATE bank SET balance = balance - {amount} WHERE id = {from}; \
         UPDATE bank SET balance = balance + {amount} WHERE id = {to}; COMMIT"
    );
    client
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("transfer: {}", describe_error(&e)));
}

/// Statements past the text, nesting and split limits; far-future and malformed timestamps.
async fn statements(client: &Client) {
    let chain = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
    for (what, sql, code) in [
        (
            "300,000-term sum (600 KB)",
            chain(300_000),
            SqlState::STATEMENT_TOO_COMPLEX,
        ),
        (
            "100,000-term sum",
            chain(100_000),
            SqlState::STATEMENT_TOO_COMPLEX,
        ),
        (
            "60,000 UNIONs",
            vec!["SELECT 1"; 60_000].join(" UNION "),
            SqlState::STATEMENT_TOO_COMPLEX,
        ),
        (
            "10,000-deep parentheses",
            format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            SqlState::STATEMENT_TOO_COMPLEX,
        ),
        (
            "10,000 nested negations",
            format!("SELECT {}1", "- ".repeat(10_000)),
            SqlState::STATEMENT_TOO_COMPLEX,
        ),
        (
            "10 MB statement",
            format!("SELECT '{}'", "x".repeat(10 << 20)),
            SqlState::PROGRAM_LIMIT_EXCEEDED,
        ),
        (
            "100,000 split points",
            format!(
                "ALTER TABLE bank SPLIT AT VALUES {}",
                (0..100_000)
                    .map(|i| format!("({i})"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            SqlState::PROGRAM_LIMIT_EXCEEDED,
        ),
        (
            "AS OF SYSTEM TIME in 2100",
            "SELECT * FROM bank AS OF SYSTEM TIME '2100-01-01'".to_string(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "AS OF SYSTEM TIME at u64::MAX nanoseconds",
            format!("SELECT * FROM bank AS OF SYSTEM TIME {}", u64::MAX),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "AS OF SYSTEM TIME at a huge number",
            format!("SELECT * FROM bank AS OF SYSTEM TIME {}", "9".repeat(400)),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "AS OF SYSTEM TIME a million years ago",
            "SELECT * FROM bank AS OF SYSTEM TIME '-8760000000h'".to_string(),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
    ] {
        assert_sqlstate(what, client.simple_query(&sql).await, &[code]);
        assert_usable(client, what).await;
    }
}

/// Values and keys past (and within) the write limits, through the extended protocol.
async fn writes(client: &Client) {
    client
        .batch_execute("CREATE TABLE blobs (id TEXT PRIMARY KEY, body TEXT)")
        .await
        .expect("create blobs");
    let insert = "INSERT INTO blobs (id, body) VALUES ($1, $2)";
    // 5 MB: within the value limit, so it commits, replicates (past gRPC's 4 MiB default) and
    // reads back whole.
    let five = "v".repeat(5 << 20);
    client
        .execute(insert, &[&"five", &five])
        .await
        .unwrap_or_else(|e| panic!("a 5 MB value: {}", describe_error(&e)));
    let back: String = client
        .query_one("SELECT body FROM blobs WHERE id = 'five'", &[])
        .await
        .expect("read the 5 MB value")
        .get(0);
    assert_eq!(back.len(), five.len());

    let ten = "v".repeat(10 << 20);
    assert!(ten.len() > MAX_VALUE_BYTES);
    assert_sqlstate(
        "a 10 MB row",
        client.execute(insert, &[&"ten", &ten]).await,
        &[SqlState::PROGRAM_LIMIT_EXCEEDED],
    );
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert_sqlstate(
        "a key past the key limit",
        client.execute(insert, &[&long_key, &"x"]).await,
        &[SqlState::PROGRAM_LIMIT_EXCEEDED],
    );
    // 100,000 rows in one statement: past the writes-per-commit limit.
    let rows: Vec<String> = (0..100_000).map(|i| format!("('r{i}', '')")).collect();
    assert_sqlstate(
        "100,000 rows in one commit",
        client
            .simple_query(&format!("INSERT INTO blobs VALUES {}", rows.join(",")))
            .await,
        &[SqlState::PROGRAM_LIMIT_EXCEEDED],
    );
    let count = text_rows(client, "SELECT count(*) FROM blobs")
        .await
        .expect("count blobs");
    assert_eq!(
        count[0][0].as_deref(),
        Some("1"),
        "only the 5 MB row was written"
    );
}

/// Raw pgwire: a truncated message, a message claiming 2 GiB, garbage after startup.
async fn raw_pgwire(cluster: &Cluster) {
    let addr = cluster.pg_addr(0);
    let startup = {
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes());
        body.extend_from_slice(b"user\0root\0database\0meridian\0\0");
        let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        m
    };
    let mut attacks: Vec<(String, Vec<u8>)> = vec![
        ("a truncated startup packet".into(), vec![0, 0, 0, 40, 0, 3]),
        ("a query message cut short".into(), {
            let mut m = startup.clone();
            m.extend_from_slice(b"Q\0\0\x10\0SELECT");
            m
        }),
        ("a query message claiming 2 GiB".into(), {
            let mut m = startup.clone();
            m.extend_from_slice(b"Q\x7f\xff\xff\xff");
            m.extend_from_slice(&[b'x'; 4096]);
            m
        }),
        ("an unknown message type".into(), {
            let mut m = startup.clone();
            m.extend_from_slice(b"\xee\0\0\0\x08abcd");
            m
        }),
    ];
    // Every input the fuzzer found to crash pgwire's decoder when it decodes unchecked, as a
    // connection's first bytes and after a startup: the frame check refuses them (08P01).
    let upstream = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/known-upstream/pgwire_frontend");
    for entry in std::fs::read_dir(&upstream).expect("fuzz/known-upstream/pgwire_frontend") {
        let path = entry.expect("a directory entry").path();
        let bytes = std::fs::read(&path).expect("a saved fuzzer input");
        let name = path.display().to_string();
        attacks.push((format!("{name} first"), bytes.clone()));
        let mut after = startup.clone();
        after.extend_from_slice(&bytes);
        attacks.push((format!("{name} after startup"), after));
    }
    for (what, bytes) in attacks {
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
        // The server answers or hangs up; it must do one of them promptly.
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink));
        assert!(
            read.await.is_ok(),
            "{what}: the server neither answered nor closed"
        );
    }
}

/// Malformed requests at every gRPC service a spanserver and the placement driver serve.
async fn malformed_rpcs(cluster: &Cluster) {
    use pb::placement_driver_client::PlacementDriverClient;
    use pb::raft_transport_client::RaftTransportClient;
    use pb::tablet_client::TabletClient;
    for index in 0..cluster.len() {
        let url = format!("http://{}", cluster.server_addr(index));
        let mut tablet = TabletClient::connect(url.clone()).await.expect("connect");
        let _ = tablet.txn(pb::TxnRequest::default()).await;
        let _ = tablet
            .txn(pb::TxnRequest {
                group_id: u64::MAX,
                txn: Some(pb::TxnMeta::default()),
                lock_epoch: u64::MAX,
                op: Some(pb::txn_request::Op::Resolve(pb::ResolveOp {
                    commit: true,
                    commit_ts: u64::MAX,
                })),
            })
            .await;
        let _ = tablet
            .scan(pb::ScanRequest {
                group_id: 1,
                start: vec![0xff; 64],
                end: vec![0x00],
                read_ts: u64::MAX,
                ..Default::default()
            })
            .await;
        let _ = tablet.split(pb::SplitRequest::default()).await;
        let _ = tablet
            .create_replica(pb::ReplicaDescriptor::default())
            .await;
        let _ = tablet
            .change_replicas(pb::ChangeReplicasRequest::default())
            .await;
        let mut raft = RaftTransportClient::connect(url).await.expect("connect");
        let garbage = pb::RaftBatch {
            from_server: 99,
            messages: vec![pb::RaftMessage {
                group_id: 1,
                message: vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0xff],
            }],
        };
        let _ = raft.send(tokio_stream::iter(vec![garbage])).await;
        // Snapshot streams: empty, an undecodable message, and one cut short.
        let _ = raft.send_snapshot(tokio_stream::iter(Vec::new())).await;
        let chunk = |message: Vec<u8>, data: Vec<u8>, done: bool| pb::SnapshotChunk {
            from_server: 99,
            group_id: 1,
            message,
            data,
            done,
        };
        let _ = raft
            .send_snapshot(tokio_stream::iter(vec![
                chunk(vec![0xde, 0xad, 0xbe, 0xef], Vec::new(), false),
                chunk(Vec::new(), vec![0xff; 1 << 20], true),
            ]))
            .await;
        let _ = raft
            .send_snapshot(tokio_stream::iter(vec![
                chunk(Vec::new(), Vec::new(), false),
                chunk(Vec::new(), vec![0, 0, 0, 9, 1], false),
            ]))
            .await;
    }
    let mut pd = PlacementDriverClient::connect(format!("http://{}", cluster.pd_addr()))
        .await
        .expect("connect to the placement driver");
    let _ = pd
        .split_range(pb::SplitRangeRequest {
            keys: vec![Vec::new(), vec![0xff; 100_000]],
        })
        .await;
    let _ = pd.heartbeat(pb::HeartbeatRequest::default()).await;
    let _ = pd.register(pb::RegisterRequest::default()).await;
}

#[tokio::test]
async fn hostile_input_leaves_every_server_up_and_the_books_exact() {
    let cluster = ready_cluster().await;
    let client = cluster.connect(0).await.expect("connect to server 1");
    client
        .batch_execute("CREATE TABLE bank (id INT8 PRIMARY KEY, balance INT8)")
        .await
        .expect("create bank");
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {OPENING})")).collect();
    client
        .batch_execute(&format!("INSERT INTO bank VALUES {}", values.join(",")))
        .await
        .expect("open accounts");

    statements(&client).await;
    writes(&client).await;
    raw_pgwire(&cluster).await;
    malformed_rpcs(&cluster).await;

    for index in 0..cluster.len() {
        assert!(cluster.is_running(index), "server {} died", index + 1);
    }
    // Every gateway still commits transfers, and no money appeared or vanished.
    for index in 0..cluster.len() {
        let gateway = cluster
            .connect(index)
            .await
            .unwrap_or_else(|e| panic!("connect to server {}: {}", index + 1, describe_error(&e)));
        transfer(&gateway, index as i64, (index as i64 + 1) % ACCOUNTS, 7).await;
        assert_eq!(bank_total(&gateway).await, ACCOUNTS * OPENING);
    }
}
