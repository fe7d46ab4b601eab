//! The clock's floor. A board without an RTC (a Raspberry Pi) starts its
//! clock in 1970, one with a flat RTC battery wherever the RTC stopped:
//! until the time service reaches an NTP server, TLS certificates are not
//! yet valid and every log line is dated decades back. At its start sysd
//! sets such a clock forward to the latest of
//! - the image's build time, which every file of the verified root carries
//!   as its mtime (`SOURCE_DATE_EPOCH`), sysd's own binary among them;
//! - the time saved on the state partition ([`SAVED`]): each minute until
//!   it first can, then hourly and at shutdown, and only while an NTP client
//!   keeps the clock synchronised (the kernel's `adjtimex` status), so a
//!   wrong clock is never saved.
//!
//! systemd does the same (its build time, and timesyncd's clock file). The
//! time service then steps the clock to the real time.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::agent::tz::civil_from_days;

/// Its mtime is the time saved while the clock was synchronised.
pub const SAVED: &str = "/state/ballast/clock";
/// How often the time is saved once it was (and at shutdown)...
pub const SAVE_EVERY: Duration = Duration::from_secs(3600);
/// ...and how soon it is tried again while the clock is not synchronised.
pub const TRY_AGAIN: Duration = Duration::from_secs(60);

/// When to save next, after a save that did (`true`) or did not happen.
pub fn next_save(saved: bool) -> Duration {
    if saved {
        SAVE_EVERY
    } else {
        TRY_AGAIN
    }
}

/// Where the clock should be set: the latest mark, if the clock is behind it.
pub fn forward_to(now: SystemTime, marks: &[Option<SystemTime>]) -> Option<SystemTime> {
    marks
        .iter()
        .flatten()
        .copied()
        .max()
        .filter(|floor| now < *floor)
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Set the clock forward if it is behind the image's build time (the mtime
/// of `image_file`) or the saved time (`saved`). The console line, if it did.
pub fn set_forward(image_file: &Path, saved: &Path) -> Option<String> {
    let now = SystemTime::now();
    let to = forward_to(now, &[mtime(image_file), mtime(saved)])?;
    let since = to.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = rustix::time::Timespec {
        tv_sec: since.as_secs() as _,
        tv_nsec: since.subsec_nanos() as _,
    };
    Some(
        match rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts) {
            Ok(()) => format!(
                "clock: {} is before this image was built or last synchronised; set forward to {} (no RTC, or a flat RTC battery; the time service sets the real time)",
                utc(now),
                utc(to)
            ),
            Err(e) => format!("clock: cannot set it forward from {} to {}: {e}", utc(now), utc(to)),
        },
    )
}

/// Save the time as `saved`'s mtime if the clock is synchronised. Whether
/// it saved.
pub fn save(saved: &Path) -> std::io::Result<bool> {
    if !crate::timesync::clock::kernel_synchronised() {
        return Ok(false);
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(saved)?;
    file.set_modified(SystemTime::now())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_clock_behind_the_latest_mark_goes_forward_to_it() {
        // A Pi's clock at 1970, the image built in 2026, saved later.
        let built = Some(at(1_796_601_600));
        let saved = Some(at(1_796_688_000));
        assert_eq!(forward_to(at(5), &[built, saved]), saved);
        assert_eq!(forward_to(at(5), &[built, None]), built);
        // Already later: left alone; nothing known: left alone.
        assert_eq!(forward_to(at(1_796_700_000), &[built, saved]), None);
        assert_eq!(forward_to(at(5), &[None, None]), None);
    }

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(at(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(at(1_796_601_600 + 3723)), "2026-12-07 01:02:03 UTC");
    }

    #[test]
    fn marks_are_file_times() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sysd");
        std::fs::write(&f, b"").unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_modified(at(1_700_000_000)).unwrap();
        assert_eq!(mtime(&f), Some(at(1_700_000_000)));
        assert_eq!(mtime(&d.path().join("missing")), None);
    }
}
