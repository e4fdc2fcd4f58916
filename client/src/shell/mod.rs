//! The SQL shell behind `meridian sql`.
//!
//! The shell is a PostgreSQL-wire client (tokio-postgres, no TLS) with two modes:
//!
//! - **`-e STATEMENTS`** ([`ShellOptions::execute`]): run the statements in order, print each
//!   result, and stop at the first failure, which makes [`run`] return
//!   [`ShellError::StatementFailed`] so the binary exits non-zero.
//! - **Interactive**: read lines with rustyline until `\q`, `quit`, `exit` or Ctrl-D. A statement
//!   may span lines and ends at a `;` outside quotes and comments ([`split`]); several
//!   statements on one line run in order; Ctrl-C discards the statement being typed. History
//!   persists in `~/.meridian_history` when `HOME` is set and writable.
//!
//! Every statement is sent on its own with the simple query protocol and timed on the client.
//! Rows print as a `psql`-like table followed by `(N rows)`, other statements print their
//! command tag, and both end with `Time: … ms` ([`render`]). A failed statement prints
//! `ERROR: …` and `SQLSTATE: …` to stderr; the interactive shell then carries on, on the same
//! connection. Only a lost connection, an unreadable terminal or unwritable output end the
//! interactive shell with an error.
//!
//! Not done yet: TLS and passwords (the demo cluster runs insecure), cancelling a running
//! statement with Ctrl-C (it ends the process, as the terminal's default), and `psql`'s
//! backslash commands other than `\q` and `\?`.

mod input;
pub mod render;
pub mod split;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

use self::input::{Input, LineReader};
use self::render::{elapsed_line, outcomes_from_messages};
use self::split::split_statements;

/// The user name used when the URL names none.
pub const DEFAULT_USER: &str = "root";
/// The database used when the URL names none.
pub const DEFAULT_DATABASE: &str = "meridian";
/// How long to wait for the server to accept the connection, unless the URL sets
/// `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable a password is read from when the URL has none (as libpq does).
pub const PASSWORD_ENV: &str = "PGPASSWORD";
/// The history file's name, in the user's home directory.
pub const HISTORY_FILE_NAME: &str = ".meridian_history";

/// What `meridian sql` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOptions {
    /// The server to connect to, as a PostgreSQL URL (`postgresql://USER@HOST:PORT/DB`) or a
    /// key-value string (`host=… port=… user=…`). The user defaults to [`DEFAULT_USER`] and the
    /// database to [`DEFAULT_DATABASE`].
    pub url: String,
    /// Statements to run instead of starting the interactive shell (`-e`); several may be
    /// separated by `;`.
    pub execute: Option<String>,
    /// A secure cluster's certificates (`--certs-dir`): connect over TLS that trusts only its
    /// CA, presenting `client.<user>.crt` if it is there (else the URL's password, or
    /// `PGPASSWORD`, logs in). `None` connects without TLS.
    pub certs_dir: Option<std::path::PathBuf>,
}

/// Why the shell stopped with an error.
///
/// Statement errors inside the interactive shell are printed and do not end it; they never
/// appear here. Each message is complete on its own, including the causes of a tokio-postgres
/// error (whose own message is only "db error" or "error connecting to server"), so the binary
/// can print it as it is; the underlying error stays available in the variant's fields.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    // The invocation needs fixing.
    /// The connection URL does not parse.
    #[error("invalid connection URL {url:?}: {}", error_chain(.error))]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What tokio-postgres found wrong with it.
        error: tokio_postgres::Error,
    },
    /// `--certs-dir` lacks the CA or holds an unusable certificate or key.
    #[error("cannot use the certificates: {0}")]
    Certificates(String),

    // The server is unreachable: check it is running, then retry.
    /// The server did not accept the connection.
    #[error("cannot connect to {target}: {}", error_chain(.error))]
    Connect {
        /// `user@host:port/database`.
        target: String,
        /// The connection error.
        error: tokio_postgres::Error,
    },
    /// The connection broke while the shell was running.
    #[error("lost the connection to {target}: {}", error_chain(.error))]
    ConnectionLost {
        /// `user@host:port/database`.
        target: String,
        /// The error that showed the connection was closed.
        error: tokio_postgres::Error,
    },

    // A statement given with `-e` failed; its error has already been printed to stderr.
    /// A `-e` statement failed, so the statements after it did not run.
    #[error("statement failed{}", .code.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    StatementFailed {
        /// The statement that failed.
        statement: String,
        /// Its SQLSTATE, when the server sent one.
        code: Option<String>,
    },

    // The local environment is broken.
    /// The terminal could not be read.
    #[error("cannot read from the terminal: {0}")]
    Terminal(String),
    /// Results could not be written (for example, stdout was closed).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the shell: connects to `opts.url`, then runs `opts.execute` or an interactive session.
///
/// Must be called inside a tokio runtime; the terminal is read on a blocking thread, so any
/// runtime flavour works.
pub async fn run(opts: ShellOptions) -> Result<(), ShellError> {
    let session = Session::connect(&opts.url, opts.certs_dir.as_deref()).await?;
    match &opts.execute {
        Some(statements) => session.execute_all(statements).await,
        None => session.interactive().await,
    }
}

