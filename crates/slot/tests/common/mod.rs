//! Helpers shared by the QEMU tests: a disk image with an MBR and one FAT partition
//! built with `fatfs`, reading files back after a boot, running QEMU until a console
//! line appears.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PART_START: u64 = 1 << 20;
pub const PART_SIZE: u64 = 16 << 20;

/// True when `bin` runs and every file in `files` exists; otherwise prints a SKIPPED note.
pub fn have(bin: &str, files: &[&str]) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !Path::new(f).exists())
        .collect();
    if !ok || !missing.is_empty() {
        eprintln!("SKIPPED: needs {bin} and {missing:?} (scripts/setup installs them)");
        return false;
    }
    true
}

pub fn workdir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let staging = t.path().join("boot");
    std::fs::create_dir_all(&staging).unwrap();
    let disk = t.path().join("disk.img");
    (t, staging, disk)
}

/// A disk with an MBR and one FAT partition (bootable, `part_type`) at 1 MiB holding
/// the files of `staging`.
pub fn make_disk(staging: &Path, disk: &Path, part_type: u8) {
    let mut part = Cursor::new(vec![0u8; PART_SIZE as usize]);
    fatfs::format_volume(
        &mut part,
        fatfs::FormatVolumeOptions::new().volume_label(*b"BALLASTBOOT"),
    )
    .unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut part, fat_options()).unwrap();
        copy_into(&fs.root_dir(), staging);
    }
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = part_type;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&((PART_START / 512) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((PART_SIZE / 512) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut f = std::fs::File::create(disk).unwrap();
    f.write_all(&mbr).unwrap();
    f.seek(SeekFrom::Start(PART_START)).unwrap();
    f.write_all(part.get_ref()).unwrap();
}

pub fn copy_into<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<T>, src: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            let sub = dir.create_dir(&name).unwrap();
            copy_into(&sub, &e.path());
        } else {
            let mut f = dir.create_file(&name).unwrap();
            f.truncate().unwrap();
            f.write_all(&std::fs::read(e.path()).unwrap()).unwrap();
        }
    }
}

/// Read a file of the disk's FAT partition (None when absent).
pub fn read_from_disk(disk: &Path, path: &str) -> Option<String> {
    let mut f = std::fs::File::open(disk).unwrap();
    let mut part = vec![0u8; PART_SIZE as usize];
    f.seek(SeekFrom::Start(PART_START)).unwrap();
    f.read_exact(&mut part).unwrap();
    let mut cur = Cursor::new(part);
    let fs = fatfs::FileSystem::new(&mut cur, fatfs::FsOptions::new()).unwrap();
    let mut file = fs.root_dir().open_file(path).ok()?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Run QEMU (`cmd` with stdout piped) until a console line contains `done`, at most
/// `limit`; then stop it. Returns the console. Set BALLAST_SHOW_CONSOLE to print it.
pub fn run_qemu(mut cmd: Command, done: &str, limit: Duration) -> String {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start QEMU");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut console = String::new();
    let mut found = false;
    while start.elapsed() < limit && !found {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                found = line.contains(done);
                console.push_str(&line.replace('\r', ""));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("QEMU run took {:.1} s", start.elapsed().as_secs_f64());
    if std::env::var_os("BALLAST_SHOW_CONSOLE").is_some() {
        eprintln!("{console}");
    }
    assert!(
        found,
        "`{done}` not seen on the console within {limit:?}; console:\n{console}"
    );
    console
}

/// A fixed, *valid* time stamp for files written with fatfs. Without the `chrono`
/// feature fatfs stamps files with DOS date 0 (month 0, day 0), which EDK2's FAT
/// driver (OVMF) refuses in SetInfo: systemd-boot then fails to rename the entry
/// ("Failed to rename ... Invalid Parameter") and boot counting silently stops.
#[derive(Debug)]
pub struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 2024,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

pub fn fat_options() -> fatfs::FsOptions {
    fatfs::FsOptions::new().time_provider(&FIXED_TIME)
}

/// Copy the whole FAT partition of `disk` into the directory `dst`.
pub fn extract(disk: &Path, dst: &Path) {
    let mut f = std::fs::File::open(disk).unwrap();
    let mut part = vec![0u8; PART_SIZE as usize];
    f.seek(SeekFrom::Start(PART_START)).unwrap();
    f.read_exact(&mut part).unwrap();
    let mut cur = Cursor::new(part);
    let fs = fatfs::FileSystem::new(&mut cur, fatfs::FsOptions::new()).unwrap();
    extract_dir(&fs.root_dir(), dst);
}

fn extract_dir<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<T>, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in dir.iter() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "." || name == ".." {
            continue;
        }
        if e.is_dir() {
            extract_dir(&e.to_dir(), &dst.join(&name));
        } else {
            let mut out = Vec::new();
            e.to_file().read_to_end(&mut out).unwrap();
            std::fs::write(dst.join(&name), out).unwrap();
        }
    }
}
