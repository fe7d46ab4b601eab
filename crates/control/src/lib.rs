//! The device control protocol between `osctl` (client) and `sysd` (server).
//!
//! Transport: a unix stream socket, [`SOCKET`]. Framing: one JSON object per line
//! (`\n`-terminated, UTF-8, no embedded newlines — serde_json never writes any).
//! The client writes exactly one [`Request`] line; the server answers with one
//! [`Response`] line, except for [`Request::Logs`], which gets any number of
//! [`Response::LogLine`] lines (endless with `follow: true`) and then the server
//! closes the connection.
//!
//! This crate owns the wire format and nothing else: it never touches services,
//! slots or files. Both sides use the same types, so a field added here is seen by
//! both ends at once; unknown fields are ignored on read so an older `osctl` can talk
//! to a newer `sysd`.

pub mod fdpass;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Where sysd listens on the device.
pub const SOCKET: &str = ballast_device::paths::SOCKET;

/// Longest line either side accepts (a status with many services is a few KiB; a log
/// line is capped by the writer). Anything longer is a protocol error, not an
/// allocation of unbounded size.
pub const MAX_LINE: usize = 1 << 20;

/// The words between what and whom in sysd's answer to a reboot or power-off
/// (`reboot: asked PID 1`), which osctl prints: `osctl --host` looks for them
/// to tell a machine that went down from a connection that failed.
pub const ASKED_PID1: &str = ": asked PID ";

/// What a client asks. On the wire: `{"op":"status"}`,
/// `{"op":"logs","service":"ssh","lines":50,"follow":false}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version, slots, services and errors.
    Status,
    /// The last `lines` lines of a service's log; with `follow`, keep streaming new ones.
    Logs {
        service: String,
        lines: usize,
        #[serde(default)]
        follow: bool,
    },
    /// Stop (if running) and start again, with a fresh backoff.
    Restart { service: String },
    /// Stop and keep stopped until `Start` (or the next boot).
    Stop { service: String },
    /// Start a stopped or failed service.
    Start { service: String },
    /// Orderly reboot (sysd asks PID 1).
    Reboot,
    /// Orderly power off (sysd asks PID 1).
    Poweroff,
    /// Install an update bundle into the inactive slot. The bundle's bytes follow this
    /// line on the same connection (`size` of them when the client knows it; otherwise
    /// until the client shuts down its writing half). The server answers with
    /// [`Response::Progress`] lines, then [`Response::Installed`] or an error.
    Upgrade {
        #[serde(default)]
        allow_downgrade: bool,
        #[serde(default)]
        size: Option<u64>,
        /// The bundle comes as a file descriptor ([`fdpass`]) once the server
        /// answers [`Response::SendFd`], not as bytes on the socket.
        #[serde(default)]
        fd: bool,
    },
    /// Write an install image to another disk (`osctl install`) with the one
    /// installer (`ballast-install`). The image is the live medium's when
    /// `fd` is false and no `size` is given; otherwise it comes as a file
    /// descriptor ([`fdpass`], after [`Response::SendFd`]) or as `size` bytes
    /// after this line, and `manifest` (its signed manifest's text) is
    /// required. Answered by [`Response::Progress`] lines (`phase` is `clear`,
    /// `write`, `verify`, `config` or `table`), then [`Response::DiskInstalled`]
    /// or an error.
    Install {
        device: String,
        #[serde(default)]
        force: bool,
        /// The image's file name or URL, for messages.
        #[serde(default)]
        image: Option<String>,
        #[serde(default)]
        fd: bool,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        manifest: Option<String>,
        /// NoCloud files for the installed disk's boot partition.
        #[serde(default)]
        user_data: Option<String>,
        #[serde(default)]
        meta_data: Option<String>,
        #[serde(default)]
        network_config: Option<String>,
    },
    /// Make the other slot (when it is good) the default for the next boot.
    Rollback,
    /// Check a first-boot config document (`#cloud-config` or TOML) and show
    /// what applying it changes; unless `dry_run`, apply and record it. `source`
    /// names the document in error messages (the client's file name). Answered
    /// by [`Response::ConfigApplied`] or an error naming the line and key.
    ConfigApply {
        text: String,
        source: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Ask or steer the update agent; answered by [`Response::Agent`] (the agent's
    /// state after the action) or an error.
    Update { action: UpdateAction },
}

/// What `osctl update ...` asks the update agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateAction {
    /// Only report.
    Status,
    /// Check the channel now (the wave and the window still apply).
    Check,
    /// Check now, skip the wave's wait, and install (the window and the lock still
    /// apply to the reboot).
    Now,
    /// Stop checking and installing until `resume` (kept across reboots).
    Pause,
    Resume,
}

