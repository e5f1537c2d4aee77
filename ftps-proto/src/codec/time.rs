//! RFC 3659 `time-val` (`YYYYMMDDHHMMSS[.sss]`, always UTC), used by `MDTM`, `MFMT` and the `modify` fact.
//!
//! Parse with [`Timeval::parse`] (whole string), [`Timeval::parse_prefix`] (a time-val followed by more text,
//! as in `MFMT`) or `str::parse`; format with `Display`. Conversion to and from Unix time uses the days-from-civil
//! algorithm (proleptic Gregorian calendar), so no date library is needed.

use std::fmt;
use std::str::FromStr;

use nom::bytes::complete::{tag, take_while1, take_while_m_n};
use nom::combinator::{map_res, opt};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// A point in time as FTP writes it: UTC, to the second, with optional milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeval {
    /// Year, 0000..=9999 on the wire.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31 (checked against the month).
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=60 (RFC 3659 allows a leap second).
    pub second: u8,
    /// Milliseconds, 0..=999, when the peer sent a fraction.
    pub millisecond: Option<u16>,
}

/// A string that is not an RFC 3659 time-val (wrong shape or a field out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimevalError;

impl fmt::Display for TimevalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid time-val: expected YYYYMMDDHHMMSS[.sss]")
    }
}

impl std::error::Error for TimevalError {}

/// Unix seconds of 0000-01-01T00:00:00Z, the earliest time-val.
const MIN_UNIX_SECONDS: i64 = -62_167_219_200;
/// Unix seconds of 9999-12-31T23:59:59Z, the latest time-val (leap second aside).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Whether `year` is a Gregorian leap year.
fn is_leap_year(year: u16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1..=12) of `year`; 0 for an invalid month.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `n` ASCII digits as a number.
fn fixed_digits<'a>(
    n: usize,
) -> impl Parser<&'a str, Output = u16, Error = nom::error::Error<&'a str>> {
    map_res(
        take_while_m_n(n, n, |c: char| c.is_ascii_digit()),
        str::parse::<u16>,
    )
}

/// Year, month, day, hour, minute, second and the fraction's digits, as read (not yet range-checked).
type TimevalFields<'a> = (u16, u16, u16, u16, u16, u16, Option<&'a str>);

/// The nom parser behind [`Timeval::parse_prefix`]: shape only, ranges are checked afterwards.
fn timeval_fields(input: &str) -> IResult<&str, TimevalFields<'_>> {
    (
        fixed_digits(4),
        fixed_digits(2),
        fixed_digits(2),
        fixed_digits(2),
        fixed_digits(2),
        fixed_digits(2),
        opt(preceded(
            tag("."),
            take_while1(|c: char| c.is_ascii_digit()),
        )),
    )
        .parse(input)
}

