//! Meridian's wire protocol: the protobuf messages and tonic gRPC services for every RPC between
//! processes (Raft transport, the tablet data plane, and the placement driver).
//!
//! raft-rs messages use rust-protobuf 2 and travel here as opaque bytes (`RaftMessage.message`),
//! so this crate depends on no other project crate and on no raft version.

#![allow(clippy::all)]

tonic::include_proto!("meridian");

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
