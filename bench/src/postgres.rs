//! A throwaway PostgreSQL 15 server for side-by-side benchmarks: `initdb` into a temp dir,
//! started on a free loopback port with default durability (fsync on, synchronous_commit on),
//! stopped and removed afterwards. As root it runs as the `postgres` user, since PostgreSQL
//! refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BenchError;

/// Where Debian installs PostgreSQL 15's server programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct TempPostgres {
    dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
fn pg_command(program: &str, args: &[&str]) -> Command {
    let path = Path::new(PG_BIN).join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path).args(args);
        c
    } else {
        let mut c = Command::new(path);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> Result<(), BenchError> {
    let out = c
        .output()
        .map_err(|e| BenchError::Postgres(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Postgres(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl TempPostgres {
    /// True if PostgreSQL 15's server programs are installed.
    pub fn available() -> bool {
        Path::new(PG_BIN).join("postgres").exists()
    }

    pub fn start() -> Result<TempPostgres, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("meridian-bench-pg-")
            .tempdir()?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown",
            )?;
        }
        let data = dir.path().join("data");
        let data_s = data.to_string_lossy().to_string();
        run(
            pg_command(
                "initdb",
                &[
                    "-D",
                    &data_s,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
            ),
            "initdb",
        )?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.path().display()
        );
        let log = dir.path().join("pg.log").to_string_lossy().to_string();
        run(
            pg_command(
                "pg_ctl",
                &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "start"],
            ),
            "pg_ctl start",
        )?;
        Ok(TempPostgres { dir, data, port })
    }

    pub fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        let _ = pg_command("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]).output();
        let _ = &self.dir;
    }
}
