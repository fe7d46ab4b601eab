//! A user's story: a container directory made with `crun spec` runs under ballast-container with the
//! isolation its config asks for, and prints exactly what it prints under `crun run`.
//!
//! Runs as root, needs crun and busybox-static (scripts/setup).

mod support;

use std::fs;

use serde_json::json;
use support::{container_dir, run_crun, run_ours, wait};

/// What the container reports about itself (busybox sh).
const PROBE: &str = r#"echo "pid=$$"; echo "host=$(hostname)"; echo "cwd=$(pwd)"; echo "foo=$FOO"; echo "args=$0 $1";
grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status;
if touch /written 2>/dev/null; then echo root=rw; else echo root=ro; fi;
if touch /dev/shm/ok 2>/dev/null; then echo shm=rw; else echo shm=ro; fi;
echo id="$(id -u):$(id -g)"; echo nofile="$(ulimit -n)";
echo timer_list="$(cat /proc/timer_list | wc -c)" firmware="$(ls /sys/firmware | wc -l)";
if echo x 2>/dev/null >/proc/sys/kernel/hostname; then echo procsys=rw; else echo procsys=ro; fi; ls /proc/1/ns >/dev/null && echo proc=ok;
cat /proc/self/cgroup | grep -c . >/dev/null; exit 7"#;

#[test]
fn same_container_dir_same_output_as_crun() {
    let b = container_dir(&["sh", "-c", PROBE, "zero", "one"], |_| {});
    let (ours, ours_status) = run_ours("h10-probe", &b);
    let (crun, crun_status) = run_crun("h10-probe-crun", &b);

    assert_eq!(ours_status, 7, "exit code passes through; output:\n{ours}");
    let expect = [
        "pid=1",
        "host=h10",
        "cwd=/work",
        "foo=bar",
        "args=zero one",
        // crun spec's bounding set: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
        "CapEff:\t0000000020000420",
        "CapBnd:\t0000000020000420",
        "NoNewPrivs:\t1",
        "root=ro",
        "shm=rw",
        "id=0:0",
        "nofile=1024",
        // maskedPaths: a file reads empty, a directory is an empty tmpfs.
        "timer_list=0 firmware=0",
        "procsys=ro",
        "proc=ok",
    ];
    for line in expect {
        assert!(
            ours.lines().any(|l| l == line),
            "missing {line:?} in:\n{ours}"
        );
    }
    assert!(!b.path().join("rootfs/written").exists());
    assert_eq!(
        ours, crun,
        "ours vs crun run on the same container directory"
    );
    assert_eq!(ours_status, crun_status);
}

#[test]
fn namespaces_and_memory_limit_seen_from_the_host() {
    let b = container_dir(&["sleep", "30"], |v| {
        v["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
        v["linux"]["resources"]["pids"] = json!({"limit": 32});
    });
    let id = "h10-limits";
    let config = ballast_container::load(b.path()).expect("load");
    let started =
        ballast_container::start(id, b.path(), &config, ballast_container::Stdio3::inherit())
            .expect("start");
    let pid = started.pid;

    for ns in ["pid", "uts", "mnt", "net", "ipc"] {
        let theirs = fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns link");
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns link");
        assert_ne!(theirs, ours, "{ns} namespace is shared with the host");
    }
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cg.contains(&format!("/ballast/{id}")),
        "not moved to its cgroup:\n{cg}"
    );

    let dirs = ballast_container::cgroup_dirs(id);
    let memory = dirs
        .iter()
        .find_map(|d| {
            fs::read_to_string(d.join("memory.max"))
                .or_else(|_| fs::read_to_string(d.join("memory.limit_in_bytes")))
                .ok()
        })
        .expect("a memory limit file in the container's cgroup");
    assert_eq!(memory.trim(), (64u64 << 20).to_string());
    let pids = dirs
        .iter()
        .find_map(|d| fs::read_to_string(d.join("pids.max")).ok())
        .expect("pids.max in the container's cgroup");
    assert_eq!(pids.trim(), "32");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(wait(pid), 128 + libc::SIGKILL);
    ballast_container::cleanup(id).expect("cleanup");
    assert!(
        ballast_container::cgroup_dirs(id).is_empty(),
        "cgroup left behind"
    );
}

