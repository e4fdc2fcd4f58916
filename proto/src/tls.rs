//! The process's gRPC TLS identity: once [`install`]ed from a certs directory (`--certs-dir`),
//! every gRPC server this process runs ([`server`]) and every connection it opens
//! ([`endpoint`]) is mutual TLS with the node certificate, trusting only the cluster's CA, so a
//! process without a certificate signed by that CA can neither call nor be called. Without it
//! (`--insecure`) both are plain HTTP/2.
//!
//! One process is one node with one identity, so the identity is process-wide; in-process test
//! clusters never install one.

use std::path::Path;
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// The name every node certificate carries (besides its hosts), which clients verify.
pub const NODE_NAME: &str = "node";

struct Tls {
    /// Whether a verified peer certificate (DER) is a node's, not a SQL user's: both are
    /// signed by the cluster CA, and only nodes may call node services.
    is_node: fn(&[u8]) -> bool,
    client: ClientTlsConfig,
    /// A server builder with the identity configured (checked at [`install`]).
    server: Server,
}

static TLS: OnceLock<Tls> = OnceLock::new();

/// Reads `ca.crt`, `node.crt` and `node.key` from `certs_dir` and makes them this process's
/// gRPC identity; `is_node` tells a node's certificate from a SQL user's (both are signed by
/// the cluster CA), for [`node_only`]. Fails if the files are missing or an identity is
/// installed already.
pub fn install(certs_dir: &Path, is_node: fn(&[u8]) -> bool) -> Result<(), String> {
    let read = |name: &str| {
        let path = certs_dir.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let ca = Certificate::from_pem(read("ca.crt")?);
    let identity = Identity::from_pem(read("node.crt")?, read("node.key")?);
    let tls = Tls {
        is_node,
        client: ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(identity.clone())
            .domain_name(NODE_NAME),
        server: Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity).client_ca_root(ca))
            .map_err(|e| format!("TLS server configuration: {e}"))?,
    };
    TLS.set(tls)
        .map_err(|_| "a TLS identity is installed already".to_string())
}

/// Whether this process speaks TLS.
pub fn installed() -> bool {
    TLS.get().is_some()
}

/// An endpoint for `addr` (HOST:PORT), with this process's TLS identity if it has one.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    match TLS.get() {
        Some(tls) => {
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.client.clone())
        }
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// A gRPC server builder, with this process's TLS identity if it has one.
pub fn server() -> Server {
    match TLS.get() {
        Some(tls) => tls.server.clone(),
        None => Server::builder(),
    }
}

/// A gRPC interceptor for every service: with TLS installed, only a caller whose verified
/// certificate is a node's gets through (a SQL user's client certificate, signed by the same
/// CA, is refused with PERMISSION_DENIED); without TLS (`--insecure`) everyone does.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn node_only(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(tls) = TLS.get() else {
        return Ok(request);
    };
    let certs = request.peer_certs();
    match certs.as_deref().and_then(|c| c.first()) {
        Some(cert) if (tls.is_node)(cert.as_ref()) => Ok(request),
        _ => Err(tonic::Status::permission_denied(
            "only cluster nodes may call this service",
        )),
    }
}

/// A connected channel to `addr`, with this process's TLS identity if it has one.
pub async fn connect(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint(addr)?.connect().await
}
