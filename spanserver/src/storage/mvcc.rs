//! Multi-version concurrency control over the [`Cf::Data`] column family.
//!
//! Every write is stored as a new version of its key at its commit timestamp; nothing is updated
//! in place. A read at `read_ts` sees, for each key, the newest version with `ts <= read_ts`. A
//! deletion is a version too (a tombstone), so a read below the deletion still sees the old value.
//!
//! # Layout
//!
//! ```text
//! engine key   = escape(user_key) 0x00 0x01 | be64(!ts)
//! engine value = 0x01 value bytes            (a put)
//!              | 0x00                        (a tombstone)
//! ```
//!
//! `escape` turns each 0x00 byte into 0x00 0xFF; the 0x00 0x01 terminator then sorts below any
//! continuation of the key, so for user keys `a < b`, `enc(a) ++ x < enc(b) ++ y` for any suffixes
//! `x`, `y` (this holds even when `a` is a prefix of `b`). All versions of a key are therefore
//! contiguous, and because the timestamp is stored inverted, they sort newest first.
//!
//! Two seek targets follow from the layout, and the readers here use both to skip versions
//! without reading them:
//! - `enc(k) ++ be64(!read_ts)` is the first version of `k` visible at `read_ts`;
//! - `escape(k) 0x00 0x02` sorts after every version of `k` and before every later user key.
//!
//! This module writes versions and reads them. It does not check for write conflicts, locks or
//! safe time (the callers do), and it does not garbage-collect old versions yet.

use meridian_truetime::Timestamp;

use super::engine::{Cf, Engine, EngineError, EngineIter, KvPair, WriteBatch};

/// The byte that introduces an escaped 0x00 or the terminator in an encoded user key.
const ESCAPE: u8 = 0x00;
/// Follows [`ESCAPE`] to stand for a 0x00 byte of the user key.
const ESCAPED_ZERO: u8 = 0xFF;
/// Follows [`ESCAPE`] to end the user key.
const TERMINATOR: u8 = 0x01;
/// Replaces [`TERMINATOR`] to form a bound just past every version of a key.
const PAST_TERMINATOR: u8 = 0x02;
/// Length of the encoded timestamp suffix.
const TS_LEN: usize = 8;

/// Value tag of a put: the value bytes follow.
const TAG_PUT: u8 = 0x01;
/// Value tag of a tombstone: nothing follows.
const TAG_TOMBSTONE: u8 = 0x00;

/// How many versions a reader steps over with `next` before it gives up and seeks. Stepping is
/// cheaper than seeking when a key has only a few versions; seeking wins when it has many.
const NEXTS_BEFORE_SEEK: usize = 4;

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The commit timestamp the version was written at.
    pub ts: Timestamp,
    /// The value, or `None` for a tombstone (a deletion at `ts`).
    pub value: Option<Vec<u8>>,
}

/// The result of [`scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Live rows in ascending user-key order, each with the version visible at the read
    /// timestamp; keys whose visible version is a tombstone are left out.
    pub rows: Vec<(Vec<u8>, Version)>,
    /// When the limit cut the scan short: the user key of the next live row, where a follow-up
    /// scan should start. `None` means the scan reached the end of its range.
    pub resume_key: Option<Vec<u8>>,
}

/// Adds one version of `key` at `ts` to `batch`: the value, or a tombstone when `value` is
/// `None`. Writing the same key at the same timestamp again overwrites that version.
pub fn put_version(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: Option<&[u8]>) {
    let encoded_value = match value {
        Some(value) => {
            let mut buf = Vec::with_capacity(1 + value.len());
            buf.push(TAG_PUT);
            buf.extend_from_slice(value);
            buf
        }
        None => vec![TAG_TOMBSTONE],
    };
    batch.put(Cf::Data, encode_key(key, ts), encoded_value);
}

