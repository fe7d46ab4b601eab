//! `linux.seccomp` compiled to a classic BPF program in the parent.
//!
//! The subset honoured: `defaultAction` (+ `defaultErrnoRet`), `architectures`, and
//! `syscalls[]` entries of `names` + `action` (+ `errnoRet`) without `args`. Actions:
//! SCMP_ACT_ALLOW, SCMP_ACT_ERRNO (errno from `errnoRet`, EPERM when absent),
//! SCMP_ACT_KILL / SCMP_ACT_KILL_THREAD (the calling thread), SCMP_ACT_KILL_PROCESS,
//! SCMP_ACT_TRAP, SCMP_ACT_LOG and SCMP_ACT_TRACE.
//!
//! Names are resolved for the build target with the `syscalls` crate; a name this
//! architecture does not have is skipped, as libseccomp and crun do. When a syscall is
//! named by several entries the first one wins. `architectures` only has to contain
//! `SCMP_ARCH_*` names: the filter always matches the native one and kills the process
//! on any other (so x32 calls on x86_64 and 32-bit compat calls are killed), which is
//! stricter than a profile that lists SCMP_ARCH_X86 or SCMP_ARCH_X32.
//!
//! The program: load `seccomp_data.arch`, kill the process unless it is the native
//! AUDIT_ARCH; load `nr`; one `JEQ nr` + `RET action` pair per syscall; `RET default`.

use std::str::FromStr;

use crate::oci_config::Seccomp;

// Classic BPF opcodes (linux/bpf_common.h): BPF_LD|BPF_W|BPF_ABS,
// BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
#[cfg(target_arch = "x86_64")]
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

// Return values (linux/seccomp.h).
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

/// The kernel refuses longer programs (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "arm")]
const AUDIT_ARCH: u32 = 0x4000_0028;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
compile_error!("linux.seccomp: add this target's AUDIT_ARCH_* value to seccomp.rs");

/// x32 system calls arrive with AUDIT_ARCH_X86_64 and this bit set in `nr`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The seccomp return value for an OCI action name. Err is the reason, with the fix.
fn action(name: &str, errno_ret: Option<u32>) -> Result<u32, String> {
    let data = |default: u32| errno_ret.unwrap_or(default) & 0xffff;
    Ok(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => RET_ERRNO | data(libc::EPERM as u32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_TRACE" => RET_TRACE | data(0),
        "SCMP_ACT_NOTIFY" => {
            return Err("SCMP_ACT_NOTIFY (a seccomp agent) is not supported; use SCMP_ACT_ERRNO".into())
        }
        other => return Err(format!(
            "unknown action {other:?} (SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_LOG)"
        )),
    })
}

/// This target's number for a syscall name, or None when it has no such call.
pub(crate) fn syscall_number(name: &str) -> Option<u32> {
    syscalls::Sysno::from_str(name).ok().map(|s| s.id() as u32)
}

/// Compile the profile. Err is (field, reason-with-fix).
pub(crate) fn compile(s: &Seccomp) -> Result<Vec<libc::sock_filter>, (String, String)> {
    let default = action(&s.default_action, s.default_errno_ret)
        .map_err(|r| ("linux.seccomp.defaultAction".to_string(), r))?;
    for (i, a) in s.architectures.iter().enumerate() {
        if !a.starts_with("SCMP_ARCH_") {
            return Err((
                format!("linux.seccomp.architectures[{i}]"),
                format!("{a:?} is not an architecture name like SCMP_ARCH_X86_64"),
            ));
        }
    }
    if !s.flags.is_empty() {
        return Err((
            "linux.seccomp.flags".into(),
            "seccomp filter flags are not supported; remove them".into(),
        ));
    }
    if s.listener_path.is_some() {
        return Err((
            "linux.seccomp.listenerPath".into(),
            "seccomp agents are not supported; remove it".into(),
        ));
    }

    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        prog.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    }
    let mut seen: Vec<u32> = Vec::new();
    for (i, rule) in s.syscalls.iter().enumerate() {
        let field = |f: &str| format!("linux.seccomp.syscalls[{i}].{f}");
        if !rule.args.is_empty() {
            return Err((
                field("args"),
                "argument conditions are not supported by ballast-container; remove args (the rule then matches every call) or the rule".into(),
            ));
        }
        let ret = action(&rule.action, rule.errno_ret).map_err(|r| (field("action"), r))?;
        if rule.names.is_empty() {
            return Err((field("names"), "is empty; list syscall names".into()));
        }
        for name in &rule.names {
            // Unknown on this architecture: skipped, like libseccomp and crun.
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            if seen.contains(&nr) {
                continue;
            }
            seen.push(nr);
            if ret == default {
                continue;
            }
            prog.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
            prog.push(stmt(BPF_RET_K, ret));
        }
    }
    prog.push(stmt(BPF_RET_K, default));
    if prog.len() > MAX_INSNS {
        return Err((
            "linux.seccomp.syscalls".into(),
            format!(
                "compiles to {} BPF instructions, more than the kernel's {MAX_INSNS}; list fewer syscalls",
                prog.len()
            ),
        ));
    }
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> Seccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rules_compile_to_jeq_return_pairs_after_the_arch_check() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [
                {"names": ["mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]
        })))
        .unwrap();
        assert_eq!((p[0].code, p[0].k), (BPF_LD_W_ABS, OFF_ARCH));
        assert_eq!(p[1].k, AUDIT_ARCH);
        assert_eq!(p[2].k, RET_KILL_PROCESS);
        let n = p.len();
        let mkdirat = syscall_number("mkdirat").unwrap();
        let getpid = syscall_number("getpid").unwrap();
        // The unknown name and the second mkdirat entry add nothing.
        assert_eq!((p[n - 5].code, p[n - 5].k), (BPF_JMP_JEQ_K, mkdirat));
        assert_eq!(p[n - 4].k, RET_ERRNO | libc::EPERM as u32);
        assert_eq!(p[n - 3].k, getpid);
        assert_eq!(p[n - 2].k, RET_ERRNO | 38);
        assert_eq!((p[n - 1].code, p[n - 1].k), (BPF_RET_K, RET_ALLOW));
    }

    #[test]
    fn unsupported_parts_name_their_field() {
        let err = |j| compile(&profile(j)).unwrap_err().0;
        assert_eq!(
            err(serde_json::json!({"defaultAction": "SCMP_ACT_MAYBE"})),
            "linux.seccomp.defaultAction"
        );
        assert_eq!(
            err(
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]})
            ),
            "linux.seccomp.syscalls[1].args"
        );
        assert_eq!(
            err(
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]})
            ),
            "linux.seccomp.syscalls[0].action"
        );
    }
}
