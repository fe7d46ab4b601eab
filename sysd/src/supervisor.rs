//! The supervisor as a pure state machine: no processes, no clocks, no files.
//!
//! Time comes in as milliseconds since sysd started (`now`). Events change memory
//! (`started`, `start_failed`, `exited`, `health_ok`, `stop`, `start`, `restart`,
//! `shutdown`); [`Supervisor::tick`] returns what the caller must do next (start a
//! service, send a signal, run a TCP check, announce readiness). The caller owns every
//! side effect, so ordering, backoff and the ready logic are tested here without a
//! single process.
//!
//! A failed run is reported once its output has had time to reach the log
//! ([`Action::ReportFailure`]); the caller reads the run's last lines and hands them to
//! [`Supervisor::failure_seen`], which decides whether the console hears about it (once
//! per distinct failure) and what the failing service blocks.

use std::collections::{HashMap, HashSet};

use ballast_control::{Service, ServiceState};

use crate::definition::{Def, Health, Policy};

/// A service that ran healthy this long gets its backoff reset.
pub const BACKOFF_RESET_MS: u64 = 60_000;
/// SIGTERM, then SIGKILL after this long.
pub const STOP_GRACE_MS: u64 = 5_000;
/// Interval between health probes (TCP, unix socket, ready file) while a
/// service is not yet healthy: short, because `ballast-ready` (and the
/// services `after` it) wait on them, and each is one cheap local call.
pub const PROBE_INTERVAL_MS: u64 = 20;
/// After this long without turning healthy, a service is probed less often.
pub const QUICK_PROBES_MS: u64 = 10_000;
/// The probe interval then.
pub const SLOW_PROBE_INTERVAL_MS: u64 = 100;

/// When to probe a service started at `started_at` again, after a probe at `now`.
fn next_probe(started_at: u64, now: u64) -> u64 {
    if now.saturating_sub(started_at) < QUICK_PROBES_MS {
        now + PROBE_INTERVAL_MS
    } else {
        now + SLOW_PROBE_INTERVAL_MS
    }
}
/// How long after a failed exit its last lines are read: the log pump thread copies
/// the pipe's last bytes after the process is reaped.
pub const REPORT_DELAY_MS: u64 = 250;
/// How many of a failed run's last lines the console and `osctl status` show.
pub const ERROR_LINES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the service, then report `started` or `start_failed`.
    Start(String),
    Signal {
        name: String,
        pid: u32,
        sig: Sig,
    },
    /// Try a TCP connect; report `health_ok` when it succeeds.
    CheckTcp {
        name: String,
        addr: std::net::SocketAddr,
    },
    /// `GET path` over the unix socket; report `health_ok` on HTTP 200.
    CheckUnixHttp {
        name: String,
        socket: std::path::PathBuf,
        path: String,
    },
    /// Look for the service's ready file; report `health_ok` when it is there.
    CheckReadyFile {
        name: String,
        path: std::path::PathBuf,
    },
    /// Connect to the unix socket; report `health_ok` when it succeeds.
    CheckUnix {
        name: String,
        socket: std::path::PathBuf,
    },
    /// A run of the service just passed its health check, `after_ms` after it
    /// started: say so (once per run), so a boot's console shows where its time went.
    Healthy {
        name: String,
        after_ms: u64,
    },
    /// Every required service is healthy: announce it (once per boot).
    Ready,
    /// A run of the service failed: read the last lines of that run from its log and
    /// pass them to [`Supervisor::failure_seen`]. Comes before the next `Start` of it.
    ReportFailure {
        name: String,
        exit: Exit,
    },
}