/// The newest version of `key` with `ts <= read_ts`, tombstones included (with `value: None`) so
/// the caller can see when a key was deleted. `None` if the key has no version at or below
/// `read_ts`.
pub fn get(
    engine: &dyn Engine,
    key: &[u8],
    read_ts: Timestamp,
) -> Result<Option<Version>, EngineError> {
    let prefix = encode_user_key(key);
    let mut start = prefix.clone();
    start.extend_from_slice(&ts_suffix(read_ts));
    let end = past_versions(&prefix);
    let Some(item) = engine.scan(Cf::Data, &start, Some(&end)).next() else {
        return Ok(None);
    };
    let (raw_key, raw_value) = item?;
    let (_, ts) = split_key(&raw_key)?;
    Ok(Some(Version {
        ts,
        value: decode_value(&raw_value)?,
    }))
}

/// The most bytes of keys and values one [`scan`] returns (after its first row): a page stays
/// well inside the gRPC message limit, whatever the rows' sizes.
pub const MAX_SCAN_BYTES: usize = 16 << 20;

/// The live rows with user keys in `[start, end)` as of `read_ts`, in key order. An empty `end`
/// means no upper bound. At most `limit` rows are returned (`0` means no limit), and no more
/// than [`MAX_SCAN_BYTES`] of keys and values unless the first row alone is larger; when either
/// cuts the scan short, [`ScanResult::resume_key`] says where to continue.
///
/// Older versions are skipped by seeking past them, so the cost grows with the number of keys
/// read, not with how many versions each key has.
pub fn scan(
    engine: &dyn Engine,
    start: &[u8],
    end: &[u8],
    read_ts: Timestamp,
    limit: usize,
) -> Result<ScanResult, EngineError> {
    let mut result = ScanResult::default();
    let mut bytes = 0usize;
    let mut cursor = Cursor::new(engine, start, end);
    while let Some((raw_key, raw_value)) = cursor.peek()? {
        let (prefix, ts) = split_key(raw_key)?;
        let prefix = prefix.to_vec();
        if ts > read_ts {
            cursor.skip_to_visible(&prefix, read_ts)?;
            continue;
        }
        if let Some(value) = decode_value(raw_value)? {
            let key = decode_user_key(&prefix)?;
            let size = key.len() + value.len();
            let full = limit != 0 && result.rows.len() == limit;
            if full || (!result.rows.is_empty() && bytes + size > MAX_SCAN_BYTES) {
                result.resume_key = Some(key);
                break;
            }
            bytes += size;
            result.rows.push((
                key,
                Version {
                    ts,
                    value: Some(value),
                },
            ));
        }
        cursor.skip_past_key(&prefix)?;
    }
    Ok(result)
}

/// The newest timestamp of any version, tombstones included, of any key in `[start, end)` (an
/// empty `end` means no upper bound), or `None` if the range holds no versions. A transaction
/// that read the range at `read_ts` can check whether anything has been written to it since by
/// comparing the result with `read_ts`.
pub fn newest_version_ts_in_range(
    engine: &dyn Engine,
    start: &[u8],
    end: &[u8],
) -> Result<Option<Timestamp>, EngineError> {
    let mut newest: Option<Timestamp> = None;
    let mut cursor = Cursor::new(engine, start, end);
    // The first version of each key is its newest, so one version per key suffices.
    while let Some((raw_key, _)) = cursor.peek()? {
        let (prefix, ts) = split_key(raw_key)?;
        let prefix = prefix.to_vec();
        newest = newest.max(Some(ts));
        cursor.skip_past_key(&prefix)?;
    }
    Ok(newest)
}

/// The engine key of the version of `key` at `ts`.
pub fn encode_key(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut encoded = encode_user_key(key);
    encoded.extend_from_slice(&ts_suffix(ts));
    encoded
}

/// The prefix every version of `key` shares: the escaped key and its terminator. All versions of
/// the user keys in `[a, b)` lie in `[encode_user_key(a), encode_user_key(b))`, which makes these
/// the bounds for a `DeleteRange` or raw scan over a span of user keys.
pub fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let zeros = key.iter().filter(|&&b| b == ESCAPE).count();
    let mut encoded = Vec::with_capacity(key.len() + zeros + 2 + TS_LEN);
    for &b in key {
        encoded.push(b);
        if b == ESCAPE {
            encoded.push(ESCAPED_ZERO);
        }
    }
    encoded.push(ESCAPE);
    encoded.push(TERMINATOR);
    encoded
}

