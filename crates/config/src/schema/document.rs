//! The top level of a user-data document: which keys exist, which
//! cloud-init keys are deliberately not honoured, and the walk that builds
//! the [`Document`](crate::Document). It never reads a section's own keys:
//! each section has its module.

use super::*;

/// Top-level keys Ballast reads (the "did you mean" list).
pub(super) const TOP: &[&str] = &[
    "hostname",
    "fqdn",
    "preserve_hostname",
    "users",
    "groups",
    "ssh_authorized_keys",
    "write_files",
    "bootcmd",
    "runcmd",
    "ntp",
    "timezone",
    "ssh_pwauth",
    "disable_root",
    "ssh_keys",
    "ssh_deletekeys",
    "ssh_genkeytypes",
    "ca_certs",
    "device_aliases",
    "disk_setup",
    "fs_setup",
    "mounts",
    "mount_default_fields",
    "power_state",
    "final_message",
    "ballast",
];

/// Deprecated top-level spellings cloud-init's schema accepts.
const TOP_ALIASES: &[(&str, &str)] = &[("ca-certs", "ca_certs"), ("grub-dpkg", "grub_dpkg")];

pub(super) const IMMUTABLE: &str = "Ballast is an immutable OS: packages cannot be installed (run software in containers: `docker run`, or `ballast.system`)";
pub(super) const NO_PASSWORD: &str =
    "password login is never enabled on Ballast (log in with a key from `ssh_authorized_keys`)";
const AGENT: &str = "Ballast is an immutable OS: configuration agents cannot be installed on the host (run the agent in a container under `ballast.system`, or push changes with `osctl config apply`)";
const UNSUPPORTED: &str = "a cloud-init key that Ballast does not support, ignored";

/// Every other key of cloud-init's schema (schema-cloud-config-v1.json):
/// why Ballast does not honour it and, where there is one, what to do
/// instead. A key not here and not in [`TOP`] is unknown.
pub(super) fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "packages" | "package_update" | "package_upgrade" | "package_reboot_if_required"
        | "apt_update" | "apt_upgrade" | "apt_reboot_if_required" | "apt" | "apt_pipelining"
        | "yum_repos" | "yum_repo_dir" | "zypper" | "apk_repos" | "snap" | "drivers"
        | "byobu_by_default" | "grub_dpkg" | "ubuntu_pro" | "ubuntu_advantage"
        | "rh_subscription" | "spacewalk" | "landscape" | "updates" | "rpi" => IMMUTABLE,
        "ansible" | "puppet" | "chef" | "salt_minion" | "mcollective" => AGENT,
        "lxd" | "fan" => "Ballast runs containers with its own engine, not LXD (use `docker run` or `ballast.system`)",
        "autoinstall" => "Ballast is installed as an image, not by the Ubuntu installer, ignored (build the image with `ballast build`)",
        "chpasswd" | "password" => NO_PASSWORD,
        "user" => "cloud-init's old single-user form is not supported, ignored (write `users: [default, {name: ..., ssh_authorized_keys: [...]}]`)",
        "ssh_import_id" => "not supported: Ballast does not fetch keys from Launchpad or GitHub at boot (paste the keys into `ssh_authorized_keys`)",
        "disable_root_opts" => "root never logs in over SSH on Ballast, so there is no root key to restrict, ignored",
        "allow_public_ssh_keys" => "a NoCloud machine has no cloud-provided keys, ignored (give keys in `ssh_authorized_keys`)",
        "ssh_quiet_keygen" | "ssh" | "ssh_key_console_blacklist" | "ssh_fp_console_blacklist"
        | "no_ssh_fingerprints" | "authkey_hash" | "ssh_publish_hostkeys" => "Ballast's SSH service prints no key fingerprints to the console and publishes none, ignored (read them with `ssh-keyscan`)",
        "growpart" | "resize_rootfs" => "Ballast's system partitions are fixed by the image, ignored (a data disk is set up with `disk_setup`, `fs_setup` and `mounts`)",
        "swap" => "swap files are not supported, ignored (a swap partition can be listed in `fs_setup` and `mounts`)",
        "manage_etc_hosts" => "Ballast writes /etc/hosts itself from `hostname` and `fqdn`, ignored",
        "manage_resolv_conf" | "resolv_conf" => "DNS comes from network-config or `ballast.network.dns`, ignored",
        "locale" | "locale_configfile" | "keyboard" => "Ballast has one locale (C.UTF-8) and no console keymap, ignored",
        "prefer_fqdn_over_hostname" | "create_hostname_file" => "Ballast sets the short `hostname` and puts `fqdn` in /etc/hosts, ignored",
        "rsyslog" | "output" | "reporting" => "Ballast keeps its own logs (read them with `osctl logs`), ignored",
        "phone_home" | "random_seed" | "wireguard" | "disable_ec2_metadata" | "vendor_data"
        | "system_info" | "merge_how" | "merge_type" | "cloud_init_modules"
        | "cloud_config_modules" | "cloud_final_modules" | "launch-index" => UNSUPPORTED,
        _ => return None,
    })
}