impl Timeval {
    /// A `SystemTime` as a time-val, to the millisecond; `None` outside years 0..=9999.
    ///
    /// A conversion of a value, not a clock read: the engine still never asks what time it is.
    pub fn from_system_time(time: std::time::SystemTime) -> Option<Self> {
        let millis = match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok()?,
            Err(before) => i64::try_from(before.duration().as_millis())
                .ok()?
                .checked_neg()?,
        };
        Self::from_unix_millis(millis)
    }

    /// This time-val as a `SystemTime`.
    pub fn to_system_time(&self) -> std::time::SystemTime {
        let millis = self.to_unix_millis();
        let magnitude = std::time::Duration::from_millis(millis.unsigned_abs());
        if millis >= 0 {
            std::time::UNIX_EPOCH + magnitude
        } else {
            std::time::UNIX_EPOCH - magnitude
        }
    }

    /// 1970-01-01 00:00:00 UTC, the Unix epoch: the time of a file whose time is unknown.
    pub const UNIX_EPOCH: Timeval = Timeval {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        millisecond: None,
    };

    /// A time-val from its fields, when they are in range (day checked against the month, leap years included;
    /// second 60 allowed for a leap second; millisecond at most 999).
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        millisecond: Option<u16>,
    ) -> Option<Self> {
        let valid = year <= 9999
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour <= 23
            && minute <= 59
            && second <= 60
            && millisecond.is_none_or(|ms| ms <= 999);
        valid.then_some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millisecond,
        })
    }

    /// Whether every field is in range (see [`Timeval::new`]); values built field by field may not be.
    pub fn is_valid(&self) -> bool {
        Self::new(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.millisecond,
        )
        .is_some()
    }

    /// Parses exactly one time-val, `YYYYMMDDHHMMSS[.f+]`. A fraction of any length is accepted and truncated to
    /// milliseconds (RFC 3659 section 2.3 allows any precision).
    pub fn parse(input: &str) -> Option<Self> {
        match Self::parse_prefix(input) {
            Some((value, "")) => Some(value),
            _ => None,
        }
    }

    /// Parses a time-val at the start of `input` and returns it with the rest of the input.
    ///
    /// The time-val must not be followed directly by another digit or `.` (so `202001011200001` is refused
    /// rather than read as a time-val and a stray `1`).
    pub fn parse_prefix(input: &str) -> Option<(Self, &str)> {
        let (rest, (year, month, day, hour, minute, second, fraction)) =
            timeval_fields(input).ok()?;
        if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let millisecond = fraction.map(|digits| {
            // Keep the first three digits, padded on the right: ".5" is 500 ms, ".123456" is 123 ms.
            digits
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0u16, |ms, d| ms * 10 + u16::from(d - b'0'))
        });
        let narrow = |v: u16| u8::try_from(v).ok();
        let value = Self::new(
            year,
            narrow(month)?,
            narrow(day)?,
            narrow(hour)?,
            narrow(minute)?,
            narrow(second)?,
            millisecond,
        )?;
        Some((value, rest))
    }

    /// Seconds since 1970-01-01T00:00:00Z (negative before). The milliseconds are dropped; a leap second 60 counts
    /// as the first second of the next minute, as POSIX time does.
    pub fn to_unix_seconds(&self) -> i64 {
        let days = days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        days * 86_400
            + i64::from(self.hour) * 3_600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Milliseconds since 1970-01-01T00:00:00Z; a missing fraction counts as 0.
    pub fn to_unix_millis(&self) -> i64 {
        self.to_unix_seconds() * 1_000 + i64::from(self.millisecond.unwrap_or(0))
    }

    /// The time-val of a Unix time in seconds (without milliseconds), when its year is in 0000..=9999.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        if !(MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(&seconds) {
            return None;
        }
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let in_day = seconds.rem_euclid(86_400);
        Self::new(
            u16::try_from(year).ok()?,
            u8::try_from(month).ok()?,
            u8::try_from(day).ok()?,
            u8::try_from(in_day / 3_600).ok()?,
            u8::try_from(in_day % 3_600 / 60).ok()?,
            u8::try_from(in_day % 60).ok()?,
            None,
        )
    }

    /// The time-val of a Unix time in milliseconds (with `millisecond` set), when its year is in 0000..=9999.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        let mut value = Self::from_unix_seconds(millis.div_euclid(1_000))?;
        value.millisecond = Some(u16::try_from(millis.rem_euclid(1_000)).ok()?);
        Some(value)
    }
}

impl fmt::Display for Timeval {
    /// Exactly 14 digits, then `.mmm` when milliseconds are present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if let Some(ms) = self.millisecond {
            write!(f, ".{ms:03}")?;
        }
        Ok(())
    }
}

impl FromStr for Timeval {
    type Err = TimevalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(TimevalError)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tv(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, ms: Option<u16>) -> Timeval {
        Timeval::new(y, mo, d, h, mi, s, ms).unwrap()
    }

    #[test]
    fn parses_plain_and_fractional() {
        assert_eq!(
            Timeval::parse("20200101120000"),
            Some(tv(2020, 1, 1, 12, 0, 0, None))
        );
        assert_eq!(
            Timeval::parse("19980308231521.5"),
            Some(tv(1998, 3, 8, 23, 15, 21, Some(500)))
        );
        assert_eq!(
            Timeval::parse("19980308231521.05"),
            Some(tv(1998, 3, 8, 23, 15, 21, Some(50)))
        );
        assert_eq!(
            Timeval::parse("19980308231521.123456789"),
            Some(tv(1998, 3, 8, 23, 15, 21, Some(123)))
        );
        assert_eq!(
            "20001231235960".parse::<Timeval>(),
            Ok(tv(2000, 12, 31, 23, 59, 60, None))
        );
    }

    #[test]
    fn refuses_bad_shapes_and_ranges() {
        for bad in [
            "",
            "2020010112000",
            "202001011200001",
            "20200101120000.",
            "20200101120000.x",
            "2020010112000a",
            "+2020010112000",
            "20201301120000",
            "20200001120000",
            "20200100120000",
            "20200230120000",
            "20190229120000",
            "21000229120000",
            "20200431120000",
            "20200101240000",
            "20200101126000",
            "20200101120061",
            "20200101120000 ",
            "２0200101120000",
        ] {
            assert_eq!(Timeval::parse(bad), None, "{bad:?}");
        }
        assert_eq!("x".parse::<Timeval>(), Err(TimevalError));
        assert!(Timeval::parse("20000229000000").is_some());
        assert!(Timeval::parse("20240229000000").is_some());
    }

