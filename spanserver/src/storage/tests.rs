//! The engine conformance suite: one generic function per property, instantiated for every
//! engine by the `conformance!` macro at the bottom, so the engines cannot drift apart.

use std::sync::Arc;

use super::engine::{Cf, Engine, WriteBatch};
use super::mem::MemEngine;
use super::rocks::RocksEngine;

fn put(engine: &dyn Engine, cf: Cf, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(cf, key, value);
    engine.write(batch, false).unwrap();
}

fn scan(engine: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .scan(cf, start, end)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn keys(engine: &dyn Engine, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Vec<Vec<u8>> {
    scan(engine, cf, start, end)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn put_get(engine: &dyn Engine) {
    assert_eq!(engine.get(Cf::Data, b"a").unwrap(), None);
    put(engine, Cf::Data, b"a", b"1");
    put(engine, Cf::Data, b"", b"empty key");
    put(engine, Cf::Data, b"b", b"");
    assert_eq!(engine.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        engine.get(Cf::Data, b"").unwrap(),
        Some(b"empty key".to_vec())
    );
    assert_eq!(
        engine.get(Cf::Data, b"b").unwrap(),
        Some(Vec::new()),
        "empty value is a value"
    );
    assert_eq!(engine.get(Cf::Data, b"a\0").unwrap(), None);
}

fn overwrite(engine: &dyn Engine) {
    put(engine, Cf::Data, b"k", b"old");
    put(engine, Cf::Data, b"k", b"new");
    assert_eq!(engine.get(Cf::Data, b"k").unwrap(), Some(b"new".to_vec()));
    assert_eq!(
        scan(engine, Cf::Data, b"", None),
        vec![(b"k".to_vec(), b"new".to_vec())]
    );
}

fn delete(engine: &dyn Engine) {
    put(engine, Cf::Data, b"k", b"v");
    put(engine, Cf::Data, b"other", b"v");
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Data, b"k");
    batch.delete(Cf::Data, b"never written");
    engine.write(batch, false).unwrap();
    assert_eq!(engine.get(Cf::Data, b"k").unwrap(), None);
    assert_eq!(keys(engine, Cf::Data, b"", None), vec![b"other".to_vec()]);
}

fn delete_range(engine: &dyn Engine) {
    for key in [&b"a"[..], b"b", b"b\0", b"ba", b"c", b"d"] {
        put(engine, Cf::Data, key, b"v");
    }
    let mut batch = WriteBatch::new();
    batch.delete_range(Cf::Data, b"b", b"c");
    engine.write(batch, false).unwrap();
    assert_eq!(
        keys(engine, Cf::Data, b"", None),
        vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );

    // Empty and inverted ranges delete nothing (and are not errors).
    let mut batch = WriteBatch::new();
    batch.delete_range(Cf::Data, b"c", b"c");
    batch.delete_range(Cf::Data, b"d", b"a");
    engine.write(batch, false).unwrap();
    assert_eq!(keys(engine, Cf::Data, b"", None).len(), 3);

    // The end is exclusive, the start inclusive.
    let mut batch = WriteBatch::new();
    batch.delete_range(Cf::Data, b"c", b"d");
    engine.write(batch, false).unwrap();
    assert_eq!(
        keys(engine, Cf::Data, b"", None),
        vec![b"a".to_vec(), b"d".to_vec()]
    );
}

fn scan_order_and_bounds(engine: &dyn Engine) {
    // Written out of order, with bytes that would trip a signed or string comparison.
    let all: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\x00".to_vec(),
        b"\x00\x00".to_vec(),
        b"\x01".to_vec(),
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"a\xff".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        b"\x7f".to_vec(),
        b"\x80".to_vec(),
        b"\xff".to_vec(),
        b"\xff\xff".to_vec(),
    ];
    for key in all.iter().rev() {
        put(engine, Cf::Data, key, key);
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        keys(engine, Cf::Data, b"", None),
        sorted,
        "unbounded scan, ascending bytes"
    );
    for (k, v) in scan(engine, Cf::Data, b"", None) {
        assert_eq!(k, v);
    }

    // [start, end): start inclusive, end exclusive, bounds need not exist.
    assert_eq!(
        keys(engine, Cf::Data, b"a", Some(b"b")),
        vec![
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"ab".to_vec(),
            b"a\xff".to_vec()
        ]
    );
    assert_eq!(
        keys(engine, Cf::Data, b"a\x01", Some(b"a\xff")),
        vec![b"ab".to_vec()]
    );
    assert_eq!(
        keys(engine, Cf::Data, b"a\x01", Some(b"ab")),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        keys(engine, Cf::Data, b"aa", Some(b"zz")),
        vec![b"ab".to_vec(), b"a\xff".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        keys(engine, Cf::Data, b"\xff", None),
        vec![b"\xff".to_vec(), b"\xff\xff".to_vec()]
    );
    assert_eq!(
        keys(engine, Cf::Data, b"\xff\xff\x00", None),
        Vec::<Vec<u8>>::new()
    );

    // Empty and inverted ranges yield nothing.
    assert!(keys(engine, Cf::Data, b"a", Some(b"a")).is_empty());
    assert!(keys(engine, Cf::Data, b"b", Some(b"a")).is_empty());

    // A long scan (past any internal chunking) stays complete and ordered.
    let many: Vec<Vec<u8>> = (0u32..1000)
        .map(|i| format!("m{i:05}").into_bytes())
        .collect();
    let mut batch = WriteBatch::new();
    for key in many.iter().rev() {
        batch.put(Cf::Meta, key.clone(), b"v");
    }
    engine.write(batch, false).unwrap();
    assert_eq!(keys(engine, Cf::Meta, b"m", None), many);
    assert_eq!(
        keys(engine, Cf::Meta, b"m00100", Some(b"m00900")),
        many[100..900].to_vec()
    );
}

fn cf_isolation(engine: &dyn Engine) {
    let mut batch = WriteBatch::new();
    for (i, cf) in Cf::ALL.into_iter().enumerate() {
        batch.put(cf, b"k", vec![i as u8]);
        batch.put(cf, format!("only-{}", cf.name()), b"x");
    }
    engine.write(batch, false).unwrap();
    for (i, cf) in Cf::ALL.into_iter().enumerate() {
        assert_eq!(engine.get(cf, b"k").unwrap(), Some(vec![i as u8]));
        let only = format!("only-{}", cf.name()).into_bytes();
        assert_eq!(keys(engine, cf, b"", None), vec![b"k".to_vec(), only]);
    }

    // Deletes, range deletes included, stay in their column family.
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Raft, b"k");
    batch.delete_range(Cf::Meta, b"", b"\xff");
    engine.write(batch, false).unwrap();
    assert_eq!(engine.get(Cf::Raft, b"k").unwrap(), None);
    assert_eq!(engine.get(Cf::Data, b"k").unwrap(), Some(vec![1]));
    assert!(keys(engine, Cf::Meta, b"", None).is_empty());
    assert_eq!(keys(engine, Cf::Data, b"", None).len(), 2);
}

fn batch_atomic_and_ordered(engine: &dyn Engine) {
    put(engine, Cf::Data, b"c", b"old");
    put(engine, Cf::Data, b"x", b"old");
    let mut batch = WriteBatch::new();
    batch.put(Cf::Data, b"a", b"1");
    batch.put(Cf::Data, b"b", b"2");
    batch.delete(Cf::Data, b"a");
    batch.put(Cf::Data, b"x", b"first");
    batch.put(Cf::Data, b"x", b"second");
    batch.delete_range(Cf::Data, b"b", b"d");
    batch.put(Cf::Data, b"c", b"after the range delete");
    batch.put(Cf::Raft, b"log", b"entry");
    batch.delete(Cf::Data, b"y");
    batch.put(Cf::Data, b"y", b"after the delete");
    assert_eq!(batch.len(), 10);
    engine.write(batch, true).unwrap();

    assert_eq!(
        scan(engine, Cf::Data, b"", None),
        vec![
            (b"c".to_vec(), b"after the range delete".to_vec()),
            (b"x".to_vec(), b"second".to_vec()),
            (b"y".to_vec(), b"after the delete".to_vec()),
        ]
    );
    assert_eq!(
        engine.get(Cf::Raft, b"log").unwrap(),
        Some(b"entry".to_vec())
    );

    // An empty batch is a no-op.
    engine.write(WriteBatch::new(), true).unwrap();
    assert_eq!(keys(engine, Cf::Data, b"", None).len(), 3);
}

/// Readers never see half a batch: every batch writes the same counter to two keys of one
/// column family, and a scan reading both must always find them equal. (For `MemEngine` this
/// holds because both keys come out in one chunk; a scan is not a snapshot across chunks.)
fn concurrent_batches_are_atomic<E: Engine>(engine: E) {
    let engine = Arc::new(engine);
    let writer = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            for i in 0u32..300 {
                let mut batch = WriteBatch::new();
                batch.put(Cf::Data, b"left", i.to_be_bytes());
                batch.put(Cf::Data, b"right", i.to_be_bytes());
                engine.write(batch, false).unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for _ in 0..300 {
                    // Point reads are separate, so only scans can check atomicity.
                    let pairs = scan(&*engine, Cf::Data, b"", None);
                    if let [(_, left), (_, right)] = pairs.as_slice() {
                        assert_eq!(left, right, "a scan saw half a batch");
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(
        engine.get(Cf::Data, b"left").unwrap(),
        Some(299u32.to_be_bytes().to_vec())
    );
}

/// A view shows the engine as it was when taken, from another thread, after the caller has let
/// go of the engine, and whatever is written afterwards.
fn a_view_is_a_moment<E: Engine>(engine: E) {
    let engine: Arc<dyn Engine> = Arc::new(engine);
    put(&*engine, Cf::Data, b"a", b"1");
    put(&*engine, Cf::Data, b"b", b"1");
    let view = engine.clone().view();
    put(&*engine, Cf::Data, b"a", b"2");
    put(&*engine, Cf::Data, b"c", b"2");
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Data, b"b");
    engine.write(batch, false).unwrap();
    drop(engine);
    let seen = std::thread::spawn(move || {
        view.scan(Cf::Data, b"", None)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"1".to_vec())
        ]
    );
}

#[test]
fn mem_a_view_is_a_moment() {
    a_view_is_a_moment(MemEngine::new());
}

#[test]
fn rocks_a_view_is_a_moment() {
    let (_dir, engine) = rocks();
    a_view_is_a_moment(engine);
}

fn rocks() -> (tempfile::TempDir, RocksEngine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    (dir, engine)
}

macro_rules! conformance {
    ($($property:ident),* $(,)?) => {
        mod mem {
            use super::MemEngine;
            $(
                #[test]
                fn $property() {
                    super::$property(&MemEngine::new());
                }
            )*
        }
        mod rocks {
            $(
                #[test]
                fn $property() {
                    let (_dir, engine) = super::rocks();
                    super::$property(&engine);
                }
            )*
        }
    };
}

conformance!(
    put_get,
    overwrite,
    delete,
    delete_range,
    scan_order_and_bounds,
    cf_isolation,
    batch_atomic_and_ordered,
);

#[test]
fn mem_concurrent_batches_are_atomic() {
    concurrent_batches_are_atomic(MemEngine::new());
}

#[test]
fn rocks_concurrent_batches_are_atomic() {
    let (_dir, engine) = rocks();
    concurrent_batches_are_atomic(engine);
}

#[test]
fn engines_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<MemEngine>();
    assert_send_sync::<RocksEngine>();
    assert_send_sync::<Arc<dyn Engine>>();
}

#[test]
fn mem_clones_share_data() {
    let engine = MemEngine::new();
    let restarted = engine.clone();
    put(&engine, Cf::Meta, b"k", b"v");
    drop(engine);
    assert_eq!(restarted.get(Cf::Meta, b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn rocks_reopen_keeps_synced_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = RocksEngine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for cf in Cf::ALL {
            batch.put(cf, b"k", cf.name());
        }
        batch.put(Cf::Data, b"gone", b"v");
        engine.write(batch, true).unwrap();
        let mut batch = WriteBatch::new();
        batch.delete_range(Cf::Data, b"gone", b"gonf");
        engine.write(batch, true).unwrap();
    }
    let engine = RocksEngine::open(dir.path()).unwrap();
    for cf in Cf::ALL {
        assert_eq!(
            engine.get(cf, b"k").unwrap(),
            Some(cf.name().as_bytes().to_vec())
        );
    }
    assert_eq!(keys(&engine, Cf::Data, b"", None), vec![b"k".to_vec()]);
}

#[test]
fn rocks_open_errors_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    // The database is locked while open.
    let err = RocksEngine::open(dir.path()).unwrap_err();
    assert!(err.0.contains("lock"), "{err}");
    drop(engine);

    // A path that is a file, not a directory.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a database").unwrap();
    assert!(RocksEngine::open(&file).is_err());
}
