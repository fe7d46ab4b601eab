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
//!
//! This is the library; `main.rs` only parses the arguments ([`Args::parse`]) and
//! calls [`run`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
mod agent;
mod clockfloor;
mod definition;
mod firstboot;
mod harden;
mod health;
mod heartbeat;
mod http;
mod install;
mod logs;
pub mod readahead;
mod runtime;
mod server;
mod slot;
mod supervisor;
mod sys;
pub mod timesync;
mod update;

/// The service definition parser, public for the fuzz target (`fuzz/`).
pub use definition::{parse as parse_definition, Def, ServiceDefError};

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ballast_device::{os_release, paths, Cmdline};
use ballast_slot::SlotId;

use supervisor::{Action, Sig, Supervisor};
use sys::{LinuxSys, Signal, Sys};

/// How long shutdown waits for the services before exiting anyway (the contract gives
/// sysd 10 s; SIGKILL goes out at 5 s).
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(9_000);
const TICK: Duration = Duration::from_millis(50);
/// The main loop's turn while a service that just started is not healthy
/// yet: its probe (every `PROBE_INTERVAL_MS`) and the services waiting on
/// it are not held back by a longer sleep.
const HEALTH_TICK: Duration = Duration::from_millis(20);

/// Lock a mutex, surviving a panicked holder (sysd must keep serving).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// sysd's own messages go to its stderr (the console on the device).
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "sysd: {msg}");
}

/// Every path sysd touches (the device contract's), under one root.
struct Paths {
    root: PathBuf,
}

impl Paths {
    /// `path`, one of [`ballast_device::paths`], under the root.
    fn p(&self, path: &str) -> PathBuf {
        paths::under(&self.root, path)
    }
}

/// What the main loop and the socket threads share.
pub struct Shared {
    pub sup: Mutex<Supervisor>,
    pub logs: logs::Logs,
    pub errors: Mutex<Vec<String>>,
    pub version: String,
    pub slot: Option<SlotId>,
    /// Running live from its medium (`ballast.live=`): no slot, state in RAM.
    pub live: bool,
    /// Booted diskless over the network (`ballast.root=URL`): also `live`
    /// (no slot, state in RAM), reported as `slot=net`.
    pub net: bool,
    pub stopping: AtomicBool,
    boot_dir: PathBuf,
    check_mounted: bool,
    pid1: Option<u32>,
    start: Instant,
    pub records: update::Records,
    /// First-boot config: what is pending, what to reload and restart.
    pub firstboot: firstboot::State,
    /// Read again for each upgrade ([`update::Identity::read`]).
    pub os_release: PathBuf,
    pub cmdline: Cmdline,
    pub keys_dir: PathBuf,
    pub config_keys_dir: PathBuf,
    /// One upgrade at a time.
    pub upgrading: AtomicBool,
    /// The update agent (fleet updates, the user health checks' commit gate).
    pub agent: agent::Agent,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn boot(&self) -> Result<slot::Boot, slot::BootError> {
        slot::Boot::open(&self.boot_dir, self.check_mounted)
    }

    /// Reboot (SIGINT) or power off (SIGTERM) is PID 1's job.
    pub fn ask_pid1(&self, sig: Signal, what: &'static str) -> Result<String, Pid1Error> {
        let pid = self.pid1.ok_or(Pid1Error::NoPid1 { what })?;
        LinuxSys
            .kill(pid, sig)
            .map_err(|source| Pid1Error::Kill { what, pid, source })?;
        Ok(format!("{what}{}{pid}", ballast_control::ASKED_PID1))
    }
}

/// PID 1 could not be asked to reboot or power off.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("cannot {what}: sysd runs with --root (not as the device's supervisor) and no --pid1 was given")]
    NoPid1 { what: &'static str },
    #[error("cannot {what}: kill({pid}) failed: {source}")]
    Kill {
        what: &'static str,
        pid: u32,
        source: std::io::Error,
    },
}

