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

/// Open the source: a reader and its size when known.
fn open(source: &Source) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    match source {
        Source::Stdin => Ok((Box::new(io::stdin()), None)),
        Source::File(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Failure::Refused(format!("cannot open {}: {e}", p.display())))?;
            let size = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(f), size))
        }
        Source::Url(u) => fetch(u),
    }
}

/// GET a URL (http; https needs a TLS stack the device build does not carry).
fn fetch(url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    if url.starts_with("https://") {
        return Err(Failure::Refused(format!(
            "{url}: https is not built into this osctl (no TLS stack on the device); \
             serve the bundle over http on a trusted network, or copy it from a workstation \
             with `osctl --host USER@HOST upgrade FILE` (the bundle is verified by its signature either way)"
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

fn is_tty() -> bool {
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
    let (mut body, size) = open(source)?;
    let req = Request::Upgrade {
        allow_downgrade,
        size,
    };
    let mut meter = Meter {
        tty: is_tty(),
        phase: String::new(),
    };
    let mut outcome: Option<Result<Response, Failure>> = None;
    client::call_with_body(socket, &req, &mut body, |resp| match resp {
        Response::Progress { phase, done, total } => {
            meter.show(&phase, done, total);
            true
        }
        Response::Installed { .. } => {
            outcome = Some(Ok(resp));
            false
        }
        Response::Error { message } => {
            outcome = Some(Err(Failure::Refused(message)));
            false
        }
        other => {
            outcome = Some(Err(Failure::Unexpected {
                asked: "upgrade",
                got: kind(&other),
            }));
            false
        }
    })
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
        });
        writeln!(out, "{v}").map_err(Failure::Stdout)?;
    } else {
        writeln!(out, "{message}").map_err(Failure::Stdout)?;
    }
    if reboot {
        reboot_now(socket, out, json)?;
    }
    Ok(())
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

fn reboot_now(socket: &Path, out: &mut dyn Write, quiet: bool) -> Result<(), Failure> {
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
    fn https_is_refused_with_the_way_out() {
        let e = fetch("https://example.invalid/b.bundle")
            .err()
            .map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("osctl --host"), "{e}");
    }
}
