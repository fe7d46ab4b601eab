//! `ballast seed`: a NoCloud seed volume — a FAT filesystem labelled `CIDATA`,
//! or with `--iso9660` an ISO 9660 image with volume id `cidata` (what
//! `cloud-localds` and `genisoimage -V cidata -r` make; names by Rock Ridge) —
//! holding `user-data`, `meta-data` and optionally `network-config`, to attach
//! to a machine as an extra drive (`ballast run --seed`, a USB stick, a
//! virtual disk or CD-ROM). The device reads it at boot (sysd's first-boot
//! config). FAT is the default because every OS can edit it after writing;
//! the ISO is read-only and small (tens of KiB against 64 MiB), the form
//! clouds and hypervisors attach.
//!
//! The document is not checked here: a broken one is written as given (the
//! device reports it and boots with defaults); check it first with
//! `osctl config validate FILE`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The first-boot config (`#cloud-config` or TOML).
    #[arg(long = "user-data", value_name = "FILE")]
    pub user_data: PathBuf,
    /// NoCloud meta-data (`instance-id: ...`); default: an instance id made
    /// from the user-data's bytes, so a changed document is a new instance.
    #[arg(long = "meta-data", value_name = "FILE")]
    pub meta_data: Option<PathBuf>,
    /// NoCloud network-config (copied as is).
    #[arg(long = "network-config", value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// The seed image to write (replaced atomically).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Write an ISO 9660 image (volume id `cidata`, Rock Ridge names)
    /// instead of the default FAT volume labelled CIDATA.
    #[arg(long)]
    pub iso9660: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// FNV-1a of the bytes: a stable default instance id.
fn instance_id(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("iid-ballast-{h:016x}")
}

/// The NoCloud files: `user-data`, `meta-data` (given or made), `network-config`.
/// Empty when there is no user-data.
pub fn seed_files(
    user_data: Option<&Path>,
    meta_data: Option<&Path>,
    network_config: Option<&Path>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(ud) = user_data else {
        return Ok(Vec::new());
    };
    let ud = read(ud, "user-data")?;
    let md = match meta_data {
        Some(p) => read(p, "meta-data")?,
        None => format!("instance-id: {}\n", instance_id(&ud)).into_bytes(),
    };
    let mut files = vec![("user-data".to_string(), ud), ("meta-data".to_string(), md)];
    if let Some(p) = network_config {
        files.push(("network-config".to_string(), read(p, "network-config")?));
    }
    Ok(files)
}

pub fn run(args: &SeedArgs) -> Result<()> {
    let files = seed_files(
        Some(&args.user_data),
        args.meta_data.as_deref(),
        args.network_config.as_deref(),
    )?;
    let kind = if args.iso9660 {
        ballast_disk::iso9660::build(&args.output, "cidata", &files)
            .with_context(|| format!("writing the seed image {}", args.output.display()))?;
        "ISO 9660, volume id cidata"
    } else {
        let volume_id = u32::from_str_radix(&instance_id(&files[0].1)[12..20], 16).unwrap_or(0);
        ballast_disk::fat::build(
            &args.output,
            ballast_disk::fat::MIN_BYTES,
            "CIDATA",
            volume_id,
            &files,
        )
        .with_context(|| format!("writing the seed image {}", args.output.display()))?;
        "FAT, label CIDATA"
    };
    println!(
        "{}: NoCloud seed ({kind}) with {}",
        args.output.display(),
        files
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        seed: SeedArgs,
    }

    fn seed(dir: &Path, extra: &[&str]) -> Vec<u8> {
        let ud = dir.join("user-data.yaml");
        std::fs::write(&ud, "#cloud-config\nhostname: n1\n").unwrap();
        let out = dir.join("seed.img");
        let mut argv = vec!["seed", "--user-data", ud.to_str().unwrap()];
        argv.extend(["-o", out.to_str().unwrap()]);
        argv.extend(extra);
        run(&Cli::parse_from(argv).seed).unwrap();
        std::fs::read(out).unwrap()
    }

    #[test]
    fn fat_by_default_iso9660_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let fat = seed(tmp.path(), &[]);
        assert_eq!(fat.len() as u64, ballast_disk::fat::MIN_BYTES);
        assert_eq!(&fat[0x47..0x52], b"CIDATA     ");
        let iso = seed(tmp.path(), &["--iso9660"]);
        assert!(iso.len() < 64 << 10, "{} bytes", iso.len());
        assert_eq!(&iso[0x8001..0x8006], b"CD001");
        assert_eq!(&iso[0x8028..0x802e], b"cidata");
        let ud = b"#cloud-config\nhostname: n1\n";
        assert!(iso.windows(ud.len()).any(|w| w == ud));
        assert!(iso.windows(9).any(|w| w == b"meta-data"), "NM entry");
    }
}