/// Splits an engine key into the user key and the version timestamp. Malformed bytes (a
/// truncated key, a bad escape, a missing terminator) are an error.
pub fn decode_key(raw: &[u8]) -> Result<(Vec<u8>, Timestamp), EngineError> {
    let (prefix, ts) = split_key(raw)?;
    Ok((decode_user_key(prefix)?, ts))
}

/// Decodes an engine value: `Some(bytes)` for a put, `None` for a tombstone.
pub fn decode_value(raw: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
    match raw.split_first() {
        Some((&TAG_PUT, value)) => Ok(Some(value.to_vec())),
        Some((&TAG_TOMBSTONE, [])) => Ok(None),
        Some((&TAG_TOMBSTONE, _)) => Err(corrupt("tombstone with a payload", raw)),
        Some((tag, _)) => Err(corrupt(&format!("unknown value tag {tag:#04x}"), raw)),
        None => Err(corrupt("empty value", raw)),
    }
}

fn ts_suffix(ts: Timestamp) -> [u8; TS_LEN] {
    (!ts.0).to_be_bytes()
}

/// The smallest engine key past every version of the key whose encoded prefix is `prefix`.
fn past_versions(prefix: &[u8]) -> Vec<u8> {
    let mut bound = prefix.to_vec();
    if let Some(last) = bound.last_mut() {
        *last = PAST_TERMINATOR;
    }
    bound
}

/// Splits an engine key into its encoded user key (terminator included) and timestamp, checking
/// the framing but not the escapes, which [`decode_user_key`] checks.
fn split_key(raw: &[u8]) -> Result<(&[u8], Timestamp), EngineError> {
    if raw.len() < 2 + TS_LEN {
        return Err(corrupt("key too short", raw));
    }
    let (prefix, ts_bytes) = raw.split_at(raw.len() - TS_LEN);
    if !prefix.ends_with(&[ESCAPE, TERMINATOR]) {
        return Err(corrupt("key lacks the terminator", raw));
    }
    let mut buf = [0u8; TS_LEN];
    buf.copy_from_slice(ts_bytes);
    Ok((prefix, Timestamp(!u64::from_be_bytes(buf))))
}

/// Decodes an encoded user key, terminator included, back to the user key.
fn decode_user_key(encoded: &[u8]) -> Result<Vec<u8>, EngineError> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&b) = bytes.next() {
        if b != ESCAPE {
            key.push(b);
            continue;
        }
        match bytes.next() {
            Some(&ESCAPED_ZERO) => key.push(ESCAPE),
            Some(&TERMINATOR) if bytes.len() == 0 => return Ok(key),
            Some(&TERMINATOR) => return Err(corrupt("bytes after the key terminator", encoded)),
            _ => return Err(corrupt("bad escape in key", encoded)),
        }
    }
    Err(corrupt("key lacks the terminator", encoded))
}

fn corrupt(what: &str, raw: &[u8]) -> EngineError {
    EngineError(format!("corrupt MVCC data: {what}: {raw:02x?}"))
}

/// An engine key and value, borrowed from the cursor.
type RawEntry<'a> = (&'a [u8], &'a [u8]);

/// A forward cursor over the MVCC keyspace of a user-key range that can seek. The engine's
/// iterators cannot seek, so a seek opens a fresh scan at the target.
struct Cursor<'e> {
    engine: &'e dyn Engine,
    /// The encoded end bound, `None` when unbounded.
    end: Option<Vec<u8>>,
    iter: EngineIter<'e>,
    /// The entry under the cursor, already pulled from `iter`.
    current: Option<KvPair>,
}

impl<'e> Cursor<'e> {
    /// A cursor at the first version of the first key in `[start, end)`; an empty `end` means
    /// unbounded.
    fn new(engine: &'e dyn Engine, start: &[u8], end: &[u8]) -> Self {
        let end = (!end.is_empty()).then(|| encode_user_key(end));
        let iter = engine.scan(Cf::Data, &encode_user_key(start), end.as_deref());
        Cursor {
            engine,
            end,
            iter,
            current: None,
        }
    }