#[test]
fn cleanup_kills_what_is_left_in_the_cgroup() {
    // The shell forks a background sleep and exits; the sleep is still in the cgroup
    // (the pid namespace's init exiting kills it too, which is the kernel's job; here
    // the container has no pid namespace so only cleanup can).
    let b = container_dir(&["sh", "-c", "sleep 30 & echo started"], |v| {
        let ns = v["linux"]["namespaces"].as_array_mut().expect("namespaces");
        ns.retain(|n| n["type"] != "pid");
    });
    let id = "h10-leftover";
    let (out, status) = {
        let config = ballast_container::load(b.path()).expect("load");
        let (r, w) = support::pipe();
        let started = ballast_container::start(
            id,
            b.path(),
            &config,
            ballast_container::Stdio3 {
                stdin: std::os::fd::AsFd::as_fd(&std::io::stdin()),
                stdout: std::os::fd::AsFd::as_fd(&w),
                stderr: std::os::fd::AsFd::as_fd(&std::io::stderr()),
            },
        )
        .expect("start");
        drop(w);
        let status = wait(started.pid);
        let mut line = [0u8; 8];
        let n = std::io::Read::read(&mut fs::File::from(r), &mut line).expect("read");
        (String::from_utf8_lossy(&line[..n]).into_owned(), status)
    };
    assert_eq!((out.trim(), status), ("started", 0));
    let dirs = ballast_container::cgroup_dirs(id);
    let procs = fs::read_to_string(dirs[0].join("cgroup.procs")).expect("procs");
    assert_eq!(
        procs.lines().count(),
        1,
        "the background sleep is in the cgroup"
    );
    ballast_container::cleanup(id).expect("cleanup");
    assert!(ballast_container::cgroup_dirs(id).is_empty());
}

#[test]
fn a_missing_program_is_an_error_naming_it() {
    let b = container_dir(&["/bin/nope"], |_| {});
    let config = ballast_container::load(b.path()).expect("load");
    let err = ballast_container::start(
        "h10-nope",
        b.path(),
        &config,
        ballast_container::Stdio3::inherit(),
    )
    .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("exec process.args[0] (/bin/nope)"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
    assert!(ballast_container::cgroup_dirs("h10-nope").is_empty());
}

#[test]
fn config_errors_name_the_file_and_field() {
    let b = container_dir(&["true"], |v| {
        v["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_TELEPORT"]);
    });
    let err = ballast_container::load(b.path()).expect_err("bad cap");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json")
            && msg.contains("process.capabilities.bounding")
            && msg.contains("CAP_TELEPORT"),
        "{msg}"
    );

    fs::write(b.path().join("config.json"), "{\"process\": {").expect("write");
    let msg = ballast_container::load(b.path())
        .expect_err("bad json")
        .to_string();
    assert!(msg.contains("config.json:1:"), "{msg}");
}

