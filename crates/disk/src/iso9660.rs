//! ISO 9660 images with Rock Ridge names, for cloud-init NoCloud seeds
//! (`ballast seed --iso9660`): one flat root directory of small files, the
//! shape `genisoimage -V cidata -r` and `cloud-localds` make.
//!
//! Written here rather than taken from a crate: the one maintained pure-Rust
//! writer (`hadris-iso`) is a large multi-format library (El Torito, GPT/MBR
//! hybrids, Joliet, multi-extent files) whose API changed over three major
//! versions in a short time; a seed needs ECMA-119's fixed structures and
//! four SUSP/RRIP entries, about 300 lines that can be checked here against
//! the specs and `isoinfo`.
//!
//! What is written (2048-byte sectors, ECMA-119 and SUSP 1.10/RRIP 1.09 as
//! `RRIP_1991A`):
//! - sectors 0-15 the empty system area, 16 the primary volume descriptor,
//!   17 the set terminator, 18 the L (little-endian) path table, 19 the M
//!   (big-endian) one, 20.. the root directory, then each file's data from a
//!   sector boundary;
//! - Level 1 identifiers (`USER_DAT.;1`: 8.3 of A-Z 0-9 _), sorted as ECMA-119
//!   9.3 asks; the real names live in Rock Ridge `NM` entries, which Linux's
//!   isofs reads by default, so the kernel lists `user-data`, `meta-data`,
//!   `network-config`;
//! - the root's `.` record carries `SP` (SUSP is in use), `RR`, `PX` and `ER`
//!   (the RRIP identifier); every record has `RR` and `PX` (mode 0444 files,
//!   0555 directories, owner 0), files also `NM`.
//!
//! Reproducible: every date is 1980-01-01 00:00 UTC (as the FAT images), so
//! the same files give the same bytes. Never more than the root directory:
//! a name with '/' is refused, not turned into a subdirectory.

use std::collections::HashSet;

use crate::error::io_err;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Logical block (sector) size of every image written here.
pub const SECTOR: usize = 2048;
/// Longest file name (bytes) that fits one directory record beside its
/// Level 1 identifier and Rock Ridge entries (a record is at most 255 bytes).
pub const MAX_NAME: usize = 150;

const PVD_SECTOR: u32 = 16;
const L_PATH_SECTOR: u32 = 18;
const M_PATH_SECTOR: u32 = 19;
const ROOT_SECTOR: u32 = 20;
/// Recording date of every record: 1980-01-01 00:00:00, UTC (ECMA-119 9.1.5:
/// years since 1900, month, day, hour, minute, second, offset in 15 min).
const RECORD_DATE: [u8; 7] = [80, 1, 1, 0, 0, 0, 0];
/// The same instant in the volume descriptor's 17-byte form (8.4.26.1).
const VOLUME_DATE: &[u8; 16] = b"1980010100000000";

const FLAG_DIR: u8 = 0x02;
const MODE_DIR: u32 = 0o040_555;
const MODE_FILE: u32 = 0o100_444;
/// RRIP 1.09 `RR` flags: which entries the record holds.
const RR_PX: u8 = 0x01;
const RR_NM: u8 = 0x08;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DES: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE";

/// What can go wrong writing an ISO 9660 image; each names the image and the fix.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("{path}: volume id {id:?}: use 1 to 32 printable ASCII characters (NoCloud looks for `cidata` or `CIDATA`)")]
    VolumeId { path: PathBuf, id: String },
    #[error("{path}: file name {name:?}: use 1 to {MAX_NAME} bytes without '/' or NUL, not '.' or '..' (files go in the root directory only)")]
    Name { path: PathBuf, name: String },
    #[error("{path}: file name {name:?} is given twice; give each file once")]
    Duplicate { path: PathBuf, name: String },
    #[error("{path}: {name:?} is {bytes} bytes; a file here must be smaller than 4 GiB")]
    TooBig {
        path: PathBuf,
        name: String,
        bytes: u64,
    },
    #[error("{path}: the image would be {sectors} sectors; ISO 9660 addresses at most 2^32, write fewer or smaller files")]
    ImageTooBig { path: PathBuf, sectors: u64 },
    /// Reading, writing or renaming the image (names the file and the step).
    #[error(transparent)]
    Disk(#[from] crate::DiskError),
}

/// One root-directory file, placed.
struct Entry<'a> {
    /// Level 1 identifier without the `;1`: base and extension.
    base: String,
    ext: String,
    name: &'a str,
    data: &'a [u8],
    extent: u32,
}

