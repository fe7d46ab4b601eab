//! The top level of a user-data document: which keys exist, which
//! cloud-init keys are deliberately not honoured, and the walk that builds
//! the [`Document`](crate::Document). It never reads a section's own keys:
//! each section has its module.

use super::*;

pub(super) const TOP: &[&str] = &[
    "hostname",
    "fqdn",
    "preserve_hostname",
    "users",
    "ssh_authorized_keys",
    "write_files",
    "bootcmd",
    "runcmd",
    "ntp",
    "timezone",
    "ssh_pwauth",
    "disable_root",
    "ballast",
];

pub(super) const IMMUTABLE: &str = "Ballast is an immutable OS: packages cannot be installed (run software in containers: `docker run`, or `ballast.system`)";
pub(super) const NO_PASSWORD: &str =
    "password login is never enabled on Ballast (log in with a key from `ssh_authorized_keys`)";

/// cloud-init keys Ballast knows and deliberately does not honour.
pub(super) fn ignored_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "packages" | "package_update" | "package_upgrade" | "package_reboot_if_required"
        | "apt" | "yum_repos" | "snap" | "zypper" | "apk_repos" => IMMUTABLE,
        "chpasswd" | "password" => NO_PASSWORD,
        "mounts" | "manage_etc_hosts" | "growpart" | "resize_rootfs" | "locale" | "keyboard"
        | "ca_certs" | "final_message" | "power_state" | "phone_home" | "ssh_keys"
        | "ssh_genkeytypes" | "ssh_deletekeys" | "ssh_import_id" | "random_seed" | "rsyslog"
        | "resolv_conf" | "manage_resolv_conf" | "groups" | "system_info" | "output"
        | "disk_setup" | "fs_setup" | "swap" | "ssh" | "device_aliases" | "prefer_fqdn_over_hostname"
        | "create_hostname_file" | "merge_how" | "vendor_data" => {
            "a cloud-init key that Ballast does not support, ignored (network, disks and time are set in the `ballast:` section)"
        }
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
    let mut f = Fields::new(&root, "", ctx)?;
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
        d.users = Some(users(n, "users", ctx));
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
    if let Some(n) = f.get("ballast") {
        d.ballast = ballast(n, "ballast", ctx);
    }
    // cloud-init's own keys that Ballast leaves alone, then the rest.
    for (i, e) in f.entries.iter().enumerate() {
        if f.used[i] {
            continue;
        }
        if let Some(reason) = ignored_reason(&e.key) {
            f.used[i] = true;
            ctx.warn(e.key_line, &e.key, reason);
        }
    }
    f.finish(ctx, TOP);
    Some(d)
}
