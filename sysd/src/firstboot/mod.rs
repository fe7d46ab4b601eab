//! First-boot config: find the document, check it with ballast-config, apply
//! its plan, record it; and `osctl config apply` at run time.
//!
//! Order at boot (see `source` for the sources, `apply` for where each setting
//! goes): without `ballast.config=URL`, the local sources (a CIDATA volume,
//! then `/boot/user-data`) are read and applied before sysd loads its service
//! definitions, so services start with the config in place. With a URL, every
//! service but `network` is held (shown as stopped) until the document is
//! fetched (once `network` is healthy, retried up to [`URL_DEADLINE`]) and
//! applied, or failed; then the definitions are loaded again (with the
//! config's system containers) and the held services start.
//!
//! Per instance: the applied plan is kept in `/state/ballast/config/applied.json`
//! and the instance id in `instance-id`. `write_files` and `runcmd` run only
//! when the instance id differs from the recorded one (so do `disk_setup`,
//! `fs_setup`, `ssh_deletekeys` and `power_state`); everything else (host
//! name, users and groups, keys and host keys, time zone, CA bundle, mounts,
//! containers, bootcmd, sysctl, NTP, final_message) is applied
//! again on every boot from the document found, or from `applied.json` when
//! no document is found or the one found is broken. A document without
//! meta-data (a URL without a trailing `/`, `/boot/user-data` alone) gets the
//! instance id `doc-HASH` of its text: changing the document makes a new
//! instance.
//!
//! A broken document is never applied: its error goes to the console
//! (`sysd: config: SOURCE:LINE: KEY: ...`) and to `osctl status`; the machine
//! keeps what was applied before, which on a fresh machine means the image's
//! defaults (user `ballast` with the image's keys, no password login ever).
//!
//! `osctl config apply` (see [`apply_request`]) keeps the recorded instance
//! id: it writes the `write_files` entries that are new or changed, queues the
//! `runcmd` entries that are new, re-applies the rest, and records the plan.

pub mod apply;
pub use apply::Layout;
mod disks;
mod etc;
pub use etc::lay_config_over;
mod hostkeys;
mod mounts;
mod power;
mod source;
pub(crate) mod sys;
mod users;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_config::{MetaData, Plan};
use ballast_control::{Response, ServiceState};
use ballast_device::atomic::{write_atomic_mode, AtomicError};

use crate::supervisor::{Action, Supervisor};
use crate::{lock, say, Shared};
use source::Found;

/// How long sysd waits for a `ballast.config=` URL before it starts the
/// services without it.
pub const URL_DEADLINE: Duration = Duration::from_secs(60);

/// First-boot state, made by [`begin`] and kept in [`Shared`] by the main loop; the
/// fetch thread and `osctl config apply` (socket threads) set its flags.
pub struct State {
    layout: Layout,
    /// The main loop must reload definitions (and, with `release`, start the held services).
    reload: AtomicBool,
    release: AtomicBool,
    /// The config changed the static network or the engine settings while their
    /// services ran: the next reload restarts them.
    restart_network: AtomicBool,
    restart_engine: AtomicBool,
    waiting: Mutex<Option<Waiting>>,
}

impl State {
    fn restart_later(&self, network: bool, engine: bool) {
        if network {
            self.restart_network.store(true, Ordering::SeqCst);
        }
        if engine {
            self.restart_engine.store(true, Ordering::SeqCst);
        }
    }

    fn release_and_reload(&self) {
        self.release.store(true, Ordering::SeqCst);
        self.reload.store(true, Ordering::SeqCst);
    }
}

struct Waiting {
    url: String,
    /// PEM certificates of the local seed's `ca_certs`, trusted for the URL.
    seed_ca: Vec<String>,
    deadline: Instant,
    fetching: bool,
}

/// What one application did, for the console and `osctl status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// The static network settings changed (see [`apply::Report`]).
    pub network_changed: bool,
    /// The engine settings changed (see [`apply::Report`]).
    pub engine_changed: bool,
}

fn read_applied(l: &Layout) -> Option<Plan> {
    let text = std::fs::read_to_string(l.applied()).ok()?;
    serde_json::from_str(&text).ok()
}

