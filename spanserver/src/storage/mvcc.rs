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
    Ok(Some(Version { ts, value: decode_value(&raw_value)? }))
}

/// The live rows with user keys in `[start, end)` as of `read_ts`, in key order. An empty `end`
/// means no upper bound. At most `limit` rows are returned (`0` means no limit); when the limit
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
            if limit != 0 && result.rows.len() == limit {
                result.resume_key = Some(key);
                break;
            }
            result.rows.push((key, Version { ts, value: Some(value) }));
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
        Cursor { engine, end, iter, current: None }
    }

    /// The entry under the cursor, or `None` at the end of the range.
    fn peek(&mut self) -> Result<Option<(&[u8], &[u8])>, EngineError> {
        if self.current.is_none() {
            self.current = self.iter.next().transpose()?;
        }
        Ok(self.current.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice())))
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
