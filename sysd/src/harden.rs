//! The kernel hardening sysd applies at start, before the first-boot config
//! (whose `ballast.sysctl` may override any of it), and sysd's own standing
//! with the OOM killer.
//!
//! The sysctl table is Ballast's choice, with Photon OS's hardened defaults as
//! the reference; `docs/security.md` gives the reason for each setting and for
//! each one left out. A setting the kernel lacks is reported, never fatal: the
//! machine boots and `osctl status` shows what was not applied.

use std::path::Path;

/// `(sysctl, value)`, written in this order. Values the Debian kernel already
/// defaults to are written too, so the running system does not depend on a
/// distribution patch or build option.
pub const SYSCTLS: [(&str, &str); 21] = [
    // Kernel pointers and the kernel log are not for unprivileged eyes.
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    // eBPF and perf are large attack surfaces; no unprivileged user needs them.
    ("kernel.unprivileged_bpf_disabled", "1"),
    ("net.core.bpf_jit_harden", "2"),
    ("kernel.perf_event_paranoid", "3"),
    // ptrace only of one's own descendants (root with CAP_SYS_PTRACE still may).
    ("kernel.yama.ptrace_scope", "1"),
    // The kernel is replaced by A/B updates only, never by kexec.
    ("kernel.kexec_load_disabled", "1"),
    // No magic SysRq keys: nobody sits at a Ballast console keyboard.
    ("kernel.sysrq", "0"),
    ("kernel.randomize_va_space", "2"),
    // A core dump (where a container allows one) names its process (lynis
    // KRNL-6000).
    ("kernel.core_uses_pid", "1"),
    // No core dumps of setuid programs; links and FIFOs in sticky directories
    // cannot be used to trick a privileged writer.
    ("fs.suid_dumpable", "0"),
    ("fs.protected_symlinks", "1"),
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_fifos", "2"),
    ("fs.protected_regular", "2"),
    // Line disciplines are not auto-loaded for an unprivileged open of a tty.
    ("dev.tty.ldisc_autoload", "0"),
    // userfaultfd only for privileged users (a favourite of kernel exploits).
    ("vm.unprivileged_userfaultfd", "0"),
    // Network: reverse-path filtering in loose mode (strict breaks multi-homed
    // hosts and some container networks; systemd chooses loose too), SYN
    // cookies; redirects and source routing are per interface (below).
    ("net.ipv4.conf.all.rp_filter", "2"),
    ("net.ipv4.conf.default.rp_filter", "2"),
    ("net.ipv4.tcp_syncookies", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
];

/// `(family, setting, value)` written to `net/FAMILY/conf/{all,default,IFACE}`
/// for every interface that exists when sysd starts: the kernel ORs some of
/// these between `all` and the interface, so `all` alone is not enough.
/// No ICMP redirects taken or sent, no source-routed packets.
pub const PER_INTERFACE: [(&str, &str, &str); 5] = [
    ("ipv4", "accept_redirects", "0"),
    ("ipv4", "secure_redirects", "0"),
    ("ipv4", "send_redirects", "0"),
    ("ipv4", "accept_source_route", "0"),
    ("ipv6", "accept_redirects", "0"),
];

/// sysd's `oom_score_adj`: the OOM killer takes nearly anything before sysd
/// (PID 1 is never chosen by the kernel). Containers set their own from their
/// OCI config (`process.oomScoreAdj`); sysd gives user containers 0 explicitly,
/// so they do not inherit this value.
pub const SYSD_OOM_SCORE_ADJ: i32 = -900;

/// Writes [`SYSCTLS`] under `proc_sys` (`/proc/sys` on the device). Returns one
/// message per setting that could not be written.
pub fn apply_sysctls(proc_sys: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, value) in SYSCTLS {
        let path = proc_sys.join(key.replace('.', "/"));
        if let Err(e) = std::fs::write(&path, format!("{value}\n")) {
            errors.push(format!(
                "hardening: sysctl {key} = {value}: cannot write {}: {e}",
                path.display()
            ));
        }
    }
    for (family, setting, value) in PER_INTERFACE {
        let conf = proc_sys.join("net").join(family).join("conf");
        let Ok(entries) = std::fs::read_dir(&conf) else {
            errors.push(format!(
                "hardening: cannot list {}: net.{family}.conf.*.{setting} not set",
                conf.display()
            ));
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path().join(setting);
            if let Err(e) = std::fs::write(&path, format!("{value}\n")) {
                errors.push(format!(
                    "hardening: {} = {value}: cannot write: {e}",
                    path.display()
                ));
            }
        }
    }
    errors
}

/// Sets sysd's own `oom_score_adj` through `proc_self` (`/proc/self`).
pub fn protect_from_oom(proc_self: &Path) -> Result<(), String> {
    let path = proc_self.join("oom_score_adj");
    std::fs::write(&path, format!("{SYSD_OOM_SCORE_ADJ}\n")).map_err(|e| {
        format!(
            "hardening: cannot set sysd's oom_score_adj to {SYSD_OOM_SCORE_ADJ} ({}): {e}; the OOM killer may choose sysd",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_lands_in_its_proc_sys_file_and_a_missing_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for (key, _) in SYSCTLS {
            let p = dir.path().join(key.replace('.', "/"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x\n").unwrap();
        }
        for dir_name in ["all", "default", "eth0"] {
            for (family, setting, _) in PER_INTERFACE {
                let p = dir
                    .path()
                    .join("net")
                    .join(family)
                    .join("conf")
                    .join(dir_name);
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join(setting), "1\n").unwrap();
            }
        }
        // A kernel without Yama.
        std::fs::remove_dir_all(dir.path().join("kernel/yama")).unwrap();
        let errors = apply_sysctls(dir.path());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("hardening: sysctl kernel.yama.ptrace_scope = 1: cannot write ")
        );
        let read = |k: &str| std::fs::read_to_string(dir.path().join(k)).unwrap();
        assert_eq!(read("kernel/kptr_restrict"), "2\n");
        assert_eq!(read("net/ipv4/conf/all/rp_filter"), "2\n");
        assert_eq!(read("fs/protected_regular"), "2\n");
        assert_eq!(read("net/ipv4/conf/eth0/accept_redirects"), "0\n");
        assert_eq!(read("net/ipv6/conf/default/accept_redirects"), "0\n");
    }

    #[test]
    fn the_table_names_each_setting_once() {
        let mut keys: Vec<_> = SYSCTLS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SYSCTLS.len());
    }

    #[test]
    fn oom_score_adj_is_written() {
        let dir = tempfile::tempdir().unwrap();
        protect_from_oom(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("oom_score_adj")).unwrap(),
            "-900\n"
        );
        let missing = protect_from_oom(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing.contains("the OOM killer may choose sysd"),
            "{missing}"
        );
    }
}
