//! `ballast publish --rollout-start TIME --rollout-hours H`: the channel entry's
//! wave (its `rollout` field, which the update agent reads): each machine installs
//! the release from its own place in `[start, start + H hours)`.

use anyhow::{bail, Context, Result};
use ballast_bundle::channel::Rollout;

/// The wave from the two flags: `None` when neither is given.
pub fn from_flags(start: Option<&str>, hours: Option<f64>, now: u64) -> Result<Option<Rollout>> {
    let Some(hours) = hours else {
        if let Some(s) = start {
            bail!("--rollout-start {s} needs --rollout-hours H (how long the wave lasts)");
        }
        return Ok(None);
    };
    if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0) {
        bail!("--rollout-hours {hours}: give a number of hours above 0 (e.g. 24 or 0.5), at most a year");
    }
    let start = match start {
        None | Some("now") => now,
        Some(s) => parse_time(s).with_context(|| {
            format!("--rollout-start {s}: give `now`, Unix seconds or a UTC time like 2026-12-24T06:00:00Z")
        })?,
    };
    Ok(Some(Rollout {
        start,
        duration: (hours * 3600.0).round() as u64,
    }))
}

/// Unix seconds, or `YYYY-MM-DDTHH:MM[:SS]Z` (RFC 3339 in UTC).
pub fn parse_time(s: &str) -> Result<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let Some(body) = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00")) else {
        bail!("not Unix seconds, and not a UTC time ending in Z");
    };
    let (date, time) = body
        .split_once(['T', ' '])
        .context("no T between the date and the time")?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&t.len()) {
        bail!("expected YYYY-MM-DDTHH:MM[:SS]Z");
    }
    let num = |x: &str, what: &str, max: u32| -> Result<u32> {
        let n: u32 = x
            .parse()
            .with_context(|| format!("{what} {x:?} is not a number"))?;
        if n > max {
            bail!("{what} {n} is out of range");
        }
        Ok(n)
    };
    let (y, m, day) = (
        num(d[0], "year", 9999)?,
        num(d[1], "month", 12)?,
        num(d[2], "day", 31)?,
    );
    let (h, min) = (num(t[0], "hour", 23)?, num(t[1], "minute", 59)?);
    let sec = if t.len() == 3 {
        num(t[2], "second", 60)?
    } else {
        0
    };
    if y < 1970 || m == 0 || day == 0 || day > days_in_month(y, m) {
        bail!("{date} is not a date from 1970 on");
    }
    let days = days_from_civil(i64::from(y), m, day);
    Ok(days as u64 * 86_400 + u64::from(h) * 3600 + u64::from(min) * 60 + u64::from(sec))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2000-03-01T00:00Z").unwrap(), 951_868_800);
        assert_eq!(parse_time("2026-12-24T06:30:15Z").unwrap(), 1_798_093_815);
        assert_eq!(
            parse_time("2024-02-29T12:00:00+00:00").unwrap(),
            1_709_208_000
        );
        for bad in [
            "2026-02-30T00:00Z",
            "2026-12-24T06:30",
            "yesterday",
            "2026-13-01T00:00Z",
            "1969-12-31T23:59Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_make_the_wave() {
        assert_eq!(from_flags(None, None, 5).unwrap(), None);
        assert_eq!(
            from_flags(None, Some(2.0), 100).unwrap(),
            Some(Rollout {
                start: 100,
                duration: 7200
            })
        );
        assert_eq!(
            from_flags(Some("1970-01-02T00:00:00Z"), Some(0.5), 0).unwrap(),
            Some(Rollout {
                start: 86_400,
                duration: 1800
            })
        );
        let e = from_flags(Some("now"), None, 0).unwrap_err().to_string();
        assert!(e.contains("--rollout-hours"), "{e}");
        assert!(from_flags(None, Some(0.0), 0).is_err());
        assert!(from_flags(Some("soon"), Some(1.0), 0).is_err());
    }
}
