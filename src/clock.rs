//! Wall-clock time and its RFC 5322 rendering, in one place so that every
//! timestamp tern writes (Received:, envelopes, logs) agrees.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 UTC time with milliseconds, `2026-11-23T13:08:39.042Z`: the stamp on
/// each line ternd logs to stderr.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let Local {
        month_number: m,
        day,
        year,
        hms: (h, mi, s),
        ..
    } = local(i64::try_from(d.as_secs()).unwrap_or(0), 0);
    format!(
        "{year:04}-{m:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// RFC 5322 3.3 date-time in the local time zone: `Mon, 23 Nov 2026 14:08:39 +0100`.
pub fn rfc5322(t: u64) -> String {
    let t = i64::try_from(t).unwrap_or(0);
    rfc5322_with_offset(t, crate::sys::utc_offset(t))
}

/// Day names from 1970-01-01, a Thursday.
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The parts of local time `t + offset` that dates are written with.
struct Local {
    weekday: &'static str,
    month: &'static str,
    /// 1-12
    month_number: u32,
    day: u32,
    year: i64,
    hms: (i64, i64, i64),
}

fn local(t: i64, offset: i64) -> Local {
    let local = t + offset;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (year, m, day) = civil_from_days(days);
    Local {
        weekday: DAYS.get(days.rem_euclid(7) as usize).copied().unwrap_or("Thu"),
        month: MONTHS.get((m as usize).wrapping_sub(1)).copied().unwrap_or("Jan"),
        month_number: m,
        day,
        year,
        hms: (secs / 3600, secs % 3600 / 60, secs % 60),
    }
}

fn rfc5322_with_offset(t: i64, offset: i64) -> String {
    let Local {
        weekday: wd,
        month: mon,
        day: d,
        year: y,
        hms: (h, mi, sec),
        ..
    } = local(t, offset);
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    format!(
        "{wd}, {d} {mon} {y} {h:02}:{mi:02}:{sec:02} {sign}{:02}{:02}",
        off / 3600,
        off % 3600 / 60
    )
}

/// asctime(3) form in the local time zone, `Mon Nov 23 14:08:39 2026` (the day of
/// the month space-padded to two places): the date on an mbox `From ` line, which
/// mail readers parse as ctime(3) output.
pub fn asctime(t: u64) -> String {
    let t = i64::try_from(t).unwrap_or(0);
    asctime_with_offset(t, crate::sys::utc_offset(t))
}

fn asctime_with_offset(t: i64, offset: i64) -> String {
    let l = local(t, offset);
    let (h, mi, sec) = l.hms;
    format!(
        "{} {} {:>2} {h:02}:{mi:02}:{sec:02} {}",
        l.weekday, l.month, l.day, l.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_stamps() {
        use std::time::Duration;
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_439_319_042);
        assert_eq!(rfc3339_millis(t), "2026-11-23T13:08:39.042Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T23:59:59.000Z");
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc5322_with_offset(0, 0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_with_offset(1_795_442_919, 0),
            "Mon, 23 Nov 2026 14:08:39 +0000"
        );
        assert_eq!(
            rfc5322_with_offset(951_782_400, 3600),
            "Tue, 29 Feb 2000 01:00:00 +0100"
        );
        assert_eq!(
            rfc5322_with_offset(951_782_400, -9000),
            "Mon, 28 Feb 2000 21:30:00 -0230"
        );
    }

    #[test]
    fn asctime_dates() {
        assert_eq!(asctime_with_offset(1_795_442_919, 0), "Mon Nov 23 14:08:39 2026");
        assert_eq!(asctime_with_offset(0, 0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(
            asctime_with_offset(951_782_400, -9000),
            "Mon Feb 28 21:30:00 2000"
        );
        assert_eq!(asctime(0).len(), 24);
    }
}
