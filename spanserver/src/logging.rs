//! Routes raft-rs's `slog` logging into `tracing`, so one subscriber sees everything.

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// A slog drain that re-emits each record as a `tracing` event with target `raft`.
struct TracingDrain;

struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{}", fields.0),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{}", fields.0),
            Level::Info => tracing::info!(target: "raft", "{msg}{}", fields.0),
            Level::Debug => tracing::debug!(target: "raft", "{msg}{}", fields.0),
            Level::Trace => tracing::trace!(target: "raft", "{msg}{}", fields.0),
        }
        Ok(())
    }
}

/// The logger handed to every raft-rs group.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
