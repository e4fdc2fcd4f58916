//! Meridian's wire protocol: the protobuf messages and tonic gRPC services for every RPC between
//! processes (Raft transport, the tablet data plane, and the placement driver).
//!
//! raft-rs messages use rust-protobuf 2 and travel here as opaque bytes (`RaftMessage.message`),
//! so this crate depends on no other project crate and on no raft version.

#![allow(clippy::all)]

tonic::include_proto!("meridian");

pub mod tls;

/// Accepted connections of `listener` with `TCP_NODELAY` set, for
/// `Server::serve_with_incoming*`. (tonic's `Server::tcp_nodelay` applies only to listeners it
/// binds itself.) Without it, Nagle's algorithm and delayed ACKs hold small replies back for
/// up to 40 ms.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// The largest gRPC message any Meridian process sends or accepts (64 MiB), on every client
/// and server alike: above the largest commit the KV client builds
/// (`meridian_common::limits::MAX_COMMIT_BYTES`) plus a Raft batch's other messages, so a
/// request within the limits is never refused by the transport. A message past it fails with
/// `OUT_OF_RANGE` before anything is sent or applied.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A generated gRPC server with [`MAX_MESSAGE_BYTES`] both ways, that only cluster nodes may
/// call ([`tls::node_only`]): `meridian_proto::node_service!(TabletServer::new(service))`.
#[macro_export]
macro_rules! node_service {
    ($service:expr) => {
        tonic::service::interceptor::InterceptedService::new(
            $crate::limited!($service),
            $crate::tls::node_only,
        )
    };
}

/// A generated gRPC client or server with [`MAX_MESSAGE_BYTES`] both ways:
/// `meridian_proto::limited!(TabletClient::new(channel))`.
#[macro_export]
macro_rules! limited {
    ($service:expr) => {
        $service
            .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::MAX_MESSAGE_BYTES)
    };
}
