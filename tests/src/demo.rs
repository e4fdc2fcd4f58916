//! Driving `meridian demo`, the one-command local cluster, as a user would.
//!
//! [`Demo::start`] runs `meridian demo --no-shell --pg-port P` with stdin closed. A reader
//! thread copies the demo's stdout line by line into memory (so tests can wait for a line, such
//! as the `data directory: <path>` announcement) and into `demo.log`, which also receives
//! stderr. [`Demo::terminate`] sends SIGTERM and waits, bounded, for a clean exit, which is how
//! an operator's Ctrl-C or `kill` ends it.
//!
//! On drop a demo that still runs is SIGKILLed. A data directory it announced and did not
//! remove is removed too, but only if it lies under the system's temp directory (the path comes
//! from the process's output, so the harness does not trust it further). If the test is
//! panicking, the log's tail is printed; `MERIDIAN_KEEP_TEST_DIR=1` keeps the log and any
//! leftover data directory.
//!
//! Children the demo may spawn are its own business: if it is SIGKILLed they are not reaped
//! here, so a demo should run its nodes in-process or tie their lifetime to its own.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{sleep, Instant};
use tokio_postgres::Client;

use crate::cluster::{keep_dir_requested, LOG_TAIL_LINES};
use crate::pg;
use crate::process::{configure_environment, log_tail, send_sigterm};
use crate::slot::Slot;
use crate::HarnessError;

/// The marker the demo prints before its data directory's path.
pub const DATA_DIR_MARKER: &str = "data directory:";
/// How often waits on the demo poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running `meridian demo`. See the module docs.
#[derive(Debug)]
pub struct Demo {
    child: Mutex<Option<Child>>,
    pg_port: u16,
    /// The demo's stdout so far, one entry per line.
    stdout: Arc<Mutex<Vec<String>>>,
    /// Holds `demo.log`; `None` only inside `drop`.
    log_dir: Option<TempDir>,
    log_path: PathBuf,
    _slot: Slot,
}

