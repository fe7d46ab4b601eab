//! The plan: what applying a document does, resolved and in order, and the
//! human diff of two plans (`osctl config apply --dry-run`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    CaCerts, Cmd, DiskSetup, Document, Engine, FsSetup, Group, HostKey, MetaData, MountEntry,
    Network, Ntp, PowerState, SystemContainer, Update, User, UserSpec, WriteFile, DEFAULT_USER,
};

/// The host name to set (`fqdn` for /etc/hosts when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostnamePlan {
    pub hostname: String,
    pub fqdn: Option<String>,
}

/// Concrete effects in the order they are applied. Serialized as JSON by the
/// device (file contents in base64).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// From meta-data; `runcmd` runs once per instance id.
    pub instance_id: Option<String>,
    /// `None`: leave the host name alone (`preserve_hostname`, or none given).
    pub hostname: Option<HostnamePlan>,
    /// Users to create, each with its authorized keys; passwords locked.
    pub users: Vec<User>,
    /// Files to write (`defer` ones after users exist).
    pub files: Vec<WriteFile>,
    /// Every boot, early.
    pub bootcmd: Vec<Cmd>,
    /// Once per instance, last.
    pub runcmd: Vec<Cmd>,
    pub ntp: Option<Ntp>,
    pub timezone: Option<String>,
    pub system: Vec<SystemContainer>,
    pub engine: Option<Engine>,
    pub update: Option<Update>,
    pub network: Option<Network>,
    pub sysctl: BTreeMap<String, String>,
    pub modules: Vec<String>,
    /// Top-level `groups:`, created before the users.
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Host keys to install (`ssh_keys`).
    #[serde(default)]
    pub ssh_host_keys: Vec<HostKey>,
    /// Delete the host keys when the instance is new (`ssh_deletekeys`).
    #[serde(default)]
    pub ssh_deletekeys: bool,
    #[serde(default)]
    pub ca_certs: Option<CaCerts>,
    /// Per instance, before the mounts: partition, then format, only what is blank.
    #[serde(default)]
    pub disk_setup: Vec<DiskSetup>,
    #[serde(default)]
    pub fs_setup: Vec<FsSetup>,
    /// Every boot, before the services that use them start.
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
    /// After `runcmd`, once per instance.
    #[serde(default)]
    pub power_state: Option<PowerState>,
    /// Printed on the console when the config is applied (`$UPTIME`,
    /// `$TIMESTAMP`, `$VERSION` and `$DATASOURCE` substituted on the device).
    #[serde(default)]
    pub final_message: Option<String>,
    /// User health checks the update agent runs before a new slot is marked good.
    #[serde(default)]
    pub health: Vec<crate::HealthCheck>,
}

/// The built-in default user (`- default`): `ballast`, in groups sudo and
/// docker, password-less sudo, a shell, `keys` authorized.
pub(crate) fn default_user(keys: &[String]) -> User {
    User {
        gecos: Some("Ballast".into()),
        groups: vec!["sudo".into(), "docker".into()],
        sudo: vec!["ALL=(ALL) NOPASSWD:ALL".into()],
        shell: Some("/bin/sh".into()),
        ssh_authorized_keys: keys.to_vec(),
        ..User::named(DEFAULT_USER)
    }
}

impl Document {
    /// Resolves the document against the instance's meta-data.
    pub fn plan(&self, meta: &MetaData) -> Plan {
        Plan {
            instance_id: meta.instance_id.clone(),
            hostname: self.hostname_plan(meta),
            users: self.user_plan(),
            files: self.write_files.clone(),
            bootcmd: self.bootcmd.clone(),
            runcmd: self.runcmd.clone(),
            ntp: self.ntp.clone(),
            timezone: self.timezone.clone(),
            system: self.ballast.system.clone(),
            engine: self.ballast.engine.clone(),
            update: self.ballast.update.clone(),
            network: self.ballast.network.clone(),
            sysctl: self.ballast.sysctl.clone(),
            modules: self.ballast.modules.clone(),
            groups: self.groups.clone(),
            ssh_host_keys: self.ssh_keys.clone(),
            ssh_deletekeys: self.ssh_deletekeys,
            ca_certs: self.ca_certs.clone(),
            disk_setup: self.disk_setup.clone(),
            fs_setup: self.fs_setup.clone(),
            mounts: self.mounts.clone(),
            power_state: self.power_state.clone(),
            health: self.ballast.health.clone(),
            final_message: self.final_message.clone(),
        }
    }

