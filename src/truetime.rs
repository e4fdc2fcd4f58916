//! `meridian truetime master|agent|now`: flags to calls into `meridian_truetime`.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::time_agent_client::TimeAgentClient;
use meridian_truetime::agent::AgentConfig;
use meridian_truetime::master::{ClockSource, Injected, SystemClockSource};
use meridian_truetime_daemon::{self as daemon, AgentMetrics, AgentState};

use crate::TruetimeCommand;

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Serves `/metrics` for `registry` on `addr`, if given, until `shutdown` fires.
async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    registry: prometheus::Registry,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    if let Some(addr) = addr {
        let l = bind(addr).await?;
        tokio::spawn(meridian_spanserver::metrics::serve_http(
            l,
            vec![registry],
            async move {
                let _ = shutdown.wait_for(|s| *s).await;
            },
        ));
    }
    Ok(())
}

pub async fn run(command: TruetimeCommand) -> Result<(), String> {
    match command {
        TruetimeCommand::Master {
            listen,
            error_bound_us,
            inject_offset_ms,
            inject_drift_ppm,
            metrics_listen,
            security,
        } => {
            crate::init_tracing("info");
            security.apply("a time master")?;
            let shutdown = crate::shutdown_on_signals();
            let base = SystemClockSource::new(Duration::from_micros(error_bound_us));
            let source: Arc<dyn ClockSource> = if inject_offset_ms != 0 || inject_drift_ppm != 0 {
                tracing::warn!(
                    inject_offset_ms,
                    inject_drift_ppm,
                    "injecting clock error: this master lies"
                );
                Arc::new(Injected::new(
                    base,
                    inject_offset_ms.saturating_mul(1_000_000),
                    inject_drift_ppm,
                ))
            } else {
                Arc::new(base)
            };
            let r = source.read();
            tracing::info!(%listen, bound_ns = r.error_bound_ns, source = r.source.as_str(), "time master starting");
            serve_metrics(
                metrics_listen,
                prometheus::Registry::new(),
                shutdown.clone(),
            )
            .await?;
            daemon::serve_master(bind(listen).await?, source, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        TruetimeCommand::Agent {
            listen,
            masters,
            poll_interval_ms,
            drift_ppm,
            max_epsilon_ms,
            metrics_listen,
            security,
        } => {
            crate::init_tracing("info");
            security.apply("a time agent")?;
            let shutdown = crate::shutdown_on_signals();
            let registry = prometheus::Registry::new();
            let metrics = AgentMetrics::new(&registry).map_err(|e| e.to_string())?;
            let config = AgentConfig {
                drift_ppm,
                max_epsilon: Duration::from_millis(max_epsilon_ms),
            };
            let state = AgentState::new(config, Some(metrics));
            serve_metrics(metrics_listen, registry, shutdown.clone()).await?;
            tracing::info!(%listen, ?masters, "time agent starting");
            let interval = Duration::from_millis(poll_interval_ms.max(10));
            daemon::serve_agent(bind(listen).await?, masters, interval, state, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        TruetimeCommand::Now {
            agent,
            json,
            certs_dir,
        } => {
            if let Some(dir) = certs_dir {
                meridian_proto::tls::install(&dir, meridian_security::tls::is_node_certificate)
                    .map_err(|e| format!("--certs-dir {}: {e}", dir.display()))?;
            }
            let channel = meridian_proto::tls::connect(&agent)
                .await
                .map_err(|e| format!("cannot reach the agent at {agent}: {e}"))?;
            let mut client = meridian_proto::limited!(TimeAgentClient::new(channel));
            let r = client
                .now(meridian_proto::AgentNowRequest {})
                .await
                .map_err(|e| format!("agent {agent}: {}", e.message()))?
                .into_inner();
            if json {
                println!(
                    "{{\"earliest_ns\": {}, \"latest_ns\": {}, \"epsilon_ns\": {}, \"status\": \"{}\"}}",
                    r.earliest_ns, r.latest_ns, r.epsilon_ns, r.status
                );
            } else {
                println!("earliest: {} ns", r.earliest_ns);
                println!("latest:   {} ns", r.latest_ns);
                println!("epsilon:  {:.3} ms", r.epsilon_ns as f64 / 1e6);
                println!("status:   {}", r.status);
                println!(
                    "masters:  {} agreeing, {} rejected or unreachable",
                    r.masters_agreeing, r.masters_rejected
                );
                println!(
                    "last sync: {:.3} s ago (drift {} ppm since)",
                    r.last_sync_age_ns as f64 / 1e9,
                    r.drift_ppm
                );
            }
            Ok(())
        }
    }
}
