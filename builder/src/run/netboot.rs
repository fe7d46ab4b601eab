//! `ballast run --netboot DIR`: boot a netboot set (`ballast netboot`) the way
//! a rack does. QEMU's user-mode network is the DHCP and TFTP server
//! (`tftp=DIR,bootfile=boot.ipxe`); the NIC's iPXE option ROM (Debian's
//! `ipxe-qemu`, loaded by QEMU for the PCI NIC) runs `boot.ipxe`, which
//! fetches the kernel and initramfs, and init the root, over HTTP from a server
//! this command runs on 127.0.0.1 at the base URL's port (guests reach it at
//! 10.0.2.2). QEMU runs as a child that dies with this process; the server
//! stops when QEMU exits. On x86_64 the machine boots through SeaBIOS, whose
//! option-ROM iPXE runs the script (OVMF would run its own PXE client, which
//! boots EFI programs, not scripts).
//!
//! On arm64 (bookworm has no arm64 iPXE) the machine boots through AAVMF,
//! whose own PXE client fetches the set's UKI `ballast.efi` over TFTP
//! (`bootfile=ballast.efi`) and starts it; stage 1 leases an address by DHCP
//! and fetches the root over HTTP as on x86_64. AAVMF's variable store is a
//! copy of the profile's template beside the set (`DIR.efivars.fd`), made
//! afresh each run.
//!
//! `--blank-disk SIZE` adds an empty virtio disk (`DIR.target.img`, beside the
//! set so the HTTP server never serves it) for an installer set: SeaBIOS tries
//! the disk first, finds nothing to boot, and boots the network; after the
//! install the machine reboots into the disk.

use anyhow::{bail, Context, Result};
use ballast_inputs::{Arch, QemuProfile};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::netboot::NetbootSet;
use crate::qemu::Accel;

/// The port of a base URL (`http://HOST[:PORT]/...`), 80 by default.
pub fn port_of(base_url: &str) -> Result<u16> {
    let rest = base_url
        .strip_prefix("http://")
        .with_context(|| format!("base URL {base_url:?} is not http://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((_, p)) => p
            .parse()
            .with_context(|| format!("base URL {base_url:?}: bad port {p:?}")),
        None => Ok(80),
    }
}

/// The file a request line asks for, if it is a GET of a plain file name
/// under the set's directory (with or without the base URL's path).
pub fn requested(line: &str, dir: &Path) -> Option<PathBuf> {
    let mut words = line.split(' ');
    if words.next()? != "GET" {
        return None;
    }
    let path = words.next()?;
    let name = path.rsplit('/').next()?;
    if name.is_empty() || name.starts_with('.') || name.contains('\\') {
        return None;
    }
    let file = dir.join(name);
    file.is_file().then_some(file)
}

fn answer(mut stream: TcpStream, dir: &Path, served: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the header.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let request = request.trim_end();
    match requested(request, dir) {
        Some(file) => {
            // Streamed: the install image is tens of MB.
            let mut f = std::fs::File::open(&file)?;
            let len = f.metadata()?.len();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )?;
            let sent = std::io::copy(&mut f, &mut stream)?;
            served.fetch_add(sent, Ordering::Relaxed);
            eprintln!("ballast run: HTTP {request}: 200, {sent} bytes");
        }
        None => {
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            eprintln!("ballast run: HTTP {request}: 404");
        }
    }
    Ok(())
}

/// Serves `dir` on 127.0.0.1:`port` on background threads.
fn serve(dir: PathBuf, port: u16, served: Arc<AtomicU64>) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| {
        format!(
            "cannot serve the netboot set on 127.0.0.1:{port} (the base URL's port): is it in use?"
        )
    })?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            let served = served.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(stream, &dir, &served) {
                    eprintln!("ballast run: HTTP: {e}");
                }
            });
        }
    });
    Ok(())
}

pub struct NetBoot<'a> {
    pub profile: &'a QemuProfile,
    pub arch: Arch,
    pub dir: &'a Path,
    pub ssh_port: Option<u16>,
    pub no_reboot: bool,
    /// An empty target disk for an unattended install (`/dev/vda`).
    pub blank_disk: Option<&'a Path>,
    /// RAM in MiB instead of the profile's.
    pub memory_mib: Option<u32>,
}

/// Where `--blank-disk` puts its disk: `DIR.target.img`, beside the set.
pub fn blank_disk_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".target.img");
    PathBuf::from(name)
}

/// Where an arm64 netboot keeps AAVMF's variables: `DIR.efivars.fd`.
pub fn efivars_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".efivars.fd");
    PathBuf::from(name)
}

