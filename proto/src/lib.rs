//! Meridian's wire protocol: the protobuf messages and tonic gRPC services for every RPC between
//! processes (Raft transport, the tablet data plane, and the placement driver).
//!
//! raft-rs messages use rust-protobuf 2 and travel here as opaque bytes (`RaftMessage.message`),
//! so this crate depends on no other project crate and on no raft version.

#![allow(clippy::all)]

tonic::include_proto!("meridian");