    /// cloud-init's precedence (`get_hostname_fqdn`): `fqdn`, then a dotted
    /// `hostname`, then `hostname` with the meta-data's `local-hostname` as
    /// fqdn, then `local-hostname` alone.
    fn hostname_plan(&self, meta: &MetaData) -> Option<HostnamePlan> {
        if self.preserve_hostname {
            return None;
        }
        let short = |s: &str| s.split('.').next().unwrap_or(s).to_string();
        let dotted = |s: &Option<String>| s.clone().filter(|s| s.contains('.'));
        if let Some(fqdn) = &self.fqdn {
            return Some(HostnamePlan {
                hostname: self.hostname.clone().unwrap_or_else(|| short(fqdn)),
                fqdn: Some(fqdn.clone()),
            });
        }
        if let Some(h) = self.hostname.as_ref().filter(|h| h.contains('.')) {
            return Some(HostnamePlan {
                hostname: short(h),
                fqdn: Some(h.clone()),
            });
        }
        if let Some(h) = &self.hostname {
            return Some(HostnamePlan {
                hostname: h.clone(),
                fqdn: dotted(&meta.local_hostname),
            });
        }
        meta.local_hostname.as_ref().map(|l| HostnamePlan {
            hostname: short(l),
            fqdn: dotted(&meta.local_hostname),
        })
    }

    fn user_plan(&self) -> Vec<User> {
        let specs: &[UserSpec] = match &self.users {
            None => &[UserSpec::Default],
            Some(u) => u,
        };
        specs
            .iter()
            .map(|s| match s {
                UserSpec::Default => match &self.default_user {
                    // The document's entry for the default user, plus the
                    // top-level keys (cloud-init gives them to the default user).
                    Some(u) => {
                        let mut u = User {
                            lock_passwd: true,
                            ..u.clone()
                        };
                        for k in &self.ssh_authorized_keys {
                            if !u.ssh_authorized_keys.contains(k) {
                                u.ssh_authorized_keys.push(k.clone());
                            }
                        }
                        u
                    }
                    None => default_user(&self.ssh_authorized_keys),
                },
                UserSpec::User(u) => User {
                    lock_passwd: true,
                    ..u.clone()
                },
            })
            .collect()
    }
}

fn file_line(f: &WriteFile) -> String {
    let mut extra = String::new();
    if f.append {
        extra.push_str(", append");
    }
    if f.defer {
        extra.push_str(", deferred");
    }
    format!(
        "{} ({:04o}, {} bytes{extra})",
        f.path,
        f.mode,
        f.content.len()
    )
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "(none)".to_string(), |v| v.to_string())
}

/// Changes by name: `+` new, `-` gone, `~ name: fields` changed.
fn keyed<T: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> String,
    show: impl Fn(&T) -> String,
    changed: impl Fn(&T, &T) -> Vec<&'static str>,
) {
    for o in old {
        if !new.iter().any(|n| key(n) == key(o)) {
            out.push(format!("- {what} {}", show(o)));
        }
    }
    for n in new {
        match old.iter().find(|o| key(o) == key(n)) {
            None => out.push(format!("+ {what} {}", show(n))),
            Some(o) if o != n => {
                let fields = changed(o, n);
                let detail = if fields.is_empty() {
                    String::new()
                } else {
                    format!(": {}", fields.join(", "))
                };
                out.push(format!("~ {what} {}{detail}", show(n)));
            }
            Some(_) => {}
        }
    }
}

fn commands(out: &mut Vec<String>, what: &str, old: &[Cmd], new: &[Cmd]) {
    for o in old.iter().filter(|o| !new.contains(o)) {
        out.push(format!("- {what}: {o}"));
    }
    for n in new.iter().filter(|n| !old.contains(n)) {
        out.push(format!("+ {what}: {n}"));
    }
}

fn whole<T: PartialEq>(out: &mut Vec<String>, what: &str, old: &Option<T>, new: &Option<T>) {
    match (old, new) {
        (None, Some(_)) => out.push(format!("+ {what}")),
        (Some(_), None) => out.push(format!("- {what}")),
        (Some(a), Some(b)) if a != b => out.push(format!("~ {what}")),
        _ => {}
    }
}

macro_rules! fields {
    ($a:expr, $b:expr, $($f:ident),*) => {{
        let mut v: Vec<&'static str> = Vec::new();
        $( if $a.$f != $b.$f { v.push(stringify!($f)); } )*
        v
    }};
}