impl Entry<'_> {
    fn identifier(&self) -> String {
        format!("{}.{};1", self.base, self.ext)
    }
}

/// Write an ISO 9660 image to `out` (atomically: `<out>.tmp`, fsync, rename,
/// fsync of the directory; on error nothing is left behind and an existing
/// `out` is untouched) with volume id `volume_id` and `files` (name, bytes)
/// in its root directory, named by Rock Ridge so Linux shows the names as
/// given. The order of `files` does not matter.
pub fn build(out: &Path, volume_id: &str, files: &[(String, Vec<u8>)]) -> Result<(), IsoError> {
    let image = arrange(out, volume_id, files)?;
    Ok(crate::atomic::replace(out, "ISO image", |tmp| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io_err(
                tmp,
                "creating the ISO image (is the directory writable?)",
            ))?;
        let mut w = BufWriter::new(file);
        w.write_all(&image.head)
            .map_err(io_err(tmp, "writing the volume descriptors and directory"))?;
        for e in &image.entries {
            w.write_all(e.data)
                .and_then(|()| w.write_all(&vec![0; padding(e.data.len())]))
                .map_err(io_err(
                    tmp,
                    format!("writing {:?} (is there space?)", e.name),
                ))?;
        }
        let file = w
            .into_inner()
            .map_err(|e| io_err(tmp, "writing the ISO image")(e.into_error()))?;
        file.sync_all()
            .map_err(io_err(tmp, "syncing the ISO image"))
    })?)
}

/// Bytes of zeros after `len` bytes of data up to the next sector boundary.
fn padding(len: usize) -> usize {
    (SECTOR - len % SECTOR) % SECTOR
}

fn sectors(len: usize) -> u64 {
    len.div_ceil(SECTOR) as u64
}

struct Image<'a> {
    /// Sectors 0 up to the first file's data.
    head: Vec<u8>,
    entries: Vec<Entry<'a>>,
}

