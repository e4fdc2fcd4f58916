//! Tests of the harness itself, against a stand-in for the `meridian` binary.
//!
//! A small shell script plays the binary: it prints its arguments and sleeps for `pd` and
//! `start`, and for `demo` announces a fresh temp directory, removing it and exiting 0 on
//! SIGTERM; another one fails at once with status 3. That is enough to check the command-line
//! contract, kills, restarts, log files, early failure on a dead process, and clean-up,
//! without a real server. The fake PD never listens, so clusters here skip the wait for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::{Cluster, ClusterOptions, Demo, HarnessError};

const FAILING_MERIDIAN: &str = r#"#!/bin/sh
echo "failing on purpose" >&2
exit 3
"#;

const FAKE_MERIDIAN: &str = r#"#!/bin/sh
echo "fake meridian $*"
case "$1" in
    probe)
        exit 0
        ;;
    demo)
        dir=$(mktemp -d)
        echo "Meridian demo is ready"
        echo "  data directory: $dir (removed on exit)"
        trap 'rm -rf "$dir"; exit 0' TERM
        while :; do sleep 0.05; done
        ;;
    *)
        exec sleep 600
        ;;
esac
"#;

/// Writes a fake binary and waits until it can be executed (another thread forking while
/// the file was open for writing can briefly make it "text file busy").
fn fake_binary(script: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir for the fake binary");
    let path = dir.path().join("meridian");
    std::fs::write(&path, script).expect("write the fake binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the fake binary executable");
    for _ in 0..100 {
        match std::process::Command::new(&path).arg("probe").output() {
            Ok(_) => return (dir, path),
            Err(error) if error.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("cannot run the fake binary: {error}"),
        }
    }
    panic!("the fake binary stayed busy");
}

fn fake_meridian() -> (TempDir, PathBuf) {
    fake_binary(FAKE_MERIDIAN)
}

/// Starts a cluster of the fake without waiting for its (never listening) PD.
fn fake_cluster(bin: &Path, servers: usize) -> Cluster {
    let options = ClusterOptions {
        servers,
        pd_listen_timeout: Duration::ZERO,
        certs_dir: None,
    };
    Cluster::start_with(bin, options)
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read a log")
}

#[tokio::test]
async fn cluster_follows_the_command_line_contract_and_cleans_up() {
    let (_bin_dir, bin) = fake_meridian();
    let cluster = fake_cluster(&bin, 3);
    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("pd").is_dir() && dir.join("s3").is_dir());
    let pd = cluster.pd_addr();

    let expected_pd = format!(
        "fake meridian pd --data-dir {} --listen {pd} --insecure",
        dir.join("pd").display()
    );
    // Logs are written by the children; poll briefly for their first lines.
    crate::retry_until(Duration::from_secs(5), || async {
        let text = log(cluster.pd_log_path());
        if text.contains(&expected_pd) {
            Ok(())
        } else {
            Err(format!("pd log so far: {text}"))
        }
    })
    .await
    .expect("pd logs its command line");
    for index in 0..3 {
        assert!(cluster.is_running(index));
        let expected = format!(
            "fake meridian start --id {} --zone {} --data-dir {} --listen {} --pg-listen {} --pd {pd} --truetime {} --insecure",
            index + 1,
            ["zone-a", "zone-b", "zone-c"][index],
            dir.join(format!("s{}", index + 1)).display(),
            cluster.server_addr(index),
            cluster.pg_addr(index),
            cluster.agent_addr(),
        );
        crate::retry_until(Duration::from_secs(5), || async {
            let text = log(cluster.log_path(index));
            if text.contains(&expected) {
                Ok(())
            } else {
                Err(format!("log so far: {text}"))
            }
        })
        .await
        .expect("server logs its command line");
    }
    assert_eq!(
        cluster.pg_url(1),
        format!(
            "postgresql://root@127.0.0.1:{}/meridian",
            cluster.pg_addr(1).port()
        )
    );

    cluster.kill(1);
    assert!(!cluster.is_running(1));
    let port_before = cluster.pg_addr(1);
    cluster.restart(1);
    assert!(cluster.is_running(1));
    assert_eq!(cluster.pg_addr(1), port_before);
    assert_eq!(
        log(cluster.log_path(1))
            .matches("==== harness: starting s2")
            .count(),
        2
    );

    cluster.kill_all();
    assert!((0..3).all(|index| !cluster.is_running(index)));
    // Killed servers are skipped, so an all-killed cluster is trivially "ready".
    cluster
        .wait_ready(Duration::from_millis(100))
        .await
        .expect("nothing to wait for");
    cluster.restart_all();
    assert!((0..3).all(|index| cluster.is_running(index)));

    let error = cluster
        .wait_ready(Duration::from_millis(500))
        .await
        .expect_err("the fake serves no SQL");
    assert!(matches!(error, HarnessError::Timeout { .. }), "{error}");

    drop(cluster);
    assert!(!dir.exists(), "the cluster's directory is removed on drop");
}

#[tokio::test]
async fn wait_ready_fails_fast_when_a_process_exits() {
    let (_bin_dir, bin) = fake_binary(FAILING_MERIDIAN);
    let cluster = fake_cluster(&bin, 1);
    let started = std::time::Instant::now();
    let error = cluster
        .wait_ready(Duration::from_secs(60))
        .await
        .expect_err("the processes exited");
    assert!(started.elapsed() < Duration::from_secs(30));
    match &error {
        HarnessError::Exited { status, tail, .. } => {
            assert_eq!(status.code(), Some(3));
            assert!(tail.contains("failing on purpose"), "{tail}");
        }
        other => panic!("expected Exited, got {other}"),
    }
}

#[tokio::test]
async fn demo_reports_its_data_dir_and_stops_on_sigterm() {
    let (_bin_dir, bin) = fake_meridian();
    let demo = Demo::start(&bin, crate::free_port());
    let data_dir = demo
        .data_dir(Duration::from_secs(10))
        .await
        .expect("the fake announces a directory");
    assert!(data_dir.is_dir());
    let status = demo
        .terminate(Duration::from_secs(10))
        .await
        .expect("the fake exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!data_dir.exists());
    assert!(demo
        .stdout_lines()
        .iter()
        .any(|line| line.contains("demo is ready")));
}

#[tokio::test]
async fn dropping_a_running_demo_removes_its_leftovers() {
    let (_bin_dir, bin) = fake_meridian();
    let demo = Demo::start(&bin, crate::free_port());
    let data_dir = demo
        .data_dir(Duration::from_secs(10))
        .await
        .expect("the fake announces a directory");
    drop(demo);
    assert!(
        !data_dir.exists(),
        "drop removes the leftover data directory"
    );
}
