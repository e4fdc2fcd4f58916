//! The fast local read path: [`AgentClock`], the `TrueTime` a spanserver uses when it runs
//! beside a truetime agent.
//!
//! A background task asks the agent for its interval every [`REFRESH_INTERVAL`] and publishes
//! it anchored at the local monotonic instant the answer arrived. The agent's interval was valid
//! at some instant inside the request's round trip, so at arrival true time lies in
//! `[earliest, latest + rtt⁺]`. `now()` then extrapolates from the anchor with the monotonic
//! clock and the agent's drift rate, exactly as the agent does between its own polls: one
//! monotonic clock read and one uncontended read lock, no RPC.
//!
//! `check_usable` fails, so the server refuses read-write commits, while the agent reports
//! `unusable` or `unknown`, while ε exceeds the configured maximum, or when the agent has not
//! answered for [`STALE_AFTER`]. All of these clear by themselves once the agent answers well
//! again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto as pb;
use meridian_proto::time_agent_client::TimeAgentClient;
use parking_lot::RwLock;
use tonic::transport::Channel;

use meridian_truetime::agent::{extrapolate, rtt_upper, Status};
use meridian_truetime::{ClockError, Timestamp, TrueTime, TtInterval};

/// How often the clock refreshes from the agent.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// After this long without an answer from the agent, commits are refused.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
struct Published {
    earliest: u64,
    latest: u64,
    at: Instant,
    drift_ppm: u64,
    status: Status,
}

/// A `TrueTime` fed by a truetime agent.
pub struct AgentClock {
    published: RwLock<Option<Published>>,
    max_epsilon: Duration,
    channel: Channel,
}

/// Why the agent could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentClockError {
    #[error(
        "truetime agent {addr} did not give a synchronized interval within {timeout:?}: {last}"
    )]
    NotReady {
        addr: String,
        timeout: Duration,
        last: String,
    },
}

impl AgentClock {
    /// Connects to the agent at `addr` and waits (up to `timeout`) for its first usable answer;
    /// keeps refreshing in the background until `shutdown` fires.
    pub async fn connect(
        addr: String,
        max_epsilon: Duration,
        timeout: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<AgentClock>, AgentClockError> {
        // One long-lived channel: a handshake per refresh would widen every interval.
        let channel = meridian_proto::tls::endpoint(&addr)
            .map_err(|e| AgentClockError::NotReady {
                addr: addr.clone(),
                timeout,
                last: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        let clock = Arc::new(AgentClock {
            published: RwLock::new(None),
            max_epsilon,
            channel,
        });
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match clock.refresh().await {
                Ok(()) if clock.check_usable().is_ok() => break,
                Ok(()) => last = "agent not synchronized yet".into(),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(AgentClockError::NotReady {
                    addr,
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(REFRESH_INTERVAL).await;
        }
        let background = clock.clone();
        tokio::spawn(async move { background.refresh_loop(addr, shutdown).await });
        Ok(clock)
    }

    async fn refresh(&self) -> Result<(), String> {
        let send = Instant::now();
        let call = async {
            let mut client = meridian_proto::limited!(TimeAgentClient::new(self.channel.clone()));
            client
                .now(pb::AgentNowRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string())
        };
        let reply = tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .map_err(|_| "timeout".to_string())??;
        let at = Instant::now();
        let status = Status::parse(&reply.status).unwrap_or(Status::Unknown);
        if reply.earliest_ns == 0 || reply.latest_ns < reply.earliest_ns {
            // The agent has no interval to give. Keep extrapolating from the last one (its ε
            // keeps growing) and remember the agent's status, so commits stop.
            if let Some(p) = self.published.write().as_mut() {
                p.status = status;
            }
            return Ok(());
        }
        let latest = reply
            .latest_ns
            .saturating_add(rtt_upper(at - send, reply.drift_ppm));
        *self.published.write() = Some(Published {
            earliest: reply.earliest_ns,
            latest,
            at,
            drift_ppm: reply.drift_ppm,
            status,
        });
        Ok(())
    }

    async fn refresh_loop(
        self: Arc<Self>,
        addr: String,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.refresh().await {
                tracing::debug!(agent = %addr, error = %e, "truetime agent did not answer");
            }
        }
    }
}

impl TrueTime for AgentClock {
    fn now(&self) -> TtInterval {
        let Some(p) = *self.published.read() else {
            // Unreachable after `connect` returned, which waits for a first interval. An
            // interval that surely contains true time is the widest one.
            return TtInterval {
                earliest: Timestamp::ZERO,
                latest: Timestamp::MAX,
            };
        };
        let (lo, hi) = extrapolate(p.earliest, p.latest, p.at.elapsed(), p.drift_ppm);
        TtInterval {
            earliest: Timestamp(lo),
            latest: Timestamp(hi),
        }
    }

    fn check_usable(&self) -> Result<(), ClockError> {
        let Some(p) = *self.published.read() else {
            return Err(ClockError::Uncertain {
                epsilon_ns: u64::MAX,
                max_ns: self.max_epsilon.as_nanos() as u64,
            });
        };
        let eps = self.now().epsilon_nanos();
        let max = self.max_epsilon.as_nanos() as u64;
        let stale = p.at.elapsed() > STALE_AFTER;
        if eps > max || stale || matches!(p.status, Status::Unusable | Status::Unknown) {
            return Err(ClockError::Uncertain {
                epsilon_ns: eps,
                max_ns: max,
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let usable = match self.check_usable() {
            Ok(()) => "usable".to_string(),
            Err(e) => format!("UNUSABLE: {e}"),
        };
        format!(
            "measured by a truetime agent: ε {} µs now (at most {} µs), {usable}",
            self.now().epsilon_nanos() / 1000,
            self.max_epsilon.as_micros()
        )
    }
}
