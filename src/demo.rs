//! `meridian demo`: a placement driver and three spanservers in three zones, in this process,
//! on loopback, with data in a temporary directory that is removed on exit.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_spanserver::server::{BoundAddrs, ServerOptions};
use meridian_truetime::agent::AgentConfig;
use meridian_truetime::TrueTime;
use meridian_truetime_daemon as daemon;
use tokio::sync::{oneshot, watch};

/// Zones of the demo's three servers.
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// How long the demo waits for its cluster to elect leaders and bootstrap.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub async fn run(pg_port: u16, no_shell: bool) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("meridian-demo-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let (pd_tx, pd_rx) = oneshot::channel();
    let pd_opts = meridian_pd::PdOptions {
        data_dir: dir.path().join("pd"),
        listen: loopback(0),
    };
    tasks.push(tokio::spawn({
        let stop = stop_rx.clone();
        async move {
            meridian_pd::run(pd_opts, stop, Some(pd_tx))
                .await
                .map_err(|e| e.to_string())
        }
    }));
    let pd_addr = pd_rx
        .await
        .map_err(|_| "the placement driver did not start".to_string())?;

    let (tt, agent_addr) = start_truetime(&stop_rx, &mut tasks).await?;
    let mut first_pg = None;
    let mut metrics_urls = Vec::new();
    for (i, zone) in ZONES.iter().enumerate() {
        let id = i as u64 + 1;
        let opts = ServerOptions {
            id,
            zone: zone.to_string(),
            data_dir: dir.path().join(format!("s{id}")),
            listen: loopback(0).to_string(),
            advertise: None,
            pg_listen: loopback(if i == 0 { pg_port } else { 0 }),
            pd: vec![pd_addr.to_string()],
            metrics_listen: Some(loopback(0)),
            commit_wait: true,
            failpoints: Default::default(),
            lease: meridian_spanserver::server::DEFAULT_LEASE,
        };
        let (bound_tx, bound_rx) = oneshot::channel::<BoundAddrs>();
        let stop = stop_rx.clone();
        let tt = tt.clone();
        tasks.push(tokio::spawn(async move {
            meridian_spanserver::server::run(opts, tt, stop, Some(bound_tx))
                .await
                .map_err(|e| e.to_string())
        }));
        match bound_rx.await {
            Ok(addrs) => {
                first_pg.get_or_insert(addrs.pg);
                if let Some(m) = addrs.metrics {
                    metrics_urls.push(format!("http://{m}/metrics"));
                }
            }
            Err(_) => {
                let _ = stop_tx.send(true);
                let mut errors = Vec::new();
                for t in tasks {
                    if let Ok(Err(e)) = t.await {
                        errors.push(e);
                    }
                }
                return Err(format!("server {id} did not start: {}", errors.join("; ")));
            }
        }
    }
    let pg = first_pg.ok_or("no server started")?;
    let url = format!("postgresql://root@{pg}/meridian?sslmode=disable");
    wait_ready(pg).await?;

    println!(
        "Meridian demo: 1 placement driver and 3 spanservers in zones {}.",
        ZONES.join(", ")
    );
    println!("INSECURE: no TLS and no passwords; for local experiments only.");
    println!("data directory: {}", dir.path().display());
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
        };
        if let Err(e) = meridian_client::shell::run(opts).await {
            eprintln!("shell: {e}");
        }
    }
    println!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        match t.await {
            Ok(Err(e)) => eprintln!("meridian demo: {e}"),
            Err(e) => eprintln!("meridian demo: task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    let path = dir.path().to_path_buf();
    dir.close()
        .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok(())
}

/// The error bound the demo's time master declares when the kernel does not report the clock
/// disciplined. The demo's processes share one clock, so they never disagree with each other;
/// this is what the demo assumes about that clock against true time.
const DEMO_MASTER_BOUND: Duration = Duration::from_micros(1000);
/// How often the demo's agent polls its master.
const DEMO_POLL_INTERVAL: Duration = Duration::from_millis(1000);

type Tasks = Vec<tokio::task::JoinHandle<Result<(), String>>>;

/// Starts a time master and an agent in this process and returns a clock fed by the agent.
async fn start_truetime(
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<(Arc<dyn TrueTime>, SocketAddr), String> {
    let local = daemon::start_local(
        DEMO_MASTER_BOUND,
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

/// Waits until the first server answers SQL that reads the catalog.
async fn wait_ready(pg: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let conn_str = format!(
        "host={} port={} user=root dbname=meridian",
        pg.ip(),
        pg.port()
    );
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                let task = tokio::spawn(conn);
                let result = client.simple_query("SHOW TABLES").await;
                drop(client);
                let _ = task.await;
                match result {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the demo cluster did not become ready in {READY_TIMEOUT:?}: {last}"
    ))
}