#[test]
fn user_caps_mounts_and_sysctl_match_crun() {
    let b = container_dir(
        &[
            "sh",
            "-c",
            r#"echo id="$(id -u):$(id -g)" groups="$(id -G)";
grep -E '^(CapEff|CapPrm|CapInh|CapBnd|CapAmb)' /proc/self/status;
cat /etc/hello.txt; ls /data;
if touch /data/new 2>/dev/null; then echo data=rw; else echo data=ro; fi;
grep ' /scratch ' /proc/self/mounts | cut -d' ' -f3,4;
echo forward="$(cat /proc/sys/net/ipv4/ip_forward)";
if echo 0 2>/dev/null >/proc/sys/net/ipv4/ip_forward; then echo procsys=rw; else echo procsys=ro; fi"#,
        ],
        |v| {
            v["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20]});
            let caps = json!(["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
            v["process"]["capabilities"] = json!({
                "bounding": caps, "permitted": caps, "effective": caps, "inheritable": caps,
                "ambient": ["CAP_NET_BIND_SERVICE"],
            });
            v["process"]["noNewPrivileges"] = json!(false);
            let mounts = v["mounts"].as_array_mut().expect("mounts");
            mounts.push(json!({"destination": "/etc/hello.txt", "type": "bind",
                "source": "hello.txt", "options": ["bind", "ro"]}));
            mounts.push(json!({"destination": "/data", "type": "bind",
                "source": "data", "options": ["rbind", "ro", "nosuid"]}));
            mounts.push(json!({"destination": "/scratch", "type": "tmpfs",
                "source": "tmpfs", "options": ["nodev", "size=1m", "mode=1777"]}));
            v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        },
    );
    fs::write(
        b.path().join("hello.txt"),
        "hello from the container directory\n",
    )
    .expect("write");
    fs::create_dir(b.path().join("data")).expect("mkdir");
    fs::write(b.path().join("data/a-file"), "").expect("write");
    fs::create_dir(b.path().join("rootfs/etc")).expect("mkdir");

    let (ours, ours_status) = run_ours("h10-user", &b);
    let (crun, crun_status) = run_crun("h10-user-crun", &b);
    assert_eq!(ours_status, 0, "{ours}");
    for line in [
        "id=1000:1000 groups=1000 10 20",
        // NET_BIND_SERVICE (bit 10) ambient survives exec as uid 1000; KILL does not.
        "CapEff:\t0000000000000400",
        "CapAmb:\t0000000000000400",
        "CapBnd:\t0000000000000420",
        "hello from the container directory",
        "a-file",
        "data=ro",
        "tmpfs rw,nodev,relatime,size=1024k",
        "forward=1",
        "procsys=ro",
    ] {
        assert!(
            ours.lines().any(|l| l == line),
            "missing {line:?} in:\n{ours}"
        );
    }
    assert_eq!(
        ours, crun,
        "ours vs crun run on the same container directory"
    );
    assert_eq!(ours_status, crun_status);
}

#[test]
fn seccomp_profile_denies_mkdir_like_crun() {
    for nnp in [true, false] {
        let b = container_dir(
            &[
                "sh",
                "-c",
                "busybox mkdir /tmp/x 2>&1; echo mkdir=$?; touch /tmp/file && echo touch=ok; echo ok",
            ],
            |v| {
                // A writable root: without the filter, mkdir would succeed.
                v["root"]["readonly"] = json!(false);
                v["process"]["noNewPrivileges"] = json!(nnp);
                v["linux"]["seccomp"] = json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                    "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_syscall"],
                        "action": "SCMP_ACT_ERRNO"}],
                });
            },
        );
        let (ours, ours_status) = run_ours("h10-seccomp", &b);
        assert_eq!(ours_status, 0, "{ours}");
        assert!(
            ours.contains(
                "mkdir: can't create directory '/tmp/x': Operation not permitted\nmkdir=1\n"
            ),
            "noNewPrivileges={nnp}: {ours}"
        );
        assert!(ours.ends_with("touch=ok\nok\n"), "{ours}");
        assert!(!b.path().join("rootfs/tmp/x").exists());
        assert!(b.path().join("rootfs/tmp/file").exists());
        fs::remove_file(b.path().join("rootfs/tmp/file")).expect("rm");

        let (crun, crun_status) = run_crun("h10-seccomp-crun", &b);
        assert_eq!((ours.as_str(), ours_status), (crun.as_str(), crun_status));
    }
}

#[test]
fn seccomp_errno_ret_is_the_errno_the_program_sees() {
    // errnoRet picks the errno the denied call returns.
    let b = container_dir(&["sh", "-c", "busybox mkdir /tmp/y 2>&1; echo ok"], |v| {
        v["root"]["readonly"] = json!(false);
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                "errnoRet": 28}],
        });
    });
    let (ours, status) = run_ours("h10-seccomp-enospc", &b);
    let (crun, crun_status) = run_crun("h10-seccomp-enospc-crun", &b);
    assert_eq!(status, 0, "{ours}");
    assert!(ours.contains("No space left on device"), "{ours}");
    assert_eq!((ours, status), (crun, crun_status));
}

#[test]
fn seccomp_args_are_refused_naming_the_field() {
    let b = container_dir(&["true"], |v| {
        v["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}],
        });
    });
    let msg = ballast_container::load(b.path())
        .expect_err("args")
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("linux.seccomp.syscalls[0].args"),
        "{msg}"
    );
}
