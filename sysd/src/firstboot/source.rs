//! Where the first-boot config comes from, first found wins:
//!
//! 1. `ballast.config=URL` on the kernel command line (`http://` or `https://`;
//!    fetched once the `network` service is up, retried until a deadline). A URL
//!    ending in `/` is a NoCloud-net seed: `URLuser-data` and (optional)
//!    `URLmeta-data`. An `https://` URL is verified against the image's CA
//!    bundle plus the `ca_certs` of a local seed (a CIDATA volume or
//!    `/boot/user-data`), the way Ignition's pointer config carries the CA of its
//!    `ignition.config.url`: see [`seed_ca_certs`].
//! 2. A NoCloud volume: any block device whose filesystem label is `CIDATA`
//!    (vfat: the label in the boot sector; iso9660: the volume id of the
//!    primary volume descriptor), mounted read-only for the time it is read.
//! 3. `user-data` (and `meta-data`) on the boot partition (`/boot`).
//!
//! This module only reads; it never changes the machine except for the short
//! read-only mount of a CIDATA volume.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_config::MAX_DOCUMENT;
use ballast_device::Cmdline;

use super::sys::SysError;

/// Finding or fetching the first-boot config failed; the Display is the line
/// `osctl status` and the console show after `config: `.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not UTF-8 text (save the file as UTF-8)", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("{origin}: the CIDATA volume has no user-data file (NoCloud needs user-data and meta-data at its top level)")]
    NoUserData { origin: String },
    #[error("cannot fetch {url}: {detail}; give the CA that signed the server's certificate in the seed's ca_certs (a CIDATA volume or /boot/user-data)")]
    Tls { url: String, detail: String },
    #[error(
        "{url}: ballast.config= takes an http:// or https:// URL (e.g. ballast.config=https://10.0.0.1/seed/)"
    )]
    NotHttp { url: String },
    #[error("cannot fetch {url}: {source}")]
    Http {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("cannot fetch {url}: {source}")]
    Body { url: String, source: std::io::Error },
    #[error("cannot fetch {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("cannot fetch {url}: HTTP 404 (not found)")]
    NotFound { url: String },
    #[error("{url}: not UTF-8 text")]
    UrlNotUtf8 { url: String },
    #[error("{}: {source}", path.display())]
    Area {
        path: PathBuf,
        source: ballast_device::live::AreaError,
    },
    #[error("{last} (gave up after retrying until the config deadline)")]
    GaveUp { last: Box<SourceError> },
}

impl SourceError {
    /// A URL no retry can fix.
    fn is_final(&self) -> bool {
        matches!(self, SourceError::Tls { .. } | SourceError::NotHttp { .. })
    }
}

/// The text of one config source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// For messages: `http://...`, `CIDATA:/dev/vdb`, `/boot`.
    pub origin: String,
    /// Source name of the user-data for errors (`CIDATA:/dev/vdb/user-data`).
    pub user_data_source: String,
    pub user_data: String,
    pub meta_data: Option<String>,
    pub network_config: Option<String>,
}

/// `ballast.config=URL` from the text of the kernel command line (the
/// device contract's parser: quoting and the last occurrence as the kernel has them).
pub fn url_from_cmdline(cmdline: &str) -> Option<String> {
    Cmdline::parse(cmdline).config_url().map(str::to_string)
}

/// Filesystem label of a CIDATA candidate from its first bytes (at least
/// 0x8800 of them for iso9660): `Some(("vfat"|"iso9660", label))`.
pub fn fs_label(head: &[u8]) -> Option<(&'static str, String)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    if head.len() >= 0x8800 && head[0x8001..0x8006] == *b"CD001" && head[0x8000] == 1 {
        return Some(("iso9660", text(&head[0x8028..0x8048])));
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        // FAT32 keeps its extended BPB at 0x40, FAT12/16 at 0x24; the boot
        // signature byte 0x29 says the label field is valid.
        if head[0x52..0x5A] == *b"FAT32   " && head[0x42] == 0x29 {
            return Some(("vfat", text(&head[0x47..0x52])));
        }
        if head[0x36..0x39] == *b"FAT" && head[0x26] == 0x29 {
            return Some(("vfat", text(&head[0x2B..0x36])));
        }
    }
    None
}

