//! The PostgreSQL wire-protocol front end, on the `pgwire` crate.
//!
//! [`serve`] accepts connections until its shutdown future resolves, running one task per
//! connection with a semaphore capping them at [`MAX_CONNECTIONS`] (as in mini-redis). Each
//! connection owns a [`Session`]. On shutdown the listener stops, every connection task is told
//! to stop (open transactions are rolled back), and `serve` returns once they have.
//!
//! Protocol support:
//!
//! - startup as [`auth`] describes: insecure (any user, no password, an SSLRequest answered
//!   `N`) or secure (TLS required, then a client certificate or a SCRAM-SHA-256 password);
//! - the simple query protocol, several statements per query string (each runs on its own, in
//!   order, stopping at the first error);
//! - the extended protocol: Parse binds the statement against the catalog to infer parameter
//!   types (a parameter compared with or assigned to a column gets its type, others TEXT, and
//!   types the client declares win) and result columns, which Describe reports; Bind/Execute
//!   accept text or binary parameters and return text or binary results per the client's
//!   format codes (see the `codec` submodule);
//! - errors carry their SQLSTATE; after an error the connection stays usable (the extended
//!   protocol skips to Sync as PostgreSQL does); ReadyForQuery reports the session's real
//!   transaction status (idle, in transaction, failed).
//!
//! Every frame is checked before pgwire decodes it (`frames`: pgwire's decoder panics on some
//! malformed frames); a bad one is answered with FATAL 08P01. A panic while serving one
//! connection would end that connection only.
//!
//! Not supported: COPY, cancel requests, the `pg_catalog` tables psql's `\d` commands query.

pub mod auth;
mod codec;
mod connection;
pub mod frames;
mod handler;

pub use auth::Security;

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::schema::SchemaCache;
use crate::session::Session;
use auth::Gatekeeper;
use meridian_kv::Client;

/// The most connections served at once; further clients wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves PostgreSQL clients on `listener` against `store` until `shutdown` resolves, then
/// closes every connection and returns.
pub async fn serve(
    listener: TcpListener,
    store: Client,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = Gatekeeper::new(&security, store.clone());
    let acceptor = security.acceptor();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // One schema cache for every connection of this gateway.
    let schema = SchemaCache::new(store.clone());
    let (stop_tx, _) = broadcast::channel::<()>(1);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually fd exhaustion: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "set_nodelay failed");
        }
        let mut session = Session::with_schema(store.clone(), schema.clone());
        // Nobody until the startup handler logs someone in (an empty name holds no rights).
        session.set_user("");
        let connection = Arc::new(handler::Connection::new(session));
        let mut stop = stop_tx.subscribe();
        let (gate, acceptor) = (gate.clone(), acceptor.clone());
        let span = tracing::info_span!("pg_connection", %peer);
        tasks.spawn(
            async move {
                let _permit = permit;
                tracing::debug!("connection opened");
                let handlers = handler::Handlers::new(connection.clone(), gate);
                // Frames are checked before pgwire decodes them (`frames`), so its decoder's
                // panics on malformed frames (fuzz/known-upstream/) cannot be reached; should a
                // panic happen anyway, it ends this connection only.
                let served =
                    AssertUnwindSafe(connection::serve(socket, acceptor, handlers)).catch_unwind();
                tokio::select! {
                    result = served => match result {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        Err(_) => {
                            tracing::error!("a panic while serving a connection; connection closed");
                        }
                    },
                    _ = stop.recv() => {}
                }
                connection.close().await;
                tracing::debug!("connection closed");
            }
            .instrument(span),
        );
        // Reap finished connection tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    drop(stop_tx);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
