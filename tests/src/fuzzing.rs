//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs` call these), kept here so that the
//! default test run replays every saved input through exactly the same code
//! (`tests/tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must return without
//! panicking, overflowing its stack or allocating without bound; any other outcome is a bug.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use meridian_node::local::{ClusterOptions, LocalCluster};
use meridian_proto as pb;
use meridian_sql::encoding::{decode_key_datum, decode_row};
use meridian_sql::DataType;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};
use prost::Message as _;

/// SQL text as a client sends it: parsed (with the statement limits), each statement printed
/// back (as error messages and logs do), then bound against a fixed schema
/// ([`FUZZ_SCHEMA`]) and optimized, as a gateway plans it; what needs no table (`SELECT 1+1`,
/// `VALUES …`) is also evaluated.
pub fn sql_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(statements) = meridian_sql::parser::parse(text) {
        for statement in statements {
            let _ = statement.to_string();
            plan(&statement);
        }
    }
}

/// The tables statements under fuzz are bound against.
pub const FUZZ_SCHEMA: &str = "CREATE TABLE t (a INT8 PRIMARY KEY, b TEXT, c FLOAT8, d BOOL, \
     e BYTEA); CREATE TABLE u (x INT4, y VARCHAR(10), z INT2 NOT NULL, PRIMARY KEY (x, y)); \
     CREATE TABLE v (n TEXT)";

fn fuzz_tables() -> &'static meridian_sql::catalog::TableSet {
    static TABLES: OnceLock<meridian_sql::catalog::TableSet> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut tables = meridian_sql::catalog::TableSet::new();
        let statements = meridian_sql::parser::parse(FUZZ_SCHEMA).expect("the fuzz schema parses");
        for (i, statement) in statements.iter().enumerate() {
            let meridian_sql::parser::Statement::Sql { statement, .. } = statement else {
                continue;
            };
            if let sqlparser::ast::Statement::CreateTable(create) = &**statement {
                let (mut desc, _) =
                    meridian_sql::binder::bind_create_table(create).expect("the fuzz schema binds");
                desc.id = 100 + i as u32;
                tables.insert(desc.name.clone(), Some(std::sync::Arc::new(desc)));
            }
        }
        tables
    })
}

/// Binds and optimizes `statement` as a gateway would, and evaluates what needs no table.
fn plan(statement: &meridian_sql::parser::Statement) {
    use meridian_sql::parser::Statement;
    let Statement::Sql { statement, .. } = statement else {
        return;
    };
    if let sqlparser::ast::Statement::CreateTable(create) = &**statement {
        let _ = meridian_sql::binder::bind_create_table(create);
        return;
    }
    if let Ok(bound) = meridian_sql::binder::bind_statement(statement, fuzz_tables(), &[]) {
        let plan = meridian_sql::optimizer::optimize(bound.plan);
        let _ = constant_rows(&plan);
    }
}

/// The rows of a plan that reads no table, evaluated; `None` for a plan that reads one.
fn constant_rows(plan: &meridian_sql::plan::Plan) -> Option<Vec<Vec<meridian_sql::Datum>>> {
    use meridian_sql::plan::Plan;
    let eval_all = |exprs: &[meridian_sql::expr::ScalarExpr], row: &[meridian_sql::Datum]| {
        exprs
            .iter()
            .map(|e| e.eval(row, &[]))
            .collect::<Result<Vec<_>, _>>()
            .ok()
    };
    match plan {
        Plan::Values { rows } => rows.iter().map(|row| eval_all(row, &[])).collect(),
        Plan::Project { input, exprs } => constant_rows(input)?
            .iter()
            .map(|row| eval_all(exprs, row))
            .collect(),
        Plan::Filter { input, predicate } => {
            let rows = constant_rows(input)?;
            for row in &rows {
                let _ = predicate.eval(row, &[]);
            }
            Some(rows)
        }
        _ => None,
    }
}

/// A client's bytes on a PostgreSQL connection, as the server reads them: the first bytes as
/// pgwire's TLS negotiation does, then frame by frame as checked by
/// [`meridian_sql::server::frames`] (a connection's first frame in the startup format, or, as
/// later in a connection, typed frames), each frame that passes decoded by pgwire. The server
/// ends a connection at the first frame that fails, and so does this.
pub fn pgwire_frontend(data: &[u8]) {
    use meridian_sql::server::frames::{next_frame, Phase};
    // TLS negotiation: pgwire looks for an SSL or GSS request in the first eight bytes.
    let mut buf = BytesMut::from(data);
    let _ = PgWireFrontendMessage::decode(&mut buf, &DecodeContext::default());
    for start in [Phase::Startup, Phase::Typed] {
        let mut ctx = DecodeContext::default();
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = start == Phase::Startup;
        let (mut rest, mut phase) = (data, start);
        while let Ok(Some((len, next))) = next_frame(rest, phase) {
            let mut frame = BytesMut::from(&rest[..len]);
            if let Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(message))) =
                PgWireFrontendMessage::decode(&mut frame, &ctx)
            {
                // The first password message is SCRAM's initial response, later ones its
                // continuations, as the authentication handler reads them.
                let _ = match phase {
                    Phase::Typed => message.into_sasl_initial_response().map(|_| ()),
                    _ => message.into_sasl_response().map(|_| ()),
                };
            }
            ctx.awaiting_frontend_startup = next == Phase::Startup;
            rest = &rest[len..];
            phase = next;
        }
    }
}