/// Block devices (whole disks and partitions) from /sys/class/block, as /dev paths.
fn block_devices(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("sys/class/block"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("dm-")
                })
                .map(|n| root.join("dev").join(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn read_head(dev: &Path) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(dev).ok()?;
    let mut head = vec![0u8; 0x8800];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    head.truncate(n);
    let _ = f.seek(SeekFrom::Start(0));
    Some(head)
}

/// The first block device labelled CIDATA: `(device, filesystem type)`.
pub fn find_cidata(root: &Path) -> Option<(PathBuf, &'static str)> {
    block_devices(root).into_iter().find_map(|dev| {
        let head = read_head(&dev)?;
        match fs_label(&head) {
            Some((fs, label)) if label.eq_ignore_ascii_case("CIDATA") => Some((dev, fs)),
            _ => None,
        }
    })
}

/// Read at most the document limit (+1, so the parser can say it is too large).
fn read_limited(path: &Path) -> Result<Option<String>, SourceError> {
    let read = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read)?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| SourceError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

/// `user-data`, `meta-data`, `network-config` from a directory.
pub fn read_dir_seed(dir: &Path, origin: &str) -> Result<Option<Found>, SourceError> {
    let Some(user_data) = read_limited(&dir.join("user-data"))? else {
        return Ok(None);
    };
    Ok(Some(Found {
        origin: origin.to_string(),
        user_data_source: format!("{origin}/user-data"),
        user_data,
        meta_data: read_limited(&dir.join("meta-data"))?,
        network_config: read_limited(&dir.join("network-config"))?,
    }))
}

/// The live medium's config area (`ballast iso customize`): `None` when it is
/// absent or holds no user-data.
pub fn read_live_area(path: &Path) -> Result<Option<Found>, SourceError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SourceError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let area =
        ballast_device::live::ConfigArea::decode(&bytes).map_err(|source| SourceError::Area {
            path: path.to_path_buf(),
            source,
        })?;
    let text = |b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| SourceError::NotUtf8 {
            path: path.to_path_buf(),
        })
    };
    let Some(user_data) = area.user_data else {
        return Ok(None);
    };
    Ok(Some(Found {
        origin: path.display().to_string(),
        user_data_source: format!("{}/user-data", path.display()),
        user_data: text(user_data)?,
        meta_data: area.meta_data.map(text).transpose()?,
        network_config: None,
    }))
}

/// Mount `dev` read-only at `at`, read the seed, unmount.
pub fn read_cidata(dev: &Path, fstype: &str, at: &Path) -> Result<Option<Found>, SourceError> {
    std::fs::create_dir_all(at).map_err(|source| SourceError::CreateDir {
        path: at.to_path_buf(),
        source,
    })?;
    crate::firstboot::sys::mount_ro(dev, at, fstype)?;
    let origin = format!("CIDATA:{}", dev.display());
    let found = read_dir_seed(at, &origin);
    if let Err(e) = crate::firstboot::sys::umount(at) {
        crate::say(&format!("config: {e}"));
    }
    let found = found?;
    if found.is_none() {
        return Err(SourceError::NoUserData { origin });
    }
    Ok(found)
}

/// The `ca_certs` of a local seed's user-data, as PEM text: what verifies an
/// `https://` config URL. A seed that does not parse gives none (its errors are
/// reported only when it is the config applied).
pub fn seed_ca_certs(found: &Found) -> Vec<String> {
    ballast_config::parse(&found.user_data, &found.user_data_source)
        .ok()
        .and_then(|p| p.doc.ca_certs)
        .map(|c| c.trusted)
        .unwrap_or_default()
}

