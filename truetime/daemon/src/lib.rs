//! The truetime daemon's processes: the time master's gRPC service, and the agent's poll loop
//! and gRPC service around the pure [`Agent`] state machine; and [`client::AgentClock`], the
//! cached clock servers read the agent through.
//!
//! This crate is the gRPC layer on top of `meridian-truetime`'s core (timestamps, intervals,
//! the `TrueTime` trait, Marzullo's algorithm, the agent state machine), which stays free of
//! RPC so every layer can name a `Timestamp`.
//!
//! The agent polls every master concurrently once per poll interval (default 1 s), each call
//! with a timeout, timestamps each round trip with the monotonic clock, and feeds the results to
//! [`Agent::on_poll`]. `Now` answers from [`Agent::bound_at`] at the moment of the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto as pb;
use meridian_proto::time_master_client::TimeMasterClient;
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub mod client;

use meridian_truetime::agent::{Agent, AgentConfig, PollResult, Reading, Status as AgentStatus};
use meridian_truetime::master::ClockSource;

/// The `TimeMaster` gRPC service.
pub struct MasterService {
    pub source: Arc<dyn ClockSource>,
}

#[tonic::async_trait]
impl pb::time_master_server::TimeMaster for MasterService {
    async fn read(
        &self,
        _request: Request<pb::MasterReadRequest>,
    ) -> Result<Response<pb::MasterReadResponse>, Status> {
        let r = self.source.read();
        Ok(Response::new(pb::MasterReadResponse {
            time_ns: r.time_ns,
            error_bound_ns: r.error_bound_ns,
            source: r.source.as_str().to_string(),
        }))
    }
}

/// The agent's metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    pub epsilon_ns: IntGauge,
    pub epsilon_seconds: Histogram,
    pub poll_rtt_seconds: Histogram,
    pub masters_agreeing: IntGauge,
    pub masters_rejected: IntGauge,
    /// 1 for the current state, 0 for the others.
    pub state: IntGaugeVec,
}

impl AgentMetrics {
    pub fn new(registry: &Registry) -> Result<AgentMetrics, prometheus::Error> {
        let buckets = prometheus::exponential_buckets(0.000_001, 1.5, 40)?;
        let m = AgentMetrics {
            epsilon_ns: IntGauge::new(
                "truetime_epsilon_ns",
                "Current uncertainty ε in nanoseconds",
            )?,
            epsilon_seconds: Histogram::with_opts(
                HistogramOpts::new("truetime_epsilon_seconds", "ε at each poll")
                    .buckets(buckets.clone()),
            )?,
            poll_rtt_seconds: Histogram::with_opts(
                HistogramOpts::new("truetime_poll_rtt_seconds", "Round trip of master polls")
                    .buckets(buckets),
            )?,
            masters_agreeing: IntGauge::new(
                "truetime_masters_agreeing",
                "Masters in the last agreement",
            )?,
            masters_rejected: IntGauge::new(
                "truetime_masters_rejected",
                "Masters rejected as falsetickers or unreachable at the last poll",
            )?,
            state: IntGaugeVec::new(
                Opts::new("truetime_state", "Agent state (1 = current)"),
                &["state"],
            )?,
        };
        registry.register(Box::new(m.epsilon_ns.clone()))?;
        registry.register(Box::new(m.epsilon_seconds.clone()))?;
        registry.register(Box::new(m.poll_rtt_seconds.clone()))?;
        registry.register(Box::new(m.masters_agreeing.clone()))?;
        registry.register(Box::new(m.masters_rejected.clone()))?;
        registry.register(Box::new(m.state.clone()))?;
        Ok(m)
    }
}

/// The agent shared between its poll loop and its service.
pub struct AgentState {
    agent: Mutex<Agent>,
    origin: Instant,
    last: Mutex<(u32, u32, Option<Instant>)>,
    metrics: Option<AgentMetrics>,
}

