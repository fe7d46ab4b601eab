//! `ballast iso customize`: a copy of a Ballast live ISO with a first-boot
//! config and kernel arguments embedded, made in seconds without a rebuild.
//!
//! How (ADR 0007): the ISO is built with room reserved for exactly this,
//! as `coreos-installer iso customize` does, so customising is a byte copy with
//! a few spans rewritten in place, and every boot structure (El Torito
//! catalogue, MBR, GPT, the EFI image) stays as xorriso wrote it:
//!
//! * the config area ([`paths::MEDIUM_CONFIG_AREA`], a sector-aligned file
//!   starting with [`live::MAGIC`]) receives user-data and meta-data
//!   (`ballast-device`'s format; sysd reads it on a live boot);
//! * each boot configuration (the systemd-boot entry inside the EFI image,
//!   GRUB's `boot/grub/grub.cfg` in the tree, x86_64 BIOS and arm64 UEFI) has its kernel command line on the line after
//!   [`iso::KARGS_MARKER`], padded with spaces: the new arguments go into the
//!   padding.
//!
//! An ISO without those (not a Ballast ISO, or one too old) is refused and
//! nothing is written; the output appears only when complete (temp file, fsync,
//! rename).

use anyhow::{bail, Context, Result};
use ballast_device::{live, paths};
use clap::{Args, Subcommand};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::iso;

#[derive(Subcommand, Debug)]
pub enum IsoCmd {
    /// Copy a Ballast live ISO with a first-boot config and kernel arguments
    /// embedded (the original is not changed).
    #[command(
        after_long_help = "Example:\n  ballast iso customize out/qemu-x86_64/ballast.iso --user-data user-data --kernel-arg ballast.health_timeout=600 -o custom.iso"
    )]
    Customize(CustomizeArgs),
}

#[derive(Args, Debug)]
pub struct CustomizeArgs {
    /// The Ballast ISO (`ballast build`'s `iso` artifact).
    #[arg(value_name = "ISO")]
    pub iso: PathBuf,
    /// The first-boot config (`#cloud-config` or TOML) the live system applies.
    #[arg(long = "user-data", value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// NoCloud meta-data; default: an instance id made from the user-data.
    #[arg(long = "meta-data", value_name = "FILE", requires = "user_data")]
    pub meta_data: Option<PathBuf>,
    /// A kernel argument to add to every boot of the ISO (repeatable), e.g.
    /// `--kernel-arg ballast.config=http://10.0.0.1/seed/`.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// The customised ISO to write.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
}

pub fn run(cmd: &IsoCmd) -> Result<()> {
    match cmd {
        IsoCmd::Customize(args) => customize(args),
    }
}

/// Where the reserved spans of a Ballast ISO are.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset of the config area.
    pub config_area: u64,
    /// Byte offset of each padded kernel command line (after `options ` or `APPEND `).
    pub kargs: Vec<u64>,
    /// The kernel command line as found (the first one, trimmed).
    pub current_kargs: String,
}

const SECTOR: usize = 2048;

/// Finds the reserved spans in the bytes of an ISO; an error says why the ISO
/// is not a customisable Ballast ISO.
pub fn layout(bytes: &[u8]) -> Result<Layout> {
    let pvd = bytes.get(16 * SECTOR..17 * SECTOR).unwrap_or_default();
    let volume = if pvd.get(..6) == Some(b"\x01CD001") {
        String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string()
    } else {
        bail!("not an ISO 9660 image (no primary volume descriptor at sector 16)");
    };
    if !volume.starts_with("BALLAST_") {
        bail!(
            "not a Ballast ISO: its volume id is {volume:?} (a Ballast ISO's starts with BALLAST_)"
        );
    }
    let config_area = bytes
        .chunks(SECTOR)
        .position(|s| s.starts_with(live::MAGIC))
        .map(|i| (i * SECTOR) as u64)
        .with_context(|| {
            format!(
                "not a customisable Ballast ISO: it has no config area ({})",
                paths::MEDIUM_CONFIG_AREA
            )
        })?;
    let mut kargs = Vec::new();
    let mut current = None;
    for at in memchr::memmem::find_iter(bytes, iso::KARGS_MARKER.as_bytes()) {
        let line = at + iso::KARGS_MARKER.len();
        let rest = &bytes[line..];
        let prefix_len = [
            &b"options "[..],
            &b"  APPEND "[..],
            iso::GRUB_LINUX.as_bytes(),
            iso::GRUB_LINUX_GZ.as_bytes(),
        ]
        .iter()
        .find(|p| rest.starts_with(p))
        .map(|p| p.len())
        .with_context(|| {
            format!("a kernel-argument marker at byte {at} is not followed by a command line")
        })?;
        let start = line + prefix_len;
        let span = bytes
            .get(start..start + iso::KARGS_LINE + 1)
            .with_context(|| format!("the kernel command line at byte {start} is cut short"))?;
        if span[iso::KARGS_LINE] != b'\n' {
            bail!("the kernel command line at byte {start} is not {} bytes long (the boot configuration is not contiguous in the ISO)", iso::KARGS_LINE);
        }
        let text = String::from_utf8_lossy(&span[..iso::KARGS_LINE])
            .trim_end()
            .to_string();
        current.get_or_insert(text);
        kargs.push(start as u64);
    }
    let Some(current_kargs) = current else {
        bail!("not a customisable Ballast ISO: no reserved kernel command line was found");
    };
    Ok(Layout {
        config_area,
        kargs,
        current_kargs,
    })
}

