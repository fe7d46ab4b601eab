//! Story: a system container is a plain OCI bundle. The bundles Ballast puts
//! in its image run, unchanged, under `crun` — here on the build host, taken
//! out of a freshly built x86_64 image (the minimal one the update story
//! boots: the bundles are the same in every image, and it is built once per
//! test run), in a private mount and network namespace so that nothing
//! touches the host's network or clock.
//!
//! Needs root and crun (scripts/setup installs it).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

/// Root A's squashfs, unpacked.
fn unpack_root(disk: &Path, work: &Path) -> std::path::PathBuf {
    let img = common::extract_partition(disk, 2, &work.join("root-a.img"));
    let dir = work.join("root");
    let _ = fs::remove_dir_all(&dir);
    let out = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&dir)
        .arg(&img)
        .output()
        .expect("unsquashfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Run `bundle` under crun in new mount and network namespaces where the
/// image's userland is mounted where the bundle expects it. Stops it after
/// `seconds` if it is still running (`timeout` then exits 124). Returns
/// (exit code, stdout+stderr).
fn crun(root: &Path, bundle: &str, seconds: u32, work: &Path) -> (i32, String) {
    let userland = root.join("usr/lib/ballast/userland");
    let bundle_dir = root.join("usr/lib/ballast/system").join(bundle);
    // The bundle names absolute host paths (its root, /run/ballast, /sys);
    // give them to it inside a private mount namespace. /usr/lib/ballast is
    // created empty on the host if missing, as a mount point only.
    fs::create_dir_all("/usr/lib/ballast").unwrap();
    let state = work.join(format!("crun-state-{bundle}"));
    let script = format!(
        r#"set -e
mount --make-rprivate /
mount -t tmpfs ballast /usr/lib/ballast
mkdir -p /usr/lib/ballast/userland
mount --bind "{userland}" /usr/lib/ballast/userland
mount -t tmpfs run /run
# What sysd makes before it starts the bundles: /run/ballast, and the
# directory of a ready file (the time container binds it in to write it).
mkdir -p /run/ballast/time
# crun 1.8 refuses hybrid cgroup hosts; hide the v2 tree there.
if [ -d /sys/fs/cgroup/unified ]; then mount -t tmpfs hide-v2 /sys/fs/cgroup/unified; fi
# /sys/class/net shows the namespace of whoever mounted sysfs: show ours.
mkdir -p "{sysfs}"
mount -t sysfs sysfs "{sysfs}"
mount --bind "{sysfs}/class/net" /sys/class/net
ip link set lo up 2>/dev/null || true
set +e
timeout -s TERM {seconds} crun --root "{state}" run --bundle "{bundle_dir}" ballast-crun-{bundle}
code=$?
crun --root "{state}" delete -f ballast-crun-{bundle} >/dev/null 2>&1
exit $code
"#,
        userland = userland.display(),
        sysfs = work.join(format!("sysfs-{bundle}")).display(),
        state = state.display(),
        bundle_dir = bundle_dir.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "-n", "--propagation", "private", "sh", "-c"])
        .arg(script)
        .output()
        .expect("unshare + crun");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The system containers ask for a negative `oomScoreAdj` (the OOM killer takes
/// a user's container before them), which is checked here. Lowering it needs
/// CAP_SYS_RESOURCE, which sysd has on the device but a build host that is
/// itself a container may not (its bounding set lacks it, so even root cannot);
/// there the field is taken out of the unpacked copy before crun runs it, and
/// the rest of the bundle stays as built.
fn keep_oom_standing_or_drop_it(root: &Path) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let can_lower = bounding & (1 << 24) != 0; // CAP_SYS_RESOURCE
    for bundle in ["network", "time", "ssh"] {
        let path = root
            .join("usr/lib/ballast/system")
            .join(bundle)
            .join("config.json");
        let text = fs::read_to_string(&path).expect("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&text).expect("config.json");
        let adj = config["process"]["oomScoreAdj"].as_i64();
        assert!(
            adj.is_some_and(|a| a < 0),
            "{bundle}: oomScoreAdj {adj:?}, expected below 0"
        );
        if !can_lower {
            if let Some(p) = config["process"].as_object_mut() {
                p.remove("oomScoreAdj");
            }
            fs::write(&path, config.to_string()).expect("writing config.json");
            eprintln!("crun: {bundle}: oomScoreAdj {adj:?} left out (no CAP_SYS_RESOURCE here)");
        }
    }
}

#[test]
fn the_image_system_bundles_run_under_crun() {
    if !Path::new("/usr/bin/crun").exists() {
        panic!("crun is missing: run scripts/setup");
    }
    let _story = common::story();
    let work = common::workdir("crun");
    let built = common::Build::new("qemu-x86_64")
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let root = unpack_root(&built.disk(), &work);
    keep_oom_standing_or_drop_it(&root);

    // network: in a namespace with only loopback it finds no interface and
    // says so — after crun set up its mounts, namespaces and capabilities.
    let (code, text) = crun(&root, "network", 20, &work);
    assert!(
        text.contains("network: no Ethernet interface found"),
        "crun did not run the network bundle's program: {text}"
    );
    assert_eq!(code, 1, "{text}");

    // time: Ballast's NTP client (`sysd --time-sync`) reads the image's
    // sources, says it is ready, and keeps asking (there is no network here:
    // its name lookups wait out their timeouts) until it is told to stop,
    // which it does at once.
    let (code, text) = crun(&root, "time", 5, &work);
    assert!(
        text.contains("time: asking 2.debian.pool.ntp.org (from /usr/lib/ballast/time/sources)"),
        "the time client did not start: {text}"
    );
    assert!(!text.contains("cannot write"), "no ready file: {text}");
    assert_eq!(
        code, 124,
        "the time client should still be running when stopped: {text}"
    );
}
