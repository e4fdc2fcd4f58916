//! [`RocksEngine`]: the on-disk [`Engine`], one RocksDB instance per spanserver.
//!
//! Each [`Cf`] is a RocksDB column family of the same name, created on first open. A
//! [`WriteBatch`] becomes one RocksDB write batch, so it is atomic across column families, and
//! `sync = true` fsyncs the write-ahead log before `write` returns. Scans are RocksDB iterators
//! with an upper bound, so they see a consistent point-in-time view of the column family and stop
//! inside RocksDB rather than reading past the end of the range.
//!
//! A view ([`Engine::view`]) is a RocksDB snapshot: iterators opened on it read the database as
//! it was when the view was taken.
//!
//! This is the only module that imports `rocksdb`; nothing above the [`Engine`] trait knows
//! which engine it runs on.
//!
//! The crate is `rocksdb` 0.20.1 (written for RocksDB 7.9.2) linked against Debian's librocksdb
//! 7.8.3; its FFI bindings are generated from the installed 7.8.3 headers, so the two agree.
//!
//! Tuning is deliberately light, for a small box: two background threads, a shared 64 MiB block
//! cache, dynamic level sizing. Everything else is RocksDB's default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBRawIterator, Options,
    ReadOptions, WriteOptions, DB,
};

use super::engine::{BatchOp, Cf, Engine, EngineError, EngineIter, EngineView, KvPair, WriteBatch};

/// Background threads for flushes and compactions.
const BACKGROUND_JOBS: i32 = 2;
/// The block cache shared by every column family, in bytes.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// How many of RocksDB's info `LOG` files to keep.
const KEEP_LOG_FILES: usize = 5;

/// A RocksDB-backed engine. `Send + Sync`: share it between threads through an `Arc`.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn rocks_error(what: &str, err: rocksdb::Error) -> EngineError {
    EngineError(format!("rocksdb {what}: {err}"))
}

impl RocksEngine {
    /// Opens the database at `path`, creating the directory, the database and any missing
    /// column family.
    ///
    /// Fails if the database is locked by another process (or another `RocksEngine` in this one),
    /// if it is corrupt, or if it holds a column family this code does not know.
    pub fn open(path: &Path) -> Result<RocksEngine, EngineError> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES)
            .map_err(|e| rocks_error("creating the block cache", e))?;
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);

        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        cf_options.set_level_compaction_dynamic_level_bytes(true);

        let mut db_options = cf_options.clone();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(BACKGROUND_JOBS);
        db_options.set_max_background_jobs(BACKGROUND_JOBS);
        db_options.set_keep_log_file_num(KEEP_LOG_FILES);

        let descriptors =
            Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options.clone()));
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|e| rocks_error(&format!("opening {}", path.display()), e))?;
        let engine = RocksEngine {
            db,
            path: path.to_path_buf(),
        };
        // Fail now, not on first use, if a column family is somehow missing.
        for cf in Cf::ALL {
            engine.handle(cf)?;
        }
        Ok(engine)
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scan of `[start, end)` over the iterator `open` makes from a column family handle and
    /// read options (bounded above by `end`).
    fn scan_with<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        open: impl FnOnce(&'a ColumnFamily, ReadOptions) -> DBRawIterator<'a>,
    ) -> EngineIter<'a> {
        if end.is_some_and(|end| end <= start) {
            return Box::new(std::iter::empty());
        }
        let handle = match self.handle(cf) {
            Ok(handle) => handle,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let mut read_options = ReadOptions::default();
        if let Some(end) = end {
            read_options.set_iterate_upper_bound(end);
        }
        let mut raw = open(handle, read_options);
        raw.seek(start);
        Box::new(RocksIter { raw, done: false })
    }

    fn handle(&self, cf: Cf) -> Result<&ColumnFamily, EngineError> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| EngineError(format!("rocksdb: column family {} is missing", cf.name())))
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db
            .get_cf(self.handle(cf)?, key)
            .map_err(|e| rocks_error("get", e))
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a> {
        self.scan_with(cf, start, end, |handle, options| {
            self.db.raw_iterator_cf_opt(handle, options)
        })
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    rocks_batch.put_cf(self.handle(*cf)?, key, value)
                }
                BatchOp::Delete { cf, key } => rocks_batch.delete_cf(self.handle(*cf)?, key),
                // An empty or inverted range deletes nothing; RocksDB may reject it, so skip it.
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        rocks_batch.delete_range_cf(self.handle(*cf)?, start, end);
                    }
                }
            }
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        self.db
            .write_opt(rocks_batch, &write_options)
            .map_err(|e| rocks_error("write", e))
    }

    fn view(self: Arc<Self>) -> Box<dyn EngineView> {
        Box::new(RocksView::new(self, |engine| engine.db.snapshot()))
    }
}

type RocksSnapshot<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the engine it reads, so it can outlive the borrow that
    /// made it (and move to another thread).
    struct RocksView {
        owner: Arc<RocksEngine>,
        #[covariant]
        dependent: RocksSnapshot,
    }
);

impl EngineView for RocksView {
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> EngineIter<'a> {
        let snapshot = self.borrow_dependent();
        self.borrow_owner()
            .scan_with(cf, start, end, |handle, options| {
                snapshot.raw_iterator_cf_opt(handle, options)
            })
    }
}

/// Adapts RocksDB's raw iterator (seek/valid/next/status) to a Rust iterator of owned pairs.
struct RocksIter<'a> {
    raw: DBRawIterator<'a>,
    done: bool,
}

impl Iterator for RocksIter<'_> {
    type Item = Result<KvPair, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some((key, value)) = self.raw.item() {
            let pair = (key.to_vec(), value.to_vec());
            self.raw.next();
            return Some(Ok(pair));
        }
        // Invalid means either the end of the range or an error (a corrupt block, an I/O
        // failure); only `status` tells them apart.
        self.done = true;
        self.raw.status().err().map(|e| Err(rocks_error("scan", e)))
    }
}