fn recorded_instance(l: &Layout) -> Option<String> {
    std::fs::read_to_string(l.instance_id())
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The applied plan could not be recorded (the next boot would apply it as new).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("config: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// Record the applied plan and its instance id (what the next boot compares).
fn record(l: &Layout, plan: &Plan) -> Result<(), RecordError> {
    let json = serde_json::to_string_pretty(plan)?;
    write_atomic_mode(&l.applied(), json.as_bytes(), 0o600)?;
    let id = plan.instance_id.clone().unwrap_or_default();
    write_atomic_mode(&l.instance_id(), format!("{id}\n").as_bytes(), 0o644)?;
    Ok(())
}

/// FNV-1a, 64 bits: a stable id for a document without meta-data.
fn doc_id(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("doc-{h:016x}")
}

/// Parse the document found and its meta-data into a plan.
fn plan_of(found: &Found, out: &mut Outcome) -> Option<Plan> {
    let parsed = match ballast_config::parse(&found.user_data, &found.user_data_source) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("config: {e}"));
            return None;
        }
    };
    out.warnings.extend(
        parsed
            .warnings
            .iter()
            .map(|w| format!("config: warning: {w}")),
    );
    let meta = match &found.meta_data {
        Some(text) => {
            match ballast_config::parse_meta_data(text, &format!("{}/meta-data", found.origin)) {
                Ok(m) => m,
                Err(e) => {
                    out.errors.push(format!("config: {e}"));
                    return None;
                }
            }
        }
        None => MetaData::default(),
    };
    let mut plan = parsed.doc.plan(&meta);
    // NoCloud network-config wins over `ballast.network`, as in cloud-init.
    if let Some(text) = &found.network_config {
        match ballast_config::parse_network_config(
            text,
            &format!("{}/network-config", found.origin),
        ) {
            Ok(n) => plan.network = Some(n),
            Err(e) => {
                out.errors.push(format!("config: {e}"));
                return None;
            }
        }
    }
    if plan.instance_id.is_none() {
        plan.instance_id = Some(doc_id(&found.user_data));
    }
    Some(plan)
}

/// Apply what was found (or the recorded plan when nothing usable was found).
fn apply_found(l: &Layout, found: Result<Option<Found>, source::SourceError>) -> Outcome {
    let mut out = Outcome::default();
    let fresh = match found {
        Err(e) => {
            out.errors.push(format!("config: {e}"));
            None
        }
        Ok(None) => None,
        Ok(Some(f)) => {
            out.notes
                .push(format!("config: found {}", f.user_data_source));
            power::set_datasource(&f.user_data_source);
            let plan = plan_of(&f, &mut out);
            // The error's own line, then how to get in (one entry, so
            // `osctl status` shows both together).
            if let (None, Some(e)) = (&plan, out.errors.last_mut()) {
                e.push_str("\n  ");
                e.push_str(&ballast_config::refused_hint(&f.user_data_source));
            }
            plan
        }
    };
    let (plan, new_instance) = match fresh {
        Some(p) => {
            let new = recorded_instance(l).as_deref() != p.instance_id.as_deref();
            (p, new)
        }
        None => match read_applied(l) {
            Some(p) => {
                out.notes
                    .push("config: applying the recorded config again (applied.json)".into());
                (p, false)
            }
            None => {
                if out.errors.is_empty() {
                    out.notes.push(
                        "config: no first-boot config (no ballast.config=, no CIDATA volume, no /boot/user-data): image defaults".into(),
                    );
                } else {
                    out.notes.push("config: the machine boots with the image's defaults (SSH keys of the image only, no password login)".into());
                }
                return out;
            }
        },
    };
    if new_instance {
        out.notes.push(format!(
            "config: new instance {}: write_files and runcmd run",
            plan.instance_id.as_deref().unwrap_or("-")
        ));
    }
    let r = apply::apply(l, &plan, new_instance);
    out.network_changed = r.network_changed;
    out.engine_changed = r.engine_changed;
    out.errors.extend(r.errors);
    out.warnings.extend(r.warnings);
    out.notes.extend(r.notes);
    if let Err(e) = record(l, &plan) {
        out.errors.push(e.to_string());
    }
    out
}

/// Say the notes and warnings (and the errors with `errors`: at boot, sysd's
/// start prints every error it collected itself); the errors for `osctl status`.
fn report(o: &Outcome, errors: bool) -> Vec<String> {
    let shown: &[String] = if errors { &o.errors } else { &[] };
    for line in o.notes.iter().chain(&o.warnings).chain(shown) {
        say(line);
    }
    o.errors.clone()
}