/// Bytes read back from storage: row values, primary-key columns of every type, and MVCC keys
/// and values, as a corrupt or hostile store might hold them.
pub fn stored_bytes(data: &[u8]) {
    let _ = decode_row(data);
    for ty in [
        DataType::Bool,
        DataType::Int2,
        DataType::Int4,
        DataType::Int8,
        DataType::Float4,
        DataType::Float8,
        DataType::Text,
        DataType::Varchar(Some(8)),
        DataType::Bytea,
    ] {
        let mut input = data;
        // A key holds several columns: decode until the input runs out or fails.
        while !input.is_empty() {
            if decode_key_datum(&mut input, ty).is_err() {
                break;
            }
        }
    }
    let _ = meridian_spanserver::storage::mvcc::decode_key(data);
    let _ = meridian_spanserver::storage::mvcc::decode_value(data);
}

/// How long one tablet RPC may take before it counts as a hang: above the server's own lock
/// wait limit (`LOCK_WAIT_TIMEOUT`, 5 s), which a request may legitimately wait out.
const RPC_HANG: Duration = Duration::from_secs(20);

/// A one-node in-process cluster (real RocksDB, Raft, placement driver) whose spanserver's
/// gRPC services the `tablet_rpc` target calls. Dropping it stops the node and removes its
/// directory.
pub struct TabletRpcTarget {
    runtime: tokio::runtime::Runtime,
    cluster: Option<LocalCluster>,
    channel: tonic::transport::Channel,
}

impl TabletRpcTarget {
    /// Starts the node and waits for its system tablet.
    ///
    /// # Panics
    ///
    /// If the node cannot start: the fuzz run cannot go on.
    pub fn start() -> TabletRpcTarget {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut options = ClusterOptions::zones(1);
        options.dir_prefix = "meridian-fuzz-".into();
        let cluster = runtime
            .block_on(LocalCluster::start(options))
            .expect("a one-node cluster starts");
        let addr = cluster.addrs(0).grpc;
        // The lazy channel's connector needs the runtime's reactor.
        let _entered = runtime.enter();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("a loopback address")
            .connect_lazy();
        TabletRpcTarget {
            runtime,
            cluster: Some(cluster),
            channel,
        }
    }

    /// The first byte picks an RPC of the `Tablet` or `RaftTransport` service; the rest is
    /// decoded as its request (undecodable bytes are skipped: the server would refuse them
    /// before any handler ran). The call must come back, with any answer, within [`RPC_HANG`].
    pub fn call(&self, data: &[u8]) {
        use pb::raft_transport_client::RaftTransportClient;
        use pb::tablet_client::TabletClient;
        let Some((&which, body)) = data.split_first() else {
            return;
        };
        let mut tablet = meridian_proto::limited!(TabletClient::new(self.channel.clone()));
        let mut raft = meridian_proto::limited!(RaftTransportClient::new(self.channel.clone()));
        let call = async move {
            match which % 7 {
                0 => {
                    if let Ok(r) = pb::TxnRequest::decode(body) {
                        let _ = tablet.txn(r).await;
                    }
                }
                1 => {
                    if let Ok(r) = pb::ScanRequest::decode(body) {
                        let _ = tablet.scan(r).await;
                    }
                }
                2 => {
                    if let Ok(r) = pb::SplitRequest::decode(body) {
                        let _ = tablet.split(r).await;
                    }
                }
                3 => {
                    if let Ok(r) = pb::ReplicaDescriptor::decode(body) {
                        let _ = tablet.create_replica(r).await;
                    }
                }
                4 => {
                    if let Ok(r) = pb::ChangeReplicasRequest::decode(body) {
                        let _ = tablet.change_replicas(r).await;
                    }
                }
                5 => {
                    if let Ok(r) = pb::RaftBatch::decode(body) {
                        let _ = raft.send(tokio_stream::iter(vec![r])).await;
                    }
                }
                _ => {
                    // A snapshot stream: the body split into chunks at 0xff bytes.
                    let chunks: Vec<pb::SnapshotChunk> = body
                        .split(|b| *b == 0xff)
                        .filter_map(|c| pb::SnapshotChunk::decode(c).ok())
                        .collect();
                    let _ = raft.send_snapshot(tokio_stream::iter(chunks)).await;
                }
            }
        };
        let answered = self
            .runtime
            .block_on(async { tokio::time::timeout(RPC_HANG, call).await });
        assert!(
            answered.is_ok(),
            "a tablet RPC (kind {}) got no answer within {RPC_HANG:?}",
            which % 7
        );
    }
}

impl Drop for TabletRpcTarget {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            self.runtime.block_on(cluster.shutdown());
        }
    }
}

/// [`TabletRpcTarget::call`] on one node started at the first call and kept for the process
/// (the fuzzer's); its directory (`meridian-fuzz-*` under the temp directory) is left for
/// `scripts/fuzz` to remove.
pub fn tablet_rpc(data: &[u8]) {
    static TARGET: OnceLock<TabletRpcTarget> = OnceLock::new();
    TARGET.get_or_init(TabletRpcTarget::start).call(data);
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets that need no server, by name, for the corpus replay (`tablet_rpc` is
/// replayed on a node of its own).
pub const TARGETS: &[(&str, Target)] = &[
    ("sql_text", sql_text),
    ("pgwire_frontend", pgwire_frontend),
    ("stored_bytes", stored_bytes),
];