impl Demo {
    /// Starts `bin demo --no-shell --pg-port pg_port`.
    ///
    /// # Panics
    ///
    /// If the log file cannot be created or the binary cannot be spawned.
    pub fn start(bin: &Path, pg_port: u16) -> Demo {
        let slot = Slot::acquire();
        let log_dir = tempfile::Builder::new()
            .prefix("meridian-demo-log-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create the demo's log directory: {error}"));
        let log_path = log_dir.path().join("demo.log");
        eprintln!("demo log: {}", log_path.display());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let stdout_log = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot duplicate the log's handle: {error}"));
        let args: Vec<OsString> = vec![
            "demo".into(),
            "--no-shell".into(),
            "--pg-port".into(),
            pg_port.to_string().into(),
        ];
        let mut command = Command::new(bin);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        configure_environment(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {} demo: {error}", bin.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stdout.take() {
            let lines = Arc::clone(&stdout);
            // Detached: it ends at EOF, when the demo (and anything holding its stdout) exits.
            std::thread::spawn(move || copy_stdout(pipe, &lines, stdout_log));
        }
        Demo {
            child: Mutex::new(Some(child)),
            pg_port,
            stdout,
            log_dir: Some(log_dir),
            log_path,
            _slot: slot,
        }
    }

    /// The PostgreSQL port the demo was told to serve on.
    pub fn pg_port(&self) -> u16 {
        self.pg_port
    }

    /// `postgresql://root@127.0.0.1:P/meridian`.
    pub fn pg_url(&self) -> String {
        pg::pg_url(self.pg_port)
    }

    /// `host=127.0.0.1 port=P user=root dbname=meridian`.
    pub fn pg_config(&self) -> String {
        pg::pg_config(self.pg_port)
    }

    /// Connects over the PostgreSQL protocol (no TLS).
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        pg::connect(&self.pg_config()).await
    }

    /// The file holding the demo's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The demo's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    /// Every line the demo has printed to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the demo answers `SHOW TABLES` on its PostgreSQL port, within `timeout`;
    /// fails at once if it exits.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        let what = format!("demo on port {}", self.pg_port);
        let exited = || self.exited_error();
        pg::wait_serving(&what, &self.pg_config(), deadline, timeout, &exited).await
    }

    /// Waits, within `timeout`, for the `data directory: <path>` line and returns the path.
    pub async fn data_dir(&self, timeout: Duration) -> Result<PathBuf, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(path) = self
                .stdout_lines()
                .iter()
                .find_map(|line| parse_data_dir(line))
            {
                return Ok(path);
            }
            if let Some(error) = self.exited_error() {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("the demo printing `{DATA_DIR_MARKER} <path>`"),
                    timeout,
                    last_error: format!("stdout so far: {:?}", self.stdout_lines()),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the demo to exit, returning its status. On
    /// timeout the demo is left running (drop kills it).
    pub async fn terminate(&self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let pid = self.pid().ok_or_else(|| HarnessError::Io {
            what: "sending SIGTERM to the demo".to_string(),
            source: std::io::Error::other("the demo is no longer running"),
        })?;
        send_sigterm(pid).map_err(|source| HarnessError::Io {
            what: format!("sending SIGTERM to the demo (pid {pid})"),
            source,
        })?;
        self.wait_exit(timeout).await
    }

    /// Waits up to `timeout` for the demo to exit on its own and returns its status.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: "the demo exiting".to_string(),
                    timeout,
                    last_error: format!("still running; see {}", self.log_path.display()),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        self.lock()
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    fn exited_error(&self) -> Option<HarnessError> {
        let status = self.try_wait()?;
        Some(HarnessError::Exited {
            name: "demo".to_string(),
            status,
            log: self.log_path.clone(),
            tail: log_tail(&self.log_path, LOG_TAIL_LINES),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.lock().take() {
            // Fails only if it already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
        let keep = keep_dir_requested();
        if std::thread::panicking() {
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of the demo's log ({}) -----\n{}",
                self.log_path.display(),
                log_tail(&self.log_path, LOG_TAIL_LINES)
            );
        }
        let leftover = self
            .stdout_lines()
            .iter()
            .find_map(|line| parse_data_dir(line))
            .filter(|path| path.exists());
        if let Some(path) = leftover {
            if keep {
                eprintln!("kept the demo's data directory {}", path.display());
            } else if is_strictly_under(&path, &std::env::temp_dir()) {
                // Best effort: a leftover directory only costs disk space.
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        if let Some(dir) = self.log_dir.take() {
            if keep {
                eprintln!("kept the demo's log directory {}", dir.keep().display());
            }
        }
    }
}

/// Extracts the path from a line containing `data directory: <path>`. The path is the first
/// whitespace-separated word after the marker, so a trailing note does not become part of it.
pub fn parse_data_dir(line: &str) -> Option<PathBuf> {
    let start = line.find(DATA_DIR_MARKER)? + DATA_DIR_MARKER.len();
    line[start..].split_whitespace().next().map(PathBuf::from)
}

/// Whether `path` is absolute, inside `dir`, and not `dir` itself.
fn is_strictly_under(path: &Path, dir: &Path) -> bool {
    path.is_absolute() && path != dir && path.starts_with(dir)
}

/// Copies the demo's stdout into `lines` and the log until EOF.
fn copy_stdout(pipe: ChildStdout, lines: &Mutex<Vec<String>>, mut log: File) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                // The log is for people; losing a line of it must not stop the copy.
                let _ = log.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(text.trim_end_matches(['\r', '\n']).to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_line_is_parsed() {
        assert_eq!(
            parse_data_dir("data directory: /tmp/meridian-demo-x1"),
            Some(PathBuf::from("/tmp/meridian-demo-x1"))
        );
        assert_eq!(
            parse_data_dir("  # data directory:   /tmp/d  (removed on exit)"),
            Some(PathBuf::from("/tmp/d"))
        );
        assert_eq!(parse_data_dir("data directory:"), None);
        assert_eq!(parse_data_dir("listening on 127.0.0.1:26257"), None);
    }

    #[test]
    fn only_paths_inside_the_temp_dir_are_removed() {
        let tmp = Path::new("/tmp");
        assert!(is_strictly_under(Path::new("/tmp/meridian-demo-1"), tmp));
        assert!(!is_strictly_under(Path::new("/tmp"), tmp));
        assert!(!is_strictly_under(Path::new("/home/user"), tmp));
        assert!(!is_strictly_under(Path::new("tmp/x"), tmp));
    }
}
