//! `meridian bench writes`: single-row writes, one at a time, on a 3-zone in-process cluster
//! with commit wait, the same without commit wait, and on PostgreSQL 15.
//!
//! Each write is an autocommit `INSERT INTO bench VALUES ($1, $2)` of a new key through the
//! extended protocol, so every one commits through Raft (3 replicas, fsync) and, with commit
//! wait, waits until its timestamp has surely passed. The report gives ε as the clock reports it,
//! the servers' commit-wait histogram, and write latencies; the point of Spanner's §4.2.1 is
//! that commit wait overlaps replication, so the difference with and without it should stay
//! below ε.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_truetime::TrueTime;

use super::postgres::TempPostgres;
use super::stats::{ms, summarize, Summary};
use super::BenchError;

/// What to run.
#[derive(Clone, Debug)]
pub struct WritesOptions {
    /// Writes measured per system (after a warm-up of 20).
    pub writes: usize,
}

/// One system's result.
pub struct Row {
    pub system: String,
    pub latency: Summary,
    pub throughput: f64,
}

async fn run_writes(config: &str, writes: usize) -> Result<(Summary, f64), BenchError> {
    let client = meridian_client::pg::connect(config).await?;
    client.batch_execute("DROP TABLE IF EXISTS bench").await?;
    client
        .batch_execute("CREATE TABLE bench (k INT8 PRIMARY KEY, v INT8)")
        .await?;
    let insert = client.prepare("INSERT INTO bench VALUES ($1, $2)").await?;
    for k in 0..20i64 {
        client.execute(&insert, &[&(-1 - k), &k]).await?;
    }
    let mut samples = Vec::with_capacity(writes);
    let started = Instant::now();
    for k in 0..writes as i64 {
        let t = Instant::now();
        client.execute(&insert, &[&k, &k]).await?;
        samples.push(t.elapsed());
    }
    let throughput = writes as f64 / started.elapsed().as_secs_f64();
    Ok((summarize(&samples), throughput))
}

/// The median of a Prometheus histogram summed over `text`'s series named `name`, estimated
/// from its cumulative buckets (the upper bound of the bucket holding the median).
pub fn histogram_median(texts: &[String], name: &str) -> Option<f64> {
    let mut buckets: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    let mut count = 0.0;
    let bucket_prefix = format!("{name}_bucket{{");
    let count_prefix = format!("{name}_count");
    for text in texts {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next());
                let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                if let (Some(le), Some(v)) = (le, value) {
                    if let Ok(le) = le.parse::<f64>() {
                        *buckets.entry((le * 1e9) as u64).or_default() += v;
                    }
                }
            } else if line.starts_with(&count_prefix) {
                count += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    if count == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| **c >= count / 2.0)
        .map(|(le, _)| *le as f64 / 1e9)
}

/// Runs the benchmark with `tt` as every server's clock and prints the table.
pub async fn run(tt: Arc<dyn TrueTime>, opts: WritesOptions) -> Result<String, BenchError> {
    let mut rows = Vec::new();
    let epsilons: Vec<u64> = (0..101).map(|_| tt.now().epsilon_nanos()).collect();
    let eps = summarize(
        &epsilons
            .iter()
            .map(|n| Duration::from_nanos(*n))
            .collect::<Vec<_>>(),
    )
    .median;

    let cluster = super::cluster::start(tt.clone(), true).await?;
    let (lat, tput) = run_writes(&cluster.pg_config(0), opts.writes).await?;
    let mut texts = Vec::new();
    for i in 0..cluster.len() {
        texts.push(cluster.scrape_metrics(i).await?);
    }
    let commit_wait = histogram_median(&texts, "meridian_commit_wait_seconds");
    cluster.shutdown().await;
    rows.push(Row {
        system: "meridian (commit wait)".into(),
        latency: lat,
        throughput: tput,
    });

    let cluster = super::cluster::start(tt.clone(), false).await?;
    let (lat, tput) = run_writes(&cluster.pg_config(0), opts.writes).await?;
    cluster.shutdown().await;
    rows.push(Row {
        system: "meridian (no commit wait, unsafe)".into(),
        latency: lat,
        throughput: tput,
    });

    if TempPostgres::available() {
        let pg = TempPostgres::start()?;
        let (lat, tput) = run_writes(&pg.config(), opts.writes).await?;
        rows.push(Row {
            system: "postgresql 15 (fsync, 1 node)".into(),
            latency: lat,
            throughput: tput,
        });
    }

    let mut out = String::new();
    out.push_str(&format!(
        "single-row writes, {} sequential autocommit INSERTs per system, 3 replicas in 3 zones on loopback\n",
        opts.writes
    ));
    out.push_str(&format!("median epsilon: {} ms\n", ms(eps)));
    match commit_wait {
        Some(s) => out.push_str(&format!(
            "median commit wait (server histogram, bucket upper bound): <= {:.2} ms\n",
            s * 1e3
        )),
        None => out.push_str("median commit wait: no samples\n"),
    }
    out.push_str(&format!(
        "{:<36} {:>10} {:>10} {:>10} {:>10}\n",
        "system", "median ms", "p90 ms", "p99 ms", "writes/s"
    ));
    for r in &rows {
        out.push_str(&format!(
            "{:<36} {:>10} {:>10} {:>10} {:>10.0}\n",
            r.system,
            ms(r.latency.median),
            ms(r.latency.p90),
            ms(r.latency.p99),
            r.throughput
        ));
    }
    if rows.len() >= 2 {
        let diff = rows[0].latency.median.as_secs_f64() - rows[1].latency.median.as_secs_f64();
        out.push_str(&format!(
            "commit wait adds {:.2} ms to the median write ({} epsilon = {} ms)\n",
            diff * 1e3,
            if diff < eps.as_secs_f64() {
                "below"
            } else {
                "NOT below"
            },
            ms(eps)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_from_buckets() {
        let text = "m_bucket{le=\"0.001\"} 1\nm_bucket{le=\"0.005\"} 3\nm_bucket{le=\"+Inf\"} 4\nm_count 4\n";
        assert_eq!(histogram_median(&[text.to_string()], "m"), Some(0.005));
        assert_eq!(histogram_median(&[], "m"), None);
    }
}
