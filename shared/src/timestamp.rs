//! Instants passed into the core by its hosts: the core never reads a clock.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form of `meta.dt`.
const RFC3339_MILLIS: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// An instant in UTC, as nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(i64);

/// A timestamp text that is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 date-time such as 2026-01-31T12:00:00Z")]
pub struct TimestampError {
    /// The text that did not parse.
    pub text: String,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From nanoseconds since the Unix epoch.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// From milliseconds since the Unix epoch (saturating far outside ±292 years).
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// From whole seconds since the Unix epoch (saturating).
    pub const fn from_unix_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// This instant moved by `nanos` (saturating).
    pub const fn add_nanos(self, nanos: i64) -> Self {
        Timestamp(self.0.saturating_add(nanos))
    }

    /// Nanoseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn nanos_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Parses an RFC 3339 date-time with any offset.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let err = || TimestampError {
            text: text.to_owned(),
        };
        let dt = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| err())?;
        i64::try_from(dt.unix_timestamp_nanos())
            .map(Timestamp)
            .map_err(|_| err())
    }

    /// The date-time, when representable.
    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form of `meta.dt`. Written by hand
    /// into a stack buffer: intake writes a receive time for every body received in
    /// a new millisecond, and `time`'s formatter allocates; elsewhere
    /// [`Timestamp::to_rfc3339_millis`] uses `time`, and a test holds the two alike.
    pub fn write_rfc3339_millis(self, out: &mut String) {
        let dt = self.to_offset_date_time();
        let (year, month, day) = dt.to_calendar_date();
        let (hour, minute, second, milli) = dt.to_hms_milli();
        let year = year.clamp(0, 9999) as u32;
        let mut buf = [0u8; 24];
        put_digits(&mut buf[0..4], year);
        buf[4] = b'-';
        put_digits(&mut buf[5..7], u32::from(u8::from(month)));
        buf[7] = b'-';
        put_digits(&mut buf[8..10], u32::from(day));
        buf[10] = b'T';
        put_digits(&mut buf[11..13], u32::from(hour));
        buf[13] = b':';
        put_digits(&mut buf[14..16], u32::from(minute));
        buf[16] = b':';
        put_digits(&mut buf[17..19], u32::from(second));
        buf[19] = b'.';
        put_digits(&mut buf[20..23], u32::from(milli));
        buf[23] = b'Z';
        // Every byte written above is ASCII, so this never falls back.
        out.push_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000Z"));
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_rfc3339_millis(self) -> String {
        let dt = self.to_offset_date_time();
        // Years past 9999 cannot be written in this form; they come out clamped.
        let dt = dt.replace_year(dt.year().clamp(0, 9999)).unwrap_or(dt);
        dt.format(RFC3339_MILLIS)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
    }
}

fn put_digits(slot: &mut [u8], mut value: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_millis_in_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-27T12:34:56.789+01:00").unwrap();
        assert_eq!(t.to_rfc3339_millis(), "2026-11-27T11:34:56.789Z");
        assert_eq!(
            Timestamp::EPOCH.to_rfc3339_millis(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_hand_written_form_is_the_one_time_writes() {
        for nanos in [
            0,
            1,
            999_999_999,
            1_795_780_800_123_456_789,
            -1,
            253_402_300_799_999_999,
            951_782_400_000_000_000,
        ] {
            let t = Timestamp::from_unix_nanos(nanos);
            let mut mine = String::new();
            t.write_rfc3339_millis(&mut mine);
            assert_eq!(mine, t.to_rfc3339_millis(), "{nanos}");
        }
    }

    #[test]
    fn refuses_non_rfc3339() {
        let err = Timestamp::parse_rfc3339("yesterday").unwrap_err();
        assert!(err.to_string().contains("yesterday"));
    }
}
