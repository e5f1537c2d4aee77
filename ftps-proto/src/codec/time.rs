//! RFC 3659 `time-val` (`YYYYMMDDHHMMSS[.sss]`, always UTC), used by `MDTM`, `MFMT` and the `modify` fact.

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