/// Human lines saying what applying `new` over `old` changes.
pub fn diff(old: &Plan, new: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let host = |p: &Plan| p.hostname.as_ref().map(|h| h.hostname.clone());
    match (host(old), host(new)) {
        (None, Some(n)) => out.push(format!("+ hostname {n}")),
        (Some(o), None) => out.push(format!("- hostname {o}")),
        (Some(o), Some(n)) if o != n => out.push(format!("~ hostname: {o} -> {n}")),
        _ => {}
    }
    let fq = |p: &Plan| p.hostname.as_ref().and_then(|h| h.fqdn.clone());
    if fq(old) != fq(new) {
        out.push(format!("~ fqdn: {} -> {}", opt(&fq(old)), opt(&fq(new))));
    }
    keyed(
        &mut out,
        "user",
        &old.users,
        &new.users,
        |u| u.name.clone(),
        |u| u.name.clone(),
        |a, b| {
            fields!(
                a,
                b,
                gecos,
                uid,
                groups,
                sudo,
                shell,
                ssh_authorized_keys,
                primary_group,
                homedir,
                system,
                no_create_home,
                no_user_group,
                expiredate,
                inactive
            )
        },
    );
    keyed(
        &mut out,
        "group",
        &old.groups,
        &new.groups,
        |g| g.name.clone(),
        |g| g.name.clone(),
        |a, b| fields!(a, b, members),
    );
    keyed(
        &mut out,
        "file",
        &old.files,
        &new.files,
        |f| f.path.clone(),
        file_line,
        |a, b| fields!(a, b, content, owner, group, mode, append, defer),
    );
    commands(&mut out, "bootcmd", &old.bootcmd, &new.bootcmd);
    commands(&mut out, "runcmd", &old.runcmd, &new.runcmd);
    whole(&mut out, "ntp", &old.ntp, &new.ntp);
    if old.timezone != new.timezone {
        out.push(format!(
            "~ timezone: {} -> {}",
            opt(&old.timezone),
            opt(&new.timezone)
        ));
    }
    keyed(
        &mut out,
        "system container",
        &old.system,
        &new.system,
        |c| c.name.clone(),
        |c| c.name.clone(),
        |a, b| {
            fields!(
                a,
                b,
                source,
                command,
                env,
                mounts,
                host_network,
                restart,
                required
            )
        },
    );
    whole(&mut out, "engine", &old.engine, &new.engine);
    whole(&mut out, "update", &old.update, &new.update);
    if old.health != new.health {
        out.push(format!(
            "~ health checks: {} -> {}",
            old.health.len(),
            new.health.len()
        ));
    }
    whole(&mut out, "network", &old.network, &new.network);
    for (k, v) in &old.sysctl {
        match new.sysctl.get(k) {
            None => out.push(format!("- sysctl {k}")),
            Some(n) if n != v => out.push(format!("~ sysctl {k}: {v} -> {n}")),
            Some(_) => {}
        }
    }
    for (k, v) in &new.sysctl {
        if !old.sysctl.contains_key(k) {
            out.push(format!("+ sysctl {k} = {v}"));
        }
    }
    keyed(
        &mut out,
        "ssh host key",
        &old.ssh_host_keys,
        &new.ssh_host_keys,
        |k| k.kind.clone(),
        |k| k.kind.clone(),
        |a, b| fields!(a, b, private, public, certificate),
    );
    if old.ssh_deletekeys != new.ssh_deletekeys {
        out.push(format!(
            "~ ssh_deletekeys: {} -> {}",
            old.ssh_deletekeys, new.ssh_deletekeys
        ));
    }
    whole(&mut out, "ca_certs", &old.ca_certs, &new.ca_certs);
    keyed(
        &mut out,
        "disk",
        &old.disk_setup,
        &new.disk_setup,
        |d| d.device.clone(),
        |d| d.device.clone(),
        |a, b| fields!(a, b, table_type, layout, overwrite),
    );
    keyed(
        &mut out,
        "filesystem",
        &old.fs_setup,
        &new.fs_setup,
        |f| format!("{} {}", f.device, f.partition.as_deref().unwrap_or("")),
        |f| format!("{} on {}", f.filesystem, f.device),
        |a, b| fields!(a, b, label, filesystem, overwrite, extra_opts),
    );
    keyed(
        &mut out,
        "mount",
        &old.mounts,
        &new.mounts,
        |m| format!("{} {}", m.spec, m.dir),
        |m| format!("{} on {}", m.spec, m.dir),
        |a, b| fields!(a, b, fstype, options, dump, pass),
    );
    whole(&mut out, "power_state", &old.power_state, &new.power_state);
    whole(
        &mut out,
        "final_message",
        &old.final_message,
        &new.final_message,
    );
    for m in old.modules.iter().filter(|m| !new.modules.contains(m)) {
        out.push(format!("- module {m}"));
    }
    for m in new.modules.iter().filter(|m| !old.modules.contains(m)) {
        out.push(format!("+ module {m}"));
    }
    out
}

/// File contents as base64 in JSON (a JSON array of numbers is 4x larger).
pub(crate) mod b64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
