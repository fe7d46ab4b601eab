//! `osctl upgrade` and `osctl rollback`: the bundle goes to sysd over the control
//! socket (sysd verifies it and writes the inactive slot; osctl holds no privilege of
//! its own), progress comes back.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ballast_control::{client, Request, Response};

use crate::{failure, kind, Failure};

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
    Url(String),
}

impl Source {
    pub fn parse(s: &str) -> Source {
        if s == "-" {
            Source::Stdin
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Source::Url(s.to_string())
        } else {
            Source::File(PathBuf::from(s))
        }
    }
}

/// An opened bundle: a descriptor sysd reads itself (a file, or stdin), or a
/// download osctl copies onto the socket.
enum Body {
    Fd(std::os::fd::OwnedFd, Option<u64>),
    Stream(Box<dyn Read + Send>, Option<u64>),
}

/// Open the source, with its size when known.
fn open(source: &Source) -> Result<Body, Failure> {
    match source {
        Source::Stdin => {
            use std::os::fd::AsFd;
            let fd = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Failure::Refused(format!("cannot use standard input: {e}")))?;
            Ok(Body::Fd(fd, None))
        }
        Source::File(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Failure::Refused(format!("cannot open {}: {e}", p.display())))?;
            let size = f.metadata().ok().map(|m| m.len());
            Ok(Body::Fd(f.into(), size))
        }
        Source::Url(u) => fetch(u).map(|(r, size)| Body::Stream(r, size)),
    }
}

/// GET a URL (http; https needs a TLS stack the device build does not carry).
pub(crate) fn fetch(url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    if url.starts_with("https://") {
        return Err(Failure::Refused(format!(
            "{url}: osctl's own downloads are http:// only; serve the bundle over http \
             (it is verified by its signature either way), let the update agent fetch an \
             https:// channel (`osctl update now`), or copy the bundle from a workstation \
             with `osctl --host USER@HOST upgrade FILE`"
        )));
    }
    let resp = ureq::get(url)
        .call()
        .map_err(|e| Failure::Refused(format!("cannot download {url}: {e}")))?;
    let size = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok((Box::new(resp.into_body().into_reader()), size))
}

/// The channel a first-boot config chose (`ballast.update.channel`), one URL.
pub use ballast_device::paths::CHANNEL_FILE;
/// Update keys the first-boot config adds (`ballast.update.trusted_keys`).
pub use ballast_device::paths::CONFIG_KEYS_DIR;
/// Where the machine trusts keys from, and who it is.
pub use ballast_device::paths::{KEYS_DIR, OS_RELEASE};

fn read_source(base: &str, name: &str) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    if base.starts_with("http://") || base.starts_with("https://") {
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        let (mut r, _) = fetch(&url)?;
        r.read_to_end(&mut out)
            .map_err(|e| Failure::Refused(format!("reading {url}: {e}")))?;
    } else {
        let p = Path::new(base).join(name);
        out = std::fs::read(&p)
            .map_err(|e| Failure::Refused(format!("cannot read {}: {e}", p.display())))?;
    }
    Ok(out)
}

/// `--channel [BASE]`: verify the channel's signed index with the machine's keys and
/// pick the newest bundle for this arch and board, and the channel's delta to it
/// from the running version when it lists one. `Ok(None)`: already the newest.
pub fn from_channel(base: Option<&str>) -> Result<Option<Offer>, Failure> {
    from_channel_at(base, Path::new(KEYS_DIR), Path::new(OS_RELEASE))
}

/// What a channel offers this machine.
pub struct Offer {
    /// The full bundle of the newest version.
    pub bundle: Source,
    pub version: String,
    /// The delta to it from the running version, when the channel lists one.
    pub delta: Option<Source>,
}

