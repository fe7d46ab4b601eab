//! The update agent: machines update themselves.
//!
//! A thread of sysd that, with `ballast.update.auto`, checks the configured channel
//! every `check_interval` (plus up to `jitter`), picks the newest version this
//! machine may run (newer than the running one, never one that rolled back here, and
//! only once its wave reaches this machine), installs it into the inactive slot
//! through the same installer as `osctl upgrade` ([`crate::update::install`]), and
//! reboots into it only inside the maintenance window and only while it holds the
//! fleet's reboot lock. A newer release found before that reboot is installed over
//! the staged one. The lock is given back once the machine is ready again, on the
//! new version or after a rollback.
//!
//! It also gates the commit of a new slot: with `ballast.health` checks, a slot on
//! probation is marked good only once they pass; when they do not pass in time the
//! machine rolls back with the failing check as the reason.
//!
//! What it keeps on the state partition (`/state/ballast/update/`): `agent.json`
//! (paused, lock held) and `rolled-back.json` (versions never installed again by
//! the agent). What is staged is the update records' pending install.
//!
//! Modules: [`tz`] and [`window`] (when reboots are allowed), [`wave`] (when this
//! machine's turn comes), [`lock`] (etcd and FleetLock), [`checks`] (user health
//! checks).

pub mod checks;
pub mod lock;
#[cfg(test)]
mod test_etcd;
pub mod tz;
pub mod wave;
pub mod window;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ballast_bundle::channel::{self, Entry, Index};
use ballast_config::{HealthCheck, Plan, Update};
use ballast_control::{AgentStatus, UpdateAction};
use serde::{Deserialize, Serialize};

use crate::sys::Signal;
use crate::{lock as mlock, say, Shared};

/// How often the agent looks again at a staged update waiting for its window or
/// lock, and how often it runs the user health checks while gating.
const RETRY: Duration = Duration::from_secs(5);
/// How often a held etcd slot's lease is renewed (it lasts [`lock::LEASE_TTL`]).
const RENEW: Duration = Duration::from_secs(60);
/// After a failed check, the wait doubles from this up to the interval.
const BACKOFF_MIN: u64 = 10;

/// Where the agent reads and keeps things.
#[derive(Debug, Clone)]
pub struct Places {
    /// The applied first-boot config (`ballast.update`, `ballast.health`).
    pub applied: PathBuf,
    /// The update records' directory (`agent.json`, `rolled-back.json` beside them).
    pub records: PathBuf,
    pub machine_id: PathBuf,
    /// Zone data, first found wins.
    pub zoneinfo: Vec<PathBuf>,
}

/// What is kept across reboots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    paused: bool,
    /// The reboot lock was taken and not yet given back.
    lock_held: bool,
}

/// The commit gate of a slot on probation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// Not gating (no checks, or not on probation, or not yet ready).
    Off,
    /// The services are ready; the user checks run until they pass or `deadline`.
    Waiting { deadline: Instant },
    /// Passed: the main loop announces ready.
    Passed,
    /// Done (announced or rolled back).
    Done,
}

/// The agent's state, shared with the control socket and the main loop.
pub struct Agent {
    places: Places,
    machine_id: String,
    status: Mutex<AgentStatus>,
    kept: Mutex<Kept>,
    gate: Mutex<Gate>,
    /// A request from `osctl update` (check, now) waiting for the thread.
    poke: Mutex<Option<UpdateAction>>,
    wake: Condvar,
}

impl Agent {
    pub fn new(places: Places) -> Agent {
        let machine_id = machine_id(&places.machine_id);
        let kept: Kept = read_json(&places.records.join("agent.json")).unwrap_or_default();
        let status = AgentStatus {
            state: "idle".into(),
            paused: kept.paused,
            machine_id: machine_id.clone(),
            rolled_back: read_json(&places.records.join("rolled-back.json")).unwrap_or_default(),
            lock_held: kept.lock_held,
            ..AgentStatus::default()
        };
        Agent {
            places,
            machine_id,
            status: Mutex::new(status),
            kept: Mutex::new(kept),
            gate: Mutex::new(Gate::Off),
            poke: Mutex::new(None),
            wake: Condvar::new(),
        }
    }

    pub fn status(&self) -> AgentStatus {
        mlock(&self.status).clone()
    }