/// One GET with a timeout; `Ok(None)` for 404.
fn http_get(
    url: &str,
    timeout: Duration,
    trust: &crate::http::Trust,
) -> Result<Option<String>, SourceError> {
    let url_ = || url.to_string();
    if !crate::http::is_url(url) {
        return Err(SourceError::NotHttp { url: url_() });
    }
    let agent = crate::http::agent(trust, crate::http::Limits::call(timeout));
    let resp = agent.get(url).call().map_err(|e| {
        if crate::http::tls_error(&e).is_some() {
            SourceError::Tls {
                url: url_(),
                detail: crate::http::explain(&e, trust),
            }
        } else {
            SourceError::Http {
                url: url_(),
                source: Box::new(e),
            }
        }
    })?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    if status != 200 {
        return Err(SourceError::Status {
            url: url_(),
            status,
        });
    }
    let mut buf = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| SourceError::Body {
            url: url_(),
            source,
        })?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| SourceError::UrlNotUtf8 { url: url_() })
}

/// Fetch the config at `url`, retrying until `deadline` (DHCP may still be
/// getting its lease when the network service reports up).
pub fn fetch(
    url: &str,
    deadline: Instant,
    trust: &crate::http::Trust,
) -> Result<Found, SourceError> {
    let (ud_url, md_url) = if url.ends_with('/') {
        (format!("{url}user-data"), Some(format!("{url}meta-data")))
    } else {
        (url.to_string(), None)
    };
    let mut last;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = (|| {
            let ud = http_get(
                &ud_url,
                left.clamp(Duration::from_secs(1), Duration::from_secs(10)),
                trust,
            )?
            .ok_or_else(|| SourceError::NotFound {
                url: ud_url.clone(),
            })?;
            let md = match &md_url {
                Some(m) => http_get(m, Duration::from_secs(10), trust)?,
                None => None,
            };
            Ok::<_, SourceError>((ud, md))
        })();
        match attempt {
            Ok((user_data, meta_data)) => {
                return Ok(Found {
                    origin: url.to_string(),
                    user_data_source: ud_url,
                    user_data,
                    meta_data,
                    network_config: None,
                })
            }
            Err(e) => last = e,
        }
        if last.is_final() {
            return Err(last);
        }
        if Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(SourceError::GaveUp {
                last: Box::new(last),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_taken_from_the_command_line() {
        assert_eq!(
            url_from_cmdline("root=x ballast.config=http://10.0.2.2:8000/seed/ quiet"),
            Some("http://10.0.2.2:8000/seed/".into())
        );
        assert_eq!(url_from_cmdline("root=x quiet"), None);
        assert_eq!(
            url_from_cmdline("ballast.config=http://a/ ballast.config=\"http://b/\" -- x"),
            Some("http://b/".into())
        );
    }

    #[test]
    fn labels_of_a_fat_volume_built_like_ballast_seed() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("seed.img");
        ballast_disk::fat::build(
            &img,
            ballast_disk::fat::MIN_BYTES,
            "CIDATA",
            1,
            &[("user-data".into(), b"#cloud-config\n".to_vec())],
        )
        .unwrap();
        let head = read_head(&img).unwrap();
        assert_eq!(fs_label(&head), Some(("vfat", "CIDATA".to_string())));
    }

    #[test]
    fn iso9660_volume_id() {
        let mut head = vec![0u8; 0x8800];
        head[0x8000] = 1;
        head[0x8001..0x8006].copy_from_slice(b"CD001");
        head[0x8028..0x8048].copy_from_slice(b"cidata                          ");
        assert_eq!(fs_label(&head), Some(("iso9660", "cidata".to_string())));
        assert_eq!(fs_label(&[0u8; 4096]), None);
    }

    #[test]
    fn other_schemes_are_refused_at_once() {
        let start = Instant::now();
        let trust = crate::http::Trust::default();
        let e = fetch("ftp://x/", start + Duration::from_secs(30), &trust).unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_seed_gives_its_ca_certs_for_the_url() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let found = Found {
            origin: "/boot".into(),
            user_data_source: "/boot/user-data".into(),
            user_data: format!(
                "#cloud-config\nca_certs:\n  trusted:\n    - |\n      {}\n",
                pem.replace('\n', "\n      ")
            ),
            meta_data: None,
            network_config: None,
        };
        let ca = seed_ca_certs(&found);
        assert_eq!(ca.len(), 1, "{ca:?}");
        assert!(ca[0].contains("BEGIN CERTIFICATE"));
        let broken = Found {
            user_data: "#cloud-config\nca_certs: [".into(),
            ..found
        };
        assert!(seed_ca_certs(&broken).is_empty());
    }
}
