//! sysd: the system-container supervisor and the device's control socket.
//!
//! Started by PID 1 after the root, /state, /boot and /run are mounted. It reads the
//! system container definitions, starts them in dependency order, restarts them with
//! backoff, keeps their logs, announces `ballast-ready` and marks the booted slot good
//! once every required one is healthy, answers `osctl` on the control socket, and on
//! SIGTERM stops everything and exits 0. It never panics on input or environment and
//! never exits because one service is broken.
//!
//! `sysd --root DIR` reads and writes every path under DIR instead of `/` (tests, and
//! trying definitions on a workstation); in that mode Reboot/Poweroff only signal the
//! process given with `--pid1 PID`, never the real PID 1.

mod firstboot;
mod health;
mod logs;
mod manifest;
mod runtime;
mod server;
mod slot;
mod supervisor;
mod update;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ballast_slot::SlotId;

use supervisor::{Action, Exit, Sig, Supervisor};

/// How long shutdown waits for the services before exiting anyway (the contract gives
/// sysd 10 s; SIGKILL goes out at 5 s).
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(9_000);
const TICK: Duration = Duration::from_millis(50);

static TERM: AtomicBool = AtomicBool::new(false);

/// Lock a mutex, surviving a panicked holder (sysd must keep serving).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// sysd's own messages go to its stderr (the console on the device).
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "sysd: {msg}");
}

/// Every path sysd touches, under one root.
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn system(&self) -> PathBuf {
        self.p("usr/lib/ballast/system")
    }
    /// System containers the applied first-boot config adds.
    fn applied_system(&self) -> PathBuf {
        self.p("state/ballast/config/system")
    }
    fn logs(&self) -> PathBuf {
        self.p("state/ballast/logs")
    }
    fn socket(&self) -> PathBuf {
        self.p("run/ballast/sysd.sock")
    }
    fn ready(&self) -> PathBuf {
        self.p("run/ballast/ready")
    }
    fn boot(&self) -> PathBuf {
        self.p("boot")
    }
    fn cmdline(&self) -> PathBuf {
        self.p("proc/cmdline")
    }
    fn os_release(&self) -> PathBuf {
        self.p("usr/lib/os-release")
    }
    /// Public keys update bundles must be signed with (baked in by the builder).
    fn keys(&self) -> PathBuf {
        self.p("usr/lib/ballast/keys")
    }
    /// Pending update, last rollback, last health failure.
    fn update_records(&self) -> PathBuf {
        self.p("state/ballast/update")
    }
}

/// What the main loop and the socket threads share.
pub struct Shared {
    pub sup: Mutex<Supervisor>,
    pub logs: logs::Logs,
    pub errors: Mutex<Vec<String>>,
    pub version: String,
    pub slot: Option<SlotId>,
    pub stopping: AtomicBool,
    boot_dir: PathBuf,
    check_mounted: bool,
    pid1: Option<i32>,
    start: Instant,
    pub records: update::Records,
    pub identity: update::Identity,
    pub keys_dir: PathBuf,
    pub config_keys_dir: PathBuf,
    /// One upgrade at a time.
    pub upgrading: AtomicBool,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn boot(&self) -> Result<slot::Boot, String> {
        slot::Boot::open(&self.boot_dir, self.check_mounted)
    }

    /// Reboot (SIGINT) or power off (SIGTERM) is PID 1's job.
    pub fn ask_pid1(&self, sig: i32, what: &str) -> Result<String, String> {
        let Some(pid) = self.pid1 else {
            return Err(format!(
                "cannot {what}: sysd runs with --root (not as the device's supervisor) and no --pid1 was given"
            ));
        };
        // SAFETY: kill(2) with a plain pid and signal number has no memory effects.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc == 0 {
            Ok(format!("{what}: asked PID {pid}"))
        } else {
            Err(format!(
                "cannot {what}: kill({pid}) failed: {}",
                std::io::Error::last_os_error()
            ))
        }
    }
}

struct Args {
    root: PathBuf,
    pid1: Option<i32>,
}

