//! `meridian demo`: a placement driver and three spanservers in three zones, in this process,
//! on loopback, with data in a temporary directory that is removed on exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_node::local::{ClusterOptions, LocalCluster};
use meridian_truetime::agent::AgentConfig;
use meridian_truetime::TrueTime;
use meridian_truetime_daemon as daemon;
use tokio::sync::watch;

/// Zones of the demo's three servers.
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

pub async fn run(pg_port: u16, no_shell: bool, master_bound: Duration) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (tt, agent_addr) = start_truetime(master_bound, &stop_rx, &mut tasks).await?;
    let mut opts = ClusterOptions::zones(ZONES.len()).each_node(|n| {
        n.tt = tt.clone();
        n.metrics = true;
    });
    opts.dir_prefix = "meridian-demo-".into();
    opts.nodes[0].sql_port = pg_port;
    let cluster = match LocalCluster::start(opts).await {
        Ok(c) => c,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let pg = cluster.addrs(0).sql;
    let metrics_urls: Vec<String> = (0..cluster.len())
        .filter_map(|i| cluster.addrs(i).metrics)
        .map(|m| format!("http://{m}/metrics"))
        .collect();
    let url = format!("postgresql://root@{pg}/meridian?sslmode=disable");

    println!(
        "Meridian demo: 1 placement driver and 3 spanservers in zones {}.",
        ZONES.join(", ")
    );
    println!("INSECURE: no TLS and no passwords; for local experiments only.");
    println!("data directory: {}", cluster.dir().display());
    println!("SQL URL: {url}");
    println!("connect with: psql \"{url}\"");
    println!("metrics: {}", metrics_urls.join(" "));
    println!("truetime agent: {agent_addr} (try: meridian truetime now --agent {agent_addr})");

    if no_shell {
        println!("serving until SIGINT or SIGTERM");
        crate::wait_for_signal().await;
    } else {
        let opts = meridian_client::shell::ShellOptions {
            url: url.clone(),
            execute: None,
            certs_dir: None,
        };
        if let Err(e) = meridian_client::shell::run(opts).await {
            eprintln!("shell: {e}");
        }
    }
    println!("shutting down");
    cluster.shutdown().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        match t.await {
            Ok(Err(e)) => eprintln!("meridian demo: {e}"),
            Err(e) => eprintln!("meridian demo: task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// How often the demo's agent polls its master.
const DEMO_POLL_INTERVAL: Duration = Duration::from_millis(1000);

type Tasks = Vec<tokio::task::JoinHandle<Result<(), String>>>;

/// Starts a time master and an agent in this process and returns a clock fed by the agent.
async fn start_truetime(
    master_bound: Duration,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<(Arc<dyn TrueTime>, SocketAddr), String> {
    let local = daemon::start_local(
        master_bound,
        DEMO_POLL_INTERVAL,
        AgentConfig::default(),
        None,
        stop.clone(),
    )
    .await?;
    for t in local.tasks {
        tasks.push(tokio::spawn(
            async move { t.await.map_err(|e| e.to_string()) },
        ));
    }
    Ok((local.clock, local.agent_addr))
}