/// Check the input and lay the image out: everything but the file data.
fn arrange<'a>(
    out: &Path,
    volume_id: &str,
    files: &'a [(String, Vec<u8>)],
) -> Result<Image<'a>, IsoError> {
    if volume_id.is_empty()
        || volume_id.len() > 32
        || !volume_id.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(IsoError::VolumeId {
            path: out.to_path_buf(),
            id: volume_id.to_string(),
        });
    }
    let mut seen = HashSet::new();
    let mut taken = HashSet::new();
    let mut entries = Vec::with_capacity(files.len());
    for (name, data) in files {
        if name.is_empty()
            || name.len() > MAX_NAME
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
        {
            return Err(IsoError::Name {
                path: out.to_path_buf(),
                name: name.clone(),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(IsoError::Duplicate {
                path: out.to_path_buf(),
                name: name.clone(),
            });
        }
        if u32::try_from(data.len()).is_err() {
            return Err(IsoError::TooBig {
                path: out.to_path_buf(),
                name: name.clone(),
                bytes: data.len() as u64,
            });
        }
        let (base, ext) = level1(name, &mut taken);
        entries.push(Entry {
            base,
            ext,
            name,
            data,
            extent: 0,
        });
    }
    // ECMA-119 9.3: by name, then extension, each as if padded with spaces
    // (which sort before every d-character, so a plain string order agrees).
    entries.sort_by(|a, b| (&a.base, &a.ext).cmp(&(&b.base, &b.ext)));

    // Record sizes do not depend on extents: pack once to size the directory.
    let dir_sectors = pack(&directory_records(&entries, 0)).len() / SECTOR;
    let mut next = u64::from(ROOT_SECTOR) + dir_sectors as u64;
    for e in &mut entries {
        // An empty file has no data; its extent points at the next free sector.
        e.extent = u32::try_from(next).unwrap_or(u32::MAX);
        next += sectors(e.data.len());
    }
    let total = u32::try_from(next).map_err(|_| IsoError::ImageTooBig {
        path: out.to_path_buf(),
        sectors: next,
    })?;
    let dir_bytes = (dir_sectors * SECTOR) as u32;
    let dir = pack(&directory_records(&entries, dir_bytes));

    let mut head = vec![0u8; ROOT_SECTOR as usize * SECTOR];
    let pvd = &mut head[PVD_SECTOR as usize * SECTOR..][..SECTOR];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    text(&mut pvd[8..40], b""); // system identifier
    text(&mut pvd[40..72], volume_id.as_bytes());
    both32(&mut pvd[80..88], total);
    both16(&mut pvd[120..124], 1); // volume set size
    both16(&mut pvd[124..128], 1); // volume sequence number
    both16(&mut pvd[128..132], SECTOR as u16);
    both32(&mut pvd[132..140], PATH_ENTRY_LEN as u32);
    pvd[140..144].copy_from_slice(&L_PATH_SECTOR.to_le_bytes());
    pvd[148..152].copy_from_slice(&M_PATH_SECTOR.to_be_bytes());
    pvd[156..190].copy_from_slice(&record(ROOT_SECTOR, dir_bytes, FLAG_DIR, &[0], &[]));
    text(&mut pvd[190..318], b""); // volume set
    text(&mut pvd[318..446], b""); // publisher
    text(&mut pvd[446..574], b""); // data preparer
    text(&mut pvd[574..702], b"BALLAST SEED"); // application
    text(&mut pvd[702..813], b""); // copyright, abstract, bibliographic files
    for at in [813, 830] {
        // creation and modification; expiration and effective stay unset
        pvd[at..at + 16].copy_from_slice(VOLUME_DATE);
    }
    for at in [847, 864] {
        pvd[at..at + 16].copy_from_slice(b"0000000000000000");
    }
    pvd[881] = 1; // file structure version
    let term = &mut head[(PVD_SECTOR as usize + 1) * SECTOR..][..7];
    term.copy_from_slice(&[255, b'C', b'D', b'0', b'0', b'1', 1]);
    for (sector, extent) in [
        (L_PATH_SECTOR, ROOT_SECTOR.to_le_bytes()),
        (M_PATH_SECTOR, ROOT_SECTOR.to_be_bytes()),
    ] {
        // One entry: the root (identifier 0x00), its own parent (number 1).
        let parent = if sector == L_PATH_SECTOR {
            1u16.to_le_bytes()
        } else {
            1u16.to_be_bytes()
        };
        let at = sector as usize * SECTOR;
        head[at] = 1;
        head[at + 2..at + 6].copy_from_slice(&extent);
        head[at + 6..at + 8].copy_from_slice(&parent);
    }
    head.extend_from_slice(&dir);
    Ok(Image { head, entries })
}

/// Length of the path table: the root's entry only (8 + 1 identifier byte + 1 pad).
const PATH_ENTRY_LEN: usize = 10;

/// The Level 1 base and extension for `name`: upper case, anything but
/// A-Z 0-9 '_' becomes '_', 8.3, unique among `taken` (digits replace the
/// end of the base on a clash).
fn level1(name: &str, taken: &mut HashSet<(String, String)>) -> (String, String) {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| match c.to_ascii_uppercase() {
                c @ ('A'..='Z' | '0'..='9') => c,
                _ => '_',
            })
            .take(max)
            .collect()
    };
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (clean(&name[..i], 8), clean(&name[i + 1..], 3)),
        _ => (clean(name, 8), String::new()),
    };
    let mut candidate = (base.clone(), ext.clone());
    let mut n = 1u32;
    while taken.contains(&candidate) {
        let digits = n.to_string();
        let keep = base.len().min(8 - digits.len());
        candidate = (format!("{}{digits}", &base[..keep]), ext.clone());
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// The root directory's records: `.`, `..`, then the files in order.
fn directory_records(entries: &[Entry], dir_bytes: u32) -> Vec<Vec<u8>> {
    let mut dot_sua = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    dot_sua.extend_from_slice(&rr(RR_PX));
    dot_sua.extend_from_slice(&px(MODE_DIR, 2));
    dot_sua.extend_from_slice(&[
        b'E',
        b'R',
        (8 + ER_ID.len() + ER_DES.len() + ER_SRC.len()) as u8,
        1,
        ER_ID.len() as u8,
        ER_DES.len() as u8,
        ER_SRC.len() as u8,
        1,
    ]);
    dot_sua.extend_from_slice(ER_ID);
    dot_sua.extend_from_slice(ER_DES);
    dot_sua.extend_from_slice(ER_SRC);
    let mut dotdot_sua = rr(RR_PX).to_vec();
    dotdot_sua.extend_from_slice(&px(MODE_DIR, 2));
    let mut records = vec![
        record(ROOT_SECTOR, dir_bytes, FLAG_DIR, &[0], &dot_sua),
        record(ROOT_SECTOR, dir_bytes, FLAG_DIR, &[1], &dotdot_sua),
    ];
    for e in entries {
        let mut sua = rr(RR_PX | RR_NM).to_vec();
        sua.extend_from_slice(&[b'N', b'M', (5 + e.name.len()) as u8, 1, 0]);
        sua.extend_from_slice(e.name.as_bytes());
        sua.extend_from_slice(&px(MODE_FILE, 1));
        records.push(record(
            e.extent,
            e.data.len() as u32,
            0,
            e.identifier().as_bytes(),
            &sua,
        ));
    }
    records
}

/// Records laid into whole sectors; a record never crosses a sector boundary
/// (ECMA-119 6.8.1.1), the rest of a sector is zeros.
fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let used = out.len() % SECTOR;
        if used + r.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
        }
        out.extend_from_slice(r);
    }
    out.resize(out.len() + padding(out.len()), 0);
    out
}

