//! History timestamps: RFC 3339 in UTC with milliseconds, computed from `SystemTime` with
//! the proleptic Gregorian calendar (no date crate needed for this one format).

use std::time::{SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: u64 = 86_400;

/// `2024-05-01T12:34:56.789Z`. A clock set before 1970 reads as the epoch.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    // `u64::MAX / 86_400` fits in an i64 with room to spare.
    let days = i64::try_from(seconds / SECONDS_PER_DAY).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let of_day = seconds % SECONDS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis(),
    )
}

/// nginx's `$time_local` in UTC: `02/Dec/2026:01:52:46 +0000`.
pub(crate) fn combined_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = i64::try_from(seconds / SECONDS_PER_DAY).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let month = usize::try_from(month - 1)
        .ok()
        .and_then(|m| MONTHS.get(m))
        .unwrap_or(&"Jan");
    let of_day = seconds % SECONDS_PER_DAY;
    format!(
        "{day:02}/{month}/{year:04}:{:02}:{:02}:{:02} +0000",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
    )
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01, after Howard
/// Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each 400-year era's year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // 1..=31
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64, millis: u64) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis))
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(946_684_799, 999), "1999-12-31T23:59:59.999Z");
        assert_eq!(at(1_735_689_599, 5), "2024-12-31T23:59:59.005Z");
        assert_eq!(at(4_107_542_400, 120), "2100-03-01T00:00:00.120Z");
        assert_eq!(at(1_714_566_896, 789), "2024-05-01T12:34:56.789Z");
    }

    #[test]
    fn a_clock_before_1970_reads_as_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
    }

    /// Walks the calendar one day at a time for a thousand years and compares.
    #[test]
    fn agrees_with_counting_days() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..366_000 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let length = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