/// The update agent as `osctl update status` and `osctl status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `idle`, `checking`, `waiting for wave`, `downloading`, `staged`,
    /// `waiting for window`, `waiting for lock`, `rebooting`, `checking health`,
    /// `paused`, `off`, `error`.
    pub state: String,
    /// `ballast.update.auto`: installs and reboots by itself.
    pub auto: bool,
    pub paused: bool,
    pub channel: Option<String>,
    /// The stable id the wave and the lock use.
    pub machine_id: String,
    /// The newest version the channel offers this machine (after the rolled-back
    /// filter), when newer than the running one.
    pub available: Option<String>,
    /// Installed in the inactive slot, waiting for its reboot.
    pub staged: Option<String>,
    /// Unix seconds of the last finished check, and of the next.
    pub last_check: Option<u64>,
    pub next_check: Option<u64>,
    /// Unix seconds from which this machine's wave lets it install `available`.
    pub wave_at: Option<u64>,
    /// `None` without a window.
    pub window_open: Option<bool>,
    /// `etcd` or `fleetlock`, `None` without a lock.
    pub lock: Option<String>,
    pub lock_held: bool,
    /// Versions that rolled back here: never installed again by the agent.
    pub rolled_back: Vec<String>,
    pub last_error: Option<String>,
}

/// A record of the last rollback, kept on the state partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The version that was left.
    pub from: String,
    /// The version booted instead.
    pub to: String,
    /// Which check failed (automatic) or who asked (manual).
    pub reason: String,
    /// The bootloader fell back by itself (health check failed or tries spent).
    pub automatic: bool,
    /// Seconds since the epoch by the device's clock when it was recorded.
    pub at: u64,
}

/// An installed update waiting for its first healthy boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub from_version: String,
    pub from_slot: ballast_slot::SlotId,
    pub to_version: String,
    pub to_slot: ballast_slot::SlotId,
    pub at: u64,
}

/// One phase of an upgrade as the device timed it: `bytes` is the payload's
/// uncompressed size (0 for `verify` and `activate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub bytes: u64,
    pub micros: u64,
}

/// What the server answers. On the wire (externally tagged):
/// `{"status":{...}}`, `{"log_line":"text"}`, `{"ok":{"message":"..."}}`,
/// `{"error":{"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// One message per line on a socket: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    Status(Status),
    /// One log line, without its trailing newline.
    LogLine(String),
    Ok {
        message: String,
    },
    /// Answer to an [`Request::Upgrade`] with `fd`: send the descriptor now.
    SendFd,
    /// Upgrade progress: `phase` is `verify`, `root`, `kernel`, `initrd` or `activate`;
    /// `done` bytes (of the uncompressed payload) out of `total`.
    Progress {
        phase: String,
        done: u64,
        total: u64,
    },
    /// The upgrade is written and verified: the next boot tries `version` in `slot`.
    Installed {
        version: String,
        slot: ballast_slot::SlotId,
        tries: u32,
        message: String,
        /// How long each phase took on the device, in order.
        #[serde(default)]
        phases: Vec<PhaseTime>,
    },
    /// Answer to [`Request::Install`]: the image is on `device`, read back and
    /// verified.
    DiskInstalled {
        device: String,
        /// The image's version (from its manifest; "" when it had none).
        version: String,
        bytes: u64,
        sha256: String,
        write_micros: u64,
        verify_micros: u64,
        /// Config files put on the boot partition.
        config_files: Vec<String>,
        message: String,
    },
    Error {
        message: String,
    },
    /// Answer to [`Request::ConfigApply`]: the diff lines (`+ user alice`,
    /// `~ hostname: a -> b`), the document's warnings, what failed while
    /// applying, and whether it was applied (false for a dry run).
    /// Answer to [`Request::Update`].
    Agent(AgentStatus),
    ConfigApplied {
        changes: Vec<String>,
        warnings: Vec<String>,
        #[serde(default)]
        errors: Vec<String>,
        applied: bool,
    },
}