    /// The entry under the cursor, or `None` at the end of the range.
    fn peek(&mut self) -> Result<Option<RawEntry<'_>>, EngineError> {
        if self.current.is_none() {
            self.current = self.iter.next().transpose()?;
        }
        Ok(self
            .current
            .as_ref()
            .map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    fn advance(&mut self) {
        self.current = None;
    }

    fn seek(&mut self, target: &[u8]) {
        self.iter = self.engine.scan(Cf::Data, target, self.end.as_deref());
        self.current = None;
    }

    /// Steps past the versions of the key `prefix` whose timestamps satisfy `stay`; after a few
    /// steps it stops stepping and seeks to `target` instead.
    fn skip_while(
        &mut self,
        prefix: &[u8],
        stay: impl Fn(Timestamp) -> bool,
        target: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), EngineError> {
        for _ in 0..NEXTS_BEFORE_SEEK {
            self.advance();
            let Some((raw_key, _)) = self.peek()? else {
                return Ok(());
            };
            let (next_prefix, ts) = split_key(raw_key)?;
            if next_prefix != prefix || !stay(ts) {
                return Ok(());
            }
        }
        self.seek(&target());
        Ok(())
    }

    /// From a version of the key `prefix` newer than `read_ts`, moves to its newest version at
    /// or below `read_ts`, or to the next key if it has none.
    fn skip_to_visible(&mut self, prefix: &[u8], read_ts: Timestamp) -> Result<(), EngineError> {
        self.skip_while(
            prefix,
            |ts| ts > read_ts,
            || {
                let mut target = prefix.to_vec();
                target.extend_from_slice(&ts_suffix(read_ts));
                target
            },
        )
    }

    /// From any version of the key `prefix`, moves to the first version of the next key.
    fn skip_past_key(&mut self, prefix: &[u8]) -> Result<(), EngineError> {
        self.skip_while(prefix, |_| true, || past_versions(prefix))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::mem::MemEngine;

    fn write(engine: &dyn Engine, key: &[u8], ts: u64, value: Option<&[u8]>) {
        let mut batch = WriteBatch::new();
        put_version(&mut batch, key, Timestamp(ts), value);
        engine.write(batch, false).unwrap();
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(encode_user_key(b""), vec![0x00, 0x01]);
        assert_eq!(
            encode_user_key(b"a\x00b"),
            vec![b'a', 0x00, 0xFF, b'b', 0x00, 0x01]
        );
        let mut expected = vec![b'a', 0x00, 0x01];
        expected.extend_from_slice(&(!1u64).to_be_bytes());
        assert_eq!(encode_key(b"a", Timestamp(1)), expected);
        assert_eq!(
            decode_key(&expected).unwrap(),
            (b"a".to_vec(), Timestamp(1))
        );

        let mut batch = WriteBatch::new();
        put_version(&mut batch, b"k", Timestamp(5), Some(b"v"));
        put_version(&mut batch, b"k", Timestamp(6), Some(b""));
        put_version(&mut batch, b"k", Timestamp(7), None);
        let values: Vec<Vec<u8>> = batch
            .ops
            .iter()
            .map(|op| match op {
                crate::storage::engine::BatchOp::Put {
                    cf: Cf::Data,
                    value,
                    ..
                } => value.clone(),
                other => panic!("unexpected op {other:?}"),
            })
            .collect();
        assert_eq!(
            values,
            vec![vec![TAG_PUT, b'v'], vec![TAG_PUT], vec![TAG_TOMBSTONE]]
        );
    }

    #[test]
    fn malformed_keys_and_values_are_errors() {
        let ts = (!7u64).to_be_bytes();
        let with_ts = |prefix: &[u8]| [prefix, &ts[..]].concat();
        for (raw, why) in [
            (vec![], "empty"),
            (vec![0x00, 0x01], "no timestamp"),
            (with_ts(b""), "no terminator"),
            (with_ts(b"a"), "no terminator"),
            (with_ts(b"a\x00\x02\x00\x01"), "bad escape"),
            (with_ts(b"a\x00\x01b\x00\x01"), "bytes after the terminator"),
            (with_ts(b"\x00"), "truncated escape"),
        ] {
            assert!(decode_key(&raw).is_err(), "{why}: {raw:02x?}");
        }
        for raw in [&[][..], &[0x00, 0x00], &[0x02], &[0xFF, b'v']] {
            assert!(decode_value(raw).is_err(), "{raw:02x?}");
        }
    }

    #[test]
    fn malformed_data_fails_reads_without_panicking() {
        let engine = MemEngine::new();
        write(&engine, b"a", 10, Some(b"ok"));
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, b"b-not-mvcc".to_vec(), b"v".to_vec());
        engine.write(batch, false).unwrap();
        assert!(get(&engine, b"a", Timestamp(10)).unwrap().is_some());
        assert!(scan(&engine, b"", b"", Timestamp::MAX, 0).is_err());
        assert!(newest_version_ts_in_range(&engine, b"", b"").is_err());

        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Data, encode_key(b"a", Timestamp(1)), vec![0x07]);
        engine.write(batch, false).unwrap();
        assert!(get(&engine, b"a", Timestamp(1)).is_err());
        assert!(scan(&engine, b"", b"", Timestamp(1), 0).is_err());
    }

