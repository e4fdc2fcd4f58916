//! TLS configurations from a certs directory ([`crate::certs`]): what a server presents and
//! which clients it trusts, and what a SQL client trusts and presents.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::certs::{client_cert, client_key, CertError, CA_CERT, NODE_CERT, NODE_KEY};

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let found = CertificateDer::pem_file_iter(path)
        .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))?;
    if found.is_empty() {
        return Err(CertError::Invalid(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(found)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| CertError::Invalid(format!("{}: {e}", path.display())))
}

/// Whether the DER certificate `der` is a node's: common name `node` and usable for server
/// authentication (`meridian cert create-node` makes such; client certificates are for client
/// authentication only, and no user may be called `node`).
pub fn is_node_certificate(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let named_node = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        == Some(crate::certs::NODE_NAME);
    let server_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
    named_node && server_auth
}

/// The common name of the subject of the DER certificate `der`, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// The CA of `certs_dir` as a root store.
pub fn roots(certs_dir: &Path) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(&certs_dir.join(CA_CERT))? {
        roots
            .add(cert)
            .map_err(|e| CertError::Invalid(format!("{CA_CERT}: {e}")))?;
    }
    Ok(roots)
}

/// A server configuration presenting `node.crt`. Clients may present a certificate signed by
/// the cluster's CA (checked here; whom it names is the caller's business) or none at all
/// (they then log in with a password).
pub fn server_config(certs_dir: &Path) -> Result<Arc<ServerConfig>, CertError> {
    // ring rather than aws-lc-rs: no cmake and C toolchain build. Its provider lacks the
    // post-quantum key exchange, hence the deprecation.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(certs_dir)?), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| CertError::Invalid(format!("client verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Invalid(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&certs_dir.join(NODE_CERT))?,
            key(&certs_dir.join(NODE_KEY))?,
        )
        .map_err(|e| CertError::Invalid(format!("{NODE_CERT}/{NODE_KEY}: {e}")))?;
    Ok(Arc::new(config))
}

/// A SQL client's configuration: it trusts only the cluster's CA (so the server must present
/// a certificate for the host it was asked for, as libpq's `verify-full`), and presents
/// `client.<user>.crt` when the directory holds one (a certificate login), else nothing (the
/// user then logs in with a password).
pub fn client_config(certs_dir: &Path, user: &str) -> Result<ClientConfig, CertError> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Invalid(format!("TLS versions: {e}")))?
        .with_root_certificates(roots(certs_dir)?);
    let (cert, key_path) = (
        certs_dir.join(client_cert(user)),
        certs_dir.join(client_key(user)),
    );
    if !cert.exists() {
        return Ok(builder.with_no_client_auth());
    }
    builder
        .with_client_auth_cert(certs(&cert)?, key(&key_path)?)
        .map_err(|e| CertError::Invalid(format!("{}: {e}", cert.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn a_new_cluster_ca_signs_node_and_client_certificates_that_verify() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs_dir = dir.path().join("certs");
        let ca_key = dir.path().join("ca.key");
        certs::create_ca(&certs_dir, &ca_key).expect("create the CA");
        certs::create_node(
            &certs_dir,
            &ca_key,
            &["localhost".into(), "127.0.0.1".into()],
        )
        .expect("create the node certificate");
        certs::create_client(&certs_dir, &ca_key, "alice").expect("create a client certificate");
        server_config(&certs_dir).expect("a server configuration from the certs");
        let der = |name: &str| certs(&certs_dir.join(name)).expect("a certificate")[0].clone();
        assert!(is_node_certificate(der(NODE_CERT).as_ref()));
        assert!(!is_node_certificate(
            der(&certs::client_cert("alice")).as_ref()
        ));
        assert!(!is_node_certificate(der(CA_CERT).as_ref()));
        assert!(certs::create_client(&certs_dir, &ca_key, "node").is_err());

        // The chain verifies with OpenSSL too, where it is installed.
        if let Ok(out) = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(certs_dir.join(CA_CERT))
            .arg(certs_dir.join(NODE_CERT))
            .arg(certs_dir.join(certs::client_cert("alice")))
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }

        // Nothing is overwritten, and bad names are refused.
        assert!(certs::create_ca(&certs_dir, &ca_key).is_err());
        assert!(certs::create_node(&certs_dir, &ca_key, &["localhost".into()]).is_err());
        assert!(certs::create_client(&certs_dir, &ca_key, "al/../ice").is_err());
        assert!(certs::create_client(&certs_dir, &ca_key, "").is_err());
        // A key file readable by its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&ca_key)
                .expect("ca.key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is private");
        }
    }
}