/// The whole machine as sysd sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// VERSION_ID of /usr/lib/os-release (`"unknown"` when absent; see `errors`).
    pub version: String,
    /// Booted slot, from `ballast.slot=` on the kernel command line.
    pub slot: Option<ballast_slot::SlotId>,
    /// Running live from its medium (`ballast.live=`): no slot, state in RAM.
    #[serde(default)]
    pub live: bool,
    /// Every required service is healthy and the ready line was printed.
    pub ready: bool,
    /// Both slots as the bootloader sees them (empty when the boot partition is unreadable;
    /// see `errors`).
    pub slots: Vec<ballast_slot::SlotStatus>,
    pub services: Vec<Service>,
    /// Broken definitions, dependency cycles, slot errors: each names the file and the fix.
    pub errors: Vec<String>,
    /// The last rollback, automatic or asked for.
    #[serde(default)]
    pub last_rollback: Option<Rollback>,
    /// An update installed and not yet committed (or rolled back).
    #[serde(default)]
    pub pending_update: Option<PendingUpdate>,
    /// The update agent (`None` from a sysd without one).
    #[serde(default)]
    pub agent: Option<AgentStatus>,
}

/// One system container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub state: ServiceState,
    /// PID of the container's process while it runs.
    pub pid: Option<u32>,
    /// How many times sysd started it again after it exited.
    pub restarts: u32,
    /// `ballast-ready` waits for it.
    pub required: bool,
    /// Milliseconds spent in `state` so far.
    pub since_ms: u64,
    /// How the last run ended (`exited with status 1`, `killed by signal 9`,
    /// `start failed: ...`).
    pub last_exit: Option<String>,
    /// The last lines (up to three, joined with ` | `) of its last failed run that
    /// wrote any, from its kept log: the service's own error message.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Life cycle of a service, as `osctl status` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Waiting for its dependencies, or being started.
    Starting,
    /// Its process runs; its health check has not passed yet.
    Running,
    /// Its process runs and its health check passed.
    Healthy,
    /// It exited and will be started again after a delay.
    Backoff,
    /// Not running, on purpose (stopped by request, exited cleanly under
    /// `on-failure`, or being stopped).
    Stopped,
    /// It exited with an error and its policy says not to restart it.
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Healthy => "healthy",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong talking over the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot connect to {}: {source}; is sysd running, and are you root (the socket is mode 0660)?",
        path.display()
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed message on {}: {source} (line: {line:.200})", path.display())]
    Json {
        path: PathBuf,
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("line longer than {MAX_LINE} bytes on {}: the other side is not speaking this protocol", path.display())]
    TooLong { path: PathBuf },
    #[error("{} closed the connection before answering (sysd restarting or shutting down?)", path.display())]
    Closed { path: PathBuf },
    #[error("cannot encode message: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Write `msg` as one JSON line and flush.
pub fn write_message<W: Write, T: Serialize>(
    w: &mut W,
    msg: &T,
    path: &Path,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(msg).map_err(ControlError::Encode)?;
    line.push(b'\n');
    let io = |source| ControlError::Io {
        action: "write to",
        path: path.to_path_buf(),
        source,
    };
    w.write_all(&line).map_err(io)?;
    w.flush().map_err(io)
}

