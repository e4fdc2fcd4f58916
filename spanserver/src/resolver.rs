//! Two-phase commit housekeeping that needs RPCs to other groups, run by one task per server.
//!
//! - **Push** (coordinator side): after a commit decision and its commit wait, tell every
//!   participant the outcome ([`pb::ResolveOp`]), then drop the decision at the coordinator
//!   ([`pb::ForgetOp`]). A push that fails is retried by the coordinator's leader, which
//!   re-issues pushes for decisions still on record.
//! - **Inquire** (participant side): a transaction prepared for a while asks its coordinator
//!   for the outcome ([`pb::StatusOp`]); a coordinator with no decision logs an abort, so a
//!   transaction whose gateway vanished before deciding is aborted, and the participant logs
//!   what it learned.
//!
//! Every step is idempotent at the tablets, so a duplicate push or inquiry is harmless.

use std::collections::HashSet;
use std::sync::Arc;

use meridian_proto as pb;
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::raft::driver::ResolverWork;
use crate::raft::GroupId;

/// How the resolver reaches other groups' leaders. The tablet server has no routing of its own:
/// whoever composes a process passes the KV client's router, so the system has one routing and
/// leader-chasing loop.
#[async_trait::async_trait]
pub trait LeaderRouter: Send + Sync + 'static {
    /// Sends one transaction step to `group`'s leader, chasing the leader until it answers or
    /// the router's deadline passes. The error says why, for the log; the step is retried later.
    async fn txn_step(
        &self,
        group: GroupId,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, String>;

    /// Learns server addresses, from the placement driver's heartbeat answers.
    fn learn_servers(&self, servers: Vec<pb::ServerInfo>);
}

/// Runs until the sender side is dropped.
pub async fn run(router: Arc<dyn LeaderRouter>, mut work: UnboundedReceiver<ResolverWork>) {
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::default();
    while let Some(w) = work.recv().await {
        let txn = match &w {
            ResolverWork::Push { txn, .. } | ResolverWork::Inquire { txn, .. } => *txn,
        };
        if !busy.lock().insert(txn) {
            continue;
        }
        let router = router.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            let result = match w {
                ResolverWork::Push {
                    coordinator,
                    txn,
                    commit,
                    ts,
                    participants,
                } => push(&*router, coordinator, txn, commit, ts, &participants).await,
                ResolverWork::Inquire {
                    group,
                    coordinator,
                    txn,
                } => inquire(&*router, group, coordinator, txn).await,
            };
            if let Err(e) = result {
                tracing::debug!(txn, error = %e, "two-phase commit housekeeping will be retried");
            }
            busy.lock().remove(&txn);
        });
    }
}

fn request(group: GroupId, txn: u64, op: pb::txn_request::Op) -> pb::TxnRequest {
    pb::TxnRequest {
        group_id: group.0,
        txn: Some(pb::TxnMeta {
            id: txn,
            priority: 0,
        }),
        lock_epoch: 0,
        op: Some(op),
    }
}

async fn step(
    router: &dyn LeaderRouter,
    group: GroupId,
    txn: u64,
    op: pb::txn_request::Op,
) -> Result<pb::TxnResponse, String> {
    router.txn_step(group, request(group, txn, op)).await
}

async fn push(
    router: &dyn LeaderRouter,
    coordinator: GroupId,
    txn: u64,
    commit: bool,
    ts: u64,
    participants: &[u64],
) -> Result<(), String> {
    let calls = participants.iter().map(|p| {
        step(
            router,
            GroupId(*p),
            txn,
            pb::txn_request::Op::Resolve(pb::ResolveOp {
                commit,
                commit_ts: ts,
            }),
        )
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }
    step(
        router,
        coordinator,
        txn,
        pb::txn_request::Op::Forget(pb::ForgetOp {}),
    )
    .await?;
    tracing::debug!(txn, commit, "two-phase commit outcome delivered");
    Ok(())
}

async fn inquire(
    router: &dyn LeaderRouter,
    group: GroupId,
    coordinator: GroupId,
    txn: u64,
) -> Result<(), String> {
    let status = step(
        router,
        coordinator,
        txn,
        pb::txn_request::Op::Status(pb::StatusOp {}),
    )
    .await?;
    let commit = match pb::TxnOutcome::try_from(status.outcome) {
        Ok(pb::TxnOutcome::Committed) => true,
        Ok(pb::TxnOutcome::Aborted) => false,
        _ => return Err("coordinator has no outcome yet".into()),
    };
    step(
        router,
        group,
        txn,
        pb::txn_request::Op::Resolve(pb::ResolveOp {
            commit,
            commit_ts: status.ts,
        }),
    )
    .await?;
    tracing::info!(
        txn,
        commit,
        "resolved a prepared transaction by asking its coordinator"
    );
    Ok(())
}
