//! The time every audit line carries: RFC 3339 in UTC with microseconds, written without an
//! allocation (once per line) and without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-22T04:40:00.123456Z`
pub fn rfc3339_micros(time: SystemTime) -> String {
    // Only ASCII digits and separators are written.
    String::from_utf8_lossy(&rfc3339_micros_bytes(time)).into_owned()
}

/// [`rfc3339_micros`] without an allocation (once per audit line). The text of the last
/// second is kept per thread: lines of one second differ only in their microseconds.
pub fn rfc3339_micros_bytes(time: SystemTime) -> [u8; 27] {
    thread_local! {
        static LAST_SECOND: std::cell::Cell<(u64, [u8; 27])> = const { std::cell::Cell::new((u64::MAX, [0; 27])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (cached_second, mut out) = LAST_SECOND.get();
    if cached_second != since.as_secs() {
        out = rfc3339_of_second(since.as_secs());
        LAST_SECOND.set((since.as_secs(), out));
    }
    let mut micros = since.subsec_micros();
    for at in (20..26).rev() {
        out[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out
}

/// The text of a whole second, its microseconds zero.
fn rfc3339_of_second(seconds: u64) -> [u8; 27] {
    let seconds = seconds as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    // Years past 9999 keep their low four digits (not before the year 10000).
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.max(0) as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, (rest / 3600) as u64);
    put(14, 2, (rest % 3600 / 60) as u64);
    put(17, 2, (rest % 60) as u64);
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc_with_micros() {
        let time = UNIX_EPOCH + Duration::new(1_795_319_593, 871_344_123);
        assert_eq!(rfc3339_micros(time), "2026-11-22T03:53:13.871344Z");
        // The same second again (from the thread's cache), then the next.
        let same_second = UNIX_EPOCH + Duration::new(1_795_319_593, 5_000);
        assert_eq!(rfc3339_micros(same_second), "2026-11-22T03:53:13.000005Z");
        let next = UNIX_EPOCH + Duration::new(1_795_319_594, 999_999_999);
        assert_eq!(rfc3339_micros(next), "2026-11-22T03:53:14.999999Z");
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }
}