/// AAVMF's code and a fresh copy of its variable store for `dir`'s boot.
fn uefi_firmware(p: &QemuProfile, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let fw = p.firmware.as_ref();
    let (Some(code), Some(template)) = (
        fw.and_then(|f| f.code.as_ref()),
        fw.and_then(|f| f.vars.as_ref()),
    ) else {
        bail!(
            "{}: --netboot on arm64 needs [firmware] `code` and `vars` (AAVMF's PXE boots ballast.efi)",
            p.path.display()
        );
    };
    for f in [code, template] {
        if !f.is_file() {
            bail!(
                "{}: firmware {} is missing: run scripts/setup",
                p.path.display(),
                f.display()
            );
        }
    }
    let vars = efivars_path(dir);
    std::fs::copy(template, &vars)
        .with_context(|| format!("copying {} to {}", template.display(), vars.display()))?;
    Ok((code.clone(), vars))
}

/// The QEMU command line of a network boot.
pub fn command(b: &NetBoot<'_>, accel: Accel) -> Result<Command> {
    let bootfile = match b.arch {
        Arch::X86_64 => crate::netboot::tftp_file(b.arch.name()),
        Arch::Arm64 => {
            if !b.dir.join(crate::netboot::UKI).is_file() {
                bail!(
                    "--netboot {}: no {} in the set (AAVMF's PXE boots the UKI): make the set with this `ballast netboot`",
                    b.dir.display(),
                    crate::netboot::UKI
                );
            }
            crate::netboot::UKI
        }
        Arch::Armv7 => bail!("--netboot: armv7 boards do not boot over the network under QEMU (U-Boot's PXE is not wired up); use x86_64 or arm64"),
    };
    let p = b.profile;
    let mut cmd = Command::new(&p.binary);
    cmd.args(["-machine", &p.machine])
        .args(["-accel", accel.arg()])
        .args(["-cpu", if accel == Accel::Kvm { "host" } else { &p.cpu }])
        .args(["-m", &b.memory_mib.unwrap_or(p.memory_mib).to_string()])
        .args(["-smp", &p.smp.to_string()])
        .args(["-nographic", "-nodefaults"]);
    for _ in 0..p.console_serial {
        cmd.args(["-serial", "null"]);
    }
    cmd.args(["-serial", "mon:stdio"]);
    if b.arch == Arch::X86_64 {
        // SeaBIOS (no pflash): the network, or with a target disk that disk
        // first (blank: SeaBIOS moves on to the network; installed: it boots).
        cmd.args([
            "-boot",
            if b.blank_disk.is_some() {
                "order=cn"
            } else {
                "order=n"
            },
        ]);
    } else {
        // AAVMF's boot manager tries a disk with no ESP, then PXE over IPv4.
        let (code, vars) = uefi_firmware(p, b.dir)?;
        for (opts, file) in [
            ("if=pflash,format=raw,unit=0,readonly=on", code),
            ("if=pflash,format=raw,unit=1", vars),
        ] {
            let mut arg = std::ffi::OsString::from(format!("{opts},file="));
            arg.push(file.to_string_lossy().replace(',', ",,"));
            cmd.arg("-drive").arg(arg);
        }
    }
    if let Some(disk) = b.blank_disk {
        cmd.args(crate::qemu::drive_args(p, disk, 0));
    }
    let dir = b.dir.to_string_lossy().replace(',', ",,");
    let mut netdev = format!("user,id=net0,tftp={dir},bootfile={bootfile}");
    if let Some(port) = b.ssh_port {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
    }
    cmd.args(["-netdev", &netdev])
        .args(["-device", &format!("{},netdev=net0", p.net_device)]);
    if b.no_reboot {
        cmd.arg("-no-reboot");
    }
    cmd.args(&p.extra_args);
    Ok(cmd)
}

/// Loads the set, starts the HTTP server, runs QEMU to its end.
pub fn run(dir: &Path, mut cmd: Command) -> Result<ExitCode> {
    let set = NetbootSet::load(dir)?;
    let port = port_of(&set.base_url)?;
    let served = Arc::new(AtomicU64::new(0));
    serve(dir.to_path_buf(), port, served.clone())?;
    eprintln!(
        "ballast run: serving {} at http://127.0.0.1:{port}/ (the guest's {})",
        dir.display(),
        set.base_url
    );
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
    let status = cmd
        .status()
        .context("starting QEMU: is it installed? (scripts/setup)")?;
    let tftp_file = crate::netboot::tftp_file(&set.arch);
    let tftp = std::fs::metadata(dir.join(tftp_file))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "ballast run: QEMU exited ({status}); served over HTTP: {} bytes; {tftp_file} over TFTP: {tftp} bytes",
        served.load(Ordering::Relaxed)
    );
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_requests() {
        assert_eq!(port_of("http://10.0.2.2:8123/x").unwrap(), 8123);
        assert_eq!(port_of("http://10.0.2.2").unwrap(), 80);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.img"), b"x").unwrap();
        assert_eq!(
            requested("GET /ballast/root.img HTTP/1.1", dir.path()),
            Some(dir.path().join("root.img"))
        );
        assert_eq!(requested("GET /ballast/vmlinuz HTTP/1.1", dir.path()), None);
        assert_eq!(requested("GET /../etc/passwd HTTP/1.1", dir.path()), None);
        assert_eq!(requested("POST /root.img HTTP/1.1", dir.path()), None);
    }
}