    fn set(&self, f: impl FnOnce(&mut AgentStatus)) {
        f(&mut mlock(&self.status));
    }

    fn keep(&self, f: impl FnOnce(&mut Kept)) {
        let mut k = mlock(&self.kept);
        f(&mut k);
        let (paused, held) = (k.paused, k.lock_held);
        if let Err(e) = write_json(&self.places.records.join("agent.json"), &*k) {
            say(&format!("update agent: {e}"));
        }
        drop(k);
        self.set(|s| {
            s.paused = paused;
            s.lock_held = held;
        });
    }

    /// `osctl update ACTION`: the state after it (check and now run on the agent's
    /// thread; the answer says they were asked for).
    pub fn control(&self, action: UpdateAction) -> AgentStatus {
        match action {
            UpdateAction::Status => {}
            UpdateAction::Pause => self.keep(|k| k.paused = true),
            UpdateAction::Resume => {
                self.keep(|k| k.paused = false);
                *mlock(&self.poke) = Some(UpdateAction::Check);
            }
            UpdateAction::Check | UpdateAction::Now => {
                *mlock(&self.poke) = Some(action);
                if action == UpdateAction::Now {
                    // A person asked: this run ignores the pause.
                    self.set(|s| s.state = "checking (asked)".into());
                }
            }
        }
        self.wake.notify_all();
        self.status()
    }

    /// The supervisor says every required service is healthy. `true`: announce
    /// ready now; `false`: the user checks gate it ([`Agent::take_passed`]).
    pub fn ready_requested(&self, shared: &Shared) -> bool {
        let on_probation = match (shared.slot, shared.records.pending()) {
            (Some(slot), Some(p)) => p.to_slot == slot,
            _ => false,
        };
        let checks = self.settings().1;
        if !on_probation || checks.is_empty() {
            *mlock(&self.gate) = Gate::Done;
            return true;
        }
        say(&format!(
            "update agent: {} user health check(s) gate the commit of this slot",
            checks.len()
        ));
        let timeout = crate::update::health_timeout(&shared.cmdline);
        let left = timeout.saturating_sub(shared.start.elapsed());
        *mlock(&self.gate) = Gate::Waiting {
            deadline: Instant::now() + left.max(Duration::from_secs(30)),
        };
        self.set(|s| s.state = "checking health".into());
        self.wake.notify_all();
        false
    }

    /// The gate passed since the last call: announce ready now.
    pub fn take_passed(&self) -> bool {
        let mut g = mlock(&self.gate);
        if *g == Gate::Passed {
            *g = Gate::Done;
            true
        } else {
            false
        }
    }

    /// (`ballast.update`, `ballast.health`) of the applied config, read each time:
    /// `osctl config apply` may change them.
    fn settings(&self) -> (Option<Update>, Vec<HealthCheck>) {
        match read_json::<Plan>(&self.places.applied) {
            Some(p) => (p.update, p.health),
            None => (None, Vec::new()),
        }
    }
}

/// Start the agent's thread.
pub fn start(shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("sysd-agent".into())
        .spawn(move || run(&shared));
    if let Err(e) = spawned {
        say(&format!("cannot start the update agent: {e}"));
    }
}

