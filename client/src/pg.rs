//! Connecting to a Meridian server over the PostgreSQL wire protocol with tokio-postgres, and
//! describing its errors.
//!
//! Local and test servers run insecure: user `root`, database `meridian`, no TLS, no password
//! ([`connect`]). A secure cluster's clients use [`connect_secure`]: TLS that trusts only the
//! cluster's CA, and a client certificate or a password. The connection task is spawned on the
//! current tokio runtime and dropped silently when the server goes away; the next statement on
//! the client then fails with a closed-connection error.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// Why a secure connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The certs directory lacks the CA or holds an unusable certificate or key.
    #[error("certificates: {0}")]
    Certs(#[from] meridian_security::certs::CertError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// How long a connection attempt may take before it fails, unless the config says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `config` (key-value or URL form) without TLS, with [`CONNECT_TIMEOUT`], and
/// spawns the connection task.
pub async fn connect(config: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: Config = config.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // The client reports the broken connection on its next statement.
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to `config` over TLS that trusts only `certs_dir`'s CA and checks the server's
/// certificate against the host (libpq's `sslmode=verify-full`), presenting
/// `client.<user>.crt` if the directory has one; a password, if needed, comes from `config`.
/// With [`CONNECT_TIMEOUT`] unless `config` sets one; spawns the connection task.
pub async fn connect_secure(mut config: Config, certs_dir: &Path) -> Result<Client, ConnectError> {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let user = config.get_user().unwrap_or_default().to_string();
    let tls = meridian_security::tls::client_config(certs_dir, &user)?;
    config.ssl_mode(SslMode::Require);
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Describes an error with its whole `source()` chain, `: `-separated, and the SQLSTATE when a
/// PostgreSQL error is in the chain. tokio-postgres's own `Display` says only "db error" or
/// "error connecting to server" and leaves the reason to the chain.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut code = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(link) = current {
        if let Some(pg) = link.downcast_ref::<tokio_postgres::Error>() {
            code = code.or_else(|| pg.code().map(|code| code.code().to_string()));
        }
        if let Some(source) = link.source() {
            text.push_str(": ");
            text.push_str(&source.to_string());
        }
        current = link.source();
    }
    if let Some(code) = code {
        text.push_str(&format!(" (SQLSTATE {code})"));
    }
    text
}
