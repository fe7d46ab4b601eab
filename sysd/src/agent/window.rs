//! The maintenance window: whether a UTC instant falls inside it, in the window's
//! time zone. A window opens on each of its days at `start` local time and stays
//! open for `length`, so one that starts at 23:00 for 2 h on Monday is still open
//! at 00:30 on Tuesday. Wall-clock arithmetic: across a DST change the window is as
//! long on the clock on the wall, not in elapsed seconds.

use ballast_config::Window;

use super::tz::Zone;

/// Whether the window is open at `now` (Unix seconds).
pub fn is_open(w: &Window, zone: &Zone, now: i64) -> bool {
    let local = now + i64::from(zone.offset_at(now));
    let today = local.div_euclid(86_400);
    // A window lasts at most 7 days (the schema's limit): one opened up to 7 days
    // ago may still be open.
    (0..=7).any(|back| {
        let day = today - back;
        let opens = day * 86_400 + i64::from(w.start_minute) * 60;
        let on_day = w.days.is_empty() || w.days.contains(&weekday(day));
        on_day && local >= opens && local - opens < w.length as i64
    })
}

/// 0 = Monday .. 6 = Sunday of a day count since 1970-01-01 (a Thursday).
fn weekday(day: i64) -> u8 {
    (day + 3).rem_euclid(7) as u8
}

#[cfg(test)]
mod tests {
    use super::super::tz::{days_from_civil, Rule};
    use super::*;
    use std::path::PathBuf;

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    fn window(days: &[u8], start: &str, length: u64, tz: &str) -> Window {
        Window {
            days: days.to_vec(),
            start_minute: ballast_config::fleet::parse_clock(start).unwrap(),
            length,
            timezone: tz.into(),
        }
    }

    #[test]
    fn weekdays_from_the_epoch() {
        assert_eq!(weekday(0), 3); // 1970-01-01, a Thursday
        assert_eq!(weekday(days_from_civil(2026, 12, 7)), 0); // a Monday
        assert_eq!(weekday(days_from_civil(2026, 12, 6)), 6); // a Sunday
    }

    #[test]
    fn days_and_hours_in_utc() {
        // Mondays and Wednesdays, 02:00 for 2 h.
        let w = window(&[0, 2], "02:00", 7200, "UTC");
        let z = Zone::utc();
        assert!(is_open(&w, &z, at(2026, 12, 7, 2, 0))); // Monday 02:00
        assert!(is_open(&w, &z, at(2026, 12, 7, 3, 59)));
        assert!(!is_open(&w, &z, at(2026, 12, 7, 4, 0)));
        assert!(!is_open(&w, &z, at(2026, 12, 7, 1, 59)));
        assert!(!is_open(&w, &z, at(2026, 12, 8, 2, 30))); // Tuesday
        assert!(is_open(&w, &z, at(2026, 12, 9, 2, 30))); // Wednesday
    }

    #[test]
    fn a_window_wraps_past_midnight_into_the_next_day() {
        // Sundays 23:00 for 3 h: open until Monday 02:00, not on Monday night.
        let w = window(&[6], "23:00", 3 * 3600, "UTC");
        let z = Zone::utc();
        assert!(is_open(&w, &z, at(2026, 12, 6, 23, 30)));
        assert!(is_open(&w, &z, at(2026, 12, 7, 1, 59)));
        assert!(!is_open(&w, &z, at(2026, 12, 7, 2, 0)));
        assert!(!is_open(&w, &z, at(2026, 12, 7, 23, 30)));
        assert!(!is_open(&w, &z, at(2026, 12, 6, 22, 59)));
    }

    #[test]
    fn every_day_when_no_days_are_given() {
        let w = window(&[], "12:00", 60, "UTC");
        let z = Zone::utc();
        for d in 1..=7 {
            assert!(is_open(&w, &z, at(2026, 12, d, 12, 0)));
            assert!(!is_open(&w, &z, at(2026, 12, d, 12, 1)));
        }
    }

    #[test]
    fn local_time_of_the_zone_decides() {
        // 02:00 Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        let w = window(&[], "02:00", 3600, "Europe/Berlin");
        let rule = Rule::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let berlin = Zone::from_rule(rule);
        assert!(is_open(&w, &berlin, at(2026, 12, 6, 1, 30)));
        assert!(!is_open(&w, &berlin, at(2026, 12, 6, 2, 30)));
        assert!(is_open(&w, &berlin, at(2026, 7, 6, 0, 30)));
        assert!(!is_open(&w, &berlin, at(2026, 7, 6, 1, 30)));
        // And from the zone file.
        if let Ok(z) = Zone::load("Europe/Berlin", &[PathBuf::from("/usr/share/zoneinfo")]) {
            assert!(is_open(&w, &z, at(2026, 12, 6, 1, 30)));
            assert!(is_open(&w, &z, at(2026, 7, 6, 0, 30)));
        }
        // A zone west of UTC moves the day: Monday 22:00 in New York is Tuesday UTC.
        let ny = Zone::from_rule(Rule::parse("EST5EDT,M3.2.0,M11.1.0").unwrap());
        let w = window(&[0], "22:00", 3600, "America/New_York");
        assert!(is_open(&w, &ny, at(2026, 12, 8, 3, 30)));
        assert!(!is_open(&w, &Zone::utc(), at(2026, 12, 8, 3, 30)));
    }
}
