//! Raft transport: carries raft-rs messages between spanservers over gRPC.
//!
//! Each peer server gets one queue and one task that keeps a client stream
//! (`RaftTransport.Send`) open to it, batching every group's messages bound there. Delivery is
//! best effort, as Raft expects: when a peer is down or unknown its messages are dropped and
//! Raft retransmits. The driver thread calls [`Transport::send_all`] without blocking.
//!
//! A snapshot message goes its own way: a stream of its own (`RaftTransport.SendSnapshot`) whose
//! first item is the message (carrying the state machine's small header) and whose later items
//! are the data, read in chunks from the [`SnapshotSource`] the driver offered for the group, on
//! a blocking thread, at most [`MAX_CONCURRENT_SNAPSHOTS`] at a time. How each transfer ended is
//! kept for the driver ([`Transport::take_snapshot_reports`]), which tells raft-rs: a replica
//! is sent nothing else while its snapshot is in flight, and gets another after a failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::raft_transport_client::RaftTransportClient;
use meridian_proto::{RaftBatch, RaftMessage, SnapshotChunk};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::{GroupId, ServerId};

/// Messages batched into one stream item at most.
const MAX_BATCH: usize = 512;
/// Bytes of messages batched into one stream item at most (a single larger message goes
/// alone). With the commit size limit (`meridian_common::limits::MAX_COMMIT_BYTES`) this keeps
/// every item under the gRPC message limit (`meridian_proto::MAX_MESSAGE_BYTES`).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Pause before reconnecting to a peer that failed.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Snapshots this server streams at once; more wait their turn.
pub const MAX_CONCURRENT_SNAPSHOTS: usize = 2;
/// How long one snapshot transfer may take before it counts as failed.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Chunks read ahead of the stream.
const SNAPSHOT_READ_AHEAD: usize = 4;

/// Where a leader's snapshot data comes from while it streams to a replica.
pub trait SnapshotSource: Send + Sync {
    /// The data, in encoded chunks, in order. Called on a blocking thread, once per transfer.
    fn chunks(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, String>> + Send + '_>;
}

/// How one snapshot transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    pub group: GroupId,
    /// The raft-rs id of the replica it went to.
    pub to: u64,
    /// The receiving server took the whole snapshot.
    pub delivered: bool,
}

/// A snapshot the driver offered, by the index it was taken at.
struct Offered {
    index: u64,
    taken: Instant,
    source: Arc<dyn SnapshotSource>,
}

