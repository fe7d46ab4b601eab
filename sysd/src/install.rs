//! Installing this OS to another disk with the one installer
//! (`ballast-install`): for `osctl install` (a control socket request) and
//! for the unattended install `ballast.install=DEVICE` at boot, which says
//! what it does on the console in `ballast-install ...` lines and reboots
//! into the disk when the image is written and verified.
//!
//! The image comes from the live medium (`/run/ballast/medium/ballast/
//! install.img.zst`), a descriptor osctl passes, or a URL
//! (`ballast.install.image=`). An image from a file or URL must come with its
//! signed manifest, checked against the keys baked into this image (and those
//! the applied config trusts) before the first byte is written; the medium's
//! is checked too when the medium carries it. The target checks refuse the
//! disks this system runs from (`/`, `/boot`, `/state`, the medium).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_install::{BootConfig, Image, Manifest, Phase, Policy, Report, Target};

use crate::Shared;

/// Where the live system mounts its medium (ISO or USB stick).
pub const MEDIUM: &str = "/run/ballast/medium";
/// The install image on the medium, and its signed manifest beside it.
pub const MEDIUM_IMAGE: &str = "/run/ballast/medium/ballast/install.img.zst";

/// Mount points whose disks are this system's own.
const SYSTEM_MOUNTS: [&str; 5] = ["/", "/boot", "/state", "/usr", MEDIUM];

#[derive(Debug, thiserror::Error)]
pub enum InstallFailure {
    #[error(transparent)]
    Install(#[from] ballast_install::InstallError),
    #[error("{0}")]
    Other(String),
}

/// Where the image comes from.
pub enum Source {
    Medium,
    /// A reader (descriptor, socket body or download) of `size` bytes when known,
    /// with its signed manifest's text.
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
        size: Option<u64>,
        manifest: Option<String>,
    },
}

/// What to install where.
pub struct Job {
    pub device: PathBuf,
    pub force: bool,
    pub source: Source,
    pub config: BootConfig,
}

/// The image is written and verified.
pub struct Done {
    pub version: String,
    pub report: Report,
}

fn trusted_keys(shared: &Shared) -> Result<Vec<ballast_bundle::PublicKey>, InstallFailure> {
    let mut keys = ballast_bundle::keys::read_dir(&shared.keys_dir)
        .map_err(|e| InstallFailure::Other(e.to_string()))?;
    keys.extend(
        ballast_bundle::keys::read_dir(&shared.config_keys_dir)
            .map_err(|e| InstallFailure::Other(e.to_string()))?,
    );
    Ok(keys)
}

