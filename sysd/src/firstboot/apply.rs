//! Applying a [`Plan`] to the machine. sysd is root in the host's namespaces;
//! everything here is file work under a root directory (`/` on the device, a
//! temporary tree in tests) plus `sethostname`, so it runs in unit tests.
//!
//! What goes where:
//! - host name: `sethostname`, `/etc/hostname`, `/etc/hosts` (the host's
//!   `/etc` is an overlay on the state partition), and copies for the admin
//!   environment under `/state/ballast/config/users/` (`hostname`, `hosts`);
//! - users: merged account files, sudoers rules, `allow_users` and `keys/NAME`
//!   under `/state/ballast/config/users/`, merged by the SSH container's start
//!   script when it starts (see `system/ssh/files/usr/lib/ballast/ssh/start`);
//! - `write_files`: on the host, only under /etc, /var, /state or /run; a
//!   file under /etc also into the admin environment's /etc tree (`etc`);
//! - `timezone`, `ca_certs`: `etc`; `ssh_keys`, `ssh_deletekeys`: `hostkeys`;
//!   `disk_setup`, `fs_setup`: `disks` (per instance); `mounts`: `mounts`
//!   (every boot); `final_message`, `power_state`: `power`;
//! - `bootcmd`: `/run/ballast/config/bootcmd.sh`, run by the SSH container's
//!   start script once per boot; `runcmd`: `/state/ballast/config/runcmd.sh`,
//!   which that script takes (renames) before it runs it, so it runs once —
//!   both run in the admin environment, after the network is up, as root;
//! - `ntp`: `/run/ballast/config/time/sources` for the time container;
//! - `sysctl`: `/proc/sys`; `ballast.system`: OCI bundles under
//!   `/state/ballast/config/system/NAME/` (sysd loads them with the image's).
//!
//! Unsupported settings (kernel modules) are warnings, never failures.

use std::fmt::Display;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ballast_config::{Cmd, ContainerSource, Plan, Restart, SystemContainer, WriteFile};
use ballast_device::atomic::{write_atomic_mode, AtomicError};
use ballast_device::paths;
use serde_json::json;

use super::{disks, etc, hostkeys, mounts, power, users};
use crate::timesync::sources::Source;

/// Directories `write_files` may write under (the rest of the host is the
/// read-only image).
pub const WRITABLE: [&str; 4] = ["/etc/", "/var/", "/state/", "/run/"];

/// Paths of first-boot config, under one root. The ones the device contract
/// owns come from [`paths`]; the rest are first-boot's own files beside them.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// Set the kernel's host name (false under `--root`).
    pub on_device: bool,
}

/// First-boot's files on tmpfs, written again at every boot (not in the contract:
/// only first-boot and the system containers that read them know them).
const RUN_DIR: &str = "/run/ballast";
/// The admin userland the SSH container runs (and first-boot's commands with it).
pub const USERLAND: &str = "/usr/lib/ballast/userland";

impl Layout {
    /// `path` (absolute on the device) under the root.
    pub fn p(&self, path: &str) -> PathBuf {
        paths::under(&self.root, path)
    }
    /// A file in the applied config's directory ([`paths::CONFIG_DIR`]).
    fn config(&self, name: &str) -> PathBuf {
        self.p(paths::CONFIG_DIR).join(name)
    }
    /// A file in first-boot's tmpfs directory.
    fn run(&self, name: &str) -> PathBuf {
        self.p(RUN_DIR).join(name)
    }
    pub fn applied(&self) -> PathBuf {
        self.config("applied.json")
    }
    pub fn instance_id(&self) -> PathBuf {
        self.config("instance-id")
    }
    pub fn system(&self) -> PathBuf {
        self.p(paths::APPLIED_SYSTEM)
    }
    /// The image's own system containers.
    pub fn image_system(&self) -> PathBuf {
        self.p(paths::SYSTEM_DIR)
    }
    pub fn users(&self) -> PathBuf {
        self.config("users")
    }
    /// The admin environment's `/etc` additions (see `etc`).
    pub fn etc_tree(&self) -> PathBuf {
        self.config("etc")
    }
    pub fn channel(&self) -> PathBuf {
        self.p(paths::CHANNEL_FILE)
    }
    pub fn update_keys(&self) -> PathBuf {
        self.p(paths::CONFIG_KEYS_DIR)
    }
    /// The Docker engine settings its start script reads (tmpfs, as below).
    pub fn engine_conf(&self) -> PathBuf {
        self.run("engine.conf")
    }
    /// The static network settings the network service applies (on tmpfs:
    /// written again from the config at every boot).
    pub fn network_conf(&self) -> PathBuf {
        self.run("network.conf")
    }
    /// The CA bundle the Docker engine container reads.
    pub fn engine_ca_bundle(&self) -> PathBuf {
        self.run("ca-certificates.crt")
    }
    pub fn runcmd(&self) -> PathBuf {
        self.config("runcmd.sh")
    }
    /// runcmd while the SSH container's start script runs it.
    pub fn runcmd_running(&self) -> PathBuf {
        self.config("runcmd.running")
    }
    pub fn bootcmd(&self) -> PathBuf {
        self.run("config/bootcmd.sh")
    }
    /// The time container's sources (`ballast_sysd::timesync::sources`).
    pub fn time_sources(&self) -> PathBuf {
        self.run("config/time/sources")
    }
    pub fn userland(&self) -> PathBuf {
        self.p(USERLAND)
    }
    pub fn cidata_mount(&self) -> PathBuf {
        self.run("cidata")
    }
    pub fn boot(&self) -> PathBuf {
        self.p(paths::BOOT)
    }
    pub fn cmdline(&self) -> PathBuf {
        self.p(paths::CMDLINE)
    }
    pub fn hostname(&self) -> PathBuf {
        self.p(paths::HOSTNAME)
    }
    pub fn os_release(&self) -> PathBuf {
        self.p(paths::OS_RELEASE)
    }
}

