//! The kernel command line (`/proc/cmdline`) as a typed value.
//!
//! Splitting follows the kernel's own `next_arg()` (lib/cmdline.c): words are
//! separated by whitespace outside double quotes, a value may be quoted
//! (`ballast.x="a b"`), and quotes around a value are removed. Every parameter
//! is kept, known or not, in order; lookups take the last occurrence, as the
//! kernel does, and treat `-` and `_` in names as equal (the kernel's
//! `parameq()`). Words after a lone `--` are the arguments meant for init.
//!
//! Every `ballast.*` argument has its typed accessor here (init, sysd and osctl
//! never split the line themselves):
//!
//! | argument                  | accessor                      | read by        |
//! |---------------------------|-------------------------------|----------------|
//! | `ballast.slot=a\|b`       | [`Cmdline::slot`]             | init, sysd     |
//! | `ballast.disk=GUID`       | [`Cmdline::disk`]             | init, sysd     |
//! | `ballast.verity=...`      | [`Cmdline::verity`]           | init           |
//! | `ballast.debug=...`       | [`Cmdline::debug`]            | init           |
//! | `ballast.health_timeout=` | [`Cmdline::health_timeout`]   | sysd           |
//! | `ballast.config=URL`      | [`Cmdline::config_url`]       | sysd           |
//! | `ballast.live=VOLUME`     | [`Cmdline::live`]             | init, sysd     |
//! | `ballast.root=URL`        | [`Cmdline::root_url`]         | init, sysd     |
//! | `ballast.root.ip=...`     | [`Cmdline::root_ip`]          | init           |
//! | `ballast.watchdog=off`    | [`Cmdline::watchdog_off`]     | init           |
//!
//! This module only parses; it never decides what to do about a value.

use std::fmt;
use std::time::Duration;

/// The names of the `ballast.*` arguments.
pub mod keys {
    pub const SLOT: &str = "ballast.slot";
    pub const DISK: &str = "ballast.disk";
    pub const VERITY: &str = "ballast.verity";
    pub const DEBUG: &str = "ballast.debug";
    pub const HEALTH_TIMEOUT: &str = "ballast.health_timeout";
    pub const CONFIG: &str = "ballast.config";
    pub const INSTALL: &str = "ballast.install";
    pub const INSTALL_IMAGE: &str = "ballast.install.image";
    pub const INSTALL_CONFIG: &str = "ballast.install.config";
    pub const LIVE: &str = "ballast.live";
    pub const ROOT: &str = "ballast.root";
    pub const ROOT_IP: &str = "ballast.root.ip";
    pub const WATCHDOG: &str = "ballast.watchdog";
}

/// One `key` or `key=value` word of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    /// `None` for a flag (`quiet`), `Some("")` for `key=`.
    pub value: Option<String>,
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Param>,
    init_args: Vec<String>,
}

/// What `ballast.debug=` asks stage 1 to do at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugAction {
    /// `ballast.debug=poweroff`: power the machine off (tests end with it).
    PowerOff,
    /// `ballast.debug=reboot`: reboot the machine.
    Reboot,
}

impl fmt::Display for DebugAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DebugAction::PowerOff => "poweroff",
            DebugAction::Reboot => "reboot",
        })
    }
}

/// A `ballast.*` value Ballast does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kernel command line: {key}={value:?} is not understood (expected {expected}); ignoring it"
)]
pub struct BadValue {
    pub key: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let norm = |c: u8| if c == b'-' { b'_' } else { c };
            norm(x) == norm(y)
        })
}

impl Cmdline {
    /// Parses the text of `/proc/cmdline`. Never fails: any text is a command line.
    pub fn parse(text: &str) -> Cmdline {
        let mut cmdline = Cmdline::default();
        let mut after_dashes = false;
        for word in split_words(text) {
            if after_dashes {
                cmdline.init_args.push(strip_quotes(&word).to_string());
                continue;
            }
            if word == "--" {
                after_dashes = true;
                continue;
            }
            // A word that starts with a quote is quoted as a whole ("a=b c").
            let word = word
                .strip_prefix('"')
                .map_or(word.as_str(), |rest| rest.strip_suffix('"').unwrap_or(rest));
            let param = match word.split_once('=') {
                Some((key, value)) => Param {
                    key: key.to_string(),
                    value: Some(strip_quotes(value).to_string()),
                },
                None => Param {
                    key: word.to_string(),
                    value: None,
                },
            };
            cmdline.params.push(param);
        }
        cmdline
    }

    /// All parameters, in command-line order, known or not.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Words after `--`, which the kernel hands to init as arguments.
    pub fn init_args(&self) -> &[String] {
        &self.init_args
    }

