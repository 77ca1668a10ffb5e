//! Wall-clock time as the tests read and write it: the crate's one RFC 3339 parser
//! ([`parse_rfc3339_utc`]; [`parse_rfc3339_nanos`] is the same parser held to the nine fraction
//! digits of the tracer's `ts`), its inverse for the API timestamps the fake Kubernetes API
//! serves ([`rfc3339_s`]), and the clock now.

use std::time::{SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, none or 1 to 9 fraction digits; an offset
/// such as `+00:00` is refused) to Unix nanoseconds. The one RFC 3339 parser of the tests.
pub fn parse_rfc3339_utc(s: &str) -> Option<i128> {
    let b = s.strip_suffix('Z')?.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let frac = match &b[19..] {
        [] => &[][..],
        [b'.', f @ ..] if (1..=9).contains(&f.len()) => f,
        _ => return None,
    };
    // Decimal digits only (no sign, no space); the empty fraction is 0.
    let num = |t: &[u8]| -> Option<i128> { t.iter().try_fold(0i128, |n, c| c.is_ascii_digit().then(|| n * 10 + i128::from(c - b'0'))) };
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, se) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let ns = num(frac)? * 10i128.pow(9 - frac.len() as u32);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + ns)
}

/// Parses `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (exactly nine fraction digits, as the tracer writes
/// `ts`) to Unix nanoseconds: [`parse_rfc3339_utc`] held to that form, which alone is 30 bytes.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    if s.len() != 30 {
        return None;
    }
    parse_rfc3339_utc(s)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the API's timestamp format.
pub fn rfc3339_s(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Wall clock now in Unix nanoseconds.
pub fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Wall clock now in Unix seconds (the API's precision).
pub fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parser_every_form() {
        // The tracer's `ts`: nine digits, and nothing else passes parse_rfc3339_nanos.
        assert_eq!(parse_rfc3339_nanos("2000-03-01T00:00:01.000000005Z"), Some(951_868_801_000_000_005));
        assert_eq!(parse_rfc3339_nanos("2026-11-22T02:30:01.123456Z"), None);
        assert_eq!(parse_rfc3339_nanos("2026-11-22T02:30:01Z"), None);
        // Snapshot titles and the API's timestamps: any fraction up to nine digits, or none.
        let s = 1_795_314_601i128 * 1_000_000_000;
        assert_eq!(parse_rfc3339_utc("2026-11-22T02:30:01Z"), Some(s));
        assert_eq!(parse_rfc3339_utc("2026-11-22T02:30:01.5Z"), Some(s + 500_000_000));
        assert_eq!(parse_rfc3339_utc("2026-11-22T02:30:01.123456Z"), Some(s + 123_456_000));
        assert_eq!(parse_rfc3339_utc("2026-11-22T02:30:01.123456789Z"), Some(s + 123_456_789));
        for bad in [
            "2026-11-22T02:30:01.Z",
            "2026-11-22T02:30:01.1234567890Z",
            "2026-11-22T02:30:01.123456789+00:00",
            "2026-11-22T02:30:01+00:00",
            "2026-11-22 02:30:01Z",
            "2026-13-22T02:30:01Z",
            "2026-11-22T24:30:01Z",
            "2026-11-22T02:30:+1Z",
            "2026-11-22T02:30:01.-5Z",
            "2026-11-22T02:30:01",
            "",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad:?}");
        }
        // The parser inverts the formatter the fake API writes with.
        for unix_s in [0, 951_868_799, 951_868_800, 1_795_314_601, 4_102_444_800] {
            assert_eq!(parse_rfc3339_utc(&rfc3339_s(unix_s)), Some(i128::from(unix_s) * 1_000_000_000), "{unix_s}");
        }
    }
}
