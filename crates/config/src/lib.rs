//! First-boot and runtime configuration of a Ballast machine.
//!
//! This crate owns the config format: it reads a `#cloud-config` document
//! (cloud-init's YAML, plus a `ballast:` section) or the same schema written
//! in TOML, and the NoCloud side files (`network-config` v1/v2, `meta-data`);
//! it validates every key with the line it sits on, and turns the result
//! into a [`Plan`] of concrete effects (hostname, groups, users and their
//! keys, SSH host keys, CA certificates, files with decoded bytes, disks to
//! partition, format and mount, commands, NTP, time zone, power state,
//! system containers, network...) that the device applies and stores as
//! JSON, and that [`diff`] compares for `osctl config apply --dry-run`.
//!
//! It never touches the machine: no file is written, no disk looked at, no
//! command run here. Whether a device exists or a zone is in the zone data
//! is the device's check.
//!
//! Behaviour worth knowing:
//! - Format: a first line `#cloud-config` means YAML; anything else is read
//!   as TOML; YAML without the header is refused with the fix (and a
//!   network-config or meta-data given as user-data is named as such).
//! - YAML scalars follow YAML 1.1 as cloud-init (PyYAML) reads them: `yes`
//!   is true and `0644` is octal, so a document means the same here as there.
//! - cloud-init compatibility (`schema/`, one module per section): every
//!   spelling cloud-init accepts is accepted (`ssh-authorized-keys` in users,
//!   `ca-certs`, `remove-defaults`; both spellings of one key is an error);
//!   `users` is read as cloud-init's `ug_util` reads it (`default` merged with
//!   an entry named `ballast` or without a name, a user given twice merged,
//!   the first value of a key winning). Every top-level key of cloud-init's
//!   schema is parsed, or warned about with the reason an immutable OS cannot
//!   honour it (`packages`, `apt`, `snap`...) and what to do instead, or
//!   reported as not supported with its line. Unknown keys are warnings (with
//!   a "did you mean"), not errors: cloud-init documents carry keys for other
//!   platforms.
//! - An invalid document is refused whole; [`refused_hint`] gives the words
//!   that say where to fix it and how to get in meanwhile.
//! - `write_files` outside [`WRITABLE`] (the read-only image) is warned.
//! - Limits: the document is at most 1 MiB, a decoded file 16 MiB; no input
//!   makes it panic (property test, fuzz targets `cloud_config` and
//!   `network_config`).
//!
//! YAML library: `saphyr` (with `saphyr-parser`). serde_yaml is archived and
//! its forks (serde_yml with a soundness advisory, serde_yaml_ng and
//! serde_norway with little activity) are thin; saphyr is the maintained
//! successor of yaml-rust2, pure Rust (builds for musl and armv7), YAML 1.2
//! conformant, and its `MarkedYaml` keeps the span of every key and value,
//! which is what line numbers need. Its loader also bounds alias expansion
//! (billion laughs). We turn off its own scalar resolution and resolve plain
//! scalars by YAML 1.1 rules ourselves (see `node.rs`). TOML uses `toml`'s
//! spanned `DeTable`, so TOML errors have lines too.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod checks;
pub mod fleet;
pub use fleet::{HealthCheck, RebootLock, Update, Window};
mod hint;
mod node;
mod plan;
mod schema;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use hint::refused_hint;
pub use plan::{diff, HostnamePlan, Plan};

/// Largest accepted document.
pub const MAX_DOCUMENT: usize = 1 << 20;
/// Largest decoded `write_files` content.
pub const MAX_FILE: usize = checks::MAX_FILE;
/// The user `default` stands for.
pub const DEFAULT_USER: &str = "ballast";

/// The directories `write_files` can write under, and where each lives on
/// the device; everything else (`/usr`, `/bin`, `/sbin`, `/lib`, `/opt`,
/// `/home`, `/root`, `/tmp`, ...) is the read-only system image. Agrees with
/// sysd's `firstboot::apply::WRITABLE`.
pub const WRITABLE: &[(&str, &str)] = &[
    (
        "/etc/",
        "an overlay on the image's /etc, kept on the state partition",
    ),
    ("/var/", "the state partition"),
    ("/state/", "the state partition"),
    ("/run/", "memory, empty again at the next boot"),
];

/// Whether `path` (absolute, without `..`) is below a [`WRITABLE`] directory.
pub fn writable(path: &str) -> bool {
    // `..` is refused earlier; `.` and `//` cannot lead out of a directory.
    let clean: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((first, rest)) = clean.split_first() else {
        return false;
    };
    !rest.is_empty()
        && !clean.contains(&"..")
        && WRITABLE
            .iter()
            .any(|(dir, _)| dir.trim_matches('/') == *first)
}