/// At sysd's start, before the definitions are loaded: apply a local config,
/// or note the URL to fetch. Returns the state and errors for `osctl status`.
pub fn begin(root: &Path, on_device: bool) -> (State, Vec<String>) {
    let l = Layout {
        root: root.to_path_buf(),
        on_device,
    };
    let cmdline = std::fs::read_to_string(l.cmdline()).unwrap_or_default();
    let state = State {
        layout: l.clone(),
        reload: AtomicBool::new(false),
        release: AtomicBool::new(false),
        restart_network: AtomicBool::new(false),
        restart_engine: AtomicBool::new(false),
        waiting: Mutex::new(None),
    };
    // The time container reads its NTP sources from here.
    if let Some(dir) = l.time_sources().parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            say(&format!("config: cannot create {}: {e}", dir.display()));
        }
    }
    // The SSH container shares the host's UTS namespace: a machine without a
    // configured name is `ballast`, not the kernel's `(none)`.
    if on_device {
        let now = std::fs::read_to_string(l.hostname()).unwrap_or_default();
        if matches!(now.trim(), "" | "(none)" | "localhost") {
            if let Err(e) = sys::sethostname("ballast") {
                say(&format!("config: {e}"));
            }
        }
    }
    if let Some(url) = source::url_from_cmdline(&cmdline) {
        say(&format!(
            "config: ballast.config={url}: services wait for it (up to {} s) once the network is up",
            URL_DEADLINE.as_secs()
        ));
        // The CA of an https:// URL comes from a local seed, as Ignition's comes
        // from its pointer config: the fetched document cannot vouch for itself.
        let seed = match source::find_cidata(&l.root) {
            Some((dev, fs)) => source::read_cidata(&dev, fs, &l.cidata_mount()),
            None => source::read_dir_seed(&l.boot(), "/boot"),
        };
        let seed_ca = match seed {
            Ok(Some(found)) => {
                let ca = source::seed_ca_certs(&found);
                if !ca.is_empty() {
                    say(&format!(
                        "config: trusting {} CA certificate(s) from {} for {url}",
                        ca.len(),
                        found.user_data_source
                    ));
                }
                ca
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                say(&format!("config: {e}"));
                Vec::new()
            }
        };
        *lock(&state.waiting) = Some(Waiting {
            url,
            seed_ca,
            deadline: Instant::now() + URL_DEADLINE,
            fetching: false,
        });
        return (state, Vec::new());
    }
    // A live system: the config embedded in its medium comes first.
    let embedded = if ballast_device::Cmdline::parse(&cmdline).live().is_some() {
        let area = ballast_device::paths::under(
            &l.root,
            &format!(
                "{}/{}",
                ballast_device::paths::MEDIUM,
                ballast_device::paths::MEDIUM_CONFIG_AREA
            ),
        );
        source::read_live_area(&area).transpose()
    } else {
        None
    };
    let found = match (embedded, source::find_cidata(&l.root)) {
        (Some(found), _) => found.map(Some),
        (None, Some((dev, fs))) => source::read_cidata(&dev, fs, &l.cidata_mount()),
        (None, None) => source::read_dir_seed(&l.boot(), "/boot"),
    };
    (state, report(&apply_found(&l, found), false))
}

/// A URL config is pending: hold every service but `network`.
pub fn hold(state: &State, sup: &mut Supervisor) {
    if lock(&state.waiting).is_none() {
        return;
    }
    for name in sup.names() {
        if name != "network" {
            let _ = sup.stop(&name, 0);
        }
    }
}

/// From the main loop: start the fetch once the network is healthy.
pub fn tick(shared: &Arc<Shared>) {
    let state = &shared.firstboot;
    let mut w = lock(&state.waiting);
    let Some(waiting) = w.as_mut() else {
        return;
    };
    if waiting.fetching {
        return;
    }
    let net = lock(&shared.sup)
        .status(shared.now_ms())
        .into_iter()
        .find(|s| s.name == "network")
        .map(|s| s.state);
    let ready = matches!(
        net,
        None | Some(ServiceState::Healthy | ServiceState::Failed)
    ) || Instant::now() >= waiting.deadline;
    if !ready {
        return;
    }
    waiting.fetching = true;
    let (url, deadline) = (waiting.url.clone(), waiting.deadline);
    let mut trust = crate::http::Trust::device();
    for pem in &waiting.seed_ca {
        trust.add_pem(pem, "the seed's ca_certs");
    }
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("sysd-config".into())
        .spawn(move || {
            let state = &sh.firstboot;
            let found = source::fetch(&url, deadline, &trust).map(Some);
            let outcome = apply_found(&state.layout, found);
            state.restart_later(outcome.network_changed, outcome.engine_changed);
            let errors = report(&outcome, true);
            lock(&sh.errors).extend(errors);
            *lock(&state.waiting) = None;
            state.release_and_reload();
        });
    if let Err(e) = spawned {
        let msg =
            format!("config: cannot start the fetch thread: {e}; starting without the config");
        say(&msg);
        lock(&shared.errors).push(msg);
        *w = None;
        state.release_and_reload();
    }
}