    #[test]
    fn prefix_leaves_the_rest() {
        assert_eq!(
            Timeval::parse_prefix("20200101120000 file name.txt"),
            Some((tv(2020, 1, 1, 12, 0, 0, None), " file name.txt"))
        );
        assert_eq!(
            Timeval::parse_prefix("20200101120000.1234x"),
            Some((tv(2020, 1, 1, 12, 0, 0, Some(123)), "x"))
        );
    }

    #[test]
    fn displays_fourteen_digits_and_millis() {
        assert_eq!(tv(5, 1, 2, 3, 4, 5, None).to_string(), "00050102030405");
        assert_eq!(
            tv(2020, 1, 1, 12, 0, 0, Some(7)).to_string(),
            "20200101120000.007"
        );
    }

    #[test]
    fn unix_conversion_known_values() {
        assert_eq!(tv(1970, 1, 1, 0, 0, 0, None).to_unix_seconds(), 0);
        assert_eq!(tv(2000, 3, 1, 0, 0, 0, None).to_unix_seconds(), 951_868_800);
        assert_eq!(tv(1969, 12, 31, 23, 59, 59, None).to_unix_seconds(), -1);
        assert_eq!(
            tv(0, 1, 1, 0, 0, 0, None).to_unix_seconds(),
            MIN_UNIX_SECONDS
        );
        assert_eq!(
            tv(9999, 12, 31, 23, 59, 59, None).to_unix_seconds(),
            MAX_UNIX_SECONDS
        );
        assert_eq!(
            Timeval::from_unix_seconds(1_700_000_000),
            Some(tv(2023, 11, 14, 22, 13, 20, None))
        );
        assert_eq!(Timeval::from_unix_seconds(MIN_UNIX_SECONDS - 1), None);
        assert_eq!(Timeval::from_unix_seconds(MAX_UNIX_SECONDS + 1), None);
        assert_eq!(Timeval::from_unix_seconds(i64::MIN), None);
        assert_eq!(Timeval::from_unix_seconds(i64::MAX), None);
        assert_eq!(
            Timeval::from_unix_millis(-1),
            Some(tv(1969, 12, 31, 23, 59, 59, Some(999)))
        );
        assert_eq!(Timeval::from_unix_millis(i64::MIN), None);
        assert_eq!(tv(1970, 1, 1, 0, 0, 1, Some(250)).to_unix_millis(), 1_250);
    }

    fn arb_timeval() -> impl Strategy<Value = Timeval> {
        (
            0u16..=9999,
            1u8..=12,
            1u8..=31,
            0u8..=23,
            0u8..=59,
            0u8..=60,
            proptest::option::of(0u16..=999),
        )
            .prop_filter_map("day out of range", |(y, mo, d, h, mi, s, ms)| {
                Timeval::new(y, mo, d, h, mi, s, ms)
            })
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(t in arb_timeval()) {
            let text = t.to_string();
            prop_assert_eq!(text.len(), if t.millisecond.is_some() { 18 } else { 14 });
            prop_assert_eq!(Timeval::parse(&text), Some(t));
        }

        #[test]
        fn unix_seconds_round_trip(secs in MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS) {
            let t = Timeval::from_unix_seconds(secs).unwrap();
            prop_assert_eq!(t.to_unix_seconds(), secs);
        }

        #[test]
        fn unix_millis_round_trip(ms in MIN_UNIX_SECONDS * 1000..=MAX_UNIX_SECONDS * 1000 + 999) {
            let t = Timeval::from_unix_millis(ms).unwrap();
            prop_assert_eq!(t.to_unix_millis(), ms);
        }

        #[test]
        fn timeval_to_unix_and_back(t in arb_timeval().prop_filter("no leap second", |t| t.second < 60)) {
            let back = Timeval::from_unix_seconds(t.to_unix_seconds()).unwrap();
            prop_assert_eq!(back, Timeval { millisecond: None, ..t });
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = Timeval::parse(&s);
            let _ = Timeval::parse_prefix(&s);
        }
    }
}

#[cfg(test)]
mod system_time_tests {
    use super::Timeval;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn system_times_round_trip_to_the_millisecond() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let tv = Timeval::from_system_time(t).unwrap();
        assert_eq!(tv.to_string(), "20231114221320.123");
        assert_eq!(tv.to_system_time(), t);
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(
            Timeval::from_system_time(before).unwrap().to_system_time(),
            before
        );
        assert_eq!(Timeval::UNIX_EPOCH.to_system_time(), UNIX_EPOCH);
    }
}