    /// Many versions per key, so readers must seek (more than [`NEXTS_BEFORE_SEEK`] versions
    /// lie above and below each read timestamp).
    #[test]
    fn reads_across_many_versions() {
        let engine = MemEngine::new();
        for key in [&b"a"[..], b"b", b"c"] {
            for ts in 1..=40u64 {
                let value = (ts % 10 != 0).then(|| format!("{ts}").into_bytes());
                write(&engine, key, ts, value.as_deref());
            }
        }
        let got = get(&engine, b"b", Timestamp(25)).unwrap().unwrap();
        assert_eq!(
            got,
            Version {
                ts: Timestamp(25),
                value: Some(b"25".to_vec())
            }
        );
        let got = get(&engine, b"b", Timestamp(30)).unwrap().unwrap();
        assert_eq!(
            got,
            Version {
                ts: Timestamp(30),
                value: None
            }
        );

        let result = scan(&engine, b"", b"", Timestamp(17), 0).unwrap();
        let rows: Vec<_> = result.rows.iter().map(|(k, v)| (k.clone(), v.ts)).collect();
        assert_eq!(
            rows,
            vec![
                (b"a".to_vec(), Timestamp(17)),
                (b"b".to_vec(), Timestamp(17)),
                (b"c".to_vec(), Timestamp(17))
            ]
        );
        assert!(scan(&engine, b"", b"", Timestamp(20), 0)
            .unwrap()
            .rows
            .is_empty());
        let page = scan(&engine, b"", b"", Timestamp(21), 2).unwrap();
        assert_eq!(page.rows.len(), 2);
        assert_eq!(page.resume_key, Some(b"c".to_vec()));
        assert_eq!(
            newest_version_ts_in_range(&engine, b"a", b"c").unwrap(),
            Some(Timestamp(40))
        );
    }

    /// A model of MVCC: every (key, ts) version in a map.
    type Model = BTreeMap<(Vec<u8>, u64), Option<Vec<u8>>>;

    fn model_get(model: &Model, key: &[u8], read_ts: u64) -> Option<Version> {
        model
            .range((key.to_vec(), 0)..=(key.to_vec(), read_ts))
            .next_back()
            .map(|((_, ts), value)| Version {
                ts: Timestamp(*ts),
                value: value.clone(),
            })
    }

