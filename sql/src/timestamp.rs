//! Parsing the time values of `AS OF SYSTEM TIME` and `SET max_staleness`: intervals such as
//! `'-10s'` or `'10 seconds'`, absolute timestamps such as `'2026-11-26 01:00:00'`, and
//! nanosecond counts such as the ones `SHOW commit_timestamp` returns.
//!
//! There are no TIMESTAMP or INTERVAL SQL types yet, so these are small hand-written parsers
//! over the string forms clients use; they never panic and report what they expected.
//!
//! - **Intervals** are an optional sign followed by one or more `<number><unit>` parts, with
//!   optional spaces: `10s`, `-1m30s`, `500ms`, `1.5 seconds`, `1 hour 30 minutes`. Units are
//!   `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d` and their long forms (`second`, `seconds`,
//!   `sec`, `min`, `minute`, `hour`, `hr`, `day`, …), in any case. The sign applies to the whole
//!   interval (as in Go and CockroachDB, so `-1m30s` is 90 seconds ago). A lone number
//!   without a unit is seconds, as in PostgreSQL's `'10'::interval`.
//! - **Timestamps** are `YYYY-MM-DD`, optionally followed by ` ` or `T` and `HH:MM[:SS[.f]]`
//!   (up to nanosecond precision), optionally followed by `Z`, `UTC` or a `±HH[[:]MM]` offset;
//!   without an offset the time is UTC (the only session time zone).
//! - **Nanosecond counts** are digits, optionally followed by `.` and more digits: the form
//!   CockroachDB uses for HLC timestamps (`<wall ns>.<logical>`); the fraction is ignored.

use std::time::Duration;

use crate::error::{Result, SqlError};
use meridian_kv::ReadBound;

/// When an `AS OF SYSTEM TIME` query reads, as written (relative times are resolved by the
/// store when the transaction first reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// This long ago (the interval was negative).
    Ago(Duration),
    /// This absolute time, in ns since the Unix epoch.
    At(u64),
}

impl AsOf {
    /// The storage read bound for this time.
    pub fn bound(self) -> ReadBound {
        match self {
            AsOf::Ago(d) => ReadBound::ExactStaleness(d),
            AsOf::At(ts) => ReadBound::At(ts),
        }
    }
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Ago(d) => write!(f, "'-{}'", format_duration(*d)),
            AsOf::At(ts) => write!(f, "'{ts}'"),
        }
    }
}

/// Parses an `AS OF SYSTEM TIME` value: a nanosecond count, an absolute timestamp or a
/// negative interval. Anything else, a positive interval, or a time before 1970 is 22023.
pub fn parse_as_of(text: &str) -> Result<AsOf> {
    let invalid =
        |why: String| SqlError::InvalidParameterValue(format!("AS OF SYSTEM TIME: {why}"));
    let trimmed = text.trim();
    if let Some(ns) = parse_nanos(trimmed) {
        return ns.map(AsOf::At).map_err(invalid);
    }
    if looks_like_date(trimmed) {
        return parse_timestamp(trimmed).map(AsOf::At).map_err(invalid);
    }
    match parse_interval(trimmed) {
        Ok((true, d)) if !d.is_zero() => Ok(AsOf::Ago(d)),
        Ok((_, d)) if d.is_zero() => Err(invalid(format!(
            "interval '{text}' must be negative, such as '-10s'"
        ))),
        Ok(_) => Err(invalid(format!(
            "interval '{text}' is in the future; use a negative interval such as '-10s'"
        ))),
        Err(why) => Err(invalid(format!(
            "value '{text}' is neither a timestamp, a number of nanoseconds since the epoch, \
             nor a negative interval such as '-10s' ({why})"
        ))),
    }
}

/// Parses a non-negative duration setting such as `max_staleness` (`'10s'`, `'500ms'`,
/// `'1 minute'`, `'0'`).
pub fn parse_duration_setting(name: &str, text: &str) -> Result<Duration> {
    match parse_interval(text) {
        Ok((false, d)) => Ok(d),
        Ok((true, d)) if d.is_zero() => Ok(d),
        Ok((true, _)) => Err(SqlError::InvalidParameterValue(format!(
            "{name} must not be negative: '{text}'"
        ))),
        Err(why) => Err(SqlError::InvalidParameterValue(format!(
            "invalid value for parameter \"{name}\": '{text}' ({why}; expected an interval \
             such as '10s' or '500ms')"
        ))),
    }
}

