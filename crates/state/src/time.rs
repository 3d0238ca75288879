//! Wall-clock timestamps: unix milliseconds in the database, RFC 3339 UTC in
//! JSON and on screen.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// A point in time, in milliseconds since the unix epoch (UTC).
///
/// Stored as an SQLite `INTEGER`; displayed and serialized as an RFC 3339
/// UTC string with millisecond precision, e.g. `2024-03-01T12:34:56.789Z`.
/// Years outside `0000..=9999` cannot be written in RFC 3339; they are
/// printed with a sign or more digits rather than being clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time. A clock set before 1970 gives a negative
    /// value; one beyond the year 292 million saturates.
    pub fn now() -> Timestamp {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        };
        Timestamp(millis)
    }

    /// The timestamp `millis` milliseconds after the unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the unix epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Milliseconds from `self` to `later`; `0` if the wall clock went
    /// backwards in between.
    pub fn millis_until(self, later: Timestamp) -> u64 {
        u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0)
    }
}

/// Splits a day count since 1970-01-01 into a proleptic Gregorian
/// (year, month, day). Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let shifted_month = (5 * day_of_year + 2) / 153; // [0, 11], March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1; // [1, 31]
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    }; // [1, 12]
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(MS_PER_DAY);
        let in_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let hour = in_day / MS_PER_HOUR;
        let minute = in_day % MS_PER_HOUR / MS_PER_MINUTE;
        let second = in_day % MS_PER_MINUTE / MS_PER_SECOND;
        let milli = in_day % MS_PER_SECOND;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ms: i64) -> String {
        Timestamp::from_unix_millis(ms).to_string()
    }

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(fmt(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(fmt(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(fmt(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(fmt(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(fmt(-62_167_219_200_000), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let _ = fmt(i64::MAX);
        let _ = fmt(i64::MIN);
    }

    #[test]
    fn every_day_round_trips_through_days_from_civil() {
        // Inverse of civil_from_days, to check 800 years of calendar.
        fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y.rem_euclid(400);
            let mp = (m + 9) % 12;
            let doy = (153 * mp + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146_097 + doe - 719_468
        }
        let mut previous = civil_from_days(-146_097 - 1);
        for days in -146_097..146_097 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((y, m, d) > previous);
            previous = (y, m, d);
        }
    }

    #[test]
    fn serializes_as_string() {
        let json = serde_json::to_string(&Timestamp::from_unix_millis(0)).expect("serialize");
        assert_eq!(json, "\"1970-01-01T00:00:00.000Z\"");
    }

    #[test]
    fn durations_never_go_negative() {
        let a = Timestamp::from_unix_millis(1_000);
        let b = Timestamp::from_unix_millis(1_250);
        assert_eq!(a.millis_until(b), 250);
        assert_eq!(b.millis_until(a), 0);
        assert!(Timestamp::now() > Timestamp::from_unix_millis(1_600_000_000_000));
    }
}