impl AgentState {
    pub fn new(config: AgentConfig, metrics: Option<AgentMetrics>) -> Arc<AgentState> {
        Arc::new(AgentState {
            agent: Mutex::new(Agent::new(config)),
            origin: Instant::now(),
            last: Mutex::new((0, 0, None)),
            metrics,
        })
    }

    fn mono(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The agent's answer now.
    pub fn now(&self) -> pb::AgentNowResponse {
        let agent = self.agent.lock();
        let (interval, status) = agent.bound_at(self.mono());
        let drift_ppm = agent.config().drift_ppm;
        drop(agent);
        let (agreeing, rejected, last_sync) = *self.last.lock();
        let (earliest_ns, latest_ns, epsilon_ns) =
            interval.map_or((0, 0, 0), |i| (i.earliest.0, i.latest.0, i.epsilon_nanos()));
        pb::AgentNowResponse {
            earliest_ns,
            latest_ns,
            epsilon_ns,
            status: status.as_str().to_string(),
            masters_agreeing: agreeing,
            masters_rejected: rejected,
            last_sync_age_ns: last_sync.map_or(u64::MAX, |t| t.elapsed().as_nanos() as u64),
            drift_ppm,
        }
    }
}

/// The `TimeAgent` gRPC service.
pub struct AgentService {
    pub state: Arc<AgentState>,
}

#[tonic::async_trait]
impl pb::time_agent_server::TimeAgent for AgentService {
    async fn now(
        &self,
        _request: Request<pb::AgentNowRequest>,
    ) -> Result<Response<pb::AgentNowResponse>, Status> {
        Ok(Response::new(self.state.now()))
    }
}

/// How long one master poll may take before it counts as a failure.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(500);

async fn poll_master(channel: Option<Channel>, state: Arc<AgentState>) -> PollResult {
    let send_mono = state.mono();
    let call = async {
        let mut client = meridian_proto::limited!(TimeMasterClient::new(channel?));
        client
            .read(pb::MasterReadRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    let reply = tokio::time::timeout(POLL_TIMEOUT, call)
        .await
        .ok()
        .flatten();
    let recv_mono = state.mono();
    PollResult {
        reading: reply.map(|r| Reading {
            time_ns: r.time_ns,
            error_bound_ns: r.error_bound_ns,
        }),
        send_mono,
        recv_mono,
    }
}

/// Polls `masters` every `interval` until `shutdown` fires, updating `state`.
pub async fn run_poll_loop(
    masters: Vec<String>,
    interval: Duration,
    state: Arc<AgentState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // One long-lived channel per master: a fresh TCP and HTTP/2 handshake per poll would add
    // its round trips to every interval.
    let channels: Vec<Option<Channel>> = masters
        .iter()
        .map(|m| {
            meridian_proto::tls::endpoint(m)
                .map(|e| {
                    e.connect_timeout(POLL_TIMEOUT)
                        .tcp_nodelay(true)
                        .connect_lazy()
                })
                .map_err(|e| tracing::error!(master = %m, error = %e, "bad master address"))
                .ok()
        })
        .collect();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let polls: Vec<_> = channels
            .iter()
            .map(|c| tokio::spawn(poll_master(c.clone(), state.clone())))
            .collect();
        let mut results = Vec::with_capacity(polls.len());
        for p in polls {
            if let Ok(r) = p.await {
                results.push(r);
            }
        }
        let now = state.mono();
        let outcome = state.agent.lock().on_poll(&results, now);
        {
            let mut last = state.last.lock();
            last.0 = outcome.agreeing as u32;
            last.1 = (results.len() - outcome.agreeing) as u32;
            if outcome.quorum {
                last.2 = Some(Instant::now());
            }
        }
        if let Some(m) = &state.metrics {
            for r in &results {
                if r.reading.is_some() {
                    m.poll_rtt_seconds
                        .observe(r.recv_mono.saturating_sub(r.send_mono).as_secs_f64());
                }
            }
            let (interval, status) = state.agent.lock().bound_at(state.mono());
            let eps = interval.map_or(0, |i| i.epsilon_nanos());
            m.epsilon_ns.set(eps as i64);
            m.epsilon_seconds.observe(eps as f64 / 1e9);
            m.masters_agreeing.set(outcome.agreeing as i64);
            m.masters_rejected
                .set((results.len() - outcome.agreeing) as i64);
            for s in [
                AgentStatus::Unknown,
                AgentStatus::Synchronized,
                AgentStatus::FreeRunning,
                AgentStatus::Unusable,
            ] {
                m.state
                    .with_label_values(&[s.as_str()])
                    .set(i64::from(s == status));
            }
        }
        if !outcome.quorum {
            tracing::warn!(
                answered = outcome.answered,
                masters = results.len(),
                "no quorum of time masters"
            );
        }
    }
}

/// Serves a time master on `listener` until `shutdown` fires.
pub async fn serve_master(
    listener: tokio::net::TcpListener,
    source: Arc<dyn ClockSource>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    meridian_proto::tls::server()
        .add_service(meridian_proto::node_service!(
            pb::time_master_server::TimeMasterServer::new(MasterService { source })
        ))
        .serve_with_incoming_shutdown(meridian_proto::incoming_nodelay(listener), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// Runs an agent: polls `masters` and serves `Now` on `listener` until `shutdown` fires.
pub async fn serve_agent(
    listener: tokio::net::TcpListener,
    masters: Vec<String>,
    poll_interval: Duration,
    state: Arc<AgentState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let poller = tokio::spawn(run_poll_loop(
        masters,
        poll_interval,
        state.clone(),
        shutdown.clone(),
    ));
    let result = meridian_proto::tls::server()
        .add_service(meridian_proto::node_service!(
            pb::time_agent_server::TimeAgentServer::new(AgentService { state })
        ))
        .serve_with_incoming_shutdown(meridian_proto::incoming_nodelay(listener), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    poller.abort();
    result
}

/// A time master and an agent running in this process, for `meridian demo` and benchmarks.
pub struct LocalTimeService {
    /// A clock fed by the agent.
    pub clock: Arc<crate::client::AgentClock>,
    pub master_addr: std::net::SocketAddr,
    pub agent_addr: std::net::SocketAddr,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts a master declaring `bound` (when the kernel does not report the clock disciplined)
/// and an agent polling it every `poll_interval`, on loopback, until `shutdown` fires; waits
/// for the agent's first interval.
pub async fn start_local(
    bound: Duration,
    poll_interval: Duration,
    config: AgentConfig,
    registry: Option<&Registry>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<LocalTimeService, String> {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let master = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|e| e.to_string())?;
    let master_addr = master.local_addr().map_err(|e| e.to_string())?;
    let source: Arc<dyn ClockSource> =
        Arc::new(meridian_truetime::master::SystemClockSource::new(bound));
    let mut tasks = Vec::new();
    let rx = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = serve_master(master, source, rx).await {
            tracing::error!(error = %e, "time master stopped");
        }
    }));
    let agent = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|e| e.to_string())?;
    let agent_addr = agent.local_addr().map_err(|e| e.to_string())?;
    let metrics = registry
        .map(AgentMetrics::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    let state = AgentState::new(config, metrics);
    let rx = shutdown.clone();
    let masters = vec![master_addr.to_string()];
    tasks.push(tokio::spawn(async move {
        if let Err(e) = serve_agent(agent, masters, poll_interval, state, rx).await {
            tracing::error!(error = %e, "time agent stopped");
        }
    }));
    let clock = crate::client::AgentClock::connect(
        agent_addr.to_string(),
        config.max_epsilon,
        Duration::from_secs(30),
        shutdown,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(LocalTimeService {
        clock,
        master_addr,
        agent_addr,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AgentClock;
    use meridian_truetime::master::{Injected, SystemClockSource};
    use meridian_truetime::TrueTime;

    async fn listener() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr").to_string();
        (l, a)
    }

    /// Three masters (one lying by 10 s), an agent and a spanserver-side clock, on loopback.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agent_clock_contains_system_time_and_rejects_a_falseticker() {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut masters = Vec::new();
        for i in 0..3 {
            let (l, addr) = listener().await;
            let base = SystemClockSource::new(Duration::from_micros(500));
            let source: Arc<dyn ClockSource> = if i == 1 {
                Arc::new(Injected::new(base, 10_000_000_000, 0))
            } else {
                Arc::new(base)
            };
            tokio::spawn(serve_master(l, source, rx.clone()));
            masters.push(addr);
        }
        let (l, agent_addr) = listener().await;
        let registry = Registry::new();
        let metrics = AgentMetrics::new(&registry).expect("metrics");
        let state = AgentState::new(AgentConfig::default(), Some(metrics.clone()));
        tokio::spawn(serve_agent(
            l,
            masters,
            Duration::from_millis(100),
            state.clone(),
            rx.clone(),
        ));
        let clock = AgentClock::connect(
            agent_addr,
            Duration::from_millis(20),
            Duration::from_secs(10),
            rx.clone(),
        )
        .await
        .expect("agent synchronizes");
        clock.check_usable().expect("usable");
        for _ in 0..100 {
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64;
            let i = clock.now();
            let after = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64;
            assert!(
                i.earliest.0 <= after && before <= i.latest.0,
                "{i:?} vs [{before}, {after}]"
            );
        }
        let now = state.now();
        assert_eq!(now.status, "synchronized");
        assert_eq!(now.masters_rejected, 1, "the lying master is rejected");
        assert_eq!(metrics.masters_rejected.get(), 1);
        let _ = stop.send(true);
    }

    /// Commits must stop while the agent is gone and resume by themselves when it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clock_becomes_unusable_without_its_agent_and_recovers() {
        let (stop_all, all) = tokio::sync::watch::channel(false);
        let (l, master) = listener().await;
        let source: Arc<dyn ClockSource> =
            Arc::new(SystemClockSource::new(Duration::from_micros(500)));
        tokio::spawn(serve_master(l, source, all.clone()));
        let start_agent = |l: tokio::net::TcpListener, stop: tokio::sync::watch::Receiver<bool>| {
            let state = AgentState::new(AgentConfig::default(), None);
            tokio::spawn(serve_agent(
                l,
                vec![master.clone()],
                Duration::from_millis(100),
                state,
                stop,
            ))
        };
        let (l, agent_addr) = listener().await;
        let (stop_agent, agent_rx) = tokio::sync::watch::channel(false);
        let agent = start_agent(l, agent_rx);
        let clock = AgentClock::connect(
            agent_addr.clone(),
            Duration::from_millis(20),
            Duration::from_secs(10),
            all.clone(),
        )
        .await
        .expect("agent synchronizes");
        clock
            .check_usable()
            .expect("usable while the agent answers");

        let _ = stop_agent.send(true);
        let _ = agent.await;
        let deadline = Instant::now() + crate::client::STALE_AFTER + Duration::from_secs(3);
        while clock.check_usable().is_ok() {
            assert!(
                Instant::now() < deadline,
                "the clock stayed usable without its agent"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Reads still get intervals that contain true time, only wider: true time when `now`
        // ran lies between the wall clock read before and after it (however long a loaded
        // machine takes in between).
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        };
        let before = wall();
        let i = clock.now();
        let after = wall();
        assert!(
            i.earliest.0 <= after && before <= i.latest.0,
            "{i:?} vs [{before}, {after}]"
        );

        let l = tokio::net::TcpListener::bind(agent_addr.as_str())
            .await
            .expect("rebind the agent's port");
        let (_restart, agent_rx) = tokio::sync::watch::channel(false);
        let _agent = start_agent(l, agent_rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while clock.check_usable().is_err() {
            assert!(
                Instant::now() < deadline,
                "the clock did not recover when the agent returned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_all.send(true);
    }
}