/// A directory record (ECMA-119 9.1) with system use entries `sua`.
fn record(extent: u32, len: u32, flags: u8, id: &[u8], sua: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    both32(&mut r[2..10], extent);
    both32(&mut r[10..18], len);
    r[18..25].copy_from_slice(&RECORD_DATE);
    r[25] = flags;
    both16(&mut r[28..32], 1); // volume sequence number
    r[32] = id.len() as u8;
    r.extend_from_slice(id);
    if r.len() % 2 == 1 {
        r.push(0); // the system use area starts on an even byte
    }
    r.extend_from_slice(sua);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    debug_assert!(r.len() <= 255, "MAX_NAME keeps a record within 255 bytes");
    r[0] = r.len() as u8;
    r
}

/// RRIP 1.09 `RR`: the Rock Ridge entries this record holds.
fn rr(flags: u8) -> [u8; 5] {
    [b'R', b'R', 5, 1, flags]
}

/// RRIP `PX`: mode, links, uid 0, gid 0 (the 36-byte form of RRIP 1.09).
fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut p = vec![0u8; 36];
    p[..4].copy_from_slice(&[b'P', b'X', 36, 1]);
    both32(&mut p[4..12], mode);
    both32(&mut p[12..20], links);
    p
}

/// "Both-byte order" (ECMA-119 7.3.3 / 7.2.3): little-endian then big-endian.
fn both32(dst: &mut [u8], v: u32) {
    dst[..4].copy_from_slice(&v.to_le_bytes());
    dst[4..8].copy_from_slice(&v.to_be_bytes());
}

fn both16(dst: &mut [u8], v: u16) {
    dst[..2].copy_from_slice(&v.to_le_bytes());
    dst[2..4].copy_from_slice(&v.to_be_bytes());
}