fn from_channel_at(
    base: Option<&str>,
    keys_dir: &Path,
    os_release: &Path,
) -> Result<Option<Offer>, Failure> {
    let base = match base {
        Some(b) => b.to_string(),
        None => std::fs::read_to_string(CHANNEL_FILE)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                Failure::Refused(format!(
                    "no channel given and none configured ({CHANNEL_FILE}: {e}); \
                     pass --channel URL or set ballast.update.channel in the config"
                ))
            })?,
    };
    let index = read_source(&base, ballast_bundle::channel::INDEX)?;
    let sig = read_source(&base, ballast_bundle::channel::INDEX_SIG)?;
    let mut keys =
        ballast_bundle::keys::read_dir(keys_dir).map_err(|e| Failure::Refused(e.to_string()))?;
    if keys_dir == Path::new(KEYS_DIR) {
        // Keys the applied config trusts (ballast.update.trusted_keys).
        keys.extend(
            ballast_bundle::keys::read_dir(Path::new(CONFIG_KEYS_DIR))
                .map_err(|e| Failure::Refused(e.to_string()))?,
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let idx =
        ballast_bundle::channel::verify_index(&index, &String::from_utf8_lossy(&sig), &keys, now)
            .map_err(|e| Failure::Refused(format!("channel {base}: {e}")))?;
    let os = ballast_device::OsRelease::read(os_release)
        .map_err(|e| Failure::Refused(format!("cannot tell which bundles fit: {e}")))?;
    let (arch, board, current) = (os.arch.as_str(), &os.board, os.version.as_str());
    let entry = idx.latest(arch, board).ok_or_else(|| {
        Failure::Refused(format!(
            "channel {base} has no bundle for arch {arch}, board {board}"
        ))
    })?;
    if ballast_bundle::compare_versions(&entry.version, current)
        != Some(std::cmp::Ordering::Greater)
    {
        return Ok(None);
    }
    let at = |file: &str| {
        if base.starts_with("http://") || base.starts_with("https://") {
            Source::Url(format!("{}/{}", base.trim_end_matches('/'), file))
        } else {
            Source::File(Path::new(&base).join(file))
        }
    };
    // A channel without a (valid) delta list is a channel of full bundles.
    let json = read_source(&base, ballast_bundle::channel::DELTAS).ok();
    let sig = read_source(&base, ballast_bundle::channel::DELTAS_SIG).ok();
    let sig = sig.map(|s| String::from_utf8_lossy(&s).into_owned());
    let delta = ballast_bundle::channel::delta_offered(
        json.as_deref().zip(sig.as_deref()),
        &keys,
        now,
        current,
        &entry.version,
        arch,
    )
    .map(|d| at(&d.file));
    Ok(Some(Offer {
        bundle: at(&entry.file),
        version: entry.version.clone(),
        delta,
    }))
}

/// Progress on stderr: one rewritten line on a terminal, a line per phase otherwise.
struct Meter {
    tty: bool,
    phase: String,
}

impl Meter {
    fn show(&mut self, phase: &str, done: u64, total: u64) {
        let mut err = io::stderr();
        if self.tty {
            let pct = (done * 100).checked_div(total).unwrap_or(0);
            let _ = write!(
                err,
                "\r\x1b[K{phase:<8} {:>7.1} / {:.1} MiB {pct:>3}%",
                done as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            let _ = err.flush();
        } else if phase != self.phase {
            let _ = writeln!(err, "{phase} ...");
        }
        self.phase = phase.to_string();
    }
    fn done(&mut self) {
        if self.tty && !self.phase.is_empty() {
            let _ = writeln!(io::stderr());
        }
    }
}

pub(crate) fn is_tty() -> bool {
    // SAFETY: isatty on fd 2 has no memory effects.
    unsafe { libc::isatty(2) == 1 }
}

/// `osctl upgrade SOURCE`: exit 0 only when sysd answered `Installed`.
pub fn upgrade(
    socket: &Path,
    source: &Source,
    allow_downgrade: bool,
    reboot: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let body = open(source)?;
    let (size, fd) = match &body {
        Body::Fd(_, size) => (*size, true),
        Body::Stream(_, size) => (*size, false),
    };
    let req = Request::Upgrade {
        allow_downgrade,
        size,
        fd,
    };
    let mut meter = Meter {
        tty: is_tty(),
        phase: String::new(),
    };
    let mut outcome: Option<Result<Response, Failure>> = None;
    let each = |resp| match resp {
        Response::Progress { phase, done, total } => {
            meter.show(&phase, done, total);
            true
        }
        Response::Installed { .. } => {
            outcome = Some(Ok(resp));
            false
        }
        Response::Error { message } => {
            let hint = truncated_hint(source, size, &message);
            outcome = Some(Err(Failure::Refused(match hint {
                Some(h) => format!("{message}\n{h}"),
                None => message,
            })));
            false
        }
        other => {
            outcome = Some(Err(Failure::Unexpected {
                asked: "upgrade",
                got: kind(&other),
            }));
            false
        }
    };
    match body {
        Body::Fd(fd, _) => {
            use std::os::fd::AsFd;
            client::call_with_fd(socket, &req, fd.as_fd(), each)
        }
        Body::Stream(mut r, _) => client::call_with_body(socket, &req, &mut r, each),
    }
    .map_err(|e| failure(socket, e))?;
    meter.done();
    let Some(outcome) = outcome else {
        return Err(Failure::Refused(
            "sysd closed the connection without an answer (did it restart?); run osctl status"
                .into(),
        ));
    };
    let Response::Installed {
        version,
        slot,
        tries,
        message,
        phases,
    } = outcome?
    else {
        return Err(Failure::Refused("unexpected answer".into()));
    };
    if json {
        let v = serde_json::json!({
            "installed": true,
            "version": version,
            "slot": slot,
            "tries": tries,
            "reboot": reboot,
            "phases": phases.iter().map(|p| serde_json::json!({
                "phase": p.phase,
                "bytes": p.bytes,
                "seconds": p.micros as f64 / 1e6,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}").map_err(Failure::Stdout)?;
    } else {
        writeln!(out, "{message}").map_err(Failure::Stdout)?;
        if !phases.is_empty() {
            writeln!(out, "{}", phase_summary(&phases)).map_err(Failure::Stdout)?;
        }
    }
    if reboot {
        reboot_now(socket, out, json)?;
    }
    Ok(())
}

/// Where a bundle file has room on the machine: the state partition (the admin
/// environment's /var), not the small /tmp tmpfs.
pub const STAGING_DIR: &str = "/var/tmp";

/// When sysd found a bundle *file* shorter than its header and manifest say, the
/// likely cause and the ways out: a copy (`scp` to /tmp) that ran out of space.
/// `None` for any other refusal, and for streams (their sender saw the failure).
pub fn truncated_hint(source: &Source, size: Option<u64>, message: &str) -> Option<String> {
    let Source::File(path) = source else {
        return None;
    };
    if !message.contains(&ballast_bundle::BundleError::Truncated.to_string()) {
        return None;
    }
    let size = size.map_or(String::new(), |n| format!(" ({n} bytes)"));
    Some(format!(
        "{}{size} looks cut short: the copy may have run out of space (/tmp is a small tmpfs). \
         Copy the bundle to {STAGING_DIR} instead, or stream it without a copy: \
         `osctl --host USER@HOST upgrade FILE` from your workstation, or `osctl upgrade - < FILE`.",
        path.display()
    ))
}

/// `written: root 25.7 MB in 0.42 s (61.2 MB/s), kernel ...; 5.0 s in all`.
fn phase_summary(phases: &[ballast_control::PhaseTime]) -> String {
    let total: u64 = phases.iter().map(|p| p.micros).sum();
    let written: Vec<String> = phases
        .iter()
        .filter(|p| p.bytes > 0)
        .map(|p| {
            let (mb, s) = (p.bytes as f64 / 1e6, p.micros as f64 / 1e6);
            format!(
                "{} {mb:.1} MB in {s:.2} s ({:.1} MB/s)",
                p.phase,
                mb / s.max(1e-6)
            )
        })
        .collect();
    format!(
        "written: {}; {:.1} s in all",
        written.join(", "),
        total as f64 / 1e6
    )
}

/// `osctl rollback [--reboot]`.
pub fn rollback(socket: &Path, reboot: bool, out: &mut dyn Write) -> Result<(), Failure> {
    match client::call(socket, &Request::Rollback).map_err(|e| failure(socket, e))? {
        Response::Ok { message } => writeln!(out, "{message}").map_err(Failure::Stdout)?,
        Response::Error { message } => return Err(Failure::Refused(message)),
        other => {
            return Err(Failure::Unexpected {
                asked: "rollback",
                got: kind(&other),
            })
        }
    }
    if reboot {
        reboot_now(socket, out, false)?;
    }
    Ok(())
}

pub(crate) fn reboot_now(socket: &Path, out: &mut dyn Write, quiet: bool) -> Result<(), Failure> {
    match client::call(socket, &Request::Reboot).map_err(|e| failure(socket, e))? {
        Response::Ok { message } => {
            if !quiet {
                writeln!(out, "{message}").map_err(Failure::Stdout)?;
            }
            Ok(())
        }
        Response::Error { message } => Err(Failure::Refused(message)),
        other => Err(Failure::Unexpected {
            asked: "reboot",
            got: kind(&other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_file_is_blamed_on_a_full_copy_with_the_ways_out() {
        let truncated = ballast_bundle::BundleError::Truncated.to_string();
        let file = Source::parse("/tmp/update.bundle");
        let hint = truncated_hint(&file, Some(67_108_864), &truncated).unwrap();
        assert!(
            hint.starts_with("/tmp/update.bundle (67108864 bytes) looks cut short"),
            "{hint}"
        );
        assert!(hint.contains("run out of space"), "{hint}");
        assert!(hint.contains("/var/tmp"), "{hint}");
        assert!(hint.contains("osctl --host"), "{hint}");
        assert!(hint.contains("osctl upgrade -"), "{hint}");
        // Other refusals, and streams, get no such advice.
        let bad_sig = ballast_bundle::BundleError::BadSignature.to_string();
        assert_eq!(truncated_hint(&file, Some(10), &bad_sig), None);
        assert_eq!(truncated_hint(&Source::Stdin, None, &truncated), None);
        assert_eq!(
            truncated_hint(&Source::parse("http://h/b.bundle"), None, &truncated),
            None
        );
    }

    #[test]
    fn sources() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(
            Source::parse("http://h/x.bundle"),
            Source::Url("http://h/x.bundle".into())
        );
        assert_eq!(
            Source::parse("b.bundle"),
            Source::File(PathBuf::from("b.bundle"))
        );
    }

    #[test]
    fn channel_offers_a_delta_from_the_running_version_beside_the_bundle() {
        let d = tempfile::tempdir().unwrap();
        let signer = ballast_bundle::Signer::from_seed(&[3; 32]);
        let chan = d.path().join("chan");
        for version in ["0.1.0", "0.2.0", "0.3.0"] {
            let payload = d.path().join(format!("p{version}"));
            std::fs::write(&payload, format!("root of {version}").repeat(100)).unwrap();
            let b = d.path().join(format!("{version}.bundle"));
            let base = ballast_bundle::Manifest {
                format: ballast_bundle::FORMAT,
                os: ballast_bundle::OS.into(),
                version: version.into(),
                arch: "arm64".into(),
                boards: vec![],
                build_time: 0,
                rollback_index: 0,
                key_id: String::new(),
                cmdline: format!("ballast.verity=R{version}:-:1:1"),
                payloads: vec![],
            };
            let inputs: Vec<ballast_bundle::Input> = ballast_bundle::PayloadName::ALL
                .iter()
                .map(|name| ballast_bundle::Input {
                    name: *name,
                    path: &payload,
                })
                .collect();
            ballast_bundle::write(&b, base, &inputs, &signer).unwrap();
            ballast_bundle::channel::publish(&chan, &b, &signer, None, 30).unwrap();
        }
        // Deltas to 0.3.0 from the one version before it only.
        let list = ballast_bundle::channel::publish_deltas(&chan, &signer, 1, 30).unwrap();
        assert_eq!(list.deltas.len(), 1, "{list:?}");
        let keys = d.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let k = signer.public();
        std::fs::write(keys.join(format!("{}.pub", k.id)), k.to_text("test")).unwrap();
        let os = d.path().join("os-release");
        let base = chan.to_str().unwrap();
        let running = |v: &str| {
            std::fs::write(
                &os,
                format!("VERSION_ID={v}\nBALLAST_ARCH=arm64\nBALLAST_BOARD=qemu-arm64\nBALLAST_ROLLBACK_INDEX=0\n"),
            )
            .unwrap();
            from_channel_at(Some(base), &keys, &os).unwrap().unwrap()
        };
        let offer = running("0.2.0");
        assert_eq!(offer.version, "0.3.0");
        assert_eq!(
            offer.delta,
            Some(Source::File(chan.join("0.2.0-0.3.0-arm64.delta")))
        );
        assert_eq!(offer.bundle, Source::File(chan.join("0.3.0-arm64.bundle")));
        // No delta from 0.1.0: the full bundle.
        assert_eq!(running("0.1.0").delta, None);
        // A damaged delta list is ignored: the full bundle.
        std::fs::write(chan.join(ballast_bundle::channel::DELTAS), b"{}").unwrap();
        assert_eq!(running("0.2.0").delta, None);
    }

    #[test]
    fn channel_gives_the_newest_bundle_for_this_board_when_newer() {
        let d = tempfile::tempdir().unwrap();
        let signer = ballast_bundle::Signer::from_seed(&[3; 32]);
        let payload = d.path().join("p");
        std::fs::write(&payload, b"x").unwrap();
        let chan = d.path().join("chan");
        for version in ["0.2.0", "0.3.0"] {
            let b = d.path().join(format!("{version}.bundle"));
            let base = ballast_bundle::Manifest {
                format: ballast_bundle::FORMAT,
                os: ballast_bundle::OS.into(),
                version: version.into(),
                arch: "arm64".into(),
                boards: vec!["qemu-arm64".into()],
                build_time: 0,
                rollback_index: 0,
                key_id: String::new(),
                cmdline: String::new(),
                payloads: vec![],
            };
            let inputs: Vec<ballast_bundle::Input> = ballast_bundle::PayloadName::ALL
                .iter()
                .map(|name| ballast_bundle::Input {
                    name: *name,
                    path: &payload,
                })
                .collect();
            ballast_bundle::write(&b, base, &inputs, &signer).unwrap();
            ballast_bundle::channel::publish(&chan, &b, &signer, None, 30).unwrap();
        }
        let keys = d.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let k = signer.public();
        std::fs::write(keys.join(format!("{}.pub", k.id)), k.to_text("test")).unwrap();
        let os = d.path().join("os-release");
        let base = chan.to_str().unwrap();
        std::fs::write(
            &os,
            "VERSION_ID=0.1.0\nBALLAST_ARCH=arm64\nBALLAST_BOARD=qemu-arm64\nBALLAST_ROLLBACK_INDEX=0\n",
        )
        .unwrap();
        let offer = from_channel_at(Some(base), &keys, &os).unwrap().unwrap();
        assert_eq!(offer.version, "0.3.0");
        assert!(matches!(offer.bundle, Source::File(p) if p.starts_with(&chan)));
        assert!(offer.delta.is_none());
        std::fs::write(
            &os,
            "VERSION_ID=0.3.0\nBALLAST_ARCH=arm64\nBALLAST_BOARD=qemu-arm64\nBALLAST_ROLLBACK_INDEX=0\n",
        )
        .unwrap();
        assert!(from_channel_at(Some(base), &keys, &os).unwrap().is_none());
        // Another board: nothing for it.
        std::fs::write(
            &os,
            "VERSION_ID=0.1.0\nBALLAST_ARCH=arm64\nBALLAST_BOARD=rpi4\nBALLAST_ROLLBACK_INDEX=0\n",
        )
        .unwrap();
        assert!(from_channel_at(Some(base), &keys, &os).is_err());
        // An untrusted channel.
        std::fs::remove_file(keys.join(format!("{}.pub", k.id))).unwrap();
        let e = from_channel_at(Some(base), &keys, &os)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("channel"), "{e}");
    }

    #[test]
    fn https_is_refused_with_the_way_out() {
        let e = fetch("https://example.invalid/b.bundle")
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("osctl --host"), "{e}");
    }
}
