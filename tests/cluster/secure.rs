//! A secure cluster (`--certs-dir`) through psql: certificates from `meridian cert`, TLS with
//! `sslmode=verify-full`, root by client certificate, a user by SCRAM password; a wrong
//! password, a plain-text connection and a non-administrator's user DDL are refused; `meridian
//! sql --certs-dir` logs in the same ways; and no
//! gRPC call without a node certificate reaches a server (the cluster itself works, so its
//! processes do reach one another over mutual TLS).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use meridian_proto as pb;
use meridian_tests::{find_on_path, retry_until, Cluster, ClusterOptions};
use pb::tablet_client::TabletClient;

use super::{meridian, READY_TIMEOUT};

fn cert(args: &[&str], certs: &Path, ca_key: &Path) {
    let out = std::process::Command::new(meridian())
        .arg("cert")
        .args(args)
        .arg("--certs-dir")
        .arg(certs)
        .arg("--ca-key")
        .arg(ca_key)
        .output()
        .expect("run meridian cert");
    assert!(
        out.status.success(),
        "meridian cert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sql` with psql; `conninfo` is a libpq connection string.
async fn psql(psql: &Path, conninfo: &str, password: Option<&str>, sql: &str) -> Output {
    let mut command = tokio::process::Command::new(psql);
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .env_remove("PGPASSWORD")
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("psql finished")
        .expect("run psql")
}

/// Asserts that the command failed and said `why` (case aside).
fn refused(out: &Output, why: &str) {
    assert!(!out.status.success(), "{}", text(out));
    assert!(text(out).to_lowercase().contains(why), "{}", text(out));
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn secure_cluster_needs_tls_and_a_certificate_or_password() {
    let Some(psql_bin) = find_on_path("psql") else {
        panic!("psql is required (scripts/setup installs postgresql-client)");
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (certs, ca_key) = (dir.path().join("certs"), dir.path().join("ca.key"));
    cert(&["create-ca"], &certs, &ca_key);
    cert(&["create-node", "localhost", "127.0.0.1"], &certs, &ca_key);
    cert(&["create-client", "root"], &certs, &ca_key);

    let cluster = Cluster::start_with(
        meridian(),
        ClusterOptions {
            certs_dir: Some(certs.clone()),
            ..ClusterOptions::default()
        },
    );
    let port = cluster.pg_addr(0).port();
    let ca = certs.join("ca.crt").display().to_string();
    let base = format!("host=localhost port={port} dbname=meridian sslrootcert={ca}");
    let as_root = format!(
        "{base} user=root sslmode=verify-full sslcert={} sslkey={}",
        certs.join("client.root.crt").display(),
        certs.join("client.root.key").display()
    );
    // Root logs in with its certificate once the cluster serves SQL.
    retry_until(READY_TIMEOUT, || async {
        let out = psql(&psql_bin, &as_root, None, "SHOW TABLES").await;
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    })
    .await
    .expect("root logs in over verify-full TLS with its client certificate");

    let out = psql(
        &psql_bin,
        &as_root,
        None,
        "CREATE USER alice WITH PASSWORD 'correct horse'",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));

    let as_alice = format!("{base} user=alice sslmode=verify-full");
    let out = psql(&psql_bin, &as_alice, Some("correct horse"), "SELECT 40 + 2").await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // The shell: root by its certificate, alice by PGPASSWORD, and nobody without TLS.
    let shell = |user: &str, certs_dir: Option<&Path>, password: Option<&str>| {
        let mut command = std::process::Command::new(meridian());
        command
            .args(["sql", "--url"])
            .arg(format!("postgresql://{user}@localhost:{port}/meridian"))
            .args(["-e", "SELECT 6 * 7"])
            .env_remove("PGPASSWORD");
        if let Some(dir) = certs_dir {
            command.arg("--certs-dir").arg(dir);
        }
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        command.output().expect("run meridian sql")
    };
    let out = shell("root", Some(&certs), None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("42"), "{}", text(&out));
    let out = shell("alice", Some(&certs), Some("correct horse"));
    assert!(out.status.success(), "{}", text(&out));
    let out = shell("alice", Some(&certs), Some("wrong"));
    assert!(!out.status.success(), "{}", text(&out));
    let out = shell("root", None, None);
    assert!(!out.status.success());
    assert!(text(&out).contains("TLS"), "{}", text(&out));

    // A wrong password, no TLS, and user DDL by a non-administrator are each refused.
    let out = psql(&psql_bin, &as_alice, Some("wrong"), "SELECT 1").await;
    refused(&out, "password authentication failed");

    // A user that does not exist fails the same way, so logins do not reveal who exists.
    let as_nobody = format!("{base} user=nobody sslmode=verify-full");
    let out = psql(&psql_bin, &as_nobody, Some("correct horse"), "SELECT 1").await;
    refused(&out, "password authentication failed");

    let plain = format!("host=127.0.0.1 port={port} dbname=meridian user=alice sslmode=disable");
    let out = psql(&psql_bin, &plain, Some("correct horse"), "SELECT 1").await;
    assert!(!out.status.success());
    assert!(text(&out).contains("TLS"), "{}", text(&out));

    let out = psql(
        &psql_bin,
        &as_alice,
        Some("correct horse"),
        "CREATE USER mallory",
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("permission denied"), "{}", text(&out));

    // A certificate names one user only: root's does not log in as alice.
    let alice_with_roots_cert = format!(
        "{base} user=alice sslmode=verify-full sslcert={} sslkey={}",
        certs.join("client.root.crt").display(),
        certs.join("client.root.key").display()
    );
    let out = psql(&psql_bin, &alice_with_roots_cert, None, "SELECT 1").await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("certificate is for root"),
        "{}",
        text(&out)
    );

    // gRPC: a caller without a node certificate reaches no service, in plain text or in TLS
    // that trusts the CA but presents no certificate of its own; nor does a SQL user's
    // certificate, signed by the same CA but not a node's.
    let read = |name: &str| std::fs::read(certs.join(name)).expect("a certificate file");
    let trusting_ca = || {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.crt")))
            .domain_name("node")
    };
    for index in 0..cluster.len() {
        let addr = cluster.server_addr(index);
        let plain = tablet_call(addr, None).await;
        assert!(
            plain.is_err(),
            "a plain-text call to server {} went through",
            index + 1
        );
        let anonymous = tablet_call(addr, Some(trusting_ca())).await;
        assert!(
            anonymous.is_err(),
            "a call to server {} without a client certificate went through",
            index + 1
        );
        let as_user = trusting_ca().identity(tonic::transport::Identity::from_pem(
            read("client.root.crt"),
            read("client.root.key"),
        ));
        match tablet_call(addr, Some(as_user)).await {
            Err(e) => assert!(e.contains("PermissionDenied"), "{e}"),
            Ok(()) => panic!("a SQL user's certificate reached server {}", index + 1),
        }
    }
    drop(cluster);
}

/// One `Tablet.txn` call to `addr`, in plain text or with `tls`; the error as text (with its
/// status code) if the call did not go through.
async fn tablet_call(
    addr: std::net::SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    let call = async {
        let endpoint = match tls {
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")),
            Some(tls) => tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .and_then(|e| e.tls_config(tls)),
        }
        .map_err(|e| e.to_string())?;
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        TabletClient::new(channel)
            .txn(pb::TxnRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the server answers or hangs up")
}