/// Reload requested (after the URL stage, or `osctl config apply`): `Some(release held)`.
pub fn take_reload(state: &State) -> Option<bool> {
    state
        .reload
        .swap(false, Ordering::SeqCst)
        .then(|| state.release.swap(false, Ordering::SeqCst))
}

/// Load the definitions again (the image's and the config's), keep running
/// services running (adopted by pid), stop containers the config removed.
/// Returns the first actions of the new supervisor (without a second ready
/// announcement).
pub fn reload(
    shared: &Shared,
    containers: &mut HashMap<String, crate::runtime::ContainerDir>,
    image: &Path,
    applied: &Path,
    release: bool,
) -> Vec<Action> {
    let (found, mut errs) = crate::definition::load_image_and_applied(image, applied);
    let mut new_containers = HashMap::new();
    let mut defs = Vec::new();
    for f in found {
        match crate::runtime::ContainerDir::load(&f.dir) {
            Ok(b) => {
                new_containers.insert(f.def.name.clone(), b);
                defs.push(f.def);
            }
            Err(e) => errs.push(e.to_string()),
        }
    }
    let now = shared.now_ms();
    let mut sup = lock(&shared.sup);
    let (mut actions, more) = sup.replace_definitions(defs, !release, now);
    errs.extend(more);
    for a in &actions {
        if let Action::Signal { name, pid, .. } = a {
            say(&format!(
                "config: {name} is no longer configured: stopping pid {pid}"
            ));
        }
    }
    let state = &shared.firstboot;
    for (flag, service, what) in [
        (&state.restart_network, "network", "static network"),
        (&state.restart_engine, "docker", "engine settings"),
    ] {
        if flag.swap(false, Ordering::SeqCst) && sup.has(service) {
            match sup.restart(service, now) {
                Ok(m) => say(&format!("config: {what} changed: {m}")),
                Err(e) => say(&format!("config: {what} changed, but: {e}")),
            }
        }
    }
    actions.extend(sup.tick(now));
    drop(sup);
    *containers = new_containers;
    let mut known = lock(&shared.errors);
    for e in errs {
        if !known.contains(&e) {
            say(&e);
            known.push(e);
        }
    }
    actions
}

/// `osctl config apply`: check, diff against the applied plan, and unless
/// `dry_run` apply and record (see the module doc for per-instance steps).
pub fn apply_request(state: &State, text: &str, source: &str, dry_run: bool) -> Response {
    let l = &state.layout;
    let parsed = match ballast_config::parse(text, source) {
        Ok(p) => p,
        Err(e) => {
            return Response::Error {
                message: e.to_string(),
            }
        }
    };
    let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
    let old = read_applied(l).unwrap_or_default();
    let meta = MetaData {
        instance_id: old.instance_id.clone().or_else(|| Some(doc_id(text))),
        local_hostname: None,
    };
    let new = parsed.doc.plan(&meta);
    let changes = ballast_config::diff(&old, &new);
    if dry_run {
        return Response::ConfigApplied {
            changes,
            warnings,
            errors: Vec::new(),
            applied: false,
        };
    }
    let mut delta = new.clone();
    delta.files.retain(|f| !old.files.contains(f));
    delta.runcmd.retain(|c| !old.runcmd.contains(c));
    let r = apply::apply(l, &delta, true);
    state.restart_later(r.network_changed, r.engine_changed);
    let mut errors = r.errors;
    if l.on_device {
        errors.extend(etc::refresh_admin(l));
    }
    if let Err(e) = record(l, &new) {
        errors.push(e.to_string());
    }
    for line in changes
        .iter()
        .map(|c| format!("config: apply: {c}"))
        .chain(r.warnings.iter().cloned())
        .chain(errors.iter().cloned())
    {
        say(&line);
    }
    state.reload.store(true, Ordering::SeqCst);
    Response::ConfigApplied {
        changes,
        warnings: warnings.into_iter().chain(r.warnings).collect(),
        errors,
        applied: true,
    }
}

/// At shutdown, once the services are down: unmount the config's `mounts`.
pub fn shutdown(state: &State) {
    let l = &state.layout;
    if !l.on_device {
        return;
    }
    if let Some(plan) = read_applied(l) {
        for line in mounts::unmount_all(l, &plan.mounts) {
            say(&line);
        }
    }
}

#[cfg(test)]
mod tests;
