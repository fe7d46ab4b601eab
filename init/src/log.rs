//! Stage 1's console log: one line per event, stamped like the kernel's printk
//! (`[    1.234567] ballast-init: message`) so our lines sort in with the
//! kernel's on a serial console.
//!
//! Lines go to the console only. Writing them to `/dev/kmsg` as well would make
//! the kernel echo each one to the same console a second time.
//! The stamp is CLOCK_MONOTONIC. printk uses the scheduler clock, which no
//! user-space clock exposes; the two differ by some tens of milliseconds
//! (measured under QEMU TCG, either sign), so a line can carry a stamp a little
//! out of order with the kernel lines around it. Our own lines stay ordered.
//!
//! The banner (`ballast-init version=V arch=A`) is the one unstamped line: tests
//! and users match it exactly.

use std::fmt;
use std::time::Duration;

use crate::sys::Sys;

/// Every stamped line carries this tag after the time.
pub const TAG: &str = "ballast-init";

/// Formats one stamped line (without the newline).
pub fn stamped(at: Duration, message: fmt::Arguments<'_>) -> String {
    format!(
        "[{:5}.{:06}] {TAG}: {message}",
        at.as_secs(),
        at.subsec_micros()
    )
}

/// Writes one stamped line to the console, at the current monotonic time.
pub fn log(sys: &mut impl Sys, message: fmt::Arguments<'_>) {
    let line = stamped(sys.now(), message);
    sys.write_console(&line);
}

/// `log!(sys, "format", args...)`: a stamped console line.
#[macro_export]
macro_rules! log {
    ($sys:expr, $($arg:tt)*) => {
        $crate::log::log($sys, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_printk() {
        let line = stamped(
            Duration::from_micros(1_234_567),
            format_args!("hello {}", 1),
        );
        assert_eq!(line, "[    1.234567] ballast-init: hello 1");
        let late = stamped(Duration::new(123_456, 7_000), format_args!("x"));
        assert_eq!(late, "[123456.000007] ballast-init: x");
    }
}