/// What applying did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// What was done that the console should show (disks, mounts, keys).
    pub notes: Vec<String>,
    /// The static network settings changed: a running network service must restart.
    pub network_changed: bool,
    /// The engine settings changed: a running docker service must restart.
    pub engine_changed: bool,
}

/// Make a service's settings file hold `text` (none: no file); whether it
/// changed, so that a running service restarts.
fn settings_file(path: &Path, text: Option<String>, errors: &mut Vec<String>) -> bool {
    settings_file_mode(path, text, 0o644, errors)
}

/// [`settings_file`] with the file's mode (0600 for one holding a secret).
fn settings_file_mode(
    path: &Path,
    text: Option<String>,
    mode: u32,
    errors: &mut Vec<String>,
) -> bool {
    if std::fs::read_to_string(path).ok() == text {
        return false;
    }
    match &text {
        Some(t) => {
            if let Err(e) = write_atomic_mode(path, t.as_bytes(), mode) {
                errors.push(e.to_string());
            }
        }
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
    true
}

/// The Docker engine's settings file: one dockerd option per line (see
/// system/docker/files/usr/lib/ballast/docker/start). A data root outside
/// `/var` (the only host directory the engine container has) is left out
/// with a warning.
pub fn engine_conf(e: &ballast_config::Engine, warnings: &mut Vec<String>) -> String {
    let mut out = String::from("# Written by sysd from the first-boot config (ballast.engine).\n");
    if let Some(d) = &e.data_root {
        if d.starts_with("/var/") && !d.contains("/../") {
            out.push_str(&format!("data-root {d}\n"));
        } else {
            warnings.push(format!(
                "config: ballast.engine.data_root {d}: not applied: it must be below /var (the state partition), e.g. /var/lib/docker-data"
            ));
        }
    }
    for m in &e.registry_mirrors {
        out.push_str(&format!("registry-mirror {m}\n"));
    }
    for r in &e.insecure_registries {
        out.push_str(&format!("insecure-registry {r}\n"));
    }
    out
}

/// The network service's settings file: one setting per line (see
/// system/network/files/usr/lib/ballast/network/up).
pub fn network_conf(n: &ballast_config::Network) -> String {
    let mut out = String::from(
        "# Written by sysd from the first-boot config (ballast.network or network-config).\n",
    );
    // Interfaces found by MAC, driver or name glob (and renamed) first: the
    // lines below name them by their config id, which `up` maps to the
    // kernel's name.
    for i in &n.interfaces {
        if i.matches.is_none() && i.set_name.is_none() {
            continue;
        }
        let m = i.matches.clone().unwrap_or_default();
        let word = |v: Option<&String>| v.map_or("-".to_string(), |x| x.replace(' ', ""));
        let glob = match (&m.name, &m.macaddress, &m.driver) {
            (None, None, None) => Some(i.name.clone()),
            _ => m.name.clone(),
        };
        out.push_str(&format!(
            "match {} {} {} {} {}\n",
            i.name,
            word(m.macaddress.as_ref()),
            word(m.driver.as_ref()),
            word(glob.as_ref()),
            word(i.set_name.as_ref())
        ));
    }
    for i in &n.interfaces {
        let mode = if i.dhcp { "dhcp" } else { "static" };
        let mtu = i.mtu.map_or("-".to_string(), |m| m.to_string());
        out.push_str(&format!("iface {} {mode} {mtu}\n", i.name));
        for a in &i.addresses {
            out.push_str(&format!("addr {} {a}\n", i.name));
        }
        if let Some(g) = &i.gateway {
            out.push_str(&format!("gw {} {g}\n", i.name));
        }
        if !i.access_points.is_empty() {
            out.push_str(&format!(
                "wifi {} {RUN_DIR}/{}\n",
                i.name,
                wifi_file(&i.name)
            ));
        }
    }
    for r in &n.routes {
        out.push_str(&format!("route {} {}\n", r.to, r.via));
    }
    for d in &n.dns.nameservers {
        out.push_str(&format!("dns {d}\n"));
    }
    for s in &n.dns.search {
        out.push_str(&format!("search {s}\n"));
    }
    out
}

/// A file first-boot no longer wants could not be removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot remove {}: {source}", path.display())]
pub struct RemoveError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn remove(path: &Path) -> Result<(), RemoveError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RemoveError {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Shell-quote one word.
pub fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A script running `cmds` the way cloud-init does: a string through the
/// shell, a list as argv (quoted, no shell expansion).
pub fn script(what: &str, cmds: &[Cmd]) -> String {
    let mut s = format!("#!/bin/sh\n# {what}, written by sysd from the first-boot config.\n");
    for c in cmds {
        match c {
            Cmd::Shell(text) => {
                s.push_str(text);
                s.push('\n');
            }
            Cmd::Argv(argv) => {
                let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                s.push_str(&words.join(" "));
                s.push('\n');
            }
        }
    }
    s
}

fn hosts_file(hostname: &str, fqdn: Option<&str>) -> String {
    let names = match fqdn {
        Some(f) if f != hostname => format!("{f} {hostname}"),
        _ => hostname.to_string(),
    };
    format!("127.0.0.1 localhost\n127.0.1.1 {names}\n::1 localhost ip6-localhost ip6-loopback\n")
}

/// Record a failed write or removal in the report and go on.
fn err<E: Display>(r: &mut Report, res: Result<(), E>) {
    if let Err(e) = res {
        r.errors.push(e.to_string());
    }
}

/// Apply `plan`. `per_instance`: also write_files and queue runcmd (a new
/// instance, or `osctl config apply` of changed ones). Everything else is
/// re-materialised on every boot.
///
/// One function per step, in the order below; a failed step is recorded in the
/// report and the next one runs.
pub fn apply(l: &Layout, plan: &Plan, per_instance: bool) -> Report {
    let mut report = Report::default();
    let r = &mut report;
    host_name(l, plan, r);
    let accounts = users_and_groups(l, plan, r);
    sysctl(l, plan, r);
    modules(plan, r);
    time_zone_and_ca_bundle(l, plan, r);
    let new_instance = is_new_instance(l, plan, per_instance);
    host_keys(l, plan, new_instance, r);
    disks_and_mounts(l, plan, new_instance, r);
    update_settings(l, plan, r);
    engine(l, plan, r);
    network(l, plan, r);
    ntp(l, plan, r);
    system_containers(l, plan, r);
    bootcmd(l, plan, r);
    power::finish(
        l,
        plan.final_message.as_deref(),
        plan.power_state.as_ref(),
        new_instance,
    );
    if per_instance {
        write_files(l, &plan.files, &accounts, r);
        runcmd(l, plan, r);
    }
    report
}

/// The host name: the kernel's, `/etc/hostname`, `/etc/hosts` (the host's `/etc`
/// is an overlay on the state partition), and the admin environment's copies.
fn host_name(l: &Layout, plan: &Plan, r: &mut Report) {
    let users_dir = l.users();
    if let Some(h) = &plan.hostname {
        if l.on_device {
            err(r, super::sys::sethostname(&h.hostname));
        }
        let hosts = hosts_file(&h.hostname, h.fqdn.as_deref());
        let line = format!("{}\n", h.hostname);
        err(
            r,
            write_atomic_mode(&l.p("etc/hostname"), line.as_bytes(), 0o644),
        );
        err(
            r,
            write_atomic_mode(&l.p("etc/hosts"), hosts.as_bytes(), 0o644),
        );
        err(
            r,
            write_atomic_mode(&users_dir.join("hostname"), line.as_bytes(), 0o644),
        );
        err(
            r,
            write_atomic_mode(&users_dir.join("hosts"), hosts.as_bytes(), 0o644),
        );
    } else {
        for f in ["hostname", "hosts"] {
            err(r, remove(&users_dir.join(f)));
        }
    }
}

/// Users and groups: merged account files, sudoers, `allow_users`, homes and
/// authorized keys for the admin environment. Returns the merged accounts
/// (write_files looks owners up in them).
fn users_and_groups(l: &Layout, plan: &Plan, r: &mut Report) -> users::Accounts {
    let users_dir = l.users();
    let base =
        |f: &str| std::fs::read_to_string(l.userland().join("etc").join(f)).unwrap_or_default();
    let (acc, warnings) = users::merge(
        &base("passwd"),
        &base("group"),
        &base("shadow"),
        &plan.users,
        &plan.groups,
    );
    r.warnings
        .extend(warnings.into_iter().map(|w| format!("config: {w}")));
    err(
        r,
        write_atomic_mode(&users_dir.join("passwd"), acc.passwd.as_bytes(), 0o644),
    );
    err(
        r,
        write_atomic_mode(&users_dir.join("group"), acc.group.as_bytes(), 0o644),
    );
    err(
        r,
        write_atomic_mode(&users_dir.join("shadow"), acc.shadow.as_bytes(), 0o600),
    );
    err(
        r,
        write_atomic_mode(&users_dir.join("sudoers"), acc.sudoers.as_bytes(), 0o440),
    );
    let allow = format!("{}\n", acc.allow.join(" "));
    err(
        r,
        write_atomic_mode(&users_dir.join("allow_users"), allow.as_bytes(), 0o644),
    );
    // `NAME HOME create|keep` lines: which homes the SSH container makes.
    let homes: String = acc
        .homes
        .iter()
        .map(|(n, c)| format!("{n} {}\n", if *c { "create" } else { "keep" }))
        .collect();
    err(
        r,
        write_atomic_mode(&users_dir.join("homes"), homes.as_bytes(), 0o644),
    );
    let keys_dir = users_dir.join("keys");
    if let Ok(rd) = std::fs::read_dir(&keys_dir) {
        for e in rd.flatten() {
            if !acc.keys.contains_key(&*e.file_name().to_string_lossy()) {
                err(r, remove(&e.path()));
            }
        }
    }
    for (name, keys) in &acc.keys {
        let mut text = keys.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        err(
            r,
            write_atomic_mode(&keys_dir.join(name), text.as_bytes(), 0o644),
        );
    }

    acc
}

/// sysctl settings, into `/proc/sys` (a failure is a warning).
fn sysctl(l: &Layout, plan: &Plan, r: &mut Report) {
    for (k, v) in &plan.sysctl {
        let p = l.p("proc/sys").join(k.replace('.', "/"));
        if let Err(e) = std::fs::write(&p, format!("{v}\n")) {
            r.warnings.push(format!(
                "config: sysctl {k} = {v}: cannot write {}: {e}",
                p.display()
            ));
        }
    }
}

/// Kernel modules: not loaded by this version, a warning each.
fn modules(plan: &Plan, r: &mut Report) {
    for m in &plan.modules {
        r.warnings.push(format!(
            "config: ballast.modules: {m}: not loaded (this version loads only the modules the image lists in kernel-configs/initramfs-modules.toml)"
        ));
    }
}

/// Time zone and CA bundle: the admin environment's /etc (see `etc`).
fn time_zone_and_ca_bundle(l: &Layout, plan: &Plan, r: &mut Report) {
    etc::timezone(l, plan.timezone.as_deref(), &mut r.errors);
    etc::ca_certs(l, plan.ca_certs.as_ref(), &mut r.errors);
}

/// A new instance: the instance id differs from the recorded one
/// (`osctl config apply` keeps it, so it never deletes keys or formats).
fn is_new_instance(l: &Layout, plan: &Plan, per_instance: bool) -> bool {
    let recorded = std::fs::read_to_string(l.instance_id()).unwrap_or_default();
    per_instance && plan.instance_id.as_deref().unwrap_or("") != recorded.trim()
}

/// Host keys, before the SSH container starts.
fn host_keys(l: &Layout, plan: &Plan, new_instance: bool, r: &mut Report) {
    if new_instance && plan.ssh_deletekeys {
        for p in hostkeys::delete_old(l, &plan.ssh_host_keys, &mut r.errors) {
            r.notes
                .push(format!("config: ssh_deletekeys: removed {}", p.display()));
        }
    }
    hostkeys::install(l, &plan.ssh_host_keys, &mut r.errors);
}

/// Data disks: partition and format once per instance (only what is blank),
/// mount every boot, before the services start.
fn disks_and_mounts(l: &Layout, plan: &Plan, new_instance: bool, r: &mut Report) {
    if l.on_device {
        if new_instance {
            let (notes, errors) = disks::apply(l, &plan.disk_setup, &plan.fs_setup);
            r.notes.extend(notes);
            r.errors.extend(errors);
        }
        let (notes, errors) = mounts::apply(l, &plan.mounts);
        r.notes.extend(notes);
        r.errors.extend(errors);
    }
}

/// Update channel and extra trusted keys (osctl upgrade --channel, sysd's
/// signature check read them from here besides the image's own keys).
fn update_settings(l: &Layout, plan: &Plan, r: &mut Report) {
    let chan = l.channel();
    let keys = l.update_keys();
    let _ = std::fs::remove_dir_all(&keys);
    match plan.update.as_ref().and_then(|u| u.channel.as_ref()) {
        Some(c) => err(
            r,
            write_atomic_mode(&chan, format!("{c}\n").as_bytes(), 0o644),
        ),
        None => {
            let _ = std::fs::remove_file(&chan);
        }
    }
    if let Some(u) = &plan.update {
        for hex_key in &u.trusted_keys {
            let text = format!("ballast-ed25519 {hex_key} from the config\n");
            match ballast_bundle::keys::parse_public(&text, "ballast.update.trusted_keys") {
                Ok(k) => err(
                    r,
                    write_atomic_mode(&keys.join(format!("{}.pub", k.id)), text.as_bytes(), 0o644),
                ),
                Err(e) => r.errors.push(format!("config: {e}")),
            }
        }
    }
}

/// Docker engine settings (system/docker/.../start reads them).
fn engine(l: &Layout, plan: &Plan, r: &mut Report) {
    let text = plan
        .engine
        .as_ref()
        .map(|e| engine_conf(e, &mut r.warnings));
    if let Some(e) = &plan.engine {
        if !l.image_system().join("docker").is_dir() {
            r.warnings.push(
                "config: ballast.engine: this image has no Docker engine (images/*.toml `engine = \"docker\"`): the settings are recorded, not applied".into(),
            );
        }
        if !e.enabled {
            r.warnings.push(
                "config: ballast.engine.enabled: false is not applied: the engine is chosen when the image is built (images/minimal.toml has none)".into(),
            );
        }
    }
    r.engine_changed = settings_file(&l.engine_conf(), text, &mut r.errors);
}

/// Static network for the network service (system/network/.../up reads it),
/// and a wpa_supplicant config for each Wi-Fi interface beside it.
fn network(l: &Layout, plan: &Plan, r: &mut Report) {
    let text = plan.network.as_ref().map(network_conf);
    r.network_changed = settings_file(&l.network_conf(), text, &mut r.errors);
    let wifi: Vec<&ballast_config::Interface> = plan
        .network
        .iter()
        .flat_map(|n| &n.interfaces)
        .filter(|i| !i.access_points.is_empty())
        .collect();
    // Files of interfaces no longer configured go: their passwords with them.
    if let Ok(dir) = std::fs::read_dir(l.run("")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = name.starts_with(WIFI_PREFIX)
                && name.ends_with(".conf")
                && !wifi.iter().any(|i| wifi_file(&i.name) == name);
            if stale {
                if let Err(e) = remove(&e.path()) {
                    r.errors.push(e.to_string());
                }
                r.network_changed = true;
            }
        }
    }
    for i in wifi {
        // It holds the Wi-Fi password: readable by root only.
        let changed = settings_file_mode(
            &l.run(&wifi_file(&i.name)),
            Some(wpa_supplicant_conf(i)),
            0o600,
            &mut r.errors,
        );
        r.network_changed |= changed;
    }
}

const WIFI_PREFIX: &str = "wpa_supplicant-";

/// The wpa_supplicant config file of Wi-Fi interface `id` (in [`RUN_DIR`]).
fn wifi_file(id: &str) -> String {
    format!("{WIFI_PREFIX}{id}.conf")
}

/// wpa_supplicant's config for one Wi-Fi interface: its networks in the
/// order written, the first one preferred. SSIDs are written in hex so any
/// byte is safe; a passphrase is quoted (wpa_supplicant takes everything up
/// to the line's last quote, and the schema allows printable ASCII only).
pub fn wpa_supplicant_conf(i: &ballast_config::Interface) -> String {
    use ballast_config::KeyManagement;
    let mut out = format!(
        "# Written by sysd from the first-boot config (Wi-Fi networks of {}).\nap_scan=1\n",
        i.name
    );
    let n = i.access_points.len();
    for (k, ap) in i.access_points.iter().enumerate() {
        let hex: String = ap.ssid.bytes().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "\nnetwork={{\n\t# {}\n\tssid={hex}\n\tpriority={}\n",
            ap.ssid.replace('\n', " "),
            n - k
        ));
        if ap.hidden {
            out.push_str("\tscan_ssid=1\n");
        }
        if let Some(b) = &ap.bssid {
            out.push_str(&format!("\tbssid={b}\n"));
        }
        let password = ap.password.as_deref().unwrap_or_default();
        match ap.key_management {
            KeyManagement::None => out.push_str("\tkey_mgmt=NONE\n"),
            KeyManagement::Psk if ap.password_is_psk() => {
                out.push_str(&format!("\tkey_mgmt=WPA-PSK\n\tpsk={password}\n"));
            }
            KeyManagement::Psk => {
                out.push_str(&format!("\tkey_mgmt=WPA-PSK\n\tpsk=\"{password}\"\n"));
            }
            // WPA3 personal requires protected management frames.
            KeyManagement::Sae => out.push_str(&format!(
                "\tkey_mgmt=SAE\n\tieee80211w=2\n\tsae_password=\"{password}\"\n"
            )),
        }
        out.push_str("}\n");
    }
    out
}