/// A duration in the shortest exact form `parse_interval` reads back: `10s`, `500ms`, `0`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0".into();
    }
    for (unit, name) in [
        (86_400_000_000_000u128, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ] {
        if ns.is_multiple_of(unit) {
            return format!("{}{name}", ns / unit);
        }
    }
    format!("{ns}ns")
}

/// `Some` if `text` has the form of a nanosecond count (digits, optionally `.digits`).
fn parse_nanos(text: &str) -> Option<Result<u64, String>> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    Some(
        whole
            .parse::<u64>()
            .map_err(|_| format!("timestamp {text} is out of range")),
    )
}

fn looks_like_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 10
        && b.get(..4).is_some_and(|y| y.iter().all(u8::is_ascii_digit))
        && b.get(4) == Some(&b'-')
}

/// Nanoseconds per unit name (lower case).
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" | "nsec" | "nsecs" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "usec" | "usecs" | "microsecond" | "microseconds" => 1_000,
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Parses an interval (see the module doc) into (negative, magnitude).
pub fn parse_interval(text: &str) -> Result<(bool, Duration), String> {
    let text = text.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let mut rest = body.trim_start();
    if rest.is_empty() {
        return Err("empty interval".into());
    }
    let mut total: u128 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let per_unit = if unit.is_empty() {
            if parts > 0 || !after.trim().is_empty() {
                return Err(format!("missing unit after {number}"));
            }
            1_000_000_000
        } else {
            unit_nanos(&unit.to_lowercase()).ok_or_else(|| format!("unknown unit \"{unit}\""))?
        };
        total = total
            .checked_add(scaled(number, per_unit)?)
            .ok_or("interval out of range")?;
        parts += 1;
        rest = after.trim_start();
    }
    let ns = u64::try_from(total).map_err(|_| "interval out of range".to_string())?;
    Ok((negative, Duration::from_nanos(ns)))
}

/// `number` (digits, optionally with one `.`) times `per_unit` ns, truncated to whole ns.
fn scaled(number: &str, per_unit: u128) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("invalid number \"{number}\""));
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else if s.len() > 30 {
            Err("interval out of range".into())
        } else {
            s.parse::<u128>()
                .map_err(|_| format!("invalid number \"{number}\""))
        }
    };
    let fraction = &fraction[..fraction.len().min(18)];
    let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(0));
    digits(whole)?
        .checked_mul(per_unit)
        .and_then(|w| w.checked_add(digits(fraction).ok()? * per_unit / scale))
        .ok_or_else(|| "interval out of range".to_string())
}