    /// The value of the last `key=value`; `None` if absent or only a flag.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| name_eq(&p.key, key))
            .and_then(|p| p.value.as_deref())
    }

    /// Whether `key` appears at all, as a flag or with a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|p| name_eq(&p.key, key))
    }

    /// The `ballast.*` parameters, in order.
    pub fn ballast(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.key.starts_with("ballast."))
    }

    /// `ballast.slot=`: the slot the bootloader booted, as written (`a` or `b`
    /// when the entry is right; the slot crate owns what a slot is).
    pub fn slot(&self) -> Option<&str> {
        self.get(keys::SLOT)
    }

    /// `ballast.disk=GUID`: the disk booted from; `None` when absent or empty.
    pub fn disk(&self) -> Option<&str> {
        self.get(keys::DISK).filter(|v| !v.is_empty())
    }

    /// `ballast.verity=`: the root hash and geometry (ballast-verity parses it).
    pub fn verity(&self) -> Option<&str> {
        self.get(keys::VERITY)
    }

    /// `ballast.live=VOLUME`: boot live from the medium whose ISO 9660 volume id
    /// is VOLUME; `None` when absent or empty.
    pub fn live(&self) -> Option<&str> {
        self.get(keys::LIVE).filter(|v| !v.is_empty())
    }

    /// `ballast.config=URL`: where the first-boot config is fetched from.
    pub fn config_url(&self) -> Option<&str> {
        self.get(keys::CONFIG).filter(|v| !v.is_empty())
    }

    /// `ballast.install=DEVICE`: install to DEVICE at boot, then reboot into it.
    pub fn install_device(&self) -> Option<&str> {
        self.get(keys::INSTALL).filter(|v| !v.is_empty())
    }

    /// `ballast.root=URL`: netboot; fetch the root image over HTTP into RAM
    /// (`ballast netboot` writes it into `boot.ipxe`).
    pub fn root_url(&self) -> Option<&str> {
        self.get(keys::ROOT).filter(|v| !v.is_empty())
    }

    /// `ballast.root.ip=ADDR,NETMASK,GATEWAY,MAC`: the address stage 1 gives
    /// the NIC with that MAC to fetch `ballast.root=` (iPXE fills it in).
    pub fn root_ip(&self) -> Option<&str> {
        self.get(keys::ROOT_IP).filter(|v| !v.is_empty())
    }

    /// `ballast.install.image=URL`: the install image to write (its signed
    /// manifest is `URL.manifest`); default: the live medium's.
    pub fn install_image_url(&self) -> Option<&str> {
        self.get(keys::INSTALL_IMAGE).filter(|v| !v.is_empty())
    }

    /// `ballast.install.config=URL`: a `#cloud-config` put on the installed
    /// disk's boot partition as its `user-data`.
    pub fn install_config_url(&self) -> Option<&str> {
        self.get(keys::INSTALL_CONFIG).filter(|v| !v.is_empty())
    }

    /// `ballast.health_timeout=SECS`: how long a slot on probation may take to pass
    /// the health check; a whole number of seconds above 0.
    pub fn health_timeout(&self) -> Result<Option<Duration>, BadValue> {
        let Some(v) = self.get(keys::HEALTH_TIMEOUT) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
            _ => Err(BadValue {
                key: keys::HEALTH_TIMEOUT,
                value: v.to_string(),
                expected: "a number of seconds above 0",
            }),
        }
    }

    /// `ballast.watchdog=off`: init leaves the hardware watchdog alone (a
    /// machine model whose watchdog resets at once, QEMU's raspi3b). `on`,
    /// the default, opens it.
    pub fn watchdog_off(&self) -> Result<bool, BadValue> {
        match self.get(keys::WATCHDOG) {
            None | Some("on") => Ok(false),
            Some("off") => Ok(true),
            Some(other) => Err(BadValue {
                key: keys::WATCHDOG,
                value: other.to_string(),
                expected: "on or off",
            }),
        }
    }

    /// `ballast.debug=`: what to do when stage 1 ends.
    pub fn debug(&self) -> Result<Option<DebugAction>, BadValue> {
        match self.get(keys::DEBUG) {
            None => Ok(None),
            Some("poweroff") => Ok(Some(DebugAction::PowerOff)),
            Some("reboot") => Ok(Some(DebugAction::Reboot)),
            Some(other) => Err(BadValue {
                key: keys::DEBUG,
                value: other.to_string(),
                expected: "one of: poweroff, reboot",
            }),
        }
    }
}