fn parse_args() -> Result<Args, String> {
    let mut root = PathBuf::from("/");
    let mut pid1 = None;
    let mut rooted = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => {
                root = PathBuf::from(it.next().ok_or("--root needs a directory")?);
                rooted = true;
            }
            "--pid1" => {
                let v = it.next().ok_or("--pid1 needs a process id")?;
                pid1 = Some(
                    v.parse::<i32>()
                        .map_err(|_| format!("--pid1 {v}: not a process id"))?,
                );
            }
            "-h" | "--help" => {
                return Err("usage: sysd [--root DIR [--pid1 PID]]".into());
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: sysd [--root DIR [--pid1 PID]])"
                ))
            }
        }
    }
    if !rooted && root == Path::new("/") && pid1.is_none() {
        pid1 = Some(1);
    }
    Ok(Args { root, pid1 })
}

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<(), String> {
    // SAFETY: sigaction with a handler that only stores to an atomic (async-signal-safe);
    // the struct is zeroed then filled, as sigaction(2) expects.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(format!(
                    "cannot install a handler for signal {sig}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

fn set_subreaper() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "PR_SET_CHILD_SUBREAPER failed: {}; orphaned container processes go to PID 1",
            std::io::Error::last_os_error()
        ))
    }
}

/// Reap every exited child without blocking: `(pid, how it ended)`.
fn reap() -> Vec<(u32, Exit)> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        let exit = if libc::WIFEXITED(status) {
            let code = libc::WEXITSTATUS(status);
            Exit {
                success: code == 0,
                desc: format!("exited with status {code}"),
            }
        } else if libc::WIFSIGNALED(status) {
            Exit {
                success: false,
                desc: format!("killed by signal {}", libc::WTERMSIG(status)),
            }
        } else {
            continue;
        };
        out.push((pid as u32, exit));
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            say(&e);
            std::process::exit(2);
        }
    };
    std::process::exit(run(args));
}