/// Read one JSON line. `Ok(None)` at a clean end of stream.
pub fn read_message<R: BufRead, T: DeserializeOwned>(
    r: &mut R,
    path: &Path,
) -> Result<Option<T>, ControlError> {
    let mut buf = Vec::new();
    // Read through a limit so a peer that never sends `\n` cannot make us allocate
    // without bound.
    let mut limited = std::io::Read::take(r, MAX_LINE as u64 + 1);
    let n = limited
        .read_until(b'\n', &mut buf)
        .map_err(|source| ControlError::Io {
            action: "read from",
            path: path.to_path_buf(),
            source,
        })?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && n > MAX_LINE {
        return Err(ControlError::TooLong {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8_lossy(&buf);
    let trimmed = text.trim_end_matches(['\n', '\r']);
    serde_json::from_str(trimmed)
        .map(Some)
        .map_err(|source| ControlError::Json {
            path: path.to_path_buf(),
            line: trimmed.to_string(),
            source,
        })
}

/// The client side, as `osctl` uses it.
pub mod client {
    use super::*;

    fn connect(socket: &Path, req: &Request) -> Result<BufReader<UnixStream>, ControlError> {
        let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
        write_message(&mut stream, req, socket)?;
        Ok(BufReader::new(stream))
    }

    /// Send `req` and return the one response.
    pub fn call(socket: impl AsRef<Path>, req: &Request) -> Result<Response, ControlError> {
        let socket = socket.as_ref();
        let mut r = connect(socket, req)?;
        read_message(&mut r, socket)?.ok_or_else(|| ControlError::Closed {
            path: socket.to_path_buf(),
        })
    }

    /// Send `req`, then copy `body` after it on the same connection (and shut the
    /// writing half down), while handing each response to `each` until the server
    /// closes the connection. Used by [`Request::Upgrade`].
    pub fn call_with_body(
        socket: impl AsRef<Path>,
        req: &Request,
        body: &mut (dyn std::io::Read + Send),
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<(), ControlError> {
        let socket = socket.as_ref();
        let r = connect(socket, req)?;
        let mut w = r.get_ref().try_clone().map_err(|source| ControlError::Io {
            action: "clone",
            path: socket.to_path_buf(),
            source,
        })?;
        let mut r = r;
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || {
                // The server may stop reading early (a refused bundle): a broken pipe
                // here is not the error to report; the server's answer is.
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match body.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
            let mut result = Ok(());
            loop {
                match read_message::<_, Response>(&mut r, socket) {
                    Ok(Some(resp)) => {
                        if !each(resp) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            // Unblock the sender if the server went away first.
            let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
            let _ = sender.join();
            result
        })
    }

    /// Send `req` (an upgrade with `fd: true`), pass `fd` when the server asks
    /// for it ([`Response::SendFd`]), then hand each response to `each` until
    /// the server closes the connection or `each` returns `false`.
    pub fn call_with_fd(
        socket: impl AsRef<Path>,
        req: &Request,
        fd: std::os::fd::BorrowedFd<'_>,
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<(), ControlError> {
        let socket = socket.as_ref();
        let mut r = connect(socket, req)?;
        while let Some(resp) = read_message::<_, Response>(&mut r, socket)? {
            if resp == Response::SendFd {
                crate::fdpass::send_fd(r.get_ref(), fd).map_err(|source| ControlError::Io {
                    action: "pass the bundle's descriptor over",
                    path: socket.to_path_buf(),
                    source,
                })?;
                continue;
            }
            if !each(resp) {
                break;
            }
        }
        Ok(())
    }

    /// Send `req` and hand each response to `each` until the server closes the
    /// connection or `each` returns `false`.
    pub fn stream(
        socket: impl AsRef<Path>,
        req: &Request,
        mut each: impl FnMut(Response) -> bool,
    ) -> Result<(), ControlError> {
        let socket = socket.as_ref();
        let mut r = connect(socket, req)?;
        while let Some(resp) = read_message::<_, Response>(&mut r, socket)? {
            if !each(resp) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn sample_status() -> Status {
        Status {
            version: "1.2.3".into(),
            slot: Some(ballast_slot::SlotId::A),
            live: false,
            ready: true,
            slots: vec![ballast_slot::SlotStatus {
                slot: ballast_slot::SlotId::A,
                version: Some("1.2.3".into()),
                health: ballast_slot::Health::Good,
                is_default: true,
            }],
            services: vec![Service {
                name: "ssh".into(),
                state: ServiceState::Healthy,
                pid: Some(42),
                restarts: 1,
                required: true,
                since_ms: 1500,
                last_exit: Some("exited with status 1".into()),
                last_error: Some("ssh: cannot bind port 22".into()),
            }],
            errors: vec![],
            last_rollback: None,
            pending_update: None,
            agent: None,
        }
    }

    #[test]
    fn update_requests_on_the_wire() {
        let j = serde_json::to_string(&Request::Update {
            action: UpdateAction::Now,
        })
        .unwrap();
        assert_eq!(j, r#"{"op":"update","action":"now"}"#);
        // A status from a sysd without an agent still reads.
        let mut v = serde_json::to_value(sample_status()).unwrap();
        v.as_object_mut().unwrap().remove("agent");
        let st: Status = serde_json::from_value(v).unwrap();
        assert!(st.agent.is_none());
    }

    #[test]
    fn wire_format_is_the_documented_one() {
        let j = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(j, r#"{"op":"status"}"#);
        let j = serde_json::to_string(&Request::Logs {
            service: "ssh".into(),
            lines: 10,
            follow: true,
        })
        .unwrap();
        assert_eq!(
            j,
            r#"{"op":"logs","service":"ssh","lines":10,"follow":true}"#
        );
        let j = serde_json::to_string(&Response::LogLine("hi".into())).unwrap();
        assert_eq!(j, r#"{"log_line":"hi"}"#);
        let j = serde_json::to_string(&Response::Ok {
            message: "done".into(),
        })
        .unwrap();
        assert_eq!(j, r#"{"ok":{"message":"done"}}"#);
        let j = serde_json::to_value(Response::Status(sample_status())).unwrap();
        assert_eq!(j["status"]["services"][0]["state"], "healthy");
        assert_eq!(j["status"]["slot"], "a");
        assert_eq!(j["status"]["slots"][0]["health"]["state"], "good");
    }

    #[test]
    fn follow_defaults_to_false_and_unknown_fields_are_ignored() {
        let r: Request =
            serde_json::from_str(r#"{"op":"logs","service":"x","lines":3,"extra":1}"#).unwrap();
        assert_eq!(
            r,
            Request::Logs {
                service: "x".into(),
                lines: 3,
                follow: false
            }
        );
    }

    #[test]
    fn framing_reads_lines_and_reports_garbage_with_the_line() {
        let mut buf = Vec::new();
        let p = Path::new("test");
        write_message(&mut buf, &Request::Reboot, p).unwrap();
        write_message(&mut buf, &Request::Poweroff, p).unwrap();
        buf.extend_from_slice(b"not json\n");
        let mut r = std::io::Cursor::new(buf);
        assert_eq!(
            read_message::<_, Request>(&mut r, p).unwrap(),
            Some(Request::Reboot)
        );
        assert_eq!(
            read_message::<_, Request>(&mut r, p).unwrap(),
            Some(Request::Poweroff)
        );
        let err = read_message::<_, Request>(&mut r, p).unwrap_err();
        assert!(err.to_string().contains("not json"), "{err}");
        assert_eq!(read_message::<_, Request>(&mut r, p).unwrap(), None);
    }

    #[test]
    fn overlong_line_is_refused() {
        let buf = vec![b'x'; MAX_LINE + 10];
        let mut r = std::io::Cursor::new(buf);
        let err = read_message::<_, Request>(&mut r, Path::new("t")).unwrap_err();
        assert!(matches!(err, ControlError::TooLong { .. }), "{err}");
    }

    #[test]
    fn round_trip_over_a_real_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sysd.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let status = sample_status();
        let served = status.clone();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (conn, _) = listener.accept().unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let req: Request = read_message(&mut r, Path::new("srv")).unwrap().unwrap();
                match req {
                    Request::Status => {
                        write_message(&mut w, &Response::Status(served.clone()), Path::new("srv"))
                            .unwrap()
                    }
                    Request::Logs { lines, .. } => {
                        for i in 0..lines {
                            write_message(
                                &mut w,
                                &Response::LogLine(format!("line {i}")),
                                Path::new("srv"),
                            )
                            .unwrap();
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        assert_eq!(
            client::call(&sock, &Request::Status).unwrap(),
            Response::Status(status)
        );
        let mut got = Vec::new();
        client::stream(
            &sock,
            &Request::Logs {
                service: "ssh".into(),
                lines: 3,
                follow: false,
            },
            |r| {
                got.push(r);
                true
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Response::LogLine("line 0".into()),
                Response::LogLine("line 1".into()),
                Response::LogLine("line 2".into()),
            ]
        );
        server.join().unwrap();
    }

    #[test]
    fn connect_error_names_the_socket_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("missing.sock");
        let err = client::call(&sock, &Request::Status).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("missing.sock") && msg.contains("sysd running"),
            "{msg}"
        );
    }
}
