//! SET, RESET and SHOW: session settings, the settings that change behaviour
//! (`default_transaction_read_only`, `transaction_read_only`, `max_staleness`,
//! `max_result_bytes`), the
//! timestamps (`commit_timestamp`, `read_timestamp`), and the settings clients commonly set
//! that we accept and echo but that change nothing.

use sqlparser::ast;

use super::{Access, CommandTag, Session, StatementResult, TxnState};
use crate::catalog;
use crate::error::{Result, SqlError};
use crate::limits;
use crate::plan::OutputColumn;
use crate::timestamp::{format_duration, parse_duration_setting};
use crate::types::{DataType, Datum, Row};

/// Settings whose SHOW value is an INT8 timestamp rather than text.
const TIMESTAMP_SETTINGS: [&str; 2] = ["commit_timestamp", "read_timestamp"];

impl Session {
    pub(super) async fn show_tables(&mut self) -> Result<StatementResult> {
        let mut txn =
            meridian_kv::Txn::from(self.store.begin_read_only(meridian_kv::ReadBound::Strong));
        let tables = catalog::list_tables(&mut txn).await;
        txn.rollback().await;
        let rows: Vec<Row> = tables?
            .into_iter()
            .map(|t| vec![Datum::Text(t.name)])
            .collect();
        Ok(StatementResult {
            columns: Some(vec![OutputColumn::new("table_name", DataType::Text)]),
            tag: CommandTag::Select(rows.len()),
            rows,
        })
    }

    pub(super) async fn show(&self, name: &str) -> Result<StatementResult> {
        let timestamp = |ts: Option<u64>, what: &str| -> Result<Datum> {
            let ts = ts.ok_or_else(|| {
                SqlError::ObjectNotInPrerequisiteState(format!("no {what} in this session yet"))
            })?;
            i64::try_from(ts)
                .map(Datum::Int)
                .map_err(|_| SqlError::NumericOutOfRange("bigint".into()))
        };
        let value = match name {
            "commit_timestamp" => timestamp(self.last_commit_ts, "transaction has committed")?,
            "read_timestamp" => timestamp(self.last_read_ts, "read-only transaction has read")?,
            "is_superuser" => {
                let admin = self.schema.current().await?.is_admin(&self.user);
                Datum::Text(if admin { "on" } else { "off" }.to_string())
            }
            "session_user" | "current_user" => Datum::Text(self.user.clone()),
            "clock" => Datum::Text(self.store.clock().describe()),
            _ => Datum::Text(self.setting(name)?),
        };
        Ok(StatementResult {
            columns: Some(vec![show_column(name)]),
            rows: vec![vec![value]],
            tag: CommandTag::Show,
        })
    }

    fn setting(&self, name: &str) -> Result<String> {
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        match name {
            "default_transaction_read_only" => return Ok(on_off(self.default_read_only)),
            "transaction_read_only" => {
                return Ok(on_off(match &self.txn {
                    TxnState::Open(open) => open.access == Access::ReadOnly,
                    _ => self.default_read_only,
                }))
            }
            "max_staleness" => {
                return Ok(self
                    .max_staleness
                    .map_or_else(|| "0".to_string(), format_duration))
            }
            "max_result_bytes" => return Ok(self.max_result_bytes.to_string()),
            _ => {}
        }
        if let Some(value) = self.settings.get(name) {
            return Ok(value.clone());
        }
        let value = match name {
            "server_version" => "16.0",
            "server_version_num" => "160000",
            "server_encoding" | "client_encoding" => "UTF8",
            "transaction_isolation"
            | "transaction isolation level"
            | "default_transaction_isolation" => "serializable",
            "datestyle" => "ISO, MDY",
            "timezone" => "UTC",
            "intervalstyle" => "postgres",
            "search_path" => "public",
            "standard_conforming_strings" | "integer_datetimes" | "is_superuser" => "on",
            "extra_float_digits" => "1",
            "application_name" => "",
            "bytea_output" => "hex",
            "max_identifier_length" => "63",
            "client_min_messages" => "notice",
            "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
            _ if is_known_setting(name) => "",
            _ => return Err(SqlError::UndefinedParameter(name.to_string())),
        };
        Ok(value.to_string())
    }