pub(super) fn document(text: &str, ctx: &mut Ctx) -> Option<Document> {
    let root = match load(text, ctx) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Some(Document {
                disable_root: true,
                ssh_deletekeys: true,
                ..Document::default()
            })
        }
        Err(()) => return None,
    };
    let mut f = Fields::spelled(&root, "", Spelling::Aliases(TOP_ALIASES), ctx)?;
    let mut d = Document {
        disable_root: true,
        ssh_deletekeys: true,
        ..Document::default()
    };

    d.hostname = opt_str(&mut f, "hostname", ctx, checks::hostname);
    d.fqdn = opt_str(&mut f, "fqdn", ctx, |s| {
        checks::hostname(s)?;
        if s.contains('.') {
            Ok(())
        } else {
            Err(format!("`{s}` is not a fully qualified name (a dotted name like web1.example.org; a short name goes in `hostname`)"))
        }
    });
    d.preserve_hostname = opt_bool(&mut f, "preserve_hostname", false, ctx);
    if let Some(n) = f.get("users") {
        let u = users(n, "users", ctx);
        d.users = Some(u.specs);
        d.default_user = u.default;
    }
    if let Some(n) = f.get("groups") {
        d.groups = groups(n, "groups", ctx);
    }
    let keys_line = f.key_line("ssh_authorized_keys");
    d.ssh_authorized_keys = opt_list(&mut f, "ssh_authorized_keys", ctx, checks::ssh_key);
    if let Some(list) = &d.users {
        if !d.ssh_authorized_keys.is_empty() && !list.contains(&UserSpec::Default) {
            ctx.warn(
                keys_line,
                "ssh_authorized_keys",
                format!("these keys are for the default user `{}`, which `users` does not list, so they are not installed (add `- default` to `users`, or put the keys under a user)", crate::DEFAULT_USER),
            );
        }
    }
    if let Some(n) = f.get("write_files") {
        d.write_files = write_files(n, "write_files", ctx);
    }
    if let Some(n) = f.get("bootcmd") {
        d.bootcmd = commands(n, "bootcmd", ctx);
    }
    if let Some(n) = f.get("runcmd") {
        d.runcmd = commands(n, "runcmd", ctx);
    }
    if let Some(n) = f.get("ntp") {
        d.ntp = ntp(n, "ntp", ctx);
    }
    d.timezone = opt_str(&mut f, "timezone", ctx, checks::timezone);
    let pw_line = f.key_line("ssh_pwauth");
    d.ssh_pwauth = f
        .get("ssh_pwauth")
        .and_then(|n| boolean(n, "ssh_pwauth", ctx));
    if d.ssh_pwauth == Some(true) {
        ctx.warn(pw_line, "ssh_pwauth", NO_PASSWORD);
    }
    let root_line = f.key_line("disable_root");
    d.disable_root = opt_bool(&mut f, "disable_root", true, ctx);
    if !d.disable_root {
        ctx.warn(
            root_line,
            "disable_root",
            "root never logs in over SSH on Ballast, ignored (log in as `ballast` and use sudo)",
        );
    }
    ssh::read(&mut f, &mut d, ctx);
    if let Some(n) = f.get("ca_certs") {
        d.ca_certs = ca_certs(n, &f.path("ca_certs"), ctx);
    }
    disks::read(&mut f, &mut d, ctx);
    if let Some(n) = f.get("power_state") {
        d.power_state = power_state(n, "power_state", ctx);
    }
    if let Some(n) = f.get("final_message") {
        d.final_message = string(n, "final_message", ctx);
    }
    if let Some(n) = f.get("ballast") {
        d.ballast = ballast(n, "ballast", ctx);
    }
    // cloud-init's own keys that Ballast leaves alone, then the rest.
    for (i, e) in f.entries.iter().enumerate() {
        if f.used[i] {
            continue;
        }
        if let Some(reason) = ignored_reason(&f.names[i]) {
            f.used[i] = true;
            ctx.warn(e.key_line, &e.key, reason);
        }
    }
    f.finish(ctx, TOP);
    Some(d)
}