/// Check the manifest, the arch, the target; then write and verify.
pub fn run(
    shared: &Shared,
    job: Job,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Done, InstallFailure> {
    let keys = trusted_keys(shared)?;
    let (mut image, manifest) = match job.source {
        Source::Medium => {
            let path = Path::new(MEDIUM_IMAGE);
            if !path.exists() {
                return Err(InstallFailure::Other(format!(
                    "{MEDIUM_IMAGE}: not found (this system was not booted from a Ballast ISO); give the image with --image FILE|URL"
                )));
            }
            let mpath = PathBuf::from(format!("{MEDIUM_IMAGE}.manifest"));
            let manifest = match std::fs::read_to_string(&mpath) {
                Ok(text) => Some(Manifest::verify(
                    &text,
                    &keys,
                    &mpath.display().to_string(),
                )?),
                Err(_) => None,
            };
            let mut image = Image::open(path, manifest.as_ref().map(|m| m.raw_size))?;
            if let Some(m) = &manifest {
                // The ISO's copy leaves slot A's root (and more) to files beside it.
                image = image.with_fills(m, path.parent().unwrap_or(Path::new("/")))?;
            }
            (image, manifest)
        }
        Source::Stream {
            name,
            reader,
            size,
            manifest,
        } => {
            let text = manifest.ok_or_else(|| {
                InstallFailure::Other(format!(
                    "{name}: no signed manifest; an image from a file or URL is written only with its manifest (the {}.manifest file `ballast build` wrote beside it)",
                    ballast_install::IMAGE_FILE
                ))
            })?;
            let m = Manifest::verify(&text, &keys, &format!("{name}.manifest"))?;
            if !m.fills.is_empty() {
                return Err(InstallFailure::Other(format!(
                    "{name}: this is the live ISO's install image, which takes {} ranges from files on the ISO; over a URL give the whole {} `ballast build` wrote in OUT",
                    m.fills.len(),
                    ballast_install::IMAGE_FILE
                )));
            }
            let image = Image::from_reader(&name, reader, size, Some(m.raw_size))?;
            (image, Some(m))
        }
    };
    if let Some(m) = &manifest {
        let here = ballast_device::OsRelease::read(&shared.os_release)
            .map(|o| o.arch.as_str().to_string())
            .unwrap_or_default();
        if !here.is_empty() && m.arch != here {
            return Err(InstallFailure::Other(format!(
                "the image is for {} ({}), this machine is {here}; use the image built for this machine's board",
                m.arch, m.board
            )));
        }
    }
    let policy = Policy {
        force: job.force,
        require_removable: false,
        system_mounts: SYSTEM_MOUNTS.iter().map(PathBuf::from).collect(),
    };
    let target = Target::inspect(&job.device, &policy)?;
    target.check(image.raw_size, &policy)?;
    use std::os::unix::fs::OpenOptionsExt;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(&job.device)
        .map_err(|e| {
            InstallFailure::Other(format!(
                "{}: cannot open it exclusively: {e} (something opened it meanwhile); nothing was written",
                job.device.display()
            ))
        })?;
    // Verified with the manifest, so its sums parse.
    let expected = match &manifest {
        Some(m) => m
            .expected()
            .map_err(|e| InstallFailure::Other(format!("the image's signed manifest: {e}")))?,
        None => ballast_install::Expected::Unsigned,
    };
    let report = ballast_install::install(
        &mut image,
        &dev,
        &job.device,
        &expected,
        &job.config,
        progress,
    )?;
    Ok(Done {
        version: manifest.map(|m| m.version).unwrap_or_default(),
        report,
    })
}

/// A console line of the unattended install.
fn line(msg: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ballast-install {msg}");
    let _ = out.flush();
}

/// GET `url`, retrying for a while (the network may still be coming up).
fn get(url: &str, deadline: Instant) -> Result<(Box<dyn Read + Send>, Option<u64>), String> {
    if !crate::http::is_url(url) {
        return Err(format!(
            "{url}: not an http:// or https:// URL (the image is checked by its signed manifest either way)"
        ));
    }
    let trust = crate::http::Trust::device();
    let agent = crate::http::agent(&trust, crate::http::Limits::download());
    loop {
        match agent.get(url).call() {
            Ok(resp) => {
                let size = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                return Ok((Box::new(resp.into_body().into_reader()), size));
            }
            // A certificate that does not verify will not verify on retry.
            Err(e) if crate::http::tls_error(&e).is_some() => {
                return Err(format!("{url}: {}", crate::http::explain(&e, &trust)))
            }
            Err(e) if Instant::now() < deadline => {
                line(&format!("waiting for {url}: {e}"));
                std::thread::sleep(Duration::from_secs(3));
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
}

fn get_text(url: &str, deadline: Instant) -> Result<String, String> {
    let (mut r, _) = get(url, deadline)?;
    let mut s = String::new();
    r.by_ref()
        .take(1 << 20)
        .read_to_string(&mut s)
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(s)
}

/// `ballast.install=DEVICE`: install, then reboot into the disk. On failure
/// the machine stays up (live), saying why, so a person can look.
pub fn unattended(shared: &Shared, device: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let image_url = shared.cmdline.install_image_url().map(str::to_string);
    let config_url = shared.cmdline.install_config_url().map(str::to_string);
    line(&format!(
        "device={device} image={}",
        image_url.as_deref().unwrap_or(MEDIUM_IMAGE)
    ));
    let result = (|| -> Result<Done, String> {
        let mut config = BootConfig::default();
        if let Some(url) = &config_url {
            line(&format!("config={url}"));
            config.user_data = Some(get_text(url, deadline)?.into_bytes());
        }
        let source = match &image_url {
            None => Source::Medium,
            Some(url) => {
                let manifest = get_text(&format!("{url}.manifest"), deadline)?;
                let (reader, size) = get(url, deadline)?;
                Source::Stream {
                    name: url.clone(),
                    reader,
                    size,
                    manifest: Some(manifest),
                }
            }
        };
        let job = Job {
            device: PathBuf::from(device),
            force: true, // the kernel command line names the disk on purpose
            source,
            config,
        };
        let mut last: Option<(Phase, u64)> = None;
        let mut progress = |p: Phase, done: u64, total: u64| {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            // A line per phase and per 10 %.
            if last.is_none_or(|(lp, lpct)| lp != p || pct / 10 != lpct / 10) {
                line(&format!("{p} {pct}%"));
                last = Some((p, pct));
            }
        };
        run(shared, job, &mut progress).map_err(|e| e.to_string())
    })();
    match result {
        Ok(done) => {
            line(&format!(
                "done device={device} version={} bytes={} sha256={}",
                done.version, done.report.bytes, done.report.sha256
            ));
            line("rebooting into the installed disk");
            if let Err(e) = shared.ask_pid1(crate::sys::Signal::Int, "reboot") {
                line(&format!("cannot reboot: {e}"));
            }
        }
        Err(e) => line(&format!("failed device={device}: {e}")),
    }
}
