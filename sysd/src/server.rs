//! The control socket: one thread accepting, one thread per connection. Requests
//! change the supervisor's memory only (under its lock); the main loop performs the
//! resulting signals and starts on its next tick. Upgrades and rollbacks are
//! `update`'s and ballast-slot's work: this module only carries bytes, descriptors
//! and answers.

use std::fmt::Display;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ballast_control::{read_message, write_message, Request, Response, Status};

use crate::sys::Signal;
use crate::update::UpdateError;
use crate::{lock, Shared};

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct BindError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// Bind the socket (mode 0660), replacing a stale one from a previous sysd.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| BindError {
            action,
            path,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("create", dir))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove stale socket", path)(e)),
    }
    let l = UnixListener::bind(path).map_err(err("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(err("chmod 0660", path))?;
    // The admin group may talk to sysd: `sudo` (gid 27) in the system
    // containers' userland, which user `ballast` belongs to.
    std::os::unix::fs::chown(path, None, Some(ADMIN_GID))
        .map_err(err("give the admin group (27)", path))?;
    Ok(l)
}

/// The answer to a request that succeeds with a message or fails with an error.
fn reply<E: Display>(w: &mut UnixStream, res: Result<String, E>, socket: &Path) {
    let resp = match res {
        Ok(message) => Response::Ok { message },
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    };
    let _ = write_message(w, &resp, socket);
}

/// Group allowed to use the control socket (see `bind`).
pub const ADMIN_GID: u32 = 27;

/// Accept connections forever (until the listener fails).
pub fn serve(listener: UnixListener, shared: Arc<Shared>, socket: PathBuf) {
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let sh = shared.clone();
                let sock = socket.clone();
                let spawned = std::thread::Builder::new()
                    .name("sysd-conn".into())
                    .spawn(move || handle(c, &sh, &sock));
                if let Err(e) = spawned {
                    crate::say(&format!(
                        "cannot start a thread for a control connection: {e}"
                    ));
                }
            }
            Err(e) => {
                crate::say(&format!("accept on {}: {e}", socket.display()));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle(conn: UnixStream, shared: &Shared, socket: &Path) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(read_half);
    let mut w = conn;
    let req: Request = match read_message(&mut r, socket) {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            let _ = write_message(
                &mut w,
                &Response::Error {
                    message: format!("bad request: {e}"),
                },
                socket,
            );
            return;
        }
    };
    let now = shared.now_ms();
    match req {
        Request::Status => {
            let st = status(shared, now);
            let _ = write_message(&mut w, &Response::Status(st), socket);
        }
        Request::Logs {
            service,
            lines,
            follow,
        } => {
            if !lock(&shared.sup).has(&service) {
                reply(
                    &mut w,
                    Err(format!(
                        "no service named `{service}` (osctl status lists them)"
                    )),
                    socket,
                );
                return;
            }
            let log = shared.logs.get(&service);
            let mut cursor = log.cursor();
            for line in log.tail(lines) {
                if write_message(&mut w, &Response::LogLine(line), socket).is_err() {
                    return;
                }
            }
            if follow {
                let mut pending: Vec<u8> = Vec::new();
                while !shared.stopping.load(Ordering::SeqCst) && !crate::sys::peer_closed(&w) {
                    pending.extend(log.read_new(&mut cursor));
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                        if write_message(&mut w, &Response::LogLine(text), socket).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Request::Restart { service } => {
            reply(&mut w, lock(&shared.sup).restart(&service, now), socket)
        }
        Request::Stop { service } => reply(&mut w, lock(&shared.sup).stop(&service, now), socket),
        Request::Start { service } => reply(&mut w, lock(&shared.sup).start(&service, now), socket),
        Request::Reboot => reply(&mut w, shared.ask_pid1(Signal::Int, "reboot"), socket),
        Request::Poweroff => reply(&mut w, shared.ask_pid1(Signal::Term, "power off"), socket),
        Request::Upgrade {
            allow_downgrade,
            size,
            fd,
        } => upgrade(r, w, shared, socket, allow_downgrade, size, fd),
        Request::Install {
            device,
            force,
            image,
            fd,
            size,
            manifest,
            user_data,
            meta_data,
            network_config,
        } => {
            let config = ballast_install::BootConfig {
                user_data: user_data.map(String::into_bytes),
                meta_data: meta_data.map(String::into_bytes),
                network_config: network_config.map(String::into_bytes),
            };
            let request = InstallRequest {
                device,
                force,
                image,
                fd,
                size,
                manifest,
                config,
            };
            install(r, w, shared, socket, request)
        }
        Request::Rollback => reply(&mut w, rollback(shared), socket),
        Request::ConfigApply {
            text,
            source,
            dry_run,
        } => {
            let resp = crate::firstboot::apply_request(&shared.firstboot, &text, &source, dry_run);
            let _ = write_message(&mut w, &resp, socket);
        }
        Request::Update { action } => {
            let st = shared.agent.control(action);
            let _ = write_message(&mut w, &ballast_control::Response::Agent(st), socket);
        }
    }
}

/// Stream the bundle that follows the request into the inactive slot; progress lines,
/// then `Installed` or an error.
fn upgrade(
    mut r: BufReader<UnixStream>,
    mut w: UnixStream,
    shared: &Shared,
    socket: &Path,
    allow_downgrade: bool,
    size: Option<u64>,
    fd: bool,
) {
    // A slow link may pause; a stalled client must not hold the upgrade forever.
    let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(120)));
    if shared.upgrading.swap(true, Ordering::SeqCst) {
        let _ = write_message(
            &mut w,
            &Response::Error {
                message: "another upgrade is running; wait for it (osctl status)".into(),
            },
            socket,
        );
        return;
    }
    let result = (|| -> Result<_, UpgradeError> {
        if shared.live {
            return Err(UpdateError::Live.into());
        }
        let booted = shared.slot.ok_or(UpdateError::NoBootedSlot)?;
        let boot = shared.boot().map_err(UpdateError::Boot)?;
        let identity = crate::update::Identity::read(&shared.os_release, &shared.cmdline)
            .map_err(UpdateError::Identity)?;
        let mut keys =
            ballast_bundle::keys::read_dir(&shared.keys_dir).map_err(UpdateError::Keys)?;
        // Keys the applied config trusts (ballast.update.trusted_keys).
        keys.extend(
            ballast_bundle::keys::read_dir(&shared.config_keys_dir).map_err(UpdateError::Keys)?,
        );
        let root_device = crate::update::slot_device(&shared.boot_dir, booted.other())?;
        let running = crate::update::Running::of(&shared.boot_dir, booted)?;
        let target = crate::update::Target {
            running,
            boot: &boot,
            root_device,
            booted,
            identity: &identity,
            keys: &keys,
            records: &shared.records,
        };
        let passed = if fd {
            let _ = write_message(&mut w, &Response::SendFd, socket);
            if !r.buffer().is_empty() {
                return Err(UpgradeError::BytesBeforeFd);
            }
            let fd = ballast_control::fdpass::recv_fd(r.get_ref()).map_err(UpgradeError::Fd)?;
            Some(PassedFd(std::fs::File::from(fd)))
        } else {
            None
        };
        let mut last_sent = std::time::Instant::now();
        let mut last_phase = String::new();
        let mut started: Vec<(String, u64, std::time::Instant)> = Vec::new();
        let mut progress = |phase: &str, done: u64, total: u64| {
            if started.last().is_none_or(|(p, _, _)| p != phase) {
                started.push((phase.to_string(), total, std::time::Instant::now()));
            }
            // At most ~10 lines a second, plus every phase change and each end.
            if phase != last_phase
                || done == total
                || last_sent.elapsed() >= Duration::from_millis(100)
            {
                last_phase = phase.to_string();
                last_sent = std::time::Instant::now();
                let _ = write_message(
                    &mut w,
                    &Response::Progress {
                        phase: phase.to_string(),
                        done,
                        total,
                    },
                    socket,
                );
            }
        };
        // Large reads: the bundle arrives in 8 KiB socket reads otherwise.
        let mut big = BufReader::with_capacity(1 << 20, &mut r);
        let source: Box<dyn std::io::Read> = match passed {
            Some(f) => Box::new(f),
            None => Box::new(&mut big),
        };
        let mut body: Box<dyn std::io::Read> = match size {
            Some(n) => Box::new(std::io::Read::take(source, n)),
            None => source,
        };
        let m = crate::update::install(&target, &mut body, allow_downgrade, &mut progress)?;
        Ok((m, phase_times(&started)))
    })();
    shared.upgrading.store(false, Ordering::SeqCst);
    let resp = match result {
        Ok((m, phases)) => {
            let slot = shared
                .slot
                .map(|s| s.other())
                .unwrap_or(ballast_slot::SlotId::B);
            let message = format!(
                "installed {} in slot {slot} ({} tries); it boots on the next reboot and is kept only when it passes the health check",
                m.version,
                crate::update::TRIES
            );
            crate::say(&message);
            Response::Installed {
                version: m.version,
                slot,
                tries: crate::update::TRIES,
                message,
                phases,
            }
        }
        Err(e) => {
            let message = e.to_string();
            crate::say(&format!("upgrade failed: {message}"));
            Response::Error { message }
        }
    };
    let _ = write_message(&mut w, &resp, socket);
}

/// `osctl install`'s request, unpacked.
struct InstallRequest {
    device: String,
    force: bool,
    image: Option<String>,
    fd: bool,
    size: Option<u64>,
    manifest: Option<String>,
    config: ballast_install::BootConfig,
}

/// Write an install image to another disk: progress lines, then
/// `DiskInstalled` or an error. Shares the one-at-a-time flag with upgrades.
fn install(
    r: BufReader<UnixStream>,
    mut w: UnixStream,
    shared: &Shared,
    socket: &Path,
    req: InstallRequest,
) {
    let _ = r.get_ref().set_read_timeout(Some(Duration::from_secs(120)));
    if shared.upgrading.swap(true, Ordering::SeqCst) {
        let _ = write_message(
            &mut w,
            &Response::Error {
                message: "an upgrade or install is running; wait for it (osctl status)".into(),
            },
            socket,
        );
        return;
    }
    let device = req.device.clone();
    let result = (|| -> Result<crate::install::Done, String> {
        let name = req.image.clone().unwrap_or_else(|| "the image".into());
        let source = if req.fd {
            let _ = write_message(&mut w, &Response::SendFd, socket);
            if !r.buffer().is_empty() {
                return Err(UpgradeError::BytesBeforeFd.to_string());
            }
            let fd = ballast_control::fdpass::recv_fd(r.get_ref())
                .map_err(|e| UpgradeError::Fd(e).to_string())?;
            crate::install::Source::Stream {
                name,
                reader: Box::new(PassedFd(std::fs::File::from(fd))),
                size: req.size,
                manifest: req.manifest.clone(),
            }
        } else if let Some(n) = req.size {
            let big = BufReader::with_capacity(1 << 20, r);
            crate::install::Source::Stream {
                name,
                reader: Box::new(std::io::Read::take(big, n)),
                size: Some(n),
                manifest: req.manifest.clone(),
            }
        } else {
            crate::install::Source::Medium
        };
        let job = crate::install::Job {
            device: std::path::PathBuf::from(&req.device),
            force: req.force,
            source,
            config: req.config.clone(),
        };
        let mut last_sent = std::time::Instant::now();
        let mut last_phase = None;
        let mut progress = |phase: ballast_install::Phase, done: u64, total: u64| {
            if Some(phase) != last_phase
                || done == total
                || last_sent.elapsed() >= Duration::from_millis(200)
            {
                last_phase = Some(phase);
                last_sent = std::time::Instant::now();
                let _ = write_message(
                    &mut w,
                    &Response::Progress {
                        phase: phase.as_str().to_string(),
                        done,
                        total,
                    },
                    socket,
                );
            }
        };
        crate::install::run(shared, job, &mut progress).map_err(|e| e.to_string())
    })();
    shared.upgrading.store(false, Ordering::SeqCst);
    let resp = match result {
        Ok(done) => {
            let message = format!(
                "{device}: installed{} and verified ({} bytes, SHA-256 {}){}; boot from it",
                if done.version.is_empty() {
                    String::new()
                } else {
                    format!(" Ballast {}", done.version)
                },
                done.report.bytes,
                done.report.sha256,
                if done.report.config_files.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", first-boot config on its boot partition: {}",
                        done.report.config_files.join(", ")
                    )
                }
            );
            crate::say(&message);
            Response::DiskInstalled {
                device,
                version: done.version,
                bytes: done.report.bytes,
                sha256: done.report.sha256,
                write_micros: (done.report.write_seconds * 1e6) as u64,
                verify_micros: (done.report.verify_seconds * 1e6) as u64,
                config_files: done.report.config_files,
                message,
            }
        }
        Err(message) => {
            crate::say(&format!("install to {device} failed: {message}"));
            Response::Error { message }
        }
    };
    let _ = write_message(&mut w, &resp, socket);
}

