//! What the benchmarks that boot a VM share: a throwaway SSH key, a release
//! pair built with it, a free host port, and commands run on the device over
//! QEMU's forwarded port (user `ballast`, no host key checks: the VM is new
//! every run), timed by the device's own clock so the host's SSH round trips
//! are not counted.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::build::BuildResult;
use crate::project::Project;

/// `ssh-keygen` of a new ed25519 key without a passphrase at `key` (and `key.pub`).
pub fn keygen(key: &Path) -> Result<()> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(key)
        .status()
        .context("running ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (for QEMU's forwards and the benches' servers).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Two releases of `board`, 1.0.0 and 1.0.1, built into `dir/1.0.0` and
/// `dir/1.0.1` with a new SSH key for user `ballast` (`dir/id_ed25519`) and
/// `extra` build arguments: what an upgrade bench installs one over the
/// other. Returns both builds and the private key.
pub fn release_pair(
    project: &Project,
    board: &str,
    dir: &Path,
    extra: &[String],
) -> Result<(BuildResult, BuildResult, PathBuf)> {
    let key = dir.join("id_ed25519");
    keygen(&key)?;
    let exe = std::env::current_exe().context("finding the ballast executable")?;
    let build = |version: &str| -> Result<BuildResult> {
        let out = dir.join(version);
        let st = Command::new(&exe)
            .arg("--root")
            .arg(&project.root)
            .args(["build", "--board", board, "--version", version, "--out"])
            .arg(&out)
            .arg("--ssh-key")
            .arg(key.with_extension("pub"))
            .args(extra)
            .stdout(Stdio::null())
            .status()
            .context("running ballast build")?;
        if !st.success() {
            bail!("ballast build --version {version} failed");
        }
        BuildResult::load(&out)
    };
    Ok((build("1.0.0")?, build("1.0.1")?, key))
}

/// The device: SSH on 127.0.0.1:`port` with `key`.
pub struct Remote {
    pub key: PathBuf,
    pub port: u16,
}

impl Remote {
    /// The ssh command that runs `command` on the device, not started (a
    /// bench that must cut the power while it runs spawns it itself).
    pub fn command(&self, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()]);
        for o in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "ConnectTimeout=20",
            "LogLevel=ERROR",
        ] {
            cmd.args(["-o", o]);
        }
        cmd.args(["ballast@127.0.0.1", command]);
        cmd
    }

    /// Runs `command` on the device, `stdin` fed from a host file; its stdout.
    pub fn run(&self, command: &str, stdin: Option<&Path>) -> Result<String> {
        let mut cmd = self.command(command);
        match stdin {
            Some(p) => {
                let f =
                    std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
                cmd.stdin(Stdio::from(f));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let out = cmd.output().context("running ssh")?;
        if !out.status.success() {
            bail!(
                "ssh {command:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `command` between two reads of the device's clock (after a
    /// `sync`): its output and the seconds it took.
    pub fn timed_output(&self, command: &str) -> Result<(String, f64)> {
        let out = self.run(
            &format!(
                "sync; s=$(date +%s%N); {command} || exit 1; e=$(date +%s%N); echo \"ns=$((e-s))\""
            ),
            None,
        )?;
        let (text, ns) = out
            .rsplit_once("ns=")
            .with_context(|| format!("timing {command:?}: device printed {out:?}"))?;
        let ns: u64 = ns
            .trim()
            .parse()
            .with_context(|| format!("timing {command:?}: device printed {out:?}"))?;
        Ok((text.to_owned(), ns as f64 / 1e9))
    }

    /// Seconds `command` took on the device, its output dropped.
    pub fn timed(&self, command: &str) -> Result<f64> {
        self.timed_output(&format!("{command} >/dev/null 2>&1"))
            .map(|(_, s)| s)
    }
}
