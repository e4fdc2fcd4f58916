//! One client connection's message loop: pgwire's own (`process_socket`) with every frame
//! checked before pgwire decodes it ([`super::frames`]).
//!
//! pgwire negotiates TLS; the loop then reads through [`Validating`] and hands each decoded
//! message to pgwire's dispatcher with Meridian's handlers, as `process_socket` does: the
//! startup must finish within [`STARTUP_TIMEOUT`], a Terminate or a fatal error ends the
//! connection, any other error is reported and the connection goes on. A malformed frame is
//! answered with a FATAL 08P01 (protocol violation) and the connection closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message, MaybeTls};
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::frames::Validating;
use super::handler::Handlers;

/// How long a client may take to finish its startup (TLS, startup message, authentication).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client on `socket` until it leaves, breaks the protocol or fails fatally.
pub async fn serve(
    socket: TcpStream,
    acceptor: Option<TlsAcceptor>,
    handlers: Handlers,
) -> io::Result<()> {
    let extended = handlers.extended_query_handler();
    serve_with(socket, acceptor, &handlers, extended).await
}

/// [`serve`], with the extended-query handler's type (and so its prepared statements') named.
async fn serve_with<EQ: ExtendedQueryHandler>(
    socket: TcpStream,
    acceptor: Option<TlsAcceptor>,
    handlers: &Handlers,
    extended: Arc<EQ>,
) -> io::Result<()> {
    let startup_deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_deadline);
    let negotiated = tokio::select! {
        _ = &mut startup_deadline => return Ok(()),
        negotiated = negotiate_tls::<EQ::Statement>(socket, acceptor) => negotiated?,
    };
    // A client that asked for direct TLS when the server has none.
    let Some(negotiated) = negotiated else {
        return Ok(());
    };
    let old = negotiated.into_parts();
    // pgwire finds the client's certificate by the stream's type, which the check below
    // wraps: take it now.
    if let MaybeTls::Tls(tls) = &old.io {
        if let Some(der) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            handlers.startup.set_client_certificate(der.as_ref());
        }
    }
    let mut parts = FramedParts::new(Validating::new(old.io, old.read_buf), old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if in_startup {
            tokio::select! {
                _ = &mut startup_deadline => return Ok(()),
                next = socket.next() => next,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            None => return Ok(()),
            Some(Ok(message)) => message,
            Some(Err(error)) => return refuse(&mut socket, error).await,
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let processed = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await;
        if let Err(mut error) = processed {
            errors.on_error(&socket, &mut error);
            let fatal = error.is_fatal();
            process_error(&mut socket, error, is_extended).await?;
            if fatal {
                return Ok(());
            }
        }
        if is_cancel {
            return Ok(());
        }
    }
}

/// Answers a frame that failed its check (or a read that failed) and ends the connection.
async fn refuse<S>(socket: &mut S, error: PgWireError) -> io::Result<()>
where
    S: futures::Sink<PgWireBackendMessage> + Unpin,
{
    let message = match &error {
        PgWireError::IoError(e) if e.kind() == io::ErrorKind::InvalidData => {
            format!("invalid message: {e}")
        }
        PgWireError::IoError(_) => return Ok(()),
        other => format!("invalid message: {other}"),
    };
    tracing::debug!(%message, "refusing a client");
    let info = ErrorInfo::new("FATAL".to_owned(), "08P01".to_owned(), message);
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
    Ok(())
}
