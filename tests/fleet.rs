//! Story: a fleet of two arm64 machines updates itself. The test serves a channel
//! over HTTPS (a CA made for the run, given in each machine's seed as `ca_certs`)
//! and runs Debian's etcd on the host (guests reach both at 10.0.2.2); each
//! machine's config turns the update agent on with a short interval, an etcd
//! reboot lock with one slot and a user health check (an HTTP URL the test serves).
//!
//! 1. 0.2.0 is published: both machines install it and reboot by themselves, one
//!    at a time (the lock's history in etcd never shows two holders), and both come
//!    up ready on 0.2.0. A channel whose certificate comes from another CA is
//!    refused, with the URL and the reason. sysd's idle memory and CPU are read.
//! 2. Machine A's window is moved to a day that is not today; 0.3.0 is published
//!    and the user's application (the health URL) breaks with it. Machine B installs
//!    it (by the channel's delta from 0.2.0), reboots, the health check fails, and
//!    B rolls back to 0.2.0 with the check
//!    as the reason and never installs 0.3.0 again. Machine A stages 0.3.0 but does
//!    not reboot: its window is closed.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::vm::{free_port, Machine, Ssh};

const BOARD: &str = "qemu-arm64";
const BOOT: Duration = Duration::from_secs(480);
/// From publishing to both machines ready on the new version, at most.
const FLEET: Duration = Duration::from_secs(1500);

/// A static file server for the channel, plus `/healthz`: 200 while `healthy`.
fn serve(dir: PathBuf, healthy: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding the channel server");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let (dir, healthy) = (dir.clone(), healthy.clone());
            std::thread::spawn(move || answer(c, &dir, &healthy));
        }
    });
    port
}

fn answer(mut c: TcpStream, dir: &Path, healthy: &AtomicBool) {
    answer_on(&mut c, dir, healthy)
}

