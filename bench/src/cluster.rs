//! The cluster benchmarks run on: the local 3-zone cluster (`meridian-node`'s
//! [`LocalCluster`]) with a chosen TrueTime source, commit wait on or off, and metrics served
//! so a benchmark can read ε and commit-wait histograms afterwards.

use std::sync::Arc;

use meridian_node::local::{ClusterOptions, LocalCluster};
use meridian_truetime::TrueTime;

use super::BenchError;

/// Starts three nodes in three zones on loopback with clock `tt`.
pub async fn start(tt: Arc<dyn TrueTime>, commit_wait: bool) -> Result<LocalCluster, BenchError> {
    let opts = ClusterOptions::zones(3).each_node(|n| {
        n.tt = tt.clone();
        n.commit_wait = commit_wait;
        n.metrics = true;
    });
    LocalCluster::start(ClusterOptions {
        dir_prefix: "meridian-bench-".into(),
        ..opts
    })
    .await
    .map_err(BenchError::Cluster)
}