    pub(super) async fn set(&mut self, set: &ast::Set) -> Result<StatementResult> {
        match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                if let [ast::Expr::Identifier(id)] = values.as_slice() {
                    if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default") {
                        self.reset_variable(&name)?;
                        return Ok(StatementResult::command(CommandTag::Set));
                    }
                }
                let value = values
                    .iter()
                    .map(setting_value)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.set_variable(&name, value).await?;
            }
            ast::Set::SetTimeZone { value, .. } => {
                self.set_variable("timezone", setting_value(value)).await?;
            }
            ast::Set::SetTransaction {
                modes,
                snapshot: None,
                session,
            } => {
                // Isolation levels are accepted and ignored: every transaction is serializable,
                // which any requested level permits.
                if let Some(access) = super::transaction::requested_access(modes) {
                    if *session {
                        self.default_read_only = access == Access::ReadOnly;
                    } else {
                        self.set_transaction_access(access).await?;
                    }
                }
            }
            // SET NAMES: we only speak UTF-8.
            ast::Set::SetNames { .. } | ast::Set::SetNamesDefault {} => {}
            other => return Err(SqlError::unsupported(format!("{other}"))),
        }
        Ok(StatementResult::command(CommandTag::Set))
    }

    pub(super) fn reset(&mut self, reset: &ast::ResetStatement) -> Result<StatementResult> {
        match &reset.reset {
            ast::Reset::ALL => {
                self.settings.clear();
                self.default_read_only = false;
                self.max_staleness = None;
                self.max_result_bytes = limits::DEFAULT_MAX_RESULT_BYTES;
            }
            ast::Reset::ConfigurationParameter(name) => {
                self.reset_variable(&name.to_string().to_lowercase())?
            }
            ast::Reset::SessionAuthorization => {
                return Err(SqlError::unsupported("RESET SESSION AUTHORIZATION"))
            }
        }
        Ok(StatementResult::command(CommandTag::Reset))
    }

    fn reset_variable(&mut self, name: &str) -> Result<()> {
        match name {
            "default_transaction_read_only" => self.default_read_only = false,
            "max_staleness" => self.max_staleness = None,
            "max_result_bytes" => self.max_result_bytes = limits::DEFAULT_MAX_RESULT_BYTES,
            // The transaction's mode is not a session setting; resetting it changes nothing.
            "transaction_read_only" => {}
            _ if is_known_setting(name) => {
                self.settings.remove(name);
            }
            _ => return Err(SqlError::UndefinedParameter(name.to_string())),
        }
        Ok(())
    }

    async fn set_variable(&mut self, name: &str, value: String) -> Result<()> {
        match name {
            "default_transaction_read_only" => {
                self.default_read_only = parse_bool_setting(name, &value)?;
                return Ok(());
            }
            "transaction_read_only" => {
                let access = if parse_bool_setting(name, &value)? {
                    Access::ReadOnly
                } else {
                    Access::ReadWrite
                };
                return self.set_transaction_access(access).await;
            }
            "max_staleness" => {
                let d = parse_duration_setting(name, &value)?;
                self.max_staleness = (!d.is_zero()).then_some(d);
                return Ok(());
            }
            "max_result_bytes" => {
                self.max_result_bytes = value
                    .trim_matches('\'')
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=limits::MAX_RESULT_BYTES_LIMIT).contains(n))
                    .ok_or_else(|| {
                        SqlError::InvalidParameterValue(format!(
                            "max_result_bytes must be a byte count from 1 to {}",
                            limits::MAX_RESULT_BYTES_LIMIT
                        ))
                    })?;
                return Ok(());
            }
            _ => {}
        }
        if !is_known_setting(name) {
            return Err(SqlError::UndefinedParameter(name.to_string()));
        }
        let lower = value.to_lowercase();
        let accepted = match name {
            "client_encoding" => matches!(lower.as_str(), "utf8" | "utf-8" | "unicode"),
            "bytea_output" => lower == "hex",
            "standard_conforming_strings" => matches!(lower.as_str(), "on" | "true"),
            _ => true,
        };
        if !accepted {
            return Err(SqlError::unsupported(format!("{name} = {value}")));
        }
        self.settings.insert(name.to_string(), value);
        Ok(())
    }
}

/// A boolean setting's value, as PostgreSQL spells them (`on`, `off`, `true`, `1`, …).
fn parse_bool_setting(name: &str, value: &str) -> Result<bool> {
    match Datum::parse(value, DataType::Bool) {
        Ok(Datum::Bool(b)) => Ok(b),
        _ => Err(SqlError::InvalidParameterValue(format!(
            "parameter \"{name}\" requires a Boolean value"
        ))),
    }
}

/// Settings clients commonly set; we accept them (and echo them in SHOW) but they change
/// nothing.
fn is_known_setting(name: &str) -> bool {
    matches!(
        name,
        "client_encoding"
            | "application_name"
            | "extra_float_digits"
            | "datestyle"
            | "search_path"
            | "timezone"
            | "time zone"
            | "statement_timeout"
            | "lock_timeout"
            | "idle_in_transaction_session_timeout"
            | "intervalstyle"
            | "standard_conforming_strings"
            | "client_min_messages"
            | "bytea_output"
            | "default_transaction_isolation"
            | "transaction_isolation"
            | "synchronous_commit"
            | "row_security"
            | "escape_string_warning"
            | "jit"
            | "geqo"
            | "enable_seqscan"
            | "work_mem"
            | "max_parallel_workers_per_gather"
    )
}

fn setting_value(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

/// The setting a SHOW names: its words, lower case, joined by spaces.
pub(super) fn variable_name(parts: &[ast::Ident]) -> String {
    parts
        .iter()
        .map(|p| p.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The result column of `SHOW name`.
pub(super) fn show_column(name: &str) -> OutputColumn {
    if TIMESTAMP_SETTINGS.contains(&name) {
        OutputColumn::new(name, DataType::Int8)
    } else {
        OutputColumn::new(name.replace(' ', "_"), DataType::Text)
    }
}