/// One problem in a document. Display: `SOURCE:LINE: KEY: MESSAGE (fix)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    /// Where the document came from (a path, a URL, `CIDATA:user-data`).
    pub source: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted path of the key, like `users[1].ssh_authorized_keys[0]`; empty
    /// for the document as a whole.
    pub key: String,
    /// What is wrong, ending with the fix in parentheses.
    pub message: String,
}

/// Same shape as an error; the document is still applied.
pub type Warning = ConfigError;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A valid document and what deserves a look.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub doc: Document,
    pub warnings: Vec<Warning>,
}

/// Everything found in one pass: all errors, all warnings, and the document
/// when there was no error.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub doc: Option<Document>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

/// Parses and validates a document; the first error when it is invalid.
pub fn parse(text: &str, source: &str) -> Result<Parsed, ConfigError> {
    let c = check(text, source);
    match (c.doc, c.errors.into_iter().next()) {
        (Some(doc), None) => Ok(Parsed {
            doc,
            warnings: c.warnings,
        }),
        (_, Some(e)) => Err(e),
        (None, None) => Err(ConfigError {
            source: source.into(),
            line: None,
            key: String::new(),
            message: "invalid document".into(),
        }),
    }
}

/// Parses and validates a document, collecting every error (for
/// `osctl config validate`).
pub fn check(text: &str, source: &str) -> Checked {
    schema::check(text, source)
}

/// A command of `runcmd`/`bootcmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    /// A string: run by `sh -c`.
    Shell(String),
    /// A list: run as argv, no shell.
    Argv(Vec<String>),
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cmd::Shell(s) => write!(f, "sh -c {s:?}"),
            Cmd::Argv(a) => write!(f, "{}", a.join(" ")),
        }
    }
}

/// An entry of `users`.
// A Vec of a few entries: boxing `User` would change nothing but the reading.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSpec {
    /// `- default`: the user `ballast`, in groups sudo and docker,
    /// password-less sudo, the top-level `ssh_authorized_keys`.
    Default,
    User(User),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub gecos: Option<String>,
    pub uid: Option<u32>,
    pub groups: Vec<String>,
    /// sudoers rules (`ALL=(ALL) NOPASSWD:ALL`); empty: no sudo.
    pub sudo: Vec<String>,
    pub shell: Option<String>,
    /// Always true in effect: Ballast never enables password login.
    pub lock_passwd: bool,
    pub ssh_authorized_keys: Vec<String>,
    /// `primary_group`: the login group (created when missing). `None`: a
    /// group named like the user, unless `no_user_group` (then `users`).
    #[serde(default)]
    pub primary_group: Option<String>,
    /// `homedir`; `None`: `/home/NAME` (the default user: `/state/home/ballast`).
    #[serde(default)]
    pub homedir: Option<String>,
    /// `system: true`: a system account (uid below 1000, no home unless
    /// `homedir` is given), as `useradd --system`.
    #[serde(default)]
    pub system: bool,
    /// `no_create_home`: the home directory is not created.
    #[serde(default)]
    pub no_create_home: bool,
    /// `no_user_group`: no group named like the user.
    #[serde(default)]
    pub no_user_group: bool,
    /// `expiredate` (`YYYY-MM-DD`): the account expires then (shadow field 8).
    #[serde(default)]
    pub expiredate: Option<String>,
    /// `inactive` (days): password inactivity period (shadow field 7).
    #[serde(default)]
    pub inactive: Option<u32>,
}

impl User {
    /// A user with only a name: locked password, no groups, no keys.
    pub fn named(name: &str) -> User {
        User {
            name: name.to_string(),
            gecos: None,
            uid: None,
            groups: Vec::new(),
            sudo: Vec::new(),
            shell: None,
            lock_passwd: true,
            ssh_authorized_keys: Vec::new(),
            primary_group: None,
            homedir: None,
            system: false,
            no_create_home: false,
            no_user_group: false,
            expiredate: None,
            inactive: None,
        }
    }
}

/// A top-level `groups:` entry: a group and the users added to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
}

/// A host key from `ssh_keys` (`ed25519_private` / `ed25519_public`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// `rsa`, `ecdsa` or `ed25519`.
    pub kind: String,
    /// The private key (PEM / OpenSSH format).
    pub private: String,
    /// The public key line, when given.
    pub public: Option<String>,
    /// A host certificate (`ed25519_certificate`), when given.
    pub certificate: Option<String>,
}

/// `ca_certs` (also spelled `ca-certs`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaCerts {
    /// Drop the image's CA bundle; only `trusted` is trusted.
    pub remove_defaults: bool,
    /// PEM certificates added to the trust store.
    pub trusted: Vec<String>,
}

