//! sysd as a user meets it: a root directory with system container definitions, sysd
//! started with `--root`, everything checked through the control socket, the console
//! line, the ready file, the slot state and the log files.
//!
//! The containers are busybox shell loops on a read-only userland, in a mount and pid
//! namespace, run by ballast-container: this needs root and a static busybox.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ballast_control::{client, Request, Response, Service, ServiceState, Status};
use ballast_slot::{uboot, SlotId};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn service(root: &Path, name: &str, manifest: &str, script: &str) {
    let dir = root.join("usr/lib/ballast/system").join(name);
    write(&dir.join("manifest.toml"), manifest);
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/bin/sh", "-c", script],
            "cwd": "/",
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "user": {"uid": 0, "gid": 0}
        },
        "root": {"path": root.join("usr/lib/ballast/userland"), "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=1m"]}
        ],
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
    });
    write(&dir.join("config.json"), &config.to_string());
}

/// The shared read-only userland: a static busybox, as the image's Debian userland
/// stands for on a device.
fn userland(root: &Path) {
    let bin = root.join("usr/lib/ballast/userland/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["dev", "proc"] {
        std::fs::create_dir_all(root.join("usr/lib/ballast/userland").join(d)).unwrap();
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("a static busybox is needed: apt-get install busybox-static");
    std::fs::copy(bb, bin.join("busybox")).unwrap();
    for a in ["sh", "echo", "sleep", "yes", "head", "httpd", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sysd {
    child: Child,
    lines: mpsc::Receiver<String>,
    socket: PathBuf,
}

impl Drop for Sysd {
    fn drop(&mut self) {
        // A failed assertion must not leave containers behind: ask sysd to stop them.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(12);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sysd {
    fn start(root: &Path, pid1: u32) -> Sysd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sysd"))
            .arg("--root")
            .arg(root)
            .arg("--pid1")
            .arg(pid1.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Sysd {
            child,
            lines: rx,
            socket: root.join("run/ballast/sysd.sock"),
        }
    }

    fn status(&self) -> Status {
        match client::call(&self.socket, &Request::Status).unwrap() {
            Response::Status(s) => s,
            other => panic!("status answered {other:?}"),
        }
    }

    fn service(&self, name: &str) -> Service {
        self.status()
            .services
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in status"))
    }

    fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Status) -> bool) -> Status {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {s:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn svc<'a>(s: &'a Status, name: &str) -> &'a Service {
    s.services.iter().find(|x| x.name == name).unwrap()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn sysd_supervises_reports_restarts_rotates_and_stops() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test runs containers: run it as root (sudo -E cargo test -p ballast-sysd)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        &root.join("usr/lib/os-release"),
        "NAME=Ballast\nVERSION_ID=\"9.9.9\"\n",
    );
    write(&root.join("proc/cmdline"), "console=ttyS0 ballast.slot=b\n");
    // U-Boot slot state: b freshly installed and trying.
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let mut st = uboot::State::new(SlotId::A);
    st.install(SlotId::B, 3);
    st.set_default(SlotId::B);
    uboot::BootDir::new(root.join("boot"))
        .initialize(&st)
        .unwrap();

    userland(root);
    let port = free_port();
    // Writes 3.5 MB at start, so its log rotates at once.
    service(
        root,
        "base",
        "required = true\n[restart]\nbackoff_initial_ms = 300\n[health]\nrunning_ms = 300\n",
        "echo base-start; yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 3500000; while :; do sleep 1; done",
    );
    service(
        root,
        "web",
        &format!("required = true\nafter = [\"base\"]\n[health]\ntcp = \"127.0.0.1:{port}\"\n"),
        &format!("echo web-start; exec httpd -f -p 127.0.0.1:{port} -h /"),
    );
    service(
        root,
        "crashy",
        "[restart]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n",
        "echo crash-now; exit 3",
    );
    service(root, "loop1", "after = [\"loop2\"]\n", "sleep 100");
    service(root, "loop2", "after = [\"loop1\"]\n", "sleep 100");
    service(root, "broken", "requried = true\n", "true");

    // Stands in for PID 1: reboot/poweroff are signals to it.
    let mut pid1 = Command::new("sleep").arg("600").spawn().unwrap();
    let t0 = Instant::now();
    let sysd = Sysd::start(root, pid1.id());

    // 1. The ready line on stdout, once, with the version and the booted slot.
    let line = sysd
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("no ready line within 30 s");
    let ready_after = t0.elapsed();
    assert_eq!(line, "ballast-ready version=9.9.9 slot=b");
    assert_eq!(
        std::fs::read_to_string(root.join("run/ballast/ready")).unwrap(),
        "ballast-ready version=9.9.9 slot=b\n"
    );
    eprintln!("ready after {ready_after:?}");

    // 2. Status: healthy services, slot b marked good, broken definitions reported.
    let s = sysd.status();
    assert!(s.ready);
    assert_eq!(s.version, "9.9.9");
    assert_eq!(s.slot, Some(SlotId::B));
    let b = s.slots.iter().find(|x| x.slot == SlotId::B).unwrap();
    assert_eq!(b.health.as_str(), "good", "{s:#?}");
    assert_eq!(svc(&s, "base").state, ServiceState::Healthy);
    assert_eq!(svc(&s, "web").state, ServiceState::Healthy);
    assert_eq!(svc(&s, "loop1").state, ServiceState::Failed);
    assert!(
        s.errors
            .iter()
            .any(|e| e.contains("broken/manifest.toml") && e.contains("requried")),
        "{:?}",
        s.errors
    );
    assert!(
        s.errors.iter().any(|e| e.contains("cycle")),
        "{:?}",
        s.errors
    );
    let names: Vec<&str> = s.services.iter().map(|x| x.name.as_str()).collect();
    let pos = |n| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("base") < pos("web"));

    // 3. The crash loop goes on beside them, with backoff.
    let s = sysd.wait_for("crashy restarted 3 times", 10, |s| {
        svc(s, "crashy").restarts >= 3
    });
    assert_eq!(
        svc(&s, "crashy").last_exit.as_deref(),
        Some("exited with status 3")
    );

    // 4. Kill a service: restarted after its backoff, with a new pid.
    let old = sysd.service("base").pid.unwrap();
    // SAFETY: signalling a container process this test's sysd started.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let s = sysd.wait_for("base restarted", 10, |s| {
        let b = svc(s, "base");
        b.restarts == 1 && b.pid.is_some() && b.pid != Some(old)
    });
    let restart_after = killed.elapsed();
    assert_eq!(
        svc(&s, "base").last_exit.as_deref(),
        Some("killed by signal 9")
    );
    assert!(
        restart_after >= Duration::from_millis(250),
        "restarted before its backoff: {restart_after:?}"
    );
    eprintln!("base restarted {restart_after:?} after SIGKILL");

    // 5. Logs rotated: 7 MB written, .1 and .2 at 1 MiB, nothing older.
    let logs = root.join("state/ballast/logs");
    // Let the second run's 3.5 MB land: wait until the current file stops growing.
    let cur = || {
        std::fs::metadata(logs.join("base.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut last = cur();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = cur();
        if now == last {
            break;
        }
        last = now;
    }
    let size = |n: &str| {
        std::fs::metadata(logs.join(n))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    assert_eq!(size("base.log.1"), 1 << 20);
    assert_eq!(size("base.log.2"), 1 << 20);
    assert!(size("base.log") <= 1 << 20);
    assert!(!logs.join("base.log.3").exists());

    // 6. Logs over the socket: last lines of the crash loop.
    let mut got = Vec::new();
    client::stream(
        &sysd.socket,
        &Request::Logs {
            service: "crashy".into(),
            lines: 2,
            follow: false,
        },
        |r| {
            got.push(r);
            true
        },
    )
    .unwrap();
    assert_eq!(got, vec![Response::LogLine("crash-now".into()); 2]);

    // 7. Stop keeps a service stopped; start brings it back.
    let r = client::call(
        &sysd.socket,
        &Request::Stop {
            service: "web".into(),
        },
    )
    .unwrap();
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    let web_pid = svc(&s, "web").pid.unwrap();
    sysd.wait_for("web stopped", 10, |s| {
        svc(s, "web").state == ServiceState::Stopped && svc(s, "web").pid.is_none()
    });
    assert!(!alive(web_pid));
    let r = client::call(
        &sysd.socket,
        &Request::Start {
            service: "web".into(),
        },
    )
    .unwrap();
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    sysd.wait_for("web healthy again", 15, |s| {
        svc(s, "web").state == ServiceState::Healthy
    });
    let r = client::call(
        &sysd.socket,
        &Request::Stop {
            service: "nope".into(),
        },
    )
    .unwrap();
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("nope")),
        "{r:?}"
    );

    // 8. Poweroff asks "PID 1" with SIGTERM.
    let r = client::call(&sysd.socket, &Request::Poweroff).unwrap();
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
    let st = pid1.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGTERM));

    // 9. SIGTERM: every service stops, sysd exits 0 within 10 s, no second ready line.
    let pids: Vec<u32> = sysd
        .status()
        .services
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    assert!(pids.len() >= 2);
    let mut sysd = sysd;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sysd.child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(st) = sysd.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sysd did not exit within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("sysd stopped everything in {:?}", t.elapsed());
    assert_eq!(status.code(), Some(0));
    for p in pids {
        assert!(!alive(p), "pid {p} survived sysd's shutdown");
    }
    assert!(sysd
        .lines
        .try_iter()
        .all(|l| !l.starts_with("ballast-ready")));
    assert!(!sysd.socket.exists());
}
