//! The PD's durable state and its persistence.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use meridian_common::keys;

/// The first table id handed to users; lower ids are system tables.
pub const FIRST_USER_TABLE_ID: u32 = keys::FIRST_USER_TABLE_ID.0;
/// The group of the system tablet.
pub const SYSTEM_GROUP: u64 = keys::SYSTEM_GROUP.0;

/// A registered server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: u64,
    pub zone: String,
    pub addr: String,
    pub pg_addr: String,
}

/// A tablet in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablet {
    pub group: u64,
    pub start: Vec<u8>,
    /// Empty = unbounded.
    pub end: Vec<u8>,
    pub replicas: Vec<u64>,
    /// Created from scratch by the PD (a table's first tablet), not by a split: its replicas
    /// start from the group's initial state rather than waiting for a snapshot.
    #[serde(default)]
    pub bootstrap: bool,
}

/// Everything the PD must not forget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    pub servers: BTreeMap<u64, Server>,
    pub tablets: BTreeMap<u64, Tablet>,
    pub next_table_id: u32,
    pub next_group_id: u64,
}

impl Default for DurableState {
    fn default() -> Self {
        DurableState {
            servers: BTreeMap::new(),
            tablets: BTreeMap::new(),
            next_table_id: FIRST_USER_TABLE_ID,
            next_group_id: SYSTEM_GROUP + 1,
        }
    }
}

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where the state lives on disk.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> StateFile {
        StateFile {
            path: data_dir.join("pd.json"),
        }
    }

    /// Loads the state, or the initial state if none was ever saved.
    pub fn load(&self) -> Result<DurableState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DurableState::default()),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Saves `state` atomically and durably.
    pub fn save(&self, state: &DurableState) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().expect("load"), DurableState::default());
        let mut s = DurableState::default();
        s.servers.insert(
            1,
            Server {
                id: 1,
                zone: "a".into(),
                addr: "x:1".into(),
                pg_addr: "x:2".into(),
            },
        );
        s.tablets.insert(
            1,
            Tablet {
                group: 1,
                start: vec![],
                end: vec![0, 0, 0, 100],
                replicas: vec![1],
                bootstrap: true,
            },
        );
        s.next_table_id = 105;
        file.save(&s).expect("save");
        assert_eq!(file.load().expect("load"), s);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pd.json"), b"{not json").expect("write");
        assert!(matches!(
            StateFile::new(dir.path()).load(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
