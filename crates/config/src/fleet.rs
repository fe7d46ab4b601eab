//! The fleet-update settings of `ballast.update` (auto, interval, jitter, maintenance
//! window, reboot lock) and the user health checks of `ballast.health`: their types,
//! and the small text formats they are written in (durations `1h30m`, clock times
//! `02:00`, week days `mon`). The schema reads them from a document; sysd's update
//! agent acts on them. Nothing here touches the machine or the clock.

use serde::{Deserialize, Serialize};

/// How often the agent checks the channel when the config does not say.
pub const DEFAULT_CHECK_INTERVAL: u64 = 3600;
/// The etcd key prefix of the reboot semaphore when the config does not say.
pub const DEFAULT_ETCD_PREFIX: &str = "/ballast/reboot-lock/";
/// The FleetLock group when the config does not say (Zincati's default).
pub const DEFAULT_FLEETLOCK_GROUP: &str = "default";

fn default_check_interval() -> u64 {
    DEFAULT_CHECK_INTERVAL
}

/// When reboots are allowed: on `days` (local), from `start` for `length`, in
/// `timezone`. A window may run past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Days the window opens on, 0 = Monday .. 6 = Sunday, sorted, no duplicates;
    /// empty means every day.
    pub days: Vec<u8>,
    /// Minutes after local midnight the window opens.
    pub start_minute: u32,
    /// Seconds the window stays open (1 s .. 7 days).
    pub length: u64,
    /// A zone under /usr/share/zoneinfo (`UTC` when not given).
    pub timezone: String,
}

/// Who must agree before the machine reboots into a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootLock {
    /// An etcd v3 semaphore with `slots` holders, through etcd's HTTP/JSON gateway.
    Etcd {
        endpoints: Vec<String>,
        slots: u32,
        prefix: String,
    },
    /// A FleetLock server (the protocol Zincati speaks).
    Fleetlock { url: String, group: String },
}

/// The `ballast.update` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub channel: Option<String>,
    /// Lowercase hex of each `ballast-ed25519` key.
    pub trusted_keys: Vec<String>,
    /// The agent installs and reboots by itself (false: it only checks).
    #[serde(default)]
    pub auto: bool,
    /// Seconds between channel checks.
    #[serde(default = "default_check_interval")]
    pub check_interval: u64,
    /// Up to this many seconds added at random to each wait, so a fleet does not
    /// ask the channel all at once.
    #[serde(default)]
    pub jitter: u64,
    /// `None`: reboots at any time.
    #[serde(default)]
    pub window: Option<Window>,
    /// `None`: the machine reboots without asking anyone.
    #[serde(default)]
    pub reboot_lock: Option<RebootLock>,
}

impl Update {
    /// Settings with only a channel (and defaults for the rest).
    pub fn channel_only(channel: Option<String>, trusted_keys: Vec<String>) -> Update {
        Update {
            channel,
            trusted_keys,
            auto: false,
            check_interval: DEFAULT_CHECK_INTERVAL,
            jitter: 0,
            window: None,
            reboot_lock: None,
        }
    }
}

/// One user health check of `ballast.health`; all must pass before a new slot is
/// marked good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// `GET url` answers 2xx.
    Http { url: String },
    /// A TCP connect to `host:port` succeeds.
    Tcp { address: String },
    /// The system container `name` is running (healthy, when it has a health check).
    Container { name: String },
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthCheck::Http { url } => write!(f, "http {url}"),
            HealthCheck::Tcp { address } => write!(f, "tcp {address}"),
            HealthCheck::Container { name } => write!(f, "container {name}"),
        }
    }
}

/// `90`, `30s`, `5m`, `1h30m`, `2d`: seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let fix = "(a duration like `30s`, `5m`, `1h30m` or `2d`; a bare number is seconds)";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration {fix}"));
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("`{s}`: unknown unit `{c}` {fix}")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}`: `{c}` has no number before it {fix}"))?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{s}` is too long {fix}"))?;
    }
    if !num.is_empty() {
        return Err(format!("`{s}`: `{num}` has no unit {fix}"));
    }
    Ok(total)
}

/// `HH:MM` (24 h): minutes after midnight.
pub fn parse_clock(s: &str) -> Result<u32, String> {
    let fix = "(a time of day `HH:MM`, 24-hour, e.g. \"02:00\"; quote it in YAML)";
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a time of day {fix}"))?;
    let h: u32 = h
        .parse()
        .ok()
        .filter(|v| *v < 24 && !h.is_empty())
        .ok_or_else(|| format!("`{s}`: hour `{h}` is not 0-23 {fix}"))?;
    let m_val: u32 = m
        .parse()
        .ok()
        .filter(|v| *v < 60 && m.len() == 2)
        .ok_or_else(|| format!("`{s}`: minute `{m}` is not 00-59 {fix}"))?;
    Ok(h * 60 + m_val)
}

/// `mon` .. `sun` (or the full English name): 0 = Monday .. 6 = Sunday.
pub fn parse_weekday(s: &str) -> Result<u8, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let l = s.trim().to_ascii_lowercase();
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    DAYS.iter()
        .position(|d| *d == l)
        .or_else(|| full.iter().position(|d| *d == l))
        .map(|i| i as u8)
        .ok_or_else(|| {
            format!("`{s}` is not a day of the week (mon, tue, wed, thu, fri, sat, sun)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("1x")
            .unwrap_err()
            .contains("unknown unit `x`"));
        assert!(parse_duration("h").unwrap_err().contains("no number"));
        assert!(parse_duration("1h30").unwrap_err().contains("no unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn clock_and_days() {
        assert_eq!(parse_clock("02:00"), Ok(120));
        assert_eq!(parse_clock("23:59"), Ok(1439));
        assert!(parse_clock("24:00").unwrap_err().contains("hour `24`"));
        assert!(parse_clock("2:60").unwrap_err().contains("minute `60`"));
        assert!(parse_clock("0200").is_err());
        assert_eq!(parse_weekday("Wed"), Ok(2));
        assert_eq!(parse_weekday("sunday"), Ok(6));
        assert!(parse_weekday("mo").is_err());
    }
}