/// A kernel argument a boot configuration can carry as one word.
fn check_arg(arg: &str) -> Result<()> {
    if arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        bail!("--kernel-arg {arg:?}: a kernel argument is one word without spaces or quotes");
    }
    Ok(())
}

fn customize(args: &CustomizeArgs) -> Result<()> {
    for a in &args.kernel_args {
        check_arg(a)?;
    }
    if args.user_data.is_none() && args.kernel_args.is_empty() {
        bail!("nothing to customise: give --user-data FILE and/or --kernel-arg ARG");
    }
    let bytes =
        std::fs::read(&args.iso).with_context(|| format!("reading {}", args.iso.display()))?;
    let found = layout(&bytes).with_context(|| format!("{}", args.iso.display()))?;
    let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
    if !args.kernel_args.is_empty() {
        let line = format!("{} {}", found.current_kargs, args.kernel_args.join(" "));
        let padded = iso::padded(&line)
            .with_context(|| format!("{}: --kernel-arg: too many arguments", args.iso.display()))?;
        for at in &found.kargs {
            patches.push((*at, padded.clone().into_bytes()));
        }
    }
    if args.user_data.is_some() {
        let files = crate::cmd_seed::seed_files(
            args.user_data.as_deref(),
            args.meta_data.as_deref(),
            None,
        )?;
        let get = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.clone())
        };
        let area = live::ConfigArea {
            user_data: get("user-data"),
            meta_data: get("meta-data"),
        }
        .encode(live::AREA_BYTES)
        .context("--user-data")?;
        patches.push((found.config_area, area));
    }
    drop(bytes);
    write_patched(&args.iso, &args.output, &patches)?;
    println!(
        "{}: {} customised ({}{})",
        args.output.display(),
        args.iso.display(),
        if args.user_data.is_some() {
            "first-boot config embedded"
        } else {
            ""
        },
        if args.kernel_args.is_empty() {
            String::new()
        } else {
            format!(
                "{}kernel arguments added: {}",
                if args.user_data.is_some() { "; " } else { "" },
                args.kernel_args.join(" ")
            )
        }
    );
    Ok(())
}

/// Copies `from` to a temp file beside `to`, writes the patches, fsyncs and
/// renames it into place; on any error the temp file is removed.
fn write_patched(from: &Path, to: &Path, patches: &[(u64, Vec<u8>)]) -> Result<()> {
    let name = to
        .file_name()
        .with_context(|| format!("-o {}: not a file name", to.display()))?;
    let tmp = to.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        std::fs::copy(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .with_context(|| format!("opening {}", tmp.display()))?;
        for (at, data) in patches {
            f.seek(SeekFrom::Start(*at))?;
            f.write_all(data)
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, to)
            .with_context(|| format!("moving {} to {}", tmp.display(), to.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_iso(volume: &str) -> Vec<u8> {
        let mut b = vec![0u8; 20 * SECTOR];
        b[16 * SECTOR..16 * SECTOR + 6].copy_from_slice(b"\x01CD001");
        b[16 * SECTOR + 40..16 * SECTOR + 72].copy_from_slice(format!("{volume:<32}").as_bytes());
        let area = live::ConfigArea::default().encode(SECTOR).unwrap();
        b[18 * SECTOR..19 * SECTOR].copy_from_slice(&area);
        let entry = format!(
            "title x\n{}options {}\n",
            iso::KARGS_MARKER,
            iso::padded("console=ttyS0 ballast.live=BALLAST_1").unwrap()
        );
        b.extend_from_slice(entry.as_bytes());
        b
    }

    #[test]
    fn finds_the_reserved_spans() {
        let b = fake_iso("BALLAST_1");
        let l = layout(&b).unwrap();
        assert_eq!(l.config_area, (18 * SECTOR) as u64);
        assert_eq!(l.kargs.len(), 1);
        assert_eq!(l.current_kargs, "console=ttyS0 ballast.live=BALLAST_1");
    }

    #[test]
    fn refuses_other_isos() {
        let e = layout(&fake_iso("DEBIAN_12")).unwrap_err().to_string();
        assert!(e.contains("not a Ballast ISO"), "{e}");
        let e = layout(&[0u8; 40 * SECTOR]).unwrap_err().to_string();
        assert!(e.contains("not an ISO 9660 image"), "{e}");
        assert!(check_arg("a b").is_err());
        assert!(check_arg("ballast.config=http://x/").is_ok());
    }
}