/// Parses an absolute timestamp (see the module doc) into ns since the Unix epoch.
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid timestamp '{text}' (expected YYYY-MM-DD [HH:MM[:SS[.fraction]]][+HH[:MM]|Z])"
        )
    };
    let mut p = Cursor(text.trim());
    let year = p.number(4).ok_or_else(bad)?;
    p.expect('-').ok_or_else(bad)?;
    let month = p.number(2).ok_or_else(bad)?;
    p.expect('-').ok_or_else(bad)?;
    let day = p.number(2).ok_or_else(bad)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!("date out of range in '{text}'"));
    }
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if p.eat(' ') || p.eat('T') || p.eat('t') {
        p.skip_spaces();
        hour = p.number(2).ok_or_else(bad)?;
        p.expect(':').ok_or_else(bad)?;
        minute = p.number(2).ok_or_else(bad)?;
        if p.eat(':') {
            second = p.number(2).ok_or_else(bad)?;
            if p.eat('.') {
                nanos = p.fraction_nanos().ok_or_else(bad)?;
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(format!("time out of range in '{text}'"));
        }
    }
    p.skip_spaces();
    let offset_secs: i64 = if p.0.is_empty() {
        0
    } else if p.0.eq_ignore_ascii_case("z") || p.0.eq_ignore_ascii_case("utc") {
        p.0 = "";
        0
    } else {
        let sign = if p.eat('+') {
            1
        } else if p.eat('-') {
            -1
        } else {
            return Err(bad());
        };
        let hours = p.number(2).ok_or_else(bad)?;
        p.eat(':');
        let minutes = if p.0.is_empty() {
            0
        } else {
            p.number(2).ok_or_else(bad)?
        };
        if hours > 15 || minutes > 59 {
            return Err(format!("time zone offset out of range in '{text}'"));
        }
        sign * (hours * 3600 + minutes * 60)
    };
    if !p.0.is_empty() {
        return Err(bad());
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let secs = u64::try_from(secs).map_err(|_| format!("timestamp '{text}' is before 1970"))?;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .ok_or_else(|| format!("timestamp '{text}' is too far in the future"))
}

/// A tiny left-to-right reader over a timestamp string.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    /// Exactly `digits` ASCII digits.
    fn number(&mut self, digits: usize) -> Option<i64> {
        let head = self.0.get(..digits)?;
        if !head.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.0 = &self.0[digits..];
        head.parse().ok()
    }

    /// One or more digits after a decimal point, as nanoseconds (beyond 9 digits truncated).
    fn fraction_nanos(&mut self) -> Option<u64> {
        let len = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        if len == 0 {
            return None;
        }
        let (digits, rest) = self.0.split_at(len);
        self.0 = rest;
        let kept = &digits[..len.min(9)];
        let value: u64 = kept.parse().ok()?;
        Some(value * 10u64.pow(9 - u32::try_from(kept.len()).ok()?))
    }

    fn eat(&mut self, c: char) -> bool {
        match self.0.strip_prefix(c) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn skip_spaces(&mut self) {
        self.0 = self.0.trim_start();
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn intervals() {
        let ok = |s: &str| parse_interval(s).unwrap();
        assert_eq!(ok("10s"), (false, Duration::from_secs(10)));
        assert_eq!(ok("-10s"), (true, Duration::from_secs(10)));
        assert_eq!(ok("-1m30s"), (true, Duration::from_secs(90)));
        assert_eq!(ok("-500ms"), (true, Duration::from_millis(500)));
        assert_eq!(ok("10 seconds"), (false, Duration::from_secs(10)));
        assert_eq!(ok(" 1 Hour 2 MINUTES "), (false, Duration::from_secs(3720)));
        assert_eq!(ok("1.5s"), (false, Duration::from_millis(1500)));
        assert_eq!(ok("250us"), (false, Duration::from_micros(250)));
        assert_eq!(ok("7ns"), (false, Duration::from_nanos(7)));
        assert_eq!(ok("1d"), (false, Duration::from_secs(86_400)));
        assert_eq!(ok("0"), (false, Duration::ZERO));
        assert_eq!(ok("10"), (false, Duration::from_secs(10)));
        for bad in [
            "",
            "-",
            "s",
            "10 parsecs",
            "1..5s",
            "10 20",
            "1m 30",
            "ten seconds",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_interval("99999999999999999999999999d").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01"), Ok(0));
        assert_eq!(
            parse_timestamp("2026-11-26 01:00:00"),
            Ok(1_795_654_800 * SEC)
        );
        assert_eq!(
            parse_timestamp("2026-11-26T01:00:00.25Z"),
            Ok(1_795_654_800 * SEC + 250_000_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-26 02:00:00+01"),
            Ok(1_795_654_800 * SEC)
        );
        assert_eq!(
            parse_timestamp("2026-11-25 20:30:00-04:30"),
            Ok(1_795_654_800 * SEC)
        );
        assert_eq!(
            parse_timestamp("2026-11-26 01:00:00.123456789123 +00:00"),
            Ok(1_795_654_800 * SEC + 123_456_789)
        );
        assert_eq!(parse_timestamp("2024-02-29 00:00"), Ok(1_709_164_800 * SEC));
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-11-26 24:00:00",
            "2026-11-26 01:00:00 PST",
            "2026-11-26 01",
            "1969-12-31 23:59:59",
            "2026-11-26 01:00:00.",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn as_of_values() {
        assert_eq!(parse_as_of("-10s"), Ok(AsOf::Ago(Duration::from_secs(10))));
        assert_eq!(
            parse_as_of("1795654800000000000"),
            Ok(AsOf::At(1_795_654_800 * SEC))
        );
        assert_eq!(
            parse_as_of("1795654800000000000.0000000001"),
            Ok(AsOf::At(1_795_654_800 * SEC))
        );
        assert_eq!(
            parse_as_of("2026-11-26 01:00:00"),
            Ok(AsOf::At(1_795_654_800 * SEC))
        );
        for bad in [
            "10s",
            "0s",
            "-0s",
            "yesterday",
            "",
            "2026-02-30",
            "-10 parsecs",
        ] {
            let err = parse_as_of(bad).unwrap_err();
            assert_eq!(err.sqlstate(), "22023", "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_millis(1500),
            Duration::from_secs(90),
            Duration::from_nanos(7),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_interval(&format_duration(d)), Ok((false, d)));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }
}
