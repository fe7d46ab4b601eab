//! `ballast run --iso`: boot a live ISO under QEMU as a CD (default) or a USB
//! stick (`--usb`), through UEFI (the QEMU profile's firmware) or, with
//! `--bios`, SeaBIOS, with an empty target disk (`--blank-disk SIZE`) for the
//! installer. The ISO is attached read-only: a live system writes nothing to
//! its medium.

use anyhow::{bail, Context, Result};
use ballast_inputs::{Arch, QemuProfile};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu::Accel;

/// How the ISO reaches the machine.
pub struct LiveBoot<'a> {
    pub profile: &'a QemuProfile,
    pub arch: Arch,
    pub iso: &'a Path,
    pub usb: bool,
    pub bios: bool,
    /// The empty target disk (raw, sparse), made fresh for each run.
    pub blank_disk: &'a Path,
    pub ssh_port: Option<u16>,
    pub no_reboot: bool,
    /// Where the UEFI variable store of this run lives (fresh each run).
    pub efivars: &'a Path,
}

/// Parses `8G`, `512M`, `1024K` or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("--blank-disk {text:?}: unknown unit {c:?} (use K, M, G or T)"),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--blank-disk {text:?}: not a size (e.g. 8G)"))?;
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .with_context(|| format!("--blank-disk {text:?}: not a usable size"))
}

/// A fresh sparse file of `bytes` at `path`.
pub fn make_blank_disk(path: &Path, bytes: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(bytes)
        .with_context(|| format!("sizing {} to {bytes} bytes", path.display()))
}

fn drive(opts: &str, file: &Path) -> OsString {
    let mut arg = OsString::from(format!("{opts},file="));
    arg.push(file.to_string_lossy().replace(',', ",,"));
    arg
}

/// The QEMU command line of a live boot.
pub fn command(b: &LiveBoot<'_>, accel: Accel) -> Result<Command> {
    let p = b.profile;
    let mut cmd = Command::new(&p.binary);
    cmd.args(["-machine", &p.machine])
        .args(["-accel", accel.arg()])
        .args(["-cpu", if accel == Accel::Kvm { "host" } else { &p.cpu }])
        .args(["-m", &p.memory_mib.to_string()])
        .args(["-smp", &p.smp.to_string()])
        .args(["-nographic", "-nodefaults", "-serial", "mon:stdio"]);
    if b.bios {
        if b.arch != Arch::X86_64 {
            bail!("--bios: only x86_64 boards have a legacy BIOS (SeaBIOS); arm64 boots UEFI only");
        }
        // QEMU's PC machines start SeaBIOS when no pflash is given.
    } else {
        let firmware = p.firmware.as_ref().with_context(|| {
            format!("{}: the QEMU profile names no [firmware]", p.path.display())
        })?;
        let (Some(code), Some(template)) = (&firmware.code, &firmware.vars) else {
            bail!(
                "{}: [firmware] needs `code` and `vars` to boot an ISO through UEFI (or use --bios)",
                p.path.display()
            );
        };
        std::fs::copy(template, b.efivars).with_context(|| {
            format!("copying {} to {}", template.display(), b.efivars.display())
        })?;
        cmd.arg("-drive")
            .arg(drive("if=pflash,format=raw,unit=0,readonly=on", code))
            .arg("-drive")
            .arg(drive("if=pflash,format=raw,unit=1", b.efivars));
    }
    if b.usb {
        cmd.arg("-drive")
            .arg(drive("if=none,id=live0,format=raw,readonly=on", b.iso))
            .args(["-device", "qemu-xhci,id=xhci"])
            .args([
                "-device",
                "usb-storage,bus=xhci.0,drive=live0,removable=on,bootindex=0",
            ]);
    } else {
        cmd.arg("-drive")
            .arg(drive("if=none,id=live0,media=cdrom,readonly=on", b.iso));
        match b.arch {
            // q35's on-board AHCI controller.
            Arch::X86_64 => cmd.args(["-device", "ide-cd,drive=live0,bus=ide.0,bootindex=0"]),
            _ => cmd
                .args(["-device", "virtio-scsi-pci,id=scsi0"])
                .args(["-device", "scsi-cd,drive=live0,bus=scsi0.0,bootindex=0"]),
        };
    }
    cmd.arg("-drive")
        .arg(drive("if=none,id=target0,format=raw", b.blank_disk))
        .args([
            "-device",
            &format!("{},drive=target0,bootindex=1", p.disk_device),
        ]);
    let mut netdev = "user,id=net0".to_owned();
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

/// Where a run keeps its blank disk and UEFI variables: beside the ISO
/// (`ISO.target.img`, `ISO.efivars.fd`).
pub fn run_files(iso: &Path) -> (PathBuf, PathBuf) {
    (
        iso.with_extension("target.img"),
        iso.with_extension("efivars.fd"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("8X").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("G").is_err());
    }
}