/// A `disk_setup` entry: partition a whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSetup {
    /// `/dev/vdb`, or an alias cloud-init knows (`ephemeral0` is refused).
    pub device: String,
    /// `gpt` or `mbr`.
    pub table_type: String,
    /// Partition sizes in percent of the disk, in order; `[100]` for
    /// `layout: true`; empty for `layout: false` (no partitions).
    pub layout: Vec<u8>,
    /// Partition even when the disk has a table or a filesystem already
    /// (default false: a disk that is not blank is left alone).
    pub overwrite: bool,
}

/// An `fs_setup` entry: make a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSetup {
    pub label: Option<String>,
    /// `ext4`, `ext3`, `ext2`, `vfat`, `swap`...
    pub filesystem: String,
    /// `/dev/vdb` or `/dev/vdb1`.
    pub device: String,
    /// `partition`: `auto`, `any`, `none` or a number (`1`); `None`: as
    /// `device` says.
    pub partition: Option<String>,
    /// Format even when a filesystem is there (default false: never
    /// reformat).
    pub overwrite: bool,
    /// Extra arguments for mkfs.
    pub extra_opts: Vec<String>,
}

/// A `mounts` entry, fstab fields, with cloud-init's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// What to mount: `/dev/vdb1`, `LABEL=data`, `UUID=...`, or a short
    /// name cloud-init expands (`vdb` → `/dev/vdb`).
    pub spec: String,
    /// Where (`/var/lib/docker`); `none` for swap.
    pub dir: String,
    pub fstype: String,
    pub options: String,
    pub dump: String,
    pub pass: String,
}

/// `power_state`: what to do once the config has been applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerState {
    /// `reboot`, `poweroff` or `halt`.
    pub mode: String,
    /// Seconds to wait first (`now` is 0, `+5` is 5 minutes, as shutdown(8)).
    pub delay_secs: u64,
    pub message: Option<String>,
    /// Wait at most this long for `runcmd` to finish (seconds; cloud-init's
    /// default is 30).
    pub timeout_secs: u64,
    /// `condition`: true (default), false, or a command that must exit 0.
    pub condition: Option<Cmd>,
    /// `condition: false` given.
    pub never: bool,
}

/// An entry of `write_files`, content already decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    #[serde(with = "plan::b64_bytes")]
    pub content: Vec<u8>,
    pub owner: String,
    pub group: Option<String>,
    /// Permission bits (`0o644` unless given).
    pub mode: u32,
    pub append: bool,
    /// Written after users exist (cloud-init's final stage).
    pub defer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ntp {
    pub enabled: bool,
    pub servers: Vec<String>,
    pub pools: Vec<String>,
}

/// The validated document, close to what was written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Document {
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub preserve_hostname: bool,
    /// `None`: not given, which means `[default]`.
    pub users: Option<Vec<UserSpec>>,
    /// For the default user.
    pub ssh_authorized_keys: Vec<String>,
    /// The default user as the document configures it (a `users` entry
    /// named like it or without a name, beside `- default`; cloud-init's
    /// older `user:`, which may also rename it), already laid over the
    /// built-in one; `None`: the built-in default user.
    #[serde(default)]
    pub default_user: Option<User>,
    pub write_files: Vec<WriteFile>,
    pub bootcmd: Vec<Cmd>,
    pub runcmd: Vec<Cmd>,
    pub ntp: Option<Ntp>,
    pub timezone: Option<String>,
    pub ssh_pwauth: Option<bool>,
    pub disable_root: bool,
    /// Top-level `groups:`.
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub ssh_keys: Vec<HostKey>,
    /// `ssh_deletekeys` (default true, as cloud-init): a new instance gets
    /// new host keys unless `ssh_keys` gives them.
    #[serde(default)]
    pub ssh_deletekeys: bool,
    #[serde(default)]
    pub ca_certs: Option<CaCerts>,
    #[serde(default)]
    pub disk_setup: Vec<DiskSetup>,
    #[serde(default)]
    pub fs_setup: Vec<FsSetup>,
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
    #[serde(default)]
    pub power_state: Option<PowerState>,
    #[serde(default)]
    pub final_message: Option<String>,
    pub ballast: Ballast,
}

/// The `ballast:` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ballast {
    pub system: Vec<SystemContainer>,
    pub engine: Option<Engine>,
    pub update: Option<Update>,
    pub network: Option<Network>,
    /// name → value; sorted, so YAML and TOML give the same plan.
    pub sysctl: BTreeMap<String, String>,
    pub modules: Vec<String>,
    /// User health checks (`ballast.health`) that gate an update's commit.
    #[serde(default)]
    pub health: Vec<HealthCheck>,
}