fn run(args: Args) -> i32 {
    let paths = Paths { root: args.root };
    let on_device = paths.root == Path::new("/");
    let mut errors = Vec::new();
    if let Err(e) = install_signal_handlers() {
        say(&e);
        errors.push(e);
    }
    if let Err(e) = set_subreaper() {
        say(&e);
        errors.push(e);
    }
    let version = slot::version(&paths.os_release()).unwrap_or_else(|e| {
        errors.push(e);
        "unknown".into()
    });
    let slot = slot::booted_slot(&paths.cmdline()).map_or_else(
        |e| {
            errors.push(e);
            None
        },
        Some,
    );

    // First-boot config from a local source is applied before the definitions
    // load (it may add system containers); a URL one holds the services instead.
    errors.extend(firstboot::begin(&paths.root, on_device));

    // Definitions: manifest.toml, then config.json through the container runtime.
    let (found, mut errs) =
        manifest::load_image_and_applied(&paths.system(), &paths.applied_system());
    errors.append(&mut errs);
    let mut bundles = HashMap::new();
    let mut defs = Vec::new();
    for f in found {
        match runtime::Bundle::load(&f.bundle) {
            Ok(b) => {
                bundles.insert(f.def.name.clone(), b);
                defs.push(f.def);
            }
            Err(e) => errors.push(e),
        }
    }
    let (mut sup, mut errs) = Supervisor::new(defs);
    errors.append(&mut errs);
    firstboot::hold(&mut sup);
    let (logs, log_err) = logs::Logs::new(&paths.logs());
    errors.extend(log_err);
    for e in &errors {
        say(e);
    }

    let version_for_id = version.clone();
    let shared = Arc::new(Shared {
        sup: Mutex::new(sup),
        logs,
        errors: Mutex::new(errors),
        version,
        slot,
        stopping: AtomicBool::new(false),
        boot_dir: paths.boot(),
        check_mounted: on_device,
        pid1: args.pid1,
        start: Instant::now(),
        records: update::Records::new(paths.update_records()),
        identity: update::Identity::read(&paths.os_release(), &paths.cmdline(), &version_for_id),
        keys_dir: paths.keys(),
        config_keys_dir: paths.p("state/ballast/config/keys"),
        upgrading: AtomicBool::new(false),
    });

    // A slot on probation (installed by an update, not yet good) must pass the health
    // check in time; a boot after an update that was not kept reports the rollback.
    // Rebooting helps only when there is a good slot to fall back to; a machine
    // with nowhere to go keeps running and reports what is unhealthy.
    let probation = boot_health(&shared, false) != Some(ballast_slot::Health::Good)
        && boot_health(&shared, true) == Some(ballast_slot::Health::Good);
    let health_timeout =
        update::health_timeout(&std::fs::read_to_string(paths.cmdline()).unwrap_or_default());
    if let (Some(booted), Ok(boot)) = (shared.slot, shared.boot()) {
        let slots = boot.status().unwrap_or_default();
        if let Some(rb) = update::reconcile(&shared.records, booted, &shared.version, &slots) {
            let line = update::rollback_line(&rb);
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if let Err(e) = boot.set_default(booted) {
                say(&e);
            }
        }
    }
    let mut gave_up = false;

    let socket = paths.socket();
    match server::bind(&socket) {
        Ok(listener) => {
            let sh = shared.clone();
            let sock = socket.clone();
            if let Err(e) = std::thread::Builder::new()
                .name("sysd-server".into())
                .spawn(move || server::serve(listener, sh, sock))
            {
                let msg = format!("cannot start the control socket thread: {e}");
                say(&msg);
                lock(&shared.errors).push(msg);
            }
        }
        Err(e) => {
            let msg = format!("{e}; osctl cannot reach sysd");
            say(&msg);
            lock(&shared.errors).push(msg);
        }
    }

    let mut shutdown_at: Option<Instant> = None;
    loop {
        let now = shared.now_ms();
        if TERM.load(Ordering::SeqCst) && shutdown_at.is_none() {
            say("SIGTERM: stopping all services");
            shared.stopping.store(true, Ordering::SeqCst);
            lock(&shared.sup).shutdown(now);
            shutdown_at = Some(Instant::now());
        }
        for (pid, exit) in reap() {
            let name = lock(&shared.sup).exited(pid, &exit, now);
            if let Some(name) = name {
                say(&format!("{name} (pid {pid}) {}", exit.desc));
                if let Err(e) = runtime::cleanup(&name) {
                    say(&e);
                }
            }
        }
        firstboot::tick(&shared);
        if let Some(release) = firstboot::take_reload() {
            let (image, applied) = (paths.system(), paths.applied_system());
            for a in firstboot::reload(&shared, &mut bundles, &image, &applied, release) {
                perform(a, &shared, &bundles, &paths);
            }
        }
        let actions = lock(&shared.sup).tick(now);
        for a in actions {
            perform(a, &shared, &bundles, &paths);
        }
        if probation
            && !gave_up
            && shutdown_at.is_none()
            && shared.start.elapsed() >= health_timeout
            && !lock(&shared.sup).ready_announced()
        {
            gave_up = true;
            give_up_probation(&shared, health_timeout);
        }
        if let Some(t) = shutdown_at {
            if lock(&shared.sup).all_down() {
                say("all services stopped");
                break;
            }
            if t.elapsed() >= SHUTDOWN_LIMIT {
                say("services still running after 9 s; exiting anyway");
                break;
            }
        }
        std::thread::sleep(TICK);
    }
    for name in lock(&shared.sup).names() {
        let _ = runtime::cleanup(&name);
    }
    firstboot::shutdown();
    let _ = std::fs::remove_file(&socket);
    0
}

