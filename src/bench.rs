//! `meridian bench …`: flags to calls into `meridian_bench`.

use std::sync::Arc;
use std::time::Duration;

use meridian_truetime::{SystemTrueTime, TrueTime};

use crate::BenchCommand;

/// A clock fed by an in-process time master (declaring `bound`) and agent.
async fn local_agent_clock(
    bound: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<dyn TrueTime>, String> {
    let local = meridian_truetime_daemon::start_local(
        bound,
        Duration::from_millis(1000),
        meridian_truetime::agent::AgentConfig::default(),
        None,
        stop,
    )
    .await?;
    Ok(local.clock)
}

pub async fn run(command: BenchCommand) -> Result<(), String> {
    crate::init_tracing("warn");
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    match command {
        BenchCommand::Clock => {
            let clock = local_agent_clock(Duration::from_micros(1000), stop_rx).await?;
            let table = tokio::task::spawn_blocking(move || meridian_bench::clock::run(clock))
                .await
                .map_err(|e| e.to_string())?;
            print!("{table}");
        }
        BenchCommand::Writes {
            writes,
            clock_epsilon_ms,
            master_bound_us,
        } => {
            let tt: Arc<dyn TrueTime> = match clock_epsilon_ms {
                Some(ms) => Arc::new(SystemTrueTime::new(Duration::from_millis(ms))),
                None => local_agent_clock(Duration::from_micros(master_bound_us), stop_rx).await?,
            };
            let opts = meridian_bench::writes::WritesOptions { writes };
            let table = meridian_bench::writes::run(tt, opts)
                .await
                .map_err(|e| e.to_string())?;
            print!("{table}");
        }
        BenchCommand::Txn {
            txns,
            participants,
            clients,
            duration_secs,
            rows,
            group_commit_clients,
            pg_isolation,
            clock_epsilon_ms,
            master_bound_us,
        } => {
            let tt: Arc<dyn TrueTime> = match clock_epsilon_ms {
                Some(ms) => Arc::new(SystemTrueTime::new(Duration::from_millis(ms))),
                None => local_agent_clock(Duration::from_micros(master_bound_us), stop_rx).await?,
            };
            let opts = meridian_bench::txn::TxnOptions {
                txns,
                participants,
                clients,
                duration: Duration::from_secs(duration_secs),
                rows,
                group_commit_clients,
                pg_isolation,
            };
            let table = meridian_bench::txn::run(tt, opts)
                .await
                .map_err(|e| e.to_string())?;
            print!("{table}");
        }
    }
    Ok(())
}