    fn model_scan(
        model: &Model,
        start: &[u8],
        end: &[u8],
        read_ts: u64,
    ) -> Vec<(Vec<u8>, Version)> {
        let keys: std::collections::BTreeSet<&Vec<u8>> = model.keys().map(|(k, _)| k).collect();
        keys.into_iter()
            .filter(|k| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .filter_map(|k| model_get(model, k, read_ts).map(|v| (k.clone(), v)))
            .filter(|(_, v)| v.value.is_some())
            .collect()
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        // A tiny alphabet with the bytes the escaping cares about, so keys collide, nest as
        // prefixes of each other and contain 0x00, 0x01 and 0xFF often.
        prop::collection::vec(
            prop::sample::select(vec![0x00u8, 0x01, 0x02, b'a', 0xFF]),
            0..4,
        )
    }

    fn ts_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..50, Just(0), Just(u64::MAX), Just(u64::MAX - 1)]
    }

    proptest! {
        /// Encoded order is (user key ascending, timestamp descending), and decoding inverts
        /// encoding.
        #[test]
        fn encoding_preserves_order(
            versions in prop::collection::vec((key_strategy(), ts_strategy()), 0..40)
        ) {
            let mut by_encoding = versions.clone();
            by_encoding.sort_by_key(|(k, ts)| encode_key(k, Timestamp(*ts)));
            let mut by_order = versions.clone();
            by_order.sort_by(|(k1, ts1), (k2, ts2)| k1.cmp(k2).then(ts2.cmp(ts1)));
            prop_assert_eq!(&by_encoding, &by_order);
            for (k, ts) in &versions {
                let decoded = decode_key(&encode_key(k, Timestamp(*ts))).unwrap();
                prop_assert_eq!(decoded, (k.clone(), Timestamp(*ts)));
            }
        }

        /// For user keys a < b, every version of a sorts below every version of b, and the
        /// "past every version" bound of a lies between them.
        #[test]
        fn key_prefix_bounds(a in key_strategy(), b in key_strategy(), t1 in ts_strategy(), t2 in ts_strategy()) {
            prop_assume!(a < b);
            let past_a = past_versions(&encode_user_key(&a));
            prop_assert!(encode_key(&a, Timestamp(t1)) < past_a);
            prop_assert!(past_a <= encode_user_key(&b));
            prop_assert!(encode_key(&a, Timestamp(t1)) < encode_key(&b, Timestamp(t2)));
        }

        /// Decoding arbitrary bytes returns a result and never panics.
        #[test]
        fn decoding_garbage_does_not_panic(raw in prop::collection::vec(any::<u8>(), 0..24)) {
            let _ = decode_key(&raw);
            let _ = decode_value(&raw);
        }

        /// get, scan (in pages that follow resume keys) and newest agree with the model.
        #[test]
        fn reads_match_model(
            writes in prop::collection::vec(
                (key_strategy(), 0u64..20, prop::option::of(prop::collection::vec(any::<u8>(), 0..3))),
                0..40,
            ),
            read_ts in 0u64..22,
            start in key_strategy(),
            end in key_strategy(),
            limit in 0usize..4,
        ) {
            let engine = MemEngine::new();
            let mut model = Model::new();
            for (key, ts, value) in &writes {
                write(&engine, key, *ts, value.as_deref());
                model.insert((key.clone(), *ts), value.clone());
            }
            for (key, _, _) in &writes {
                prop_assert_eq!(
                    get(&engine, key, Timestamp(read_ts)).unwrap(),
                    model_get(&model, key, read_ts)
                );
            }

            let expected = model_scan(&model, &start, &end, read_ts);
            let mut rows = Vec::new();
            let mut from = start.clone();
            loop {
                let page = scan(&engine, &from, &end, Timestamp(read_ts), limit).unwrap();
                if limit != 0 {
                    prop_assert!(page.rows.len() <= limit);
                }
                rows.extend(page.rows);
                match page.resume_key {
                    Some(key) => {
                        prop_assert_eq!(rows.len() % limit, 0, "resumed after a short page");
                        from = key;
                    }
                    None => break,
                }
            }
            prop_assert_eq!(rows, expected);

            let newest = model
                .keys()
                .filter(|(k, _)| k.as_slice() >= start.as_slice() && (end.is_empty() || k.as_slice() < end.as_slice()))
                .map(|(_, ts)| Timestamp(*ts))
                .max();
            prop_assert_eq!(newest_version_ts_in_range(&engine, &start, &end).unwrap(), newest);
        }
    }
}
