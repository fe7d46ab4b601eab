//! `osctl install DEVICE`: write this OS to another disk. The writing is
//! sysd's (it holds the devices; osctl holds no privilege of its own), with
//! the one installer, `ballast-install`: osctl picks the image (the live
//! medium's, a file passed as a descriptor, or a download streamed over the
//! control socket) and its signed manifest, reads the config files, and shows
//! the progress sysd reports.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ballast_control::{client, Request, Response};

use crate::update_cmd::{fetch, is_tty, reboot_now};
use crate::{failure, kind, Failure};

/// What `osctl install` was given.
pub struct Args<'a> {
    pub device: &'a str,
    pub image: Option<&'a str>,
    pub user_data: Option<&'a Path>,
    pub meta_data: Option<&'a Path>,
    pub network_config: Option<&'a Path>,
    pub force: bool,
    pub reboot: bool,
    pub json: bool,
}

fn read_text(p: Option<&Path>, what: &str) -> Result<Option<String>, Failure> {
    p.map(|p| {
        std::fs::read_to_string(p)
            .map_err(|e| Failure::Refused(format!("--{what} {}: {e}", p.display())))
    })
    .transpose()
}

enum Body {
    Medium,
    Fd(std::fs::File, u64),
    Stream(Box<dyn Read + Send>, u64),
}

pub fn install(socket: &Path, a: &Args, out: &mut dyn Write) -> Result<(), Failure> {
    let user_data = read_text(a.user_data, "user-data")?;
    if let Some(text) = &user_data {
        // Refuse a config the first boot would refuse, before the disk is written.
        let name = a
            .user_data
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if let Err(e) = ballast_config::parse(text, &name) {
            return Err(Failure::Refused(format!(
                "--user-data: {e}; nothing was written (check it with `osctl config validate`)"
            )));
        }
    }
    let (body, manifest) = match a.image {
        None => (Body::Medium, None),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            let (mut m, _) = fetch(&format!("{u}.manifest"))?;
            let mut text = String::new();
            m.by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| Failure::Refused(format!("{u}.manifest: {e}")))?;
            let (r, size) = fetch(u)?;
            let size = size.ok_or_else(|| {
                Failure::Refused(format!(
                    "{u}: the server sent no Content-Length; serve the image as a static file"
                ))
            })?;
            (Body::Stream(r, size), Some(text))
        }
        Some(f) => {
            let file = std::fs::File::open(f)
                .map_err(|e| Failure::Refused(format!("cannot open {f}: {e}")))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mpath = PathBuf::from(format!("{f}.manifest"));
            let text = std::fs::read_to_string(&mpath).map_err(|e| {
                Failure::Refused(format!(
                    "{}: {e}; the image's signed manifest must be beside it (copy both files `ballast build` wrote)",
                    mpath.display()
                ))
            })?;
            (Body::Fd(file, size), Some(text))
        }
    };
    let (fd, size) = match &body {
        Body::Medium => (false, None),
        Body::Fd(_, n) => (true, Some(*n)),
        Body::Stream(_, n) => (false, Some(*n)),
    };
    let req = Request::Install {
        device: a.device.to_string(),
        force: a.force,
        image: a.image.map(str::to_string),
        fd,
        size,
        manifest,
        user_data,
        meta_data: read_text(a.meta_data, "meta-data")?,
        network_config: read_text(a.network_config, "network-config")?,
    };
    let tty = is_tty();
    let mut phase = String::new();
    let mut outcome: Option<Result<Response, Failure>> = None;
    let each = |resp| match resp {
        Response::Progress {
            phase: p,
            done,
            total,
        } => {
            let mut err = io::stderr();
            if tty {
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                let filled = (pct as usize * 30) / 100;
                let _ = write!(
                    err,
                    "\r\x1b[K{p:<7} [{}{}] {pct:>3}% {:.1} / {:.1} MiB",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    done as f64 / 1048576.0,
                    total as f64 / 1048576.0
                );
                let _ = err.flush();
            } else if p != phase {
                let _ = writeln!(err, "{p} ...");
            }
            phase = p;
            true
        }
        Response::DiskInstalled { .. } => {
            outcome = Some(Ok(resp));
            false
        }
        Response::Error { message } => {
            outcome = Some(Err(Failure::Refused(message)));
            false
        }
        other => {
            outcome = Some(Err(Failure::Unexpected {
                asked: "install",
                got: kind(&other),
            }));
            false
        }
    };
    match body {
        Body::Fd(f, _) => {
            use std::os::fd::AsFd;
            client::call_with_fd(socket, &req, f.as_fd(), each)
        }
        Body::Stream(mut r, _) => client::call_with_body(socket, &req, &mut r, each),
        Body::Medium => client::call_with_body(socket, &req, &mut io::empty(), each),
    }
    .map_err(|e| failure(socket, e))?;
    if tty {
        let _ = writeln!(io::stderr());
    }
    let Some(outcome) = outcome else {
        return Err(Failure::Refused(
            "sysd closed the connection without an answer (did it restart?); run osctl status"
                .into(),
        ));
    };
    let Response::DiskInstalled {
        device,
        version,
        bytes,
        sha256,
        write_micros,
        verify_micros,
        config_files,
        message,
    } = outcome?
    else {
        return Err(Failure::Refused("unexpected answer".into()));
    };
    if a.json {
        let v = serde_json::json!({
            "installed": true,
            "device": device,
            "version": version,
            "bytes": bytes,
            "sha256": sha256,
            "write_seconds": write_micros as f64 / 1e6,
            "verify_seconds": verify_micros as f64 / 1e6,
            "config_files": config_files,
            "reboot": a.reboot,
        });
        writeln!(out, "{v}").map_err(Failure::Stdout)?;
    } else {
        writeln!(out, "{message}").map_err(Failure::Stdout)?;
    }
    if a.reboot {
        reboot_now(socket, out, a.json)?;
    }
    Ok(())
}
