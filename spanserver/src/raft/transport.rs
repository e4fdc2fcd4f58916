//! Raft transport: carries raft-rs messages between spanservers over gRPC.
//!
//! Each peer server gets one queue and one task that keeps a client stream
//! (`RaftTransport.Send`) open to it, batching every group's messages bound there. Delivery is
//! best effort, as Raft expects: when a peer is down or unknown its messages are dropped and
//! Raft retransmits. The driver thread calls [`Transport::send_all`] without blocking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::raft_transport_client::RaftTransportClient;
use meridian_proto::{RaftBatch, RaftMessage};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
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

/// Outbound Raft messages to every peer.
pub struct Transport {
    server: ServerId,
    addrs: RwLock<HashMap<ServerId, String>>,
    queues: Mutex<HashMap<ServerId, mpsc::UnboundedSender<RaftMessage>>>,
    runtime: tokio::runtime::Handle,
}

impl Transport {
    /// A transport for `server` whose peer tasks run on `runtime`.
    pub fn new(server: ServerId, runtime: tokio::runtime::Handle) -> Arc<Transport> {
        Arc::new(Transport {
            server,
            addrs: RwLock::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            runtime,
        })
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