/// Where a system container's root comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerSource {
    /// An OCI image archive (path).
    Image(String),
    /// An OCI runtime bundle directory (path).
    Bundle(String),
    /// Neither given: `command` runs on the image's admin userland
    /// (`/usr/lib/ballast/userland`, read-only).
    Userland,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: String,
    pub destination: String,
    pub options: Vec<String>,
}

/// An extra system container (`ballast.system[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemContainer {
    pub name: String,
    pub source: ContainerSource,
    pub command: Vec<String>,
    /// `K=V`, in the order written (maps: sorted by name).
    pub env: Vec<String>,
    pub mounts: Vec<Mount>,
    pub host_network: bool,
    pub restart: Restart,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    pub enabled: bool,
    pub data_root: Option<String>,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// v2: the id under `ethernets:`; v1: `name`. The kernel's name of the
    /// interface when `matches` is `None`.
    pub name: String,
    /// Which interface this is, when not found by `name` (v2 `match:`, v1
    /// `mac_address`).
    #[serde(default)]
    pub matches: Option<InterfaceMatch>,
    /// Rename the matched interface to this (v2 `set-name`; v1 `name` with
    /// `mac_address`).
    #[serde(default)]
    pub set_name: Option<String>,
    /// Given, or true when no address is.
    pub dhcp: bool,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    pub mtu: Option<u32>,
    /// Wi-Fi networks this interface joins (netplan `wifis:` with
    /// `access-points`), in the order written; empty for Ethernet.
    #[serde(default)]
    pub access_points: Vec<AccessPoint>,
}

/// A Wi-Fi network to join (netplan `access-points: {SSID: {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPoint {
    /// 1 to 32 bytes.
    pub ssid: String,
    pub key_management: KeyManagement,
    /// A WPA passphrase (8 to 63 printable ASCII characters) or the 256-bit
    /// PSK as 64 hex digits; `None` for an open network.
    pub password: Option<String>,
    /// The network does not broadcast its SSID: probe for it by name.
    pub hidden: bool,
    /// Only this access point (lowercase MAC), when given.
    pub bssid: Option<String>,
}

impl AccessPoint {
    /// The password is the 256-bit PSK itself (64 hex digits), not a passphrase.
    pub fn password_is_psk(&self) -> bool {
        self.password.as_deref().is_some_and(schema::is_hex_psk)
    }
}

/// How a Wi-Fi network authenticates (netplan `auth.key-management`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyManagement {
    /// Open network, no password.
    None,
    /// WPA2 personal (and WPA3 transition networks).
    Psk,
    /// WPA3 personal only.
    Sae,
}

/// How an interface is found, as netplan's `match:`: every field given must
/// match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterfaceMatch {
    /// A kernel name, shell glob allowed (`en*`).
    pub name: Option<String>,
    /// A MAC address, lowercase `aa:bb:cc:dd:ee:ff`.
    pub macaddress: Option<String>,
    /// A kernel driver name, glob allowed (`virtio_net`).
    pub driver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// A CIDR or `default`.
    pub to: String,
    pub via: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub dns: Dns,
    pub routes: Vec<Route>,
}

/// NoCloud `meta-data`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaData {
    /// Changes when the machine is a new instance: `runcmd` runs once per id.
    pub instance_id: Option<String>,
    pub local_hostname: Option<String>,
}

/// A NoCloud side file (`network-config`, `meta-data`) checked: every
/// error and warning, and the value when there was no error.
#[derive(Debug, Clone, PartialEq)]
pub struct SideChecked<T> {
    pub value: Option<T>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl<T> SideChecked<T> {
    /// The value, or the first error.
    pub fn into_result(self) -> Result<T, ConfigError> {
        match (self.value, self.errors.into_iter().next()) {
            (Some(v), None) => Ok(v),
            (_, Some(e)) => Err(e),
            (None, None) => Err(ConfigError {
                source: String::new(),
                line: None,
                key: String::new(),
                message: "invalid document".into(),
            }),
        }
    }
}

/// Parses NoCloud `network-config` (version 2, netplan style, or version 1)
/// into the settings `ballast.network` gives; errors name the line and key.
pub fn parse_network_config(text: &str, source: &str) -> Result<Network, ConfigError> {
    check_network_config(text, source).into_result()
}

/// [`parse_network_config`] with every error and warning (unsupported keys
/// and types), for `osctl config validate --network-config`.
pub fn check_network_config(text: &str, source: &str) -> SideChecked<Network> {
    schema::network_config(text, source)
}

/// Parses NoCloud `meta-data` (YAML, or `key: value` lines).
pub fn parse_meta_data(text: &str, source: &str) -> Result<MetaData, ConfigError> {
    check_meta_data(text, source).into_result()
}

/// [`parse_meta_data`] with every error and warning.
pub fn check_meta_data(text: &str, source: &str) -> SideChecked<MetaData> {
    schema::meta_data(text, source)
}
