//! Bounded retries for "this succeeds again within N seconds" checks.
//!
//! Fault tests cannot know how long a leader election or a restart takes, only the bound it
//! must meet. [`retry_until`] runs an attempt until it succeeds or the deadline passes, with a
//! short backoff between attempts, and gives up with the last failure, so a test that fails
//! says what went wrong rather than just "timed out". Each attempt is itself cut off after at
//! most [`ATTEMPT_TIMEOUT`] (or the time left), so one hung statement cannot use up the whole
//! budget, and the loop always ends by the deadline plus one backoff step.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::describe_error;

/// The longest a single attempt may run inside [`retry_until`].
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after the first failed attempt; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The error type attempts may return: anything that converts into a boxed error, which
/// includes `String`, `&str` and every `std::error::Error`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why one attempt did not succeed.
#[derive(Debug)]
pub enum AttemptFailure {
    /// The attempt returned this error.
    Failed(BoxError),
    /// The attempt was still running after this long and was dropped.
    TimedOut(Duration),
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Failed(error) => f.write_str(&describe_error(error.as_ref())),
            AttemptFailure::TimedOut(after) => write!(f, "attempt timed out after {after:?}"),
        }
    }
}

/// No attempt succeeded before the deadline.
pub struct RetryError {
    /// How many attempts ran.
    pub attempts: u32,
    /// The time allowed.
    pub timeout: Duration,
    /// How the last attempt failed.
    pub last: AttemptFailure,
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no success within {:?} ({} attempts); last failure: {}",
            self.timeout, self.attempts, self.last
        )
    }
}

/// Shows the same text as `Display`, so `.expect(…)` on a failed retry reads well.
impl fmt::Debug for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for RetryError {}

/// Runs `attempt` until it returns `Ok` or `timeout` has passed, each attempt limited to
/// [`ATTEMPT_TIMEOUT`]. At least one attempt always runs.
///
/// ```no_run
/// # async fn example(cluster: &meridian_tests::Cluster) {
/// use std::time::Duration;
/// let rows = meridian_tests::retry_until(Duration::from_secs(15), || async {
///     let client = cluster.connect(1).await?;
///     client.simple_query("SELECT k FROM kv").await
/// })
/// .await
/// .expect("reads succeed again within 15 s");
/// # }
/// ```
pub async fn retry_until<T, E, F, Fut>(timeout: Duration, attempt: F) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    retry_until_with(timeout, ATTEMPT_TIMEOUT, attempt).await
}

/// [`retry_until`] with a chosen limit per attempt.
pub async fn retry_until_with<T, E, F, Fut>(
    total: Duration,
    per_attempt: Duration,
    mut attempt: F,
) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    let deadline = Instant::now() + total;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let limit = per_attempt.min(deadline.saturating_duration_since(Instant::now()));
        // Even past the deadline the first attempt gets a moment to run.
        let limit = limit.max(Duration::from_millis(10));
        let last = match timeout(limit, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => AttemptFailure::Failed(error.into()),
            Err(_) => AttemptFailure::TimedOut(limit),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RetryError {
                attempts,
                timeout: total,
                last,
            });
        }
        sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_success() {
        let calls = AtomicU32::new(0);
        let value = retry_until(Duration::from_secs(5), || async {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            if call < 2 {
                Err(format!("not yet ({call})"))
            } else {
                Ok(call)
            }
        })
        .await
        .expect("third attempt succeeds");
        assert_eq!(value, 2);
    }

    #[tokio::test]
    async fn gives_up_with_the_last_error() {
        let started = Instant::now();
        let error = retry_until(Duration::from_millis(300), || async {
            Err::<(), _>("down")
        })
        .await
        .expect_err("never succeeds");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(error.attempts >= 2, "{error}");
        assert_eq!(
            error.to_string().split("last failure: ").nth(1),
            Some("down")
        );
    }

    #[tokio::test]
    async fn hung_attempts_are_cut_off() {
        let started = Instant::now();
        let error = retry_until_with(
            Duration::from_millis(300),
            Duration::from_millis(100),
            || async {
                sleep(Duration::from_secs(60)).await;
                Ok::<(), String>(())
            },
        )
        .await
        .expect_err("every attempt hangs");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(error.last, AttemptFailure::TimedOut(_)), "{error}");
    }
}