/// NTP for the time container: the config's servers and pools replace the
/// image's (as cloud-init's do); without any, the image's are used.
fn ntp(l: &Layout, plan: &Plan, r: &mut Report) {
    let file = l.time_sources();
    match &plan.ntp {
        Some(ntp) if ntp.enabled && !(ntp.servers.is_empty() && ntp.pools.is_empty()) => {
            let servers = ntp.servers.iter().cloned().map(Source::Server);
            let pools = ntp.pools.iter().cloned().map(Source::Pool);
            let text: String = servers.chain(pools).map(|s| s.line()).collect();
            err(r, write_atomic_mode(&file, text.as_bytes(), 0o644));
        }
        Some(ntp) if !ntp.enabled => {
            r.warnings.push("config: ntp.enabled: false: the time service keeps running (stop it with `osctl service stop time`)".into());
            err(r, remove(&file));
        }
        _ => err(r, remove(&file)),
    }
}

/// Extra system containers: OCI bundles sysd loads with the image's; the ones
/// the config no longer names are removed.
fn system_containers(l: &Layout, plan: &Plan, r: &mut Report) {
    let sys_dir = l.system();
    if let Ok(rd) = std::fs::read_dir(&sys_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !plan.system.iter().any(|c| c.name == name) {
                if let Err(e) = std::fs::remove_dir_all(e.path()) {
                    r.errors.push(format!(
                        "cannot remove {}: {e}",
                        sys_dir.join(&name).display()
                    ));
                }
            }
        }
    }
    for c in &plan.system {
        match container_files(l, c) {
            Ok((manifest, config)) => {
                let dir = sys_dir.join(&c.name);
                err(
                    r,
                    write_atomic_mode(&dir.join("manifest.toml"), manifest.as_bytes(), 0o644),
                );
                err(
                    r,
                    write_atomic_mode(&dir.join("config.json"), config.as_bytes(), 0o644),
                );
            }
            Err(e) => r.errors.push(e),
        }
    }
}