/// Splits on whitespace outside double quotes; quotes stay in the words.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quote = false;
    for c in text.chars() {
        if c.is_whitespace() && !in_quote {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c == '"' {
            in_quote = !in_quote;
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Removes one pair of surrounding quotes, or a leading quote left unclosed.
fn strip_quotes(value: &str) -> &str {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').unwrap_or(rest),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debian_qemu_command_line() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 quiet ballast.debug=poweroff ro\n",
        );
        assert_eq!(c.get("console"), Some("ttyS0,115200"));
        assert!(c.has("quiet"));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.debug(), Ok(Some(DebugAction::PowerOff)));
        assert_eq!(c.params().len(), 5);
        assert_eq!(c.params()[4].key, "ro");
    }

    #[test]
    fn quoted_values_keep_their_spaces() {
        let c = Cmdline::parse(r#"ballast.motd="hello world" x="a=b c" y"#);
        assert_eq!(c.get("ballast.motd"), Some("hello world"));
        assert_eq!(c.get("x"), Some("a=b c"));
        assert!(c.has("y"));
    }

    #[test]
    fn a_whole_quoted_word_is_one_parameter() {
        let c = Cmdline::parse(r#""ballast.note=two words" z=1"#);
        assert_eq!(c.get("ballast.note"), Some("two words"));
        assert_eq!(c.get("z"), Some("1"));
    }

    #[test]
    fn unclosed_quote_runs_to_the_end() {
        let c = Cmdline::parse(r#"a="b c d"#);
        assert_eq!(c.get("a"), Some("b c d"));
    }

    #[test]
    fn watchdog_off_only_when_asked() {
        assert_eq!(Cmdline::parse("quiet").watchdog_off(), Ok(false));
        assert_eq!(
            Cmdline::parse("ballast.watchdog=on").watchdog_off(),
            Ok(false)
        );
        assert_eq!(
            Cmdline::parse("ballast.watchdog=off").watchdog_off(),
            Ok(true)
        );
        assert!(Cmdline::parse("ballast.watchdog=no")
            .watchdog_off()
            .is_err());
    }

    #[test]
    fn last_occurrence_wins_and_dashes_match_underscores() {
        let c = Cmdline::parse("ballast.debug=reboot ballast.debug=poweroff my-opt=1");
        assert_eq!(c.debug(), Ok(Some(DebugAction::PowerOff)));
        assert_eq!(c.get("my_opt"), Some("1"));
    }

    #[test]
    fn unknown_keys_are_kept_and_ballast_keys_listed() {
        let c = Cmdline::parse("foo.bar=1 ballast.future=x ballast.debug=reboot empty=");
        let keys: Vec<&str> = c.ballast().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["ballast.future", "ballast.debug"]);
        assert_eq!(c.get("foo.bar"), Some("1"));
        assert_eq!(c.get("empty"), Some(""));
        assert_eq!(c.debug(), Ok(Some(DebugAction::Reboot)));
    }

    #[test]
    fn an_unknown_debug_value_is_reported_not_guessed() {
        let c = Cmdline::parse("ballast.debug=halt");
        let err = c.debug().unwrap_err();
        assert_eq!(err.value, "halt");
        assert!(err.to_string().contains("poweroff, reboot"), "{err}");
    }

    #[test]
    fn words_after_double_dash_go_to_init() {
        let c = Cmdline::parse("console=ttyS0 -- single \"x y\"");
        assert_eq!(c.init_args(), ["single", "x y"]);
        assert!(!c.has("single"));
    }

    #[test]
    fn typed_ballast_arguments_with_odd_spacing_and_quotes() {
        let c = Cmdline::parse(
            "  console=ttyAMA0\tballast.verity=\"1 2 3\"   ballast.disk=GUID-1\n\
             ballast.slot=b  ballast.health_timeout=20 \"ballast.config=http://h/x y\"\n",
        );
        assert_eq!(c.slot(), Some("b"));
        assert_eq!(c.disk(), Some("GUID-1"));
        assert_eq!(c.verity(), Some("1 2 3"));
        assert_eq!(c.health_timeout(), Ok(Some(Duration::from_secs(20))));
        assert_eq!(c.config_url(), Some("http://h/x y"));
    }

    #[test]
    fn absent_or_bad_ballast_arguments() {
        let c = Cmdline::parse("quiet ballast.disk= ballast.health_timeout=0");
        assert_eq!((c.slot(), c.disk(), c.config_url()), (None, None, None));
        let e = c.health_timeout().unwrap_err();
        assert_eq!(e.value, "0");
        assert!(e.to_string().contains("seconds above 0"), "{e}");
        assert_eq!(Cmdline::parse("x").health_timeout(), Ok(None));
        assert!(Cmdline::parse("ballast.health_timeout=x")
            .health_timeout()
            .is_err());
    }

    #[test]
    fn empty_and_blank_lines() {
        assert_eq!(Cmdline::parse("").params().len(), 0);
        assert_eq!(Cmdline::parse(" \t\n").params().len(), 0);
        assert_eq!(Cmdline::parse("").debug(), Ok(None));
    }
}