/// A fixed-length text field: the bytes, then spaces.
fn text(dst: &mut [u8], s: &[u8]) {
    dst.fill(b' ');
    dst[..s.len()].copy_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io;
    use std::process::Command;

    type Files = Vec<(String, Vec<u8>)>;

    fn seed() -> Files {
        vec![
            (
                "user-data".into(),
                b"#cloud-config\nhostname: iso1\n".to_vec(),
            ),
            ("network-config".into(), vec![b'n'; 5000]),
            ("meta-data".into(), b"instance-id: iid-1\n".to_vec()),
            ("empty".into(), Vec::new()),
        ]
    }

    fn le32(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }

    /// Both-endian 32-bit field: the two halves must agree.
    fn both(b: &[u8]) -> u32 {
        assert_eq!(le32(b), be32(&b[4..]), "both-endian halves differ");
        le32(b)
    }

    struct Rec {
        id: Vec<u8>,
        nm: Option<String>,
        extent: u32,
        len: u32,
        flags: u8,
        sua: Vec<u8>,
    }

    /// The records of the directory at `extent`/`len`, read as a reader
    /// would: a zero length byte means the rest of that sector is unused.
    fn read_dir(img: &[u8], extent: u32, len: u32) -> Vec<Rec> {
        let dir = &img[extent as usize * SECTOR..][..len as usize];
        let mut out = Vec::new();
        let mut at = 0;
        while at < dir.len() {
            let n = dir[at] as usize;
            if n == 0 {
                at = (at / SECTOR + 1) * SECTOR;
                continue;
            }
            let r = &dir[at..at + n];
            assert_eq!(n % 2, 0, "odd record length");
            assert_eq!(
                at / SECTOR,
                (at + n - 1) / SECTOR,
                "record crosses a sector"
            );
            let id_len = r[32] as usize;
            let sua_at = (33 + id_len + 1) & !1;
            let sua = r[sua_at..].to_vec();
            let mut nm = None;
            let mut i = 0;
            while i + 4 <= sua.len() && sua[i + 2] >= 4 {
                let l = sua[i + 2] as usize;
                if &sua[i..i + 2] == b"NM" {
                    nm = Some(String::from_utf8(sua[i + 5..i + l].to_vec()).unwrap());
                }
                i += l;
            }
            out.push(Rec {
                id: r[33..33 + id_len].to_vec(),
                nm,
                extent: both(&r[2..]),
                len: both(&r[10..]),
                flags: r[25],
                sua,
            });
            at += n;
        }
        out
    }

    fn build_seed(dir: &Path) -> (PathBuf, Vec<u8>) {
        let out = dir.join("seed.iso");
        build(&out, "cidata", &seed()).unwrap();
        let img = fs::read(&out).unwrap();
        (out, img)
    }

    #[test]
    fn volume_descriptors_and_path_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, img) = build_seed(tmp.path());
        assert_eq!(img.len() % SECTOR, 0);
        let pvd = &img[0x8000..0x8800];
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&img[0x8028..0x8048], b"cidata                          ");
        assert_eq!(
            both(&pvd[80..]) as usize * SECTOR,
            img.len(),
            "volume space size"
        );
        assert_eq!(u16::from_le_bytes([pvd[128], pvd[129]]), 2048);
        assert_eq!(&img[0x8800..0x8807], b"\xffCD001\x01", "set terminator");
        // Root record in the PVD, and both path tables pointing at it.
        let root = &pvd[156..190];
        assert_eq!(
            (root[0], root[25], root[32], root[33]),
            (34, FLAG_DIR, 1, 0)
        );
        let root_extent = both(&root[2..]);
        let table_len = both(&pvd[132..]) as usize;
        assert_eq!(table_len, 10);
        let l = &img[le32(&pvd[140..]) as usize * SECTOR..][..table_len];
        let m = &img[be32(&pvd[148..]) as usize * SECTOR..][..table_len];
        assert_eq!(
            (l[0], le32(&l[2..]), &l[6..9]),
            (1, root_extent, &[1, 0, 0][..])
        );
        assert_eq!(
            (m[0], be32(&m[2..]), &m[6..9]),
            (1, root_extent, &[0, 1, 0][..])
        );
    }

    #[test]
    fn files_come_back_by_rock_ridge_name_with_their_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, img) = build_seed(tmp.path());
        let root = &img[0x8000 + 156..];
        let recs = read_dir(&img, both(&root[2..]), both(&root[10..]));
        assert_eq!(recs[0].id, [0]);
        assert_eq!(
            &recs[0].sua[..7],
            b"SP\x07\x01\xbe\xef\x00",
            "SUSP SP first in '.'"
        );
        assert!(
            recs[0].sua.windows(10).any(|w| w == b"RRIP_1991A"),
            "ER entry"
        );
        assert_eq!(recs[1].id, [1]);
        assert!(recs[..2].iter().all(|r| r.flags == FLAG_DIR));
        let ids: Vec<String> = recs[2..]
            .iter()
            .map(|r| String::from_utf8(r.id.clone()).unwrap())
            .collect();
        assert_eq!(
            ids,
            ["EMPTY.;1", "META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1"]
        );
        for (name, data) in seed() {
            let r = recs[2..]
                .iter()
                .find(|r| r.nm.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no NM entry for {name}"));
            assert_eq!(r.len as usize, data.len(), "{name}");
            assert_eq!(r.flags, 0);
            let at = r.extent as usize * SECTOR;
            assert_eq!(&img[at..at + data.len()], &data[..], "{name}");
        }
    }

    #[test]
    fn same_files_same_bytes_whatever_the_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, a) = build_seed(tmp.path());
        let mut files = seed();
        files.reverse();
        let out = tmp.path().join("b.iso");
        build(&out, "cidata", &files).unwrap();
        assert!(fs::read(&out).unwrap() == a);
    }

    #[test]
    fn clashing_short_names_stay_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("x.iso");
        let files: Vec<(String, Vec<u8>)> = ["user-data", "user_data", "User-Data.1"]
            .iter()
            .map(|n| (n.to_string(), n.as_bytes().to_vec()))
            .collect();
        build(&out, "CIDATA", &files).unwrap();
        let img = fs::read(&out).unwrap();
        let root = &img[0x8000 + 156..];
        let recs = read_dir(&img, both(&root[2..]), both(&root[10..]));
        let mut ids: Vec<Vec<u8>> = recs[2..].iter().map(|r| r.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        for r in &recs[2..] {
            let name = r.nm.clone().unwrap();
            assert_eq!(
                &img[r.extent as usize * SECTOR..][..r.len as usize],
                name.as_bytes()
            );
        }
    }

    #[test]
    fn many_files_spill_the_directory_over_sectors() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("many.iso");
        let files: Vec<(String, Vec<u8>)> = (0..60)
            .map(|i| (format!("file-number-{i:03}"), vec![i as u8; i * 100]))
            .collect();
        build(&out, "cidata", &files).unwrap();
        let img = fs::read(&out).unwrap();
        let root = &img[0x8000 + 156..];
        let dir_len = both(&root[10..]);
        assert!(dir_len as usize > SECTOR, "{dir_len}");
        let recs = read_dir(&img, both(&root[2..]), dir_len);
        assert_eq!(recs.len(), 62);
        for (name, data) in &files {
            let r = recs.iter().find(|r| r.nm.as_ref() == Some(name)).unwrap();
            assert_eq!(
                &img[r.extent as usize * SECTOR..][..r.len as usize],
                &data[..]
            );
        }
    }

    #[test]
    fn bad_input_leaves_the_old_image_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("seed.iso");
        fs::write(&out, b"old").unwrap();
        let long = "x".repeat(MAX_NAME + 1);
        let cases: Vec<(&str, Files, &str)> = vec![
            ("", seed(), "volume id"),
            ("a-volume-id-longer-than-32-bytes!", seed(), "volume id"),
            (
                "cidata",
                vec![("dir/user-data".into(), vec![])],
                "root directory only",
            ),
            ("cidata", vec![(long, vec![])], "file name"),
            (
                "cidata",
                vec![("a".into(), vec![]), ("a".into(), vec![])],
                "twice",
            ),
        ];
        for (id, files, want) in cases {
            let err = build(&out, id, &files).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("seed.iso"), "{err}");
        }
        let missing = tmp.path().join("no-such-dir/seed.iso");
        let err = build(&missing, "cidata", &seed()).unwrap_err().to_string();
        assert!(err.contains("creating the ISO image"), "{err}");
        assert_eq!(fs::read(&out).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["seed.iso"]);
    }

    /// isoinfo (Debian's genisoimage, installed by scripts/setup) must list
    /// the Rock Ridge names and extract the bytes, as the kernel would.
    /// Skipped only when BALLAST_ALLOW_MISSING_TOOLS is set.
    #[test]
    fn isoinfo_lists_and_extracts_the_real_names() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = build_seed(tmp.path());
        let run = |args: &[&str]| -> Option<Vec<u8>> {
            match Command::new("isoinfo")
                .args(args)
                .arg("-i")
                .arg(&out)
                .output()
            {
                Ok(o) => {
                    assert!(
                        o.status.success(),
                        "isoinfo {args:?}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    Some(o.stdout)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => panic!("running isoinfo: {e}"),
            }
        };
        let Some(info) = run(&["-d"]) else {
            if std::env::var_os("BALLAST_ALLOW_MISSING_TOOLS").is_some() {
                eprintln!(
                    "skipped: isoinfo not found (genisoimage package; scripts/setup installs it)"
                );
                return;
            }
            panic!("isoinfo not found: run scripts/setup (package genisoimage) or set BALLAST_ALLOW_MISSING_TOOLS=1");
        };
        let info = String::from_utf8_lossy(&info);
        assert!(info.contains("Volume id: cidata"), "{info}");
        assert!(
            info.contains("Rock Ridge signatures version 1 found"),
            "{info}"
        );
        let list = String::from_utf8(run(&["-R", "-l"]).unwrap()).unwrap();
        for (name, data) in seed() {
            let line = list
                .lines()
                .find(|l| l.ends_with(&format!(" {name} ")) || l.ends_with(&format!(" {name}")))
                .unwrap_or_else(|| panic!("{name} not listed:\n{list}"));
            assert!(line.starts_with("-r--r--r--"), "{line}");
            assert!(line.contains(&format!(" {} ", data.len())), "{line}");
            assert_eq!(
                run(&["-R", "-x", &format!("/{name}")]).unwrap(),
                data,
                "{name}"
            );
        }
    }
}
