//! The certificates of a secure cluster, laid out as CockroachDB lays them out. A certs
//! directory holds `ca.crt` (the cluster's CA), `node.crt`/`node.key` (a server's identity,
//! valid for the host names and addresses it is reached by and for the name `node`, usable as
//! server and client), and
//! `client.USER.crt`/`client.USER.key` (a SQL user's, whose common name is the user). The CA's
//! private key lives apart from the certs directory (`--ca-key`), on the machine that signs.
//!
//! Keys are ECDSA P-256. A new file never replaces an existing one: creating a CA, node or
//! client certificate that exists already is an error, so a typo cannot orphan a cluster.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name in a certs directory.
pub const CA_CERT: &str = "ca.crt";
/// The node certificate and key file names.
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// The name in every node certificate that servers verify when they call each other.
pub const NODE_NAME: &str = "node";

/// How long a CA certificate is valid (10 years, as CockroachDB's).
const CA_LIFETIME_DAYS: i64 = 3653;
/// How long node and client certificates are valid (5 years).
const CERT_LIFETIME_DAYS: i64 = 1826;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Crypto(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The client certificate file name of `user`.
pub fn client_cert(user: &str) -> String {
    format!("client.{user}.crt")
}

/// The client key file name of `user`.
pub fn client_key(user: &str) -> String {
    format!("client.{user}.key")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to a new file (never overwriting one); keys get mode 0600.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for machines whose clocks run a little behind the signer's.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Creates `certs_dir/ca.crt` and the CA key at `ca_key`.
pub fn create_ca(certs_dir: &Path, ca_key: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(certs_dir).map_err(io(certs_dir))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Meridian CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_LIFETIME_DAYS);
    let cert = params.self_signed(&key)?;
    write_new(ca_key, &key.serialize_pem(), true)?;
    write_new(&certs_dir.join(CA_CERT), &cert.pem(), false)
}

/// The CA as an issuer, from `certs_dir/ca.crt` and the key at `ca_key`.
fn issuer(certs_dir: &Path, ca_key: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key = KeyPair::from_pem(&read(ca_key)?)?;
    Ok(Issuer::from_ca_cert_pem(
        &read(&certs_dir.join(CA_CERT))?,
        key,
    )?)
}

/// Creates `node.crt`/`node.key`, valid for `hosts` (names or IP addresses), signed by the CA.
pub fn create_node(certs_dir: &Path, ca_key: &Path, hosts: &[String]) -> Result<(), CertError> {
    if hosts.is_empty() {
        return Err(CertError::Invalid(
            "a node certificate needs at least one host name or address".into(),
        ));
    }
    let issuer = issuer(certs_dir, ca_key)?;
    let key = KeyPair::generate()?;
    // Besides its hosts, every node certificate names `node`, the name servers check when
    // they call each other (`meridian_proto::tls::NODE_NAME`).
    let mut names = hosts.to_vec();
    if !names.iter().any(|h| h == NODE_NAME) {
        names.push(NODE_NAME.to_string());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = name("node");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, CERT_LIFETIME_DAYS);
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&certs_dir.join(NODE_KEY), &key.serialize_pem(), true)?;
    write_new(&certs_dir.join(NODE_CERT), &cert.pem(), false)
}

/// Creates `client.USER.crt`/`client.USER.key`, whose common name is `user`, signed by the CA.
pub fn create_client(certs_dir: &Path, ca_key: &Path, user: &str) -> Result<(), CertError> {
    if user == NODE_NAME {
        return Err(CertError::Invalid(format!(
            "{NODE_NAME:?} names the cluster's nodes, not a user"
        )));
    }
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CertError::Invalid(format!(
            "{user:?} is not a user name (letters, digits and _ only)"
        )));
    }
    let issuer = issuer(certs_dir, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(user);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, CERT_LIFETIME_DAYS);
    let cert = params.signed_by(&key, &issuer)?;
    write_new(
        &certs_dir.join(client_key(user)),
        &key.serialize_pem(),
        true,
    )?;
    write_new(&certs_dir.join(client_cert(user)), &cert.pem(), false)
}