/// bootcmd: every boot.
fn bootcmd(l: &Layout, plan: &Plan, r: &mut Report) {
    if plan.bootcmd.is_empty() {
        err(r, remove(&l.bootcmd()));
    } else {
        err(
            r,
            write_atomic_mode(
                &l.bootcmd(),
                script("bootcmd", &plan.bootcmd).as_bytes(),
                0o700,
            ),
        );
    }
}

/// runcmd: queued once per instance (the SSH container's start script takes it).
fn runcmd(l: &Layout, plan: &Plan, r: &mut Report) {
    if plan.runcmd.is_empty() {
        err(r, remove(&l.runcmd()));
    } else {
        err(
            r,
            write_atomic_mode(
                &l.runcmd(),
                script("runcmd", &plan.runcmd).as_bytes(),
                0o700,
            ),
        );
    }
}

/// Look a name up in an `/etc/passwd`- or `/etc/group`-style text: (id, primary gid).
fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| {
            let id = f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
            let gid = f.get(3).and_then(|v| v.parse().ok()).unwrap_or(id);
            (id, gid)
        })
    })
}

/// One `write_files` entry was not written: which file, and why. The Display
/// is the line `osctl status` shows after `config: `.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    #[error("write_files: {path}: not an absolute path without `..`")]
    NotAbsolute { path: String },
    #[error("write_files: {path}: not written: the rest of the host is the read-only system image (write under /etc, /var, /state or /run)")]
    ReadOnly { path: String },
    #[error("write_files: {path}: owner {owner}: no such user (root, ballast, a user of `users`, or a user of the admin userland)")]
    NoOwner { path: String, owner: String },
    #[error("write_files: {path}: group {group}: no such group")]
    NoGroup { path: String, group: String },
    #[error("write_files: cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("write_files: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write_files: cannot append to {}: {source}", path.display())]
    Append {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write_files: {0}")]
    Write(#[from] AtomicError),
    #[error("write_files: cannot give {} to {uid}:{gid}: {source}", path.display())]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("write_files: cannot chmod {}: {source}", path.display())]
    Chmod {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write_files: cannot read back {}: {source}", path.display())]
    ReadBack {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Check a write_files path: absolute, no `..`, under a writable directory.
pub fn check_path(path: &str) -> Result<(), WriteFileError> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(WriteFileError::NotAbsolute { path: path.into() });
    }
    if !WRITABLE.iter().any(|w| path.starts_with(w)) {
        return Err(WriteFileError::ReadOnly { path: path.into() });
    }
    Ok(())
}

fn write_files(l: &Layout, files: &[WriteFile], acc: &users::Accounts, r: &mut Report) {
    // cloud-init writes `defer: true` files after users exist: here users are
    // files already, so plain ones first, deferred ones after, in order.
    let ordered = files
        .iter()
        .filter(|f| !f.defer)
        .chain(files.iter().filter(|f| f.defer));
    for f in ordered {
        if let Err(e) = write_file(l, f, acc) {
            r.errors.push(format!("config: {e}"));
        }
    }
}

fn write_file(l: &Layout, f: &WriteFile, acc: &users::Accounts) -> Result<(), WriteFileError> {
    use WriteFileError as E;
    check_path(&f.path)?;
    let (uid, user_gid) = lookup(&acc.passwd, &f.owner).ok_or_else(|| E::NoOwner {
        path: f.path.clone(),
        owner: f.owner.clone(),
    })?;
    let gid = match &f.group {
        None => user_gid,
        Some(g) => lookup(&acc.group, g)
            .map(|(id, _)| id)
            .ok_or_else(|| E::NoGroup {
                path: f.path.clone(),
                group: g.clone(),
            })?,
    };
    let path = l.p(&f.path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| E::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|source| E::Chown {
            path: p.to_path_buf(),
            uid,
            gid,
            source,
        })
    };
    if f.append {
        let mut h = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(f.mode)
            .open(&path)
            .map_err(|source| E::Open {
                path: path.clone(),
                source,
            })?;
        h.write_all(&f.content)
            .and_then(|()| h.sync_all())
            .map_err(|source| E::Append {
                path: path.clone(),
                source,
            })?;
    } else {
        write_atomic_mode(&path, &f.content, f.mode)?;
    }
    chown(&path)?;
    if !f.append {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).map_err(
            |source| E::Chmod {
                path: path.clone(),
                source,
            },
        )?;
    }
    // The admin environment's /etc is the userland's plus this tree (see `etc`).
    if let Some(copy) = etc::tree_path(l, &f.path) {
        let bytes = std::fs::read(&path).map_err(|source| E::ReadBack {
            path: path.clone(),
            source,
        })?;
        write_atomic_mode(&copy, &bytes, f.mode)?;
        chown(&copy)?;
    }
    Ok(())
}