fn perform(a: Action, shared: &Shared, bundles: &HashMap<String, runtime::Bundle>, paths: &Paths) {
    match a {
        Action::Start(name) => {
            let res = match bundles.get(&name) {
                Some(b) => b.start(&name, shared.logs.get(&name)),
                None => Err(format!("{name}: no bundle loaded")),
            };
            let now = shared.now_ms();
            match res {
                Ok(pid) => {
                    say(&format!("{name}: started (pid {pid})"));
                    lock(&shared.sup).started(&name, pid, now);
                }
                Err(e) => {
                    say(&format!("{name}: {e}"));
                    lock(&shared.sup).start_failed(&name, &e, now);
                }
            }
        }
        Action::Signal { name, pid, sig } => {
            let s = match sig {
                Sig::Term => libc::SIGTERM,
                Sig::Kill => libc::SIGKILL,
            };
            // SAFETY: kill(2) with a plain pid and signal number has no memory effects.
            if unsafe { libc::kill(pid as i32, s) } != 0 {
                say(&format!(
                    "{name}: kill({pid}, {s}): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Action::CheckTcp { name, addr } => {
            if health::tcp_ok(addr) {
                lock(&shared.sup).health_ok(&name, shared.now_ms());
            }
        }
        Action::CheckUnixHttp { name, socket, path } => {
            if health::unix_http_ok(&socket, &path) {
                lock(&shared.sup).health_ok(&name, shared.now_ms());
            }
        }
        Action::CheckUnix { name, socket } => {
            if health::unix_ok(&socket) {
                lock(&shared.sup).health_ok(&name, shared.now_ms());
            }
        }
        Action::Ready => announce_ready(shared, paths),
    }
}

/// Mark the booted slot good, then print and record the ready line: the line is the
/// promise that the slot is good, and PID 1 may power off as soon as the file appears.
fn announce_ready(shared: &Shared, paths: &Paths) {
    let mut errs = Vec::new();
    match (shared.slot, shared.boot()) {
        (Some(slot), Ok(boot)) => {
            if let Err(e) = boot.mark_good(slot) {
                errs.push(e);
            } else if shared.records.pending().is_some_and(|p| p.to_slot == slot) {
                // The update is committed: nothing pending, nothing to roll back.
                for r in [
                    shared.records.set_pending(None),
                    shared.records.set_health_failure(None),
                ] {
                    if let Err(e) = r {
                        errs.push(e);
                    }
                }
            }
        }
        (None, _) => errs.push("booted slot unknown: not marking any slot good".to_string()),
        (_, Err(e)) => errs.push(e),
    }
    let line = format!(
        "ballast-ready version={} slot={}",
        shared.version,
        shared.slot.map_or("unknown", |s| s.as_str())
    );
    let ready = paths.ready();
    if let Some(dir) = ready.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&ready, format!("{line}\n")) {
        errs.push(format!("cannot write {}: {e}", ready.display()));
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    for e in errs {
        say(&e);
        lock(&shared.errors).push(e);
    }
}

/// The booted (or the other) slot's health as the bootloader sees it (None when unknown).
fn boot_health(shared: &Shared, other: bool) -> Option<ballast_slot::Health> {
    let slot = shared.slot?;
    let slot = if other { slot.other() } else { slot };
    let boot = shared.boot().ok()?;
    let slots = boot.status().ok()?;
    slots.iter().find(|s| s.slot == slot).map(|s| s.health)
}

/// The slot on probation did not pass the health check in time: record why (for the
/// rollback report the previous version will print) and reboot, so the bootloader
/// counts the try and, when the tries are spent, falls back.
fn give_up_probation(shared: &Shared, timeout: Duration) {
    let now = shared.now_ms();
    let failing: Vec<String> = lock(&shared.sup)
        .status(now)
        .into_iter()
        .filter(|s| s.required && s.state != ballast_control::ServiceState::Healthy)
        .map(|s| match &s.last_exit {
            Some(e) => format!("{} {} ({e})", s.name, s.state),
            None => format!("{} {}", s.name, s.state),
        })
        .collect();
    let reason = if failing.is_empty() {
        format!("health check did not pass within {} s", timeout.as_secs())
    } else {
        format!(
            "health check did not pass within {} s: required {}",
            timeout.as_secs(),
            failing.join(", ")
        )
    };
    say(&format!(
        "slot on probation: {reason}; rebooting so the bootloader counts the try"
    ));
    if let Some(slot) = shared.slot {
        let rec = update::HealthFailure {
            version: shared.version.clone(),
            slot,
            reason,
            at: update::now_unix(),
        };
        if let Err(e) = shared.records.set_health_failure(Some(&rec)) {
            say(&e);
        }
    }
    if let Err(e) = shared.ask_pid1(libc::SIGINT, "reboot") {
        say(&e);
    }
}