/// Outbound Raft messages to every peer.
pub struct Transport {
    server: ServerId,
    addrs: RwLock<HashMap<ServerId, String>>,
    queues: Mutex<HashMap<ServerId, mpsc::UnboundedSender<RaftMessage>>>,
    runtime: tokio::runtime::Handle,
    /// The newest snapshot offered for each group this server leads.
    snapshots: Mutex<HashMap<GroupId, Offered>>,
    reports: Mutex<Vec<SnapshotReport>>,
    streaming: Arc<Semaphore>,
    /// Transfers under way (finished ones are pruned as new ones start).
    transfers: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Transport {
    /// A transport for `server` whose peer tasks run on `runtime`.
    pub fn new(server: ServerId, runtime: tokio::runtime::Handle) -> Arc<Transport> {
        Arc::new(Transport {
            server,
            addrs: RwLock::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            runtime,
            snapshots: Mutex::new(HashMap::new()),
            reports: Mutex::new(Vec::new()),
            streaming: Arc::new(Semaphore::new(MAX_CONCURRENT_SNAPSHOTS)),
            transfers: Mutex::new(Vec::new()),
        })
    }

    /// Drops every offered snapshot and stops every transfer (server shutdown): each holds an
    /// engine view, and so the engine.
    pub fn clear_snapshots(&self) {
        self.snapshots.lock().clear();
        for transfer in self.transfers.lock().drain(..) {
            transfer.abort();
        }
    }

    /// Makes `source` the data of `group`'s snapshot at `index`, replacing any older one.
    pub fn offer_snapshot(&self, group: GroupId, index: u64, source: Arc<dyn SnapshotSource>) {
        let offered = Offered {
            index,
            taken: Instant::now(),
            source,
        };
        self.snapshots.lock().insert(group, offered);
    }

    /// Drops the snapshots offered more than `age` ago that no transfer is reading, and those of
    /// groups `keep` says no; returns their groups (whose raft-rs snapshot must go too).
    pub fn expire_snapshots(&self, age: Duration, keep: impl Fn(GroupId) -> bool) -> Vec<GroupId> {
        let mut expired = Vec::new();
        self.snapshots.lock().retain(|group, offered| {
            let idle = Arc::strong_count(&offered.source) == 1;
            let stays = keep(*group) && (offered.taken.elapsed() < age || !idle);
            if !stays {
                expired.push(*group);
            }
            stays
        });
        expired
    }

    /// How the transfers that ended since the last call went.
    pub fn take_snapshot_reports(&self) -> Vec<SnapshotReport> {
        std::mem::take(&mut *self.reports.lock())
    }

    /// Records (or changes) where peer `id` listens.
    pub fn set_address(&self, id: ServerId, addr: String) {
        self.addrs.write().insert(id, addr);
    }

    pub fn address(&self, id: ServerId) -> Option<String> {
        self.addrs.read().get(&id).cloned()
    }

    /// Queues `messages` of `group` for their destinations. Never blocks.
    pub fn send_all(self: &Arc<Self>, group: GroupId, messages: Vec<Message>) {
        for msg in messages {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(group, msg);
                continue;
            }
            let to = ServerId(msg.to);
            let bytes = match msg.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "encoding raft message");
                    continue;
                }
            };
            self.queue(to)
                .send(RaftMessage {
                    group_id: group.0,
                    message: bytes,
                })
                .ok();
        }
    }

    /// Streams a snapshot message and its data in a task of its own, then reports how it went.
    fn send_snapshot(self: &Arc<Self>, group: GroupId, msg: Message) {
        let transport = self.clone();
        let task = self.runtime.spawn(async move {
            let to = msg.to;
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(SNAPSHOT_TIMEOUT, transport.stream_snapshot(group, msg))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
            let delivered = match outcome {
                Ok(bytes) => {
                    tracing::info!(
                        group = group.0,
                        to,
                        bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot sent"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(group = group.0, to, error = %e, "snapshot not sent");
                    false
                }
            };
            transport.reports.lock().push(SnapshotReport {
                group,
                to,
                delivered,
            });
        });
        let mut transfers = self.transfers.lock();
        transfers.retain(|t| !t.is_finished());
        transfers.push(task.abort_handle());
    }

    /// One snapshot transfer; returns the bytes of data sent.
    async fn stream_snapshot(&self, group: GroupId, msg: Message) -> Result<usize, String> {
        let index = msg.get_snapshot().get_metadata().index;
        let source = match self.snapshots.lock().get(&group) {
            Some(offered) if offered.index == index => offered.source.clone(),
            _ => return Err(format!("the data of the snapshot at {index} is gone")),
        };
        // Held by the reading thread, which may outlive this future (a timeout, an abort).
        let permit = self
            .streaming
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("transport closed: {e}"))?;
        let to = ServerId(msg.to);
        let addr = self
            .address(to)
            .ok_or_else(|| format!("no address for server {}", to.0))?;
        let channel =
            tokio::time::timeout(Duration::from_secs(2), meridian_proto::tls::connect(&addr))
                .await
                .map_err(|_| format!("connecting to {addr} timed out"))?
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let mut client = meridian_proto::limited!(RaftTransportClient::new(channel));
        let message = msg
            .write_to_bytes()
            .map_err(|e| format!("encoding the snapshot message: {e}"))?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_READ_AHEAD);
        let header = SnapshotChunk {
            from_server: self.server.0,
            group_id: group.0,
            message,
            ..Default::default()
        };
        tx.send(header)
            .await
            .map_err(|_| "the stream closed".to_string())?;
        let producer = tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let _permit = permit;
            let mut bytes = 0;
            for chunk in source.chunks() {
                let data = chunk?;
                bytes += data.len();
                let item = SnapshotChunk {
                    data,
                    ..Default::default()
                };
                tx.blocking_send(item)
                    .map_err(|_| "the receiver closed the stream".to_string())?;
            }
            let last = SnapshotChunk {
                done: true,
                ..Default::default()
            };
            tx.blocking_send(last)
                .map_err(|_| "the receiver closed the stream".to_string())?;
            Ok(bytes)
        });
        let (answer, produced) =
            tokio::join!(client.send_snapshot(ReceiverStream::new(rx)), producer);
        let bytes = produced.map_err(|e| format!("reading the snapshot: {e}"))??;
        answer.map_err(|status| format!("refused: {status}"))?;
        Ok(bytes)
    }

    fn queue(self: &Arc<Self>, to: ServerId) -> mpsc::UnboundedSender<RaftMessage> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&to) {
            if !q.is_closed() {
                return q.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(to, tx.clone());
        let transport = self.clone();
        self.runtime
            .spawn(async move { transport.peer_loop(to, rx).await });
        tx
    }

    async fn peer_loop(
        self: Arc<Self>,
        to: ServerId,
        mut rx: mpsc::UnboundedReceiver<RaftMessage>,
    ) {
        let from = self.server.0;
        'reconnect: loop {
            let Some(first) = rx.recv().await else { return };
            let Some(addr) = self.address(to) else {
                tracing::debug!(peer = to.0, "no address for peer; dropping raft message");
                continue;
            };
            let client = match tokio::time::timeout(
                Duration::from_secs(2),
                meridian_proto::tls::connect(&addr),
            )
            .await
            {
                Ok(Ok(c)) => meridian_proto::limited!(RaftTransportClient::new(c)),
                _ => {
                    // Drop what is queued: Raft will resend.
                    while rx.try_recv().is_ok() {}
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    continue;
                }
            };
            let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(64);
            let mut client = client;
            tokio::spawn(async move {
                if let Err(status) = client.send(ReceiverStream::new(stream_rx)).await {
                    tracing::debug!(peer = to.0, %status, "raft stream ended");
                }
            });
            let mut next = Some(first);
            loop {
                let mut messages = Vec::new();
                if let Some(m) = next.take() {
                    messages.push(m);
                } else {
                    match rx.recv().await {
                        Some(m) => messages.push(m),
                        None => return,
                    }
                }
                let mut bytes: usize = messages.iter().map(|m| m.message.len()).sum();
                while messages.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(m) if bytes + m.message.len() > MAX_BATCH_BYTES => {
                            next = Some(m);
                            break;
                        }
                        Ok(m) => {
                            bytes += m.message.len();
                            messages.push(m);
                        }
                        Err(_) => break,
                    }
                }
                if stream_tx
                    .send(RaftBatch {
                        from_server: from,
                        messages,
                    })
                    .await
                    .is_err()
                {
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    continue 'reconnect;
                }
            }
        }
    }
}
