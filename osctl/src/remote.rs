//! `osctl --host [USER@]HOST[:PORT] ...`: run the same osctl on the machine over SSH,
//! with the workstation's own ssh client (its config, agent and known hosts). The
//! bundle of `upgrade FILE` is streamed over the SSH channel into `osctl upgrade -`
//! on the device, so nothing is copied to the machine's disk first. osctl's output
//! and exit code come back unchanged (ssh's own failures exit 255), with one
//! exception: a reboot or power-off stops the machine's SSH container, at times
//! before sshd has sent osctl's exit code back, and ssh then exits 255 with
//! "closed by remote host". Once the remote osctl has said PID 1 took the
//! request, that is success.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// What the device's osctl prints once PID 1 has taken a reboot or power-off
/// (`reboot: asked PID 1`).
const PID1_TOOK_IT: &[u8] = ballast_control::ASKED_PID1.as_bytes();

/// `USER@HOST:PORT` → (`USER@HOST`, Some(PORT)).
pub fn split_port(host: &str) -> (String, Option<u16>) {
    if let Some((h, p)) = host.rsplit_once(':') {
        if let Ok(port) = p.parse::<u16>() {
            // `[v6]:port`, or a name/v4 address without other colons.
            if let Some(v6) = h.strip_suffix(']').and_then(|h| h.split_once('[')) {
                return (format!("{}{}", v6.0, v6.1), Some(port));
            }
            if !h.is_empty() && !h.contains(':') {
                return (h.to_string(), Some(port));
            }
        }
    }
    (host.to_string(), None)
}

/// Quote one word for the remote shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The ssh command line (without running it).
pub fn ssh_command(host: &str, ssh_opts: &[String], remote_args: &[String]) -> Command {
    let (dest, port) = split_port(host);
    let ssh = std::env::var("OSCTL_SSH").unwrap_or_else(|_| "ssh".into());
    let mut cmd = Command::new(ssh);
    if let Some(p) = port {
        cmd.arg("-p").arg(p.to_string());
    }
    for o in ssh_opts {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--").arg(dest);
    let line: Vec<String> = std::iter::once("osctl".to_string())
        .chain(remote_args.iter().map(|a| quote(a)))
        .collect();
    cmd.arg(line.join(" "));
    cmd
}

/// Run osctl remotely; `stdin_file` feeds the remote osctl's stdin. Returns the exit
/// code to exit with.
pub fn run(
    host: &str,
    ssh_opts: &[String],
    remote_args: &[String],
    stdin_file: Option<&Path>,
) -> Result<i32, String> {
    let mut cmd = ssh_command(host, ssh_opts, remote_args);
    match stdin_file {
        Some(p) => {
            let f =
                std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
            cmd.stdin(Stdio::from(f));
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh (set OSCTL_SSH to another client): {e}"))?;
    let went_down = match child.stdout.take() {
        Some(out) => pass_through(out, &mut std::io::stdout()),
        None => false,
    };
    let status = child.wait().map_err(|e| format!("waiting for ssh: {e}"))?;
    let code = status.code().unwrap_or(255);
    if code == 255 && went_down {
        eprintln!(
            "osctl: the connection closed as the machine went down, after it took the request"
        );
        return Ok(0);
    }
    Ok(code)
}

/// Copy the remote output to `to` as it comes; true when it said PID 1 took a
/// reboot or power-off.
fn pass_through(mut from: impl Read, to: &mut impl Write) -> bool {
    let mut buf = [0u8; 8192];
    // The marker may straddle two reads: keep the end of the previous one.
    let mut window: Vec<u8> = Vec::new();
    let mut seen = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        // The user's terminal or pipe going away must not stop the copy.
        let _ = to.write_all(chunk).and_then(|()| to.flush());
        if !seen {
            window.extend_from_slice(chunk);
            seen = window
                .windows(PID1_TOOK_IT.len())
                .any(|w| w == PID1_TOOK_IT);
            let keep = PID1_TOOK_IT.len() - 1;
            if window.len() > keep {
                window.drain(..window.len() - keep);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_passes_through_and_a_reboot_taken_is_seen_across_reads() {
        /// Hands out its bytes a few at a time, as a pipe may.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(5);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = b"reboot: asked PID 1\n";
        let mut out = Vec::new();
        assert!(pass_through(Trickle(text), &mut out));
        assert_eq!(out, text);
        let mut out = Vec::new();
        assert!(!pass_through(Trickle(b"{\"slots\": []}\n"), &mut out));
        assert_eq!(out, b"{\"slots\": []}\n");
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            split_port("ballast@h:2222"),
            ("ballast@h".into(), Some(2222))
        );
        assert_eq!(split_port("ballast@h"), ("ballast@h".into(), None));
        assert_eq!(split_port("[::1]:22"), ("::1".into(), Some(22)));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("upgrade"), "upgrade");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn command_line() {
        let c = ssh_command(
            "ballast@10.0.0.2:2222",
            &["StrictHostKeyChecking=no".into()],
            &["upgrade".into(), "-".into(), "--reboot".into()],
        );
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            vec![
                "-p",
                "2222",
                "-o",
                "StrictHostKeyChecking=no",
                "--",
                "ballast@10.0.0.2",
                "osctl upgrade - --reboot"
            ]
        );
    }
}
