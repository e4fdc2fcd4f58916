//! Meridian's security primitives, below every layer that talks to the network: the
//! certificates of a secure cluster ([`certs`]: `meridian cert create-ca | create-node |
//! create-client`), the TLS configurations built from them ([`tls`]), and password verifiers
//! for SCRAM-SHA-256 logins ([`password`]).
//!
//! Nothing here knows about SQL, tablets or RPCs; the SQL front end and the servers decide
//! whom to let in.

pub mod certs;
pub mod password;
pub mod tls;