/// `manifest.toml` and `config.json` of an extra system container.
pub fn container_files(l: &Layout, c: &SystemContainer) -> Result<(String, String), String> {
    let what = format!("ballast.system {}", c.name);
    let policy = match c.restart {
        Restart::Always => "always",
        Restart::OnFailure => "on-failure",
        Restart::Never => "never",
    };
    let manifest = format!(
        "# Written by sysd from the first-boot config.\ndescription = \"from the first-boot config\"\nafter = [\"network\"]\nrequired = {}\n\n[restart]\npolicy = \"{policy}\"\n",
        c.required
    );
    let base_env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "LANG=C.UTF-8".to_string(),
    ];
    let mut config = match &c.source {
        ContainerSource::Image(p) => {
            return Err(format!(
                "config: {what}: image {p}: OCI image archives are not unpacked by this version (give `bundle`, or only `command` to run on the admin userland)"
            ))
        }
        ContainerSource::Bundle(dir) => {
            let file = l.p(dir).join("config.json");
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("config: {what}: cannot read {}: {e}", file.display()))?;
            let mut v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("config: {what}: {}: {e}", file.display()))?;
            let root = v["root"]["path"].as_str().unwrap_or("rootfs").to_string();
            if !root.starts_with('/') {
                v["root"]["path"] = json!(format!("{}/{root}", dir.trim_end_matches('/')));
            }
            v
        }
        ContainerSource::Userland => default_config(&c.name, base_env.clone()),
    };
    if !c.command.is_empty() {
        config["process"]["args"] = json!(c.command);
    }
    // Without a value of its own the container would inherit sysd's
    // oom_score_adj (-900): a user's container is an ordinary OOM candidate.
    if config["process"]["oomScoreAdj"].is_null() {
        config["process"]["oomScoreAdj"] = json!(0);
    }
    if let Some(env) = config["process"]["env"].as_array_mut() {
        env.extend(c.env.iter().map(|e| json!(e)));
    } else {
        config["process"]["env"] = json!(base_env
            .into_iter()
            .chain(c.env.iter().cloned())
            .collect::<Vec<_>>());
    }
    if let Some(mounts) = config["mounts"].as_array_mut() {
        for m in &c.mounts {
            let mut opts = vec!["rbind".to_string()];
            opts.extend(m.options.iter().cloned());
            mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}));
        }
    }
    if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
        if !c.host_network {
            ns.push(json!({"type": "network"}));
        }
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| format!("config: {what}: {e}"))?;
    Ok((manifest, text))
}

