//! Who may open a SQL connection.
//!
//! - [`Security::Insecure`] (`--insecure`): anyone, as any user they name, in the clear.
//! - [`Security::Secure`] (`--certs-dir`): TLS only (a connection that does not upgrade is
//!   refused with 28000); then either a client certificate signed by the cluster's CA whose
//!   common name is the user (and the user exists; `root` always does), or the user's password
//!   over SCRAM-SHA-256 (a wrong one is 28P01). Passwords are checked against the verifiers in
//!   [`crate::users`]; the server never sees or keeps the password itself.
//!
//! Either way the session runs as the user that logged in ([`Session::set_user`]).
//!
//! [`Session::set_user`]: crate::session::Session::set_user

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::handler::Connection;
use crate::users;
use meridian_kv::{Client, ReadBound, Txn};
use meridian_security::password::Verifier;

/// How the server admits connections.
#[derive(Clone)]
pub enum Security {
    /// No TLS, no passwords (`--insecure`).
    Insecure,
    /// TLS with this configuration, then a client certificate or a password.
    Secure(Arc<rustls::ServerConfig>),
}

impl Security {
    /// The TLS acceptor for pgwire, if secure.
    pub fn acceptor(&self) -> Option<pgwire::tokio::TlsAcceptor> {
        match self {
            Security::Insecure => None,
            Security::Secure(config) => Some(pgwire::tokio::TlsAcceptor::from(config.clone())),
        }
    }
}

/// What every connection of one server shares for logins.
pub struct Gatekeeper {
    secure: bool,
    driver: AuthDriver<Arc<DefaultServerParameterProvider>>,
    scram: ScramAuth,
    store: Client,
}

impl Gatekeeper {
    pub fn new(security: &Security, store: Client) -> Arc<Gatekeeper> {
        let parameters = Arc::new(DefaultServerParameterProvider::default());
        Arc::new(Gatekeeper {
            secure: matches!(security, Security::Secure(_)),
            driver: AuthDriver::new(parameters),
            scram: ScramAuth::new(Arc::new(UserSource {
                store: store.clone(),
            })),
            store,
        })
    }
}

/// The users' password verifiers, for SCRAM.
struct UserSource {
    store: Client,
}

impl Debug for UserSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSource")
    }
}

async fn read_user(store: &Client, name: &str) -> Option<users::UserRecord> {
    let mut txn = Txn::from(store.begin_read_only(ReadBound::Strong));
    match users::get(&mut txn, name).await {
        Ok(record) => record,
        Err(error) => {
            tracing::warn!(%error, user = name, "reading a user for a login failed");
            None
        }
    }
}

#[async_trait]
impl AuthSource for UserSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        // A user that does not exist, or has no password, fails where a wrong password does.
        let verifier = read_user(&self.store, user)
            .await
            .and_then(|record| record.verifier().ok().flatten())
            .unwrap_or_else(|| Verifier::mock(user));
        Ok((
            ScramSecret::Verifier {
                salt: verifier.salt,
                iterations: verifier.iterations as usize,
                stored_key: verifier.stored_key,
                server_key: verifier.server_key,
            },
            None,
        ))
    }
}

/// A FATAL error with `code`, ending the connection attempt.
fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// One connection's startup: the shared [`Gatekeeper`] and the connection it admits.
pub struct Startup {
    pub(super) gate: Arc<Gatekeeper>,
    pub(super) conn: Arc<Connection>,
    /// The user the client's TLS certificate names, once TLS is up and if it presented one
    /// (rustls already checked that the cluster's CA signed it).
    pub(super) certificate_user: std::sync::OnceLock<String>,
}

impl Startup {
    /// Records the client certificate of the connection's TLS session (`der`, the first of
    /// the chain it presented).
    pub(super) fn set_client_certificate(&self, der: &[u8]) {
        if let Some(name) = meridian_security::tls::common_name(der) {
            let _ = self.certificate_user.set(name);
        }
    }

    fn certificate_user(&self) -> Option<String> {
        self.certificate_user.get().cloned()
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let gate = &self.gate;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                if !gate.secure {
                    self.conn.set_user(&user).await;
                    return gate.driver.complete_authentication(client, None).await;
                }
                if !client.is_secure() {
                    return Err(fatal(
                        "28000",
                        "this cluster accepts only TLS connections (sslmode=require or stricter)"
                            .into(),
                    ));
                }
                if let Some(named) = self.certificate_user() {
                    if named != user {
                        return Err(fatal(
                            "28000",
                            format!("the client certificate is for {named}, not {user}"),
                        ));
                    }
                    if read_user(&gate.store, &user).await.is_none() {
                        return Err(fatal("28000", format!("user {user} does not exist")));
                    }
                    self.conn.set_user(&user).await;
                    return gate.driver.complete_authentication(client, None).await;
                }
                let mechanism = gate.scram.create();
                match gate.driver.begin_authentication(client, mechanism).await? {
                    AuthOutcome::InProgress => Ok(()),
                    AuthOutcome::Authenticated { final_message, .. } => {
                        self.conn.set_user(&user).await;
                        gate.driver
                            .complete_authentication(client, final_message)
                            .await
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) if gate.secure => {
                match gate.driver.advance_authentication(client, message).await? {
                    AuthOutcome::InProgress => Ok(()),
                    AuthOutcome::Authenticated { final_message, .. } => {
                        let user = client
                            .metadata()
                            .get(METADATA_USER)
                            .cloned()
                            .unwrap_or_default();
                        self.conn.set_user(&user).await;
                        gate.driver
                            .complete_authentication(client, final_message)
                            .await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_security::password::Verifier;
    use pgwire::api::auth::sasl::scram::gen_salted_password;

    #[test]
    fn stored_verifiers_are_the_ones_pgwire_derives() {
        let ours = Verifier::new("correct horse");
        let salted = gen_salted_password("correct horse", &ours.salt, ours.iterations as usize);
        let theirs = ScramSecret::verifier_from_salted_password(
            ours.salt.clone(),
            salted,
            ours.iterations as usize,
        );
        let ScramSecret::Verifier {
            stored_key,
            server_key,
            ..
        } = theirs
        else {
            panic!("a verifier");
        };
        assert_eq!(stored_key, ours.stored_key);
        assert_eq!(server_key, ours.server_key);
    }
}
