//! Build step 7b: the install image. The disk image, zstd-compressed
//! (`install.img.zst`, one frame recording its size), and its signed manifest
//! (`install.img.zst.manifest`: version, board, arch, raw size and SHA-256 of
//! the raw disk image; format owned by `ballast-install`), signed with the key
//! that signs the update bundle. The ISO carries them; `osctl install`, the
//! unattended install and `ballast flash` write them.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ballast_install::{Manifest, IMAGE_FILE, MANIFEST_FILE};
use sha2::{Digest, Sha256};

/// zstd level: 3 compresses a disk image (mostly squashfs, already
/// compressed, and zeros) about as well as 19 at a fraction of the time.
const LEVEL: i32 = 3;

/// Write both files into `work`; they are moved into OUT with the others.
pub fn write(
    disk: &Path,
    version: &str,
    board: &str,
    arch: &str,
    signer: &ballast_bundle::Signer,
    work: &Path,
) -> Result<()> {
    let out = work.join(IMAGE_FILE);
    let raw_size = std::fs::metadata(disk)
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    let mut input = BufReader::with_capacity(
        4 << 20,
        File::open(disk).with_context(|| format!("opening {}", disk.display()))?,
    );
    let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut enc = zstd::stream::Encoder::new(file, LEVEL)?;
    enc.set_pledged_src_size(Some(raw_size))?;
    enc.include_contentsize(true)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    enc.multithread(threads)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", disk.display())),
        };
        hasher.update(&buf[..n]);
        enc.write_all(&buf[..n])
            .with_context(|| format!("writing {}", out.display()))?;
    }
    enc.finish()
        .and_then(|f| f.sync_all())
        .with_context(|| format!("finishing {}", out.display()))?;
    let manifest = Manifest {
        format: 1,
        version: version.to_owned(),
        board: board.to_owned(),
        arch: arch.to_owned(),
        raw_size,
        sha256: hex::encode(hasher.finalize()),
    };
    let text = manifest.sign(signer);
    let m = work.join(MANIFEST_FILE);
    std::fs::write(&m, text).with_context(|| format!("writing {}", m.display()))?;
    Ok(())
}

/// (scratch file, name in OUT) of both files.
pub fn staged(work: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (work.join(IMAGE_FILE), IMAGE_FILE),
        (work.join(MANIFEST_FILE), MANIFEST_FILE),
    ]
}