/// A connected shell.
struct Session {
    client: Client,
    /// `user@host:port/database`, for the prompt and error messages.
    target: String,
}

/// What happened to one statement, as far as the caller's control flow cares.
enum Ran {
    Succeeded,
    /// The statement failed; its error was printed.
    Failed {
        code: Option<String>,
    },
}

impl Session {
    /// Parses `url`, fills in the defaults and connects (over TLS with `certs_dir`), spawning
    /// the connection task.
    async fn connect(
        url: &str,
        certs_dir: Option<&std::path::Path>,
    ) -> Result<Session, ShellError> {
        let mut config: Config = url.parse().map_err(|error| ShellError::InvalidUrl {
            url: url.to_string(),
            error,
        })?;
        if config.get_user().is_none() {
            config.user(DEFAULT_USER);
        }
        if config.get_dbname().is_none() {
            config.dbname(DEFAULT_DATABASE);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var(PASSWORD_ENV) {
                config.password(password);
            }
        }
        let target = describe_target(&config);
        let client =
            match certs_dir {
                Some(dir) => crate::pg::connect_secure(config, dir)
                    .await
                    .map_err(|error| match error {
                        crate::pg::ConnectError::Certs(e) => {
                            ShellError::Certificates(e.to_string())
                        }
                        crate::pg::ConnectError::Postgres(error) => ShellError::Connect {
                            target: target.clone(),
                            error,
                        },
                    })?,
                None => {
                    let (client, connection) =
                        config
                            .connect(NoTls)
                            .await
                            .map_err(|error| ShellError::Connect {
                                target: target.clone(),
                                error,
                            })?;
                    tokio::spawn(async move {
                        // A broken connection also fails the next statement, which reports it.
                        let _ = connection.await;
                    });
                    client
                }
            };
        Ok(Session { client, target })
    }

    /// Runs `-e` statements in order, stopping at the first failure.
    async fn execute_all(&self, text: &str) -> Result<(), ShellError> {
        let split = split_statements(text);
        let last = Some(split.rest.trim_end().to_string()).filter(|rest| !rest.is_empty());
        for statement in split.statements.into_iter().chain(last) {
            if let Ran::Failed { code } = self.run_statement(&statement).await? {
                return Err(ShellError::StatementFailed { statement, code });
            }
        }
        Ok(())
    }

    /// The interactive loop: read, split, run, print, until the user leaves.
    async fn interactive(&self) -> Result<(), ShellError> {
        let prompt = format!("{}> ", self.target);
        let continuation = format!("{:>width$}", "-> ", width = prompt.chars().count());
        print_out(&format!(
            "Connected to {}. Statements end with ';'. Type \\? for help, \\q to quit.\n",
            self.target
        ))?;
        let mut reader = LineReader::spawn(history_path());
        let result = self
            .read_eval_print(&mut reader, &prompt, &continuation)
            .await;
        reader.close().await;
        result
    }

    async fn read_eval_print(
        &self,
        reader: &mut LineReader,
        prompt: &str,
        continuation: &str,
    ) -> Result<(), ShellError> {
        let mut buffer = String::new();
        loop {
            let shown = if buffer.is_empty() {
                prompt
            } else {
                continuation
            };
            let line = match reader.read_line(shown).await {
                Input::Line(line) => line,
                Input::Interrupted => {
                    buffer.clear();
                    continue;
                }
                Input::Eof => return Ok(()),
                Input::Failed(message) => return Err(ShellError::Terminal(message)),
            };
            if buffer.is_empty() {
                match MetaCommand::parse(&line) {
                    Some(MetaCommand::Quit) => return Ok(()),
                    Some(MetaCommand::Help) => {
                        print_out(HELP)?;
                        continue;
                    }
                    Some(MetaCommand::Unknown(command)) => {
                        print_err(&format!("unknown command {command}; type \\? for help"))?;
                        continue;
                    }
                    None => {}
                }
            }
            buffer.push_str(&line);
            buffer.push('\n');
            let split = split_statements(&buffer);
            buffer = split.rest;
            for statement in split.statements {
                reader.add_history(format!("{statement};"));
                // A failed statement has been reported; the shell carries on.
                self.run_statement(&statement).await?;
            }
        }
    }

    /// Runs one statement and prints its result or its error.
    ///
    /// Returns an error only when the shell cannot go on: the connection is gone or output
    /// cannot be written.
    async fn run_statement(&self, statement: &str) -> Result<Ran, ShellError> {
        let started = Instant::now();
        let result = self.client.simple_query(statement).await;
        let elapsed = started.elapsed();
        match result {
            Ok(messages) => {
                let mut text = String::new();
                for outcome in outcomes_from_messages(statement, messages) {
                    text.push_str(&outcome.render());
                    text.push('\n');
                }
                text.push_str(&elapsed_line(elapsed));
                text.push('\n');
                print_out(&text)?;
                Ok(Ran::Succeeded)
            }
            Err(error) if error.is_closed() => Err(ShellError::ConnectionLost {
                target: self.target.clone(),
                error,
            }),
            Err(error) => {
                print_err(&describe_error(&error))?;
                Ok(Ran::Failed {
                    code: error.code().map(|code| code.code().to_string()),
                })
            }
        }
    }
}