/// One request on `w` (plain TCP or TLS): the channel's files or `/healthz`.
fn answer_on(w: &mut dyn common::tls::Stream, dir: &Path, healthy: &AtomicBool) {
    let mut r = BufReader::new(&mut *w);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
    }
    drop(r);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    if path == "/healthz" {
        let st = if healthy.load(Ordering::SeqCst) {
            "200 OK"
        } else {
            "503 Service Unavailable"
        };
        let _ = write!(
            w,
            "HTTP/1.1 {st}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let rel = path.trim_start_matches("/stable/");
    let file = dir.join(rel);
    match std::fs::File::open(&file) {
        Ok(mut f) if !rel.contains("..") => {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = std::io::copy(&mut f, w);
        }
        _ => {
            let _ = write!(
                w,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

/// Debian's etcd on a free port, its data in `work`.
struct Etcd {
    port: u16,
    child: Child,
}

impl Etcd {
    fn start(work: &Path) -> Etcd {
        let (port, peer) = (free_port(), free_port());
        let data = work.join("etcd");
        let _ = std::fs::remove_dir_all(&data);
        let url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "fleet", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("fleet={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("etcd.log")).expect("etcd.log"))
            .spawn()
            .expect("starting etcd (Debian's etcd-server; scripts/setup installs it)");
        let e = Etcd { port, child };
        let start = Instant::now();
        while e
            .call("/v3/kv/range", serde_json::json!({"key": b64("x")}))
            .is_none()
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "etcd did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        e
    }

    fn call(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        let mut resp = ureq::post(format!("http://127.0.0.1:{}{path}", self.port))
            .send(body.to_string().as_str())
            .ok()?;
        serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
    }

    /// Every value the key ever had, oldest first: the lock's history.
    fn history(&self, key: &str) -> Vec<serde_json::Value> {
        let now = self
            .call("/v3/kv/range", serde_json::json!({"key": b64(key)}))
            .expect("etcd range");
        let head: i64 = now["header"]["revision"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut last_mod = 0;
        for rev in 1..=head {
            let v = self
                .call(
                    "/v3/kv/range",
                    serde_json::json!({"key": b64(key), "revision": rev.to_string()}),
                )
                .expect("etcd range at a revision");
            let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
                continue;
            };
            let m: i64 = kv["mod_revision"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            if m == last_mod {
                continue;
            }
            last_mod = m;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(kv["value"].as_str().unwrap_or_default())
                .expect("base64 value");
            out.push(serde_json::from_slice(&bytes).expect("semaphore JSON"));
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// The machines' config: the channel over HTTPS on port `https`, trusting `ca`.
fn user_data(http: u16, https: u16, ca: &str, etcd: u16, window: &str) -> String {
    let ca = ca.trim_end().replace('\n', "\n      ");
    format!(
        r#"#cloud-config
ca_certs:
  trusted:
    - |
      {ca}
ballast:
  update:
    channel: https://10.0.2.2:{https}/stable
    auto: true
    check_interval: 5s
    jitter: 2s
{window}    reboot_lock: {{ etcd: {{ endpoints: ["http://10.0.2.2:{etcd}"], slots: 1 }} }}
  health:
    - {{ http: "http://10.0.2.2:{http}/healthz" }}
"#
    )
}

struct Node {
    name: &'static str,
    disk: PathBuf,
    seed: PathBuf,
    port: u16,
    boots: u32,
}

impl Node {
    fn boot(&mut self, out: &Path, work: &Path) -> Machine {
        self.boots += 1;
        Machine::start_with(
            BOARD,
            out,
            self.port,
            work.join(format!("{}-boot{}.log", self.name, self.boots)),
            false,
            &[
                self.disk.as_os_str(),
                OsStr::new("--seed"),
                self.seed.as_os_str(),
            ],
        )
    }
}

fn publish(chan: &Path, built: &serde_json::Value) {
    let bundle = built["artifacts"]["bundle"]
        .as_str()
        .expect("bundle artifact");
    let out = common::ballast()
        .arg("publish")
        .arg(chan)
        .arg(bundle)
        .arg("--key")
        .arg(common::root().join("keys/dev.key"))
        .output()
        .expect("ballast publish");
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait until every machine has rebooted by itself and come up ready on `version`.
fn fleet_ready(nodes: &mut [Node], vms: &mut [Machine], out: &Path, work: &Path, version: &str) {
    let start = Instant::now();
    let mut done = vec![false; nodes.len()];
    while done.iter().any(|d| !d) {
        for i in 0..nodes.len() {
            if done[i] {
                continue;
            }
            if let Ok(Some(_)) = vms[i].child.try_wait() {
                eprintln!(
                    "fleet: {} rebooted by itself at {:.0} s",
                    nodes[i].name,
                    start.elapsed().as_secs_f64()
                );
                vms[i] = nodes[i].boot(out, work);
                let ready = vms[i].wait_for("ballast-ready", BOOT);
                assert!(
                    ready.contains(&format!("version={version}")),
                    "{}: {ready}",
                    nodes[i].name
                );
                done[i] = true;
            }
        }
        assert!(
            start.elapsed() < FLEET,
            "the fleet did not update within {FLEET:?}: {done:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn qemu_arm64_fleet_updates_itself_one_reboot_at_a_time() {
    let _story = common::story();
    let work = common::workdir("fleet");
    let built1 = common::Build::new(BOARD)
        .image("minimal")
        .version("0.1.0")
        .ssh_key()
        .shared();
    let key = built1.ssh_key();
    let out1 = built1.out.clone();
    let pubkey = key.with_extension("pub");
    let minimal = common::root().join("images/minimal.toml");
    let build = |v: &str, extra: &[&str]| {
        let mut args = vec![
            "--image",
            minimal.to_str().expect("utf-8"),
            "--version",
            v,
            "--ssh-key",
            pubkey.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        common::build(BOARD, &work.join(format!("out-{v}")), &args)
    };
    // The 0.2.0 the update stories upgrade to (rollback index 1).
    let built2 = built1.next_release(&[]).json;
    // 0.3.0 gives up on its health checks after 30 s; its rollback index may
    // not be below 0.2.0's.
    let built3 = build(
        "0.3.0",
        &[
            "--rollback-index",
            "1",
            "--kernel-arg",
            "ballast.health_timeout=30",
        ],
    );

    let chan = work.join("channel");
    let _ = std::fs::remove_dir_all(&chan);
    std::fs::create_dir_all(&chan).expect("channel dir");
    let healthy = Arc::new(AtomicBool::new(true));
    let http = serve(chan.clone(), healthy.clone());
    // The channel over HTTPS, its certificate from a CA the seeds give; and the
    // same channel with a certificate from a CA no machine trusts.
    let ca = common::tls::TestCa::new("fleet test CA");
    let https = serve_tls(ca.server(&["10.0.2.2"]), &chan, &healthy);
    let stranger = common::tls::TestCa::new("a CA no machine trusts");
    let https_bad = serve_tls(stranger.server(&["10.0.2.2"]), &chan, &healthy);
    let etcd = Etcd::start(&work);
    let config = |window: &str| user_data(http, https, &ca.pem, etcd.port, window);

    let md = work.join("meta-data");
    std::fs::write(&md, "instance-id: fleet-1\n").expect("meta-data");
    let mut nodes: Vec<Node> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let ud = work.join(format!("{name}.user-data"));
            std::fs::write(&ud, config("")).expect("user-data");
            let seed = common::seed_image(&ud, &md, &[], &work.join(format!("{name}-seed.img")));
            Node {
                name,
                disk: built1.vm_disk(&work, &format!("machine-{name}")),
                seed,
                port: free_port(),
                boots: 0,
            }
        })
        .collect();
    let mut vms: Vec<Machine> = Vec::new();
    for n in nodes.iter_mut() {
        let mut vm = n.boot(&out1, &work);
        vm.wait_for("ballast-ready version=0.1.0", BOOT);
        vms.push(vm);
    }
    let ssh = |n: &Node| Ssh {
        key: key.clone(),
        port: n.port,
    };
    for n in &nodes {
        let st: serde_json::Value = serde_json::from_str(&ssh(n).ok("osctl update status --json"))
            .expect("update status JSON");
        assert_eq!(st["auto"], true, "{st}");
        assert_eq!(st["lock"], "etcd", "{st}");
    }

    // 1. Publish 0.2.0: both update by themselves, one at a time.
    let published = Instant::now();
    publish(&chan, &built2);
    fleet_ready(&mut nodes, &mut vms, &out1, &work, "0.2.0");
    let fleet_time = published.elapsed();
    eprintln!(
        "fleet: publish to the whole fleet ready on 0.2.0: {:.0} s",
        fleet_time.as_secs_f64()
    );
    let history = etcd.history("/ballast/reboot-lock/semaphore");
    eprintln!("fleet: lock history: {history:?}");
    let holders: Vec<usize> = history
        .iter()
        .map(|v| v["holders"].as_array().map_or(0, Vec::len))
        .collect();
    assert!(
        holders.iter().all(|h| *h <= 1),
        "two machines held the lock at once: {history:?}"
    );
    let ever: std::collections::BTreeSet<String> = history
        .iter()
        .flat_map(|v| v["holders"].as_array().cloned().unwrap_or_default())
        .filter_map(|h| h.as_str().map(String::from))
        .collect();
    assert_eq!(
        ever.len(),
        2,
        "both machines took the lock in turn: {history:?}"
    );
    // Released once ready.
    assert_eq!(holders.last(), Some(&0), "{history:?}");

    // A channel whose certificate does not chain to a trusted CA is refused, and
    // the agent says which URL and why.
    let bad_url = format!("https://10.0.2.2:{https_bad}/stable");
    let doc_bad = config("").replace(&format!("https://10.0.2.2:{https}/stable"), &bad_url);
    ssh(&nodes[0]).ok_with_input("osctl config apply -", doc_bad.as_bytes());
    ssh(&nodes[0]).ok("osctl update check");
    let start = Instant::now();
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ssh(&nodes[0]).ok("osctl update status --json"))
                .expect("update status JSON");
        let err = st["last_error"].as_str().unwrap_or_default();
        if err.contains(&bad_url) {
            assert!(
                err.contains("certificate") && err.contains("UnknownIssuer"),
                "{st}"
            );
            eprintln!("fleet: wrong CA refused: {err}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the wrong CA was not refused: {st}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    ssh(&nodes[0]).ok_with_input("osctl config apply -", config("").as_bytes());

    // Idle figures of sysd (the agent is a thread of it): its own VmRSS and CPU
    // ticks over 20 s, on 0.2.0 with nothing to install.
    let idle = ssh(&nodes[1]).ok(
        "pid=; for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sysd ] && pid=${p#/proc/}; done; \
         test -n \"$pid\" || { echo no sysd; exit 1; }; echo pid=$pid; \
         grep -E '^(VmRSS|VmHWM)' /proc/$pid/status; \
         a=$(cut -d' ' -f14,15 /proc/$pid/stat); sleep 20; b=$(cut -d' ' -f14,15 /proc/$pid/stat); \
         echo ticks_before=$a ticks_after=$b hz=$(getconf CLK_TCK 2>/dev/null || echo 100)",
    );
    eprintln!("fleet: sysd idle (its own /proc/PID; utime stime ticks 20 s apart):\n{idle}");

    // 2. A's window closes; 0.3.0 breaks the user's application.
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 86_400;
    // 1970-01-01 was a Thursday (3 with Monday = 0); three days on is not today
    // in any zone.
    let other_day =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((today + 3 + 3) % 7) as usize];
    let closed = format!(
        "    window: {{ days: [{other_day}], start: \"02:00\", length: 1h, timezone: Europe/Berlin }}\n"
    );
    let doc_a = config(&closed);
    let applied = ssh(&nodes[0]).run_with_input("osctl config apply -", doc_a.as_bytes());
    assert!(
        applied.status.success(),
        "config apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    healthy.store(false, Ordering::SeqCst);
    publish(&chan, &built3);

    // B: installs, reboots, fails the check, rolls back to 0.2.0 by itself.
    let b = 1;
    // By the channel's delta from the running 0.2.0, not the whole bundle.
    vms[b].wait_for("update agent: taking the delta 0.2.0 -> 0.3.0", FLEET);
    vms[b].wait_exit(FLEET);
    let console = vms[b].console.join("\n");
    assert!(
        console.contains("update agent: 0.3.0 staged") && !console.contains("delta refused"),
        "B did not stage 0.3.0 by its delta:\n{console}"
    );
    vms[b] = nodes[b].boot(&out1, &work);
    vms[b].wait_for("user health check", BOOT);
    let e = vms[b].wait_exit(Duration::from_secs(300));
    assert!(e.success(), "QEMU exited with {e}");
    vms[b] = nodes[b].boot(&out1, &work);
    let rb = vms[b].wait_for("ballast-rollback", BOOT);
    assert!(rb.contains("from=0.3.0 to=0.2.0"), "{rb}");
    assert!(
        rb.contains("health check `http http://10.0.2.2:") && rb.contains("HTTP 503"),
        "{rb}"
    );
    vms[b].wait_for("ballast-ready version=0.2.0", BOOT);
    let b_ready = Instant::now();

    // A: 0.3.0 staged, waiting for its window; it never rebooted.
    let start = Instant::now();
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ssh(&nodes[0]).ok("osctl update status --json"))
                .expect("update status JSON");
        if st["staged"] == "0.3.0" && st["state"] == "waiting for window" {
            assert_eq!(st["window_open"], false, "{st}");
            assert_eq!(st["lock_held"], false, "{st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "A did not stage 0.3.0: {st}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        vms[0].child.try_wait().ok().flatten().is_none(),
        "A rebooted outside its window"
    );
    // Several checks (5 s apart) after its rollback, B still runs 0.2.0 and has
    // not installed 0.3.0 again (A's checks above took that long already).
    if let Some(rest) = Duration::from_secs(30).checked_sub(b_ready.elapsed()) {
        std::thread::sleep(rest);
    }
    let st = ssh(&nodes[b]).status();
    assert_eq!(st["version"], "0.2.0", "{st}");
    assert!(st["pending_update"].is_null(), "{st}");
    assert_eq!(
        st["agent"]["rolled_back"],
        serde_json::json!(["0.3.0"]),
        "{st}"
    );
    assert!(st["agent"]["available"].is_null(), "{st}");
    assert!(
        vms[b].child.try_wait().ok().flatten().is_none(),
        "B rebooted again"
    );

    let st = ssh(&nodes[0]).status();
    assert_eq!(st["version"], "0.2.0", "{st}");
    eprintln!(
        "fleet: publish to ready: {:.0} s (2 machines, one lock slot)",
        fleet_time.as_secs_f64()
    );
    drop(etcd);
}

/// The channel (and `/healthz`) over HTTPS with `config`'s certificate.
fn serve_tls(config: Arc<rustls::ServerConfig>, dir: &Path, healthy: &Arc<AtomicBool>) -> u16 {
    let (dir, healthy) = (dir.to_path_buf(), healthy.clone());
    common::tls::serve(config, move |s| answer_on(s, &dir, &healthy))
}
