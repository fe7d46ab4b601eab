//! The end of the config: `final_message` on the console, then
//! `power_state`, as cloud-init's final stage.
//!
//! Both wait for the config's `runcmd` (the SSH container runs it beside
//! sshd and renames `runcmd.running` to `runcmd.done` when it ends) at most
//! `power_state.timeout` (cloud-init's default 30 s; without power_state,
//! 600 s), on a thread of their own: the boot never waits for them.
//! `final_message` is said on every boot (cloud-init's default text when the
//! config gives none); `power_state` only on a new instance, after its
//! `condition` (run in the admin userland) exits 0, `delay` and `message`.
//! Reboot and power-off are PID 1's (SIGINT, SIGTERM), as `osctl reboot`.
//!
//! Never powers off without the config asking, never under `--root`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ballast_config::{Cmd, PowerState};

use super::apply::{script, Layout};

/// Where the config came from (`$DATASOURCE`), set by whoever found it.
static DATASOURCE: Mutex<String> = Mutex::new(String::new());

pub fn set_datasource(s: &str) {
    if let Ok(mut d) = DATASOURCE.lock() {
        *d = s.to_string();
    }
}

fn datasource() -> String {
    DATASOURCE.lock().map(|d| d.clone()).unwrap_or_default()
}

/// cloud-init's default final message, with the same variables.
pub const DEFAULT_FINAL: &str =
    "Ballast config finished at $TIMESTAMP. Datasource $DATASOURCE. Up $UPTIME seconds";

/// RFC 2822 time of `secs` since the epoch, UTC (cloud-init's `$TIMESTAMP`).
pub fn rfc2822(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::agent::tz::civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The values of `$UPTIME`, `$TIMESTAMP`, `$VERSION`, `$DATASOURCE`.
pub struct Vars {
    pub uptime: String,
    pub timestamp: String,
    pub version: String,
    pub datasource: String,
}

/// Substitute the variables (`$NAME` and `${NAME}`), as cloud-init's templater.
pub fn substitute(text: &str, v: &Vars) -> String {
    let mut out = text.to_string();
    for (k, val) in [
        ("UPTIME", &v.uptime),
        ("TIMESTAMP", &v.timestamp),
        ("VERSION", &v.version),
        ("DATASOURCE", &v.datasource),
    ] {
        out = out
            .replace(&format!("${{{k}}}"), val)
            .replace(&format!("${k}"), val);
    }
    out
}

fn vars(l: &Layout) -> Vars {
    let uptime = std::fs::read_to_string(l.p("proc/uptime"))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A message is no reason to fail: an unreadable os-release leaves $version empty.
    let version = ballast_device::os_release::read_version(&l.os_release())
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    Vars {
        uptime,
        timestamp: rfc2822(secs),
        version,
        datasource: datasource(),
    }
}

/// `runcmd` of the config is done (or was never queued).
fn runcmd_done(l: &Layout) -> bool {
    !l.runcmd().exists() && !l.runcmd_running().exists()
}

/// When `power_state` acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The signal for PID 1 and what to say.
    Act {
        signal: i32,
        what: &'static str,
    },
    Skip(String),
}

/// The power action of `p`, given whether its condition held.
pub fn decide(p: &PowerState, condition_ok: bool) -> Decision {
    if p.never {
        return Decision::Skip("power_state: condition false".into());
    }
    if !condition_ok {
        return Decision::Skip("power_state: the condition did not exit 0; nothing done".into());
    }
    match p.mode.as_str() {
        "reboot" => Decision::Act {
            signal: libc::SIGINT,
            what: "reboot",
        },
        "poweroff" | "halt" => Decision::Act {
            signal: libc::SIGTERM,
            what: "power off",
        },
        m => Decision::Skip(format!("power_state: mode {m}: reboot, poweroff or halt")),
    }
}

