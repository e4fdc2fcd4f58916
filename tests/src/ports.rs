//! Picking free TCP ports on the loopback interface.
//!
//! The harness must pass ports on the command line, and keep them across restarts, so it
//! cannot let each process bind port 0. It binds `127.0.0.1:0`, reads the port the kernel
//! chose, and releases it for the process to take. All ports of one cluster are held until
//! every one is chosen, so they are distinct. Another process could still take a port between
//! release and use; the kernel hands out ephemeral ports in sequence, which makes that rare.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// Returns `count` distinct ports that were free on 127.0.0.1 a moment ago.
///
/// # Panics
///
/// If no port can be bound, which means the machine has no loopback interface to test on.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|error| panic!("cannot bind a port on 127.0.0.1: {error}"))
        })
        .collect();
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|addr| addr.port())
                .unwrap_or_else(|error| panic!("bound socket has no address: {error}"))
        })
        .collect()
}

/// Returns one port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