/// The calls a config's container on the admin userland may not make (EPERM):
/// the same list as the image's network and time containers.
const DENIED_CALLS: [&str; 29] = [
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "mount",
    "umount2",
    "pivot_root",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_writev",
    "process_vm_readv",
    "open_by_handle_at",
    "acct",
    "quotactl",
    "iopl",
    "ioperm",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "unshare",
    "setns",
    "lookup_dcookie",
    "syslog",
];

/// A locked-down bundle on the admin userland: read-only root, own mount,
/// pid, ipc and uts namespaces, Docker's default capabilities, no new
/// privileges, a seccomp deny list, memory, pids and CPU limits.
fn default_config(name: &str, env: Vec<String>) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let tmpfs = |dest: &str, opts: &[&str]| json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts});
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 16384, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "/usr/lib/ballast/userland", "readonly": true},
        "hostname": name,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            tmpfs("/dev", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            tmpfs("/run", &["nosuid", "nodev", "mode=755", "size=16m"]),
            tmpfs("/tmp", &["nosuid", "nodev", "mode=1777", "size=64m"]),
            tmpfs("/var", &["nosuid", "nodev", "mode=755", "size=16m"])
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}],
            // Docker's default CPU shares: this also turns on the cpu
            // controller for every container, so a busy one (a fork bomb)
            // shares the CPU as one group instead of as hundreds of tasks.
            "resources": {"memory": {"limit": 268435456u64}, "pids": {"limit": 512}, "cpu": {"shares": 1024}},
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            // The network and time containers' deny list (docs/security.md).
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                "syscalls": [{"names": DENIED_CALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            },
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_config::{Interface, InterfaceMatch, Network};

    fn iface(name: &str) -> Interface {
        Interface {
            name: name.into(),
            matches: None,
            set_name: None,
            dhcp: true,
            addresses: vec![],
            gateway: None,
            mtu: None,
            access_points: vec![],
        }
    }

    #[test]
    fn wifi_interfaces_get_a_wpa_supplicant_config_named_in_network_conf() {
        use ballast_config::{AccessPoint, KeyManagement};
        let ap = |ssid: &str, km, password: Option<&str>| AccessPoint {
            ssid: ssid.into(),
            key_management: km,
            password: password.map(String::from),
            hidden: false,
            bssid: None,
        };
        let mut w = iface("wlan0");
        w.access_points = vec![
            ap("home \"net\"", KeyManagement::Psk, Some("pass \"word\" #1")),
            ap(
                "office",
                KeyManagement::Psk,
                Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            ),
            ap("cafe", KeyManagement::None, None),
            AccessPoint {
                hidden: true,
                bssid: Some("02:00:00:aa:bb:cc".into()),
                ..ap("lab", KeyManagement::Sae, Some("wpa3 only please"))
            },
        ];
        let n = Network {
            interfaces: vec![iface("eth0"), w.clone()],
            ..Network::default()
        };
        let lines: Vec<String> = network_conf(&n).lines().skip(1).map(String::from).collect();
        assert_eq!(
            lines,
            [
                "iface eth0 dhcp -",
                "iface wlan0 dhcp -",
                "wifi wlan0 /run/ballast/wpa_supplicant-wlan0.conf",
            ]
        );
        let conf = wpa_supplicant_conf(&w);
        let expected = "\
ap_scan=1

network={
\t# home \"net\"
\tssid=686f6d6520226e657422
\tpriority=4
\tkey_mgmt=WPA-PSK
\tpsk=\"pass \"word\" #1\"
}

network={
\t# office
\tssid=6f6666696365
\tpriority=3
\tkey_mgmt=WPA-PSK
\tpsk=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
}

network={
\t# cafe
\tssid=63616665
\tpriority=2
\tkey_mgmt=NONE
}

network={
\t# lab
\tssid=6c6162
\tpriority=1
\tscan_ssid=1
\tbssid=02:00:00:aa:bb:cc
\tkey_mgmt=SAE
\tieee80211w=2
\tsae_password=\"wpa3 only please\"
}
";
        assert_eq!(conf.split_once('\n').map(|x| x.1), Some(expected));
    }

    #[test]
    fn ntp_sources_are_written_for_the_time_service_and_removed_without_any() {
        use crate::timesync::sources;
        let d = tempfile::tempdir().unwrap();
        let l = Layout {
            root: d.path().to_path_buf(),
            on_device: false,
        };
        std::fs::create_dir_all(l.time_sources().parent().unwrap()).unwrap();
        let with = |enabled, servers: &[&str], pools: &[&str]| Plan {
            ntp: Some(ballast_config::Ntp {
                enabled,
                servers: servers.iter().map(|s| s.to_string()).collect(),
                pools: pools.iter().map(|s| s.to_string()).collect(),
            }),
            ..Plan::default()
        };
        let mut r = Report::default();
        ntp(
            &l,
            &with(true, &["10.0.2.2", "ntp.lan"], &["pool.example"]),
            &mut r,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // What the time service reads back from the path it reads.
        assert_eq!(
            l.time_sources(),
            d.path().join(sources::CONFIGURED.trim_start_matches('/'))
        );
        let (read, _) = sources::load(d.path()).unwrap();
        assert_eq!(
            read,
            vec![
                Source::Server("10.0.2.2".into()),
                Source::Server("ntp.lan".into()),
                Source::Pool("pool.example".into()),
            ]
        );
        // `ntp: {enabled: true}` alone keeps the image's sources, as
        // cloud-init keeps the distribution's; so do no `ntp:` and `false`.
        for plan in [
            with(true, &[], &[]),
            with(false, &["x"], &[]),
            Plan::default(),
        ] {
            ntp(&l, &with(true, &["a"], &[]), &mut Report::default());
            let mut r = Report::default();
            ntp(&l, &plan, &mut r);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert!(!l.time_sources().exists(), "{plan:?}");
        }
    }

    #[test]
    fn the_wifi_file_is_root_only_and_goes_with_its_interface() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let l = Layout {
            root: d.path().to_path_buf(),
            on_device: false,
        };
        let mut w = iface("wlan0");
        w.access_points = vec![ballast_config::AccessPoint {
            ssid: "home".into(),
            key_management: ballast_config::KeyManagement::Psk,
            password: Some("12345678".into()),
            hidden: false,
            bssid: None,
        }];
        let mut plan = Plan {
            network: Some(Network {
                interfaces: vec![w],
                ..Network::default()
            }),
            ..Plan::default()
        };
        let mut r = Report::default();
        std::fs::create_dir_all(l.run("")).unwrap();
        network(&l, &plan, &mut r);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.network_changed);
        let f = l.run("wpa_supplicant-wlan0.conf");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&f)
            .unwrap()
            .contains("psk=\"12345678\""));
        // Unchanged: no restart. Wi-Fi removed: the file (and its password) goes.
        let mut r = Report::default();
        network(&l, &plan, &mut r);
        assert!(!r.network_changed);
        plan.network = Some(Network::default());
        let mut r = Report::default();
        network(&l, &plan, &mut r);
        assert!(r.network_changed);
        assert!(!f.exists());
    }

    #[test]
    fn interfaces_found_by_mac_or_driver_come_first_with_their_new_name() {
        let mut by_mac = iface("lan");
        by_mac.matches = Some(InterfaceMatch {
            macaddress: Some("52:54:00:12:34:56".into()),
            ..InterfaceMatch::default()
        });
        by_mac.set_name = Some("lan0".into());
        let mut by_driver = iface("virt");
        by_driver.matches = Some(InterfaceMatch {
            name: Some("en*".into()),
            driver: Some("virtio_net".into()),
            ..InterfaceMatch::default()
        });
        let n = Network {
            interfaces: vec![iface("eth0"), by_mac, by_driver],
            ..Network::default()
        };
        let text = network_conf(&n);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "match lan 52:54:00:12:34:56 - - lan0",
                "match virt - virtio_net en* -",
                "iface eth0 dhcp -",
                "iface lan dhcp -",
                "iface virt dhcp -",
            ]
        );
    }
}
