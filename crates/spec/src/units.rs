//! Sizes (`512MiB`) and durations (`1h30m`) as written in pipeline files.
//!
//! Both parsers return the reason on failure; the caller adds the file
//! position and the key.

use std::time::Duration;

/// What a size should look like, for messages.
pub(crate) const SIZE_HINT: &str = "expected a size with a unit, like 512MiB";
/// What a duration should look like, for messages.
pub(crate) const DURATION_HINT: &str = "expected a duration like 30s, 10m or 1h";

/// Size units and their multipliers. `K`, `M`, ... are binary, like `KiB`.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("G", 1 << 30),
    ("T", 1 << 40),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses a size such as `512MiB`, `1 GiB`, `100MB` or `1024B` into bytes.
///
/// A bare number, an unknown unit, zero and overflow are errors.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, rest) = text.split_at(digits_end);
    let unit = rest.trim_start_matches([' ', '\t']);
    if number.is_empty() || unit.is_empty() {
        return Err(SIZE_HINT.to_owned());
    }
    if unit.starts_with(['.', ',']) {
        return Err("expected a whole number with a unit, like 1536MiB".to_owned());
    }
    let Some(&(_, multiplier)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "unknown unit {unit:?} (expected one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, K, M, G, T)"
        ));
    };
    let too_large = || "size is too large".to_owned();
    let value: u64 = number.parse().map_err(|_| too_large())?;
    if value == 0 {
        return Err("size must be greater than 0".to_owned());
    }
    value.checked_mul(multiplier).ok_or_else(too_large)
}

/// A size for people to read, in the largest binary unit it reaches:
/// `3355443` -> `3.2 MiB`, `2147483648` -> `2 GiB`, `900` -> `900 bytes`.
/// A whole number of the unit has no decimals, so a size given to
/// [`parse_size`] as `512MiB` prints as `512 MiB`, which it reads back.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        let one = 1u64 << shift;
        if bytes >= one {
            if bytes.is_multiple_of(one) {
                return format!("{} {unit}", bytes >> shift);
            }
            // Display only: a byte count far beyond 2^53 loses nothing
            // that one decimal shows.
            #[allow(clippy::cast_precision_loss)]
            let value = bytes as f64 / one as f64;
            return format!("{value:.1} {unit}");
        }
    }
    format!("{bytes} bytes")
}

/// Duration units, largest first, in milliseconds.
const DURATION_UNITS: &[(&str, u64)] = &[("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

/// Parses a duration such as `30s`, `10m`, `1h30m` or `500ms`.
///
/// Units go from largest to smallest, each at most once. A bare number,
/// zero and overflow are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DURATION_HINT.to_owned());
    }
    let too_large = || "duration is too large".to_owned();
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into DURATION_UNITS of the next unit allowed.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if number.is_empty() || unit.is_empty() {
            return Err(DURATION_HINT.to_owned());
        }
        let Some(index) = DURATION_UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit {unit:?} (expected one of h, m, s, ms)"
            ));
        };
        if index < next_unit {
            return Err(format!(
                "{DURATION_HINT}, with units from largest to smallest, each at most once"
            ));
        }
        next_unit = index + 1;
        let value: u64 = number.parse().map_err(|_| too_large())?;
        let millis = value
            .checked_mul(DURATION_UNITS.get(index).map_or(1, |u| u.1))
            .ok_or_else(too_large)?;
        total = total.checked_add(millis).ok_or_else(too_large)?;
        rest = after;
    }
    if total == 0 {
        return Err("duration must be greater than 0".to_owned());
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1024B"), Ok(1024));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert_eq!(parse_size("1\tTB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("3K"), Ok(3072));
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215 << 40));
    }

    #[test]
    fn sizes_read_in_the_largest_whole_unit() {
        assert_eq!(format_size(900), "900 bytes");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(3_355_443), "3.2 MiB");
        assert_eq!(format_size(2 << 30), "2 GiB");
        assert_eq!(format_size(5 << 40), "5 TiB");
        for given in ["512 MiB", "1 GiB", "64 KiB"] {
            assert_eq!(format_size(parse_size(given).expect(given)), given);
        }
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "512", "", "MiB", "1.5GiB", "-1MiB", "1 mib", "1 XB", "1MiBs",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("512"), Err(SIZE_HINT.to_owned()));
        assert_eq!(
            parse_size("0MiB"),
            Err("size must be greater than 0".into())
        );
        assert_eq!(parse_size("16777216TiB"), Err("size is too large".into()));
        assert_eq!(
            parse_size("99999999999999999999999B"),
            Err("size is too large".into())
        );
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("30s"), Ok(s(30)));
        assert_eq!(parse_duration("10m"), Ok(s(600)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("2h"), Ok(s(7200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "30", "", "s", "1x", "1m1h", "1s1s", "1 h", "-1s", "1.5h", "1h30", "h1",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("30"), Err(DURATION_HINT.to_owned()));
        assert_eq!(
            parse_duration("0s"),
            Err("duration must be greater than 0".into())
        );
        assert_eq!(
            parse_duration("0h0m"),
            Err("duration must be greater than 0".into())
        );
        assert_eq!(
            parse_duration("99999999999999999h"),
            Err("duration is too large".into())
        );
    }
}
