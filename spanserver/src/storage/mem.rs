//! [`MemEngine`]: an in-memory [`Engine`] for tests and the single-process demo.
//!
//! Each column family is a `BTreeMap` behind its own `parking_lot::RwLock`. A batch write locks
//! every column family it touches, always in [`Cf::ALL`] order so two writers cannot deadlock,
//! and applies all of its ops before releasing any lock, so no reader sees half a batch within
//! one column family.
//!
//! Cloning a `MemEngine` is cheap and shares the data: a test can "restart" a node by dropping
//! everything but a clone of its engine. `sync` is ignored; nothing survives the process.
//!
//! Scans copy the range out in chunks rather than all at once, so that a caller who reads a few
//! keys and then seeks elsewhere (as the MVCC scan does to skip old versions) pays for the keys it
//! reads, not for the whole range. The price is that a scan is not a snapshot: a write that lands
//! while an iterator is open may or may not be seen by it. The [`Engine`] trait does not promise
//! snapshots, and MVCC reads do not need them (versions at or below a safe read timestamp never
//! change).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::engine::{BatchOp, Cf, Engine, EngineError, EngineIter, EngineView, KvPair, WriteBatch};

/// Entries a scan copies out on its first refill; later refills double it up to
/// [`MAX_CHUNK`]. Small first so a seek (a fresh scan read for a few keys) stays cheap.
const FIRST_CHUNK: usize = 8;
/// The most entries a scan copies out under one read lock, bounding how long it blocks writers.
const MAX_CHUNK: usize = 256;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory engine; clones share the same data.
#[derive(Clone, Default)]
pub struct MemEngine {
    /// One map per column family, indexed by [`cf_index`].
    cfs: Arc<[RwLock<Map>; 3]>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self, cf: Cf) -> &RwLock<Map> {
        &self.cfs[cf_index(cf)]
    }
}

impl std::fmt::Debug for MemEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("MemEngine");
        for cf in Cf::ALL {
            s.field(cf.name(), &self.map(cf).read().len());
        }
        s.finish()
    }
}

fn cf_index(cf: Cf) -> usize {
    match cf {
        Cf::Raft => 0,
        Cf::Data => 1,
        Cf::Meta => 2,
    }
}

fn op_cf(op: &BatchOp) -> Cf {
    match op {
        BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } | BatchOp::DeleteRange { cf, .. } => {
            *cf
        }
    }
}

impl Engine for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.map(cf).read().get(key).cloned())
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a> {
        if end.is_some_and(|end| end <= start) {
            return Box::new(std::iter::empty());
        }
        Box::new(MemIter {
            map: self.map(cf),
            next_start: Some(Bound::Included(start.to_vec())),
            end: end.map(<[u8]>::to_vec),
            buffer: Vec::new().into_iter(),
            chunk: FIRST_CHUNK,
        })
    }

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<(), EngineError> {
        let mut touched = [false; 3];
        for op in &batch.ops {
            touched[cf_index(op_cf(op))] = true;
        }
        // Lock in Cf::ALL order (the index order) so concurrent writers cannot deadlock.
        let mut guards: [Option<_>; 3] = [None, None, None];
        for (i, guard) in guards.iter_mut().enumerate() {
            if touched[i] {
                *guard = Some(self.cfs[i].write());
            }
        }
        for op in batch.ops {
            let i = cf_index(op_cf(&op));
            let Some(map) = guards[i].as_mut() else {
                return Err(EngineError(format!(
                    "internal: column family {i} not locked"
                )));
            };
            match op {
                BatchOp::Put { key, value, .. } => {
                    map.insert(key, value);
                }
                BatchOp::Delete { key, .. } => {
                    map.remove(&key);
                }
                BatchOp::DeleteRange { start, end, .. } => {
                    if start < end {
                        let doomed: Vec<Vec<u8>> =
                            map.range(start..end).map(|(k, _)| k.clone()).collect();
                        for key in doomed {
                            map.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A copy of every column family, taken under all three read locks at once.
    fn view(self: Arc<Self>) -> Box<dyn EngineView> {
        let guards = Cf::ALL.map(|cf| self.map(cf).read());
        let copy = [0, 1, 2].map(|i| RwLock::new(guards[i].clone()));
        Box::new(MemEngine {
            cfs: Arc::new(copy),
        })
    }
}

impl EngineView for MemEngine {
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a> {
        Engine::scan(self, cf, start, end)
    }
}

/// A scan that refills a small buffer from the map under a short read lock.
struct MemIter<'a> {
    map: &'a RwLock<Map>,
    /// Where the next refill starts; `None` once the range is exhausted.
    next_start: Option<Bound<Vec<u8>>>,
    end: Option<Vec<u8>>,
    buffer: std::vec::IntoIter<KvPair>,
    chunk: usize,
}

impl MemIter<'_> {
    fn refill(&mut self) {
        let Some(start) = self.next_start.take() else {
            return;
        };
        let end = match &self.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let start_ref = match &start {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        // An excluded start equal to the end bound would make BTreeMap::range panic.
        if let (Bound::Excluded(s), Bound::Excluded(e)) = (start_ref, end) {
            if s >= e {
                return;
            }
        }
        let chunk: Vec<KvPair> = {
            let map = self.map.read();
            map.range::<[u8], _>((start_ref, end))
                .take(self.chunk)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if chunk.len() == self.chunk {
            if let Some((last, _)) = chunk.last() {
                self.next_start = Some(Bound::Excluded(last.clone()));
            }
        }
        self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        self.buffer = chunk.into_iter();
    }
}

impl Iterator for MemIter<'_> {
    type Item = Result<KvPair, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(kv) = self.buffer.next() {
            return Some(Ok(kv));
        }
        self.refill();
        self.buffer.next().map(Ok)
    }
}
