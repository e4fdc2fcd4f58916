//! Key ranges: `[start, end)` over ordered bytes, where an empty `end` means unbounded. Every
//! layer that asks "does this tablet hold this key?" asks it here.

use serde::{Deserialize, Serialize};

/// The one containment rule: `key` lies in `[start, end)`, an empty `end` being unbounded.
pub fn range_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// A half-open key range `[start, end)`; an empty `end` is unbounded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    /// Empty = unbounded.
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn new(start: Vec<u8>, end: Vec<u8>) -> KeyRange {
        KeyRange { start, end }
    }

    /// True if `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.start, &self.end, key)
    }

    /// True if `[start, end)` (end empty = unbounded) lies inside this range.
    pub fn covers(&self, start: &[u8], end: &[u8]) -> bool {
        if start < self.start.as_slice() {
            return false;
        }
        match (self.end.is_empty(), end.is_empty()) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => end <= self.end.as_slice(),
        }
    }

    /// The end of the part of `[.., end)` that lies in this range (empty = unbounded): the
    /// smaller of the two ends.
    pub fn clip_end(&self, end: &[u8]) -> Vec<u8> {
        match (self.end.is_empty(), end.is_empty()) {
            (true, _) => end.to_vec(),
            (false, true) => self.end.clone(),
            (false, false) => end.min(self.end.as_slice()).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_is_half_open_and_empty_end_is_unbounded() {
        let r = KeyRange::new(b"b".to_vec(), b"d".to_vec());
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"c\xff"));
        assert!(!r.contains(b"d"));
        let open = KeyRange::new(b"b".to_vec(), Vec::new());
        assert!(open.contains(b"zzzz"));
        assert!(!open.contains(b"a"));
    }

    #[test]
    fn covers_and_clip_end() {
        let r = KeyRange::new(b"b".to_vec(), b"d".to_vec());
        assert!(r.covers(b"b", b"d"));
        assert!(r.covers(b"c", b"c1"));
        assert!(!r.covers(b"a", b"c"));
        assert!(!r.covers(b"b", b""));
        assert_eq!(r.clip_end(b""), b"d".to_vec());
        assert_eq!(r.clip_end(b"c"), b"c".to_vec());
        assert_eq!(r.clip_end(b"e"), b"d".to_vec());
        let open = KeyRange::new(Vec::new(), Vec::new());
        assert_eq!(open.clip_end(b""), Vec::<u8>::new());
    }
}