fn run(shared: &Shared) {
    let agent = &shared.agent;
    let mut next_check = Instant::now();
    let mut backoff = 0u64;
    let mut released_once = false;
    let mut last_renew: Option<Instant> = None;
    while !shared.stopping.load(Ordering::SeqCst) {
        let (update, checks) = agent.settings();
        gate(shared, &checks);
        remember_rollbacks(shared);
        let ready = mlock(&shared.sup).ready_announced()
            && matches!(*mlock(&agent.gate), Gate::Done | Gate::Off);
        // Give the lock back once this boot is ready (new version, or the old one
        // after a rollback). FleetLock servers expect steady-state at every start.
        if ready {
            if let Some(cfg) = update.as_ref().and_then(|u| u.reboot_lock.clone()) {
                let held = mlock(&agent.kept).lock_held;
                if held || !released_once {
                    match lock::Lock::new(cfg).release(&agent.machine_id) {
                        Ok(()) => {
                            released_once = true;
                            if held {
                                say("update agent: ready; reboot lock released");
                                agent.keep(|k| k.lock_held = false);
                            }
                        }
                        Err(e) => agent.set(|s| s.last_error = Some(e.to_string())),
                    }
                }
            }
        }
        // Keep the etcd lease of a held slot (across the reboot it must outlast).
        let renew_due = last_renew.is_none_or(|t: Instant| t.elapsed() >= RENEW);
        if mlock(&agent.kept).lock_held && renew_due {
            if let Some(cfg) = update.as_ref().and_then(|u| u.reboot_lock.clone()) {
                last_renew = Some(Instant::now());
                if let Err(e) = lock::Lock::new(cfg).renew(&agent.machine_id) {
                    agent.set(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
        let poke = mlock(&agent.poke).take();
        let paused = mlock(&agent.kept).paused;
        agent.set(|s| {
            s.auto = update.as_ref().is_some_and(|u| u.auto);
            s.channel = update.as_ref().and_then(|u| u.channel.clone());
            s.lock = update
                .as_ref()
                .and_then(|u| u.reboot_lock.clone())
                .map(|l| lock::Lock::new(l).kind().to_string());
            s.staged = staged(shared);
        });
        let Some(u) = update.filter(|u| u.channel.is_some()) else {
            agent.set(|s| s.state = "off".into());
            wait(agent, RETRY);
            continue;
        };
        let forced = poke == Some(UpdateAction::Now);
        if paused && !forced {
            agent.set(|s| s.state = "paused".into());
            wait(agent, RETRY);
            continue;
        }
        if ready && (poke.is_some() || Instant::now() >= next_check) {
            agent.set(|s| s.state = "checking".into());
            match check(shared, &u, forced) {
                Ok(()) => {
                    backoff = 0;
                    let wait_s = u.check_interval + jitter(u.jitter);
                    next_check = Instant::now() + Duration::from_secs(wait_s);
                    agent.set(|s| {
                        s.last_error = None;
                        s.next_check = Some(crate::update::now_unix() + wait_s);
                    });
                }
                Err(e) => {
                    // A channel that does not answer: back off, never reboot on it.
                    backoff = (backoff * 2).clamp(BACKOFF_MIN, u.check_interval.max(BACKOFF_MIN));
                    next_check = Instant::now() + Duration::from_secs(backoff);
                    say(&format!("update agent: {e}"));
                    agent.set(|s| {
                        s.state = "error".into();
                        s.last_error = Some(e);
                        s.next_check = Some(crate::update::now_unix() + backoff);
                    });
                }
            }
            agent.set(|s| s.last_check = Some(crate::update::now_unix()));
        }
        if ready && (u.auto || forced) {
            if let Some(v) = staged(shared) {
                agent.set(|s| s.staged = Some(v.clone()));
                try_reboot(shared, &u, &v);
            }
        }
        let until = next_check.saturating_duration_since(Instant::now());
        wait(agent, until.min(RETRY));
    }
}

fn wait(agent: &Agent, d: Duration) {
    let g = mlock(&agent.poke);
    if g.is_some() {
        return;
    }
    let _ = agent.wake.wait_timeout(g, d);
}

/// Up to `max` seconds, different on every call and every machine.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() % (max + 1)
}

/// The version installed in the inactive slot and waiting for its reboot.
fn staged(shared: &Shared) -> Option<String> {
    let p = shared.records.pending()?;
    (Some(p.from_slot) == shared.slot && p.from_version == shared.version).then_some(p.to_version)
}

/// A rollback recorded since (automatic or asked for): its version is never
/// installed again by the agent.
fn remember_rollbacks(shared: &Shared) {
    let agent = &shared.agent;
    let Some(rb) = shared.records.last_rollback() else {
        return;
    };
    let mut s = mlock(&agent.status);
    if rb.from == shared.version || s.rolled_back.contains(&rb.from) {
        return;
    }
    s.rolled_back.push(rb.from.clone());
    let list = s.rolled_back.clone();
    drop(s);
    say(&format!(
        "update agent: {} rolled back here ({}); it is not installed again automatically",
        rb.from, rb.reason
    ));
    if let Err(e) = write_json(&agent.places.records.join("rolled-back.json"), &list) {
        say(&format!("update agent: {e}"));
    }
}

/// Run the user checks while the gate waits; pass, or roll back at the deadline.
fn gate(shared: &Shared, checks: &[HealthCheck]) {
    let agent = &shared.agent;
    let deadline = match *mlock(&agent.gate) {
        Gate::Waiting { deadline } => deadline,
        _ => return,
    };
    let state = |name: &str| {
        mlock(&shared.sup)
            .status(shared.now_ms())
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.state)
    };
    match checks::first_failure(checks, &state) {
        None => {
            say("update agent: user health checks pass");
            *mlock(&agent.gate) = Gate::Passed;
            agent.set(|s| s.state = "idle".into());
        }
        Some(why) if Instant::now() >= deadline => {
            *mlock(&agent.gate) = Gate::Done;
            roll_back(shared, &why);
        }
        Some(why) => agent.set(|s| s.last_error = Some(why)),
    }
}

/// The new slot failed a user check: record why, make the previous slot the
/// default, reboot into it. The previous version prints the rollback line.
fn roll_back(shared: &Shared, why: &str) {
    say(&format!("update agent: {why}; rolling back"));
    let Some(slot) = shared.slot else { return };
    let rec = crate::update::HealthFailure {
        version: shared.version.clone(),
        slot,
        reason: why.to_string(),
        at: crate::update::now_unix(),
    };
    if let Err(e) = shared.records.set_health_failure(Some(&rec)) {
        say(&e.to_string());
    }
    match shared.boot() {
        Ok(boot) => {
            if let Err(e) = boot.partition().rollback(slot) {
                say(&format!(
                    "update agent: cannot make the previous slot the default: {e}"
                ));
            }
        }
        Err(e) => say(&e.to_string()),
    }
    if let Err(e) = shared.ask_pid1(Signal::Int, "reboot") {
        say(&e.to_string());
    }
}

/// Check the channel; install the newest allowed version when it is due.
fn check(shared: &Shared, u: &Update, forced: bool) -> Result<(), String> {
    let agent = &shared.agent;
    let base = u.channel.clone().unwrap_or_default();
    let index = fetch_index(shared, &base)?;
    let os = ballast_device::OsRelease::read(&shared.os_release)
        .map_err(|e| format!("cannot tell which bundles fit: {e}"))?;
    let rolled_back = agent.status().rolled_back;
    let Some(entry) = choose(
        &index,
        os.arch.as_str(),
        &os.board,
        &shared.version,
        &rolled_back,
    ) else {
        agent.set(|s| {
            s.available = None;
            s.wave_at = None;
            s.state = "idle".into();
        });
        return Ok(());
    };
    let wave_at = entry
        .rollout
        .map(|r| wave::eligible_at(&r, &agent.machine_id));
    agent.set(|s| {
        s.available = Some(entry.version.clone());
        s.wave_at = wave_at;
    });
    if !u.auto && !forced {
        agent.set(|s| s.state = "idle".into());
        return Ok(());
    }
    if !forced && wave_at.is_some_and(|t| t > crate::update::now_unix()) {
        agent.set(|s| s.state = "waiting for wave".into());
        return Ok(());
    }
    if staged(shared).as_deref() == Some(entry.version.as_str()) {
        return Ok(());
    }
    agent.set(|s| s.state = "downloading".into());
    say(&format!(
        "update agent: installing {} from {base}",
        entry.version
    ));
    install(shared, &base, entry)?;
    say(&format!(
        "update agent: {} staged in the inactive slot",
        entry.version
    ));
    agent.set(|s| {
        s.state = "staged".into();
        s.staged = Some(entry.version.clone());
    });
    Ok(())
}

/// The newest entry for this machine that is newer than `current` and never
/// rolled back here.
pub fn choose<'a>(
    index: &'a Index,
    arch: &str,
    board: &str,
    current: &str,
    rolled_back: &[String],
) -> Option<&'a Entry> {
    index
        .entries
        .iter()
        .filter(|e| e.arch == arch && (e.boards.is_empty() || e.boards.iter().any(|b| b == board)))
        .filter(|e| !rolled_back.contains(&e.version))
        .filter(|e| {
            ballast_bundle::compare_versions(&e.version, current)
                == Some(std::cmp::Ordering::Greater)
        })
        .max_by(|a, b| {
            ballast_bundle::compare_versions(&a.version, &b.version)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

fn get(url: &str) -> Result<Box<dyn Read + Send>, String> {
    let trust = crate::http::Trust::device();
    let resp = crate::http::agent(&trust, crate::http::Limits::download())
        .get(url)
        .call()
        .map_err(|e| {
            format!(
                "channel: cannot fetch {url}: {}",
                crate::http::explain(&e, &trust)
            )
        })?;
    Ok(Box::new(resp.into_body().into_reader()))
}

fn url_of(base: &str, file: &str) -> String {
    if crate::http::is_url(file) {
        file.to_string()
    } else {
        format!("{}/{file}", base.trim_end_matches('/'))
    }
}

fn trusted_keys(shared: &Shared) -> Result<Vec<ballast_bundle::PublicKey>, String> {
    let mut keys = ballast_bundle::keys::read_dir(&shared.keys_dir).map_err(|e| e.to_string())?;
    keys.extend(
        ballast_bundle::keys::read_dir(&shared.config_keys_dir).map_err(|e| e.to_string())?,
    );
    Ok(keys)
}

/// The channel's index, verified (signature, expiry) with the machine's keys.
fn fetch_index(shared: &Shared, base: &str) -> Result<Index, String> {
    let mut index = Vec::new();
    get(&url_of(base, channel::INDEX))?
        .take(16 << 20)
        .read_to_end(&mut index)
        .map_err(|e| format!("channel {base}: reading the index: {e}"))?;
    let mut sig = String::new();
    get(&url_of(base, channel::INDEX_SIG))?
        .take(4096)
        .read_to_string(&mut sig)
        .map_err(|e| format!("channel {base}: reading the index signature: {e}"))?;
    let keys = trusted_keys(shared)?;
    channel::verify_index(&index, &sig, &keys, crate::update::now_unix())
        .map_err(|e| format!("channel {base}: index refused: {e}"))
}

/// The channel's delta from the running version to `entry`, when its signed
/// `deltas.json` lists one (the choice `osctl upgrade --channel` makes).
fn delta_for(
    base: &str,
    keys: &[ballast_bundle::PublicKey],
    current: &str,
    entry: &Entry,
) -> Option<channel::DeltaEntry> {
    let read = |file: &str, max: u64| {
        let mut out = Vec::new();
        get(&url_of(base, file))
            .ok()?
            .take(max)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    };
    let json = read(channel::DELTAS, 16 << 20);
    let sig = read(channel::DELTAS_SIG, 4096).map(|s| String::from_utf8_lossy(&s).into_owned());
    channel::delta_offered(
        json.as_deref().zip(sig.as_deref()),
        keys,
        crate::update::now_unix(),
        current,
        &entry.version,
        &entry.arch,
    )
}

/// Stream the channel's delta from the running version (when it lists one) or
/// else the entry's bundle into the inactive slot, with the installer `osctl
/// upgrade` uses; a refused delta falls back to the bundle.
fn install(shared: &Shared, base: &str, entry: &Entry) -> Result<(), String> {
    if shared.upgrading.swap(true, Ordering::SeqCst) {
        return Err("another upgrade is running; trying again at the next check".into());
    }
    let result = (|| -> Result<(), String> {
        let booted = shared.slot.ok_or("the booted slot is unknown")?;
        let boot = shared.boot().map_err(|e| e.to_string())?;
        let identity = crate::update::Identity::read(&shared.os_release, &shared.cmdline)
            .map_err(|e| e.to_string())?;
        let keys = trusted_keys(shared)?;
        let root_device = crate::update::slot_device(&shared.boot_dir, booted.other())
            .map_err(|e| e.to_string())?;
        // A delta is applied to the running slot.
        let running =
            crate::update::Running::of(&shared.boot_dir, booted).map_err(|e| e.to_string())?;
        let target = crate::update::Target {
            running,
            boot: &boot,
            root_device,
            booted,
            identity: &identity,
            keys: &keys,
            records: &shared.records,
        };
        let write = |url: &str, size: u64| {
            let mut body = std::io::BufReader::with_capacity(1 << 20, get(url)?.take(size));
            crate::update::install(&target, &mut body, false, &mut |_, _, _| {})
                .map(|_| ())
                .map_err(|e| format!("installing {} from {url}: {e}", entry.version))
        };
        if let Some(d) = delta_for(base, &keys, &shared.version, entry) {
            let url = url_of(base, &d.file);
            say(&format!(
                "update agent: taking the delta {} -> {} ({} bytes, the bundle is {})",
                d.from, d.to, d.size, entry.size
            ));
            match write(&url, d.size) {
                Ok(()) => return Ok(()),
                Err(e) => say(&format!(
                    "update agent: delta refused: {e}; taking the full bundle"
                )),
            }
        }
        write(&url_of(base, &entry.file), entry.size)
    })();
    shared.upgrading.store(false, Ordering::SeqCst);
    result
}

/// Reboot into the staged version when the window is open and the lock is held.
fn try_reboot(shared: &Shared, u: &Update, version: &str) {
    let agent = &shared.agent;
    if let Some(w) = &u.window {
        let zone = match tz::Zone::load(&w.timezone, &agent.places.zoneinfo) {
            Ok(z) => z,
            Err(e) => {
                // A zone the device does not know: never reboot on a guess.
                agent.set(|s| {
                    s.state = "waiting for window".into();
                    s.window_open = None;
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        };
        let open = window::is_open(w, &zone, crate::update::now_unix() as i64);
        agent.set(|s| s.window_open = Some(open));
        if !open {
            agent.set(|s| s.state = "waiting for window".into());
            return;
        }
    }
    if let Some(cfg) = &u.reboot_lock {
        match lock::Lock::new(cfg.clone()).acquire(&agent.machine_id) {
            Ok(true) => {
                if !mlock(&agent.kept).lock_held {
                    agent.keep(|k| k.lock_held = true);
                }
            }
            Ok(false) => {
                agent.set(|s| s.state = "waiting for lock".into());
                return;
            }
            Err(e) => {
                agent.set(|s| {
                    s.state = "waiting for lock".into();
                    s.last_error = Some(e.to_string());
                });
                return;
            }
        }
    }
    agent.set(|s| s.state = "rebooting".into());
    say(&format!("update agent: rebooting into {version}"));
    if let Err(e) = shared.ask_pid1(Signal::Int, "reboot") {
        agent.set(|s| s.last_error = Some(e.to_string()));
    }
}

/// The machine's stable id: kept on the state partition, made once from the
/// kernel's random UUID.
fn machine_id(path: &Path) -> String {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_string();
        }
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().replace('-', ""))
        .unwrap_or_else(|_| format!("{:x}", jitter(u64::MAX - 1)));
    if let Err(e) = ballast_device::write_atomic(path, format!("{id}\n").as_bytes()) {
        say(&format!("update agent: cannot keep the machine id: {e}"));
    }
    id
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| e.to_string())?;
    ballast_device::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, arch: &str) -> Entry {
        Entry {
            version: v.into(),
            arch: arch.into(),
            boards: vec![],
            file: format!("{v}-{arch}.bundle"),
            size: 1,
            sha256: String::new(),
            notes: None,
            published: 0,
            rollout: None,
        }
    }

    #[test]
    fn newest_allowed_version_is_chosen() {
        let idx = Index {
            format: 1,
            expires: u64::MAX,
            entries: vec![
                entry("0.2.0", "arm64"),
                entry("0.3.0", "arm64"),
                entry("0.4.0", "amd64"),
                entry("0.1.0", "arm64"),
            ],
        };
        let v = |current: &str, rb: &[&str]| {
            let rb: Vec<String> = rb.iter().map(|s| s.to_string()).collect();
            choose(&idx, "arm64", "qemu-arm64", current, &rb).map(|e| e.version.clone())
        };
        assert_eq!(v("0.1.0", &[]).as_deref(), Some("0.3.0"));
        // 0.3.0 rolled back here: 0.2.0 is still an update.
        assert_eq!(v("0.1.0", &["0.3.0"]).as_deref(), Some("0.2.0"));
        assert_eq!(v("0.2.0", &["0.3.0"]), None);
        assert_eq!(v("0.3.0", &[]), None);
    }

    #[test]
    fn the_machine_id_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("machine-id");
        let a = machine_id(&p);
        assert!(a.len() >= 16, "{a}");
        assert_eq!(machine_id(&p), a);
    }
}