/// Why an upgrade over the socket failed: the transport's own failures, or the
/// update's.
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("the client sent bytes before the bundle's descriptor")]
    BytesBeforeFd,
    #[error("receiving the bundle's descriptor: {0}")]
    Fd(#[source] std::io::Error),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// A bundle passed as a file descriptor: a file, or the pipe of `osctl upgrade
/// -`, which must not stall the upgrade forever (the socket has a read timeout
/// for the same reason).
struct PassedFd(std::fs::File);

impl std::io::Read for PassedFd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !crate::sys::wait_readable(&self.0, Duration::from_secs(120))? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the bundle stalled: no data for 120 s",
                ));
            }
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

/// Each phase lasts until the next one starts; the last one until now.
fn phase_times(started: &[(String, u64, std::time::Instant)]) -> Vec<ballast_control::PhaseTime> {
    let end = std::time::Instant::now();
    started
        .iter()
        .enumerate()
        .map(|(i, (phase, bytes, at))| {
            let until = started.get(i + 1).map_or(end, |next| next.2);
            ballast_control::PhaseTime {
                phase: phase.clone(),
                bytes: *bytes,
                micros: u64::try_from(until.duration_since(*at).as_micros()).unwrap_or(u64::MAX),
            }
        })
        .collect()
}

/// Make the other slot the default, when it is good, and record who asked.
fn rollback(shared: &Shared) -> Result<String, UpdateError> {
    if shared.live {
        return Err(UpdateError::Live);
    }
    let booted = shared.slot.ok_or(UpdateError::NoBootedSlot)?;
    let boot = shared.boot()?;
    let st = boot
        .partition()
        .rollback(booted)
        .map_err(|source| UpdateError::Slot {
            action: "roll back".into(),
            source,
        })?;
    let to = st.version.unwrap_or_else(|| "unknown".into());
    let rb = ballast_control::Rollback {
        from: shared.version.clone(),
        to: to.clone(),
        reason: "requested with osctl rollback".into(),
        automatic: false,
        at: crate::update::now_unix(),
    };
    shared.records.set_last_rollback(&rb)?;
    shared.records.set_pending(None)?;
    Ok(format!(
        "slot {} ({to}) is the default: the next boot runs it",
        st.slot
    ))
}

pub fn status(shared: &Shared, now: u64) -> Status {
    let (services, ready) = {
        let sup = lock(&shared.sup);
        (sup.status(now), sup.ready_announced())
    };
    let mut errors = lock(&shared.errors).clone();
    let slots = match shared.boot() {
        // A live system has no boot partition and no slots.
        _ if shared.live => Vec::new(),
        Ok(b) => b.status().unwrap_or_else(|e| {
            errors.push(e.to_string());
            Vec::new()
        }),
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    Status {
        version: shared.version.clone(),
        slot: shared.slot,
        live: shared.live,
        ready,
        slots,
        services,
        errors,
        last_rollback: shared.records.last_rollback(),
        pending_update: shared.records.pending(),
        agent: Some(shared.agent.status()),
    }
}
