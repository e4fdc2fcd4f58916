//! Password verifiers for SCRAM-SHA-256 (RFC 5802, RFC 7677), stored as PostgreSQL stores
//! them: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts). The
//! password itself is never stored, and neither is anything a client could log in with: the
//! stored key is a hash of the client key, which only the password yields.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// PBKDF2 iterations for new verifiers (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;

/// The parts of a stored verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Verifier::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        // SASLprep as clients apply it; a password it rejects is used as given, as PostgreSQL
        // does.
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt,
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A verifier no password matches, for a login as a user that does not exist or has no
    /// password: the exchange then fails at its last step, as a wrong password does, so a
    /// client cannot tell which users exist. Its salt depends only on the name, as a real
    /// user's stays the same between attempts.
    pub fn mock(user: &str) -> Verifier {
        let salt = Sha256::digest(format!("meridian mock salt {user}").as_bytes())[..16].to_vec();
        let mut keys = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut keys);
        Verifier {
            iterations: ITERATIONS,
            salt,
            stored_key: keys[..32].to_vec(),
            server_key: keys[32..].to_vec(),
        }
    }

    /// Whether `password` is the one this verifier was made from (for logins that send it in
    /// the clear, over TLS).
    pub fn matches(&self, password: &str) -> bool {
        let other = Verifier::with_salt(password, self.salt.clone(), self.iterations);
        // Not secret-dependent timing: both keys are hashes of unknown-to-the-caller values.
        other.stored_key == self.stored_key && other.server_key == self.server_key
    }

    /// The stored text form.
    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    /// Parses the stored text form.
    pub fn decode(text: &str) -> Result<Verifier, String> {
        let bad = || "not a SCRAM-SHA-256 verifier".to_string();
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| B64.decode(s).map_err(|_| bad());
        Ok(Verifier {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_match_only_their_password() {
        let v = Verifier::new("correct horse");
        assert!(v.matches("correct horse"));
        assert!(!v.matches("correct horse "));
        let text = v.encode();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(Verifier::decode(&text), Ok(v));
        assert!(Verifier::decode("md5abc").is_err());
        assert!(Verifier::decode("SCRAM-SHA-256$x:y$z").is_err());
    }

    /// RFC 7677's example: user "user", password "pencil", 4096 iterations.
    #[test]
    fn matches_the_rfc_7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let v = Verifier::with_salt("pencil", salt, 4096);
        // ServerSignature = HMAC(ServerKey, AuthMessage) is "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        // in the RFC; the keys themselves are checked by recomputing that signature.
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            B64.encode(hmac(&v.server_key, auth_message.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