impl Action {
    /// `name`'s run, started at `started_at`, turned healthy at `now`.
    fn healthy(name: &str, started_at: u64, now: u64) -> Action {
        Action::Healthy {
            name: name.to_owned(),
            after_ms: now.saturating_sub(started_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Stay,
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Not started yet: waiting for dependencies (or for the next tick).
    Waiting,
    Running {
        pid: u32,
        started_at: u64,
        healthy_at: Option<u64>,
        next_check: u64,
    },
    Backoff {
        until: u64,
    },
    Stopping {
        pid: u32,
        term_at: Option<u64>,
        killed: bool,
        then: AfterStop,
    },
    Stopped,
    Failed,
}

#[derive(Debug, Clone)]
struct Svc {
    def: Def,
    phase: Phase,
    since: u64,
    restarts: u32,
    ever_started: bool,
    /// Delay before the next restart.
    backoff_ms: u64,
    last_exit: Option<String>,
    /// Stopped by request: no automatic start until `start`/`restart`.
    held: bool,
    /// Can never start (dependency cycle or missing dependency): the reason.
    blocked: Option<String>,
    /// A failed run waiting to be reported, and when.
    report: Option<(Exit, u64)>,
    /// The last lines of the last failed run that wrote any (for `osctl status`).
    last_error: Option<String>,
    /// The failure the console was last told about; a repeat of it stays quiet.
    announced: Option<String>,
}

impl Svc {
    fn set(&mut self, phase: Phase, now: u64) {
        self.phase = phase;
        self.since = now;
    }

    /// A run not yet healthy turns healthy at `now`: the action that says
    /// so, or `None` when it is not such a run.
    fn turn_healthy(&mut self, now: u64) -> Option<Action> {
        let Phase::Running {
            pid,
            started_at,
            healthy_at: None,
            next_check,
        } = self.phase
        else {
            return None;
        };
        self.set(
            Phase::Running {
                pid,
                started_at,
                healthy_at: Some(now),
                next_check,
            },
            now,
        );
        Some(Action::healthy(&self.def.name, started_at, now))
    }

    fn is_up_for_dependents(&self) -> bool {
        match self.phase {
            Phase::Running { healthy_at, .. } => healthy_at.is_some() || !self.def.health_explicit,
            _ => false,
        }
    }

    fn is_healthy(&self) -> bool {
        matches!(
            self.phase,
            Phase::Running {
                healthy_at: Some(_),
                ..
            }
        )
    }
}

/// How a process ended, as the caller decoded it from `waitpid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub success: bool,
    /// `exited with status 1`, `killed by signal 9`.
    pub desc: String,
}

#[derive(Debug)]
pub struct Supervisor {
    /// In dependency order (a service after everything it names in `after`).
    svcs: Vec<Svc>,
    ready_announced: bool,
    shutting_down: bool,
}

impl Supervisor {
    /// Order the definitions by `after`. Services in a cycle or after a service that is
    /// not defined are kept (so status shows them) but never started; the second value
    /// lists why.
    pub fn new(defs: Vec<Def>) -> (Supervisor, Vec<String>) {
        let mut errors = Vec::new();
        let names: HashSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        // Kahn's algorithm, keeping the input (name) order among peers.
        let mut done: HashSet<String> = HashSet::new();
        let mut order: Vec<usize> = Vec::new();
        loop {
            let mut progressed = false;
            for (i, d) in defs.iter().enumerate() {
                if done.contains(&d.name) {
                    continue;
                }
                if d.after.iter().all(|a| done.contains(a)) {
                    done.insert(d.name.clone());
                    order.push(i);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        let stuck: Vec<&Def> = defs.iter().filter(|d| !done.contains(&d.name)).collect();
        let mut stuck_names: Vec<&str> = stuck.iter().map(|d| d.name.as_str()).collect();
        stuck_names.sort();
        let mut blocked: HashMap<String, String> = HashMap::new();
        for d in &stuck {
            let missing: Vec<&str> = d
                .after
                .iter()
                .map(String::as_str)
                .filter(|a| !names.contains(a))
                .collect();
            let reason = if !missing.is_empty() {
                format!(
                    "{}: not started: `after` names {}, which is not defined or failed to load (see the errors above); fix or remove it",
                    d.name,
                    missing.join(", ")
                )
            } else {
                format!(
                    "{}: not started: dependency cycle or a blocked dependency among {}; break the cycle in their manifest.toml `after` lists",
                    d.name,
                    stuck_names.join(", ")
                )
            };
            errors.push(reason.clone());
            blocked.insert(d.name.clone(), reason);
        }
        let mut svcs = Vec::new();
        let idx_stuck = defs
            .iter()
            .enumerate()
            .filter(|(_, d)| blocked.contains_key(&d.name))
            .map(|(i, _)| i);
        let all: Vec<usize> = order.into_iter().chain(idx_stuck).collect();
        for i in all {
            let def = defs[i].clone();
            let b = blocked.get(&def.name).cloned();
            svcs.push(Svc {
                backoff_ms: def.backoff_initial_ms,
                phase: if b.is_some() {
                    Phase::Failed
                } else {
                    Phase::Waiting
                },
                last_exit: b.clone(),
                blocked: b,
                def,
                since: 0,
                restarts: 0,
                ever_started: false,
                held: false,
                report: None,
                last_error: None,
                announced: None,
            });
        }
        (
            Supervisor {
                svcs,
                ready_announced: false,
                shutting_down: false,
            },
            errors,
        )
    }

    fn find(&mut self, name: &str) -> Option<&mut Svc> {
        self.svcs.iter_mut().find(|s| s.def.name == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.svcs.iter().map(|s| s.def.name.clone()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.svcs.iter().any(|s| s.def.name == name)
    }

    /// Every required service is healthy (true with no required service at all).
    pub fn all_required_healthy(&self) -> bool {
        self.svcs
            .iter()
            .filter(|s| s.def.required)
            .all(Svc::is_healthy)
    }

    pub fn ready_announced(&self) -> bool {
        self.ready_announced
    }

    /// Whether a service started less than [`QUICK_PROBES_MS`] ago is not
    /// healthy yet: its check is watched closely, and sysd's loop turns
    /// faster meanwhile.
    pub fn awaiting_health(&self, now: u64) -> bool {
        self.svcs.iter().any(|s| {
            matches!(s.phase, Phase::Running { healthy_at: None, started_at, .. }
                if now.saturating_sub(started_at) < QUICK_PROBES_MS)
        })
    }

    /// No process is left (after `shutdown`).
    pub fn all_down(&self) -> bool {
        self.svcs
            .iter()
            .all(|s| !matches!(s.phase, Phase::Running { .. } | Phase::Stopping { .. }))
    }

    /// Advance timers and return what to do now.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.svcs.len() {
            let deps_up = {
                let s = &self.svcs[i];
                s.def.after.iter().all(|a| {
                    self.svcs
                        .iter()
                        .any(|o| &o.def.name == a && o.is_up_for_dependents())
                })
            };
            let shutting_down = self.shutting_down;
            let s = &mut self.svcs[i];
            let name = s.def.name.clone();
            if let Some((exit, due)) = s.report.clone() {
                // Never later than the next start: that run's output would follow.
                let restarting = matches!(s.phase, Phase::Backoff { until } if now >= until)
                    || !matches!(s.phase, Phase::Backoff { .. } | Phase::Failed);
                if now >= due || restarting {
                    s.report = None;
                    actions.push(Action::ReportFailure {
                        name: name.clone(),
                        exit,
                    });
                }
            }
            match s.phase.clone() {
                Phase::Waiting if !s.held && !shutting_down && s.blocked.is_none() && deps_up => {
                    actions.push(Action::Start(name));
                }
                Phase::Backoff { until } if now >= until && !s.held && !shutting_down => {
                    actions.push(Action::Start(name));
                }
                Phase::Running {
                    pid,
                    started_at,
                    healthy_at: None,
                    next_check,
                } => match &s.def.health {
                    &Health::RunningMs(ms) if now.saturating_sub(started_at) >= ms => {
                        actions.extend(s.turn_healthy(now));
                    }
                    probed if now >= next_check => {
                        if let Some(check) = probe(name, probed) {
                            actions.push(check);
                            s.phase = Phase::Running {
                                pid,
                                started_at,
                                healthy_at: None,
                                next_check: next_probe(started_at, now),
                            };
                        }
                    }
                    _ => {}
                },
                Phase::Running {
                    healthy_at: Some(h),
                    ..
                } if now.saturating_sub(h) >= BACKOFF_RESET_MS => {
                    s.backoff_ms = s.def.backoff_initial_ms;
                }
                Phase::Stopping {
                    pid,
                    term_at,
                    killed,
                    then,
                } => match term_at {
                    None => {
                        actions.push(Action::Signal {
                            name,
                            pid,
                            sig: Sig::Term,
                        });
                        s.phase = Phase::Stopping {
                            pid,
                            term_at: Some(now),
                            killed,
                            then,
                        };
                    }
                    Some(t) if !killed && now.saturating_sub(t) >= STOP_GRACE_MS => {
                        actions.push(Action::Signal {
                            name,
                            pid,
                            sig: Sig::Kill,
                        });
                        s.phase = Phase::Stopping {
                            pid,
                            term_at,
                            killed: true,
                            then,
                        };
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if !self.ready_announced && self.all_required_healthy() {
            self.ready_announced = true;
            actions.push(Action::Ready);
        }
        actions
    }

    /// The caller started `name` as `pid`.
    pub fn started(&mut self, name: &str, pid: u32, now: u64) {
        if let Some(s) = self.find(name) {
            if s.ever_started {
                s.restarts += 1;
            }
            s.ever_started = true;
            s.set(
                Phase::Running {
                    pid,
                    started_at: now,
                    healthy_at: None,
                    next_check: now,
                },
                now,
            );
        }
    }

    /// Starting `name` failed: treated like a failed exit (the policy decides).
    pub fn start_failed(&mut self, name: &str, error: &str, now: u64) {
        if let Some(s) = self.find(name) {
            if s.ever_started {
                s.restarts += 1;
            }
            s.ever_started = true;
            let exit = Exit {
                success: false,
                desc: format!("start failed: {error}"),
            };
            after_exit(s, &exit, now, None);
        }
    }

    /// A process ended. Returns the service it belonged to, if any.
    pub fn exited(&mut self, pid: u32, exit: &Exit, now: u64) -> Option<String> {
        let s = self.svcs.iter_mut().find(|s| match s.phase {
            Phase::Running { pid: p, .. } | Phase::Stopping { pid: p, .. } => p == pid,
            _ => false,
        })?;
        let healthy_at = match s.phase {
            Phase::Running { healthy_at, .. } => healthy_at,
            _ => None,
        };
        match s.phase {
            Phase::Stopping { then, .. } => {
                s.last_exit = Some(exit.desc.clone());
                match then {
                    AfterStop::Stay => s.set(Phase::Stopped, now),
                    AfterStop::Restart => {
                        s.backoff_ms = s.def.backoff_initial_ms;
                        s.set(Phase::Waiting, now)
                    }
                }
            }
            _ => after_exit(s, exit, now, healthy_at),
        }
        Some(s.def.name.clone())
    }

    /// A probe of `name` passed. When that makes the run healthy, returns
    /// [`Action::Healthy`] for the caller to perform.
    pub fn health_ok(&mut self, name: &str, now: u64) -> Option<Action> {
        let s = self.find(name)?;
        let healthy = s.turn_healthy(now)?;
        // It recovered: the same failure again is news.
        s.announced = None;
        Some(healthy)
    }

    /// The last lines of a failed run of `name` (oldest first; blank lines are
    /// skipped): kept for `osctl status`, and the console line to print, or `None`
    /// when the console was already told about this same failure. The line says
    /// what waits for the service: `ballast-ready` when it is required, and the
    /// services that start after it.
    pub fn failure_seen(&mut self, name: &str, exit: &Exit, lines: &[String]) -> Option<String> {
        let blocks = self.blocks(name);
        let s = self.find(name)?;
        let kept: Vec<&str> = lines
            .iter()
            .map(|l| l.trim_end())
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = kept.len().saturating_sub(ERROR_LINES);
        let error = (!kept.is_empty()).then(|| kept[start..].join(" | "));
        if error.is_some() {
            s.last_error = error.clone();
        }
        let key = format!("{}\n{}", exit.desc, error.as_deref().unwrap_or(""));
        if s.announced.as_deref() == Some(key.as_str()) {
            return None;
        }
        s.announced = Some(key);
        let said = match &error {
            Some(e) => format!(": {e}"),
            None => ": it wrote nothing to its log".to_string(),
        };
        let waits = if blocks.is_empty() {
            "nothing waits for it".to_string()
        } else {
            format!("blocks {}", blocks.join(", "))
        };
        Some(format!(
            "{name} failed ({}){said} [{waits}; osctl logs {name}; repeats of this failure are not shown]",
            exit.desc
        ))
    }

    /// What cannot go on while `name` is down: `ballast-ready` when it (or a service
    /// that needs it) is required, then every service that starts after it, directly
    /// or through another one, in dependency order.
    /// The ready file `name` says it is ready with, if its health is one.
    pub fn ready_file(&self, name: &str) -> Option<std::path::PathBuf> {
        self.svcs
            .iter()
            .find(|s| s.def.name == name)
            .and_then(|s| match &s.def.health {
                Health::ReadyFile(p) => Some(p.clone()),
                _ => None,
            })
    }

    pub fn blocks(&self, name: &str) -> Vec<String> {
        let mut down: HashSet<&str> = HashSet::from([name]);
        let mut after = Vec::new();
        // `svcs` is in dependency order: one pass reaches every transitive dependent.
        for s in &self.svcs {
            if s.def.after.iter().any(|a| down.contains(a.as_str())) {
                down.insert(&s.def.name);
                after.push(s.def.name.clone());
            }
        }
        let ready = self
            .svcs
            .iter()
            .any(|s| s.def.required && down.contains(s.def.name.as_str()));
        let mut out = Vec::new();
        if ready {
            out.push("ballast-ready".to_string());
        }
        out.extend(after);
        out
    }

    /// Stop `name` and keep it stopped.
    pub fn stop(&mut self, name: &str, now: u64) -> Result<String, RequestError> {
        let s = self.find(name).ok_or_else(|| unknown(name))?;
        s.held = true;
        match s.phase.clone() {
            Phase::Running { pid, .. } => {
                s.set(
                    Phase::Stopping {
                        pid,
                        term_at: None,
                        killed: false,
                        then: AfterStop::Stay,
                    },
                    now,
                );
                Ok(format!("stopping {name} (pid {pid})"))
            }
            Phase::Stopping {
                pid,
                term_at,
                killed,
                ..
            } => {
                s.phase = Phase::Stopping {
                    pid,
                    term_at,
                    killed,
                    then: AfterStop::Stay,
                };
                Ok(format!("{name} is already stopping"))
            }
            Phase::Stopped => Ok(format!("{name} is already stopped")),
            Phase::Waiting | Phase::Backoff { .. } | Phase::Failed => {
                s.set(Phase::Stopped, now);
                Ok(format!("{name} stopped"))
            }
        }
    }

    /// Start a stopped or failed `name` (now, with a fresh backoff).
    pub fn start(&mut self, name: &str, now: u64) -> Result<String, RequestError> {
        let s = self.find(name).ok_or_else(|| unknown(name))?;
        if let Some(b) = &s.blocked {
            return Err(RequestError::Blocked(b.clone()));
        }
        s.held = false;
        match s.phase.clone() {
            Phase::Running { pid, .. } => Ok(format!("{name} is already running (pid {pid})")),
            Phase::Stopping {
                pid,
                term_at,
                killed,
                ..
            } => {
                s.phase = Phase::Stopping {
                    pid,
                    term_at,
                    killed,
                    then: AfterStop::Restart,
                };
                Ok(format!("{name} is stopping; it will start again"))
            }
            Phase::Waiting => Ok(format!("{name} is starting")),
            Phase::Stopped | Phase::Failed | Phase::Backoff { .. } => {
                s.backoff_ms = s.def.backoff_initial_ms;
                s.set(Phase::Waiting, now);
                Ok(format!("starting {name}"))
            }
        }
    }

    /// Stop `name` if it runs, then start it again with a fresh backoff.
    pub fn restart(&mut self, name: &str, now: u64) -> Result<String, RequestError> {
        let s = self.find(name).ok_or_else(|| unknown(name))?;
        if let Some(b) = &s.blocked {
            return Err(RequestError::Blocked(b.clone()));
        }
        s.held = false;
        match s.phase.clone() {
            Phase::Running { pid, .. } => {
                s.set(
                    Phase::Stopping {
                        pid,
                        term_at: None,
                        killed: false,
                        then: AfterStop::Restart,
                    },
                    now,
                );
                Ok(format!("restarting {name} (stopping pid {pid})"))
            }
            _ => self.start(name, now),
        }
    }

    /// Replace the definitions (a first-boot config was applied): services still
    /// defined keep running, adopted by pid with their health; services no longer
    /// defined get SIGTERM (the returned actions); with `hold`, stopped services stay
    /// stopped. Readiness is not announced a second time. Returns the signals to send
    /// and the new definitions' errors; the caller ticks as usual.
    pub fn replace_definitions(
        &mut self,
        defs: Vec<Def>,
        hold: bool,
        now: u64,
    ) -> (Vec<Action>, Vec<String>) {
        let (mut next, errors) = Supervisor::new(defs);
        let mut actions = Vec::new();
        for s in self.status(now) {
            let kept = next.has(&s.name);
            match (s.state, s.pid) {
                (ServiceState::Running | ServiceState::Healthy, Some(pid)) if kept => {
                    next.started(&s.name, pid, now);
                    if s.state == ServiceState::Healthy {
                        next.health_ok(&s.name, now);
                    }
                }
                (_, Some(pid)) if !kept => actions.push(Action::Signal {
                    name: s.name,
                    pid,
                    sig: Sig::Term,
                }),
                (ServiceState::Stopped, None) if kept && hold => {
                    let _ = next.stop(&s.name, now);
                }
                _ => {}
            }
        }
        next.ready_announced = self.ready_announced;
        *self = next;
        (actions, errors)
    }

    /// Stop everything (SIGTERM, then SIGKILL after the grace time); start nothing more.
    pub fn shutdown(&mut self, now: u64) {
        self.shutting_down = true;
        for s in &mut self.svcs {
            s.held = true;
            match s.phase.clone() {
                Phase::Running { pid, .. } => s.set(
                    Phase::Stopping {
                        pid,
                        term_at: None,
                        killed: false,
                        then: AfterStop::Stay,
                    },
                    now,
                ),
                Phase::Stopping {
                    pid,
                    term_at,
                    killed,
                    ..
                } => {
                    s.phase = Phase::Stopping {
                        pid,
                        term_at,
                        killed,
                        then: AfterStop::Stay,
                    }
                }
                Phase::Waiting | Phase::Backoff { .. } => s.set(Phase::Stopped, now),
                Phase::Stopped | Phase::Failed => {}
            }
        }
    }

    /// Services as `osctl status` shows them, in dependency order.
    pub fn status(&self, now: u64) -> Vec<Service> {
        self.svcs
            .iter()
            .map(|s| {
                let (state, pid) = match s.phase {
                    Phase::Waiting => (ServiceState::Starting, None),
                    Phase::Running {
                        pid, healthy_at, ..
                    } => (
                        if healthy_at.is_some() {
                            ServiceState::Healthy
                        } else {
                            ServiceState::Running
                        },
                        Some(pid),
                    ),
                    Phase::Backoff { .. } => (ServiceState::Backoff, None),
                    Phase::Stopping { pid, .. } => (ServiceState::Stopped, Some(pid)),
                    Phase::Stopped => (ServiceState::Stopped, None),
                    Phase::Failed => (ServiceState::Failed, None),
                };
                Service {
                    name: s.def.name.clone(),
                    state,
                    pid,
                    restarts: s.restarts,
                    required: s.def.required,
                    since_ms: now.saturating_sub(s.since),
                    last_exit: s.last_exit.clone(),
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }

    /// Milliseconds until the service's next automatic start, while in backoff.
    pub fn backoff_remaining(&self, name: &str, now: u64) -> Option<u64> {
        self.svcs
            .iter()
            .find(|s| s.def.name == name)
            .and_then(|s| match s.phase {
                Phase::Backoff { until } => Some(until.saturating_sub(now)),
                _ => None,
            })
    }
}

/// A request about one service cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no service named `{0}` (osctl status lists them)")]
    Unknown(String),
    /// It can never start (a dependency cycle or a blocked dependency): why.
    #[error("{0}")]
    Blocked(String),
}

fn unknown(name: &str) -> RequestError {
    RequestError::Unknown(name.to_string())
}

/// The action that probes `health` for service `name`; each reports
/// `health_ok` when it passes. `running_ms` has none: `tick` times it.
fn probe(name: String, health: &Health) -> Option<Action> {
    Some(match health {
        &Health::Tcp(addr) => Action::CheckTcp { name, addr },
        Health::UnixHttp { socket, path } => Action::CheckUnixHttp {
            name,
            socket: socket.clone(),
            path: path.clone(),
        },
        Health::Unix(socket) => Action::CheckUnix {
            name,
            socket: socket.clone(),
        },
        Health::ReadyFile(path) => Action::CheckReadyFile {
            name,
            path: path.clone(),
        },
        Health::RunningMs(_) => return None,
    })
}

/// Apply the restart policy after an unrequested exit or a failed start.
fn after_exit(s: &mut Svc, exit: &Exit, now: u64, healthy_at: Option<u64>) {
    s.last_exit = Some(exit.desc.clone());
    if !exit.success {
        s.report = Some((exit.clone(), now + REPORT_DELAY_MS));
    }
    if let Some(h) = healthy_at {
        if now.saturating_sub(h) >= BACKOFF_RESET_MS {
            s.backoff_ms = s.def.backoff_initial_ms;
        }
    }
    let restart = match s.def.policy {
        Policy::Always => true,
        Policy::OnFailure => !exit.success,
        Policy::Never => false,
    };
    if restart && !s.held {
        let delay = s.backoff_ms;
        s.backoff_ms = delay.saturating_mul(2).min(s.def.backoff_max_ms);
        s.set(Phase::Backoff { until: now + delay }, now);
    } else if exit.success || s.held {
        s.set(Phase::Stopped, now);
    } else {
        s.set(Phase::Failed, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, after: &[&str], required: bool) -> Def {
        Def {
            name: name.into(),
            description: String::new(),
            after: after.iter().map(|s| s.to_string()).collect(),
            required,
            policy: Policy::Always,
            backoff_initial_ms: 500,
            backoff_max_ms: 4000,
            health: Health::RunningMs(1000),
            health_explicit: false,
        }
    }

    fn starts(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn crash() -> Exit {
        Exit {
            success: false,
            desc: "exited with status 1".into(),
        }
    }

    fn state(s: &Supervisor, name: &str) -> ServiceState {
        s.status(0)
            .into_iter()
            .find(|x| x.name == name)
            .unwrap()
            .state
    }

    #[test]
    fn starts_in_dependency_order_and_waits_for_running() {
        let (mut s, errs) = Supervisor::new(vec![
            def("ssh", &["network"], true),
            def("network", &[], true),
        ]);
        assert!(errs.is_empty());
        assert_eq!(s.names(), vec!["network", "ssh"]);
        assert_eq!(starts(&s.tick(0)), vec!["network"]);
        s.started("network", 10, 0);
        // No [health] on network: running is enough for dependents.
        assert_eq!(starts(&s.tick(1)), vec!["ssh"]);
    }

    #[test]
    fn a_ready_file_is_probed_until_the_service_says_it_is_ready() {
        let mut net = def("network", &[], true);
        net.health = Health::ReadyFile("/run/ballast/network.ready".into());
        net.health_explicit = true;
        let (mut s, _) = Supervisor::new(vec![net, def("ssh", &["network"], true)]);
        assert_eq!(
            s.ready_file("network"),
            Some("/run/ballast/network.ready".into())
        );
        assert_eq!(s.ready_file("ssh"), None);
        assert_eq!(starts(&s.tick(0)), vec!["network"]);
        s.started("network", 10, 0);
        let probe = |a: &[Action]| {
            a.iter()
                .any(|a| matches!(a, Action::CheckReadyFile { name, .. } if name == "network"))
        };
        assert!(probe(&s.tick(1)));
        assert!(s.awaiting_health(1));
        // Not again before the interval; again after it.
        assert!(!probe(&s.tick(PROBE_INTERVAL_MS / 2)));
        let a = s.tick(1 + PROBE_INTERVAL_MS);
        assert!(probe(&a) && starts(&a).is_empty());
        // The run turns healthy once, and says how long after its start.
        assert_eq!(
            s.health_ok("network", 150),
            Some(Action::Healthy {
                name: "network".into(),
                after_ms: 150
            })
        );
        assert_eq!(s.health_ok("network", 160), None);
        assert_eq!(starts(&s.tick(151)), vec!["ssh"]);
    }

    #[test]
    fn a_service_slow_to_turn_healthy_is_probed_less_often_after_a_while() {
        let mut net = def("network", &[], true);
        net.health = Health::ReadyFile("/run/ballast/network.ready".into());
        net.health_explicit = true;
        let (mut s, _) = Supervisor::new(vec![net]);
        assert_eq!(starts(&s.tick(0)), vec!["network"]);
        s.started("network", 10, 0);
        let probes = |s: &mut Supervisor, from: u64, to: u64| {
            (from..to)
                .filter(|&t| {
                    s.tick(t)
                        .iter()
                        .any(|a| matches!(a, Action::CheckReadyFile { .. }))
                })
                .count() as u64
        };
        assert_eq!(probes(&mut s, 0, 1_000), 1_000 / PROBE_INTERVAL_MS);
        assert!(s.awaiting_health(1_000));
        let late = QUICK_PROBES_MS + 5_000;
        assert_eq!(
            probes(&mut s, late, late + 1_000),
            1_000 / SLOW_PROBE_INTERVAL_MS
        );
        // sysd's loop no longer turns faster for it.
        assert!(!s.awaiting_health(late));
    }

    #[test]
    fn a_running_time_health_says_healthy_once_when_it_passes() {
        let mut time = def("time", &[], true);
        time.health = Health::RunningMs(500);
        time.health_explicit = true;
        let (mut s, _) = Supervisor::new(vec![time]);
        assert_eq!(starts(&s.tick(0)), vec!["time"]);
        s.started("time", 10, 100);
        let healthy = |a: &[Action]| {
            a.iter()
                .filter(|a| matches!(a, Action::Healthy { .. }))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(healthy(&s.tick(599)).is_empty());
        assert_eq!(
            healthy(&s.tick(650)),
            vec![Action::Healthy {
                name: "time".into(),
                after_ms: 550
            }]
        );
        assert!(healthy(&s.tick(700)).is_empty());
    }

    #[test]
    fn explicit_health_makes_dependents_wait_for_healthy() {
        let mut net = def("network", &[], false);
        net.health = Health::Tcp("127.0.0.1:9".parse().unwrap());
        net.health_explicit = true;
        let (mut s, _) = Supervisor::new(vec![net, def("ssh", &["network"], false)]);
        assert_eq!(starts(&s.tick(0)), vec!["network"]);
        s.started("network", 10, 0);
        let a = s.tick(1);
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::CheckTcp { name, .. } if name == "network")));
        assert!(starts(&a).is_empty());
        // Not probed again before the interval.
        assert!(s.tick(2).is_empty());
        s.health_ok("network", 3);
        assert_eq!(state(&s, "network"), ServiceState::Healthy);
        assert_eq!(starts(&s.tick(4)), vec!["ssh"]);
    }

    #[test]
    fn cycle_and_missing_dependency_are_reported_and_not_started() {
        let (mut s, errs) = Supervisor::new(vec![
            def("a", &["b"], false),
            def("b", &["a"], false),
            def("c", &["nope"], false),
            def("d", &[], true),
        ]);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.starts_with("a:") && e.contains("cycle")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("c:") && e.contains("nope")));
        assert_eq!(starts(&s.tick(0)), vec!["d"]);
        assert_eq!(state(&s, "a"), ServiceState::Failed);
        assert!(s.start("a", 0).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (mut s, _) = Supervisor::new(vec![def("x", &[], false)]);
        let mut now = 0;
        let mut delays = Vec::new();
        s.tick(now);
        for pid in 1..=6 {
            s.started("x", pid, now);
            now += 10;
            assert_eq!(s.exited(pid, &crash(), now), Some("x".into()));
            assert_eq!(state(&s, "x"), ServiceState::Backoff);
            let d = s.backoff_remaining("x", now).unwrap();
            delays.push(d);
            assert!(starts(&s.tick(now + d - 1)).is_empty(), "started too early");
            now += d;
            assert_eq!(starts(&s.tick(now)), vec!["x"]);
        }
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(s.status(now)[0].restarts, 5);
        assert_eq!(
            s.status(now)[0].last_exit.as_deref(),
            Some("exited with status 1")
        );
    }

    #[test]
    fn backoff_resets_after_a_minute_of_healthy_running() {
        let (mut s, _) = Supervisor::new(vec![def("x", &[], false)]);
        s.tick(0);
        s.started("x", 1, 0);
        s.exited(1, &crash(), 5);
        s.tick(505);
        s.started("x", 2, 505);
        s.exited(2, &crash(), 510);
        assert_eq!(s.backoff_remaining("x", 510), Some(1000));
        s.tick(1510);
        s.started("x", 3, 1510);
        s.tick(2510); // healthy after 1 s
        assert_eq!(state(&s, "x"), ServiceState::Healthy);
        s.tick(2510 + BACKOFF_RESET_MS);
        s.exited(3, &crash(), 2511 + BACKOFF_RESET_MS);
        assert_eq!(s.backoff_remaining("x", 2511 + BACKOFF_RESET_MS), Some(500));
    }

    #[test]
    fn policies_decide_what_an_exit_means() {
        let mut once = def("once", &[], false);
        once.policy = Policy::OnFailure;
        let mut never = def("never", &[], false);
        never.policy = Policy::Never;
        let mut once2 = once.clone();
        once2.name = "once2".into();
        let (mut s, _) = Supervisor::new(vec![once, once2, never]);
        s.tick(0);
        s.started("once", 1, 0);
        s.started("once2", 2, 0);
        s.started("never", 3, 0);
        let ok = Exit {
            success: true,
            desc: "exited with status 0".into(),
        };
        s.exited(1, &ok, 1);
        s.exited(2, &crash(), 1);
        s.exited(3, &crash(), 1);
        assert_eq!(state(&s, "once"), ServiceState::Stopped);
        assert_eq!(state(&s, "once2"), ServiceState::Backoff);
        assert_eq!(state(&s, "never"), ServiceState::Failed);
    }

    #[test]
    fn crash_loop_does_not_block_ready_of_the_others() {
        let (mut s, _) = Supervisor::new(vec![def("good", &[], true), def("bad", &[], false)]);
        let mut now = 0;
        let mut pid = 100;
        let mut ready_at = None;
        while now < 10_000 {
            for a in s.tick(now) {
                match a {
                    Action::Start(n) => {
                        pid += 1;
                        s.started(&n, pid, now);
                        if n == "bad" {
                            s.exited(pid, &crash(), now + 1);
                        }
                    }
                    Action::Ready => {
                        assert!(ready_at.is_none(), "ready announced twice");
                        ready_at = Some(now);
                    }
                    _ => {}
                }
            }
            now += 100;
        }
        assert_eq!(ready_at, Some(1000));
        assert!(s
            .status(now)
            .iter()
            .any(|x| x.name == "bad" && x.restarts >= 3));
    }

    #[test]
    fn ready_waits_for_every_required_service_and_only_once() {
        let (mut s, _) = Supervisor::new(vec![def("a", &[], true), def("b", &[], true)]);
        s.tick(0);
        s.started("a", 1, 0);
        assert!(!s.tick(2000).contains(&Action::Ready));
        s.started("b", 2, 2000);
        assert!(!s.tick(2500).contains(&Action::Ready));
        assert!(s.tick(3000).contains(&Action::Ready));
        s.exited(2, &crash(), 3001);
        let t = s.tick(3600);
        s.started("b", 3, 3600);
        assert!(!t.contains(&Action::Ready));
        assert!(!s.tick(5000).contains(&Action::Ready));
        assert!(s.ready_announced());
    }

    #[test]
    fn no_required_service_is_ready_at_once() {
        let (mut s, _) = Supervisor::new(vec![def("a", &[], false)]);
        assert!(s.tick(0).contains(&Action::Ready));
    }

    #[test]
    fn stop_sends_term_then_kill_and_keeps_it_stopped() {
        let (mut s, _) = Supervisor::new(vec![def("a", &[], false)]);
        s.tick(0);
        s.started("a", 7, 0);
        s.stop("a", 100).unwrap();
        let t = s.tick(100);
        assert!(t.contains(&Action::Signal {
            name: "a".into(),
            pid: 7,
            sig: Sig::Term
        }));
        assert!(s.tick(100 + STOP_GRACE_MS - 1).is_empty());
        assert!(s.tick(100 + STOP_GRACE_MS).contains(&Action::Signal {
            name: "a".into(),
            pid: 7,
            sig: Sig::Kill
        }));
        s.exited(
            7,
            &Exit {
                success: false,
                desc: "killed by signal 9".into(),
            },
            6000,
        );
        assert_eq!(state(&s, "a"), ServiceState::Stopped);
        assert!(starts(&s.tick(100_000)).is_empty());
        s.start("a", 100_000).unwrap();
        assert_eq!(starts(&s.tick(100_001)), vec!["a"]);
    }

    #[test]
    fn restart_stops_then_starts_with_fresh_backoff() {
        let (mut s, _) = Supervisor::new(vec![def("a", &[], false)]);
        s.tick(0);
        s.started("a", 7, 0);
        s.restart("a", 10).unwrap();
        assert!(s
            .tick(10)
            .iter()
            .any(|a| matches!(a, Action::Signal { sig: Sig::Term, .. })));
        s.exited(
            7,
            &Exit {
                success: false,
                desc: "killed by signal 15".into(),
            },
            20,
        );
        assert_eq!(starts(&s.tick(21)), vec!["a"]);
        assert!(s
            .restart("nope", 0)
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }

    #[test]
    fn shutdown_stops_all_and_starts_nothing() {
        let (mut s, _) = Supervisor::new(vec![def("a", &[], false), def("b", &["a"], false)]);
        s.tick(0);
        s.started("a", 1, 0);
        s.shutdown(5);
        let t = s.tick(5);
        assert!(starts(&t).is_empty());
        assert!(t.iter().any(|a| matches!(
            a,
            Action::Signal {
                pid: 1,
                sig: Sig::Term,
                ..
            }
        )));
        assert!(!s.all_down());
        s.exited(
            1,
            &Exit {
                success: false,
                desc: "killed by signal 15".into(),
            },
            6,
        );
        assert!(s.all_down());
        assert!(starts(&s.tick(100_000)).is_empty());
    }

    #[test]
    fn replacing_definitions_adopts_the_kept_and_stops_the_removed() {
        let (mut s, _) = Supervisor::new(vec![
            def("keep", &[], true),
            def("gone", &[], false),
            def("held", &[], false),
        ]);
        s.tick(0);
        s.started("keep", 10, 0);
        s.started("gone", 11, 0);
        let _ = s.stop("held", 0);
        s.health_ok("keep", 1);
        assert!(s.tick(1).contains(&Action::Ready));
        let (actions, errors) = s.replace_definitions(
            vec![
                def("keep", &[], true),
                def("held", &[], false),
                def("new", &[], false),
            ],
            true,
            2,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            actions,
            [Action::Signal {
                name: "gone".into(),
                pid: 11,
                sig: Sig::Term
            }]
        );
        assert!(!s.has("gone"));
        let st = s.status(2);
        let get = |n: &str| st.iter().find(|x| x.name == n).unwrap().clone();
        assert_eq!(
            (get("keep").state, get("keep").pid),
            (ServiceState::Healthy, Some(10))
        );
        assert_eq!(get("held").state, ServiceState::Stopped);
        let next = s.tick(3);
        assert!(next.contains(&Action::Start("new".into())), "{next:?}");
        assert!(!next.contains(&Action::Start("held".into())), "{next:?}");
        assert!(!next.contains(&Action::Ready), "announced twice: {next:?}");
    }

    fn reports(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ReportFailure { name, exit } => Some((name.clone(), exit.desc.clone())),
                _ => None,
            })
            .collect()
    }

    fn lines(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_failing_required_service_is_reported_once_with_its_own_words_and_what_it_blocks() {
        let (mut s, _) = Supervisor::new(vec![
            def("network", &[], true),
            def("ssh", &["network"], true),
            def("time", &[], false),
        ]);
        let mut now = 0;
        let mut printed = Vec::new();
        // Each run of network fails the same way, twenty times.
        for pid in 1..=20 {
            let t = s.tick(now);
            for (name, desc) in reports(&t) {
                let words = lines(&[
                    "",
                    "network: reading /etc/network.toml",
                    "network: no interface interface0",
                ]);
                let exit = Exit {
                    success: false,
                    desc,
                };
                printed.extend(s.failure_seen(&name, &exit, &words));
            }
            if starts(&t).contains(&"network".to_string()) {
                s.started("network", pid, now);
                s.exited(pid, &crash(), now + 5);
            }
            now += 100;
        }
        assert_eq!(printed.len(), 1, "{printed:?}");
        assert_eq!(
            printed[0],
            "network failed (exited with status 1): network: reading /etc/network.toml | network: no interface interface0 \
             [blocks ballast-ready, ssh; osctl logs network; repeats of this failure are not shown]"
        );
        let st = s.status(now);
        let net = st.iter().find(|x| x.name == "network").unwrap();
        assert_eq!(
            net.last_error.as_deref(),
            Some("network: reading /etc/network.toml | network: no interface interface0")
        );
        // A different failure is news again.
        let other = Exit {
            success: false,
            desc: "killed by signal 9".into(),
        };
        assert!(s
            .failure_seen("network", &other, &lines(&["network: out of memory"]))
            .is_some());
    }

    #[test]
    fn the_report_comes_after_the_delay_and_before_the_next_start() {
        let mut fast = def("x", &[], false);
        fast.backoff_initial_ms = 100;
        let (mut s, _) = Supervisor::new(vec![fast]);
        s.tick(0);
        s.started("x", 1, 0);
        s.exited(1, &crash(), 10);
        // Backoff (100 ms) ends before the report delay: the report goes first.
        let t = s.tick(110);
        assert_eq!(
            t.first(),
            Some(&Action::ReportFailure {
                name: "x".into(),
                exit: crash()
            }),
            "{t:?}"
        );
        assert_eq!(starts(&t), vec!["x"]);
        // Only once per failed run.
        s.started("x", 2, 110);
        assert!(reports(&s.tick(1000)).is_empty());
        // A clean exit is not a failure.
        s.health_ok("x", 1000);
        let ok = Exit {
            success: true,
            desc: "exited with status 0".into(),
        };
        s.exited(2, &ok, 1001);
        assert!(reports(&s.tick(1001 + REPORT_DELAY_MS)).is_empty());
    }

    #[test]
    fn the_report_waits_for_the_log_when_the_backoff_is_longer() {
        let (mut s, _) = Supervisor::new(vec![def("x", &[], false)]);
        s.tick(0);
        s.started("x", 1, 0);
        s.exited(1, &crash(), 10);
        assert!(reports(&s.tick(10 + REPORT_DELAY_MS - 1)).is_empty());
        assert_eq!(
            reports(&s.tick(10 + REPORT_DELAY_MS)),
            vec![("x".into(), "exited with status 1".into())]
        );
    }

    #[test]
    fn what_a_failure_blocks() {
        let (s, _) = Supervisor::new(vec![
            def("network", &[], false),
            def("ssh", &["network"], false),
            def("docker", &["ssh"], true),
            def("time", &[], false),
        ]);
        // docker is required and needs ssh, which needs network.
        assert_eq!(s.blocks("network"), vec!["ballast-ready", "ssh", "docker"]);
        assert_eq!(s.blocks("time"), Vec::<String>::new());
        let (mut s2, _) = Supervisor::new(vec![def("time", &[], false)]);
        let line = s2.failure_seen("time", &crash(), &[]).unwrap();
        assert!(line.contains("it wrote nothing to its log"), "{line}");
        assert!(line.contains("nothing waits for it"), "{line}");
        assert_eq!(s2.status(0)[0].last_error, None);
    }
}