/// sysd's command line is not understood.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{0} needs a value")]
    Missing(&'static str),
    #[error("--pid1 {0}: not a process id")]
    BadPid(String),
    #[error("usage: sysd [--root DIR [--pid1 PID]] | sysd --read-ahead")]
    Help,
    #[error("unknown argument `{0}` (usage: sysd [--root DIR [--pid1 PID]] | sysd --read-ahead)")]
    Unknown(String),
}

/// sysd's command line.
pub struct Args {
    root: PathBuf,
    pid1: Option<u32>,
}

impl Args {
    /// Parse the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, ArgsError> {
        parse_args(args.into_iter())
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let mut root = PathBuf::from("/");
    let mut pid1 = None;
    let mut rooted = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => {
                root = PathBuf::from(it.next().ok_or(ArgsError::Missing("--root DIR"))?);
                rooted = true;
            }
            "--pid1" => {
                let v = it.next().ok_or(ArgsError::Missing("--pid1 PID"))?;
                pid1 = Some(v.parse::<u32>().map_err(|_| ArgsError::BadPid(v))?);
            }
            "-h" | "--help" => return Err(ArgsError::Help),
            other => return Err(ArgsError::Unknown(other.to_string())),
        }
    }
    if !rooted && root == Path::new("/") && pid1.is_none() {
        pid1 = Some(1);
    }
    Ok(Args { root, pid1 })
}

