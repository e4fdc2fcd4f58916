//! One child process of the `meridian` binary, restartable with the same command line.
//!
//! A [`ManagedProcess`] remembers its program, arguments and log file, so the harness can kill
//! it with SIGKILL and start it again exactly as before: same ports, same data directory. Its
//! stdout and stderr are appended to the log file, and every start writes a banner line first,
//! so one file tells the whole life of a node across restarts.
//!
//! Children get `RUST_LOG` from the test's environment (default `info`) and `NO_COLOR=1`, so
//! logs read cleanly in a file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// The log level children get when the test's environment sets no `RUST_LOG`.
pub const DEFAULT_RUST_LOG: &str = "info";

/// A restartable child process whose output goes to a log file.
#[derive(Debug)]
pub(crate) struct ManagedProcess {
    /// A short name for messages and the log file: `pd`, `s1`, `s2`, …
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log_path: PathBuf,
    /// The running child, or `None` once killed and reaped (or never started).
    child: Mutex<Option<Child>>,
}

impl ManagedProcess {
    /// Describes a process; nothing runs until [`ManagedProcess::start`].
    pub(crate) fn new(name: &str, program: &Path, args: Vec<OsString>, log_path: PathBuf) -> Self {
        ManagedProcess {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            log_path,
            child: Mutex::new(None),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts the process, first killing it if it is still running.
    ///
    /// # Panics
    ///
    /// If the log file cannot be opened or the program cannot be spawned: the test cannot go
    /// on, and the message says which process and why.
    pub(crate) fn start(&self) {
        self.start_with(&[]);
    }

    /// [`ManagedProcess::start`] with `extra` arguments after the usual ones, for this start
    /// only.
    pub(crate) fn start_with(&self, extra: &[OsString]) {
        let mut child = self.lock();
        kill_and_reap(&mut child);
        let log = self.open_log().unwrap_or_else(|error| {
            panic!(
                "cannot open log file {} for {}: {error}",
                self.log_path.display(),
                self.name
            )
        });
        let args: Vec<OsString> = self.args.iter().chain(extra).cloned().collect();
        let spawned = spawn_logged(&self.program, &args, log).unwrap_or_else(|error| {
            panic!(
                "cannot start {} ({} {}): {error}",
                self.name,
                self.program.display(),
                self.command_line()
            )
        });
        *child = Some(spawned);
    }

    /// Sends SIGKILL (what `Child::kill` sends on unix) and reaps the process. Does nothing if
    /// it is not running.
    pub(crate) fn kill(&self) {
        kill_and_reap(&mut self.lock());
    }

    /// Whether the process was started and has not exited or been killed since.
    pub(crate) fn is_running(&self) -> bool {
        self.exit_status().is_none() && self.lock().is_some()
    }

    /// The exit status if the process exited on its own (killed processes are forgotten, so
    /// they report `None`).
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.lock();
        child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// The process id while the process runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the child handle intact; keep using it.
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn command_line(&self) -> String {
        self.args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Opens the log for appending and writes a banner naming this start.
    fn open_log(&self) -> io::Result<File> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(
            log,
            "==== harness: starting {} at unix time {:.3}: {} {}",
            self.name,
            since_epoch.as_secs_f64(),
            self.program.display(),
            self.command_line()
        )?;
        Ok(log)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        kill_and_reap(&mut self.lock());
    }
}

/// Spawns `program args…` with stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(program: &Path, args: &[OsString], log: File) -> io::Result<Child> {
    let stderr = log.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr));
    configure_environment(&mut command);
    command.spawn()
}

/// Passes `RUST_LOG` through (defaulting to [`DEFAULT_RUST_LOG`]) and turns colours off.
pub(crate) fn configure_environment(command: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", DEFAULT_RUST_LOG);
    }
    command.env("NO_COLOR", "1");
}

/// Kills the child if there is one and waits for it, leaving `None`.
fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut running) = child.take() {
        // Fails only if the process already exited, which is what we want anyway.
        let _ = running.kill();
        let _ = running.wait();
    }
}

/// The last `lines` lines of the file at `path`, or a note saying why it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

/// Sends SIGTERM to `pid` with the system's `kill` command (no libc binding needed).
pub fn send_sigterm(pid: u32) -> io::Result<()> {
    send_signal(pid, "TERM")
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, …) to `pid` with the system's `kill` command.
pub(crate) fn send_signal(pid: u32, name: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -{name} {pid} exited with {status}"
        )))
    }
}
