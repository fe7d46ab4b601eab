//! `ballast run` for a QEMU profile whose network device is attached late
//! (`net_attach_after`, raspi3b): QEMU runs as a child with a monitor socket;
//! its console is copied to stdout as it comes, and when the console shows the
//! profile's text the network device is attached through the monitor.

use anyhow::{Context, Result};
use ballast_inputs::QemuProfile;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::qemu;

/// Run `cmd` (a QEMU command line without the network device) to its end,
/// attaching the device once `after` appears on the console.
pub fn run(mut cmd: Command, profile: &QemuProfile, after: &str) -> Result<ExitCode> {
    // One socket per `ballast run` process; QEMU makes it.
    let sock = std::env::temp_dir().join(format!("ballast-run-{}.monitor", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    cmd.args(qemu::monitor_args(&sock));
    cmd.stdout(Stdio::piped());
    // SAFETY: prctl in the child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // QEMU must not outlive this process (a test killing `ballast run`).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {}: is QEMU installed? (scripts/setup)",
            profile.binary
        )
    })?;
    let mut console = child.stdout.take().context("QEMU's piped stdout")?;
    copy_until_attached(&mut console, profile, after, &sock);
    let status = child.wait().context("waiting for QEMU")?;
    let _ = std::fs::remove_file(&sock);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Copy the console to stdout until it ends; attach the network device the
/// first time `after` has been seen.
fn copy_until_attached(console: &mut impl Read, profile: &QemuProfile, after: &str, sock: &Path) {
    let mut out = std::io::stdout().lock();
    let mut attached = false;
    // The end of what came so far, long enough to hold `after` split across reads.
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // A closed stdout (the reader went away) must not stop QEMU's output
        // being drained, or QEMU blocks.
        let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
        if attached {
            continue;
        }
        tail.extend_from_slice(&buf[..n]);
        if contains(&tail, after.as_bytes()) {
            attached = true;
            if let Err(e) = qemu::attach_net(profile, sock) {
                eprintln!("ballast run: attaching the network device: {e:#}");
            }
        } else {
            let keep = after.len().min(tail.len());
            tail.drain(..tail.len() - keep);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_split_across_reads() {
        assert!(contains(b"xx Starting kernel ...", b"Starting kernel"));
        assert!(!contains(b"Starting kern", b"Starting kernel"));
    }
}