/// sysd's life: start, supervise until SIGTERM, stop everything. The exit code.
pub fn run(args: Args) -> i32 {
    let paths = Paths { root: args.root };
    let on_device = paths.root == Path::new("/");
    let mut errors = Vec::new();
    if let Err(e) = sys::catch_term() {
        errors.push(format!("cannot catch SIGTERM and SIGINT: {e}"));
    }
    if let Err(e) = sys::set_subreaper() {
        errors.push(format!(
            "PR_SET_CHILD_SUBREAPER failed: {e}; orphaned container processes go to PID 1"
        ));
    }
    let os_release = paths.p(paths::OS_RELEASE);
    let version = os_release::read_version(&os_release).map_or_else(
        |e| {
            errors.push(e.to_string());
            "unknown".into()
        },
        |v| v.to_string(),
    );
    let cmdline_path = paths.p(paths::CMDLINE);
    let cmdline = match std::fs::read_to_string(&cmdline_path) {
        Ok(text) => Cmdline::parse(&text),
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", cmdline_path.display()));
            Cmdline::default()
        }
    };
    let net = cmdline.root_url().is_some();
    let live = cmdline.live().is_some() || net;
    let slot = if live {
        None
    } else {
        slot::booted_slot(&cmdline, &cmdline_path).map_or_else(
            |e| {
                errors.push(e.to_string());
                None
            },
            Some,
        )
    };

    // Kernel hardening first, so the first-boot config's `ballast.sysctl` can
    // override it; sysd's own OOM standing; the heartbeat PID 1's watchdog
    // decision reads (see `heartbeat`).
    let loop_mark = heartbeat::LoopMark::default();
    if on_device {
        if let Some(line) =
            clockfloor::set_forward(&paths.p(paths::SYSD), &paths.p(clockfloor::SAVED))
        {
            say(&line);
        }
        errors.extend(harden::apply_sysctls(Path::new("/proc/sys")));
        if let Err(e) = harden::protect_from_oom(Path::new("/proc/self")) {
            errors.push(e);
        }
        if let Err(e) = heartbeat::start(paths.p(paths::SYSD_ALIVE), loop_mark.clone()) {
            errors.push(e);
        }
    }

    // First-boot config from a local source is applied before the definitions
    // load (it may add system containers); a URL one holds the services instead.
    let (first_boot, errs) = firstboot::begin(&paths.root, on_device);
    errors.extend(errs);

    // Service definitions (manifest.toml), then each OCI config (config.json)
    // through the container runtime.
    let (image_defs, applied_defs) = (paths.p(paths::SYSTEM_DIR), paths.p(paths::APPLIED_SYSTEM));
    let (found, mut errs) = definition::load_image_and_applied(&image_defs, &applied_defs);
    errors.append(&mut errs);
    let mut containers = HashMap::new();
    let mut defs = Vec::new();
    for f in found {
        match runtime::ContainerDir::load(&f.dir) {
            Ok(c) => {
                containers.insert(f.def.name.clone(), c);
                defs.push(f.def);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let (mut sup, mut errs) = Supervisor::new(defs);
    errors.append(&mut errs);
    firstboot::hold(&first_boot, &mut sup);
    let (logs, log_err) = logs::Logs::new(&paths.p(paths::LOGS));
    errors.extend(log_err);
    for e in &errors {
        say(e);
    }

    let health_timeout = update::health_timeout(&cmdline);
    let shared = Arc::new(Shared {
        sup: Mutex::new(sup),
        logs,
        errors: Mutex::new(errors),
        version,
        slot,
        live,
        net,
        stopping: AtomicBool::new(false),
        boot_dir: paths.p(paths::BOOT),
        check_mounted: on_device,
        pid1: args.pid1,
        start: Instant::now(),
        records: update::Records::new(paths.p(paths::UPDATE_RECORDS)),
        firstboot: first_boot,
        os_release,
        cmdline,
        keys_dir: paths.p(paths::KEYS_DIR),
        config_keys_dir: paths.p(paths::CONFIG_KEYS_DIR),
        upgrading: AtomicBool::new(false),
        agent: agent::Agent::new(agent::Places {
            applied: paths.p(paths::CONFIG_DIR).join("applied.json"),
            records: paths.p(paths::UPDATE_RECORDS),
            machine_id: paths.p(paths::MACHINE_ID),
            zoneinfo: paths::ZONEINFO.iter().map(|z| paths.p(z)).collect(),
        }),
    });

    // A slot on probation (installed by an update, not yet good) must pass the health
    // check in time; a boot after an update that was not kept reports the rollback.
    // Rebooting helps only when there is a good slot to fall back to; a machine
    // with nowhere to go keeps running and reports what is unhealthy.
    // The boot partition's slot states are read once here (each read of its
    // vfat is a few directory walks, on the way to the first service).
    let probation = match (shared.slot, shared.boot()) {
        (Some(booted), Ok(boot)) => {
            let slots = boot.status();
            let probation = slots.as_ref().is_ok_and(|s| on_probation(s, booted));
            let slots = slots.unwrap_or_default();
            if let Some(rb) = update::reconcile(&shared.records, booted, &shared.version, &slots) {
                let line = update::rollback_line(&rb);
                let mut out = std::io::stdout();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                if let Err(e) = boot.set_default(booted) {
                    say(&e.to_string());
                }
            }
            probation
        }
        _ => false,
    };
    let mut gave_up = false;
    agent::start(shared.clone());

    let socket = paths.p(paths::SOCKET);
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

    // ballast.install=DEVICE: the unattended install runs beside the services
    // (it may need the network for its URLs) and reboots when it is done.
    if let Some(device) = shared.cmdline.install_device().map(str::to_string) {
        let sh = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("sysd-install".into())
            .spawn(move || install::unattended(&sh, &device))
        {
            say(&format!("cannot start the unattended install: {e}"));
        }
    }

    let mut shutdown_at: Option<Instant> = None;
    let mut save_clock_at = Instant::now();
    loop {
        loop_mark.turned();
        if on_device && Instant::now() >= save_clock_at {
            save_clock_at = Instant::now() + save_clock(&paths);
        }
        let now = shared.now_ms();
        if sys::term_requested() && shutdown_at.is_none() {
            say("SIGTERM: stopping all services");
            shared.stopping.store(true, Ordering::SeqCst);
            lock(&shared.sup).shutdown(now);
            shutdown_at = Some(Instant::now());
        }
        for (pid, exit) in LinuxSys.reap() {
            let name = lock(&shared.sup).exited(pid, &exit, now);
            if let Some(name) = name {
                say(&format!("{name} (pid {pid}) {}", exit.desc));
                if let Err(e) = runtime::cleanup(&name) {
                    say(&e.to_string());
                }
            }
        }
        firstboot::tick(&shared);
        if let Some(release) = firstboot::take_reload(&shared.firstboot) {
            for a in firstboot::reload(
                &shared,
                &mut containers,
                &image_defs,
                &applied_defs,
                release,
            ) {
                perform(a, &shared, &containers, &paths);
            }
        }
        if shared.agent.take_passed() {
            announce_ready(&shared, &paths);
        }
        let actions = lock(&shared.sup).tick(now);
        for a in actions {
            perform(a, &shared, &containers, &paths);
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
        let awaiting = lock(&shared.sup).awaiting_health(shared.now_ms());
        std::thread::sleep(if awaiting { HEALTH_TICK } else { TICK });
    }
    for name in lock(&shared.sup).names() {
        let _ = runtime::cleanup(&name);
    }
    firstboot::shutdown(&shared.firstboot);
    let _ = std::fs::remove_file(&socket);
    if on_device {
        save_clock(&paths);
    }
    0
}

/// The time for the next boot's clock floor (see [`clockfloor`]). How long
/// until the next try: a failure is said once an hour, not each minute.
fn save_clock(paths: &Paths) -> Duration {
    let saved = paths.p(clockfloor::SAVED);
    match clockfloor::save(&saved) {
        Ok(done) => clockfloor::next_save(done),
        Err(e) => {
            say(&format!(
                "clock: cannot save the time to {}: {e}",
                saved.display()
            ));
            clockfloor::SAVE_EVERY
        }
    }
}

fn perform(
    a: Action,
    shared: &Shared,
    containers: &HashMap<String, runtime::ContainerDir>,
    paths: &Paths,
) {
    match a {
        Action::Start(name) => {
            // Only this run's ready file may say it is ready; its directory
            // exists (a container may bind it in to write the file).
            let ready_file = lock(&shared.sup).ready_file(&name);
            if let Some(path) = ready_file {
                if let Some(dir) = path.parent() {
                    if let Err(e) = std::fs::create_dir_all(dir) {
                        say(&format!("{name}: cannot create {}: {e}", dir.display()));
                    }
                }
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        say(&format!(
                            "{name}: cannot remove its old ready file {}: {e}",
                            path.display()
                        ));
                    }
                }
            }
            let res = match containers.get(&name) {
                Some(b) => {
                    let log = shared.logs.get(&name);
                    log.begin_run();
                    b.start(&name, log)
                }
                None => Err(runtime::RuntimeError::NotLoaded),
            };
            let now = shared.now_ms();
            match res {
                Ok(pid) => {
                    say(&format!("{name}: started (pid {pid})"));
                    lock(&shared.sup).started(&name, pid, now);
                }
                Err(e) => {
                    say(&format!("{name}: {e}"));
                    lock(&shared.sup).start_failed(&name, &e.to_string(), now);
                }
            }
        }
        Action::Signal { name, pid, sig } => {
            let s = match sig {
                Sig::Term => Signal::Term,
                Sig::Kill => Signal::Kill,
            };
            if let Err(e) = LinuxSys.kill(pid, s) {
                say(&format!("{name}: kill({pid}, {s:?}): {e}"));
            }
        }
        Action::CheckTcp { name, addr } => {
            if health::tcp_ok(addr) {
                health_passed(&name, shared, containers, paths);
            }
        }
        Action::CheckUnixHttp { name, socket, path } => {
            if health::unix_http_ok(&socket, &path) {
                health_passed(&name, shared, containers, paths);
            }
        }
        Action::CheckReadyFile { name, path } => {
            if path.symlink_metadata().is_ok() {
                health_passed(&name, shared, containers, paths);
            }
        }
        Action::CheckUnix { name, socket } => {
            if health::unix_ok(&socket) {
                health_passed(&name, shared, containers, paths);
            }
        }
        Action::Healthy { name, after_ms } => {
            say(&format!("{name}: healthy ({after_ms} ms after its start)"));
        }
        Action::Ready => {
            if shared.agent.ready_requested(shared) {
                announce_ready(shared, paths);
            }
        }
        Action::ReportFailure { name, exit } => {
            // The run's own last words, on the console where a user without a login
            // sees them; once per distinct failure, not once per restart.
            let lines = shared.logs.get(&name).run_tail(supervisor::ERROR_LINES);
            if let Some(line) = lock(&shared.sup).failure_seen(&name, &exit, &lines) {
                say(&line);
            }
        }
    }
}

/// A probe of `name` passed: tell the supervisor, and perform what that
/// brings (its healthy line) once the supervisor's lock is released.
fn health_passed(
    name: &str,
    shared: &Shared,
    containers: &HashMap<String, runtime::ContainerDir>,
    paths: &Paths,
) {
    let healthy = lock(&shared.sup).health_ok(name, shared.now_ms());
    if let Some(a) = healthy {
        perform(a, shared, containers, paths);
    }
}

/// Mark the booted slot good, then print and record the ready line: the line is the
/// promise that the slot is good, and PID 1 may power off as soon as the file appears.
fn announce_ready(shared: &Shared, paths: &Paths) {
    let mut errs = Vec::new();
    match (shared.slot, shared.boot()) {
        // Live: nothing on a disk to mark good.
        _ if shared.live => {}
        (Some(slot), Ok(boot)) => {
            if let Err(e) = boot.mark_good(slot) {
                errs.push(e.to_string());
            } else if shared.records.pending().is_some_and(|p| p.to_slot == slot) {
                // The update is committed: nothing pending, nothing to roll back.
                for r in [
                    shared.records.set_pending(None),
                    shared.records.set_health_failure(None),
                ] {
                    if let Err(e) = r {
                        errs.push(e.to_string());
                    }
                }
            }
        }
        (None, _) => errs.push("booted slot unknown: not marking any slot good".to_string()),
        (_, Err(e)) => errs.push(e.to_string()),
    }
    let line = format!(
        "ballast-ready version={} slot={}",
        shared.version,
        match shared.slot {
            Some(s) => s.as_str(),
            None if shared.net => "net",
            None if shared.live => "live",
            None => "unknown",
        }
    );
    let ready = paths.p(paths::READY);
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

/// The booted slot is on probation: the bootloader does not call it good,
/// and the other slot is good to fall back to.
fn on_probation(slots: &[ballast_slot::SlotStatus], booted: SlotId) -> bool {
    let health = |slot: SlotId| slots.iter().find(|s| s.slot == slot).map(|s| s.health);
    health(booted) != Some(ballast_slot::Health::Good)
        && health(booted.other()) == Some(ballast_slot::Health::Good)
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
            say(&e.to_string());
        }
    }
    if let Err(e) = shared.ask_pid1(Signal::Int, "reboot") {
        say(&e.to_string());
    }
}

#[cfg(test)]
mod probation_tests {
    use super::on_probation;
    use ballast_slot::{Health, SlotId, SlotStatus};

    fn slots(a: Health, b: Option<Health>) -> Vec<SlotStatus> {
        let status = |slot, health| SlotStatus {
            slot,
            version: None,
            health,
            is_default: false,
        };
        let mut out = vec![status(SlotId::A, a)];
        out.extend(b.map(|h| status(SlotId::B, h)));
        out
    }

    #[test]
    fn a_slot_not_yet_good_is_on_probation_only_with_a_good_slot_to_fall_back_to() {
        let trying = Health::Trying {
            tries_left: 2,
            tries_done: 1,
        };
        assert!(on_probation(&slots(trying, Some(Health::Good)), SlotId::A));
        assert!(!on_probation(
            &slots(Health::Good, Some(Health::Good)),
            SlotId::A
        ));
        assert!(!on_probation(&slots(trying, Some(Health::Bad)), SlotId::A));
        assert!(!on_probation(&slots(trying, None), SlotId::A));
        assert!(on_probation(&slots(Health::Good, Some(trying)), SlotId::B));
    }
}
