//! Setting the system clock, as systemd-timesyncd does: a large offset is
//! stepped at once (`ADJ_SETOFFSET`, relative, so no time passes between
//! reading and setting); a small one is handed to the kernel's PLL
//! (`ADJ_OFFSET` with `STA_PLL`), which slews it out without time going
//! backwards. Either way the kernel is told the clock is synchronised
//! (`STA_UNSYNC` cleared, errors zeroed), which also lets it copy the time to
//! the RTC every 11 minutes (as chrony's `rtcsync` did).
//! Both need `CAP_SYS_TIME`.

/// Offsets at least this large (seconds) are stepped; smaller ones slewed.
pub const STEP_AT: f64 = 0.4;

fn adjtimex(t: &mut libc::timex) -> std::io::Result<()> {
    // SAFETY: `t` is a valid, initialised `timex` the call reads and writes.
    let rc = unsafe { libc::adjtimex(t) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed() -> libc::timex {
    // SAFETY: `timex` is plain integers (and padding); all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Whole seconds and nanoseconds (0..1e9) of `offset`, rounded to the
/// nanosecond: `ADJ_SETOFFSET` with `ADJ_NANO` wants them so.
pub fn split(offset: f64) -> (i64, i64) {
    let ns = (offset * 1e9).round() as i64;
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Whether an NTP client keeps the clock synchronised: the kernel's
/// `STA_UNSYNC` is clear (this client clears it; the kernel sets it again
/// when no update came for hours). Reading needs no capability.
pub fn kernel_synchronised() -> bool {
    let mut t = zeroed();
    // modes 0 only reads; the call returns the clock state, TIME_ERROR when
    // unsynchronised.
    // SAFETY: `t` is a valid, initialised `timex` the call reads and writes.
    let rc = unsafe { libc::adjtimex(&mut t) };
    rc >= 0 && rc != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0
}

/// Step the clock by `offset` seconds.
// `time_t` and `suseconds_t` are 64-bit here but 32-bit on armv7 (glibc).
#[allow(clippy::useless_conversion)]
pub fn step(offset: f64) -> std::io::Result<()> {
    let (secs, nanos) = split(offset);
    let mut t = zeroed();
    t.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    let range = |_| std::io::Error::other(format!("an offset of {offset} s is out of range"));
    t.time.tv_sec = secs.try_into().map_err(range)?;
    t.time.tv_usec = nanos.try_into().map_err(range)?;
    adjtimex(&mut t)?;
    synchronised(0.0, None)
}

/// Slew out `offset` seconds (the kernel caps it at 0.5 s) with the PLL's
/// time constant for a poll interval of `poll_log2` (2^n seconds).
pub fn slew(offset: f64, poll_log2: u32) -> std::io::Result<()> {
    synchronised(offset, Some(poll_log2))
}

fn synchronised(offset: f64, poll_log2: Option<u32>) -> std::io::Result<()> {
    let mut t = zeroed();
    t.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
    t.status = libc::STA_PLL;
    if let Some(poll) = poll_log2 {
        t.modes |= libc::ADJ_OFFSET | libc::ADJ_NANO | libc::ADJ_TIMECONST;
        t.offset = ((offset.clamp(-0.5, 0.5)) * 1e9) as libc::c_long;
        // As timesyncd: the PLL's constant follows the poll interval.
        t.constant = poll.saturating_sub(4).min(10) as libc::c_long;
    }
    adjtimex(&mut t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_split_into_seconds_and_nonnegative_nanoseconds() {
        assert_eq!(split(259_200.25), (259_200, 250_000_000));
        assert_eq!(split(-259_200.25), (-259_201, 750_000_000));
        assert_eq!(split(-0.000_000_001), (-1, 999_999_999));
        assert_eq!(split(0.0), (0, 0));
    }
}
