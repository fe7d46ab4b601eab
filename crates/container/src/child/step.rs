//! The steps the child can fail at, and the fixed-size record it sends the parent
//! when one does. It owns the wire format of that record (step, index, errno); it
//! must never grow a variable-length field: the child writes it without allocating.

/// Defines [`Step`] from one list: each step with (what it does, how to fix a
/// failure), so the enum, its numbers and its messages cannot drift apart.
macro_rules! steps {
    ($($name:ident => ($what:literal, $fix:literal);)*) => {
        /// Steps the child can fail at; the parent turns them into messages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Step {
            $($name,)*
        }

        impl Step {
            const ALL: &'static [Step] = &[$(Step::$name,)*];

            /// (what the step does, how to fix a failure) for error messages.
            pub(crate) fn describe(self) -> (&'static str, &'static str) {
                match self {
                    $(Step::$name => ($what, $fix),)*
                }
            }
        }
    };
}

#[rustfmt::skip]
steps! {
    Stdio => ("set up stdin/stdout/stderr", "pass open file descriptors in Stdio3");
    JoinCgroup => ("join the container's cgroup", "check /sys/fs/cgroup is writable (root)");
    UnshareCgroup => ("create the cgroup namespace", "the kernel needs CONFIG_CGROUPS namespaces; or drop {\"type\": \"cgroup\"}");
    RootPropagation => ("make / private in the new mount namespace", "check linux.rootfsPropagation");
    BindRoot => ("bind-mount root.path onto itself", "check root.path exists and is a directory");
    MountDir => ("create the mount point", "a read-only rootfs must contain every mount destination; add it to the image");
    Mount => ("mount", "check the mount's type, source and options in config.json (and that the kernel has the filesystem)");
    MountPropagation => ("set mount propagation", "check the mount's propagation options");
    Device => ("create device node", "/dev must be a writable tmpfs mount, or the node must exist in the image");
    DevSymlink => ("create /dev symlink", "/dev must be a writable tmpfs mount");
    PivotRoot => ("pivot_root into root.path", "root.path must be a directory on a mount the host root is not stacked on");
    MaskedPath => ("mask path (linux.maskedPaths)", "remove the path from linux.maskedPaths");
    ReadonlyPath => ("make path read-only (linux.readonlyPaths)", "remove the path from linux.readonlyPaths");
    ReadonlyRoot => ("remount the root read-only", "set root.readonly to false, or check the rootfs mount");
    Hostname => ("set hostname", "use a hostname of at most 64 characters");
    Domainname => ("set domainname", "use a domainname of at most 64 characters");
    Sysctl => ("write sysctl", "only namespaced sysctls can be set; check the name under /proc/sys");
    OomScoreAdj => ("write oom_score_adj", "use a value from -1000 to 1000");
    Rlimit => ("set rlimit", "the soft limit must not exceed the hard limit");
    CapBoundingDrop => ("drop capabilities from the bounding set", "run the caller as root with CAP_SETPCAP");
    KeepCaps => ("keep capabilities across setuid", "run the caller as root");
    Groups => ("set process.user.additionalGids", "run the caller as root");
    SetGid => ("set process.user.gid", "run the caller as root");
    SetUid => ("set process.user.uid", "run the caller as root");
    Capset => ("set capabilities", "effective and inheritable must be subsets of permitted (and of bounding for inheritable)");
    Ambient => ("raise ambient capabilities", "an ambient cap must also be permitted and inheritable");
    NoNewPrivs => ("set no_new_privs", "unset process.noNewPrivileges");
    Cwd => ("change to process.cwd", "create the directory in the rootfs, or fix process.cwd");
    Exec => ("exec process.args[0]", "check the program exists in the rootfs (PATH from process.env) and is executable for process.user");
    Seccomp => ("install the linux.seccomp filter", "the kernel needs CONFIG_SECCOMP_FILTER; without process.noNewPrivileges the caller needs CAP_SYS_ADMIN");
}

impl Step {
    /// The step's number in a failure record: 1, 2, ... in list order (0 is no step).
    pub(crate) fn number(self) -> u32 {
        self as u32 + 1
    }

    pub(crate) fn from_number(n: u32) -> Option<Step> {
        Step::ALL.get(n.checked_sub(1)? as usize).copied()
    }
}

/// Size of the failure record: step, index, errno.
pub(crate) const REPORT_LEN: usize = 12;

/// A step that failed: which one, which item of it (mount, path, capability...),
/// and the errno the kernel gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed {
    pub step: Step,
    pub index: usize,
    pub errno: i32,
}

impl Failed {
    /// The record the child writes to the status pipe.
    pub(crate) fn to_record(self) -> [u8; REPORT_LEN] {
        let mut buf = [0u8; REPORT_LEN];
        buf[0..4].copy_from_slice(&self.step.number().to_ne_bytes());
        buf[4..8].copy_from_slice(&(self.index as u32).to_ne_bytes());
        buf[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        buf
    }

    /// (step, index, errno) from a record; the step is None when the number is
    /// unknown (a record from another build cannot happen, but is not trusted).
    pub(crate) fn from_record(buf: &[u8; REPORT_LEN]) -> (Option<Step>, u32, i32) {
        let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        (Step::from_number(word(0)), word(4), word(8) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_record_reads_back_as_written() {
        let f = Failed {
            step: Step::Mount,
            index: 3,
            errno: libc::ENOENT,
        };
        assert_eq!(
            Failed::from_record(&f.to_record()),
            (Some(Step::Mount), 3, libc::ENOENT)
        );
        let mut unknown = f.to_record();
        unknown[0..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(Failed::from_record(&unknown).0, None);
    }

    #[test]
    fn every_step_number_maps_back_to_its_step() {
        for n in 1..=30u32 {
            let step = Step::from_number(n).expect("steps are numbered 1..=30");
            assert_eq!(step.number(), n);
            let (what, fix) = step.describe();
            assert!(!what.is_empty() && !fix.is_empty(), "{step:?}");
        }
        assert_eq!(Step::from_number(0), None);
        assert_eq!(Step::from_number(31), None);
    }
}
