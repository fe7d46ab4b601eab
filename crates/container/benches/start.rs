//! Start latency: spawn → exit of `/bin/true` in the same container directory, ours vs `crun run`,
//! median of 20. Run as root: `cargo bench -p ballast-container`.
//!
//! Both include cgroup creation and removal. On a hybrid cgroup host `crun` runs behind
//! a small `unshare` wrapper (see tests/support); its cost alone is measured and printed
//! too, so it can be subtracted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    f(); // warm caches
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let b = support::container_dir(&["/bin/true"], |_| {});
    let ours = time(|| {
        let (_, status) = support::run_ours("h10-bench", &b);
        assert_eq!(status, 0);
    });
    let mut n = 0;
    let crun = time(|| {
        n += 1;
        let (_, status) = support::run_crun(&format!("h10-bench-crun-{n}"), &b);
        assert_eq!(status, 0);
    });
    let wrapper = support::crun_needs_wrapper().then(|| {
        time(|| {
            let st = Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs hide-v2 /sys/fs/cgroup/unified && exec true")
                .status()
                .expect("unshare");
            assert!(st.success());
        })
    });
    println!(
        "start latency, /bin/true in a crun-spec busybox container directory, median of {RUNS}:"
    );
    println!(
        "  ballast-container start+wait+cleanup: {:>8.2} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "  crun run:                             {:>8.2} ms",
        crun.as_secs_f64() * 1e3
    );
    if let Some(w) = wrapper {
        println!(
            "  (of which unshare wrapper, hybrid host: {:>6.2} ms)",
            w.as_secs_f64() * 1e3
        );
    }
}