fn condition_holds(l: &Layout, c: &Option<Cmd>) -> bool {
    let Some(c) = c else {
        return true;
    };
    let text = script("power_state condition", std::slice::from_ref(c));
    let argv = vec!["/bin/sh".to_string(), "-c".into(), text];
    match super::sys::run_in_userland(&l.userland(), &argv) {
        Ok(_) => true,
        Err(e) => {
            crate::say(&format!("config: power_state: condition: {e}"));
            false
        }
    }
}

/// Start the final stage (see the module doc) on its own thread.
pub fn finish(l: &Layout, message: Option<&str>, power: Option<&PowerState>, new_instance: bool) {
    if !l.on_device {
        return;
    }
    let l = l.clone();
    let message = message.unwrap_or(DEFAULT_FINAL).to_string();
    let power = power.filter(|_| new_instance).cloned();
    let spawned = std::thread::Builder::new()
        .name("sysd-final".into())
        .spawn(move || {
            let wait = power.as_ref().map_or(600, |p| p.timeout_secs.max(1));
            let deadline = Instant::now() + Duration::from_secs(wait);
            while !runcmd_done(&l) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
            }
            crate::say(&substitute(&message, &vars(&l)));
            let Some(p) = power else {
                return;
            };
            match decide(&p, !p.never && condition_holds(&l, &p.condition)) {
                Decision::Skip(why) => crate::say(&format!("config: {why}")),
                Decision::Act { signal, what } => {
                    if p.delay_secs > 0 {
                        crate::say(&format!(
                            "config: power_state: {what} in {} s",
                            p.delay_secs
                        ));
                        std::thread::sleep(Duration::from_secs(p.delay_secs));
                    }
                    if let Some(m) = &p.message {
                        crate::say(&format!("config: power_state: {m}"));
                    }
                    pid1(signal, what);
                }
            }
        });
    if let Err(e) = spawned {
        crate::say(&format!("config: cannot start the final stage: {e}"));
    }
}

fn pid1(signal: i32, what: &str) {
    // sysd runs as PID 1's child on the device; `--root` never gets here.
    // SAFETY: kill(2) with a plain pid and signal number.
    let rc = unsafe { libc::kill(1, signal) };
    if rc != 0 {
        crate::say(&format!(
            "config: power_state: cannot {what}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ps(mode: &str) -> PowerState {
        PowerState {
            mode: mode.into(),
            delay_secs: 0,
            message: None,
            timeout_secs: 30,
            condition: None,
            never: false,
        }
    }

    #[test]
    fn timestamps_are_rfc2822() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_796_525_045), "Sun, 06 Dec 2026 02:44:05 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn final_message_variables_are_substituted() {
        let v = Vars {
            uptime: "12.5".into(),
            timestamp: "T".into(),
            version: "0.1.0".into(),
            datasource: "/dev/vdc".into(),
        };
        assert_eq!(
            substitute("up $UPTIME at ${TIMESTAMP} v$VERSION from $DATASOURCE", &v),
            "up 12.5 at T v0.1.0 from /dev/vdc"
        );
        assert_eq!(
            substitute(DEFAULT_FINAL, &v),
            "Ballast config finished at T. Datasource /dev/vdc. Up 12.5 seconds"
        );
    }

    #[test]
    fn power_state_acts_only_when_its_condition_holds() {
        assert_eq!(
            decide(&ps("reboot"), true),
            Decision::Act {
                signal: libc::SIGINT,
                what: "reboot"
            }
        );
        assert_eq!(
            decide(&ps("poweroff"), true),
            Decision::Act {
                signal: libc::SIGTERM,
                what: "power off"
            }
        );
        assert!(matches!(decide(&ps("reboot"), false), Decision::Skip(_)));
        let mut never = ps("reboot");
        never.never = true;
        assert!(matches!(decide(&never, true), Decision::Skip(_)));
        assert!(matches!(decide(&ps("suspend"), true), Decision::Skip(_)));
    }
}