/// The shell's own commands, recognised only at the start of a statement.
#[derive(Debug, PartialEq, Eq)]
enum MetaCommand {
    Quit,
    Help,
    Unknown(String),
}

impl MetaCommand {
    /// Parses `line` as a shell command; `None` means it is SQL.
    fn parse(line: &str) -> Option<MetaCommand> {
        let trimmed = line.trim().trim_end_matches(';').trim_end();
        if trimmed.eq_ignore_ascii_case("quit") || trimmed.eq_ignore_ascii_case("exit") {
            return Some(MetaCommand::Quit);
        }
        let command = trimmed.strip_prefix('\\')?;
        Some(match command.split_whitespace().next().unwrap_or("") {
            "q" | "quit" => MetaCommand::Quit,
            "?" | "h" | "help" => MetaCommand::Help,
            _ => MetaCommand::Unknown(trimmed.to_string()),
        })
    }
}

const HELP: &str = "\
Statements end with ';' and may span lines; several may share a line.
  \\q, quit, exit, Ctrl-D   leave the shell
  \\?                       show this help
  Ctrl-C                   discard the statement being typed
";

/// Formats a statement error as the shell prints it: `ERROR: …`, `SQLSTATE: …`, and the
/// server's detail and hint when it sent them.
fn describe_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("ERROR: {}\nSQLSTATE: {}", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("\nDETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("\nHINT: {hint}"));
            }
            text
        }
        None => format!("ERROR: {}", error_chain(error)),
    }
}

/// An error and its `source()` chain, `: `-separated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `user@host:port/database` for a connection config.
fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "localhost".to_string()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(DEFAULT_USER),
        config.get_dbname().unwrap_or(DEFAULT_DATABASE)
    )
}

/// `~/.meridian_history`, or `None` when there is no home directory.
fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty())?;
    Some(PathBuf::from(home).join(HISTORY_FILE_NAME))
}

/// Writes `text` and a newline to stdout and flushes, so output interleaves with the prompt.
fn print_out(text: &str) -> Result<(), ShellError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Writes `text` and a newline to stderr.
fn print_err(text: &str) -> Result<(), ShellError> {
    let mut err = std::io::stderr().lock();
    writeln!(err, "{text}")?;
    err.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_commands_are_recognised() {
        assert_eq!(MetaCommand::parse("\\q"), Some(MetaCommand::Quit));
        assert_eq!(MetaCommand::parse("  quit  "), Some(MetaCommand::Quit));
        assert_eq!(MetaCommand::parse("EXIT;"), Some(MetaCommand::Quit));
        assert_eq!(MetaCommand::parse("\\?"), Some(MetaCommand::Help));
        assert_eq!(
            MetaCommand::parse("\\dt"),
            Some(MetaCommand::Unknown("\\dt".to_string()))
        );
        assert_eq!(MetaCommand::parse("SELECT 1;"), None);
        assert_eq!(MetaCommand::parse("quitting"), None);
    }

    #[test]
    fn target_fills_in_defaults() {
        let config: Config = "postgresql://127.0.0.1:26257".parse().expect("valid URL");
        assert_eq!(describe_target(&config), "root@127.0.0.1:26257/meridian");
        let config: Config = "postgresql://alice@db.example:5433/bank"
            .parse()
            .expect("valid URL");
        assert_eq!(describe_target(&config), "alice@db.example:5433/bank");
    }

    #[tokio::test]
    async fn invalid_url_is_reported() {
        let error = run(ShellOptions {
            url: "postgresql://host:notaport/db".to_string(),
            execute: Some("SELECT 1".to_string()),
            certs_dir: None,
        })
        .await
        .expect_err("the port does not parse");
        assert!(matches!(error, ShellError::InvalidUrl { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_connect_error() {
        // Bind and release a port so that nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind a free port")
            .port();
        let error = run(ShellOptions {
            url: format!("postgresql://root@127.0.0.1:{port}/meridian"),
            execute: Some("SELECT 1".to_string()),
            certs_dir: None,
        })
        .await
        .expect_err("nothing listens there");
        assert!(matches!(error, ShellError::Connect { .. }), "{error:?}");
        assert!(error
            .to_string()
            .contains(&format!("root@127.0.0.1:{port}/meridian")));
    }

    #[tokio::test]
    async fn a_certs_dir_without_a_ca_is_a_certificate_error() {
        let dir = std::env::temp_dir().join(format!("meridian-no-certs-{}", std::process::id()));
        let error = run(ShellOptions {
            url: "postgresql://root@127.0.0.1:1/meridian".to_string(),
            execute: Some("SELECT 1".to_string()),
            certs_dir: Some(dir),
        })
        .await
        .expect_err("there is no ca.crt");
        assert!(matches!(error, ShellError::Certificates(_)), "{error:?}");
    }
}
