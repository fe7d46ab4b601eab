//! The control socket: one thread accepting, one thread per connection. Requests
//! change the supervisor's memory only (under its lock); the main loop performs the
//! resulting signals and starts on its next tick.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ballast_control::{read_message, write_message, Request, Response, Status};

use crate::{lock, Shared};

/// Bind the socket (mode 0660), replacing a stale one from a previous sysd.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        }
    }
    let l = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot chmod 0660 {}: {e}", path.display()))?;
    // The admin group may talk to sysd: `sudo` (gid 27) in the system
    // containers' userland, which user `ballast` belongs to.
    std::os::unix::fs::chown(path, None, Some(ADMIN_GID))
        .map_err(|e| format!("cannot give {} to group {ADMIN_GID}: {e}", path.display()))?;
    Ok(l)
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
    let reply = |w: &mut UnixStream, res: Result<String, String>| {
        let resp = match res {
            Ok(message) => Response::Ok { message },
            Err(message) => Response::Error { message },
        };
        let _ = write_message(w, &resp, socket);
    };
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
                while !shared.stopping.load(Ordering::SeqCst) && !peer_closed(&w) {
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
        Request::Restart { service } => reply(&mut w, lock(&shared.sup).restart(&service, now)),
        Request::Stop { service } => reply(&mut w, lock(&shared.sup).stop(&service, now)),
        Request::Start { service } => reply(&mut w, lock(&shared.sup).start(&service, now)),
        Request::Reboot => reply(&mut w, shared.ask_pid1(libc::SIGINT, "reboot")),
        Request::Poweroff => reply(&mut w, shared.ask_pid1(libc::SIGTERM, "power off")),
        Request::Upgrade {
            allow_downgrade,
            size,
            fd,
        } => upgrade(r, w, shared, socket, allow_downgrade, size, fd),
        Request::Rollback => reply(&mut w, rollback(shared)),
        Request::ConfigApply {
            text,
            source,
            dry_run,
        } => {
            let resp = crate::firstboot::apply_request(&text, &source, dry_run);
            let _ = write_message(&mut w, &resp, socket);
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
    let result = (|| {
        let booted = shared
            .slot
            .ok_or("the booted slot is unknown (no ballast.slot= on the kernel command line)")?;
        let boot = shared.boot()?;
        let mut keys =
            ballast_bundle::keys::read_dir(&shared.keys_dir).map_err(|e| e.to_string())?;
        // Keys the applied config trusts (ballast.update.trusted_keys).
        keys.extend(
            ballast_bundle::keys::read_dir(&shared.config_keys_dir).map_err(|e| e.to_string())?,
        );
        let root_device = crate::update::slot_device(&shared.boot_dir, booted.other())?;
        let target = crate::update::Target {
            boot: &boot,
            boot_dir: &shared.boot_dir,
            root_device,
            booted,
            identity: &shared.identity,
            keys: &keys,
            records: &shared.records,
        };
        let passed = if fd {
            let _ = write_message(&mut w, &Response::SendFd, socket);
            if !r.buffer().is_empty() {
                return Err("the client sent bytes before the bundle's descriptor".to_string());
            }
            let fd = ballast_control::fdpass::recv_fd(r.get_ref())
                .map_err(|e| format!("receiving the bundle's descriptor: {e}"))?;
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
        Err(message) => {
            crate::say(&format!("upgrade failed: {message}"));
            Response::Error { message }
        }
    };
    let _ = write_message(&mut w, &resp, socket);
}

/// A bundle passed as a file descriptor: a file, or the pipe of `osctl upgrade
/// -`, which must not stall the upgrade forever (the socket has a read timeout
/// for the same reason).
struct PassedFd(std::fs::File);

impl std::io::Read for PassedFd {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            let mut p = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the length 1.
            let n = unsafe { libc::poll(&mut p, 1, 120_000) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
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
fn rollback(shared: &Shared) -> Result<String, String> {
    let booted = shared
        .slot
        .ok_or("the booted slot is unknown (no ballast.slot= on the kernel command line)")?;
    let boot = shared.boot()?;
    let other = booted.other();
    let slots = boot.status()?;
    let st = slots
        .iter()
        .find(|s| s.slot == other)
        .ok_or_else(|| format!("slot {other} has no boot entry: nothing to roll back to"))?;
    if st.health != ballast_slot::Health::Good {
        return Err(format!(
            "slot {other} is {} ({}): only a good slot can be rolled back to",
            st.health.as_str(),
            st.version.as_deref().unwrap_or("no version")
        ));
    }
    boot.set_default(other)?;
    let to = st.version.clone().unwrap_or_else(|| "unknown".into());
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
        "slot {other} ({to}) is the default: the next boot runs it"
    ))
}

/// The client hung up (a follower pressed Ctrl-C): a zero-byte peek without blocking.
fn peer_closed(s: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv into a 1-byte stack buffer we own, on a socket fd that stays open
    // for the duration of the call; MSG_PEEK|MSG_DONTWAIT neither consumes nor blocks.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

pub fn status(shared: &Shared, now: u64) -> Status {
    let (services, ready) = {
        let sup = lock(&shared.sup);
        (sup.status(now), sup.ready_announced())
    };
    let mut errors = lock(&shared.errors).clone();
    let slots = match shared.boot() {
        Ok(b) => b.status().unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        }),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    Status {
        version: shared.version.clone(),
        slot: shared.slot,
        ready,
        slots,
        services,
        errors,
        last_rollback: shared.records.last_rollback(),
        pending_update: shared.records.pending(),
    }
}
