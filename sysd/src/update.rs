//! Updates on the device: install a signed bundle into the inactive slot, make the
//! rollback decision visible, and keep the records `osctl status` shows.
//!
//! The bundle format belongs to `ballast-bundle`, the slot state and the install
//! verbs to `ballast-slot` ([`ballast_slot::install`]); this module verifies, streams
//! and commits, in the order that makes an update safe:
//!
//! 1. Read the manifest and verify its signature against the keys baked into the
//!    image (`/usr/lib/ballast/keys/*.pub`) and check arch, board, version and
//!    rollback index — before anything is written.
//! 2. Invalidate the inactive slot: its kernel is removed from the boot partition
//!    (systemd-boot drops an entry whose kernel is missing) and, on U-Boot boards, its
//!    state is marked bad. From here on, a power cut leaves the active slot the only
//!    bootable one.
//! 3. Stream the root payload into the inactive root partition (opened `O_EXCL`, which
//!    the kernel refuses for a partition in use, e.g. the active root under dm-verity)
//!    while hashing; then the kernel and initrd into `*.tmp` files. Any size or hash
//!    difference stops here, with the slot still invalid.
//! 4. fsync everything, rename kernel and initrd into place, and only then write the
//!    slot's boot entry with N tries as the default (one atomic rename / state copy).
//! 5. Record the pending update on the state partition, for the rollback report.
//!
//! The active slot is never opened for writing.
//!
//! A delta (told from a bundle by its first bytes, never by its name) goes the
//! same way, except that step 1 also checks the delta was made for the running
//! root (its `ballast.verity=` against the booted command line), and step 3
//! makes each new file from the running slot's one of the same kind, read-only,
//! and checks its size and SHA-256 against the signed new ones.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ballast_bundle::{BundleError, DeltaReader, Manifest, PayloadName, PublicKey, Reader};
use ballast_control::{PendingUpdate, Rollback};
use ballast_device::{paths, AtomicError, Cmdline, OsRelease, OsReleaseError};
use ballast_slot::install::Staged;
use ballast_slot::{boot_files, Health, SlotError, SlotId, SlotStatus};
use serde::{de::DeserializeOwned, Serialize};

use crate::slot::{Boot, BootError};

/// Why an update was refused or did not complete; the machine boots what it boots now.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("no trusted update keys in {}: this image cannot verify any bundle (build it with `ballast build`, which bakes the signing key's public half in)", paths::KEYS_DIR)]
    NoKeys,
    #[error("the booted slot is unknown (no ballast.slot= on the kernel command line)")]
    NoBootedSlot,
    #[error("this machine runs live from its medium (ballast.live=): there are no slots to upgrade or roll back; install Ballast to a disk first (osctl install DEVICE), then update the installed system")]
    Live,
    #[error("the running slot {slot} ({version}) is still on probation: wait until it is marked good (`ballast-ready`, osctl status) before installing another update")]
    OnProbation { slot: SlotId, version: String },
    #[error("bundle refused: {0}")]
    Refused(#[source] BundleError),
    #[error("bundle refused: it has no `{name}` payload (payloads: {present})")]
    MissingPayload { name: PayloadName, present: String },
    #[error("bundle refused: unknown payload `{0}` (this sysd knows root, kernel, initrd)")]
    UnknownPayload(String),
    #[error("bundle refused: its root image ({size} bytes) does not fit slot {slot}'s partition {} ({room} bytes)", device.display())]
    TooBig {
        size: u64,
        slot: SlotId,
        device: PathBuf,
        room: u64,
    },
    #[error("bundle refused: it ended before payload `{0}`")]
    EndedBefore(PayloadName),
    #[error("bundle refused while writing `{name}`: {source}")]
    Payload {
        name: PayloadName,
        #[source]
        source: BundleError,
    },
    /// Reading the trusted keys.
    #[error(transparent)]
    Keys(BundleError),
    /// os-release does not say what this machine is.
    #[error(transparent)]
    Identity(#[from] OsReleaseError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not mounted: cannot find the boot disk")]
    BootNotMounted(String),
    #[error("{} has no parent disk", .0.display())]
    NoParentDisk(PathBuf),
    #[error("disk {} has no partition {index} (slot {slot}'s root)", disk.display())]
    NoPartition {
        disk: PathBuf,
        index: u32,
        slot: SlotId,
    },
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("cannot {action}: {source}")]
    Slot {
        action: String,
        #[source]
        source: SlotError,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
}

fn io(action: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> UpdateError {
    let (action, path) = (action.into(), path.to_path_buf());
    move |source| UpdateError::Io {
        action,
        path,
        source,
    }
}

/// A record on the state partition could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// Tries a freshly installed slot gets.
pub const TRIES: u32 = boot_files::DEFAULT_TRIES;

/// Records kept on the state partition (`/state/ballast/update/`).
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

/// Why the last probation boot gave up, written just before the health reboot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthFailure {
    pub version: String,
    pub slot: SlotId,
    pub reason: String,
    pub at: u64,
}

impl Records {
    pub fn new(dir: impl Into<PathBuf>) -> Records {
        Records { dir: dir.into() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn pending(&self) -> Option<PendingUpdate> {
        read_json(&self.path("pending.json"))
    }
    pub fn set_pending(&self, p: Option<&PendingUpdate>) -> Result<(), RecordError> {
        write_json(&self.path("pending.json"), p)
    }
    pub fn last_rollback(&self) -> Option<Rollback> {
        read_json(&self.path("rollback.json"))
    }
    pub fn set_last_rollback(&self, r: &Rollback) -> Result<(), RecordError> {
        write_json(&self.path("rollback.json"), Some(r))
    }
    pub fn health_failure(&self) -> Option<HealthFailure> {
        read_json(&self.path("health.json"))
    }
    pub fn set_health_failure(&self, h: Option<&HealthFailure>) -> Result<(), RecordError> {
        write_json(&self.path("health.json"), h)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The device contract's atomic replace; `None` removes the file.
fn write_json<T: Serialize>(path: &Path, value: Option<&T>) -> Result<(), RecordError> {
    let Some(value) = value else {
        return match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecordError::Remove {
                path: path.to_path_buf(),
                source,
            }),
        };
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RecordError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ballast_device::write_atomic(path, &bytes)?)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What this machine is, from os-release and the kernel command line.
#[derive(Debug, Clone)]
pub struct Identity {
    pub os: OsRelease,
    /// `ballast.disk=GUID` as booted: the disk stays the same across updates.
    pub disk: Option<String>,
    /// `ballast.verity=` as booted: names the running root, for deltas.
    pub verity: Option<String>,
}

impl Identity {
    /// os-release must name every field: a machine that does not know its arch or
    /// board cannot tell which bundles fit it.
    pub fn read(os_release: &Path, cmdline: &Cmdline) -> Result<Identity, OsReleaseError> {
        Ok(Identity {
            os: OsRelease::read(os_release)?,
            disk: cmdline.disk().map(str::to_string),
            verity: cmdline.verity().map(str::to_string),
        })
    }

    fn version(&self) -> &str {
        self.os.version.as_str()
    }
}

/// Everything an install needs to know about the machine.
pub struct Target<'a> {
    pub boot: &'a Boot,
    /// The inactive slot's root partition (a regular file in tests).
    pub root_device: PathBuf,
    pub booted: SlotId,
    pub identity: &'a Identity,
    pub keys: &'a [PublicKey],
    pub records: &'a Records,
    /// The running slot's files, the base a delta is applied to (only read).
    pub running: Running,
}

/// The running slot's root partition, kernel and initrd.
#[derive(Debug, Clone)]
pub struct Running {
    pub root: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl Running {
    /// The booted slot's files on this machine's boot disk.
    pub fn of(boot_dir: &Path, booted: SlotId) -> Result<Running, UpdateError> {
        Ok(Running {
            root: slot_device(boot_dir, booted)?,
            kernel: boot_dir.join(boot_files::kernel(booted)),
            initrd: boot_dir.join(boot_files::initrd(booted)),
        })
    }

    fn path(&self, name: PayloadName) -> &Path {
        match name {
            PayloadName::Root => &self.root,
            PayloadName::Kernel => &self.kernel,
            PayloadName::Initrd => &self.initrd,
        }
    }
}

/// One progress report: phase, bytes done, bytes in all.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Install the bundle read from `input` into the slot that is not booted. On success
/// the next boot tries the new version; on any error the machine boots what it boots
/// now.
pub fn install(
    t: &Target<'_>,
    input: &mut dyn Read,
    allow_downgrade: bool,
    progress: Progress<'_>,
) -> Result<Manifest, UpdateError> {
    let target = t.booted.other();
    if t.keys.is_empty() {
        return Err(UpdateError::NoKeys);
    }
    let slots = t.boot.status()?;
    if let Some(me) = slots.iter().find(|s| s.slot == t.booted) {
        if me.health != Health::Good {
            return Err(UpdateError::OnProbation {
                slot: t.booted,
                version: t.identity.version().to_string(),
            });
        }
    }

    progress("verify", 0, 0);
    // A delta or a bundle: told by the first bytes, which are then read again.
    let mut head = [0u8; 16];
    let got = read_head(input, &mut head)?;
    let mut input = std::io::Read::chain(&head[..got], input);
    if ballast_bundle::is_delta(&head[..got]) {
        return install_delta(t, &mut input, allow_downgrade, progress);
    }
    let mut reader = Reader::open(&mut input, t.keys).map_err(UpdateError::Refused)?;
    // The root is checked by its stored frame's SHA-256 (signed) and its size
    // while it streams, and by dm-verity on every read once it boots: a second
    // SHA-256 pass over the decompressed bytes would only slow the write.
    reader.check_stored_hash_only(&[PayloadName::Root]);
    let m = reader.manifest().clone();
    let os = &t.identity.os;
    ballast_bundle::check_compatible(
        &m,
        os.arch.as_str(),
        &os.board,
        os.version.as_str(),
        os.rollback_index,
        allow_downgrade,
    )
    .map_err(UpdateError::Refused)?;
    for name in PayloadName::ALL {
        if m.payload(name).is_none() {
            return Err(UpdateError::MissingPayload {
                name,
                present: m
                    .payloads
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    check_fits(t, &m)?;

    // From here on the inactive slot is invalid until its entry is written again.
    let staged = t
        .boot
        .partition()
        .prepare_inactive(target)
        .map_err(|source| UpdateError::Slot {
            action: format!("invalidate slot {target}"),
            source,
        })?;
    let payloads = m.payloads.clone();
    let written = (|| {
        for p in &payloads {
            let name = p
                .kind()
                .ok_or_else(|| UpdateError::UnknownPayload(p.name.clone()))?;
            let total = p.size;
            progress(&p.name, 0, total);
            let mut report = |done: u64| progress(&p.name, done, total);
            write_payload(t, &staged, name, total, |w| {
                copy_payload(&mut reader, w, &mut report, name)
            })?;
        }
        Ok(())
    })();
    let staged = discard_on_error(t, staged, written)?;
    activate(t, staged, &m, progress)?;
    Ok(m)
}

/// The first bytes of `input` (fewer only when it ends first).
fn read_head(input: &mut dyn Read, head: &mut [u8]) -> Result<usize, UpdateError> {
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UpdateError::Refused(BundleError::Read(e))),
        }
    }
    Ok(got)
}

fn check_fits(t: &Target<'_>, m: &Manifest) -> Result<(), UpdateError> {
    let root_size = m.payload(PayloadName::Root).map_or(0, |p| p.size);
    let dev_size = device_size(&t.root_device)?;
    if root_size > dev_size {
        return Err(UpdateError::TooBig {
            size: root_size,
            slot: t.booted.other(),
            device: t.root_device.clone(),
            room: dev_size,
        });
    }
    Ok(())
}

/// Step 1 to 5 for a delta: the new files are made from the running slot's.
fn install_delta(
    t: &Target<'_>,
    input: &mut dyn Read,
    allow_downgrade: bool,
    progress: Progress<'_>,
) -> Result<Manifest, UpdateError> {
    let target = t.booted.other();
    let mut reader = DeltaReader::open(input, t.keys).map_err(UpdateError::Refused)?;
    let m = reader.manifest().target.clone();
    // The base first: a delta for another root is refused as that, whatever
    // else it says.
    reader
        .check_base(t.identity.version(), t.identity.verity.as_deref())
        .map_err(UpdateError::Refused)?;
    let os = &t.identity.os;
    ballast_bundle::check_compatible(
        &m,
        os.arch.as_str(),
        &os.board,
        os.version.as_str(),
        os.rollback_index,
        allow_downgrade,
    )
    .map_err(UpdateError::Refused)?;
    check_fits(t, &m)?;
    // The running slot's files, opened read-only before anything is written.
    let mut bases = Vec::new();
    for name in PayloadName::ALL {
        let path = t.running.path(name);
        let f = File::open(path).map_err(io(format!("open the running slot's {name}"), path))?;
        bases.push((name, f));
    }

    // From here on the inactive slot is invalid until its entry is written again.
    let staged = t
        .boot
        .partition()
        .prepare_inactive(target)
        .map_err(|source| UpdateError::Slot {
            action: format!("invalidate slot {target}"),
            source,
        })?;
    let written = (|| {
        while let Some(name) = reader.next_payload() {
            let base = bases
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| f)
                .ok_or_else(|| UpdateError::UnknownPayload(name.to_string()))?;
            let total = m.payload(name).map_or(0, |p| p.size);
            progress(name.as_str(), 0, total);
            let mut report = |done: u64| progress(name.as_str(), done, total);
            write_payload(t, &staged, name, total, |w| {
                reader
                    .apply_next(base, w, &mut report)
                    .map(drop)
                    .map_err(|source| UpdateError::Payload { name, source })
            })?;
        }
        // The delta must end after its last payload.
        reader
            .apply_next(&bases[0].1, &mut std::io::sink(), &mut |_| {})
            .map_err(UpdateError::Refused)
    })();
    let staged = discard_on_error(t, staged, written.map(drop))?;
    activate(t, staged, &m, progress)?;
    Ok(m)
}

/// Streams one payload through `fill` to where it goes in the inactive slot: the
/// root to its partition (opened `O_EXCL`, written by a thread of its own beside
/// the decompression), the kernel and initrd to their staged files; then syncs it.
/// `size` is the payload's size from the signed manifest.
fn write_payload(
    t: &Target<'_>,
    staged: &Staged,
    name: PayloadName,
    size: u64,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), UpdateError>,
) -> Result<(), UpdateError> {
    let target = staged.slot;
    match name {
        PayloadName::Root => {
            let dev = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_EXCL)
                .open(&t.root_device)
                .map_err(io(
                    format!("open for writing slot {target}'s root partition"),
                    &t.root_device,
                ))?;
            let mut w = WriterThread::new(dev);
            let filled = fill(&mut w);
            let dev = w.finish().map_err(io("write", &t.root_device))?;
            filled?;
            dev.sync_all().map_err(io("fsync", &t.root_device))
        }
        PayloadName::Kernel | PayloadName::Initrd => {
            let tmp = if name == PayloadName::Kernel {
                &staged.kernel
            } else {
                &staged.initrd
            };
            let f = File::create(tmp).map_err(io("create", tmp))?;
            // The file's whole cluster chain first, made durable, then the bytes:
            // on vfat a power cut mid-write then finds the directory entry's size
            // inside a chain the FAT holds, never past its end (which makes Linux
            // set the partition read-only when the file is next truncated). Where
            // preallocation is not supported the write goes on without it.
            let keep = rustix::fs::FallocateFlags::KEEP_SIZE;
            if size > 0 && rustix::fs::fallocate(&f, keep, 0, size).is_ok() {
                f.sync_all().map_err(io("fsync", tmp))?;
            }
            let mut w = BufWriter::with_capacity(1 << 20, f);
            fill(&mut w)?;
            let f = w
                .into_inner()
                .map_err(|e| io("write", tmp)(e.into_error()))?;
            f.sync_all().map_err(io("fsync", tmp))
        }
    }
}

/// A slot write that failed leaves no half-written staged file behind (see
/// [`ballast_slot::install::BootPartition::discard`]); the write's own error is
/// the one reported.
fn discard_on_error(
    t: &Target<'_>,
    staged: Staged,
    written: Result<(), UpdateError>,
) -> Result<Staged, UpdateError> {
    match written {
        Ok(()) => Ok(staged),
        Err(e) => {
            if let Err(d) = t.boot.partition().discard(staged) {
                eprintln!("sysd: update: after the failed write, {d}");
            }
            Err(e)
        }
    }
}

/// Step 4 and 5: the slot's boot entry with N tries as the default, then the record.
fn activate(
    t: &Target<'_>,
    staged: Staged,
    m: &Manifest,
    progress: Progress<'_>,
) -> Result<(), UpdateError> {
    let target = t.booted.other();
    progress("activate", 0, 0);
    let mut options = m.cmdline.trim().to_string();
    if let Some(d) = &t.identity.disk {
        options.push_str(&format!(" {}={d}", ballast_device::cmdline::keys::DISK));
    }
    t.boot
        .partition()
        .commit_install(staged, &m.version, &options, TRIES)
        .map_err(|source| UpdateError::Slot {
            action: format!("install slot {target}'s boot entry"),
            source,
        })?;
    t.records.set_pending(Some(&PendingUpdate {
        from_version: t.identity.version().to_string(),
        from_slot: t.booted,
        to_version: m.version.clone(),
        to_slot: target,
        at: now_unix(),
    }))?;
    Ok(())
}

/// A `Write` whose bytes are written to `file` by another thread, in 1 MiB chunks
/// through a short queue: the caller's work and the device writes overlap.
struct WriterThread {
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Written chunks come back to be filled again: a fresh 1 MiB buffer per
    /// chunk is a new mapping to fault in and unmap, which costs more than the copy.
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<std::io::Result<File>>>,
}

const CHUNK: usize = 1 << 20;

impl WriterThread {
    fn new(mut file: File) -> WriterThread {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            for mut chunk in rx {
                file.write_all(&chunk)?;
                chunk.clear();
                let _ = back_tx.send(chunk);
            }
            Ok(file)
        });
        WriterThread {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            back,
            handle: Some(handle),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.buf, next);
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            // The writer thread stopped: its error comes out of `finish`.
            _ => Err(std::io::Error::other("the device writer stopped")),
        }
    }

    /// Write what is left, stop the thread and return the file or its first error.
    fn finish(mut self) -> std::io::Result<File> {
        let sent = self.send();
        self.tx = None;
        let file = match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(std::io::Error::other("the device writer thread panicked")),
        }?;
        sent.map(|()| file)
    }
}

impl Write for WriterThread {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn copy_payload<R: Read>(
    reader: &mut Reader<R>,
    out: &mut dyn Write,
    report: &mut dyn FnMut(u64),
    name: PayloadName,
) -> Result<(), UpdateError> {
    match reader.copy_next(out, report) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(UpdateError::EndedBefore(name)),
        Err(source) => Err(UpdateError::Payload { name, source }),
    }
}

fn device_size(path: &Path) -> Result<u64, UpdateError> {
    let mut f = File::open(path).map_err(io("open", path))?;
    f.seek(SeekFrom::End(0)).map_err(io("size", path))
}

/// The partition device of `slot`'s root: the disk that holds the mounted boot
/// partition, partition number 2 or 3 (`/sys/dev/block/MAJ:MIN` → its disk → the
/// partition whose `partition` file holds the number).
pub fn slot_device(boot_dir: &Path, slot: SlotId) -> Result<PathBuf, UpdateError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let want = boot_dir.to_string_lossy();
    let majmin = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && f[4] == want).then(|| f[2].to_string())
        })
        .next_back()
        .ok_or_else(|| UpdateError::BootNotMounted(want.to_string()))?;
    let sys_dev = PathBuf::from(format!("/sys/dev/block/{majmin}"));
    let part = fs::canonicalize(&sys_dev).map_err(io("resolve", &sys_dev))?;
    let disk = part
        .parent()
        .ok_or_else(|| UpdateError::NoParentDisk(part.clone()))?;
    let want_index = slot.partition_index().to_string();
    let entries = fs::read_dir(disk).map_err(io("list", disk))?;
    for e in entries.flatten() {
        let idx = fs::read_to_string(e.path().join("partition")).unwrap_or_default();
        if idx.trim() == want_index {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    Err(UpdateError::NoPartition {
        disk: disk.to_path_buf(),
        index: slot.partition_index(),
        slot,
    })
}

/// At sysd's start: when an installed update was not kept (the bootloader booted the
/// previous slot because the new one spent its tries), record and return the
/// rollback. The caller prints `ballast-rollback ...`.
pub fn reconcile(
    records: &Records,
    booted: SlotId,
    version: &str,
    slots: &[SlotStatus],
) -> Option<Rollback> {
    let pending = records.pending()?;
    if booted == pending.to_slot {
        return None; // on probation, or already good: the ready path clears it
    }
    let to_slot = slots.iter().find(|s| s.slot == pending.to_slot);
    if let Some(s) = to_slot {
        if s.health.is_bootable() && s.is_default {
            // Not tried yet (installed, then rebooted before the bootloader got to
            // it?) — leave it pending.
            return None;
        }
    }
    let reason = match records.health_failure() {
        Some(h) if h.version == pending.to_version => h.reason,
        _ => format!(
            "slot {} ({}) spent its {TRIES} tries without passing the health check (kernel, init or sysd did not come up)",
            pending.to_slot, pending.to_version
        ),
    };
    let rb = Rollback {
        from: pending.to_version.clone(),
        to: version.to_string(),
        reason,
        automatic: true,
        at: now_unix(),
    };
    let _ = records.set_last_rollback(&rb);
    let _ = records.set_pending(None);
    let _ = records.set_health_failure(None);
    Some(rb)
}

/// One line for the console: `ballast-rollback from=V1 to=V2 reason=TEXT`.
pub fn rollback_line(rb: &Rollback) -> String {
    let reason: String = rb
        .reason
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    format!(
        "ballast-rollback from={} to={} reason={reason}",
        rb.from, rb.to
    )
}

/// `ballast.health_timeout=SECS` from the kernel command line (default 300 s, also
/// for a value that is not a number above 0): how long a slot on probation may take
/// to pass the health check before sysd gives up and reboots, so the bootloader counts
/// the try.
pub fn health_timeout(cmdline: &Cmdline) -> std::time::Duration {
    cmdline
        .health_timeout()
        .ok()
        .flatten()
        .unwrap_or(std::time::Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        boot_dir: PathBuf,
        device: PathBuf,
        /// The running slot A's root partition.
        running_root: PathBuf,
        records: Records,
        signer: ballast_bundle::Signer,
        identity: Identity,
        root: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let boot_dir = dir.path().join("boot");
        let esp = ballast_slot::bls::Esp::new(&boot_dir);
        fs::create_dir_all(boot_dir.join("loader/entries")).unwrap();
        esp.write_loader_conf().unwrap();
        fs::create_dir_all(boot_dir.join("ballast/a")).unwrap();
        fs::write(boot_dir.join("ballast/a/vmlinuz"), b"old kernel").unwrap();
        fs::write(boot_dir.join("ballast/a/initrd.img"), b"old initrd").unwrap();
        esp.write_entry(
            &ballast_slot::bls::Entry::new(SlotId::A, "0.1.0", "ballast.disk=X"),
            None,
        )
        .unwrap();
        let device = dir.path().join("root-b");
        fs::write(&device, vec![0u8; 4 << 20]).unwrap();
        let root: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let running_root = dir.path().join("root-a");
        fs::write(&running_root, &root).unwrap();
        Fixture {
            boot_dir,
            device,
            running_root,
            records: Records::new(dir.path().join("records")),
            signer: ballast_bundle::Signer::from_seed(&[7; 32]),
            identity: Identity {
                os: OsRelease {
                    version: ballast_device::os_release::Version::parse("0.1.0").unwrap(),
                    arch: ballast_device::os_release::Arch::Arm64,
                    board: "qemu-arm64".into(),
                    rollback_index: 0,
                },
                disk: Some("GUID".into()),
                verity: Some("H".into()),
            },
            root,
            _dir: dir,
        }
    }

    fn bundle(f: &Fixture, version: &str, signer: &ballast_bundle::Signer) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let (root, kernel, initrd) = (
            d.path().join("root"),
            d.path().join("kernel"),
            d.path().join("initrd"),
        );
        fs::write(&root, &f.root).unwrap();
        fs::write(&kernel, format!("kernel {version}")).unwrap();
        fs::write(&initrd, format!("initrd {version}")).unwrap();
        let out = d.path().join("b.bundle");
        let base = Manifest {
            format: ballast_bundle::FORMAT,
            os: ballast_bundle::OS.into(),
            version: version.into(),
            arch: "arm64".into(),
            boards: vec!["qemu-arm64".into()],
            build_time: 1,
            rollback_index: 0,
            key_id: String::new(),
            cmdline: "console=ttyAMA0 ballast.verity=H".into(),
            payloads: vec![],
        };
        let inputs = [
            ballast_bundle::Input {
                name: PayloadName::Root,
                path: &root,
            },
            ballast_bundle::Input {
                name: PayloadName::Kernel,
                path: &kernel,
            },
            ballast_bundle::Input {
                name: PayloadName::Initrd,
                path: &initrd,
            },
        ];
        ballast_bundle::write(&out, base, &inputs, signer).unwrap();
        fs::read(&out).unwrap()
    }

    fn try_install(
        f: &Fixture,
        bytes: &[u8],
        allow_downgrade: bool,
    ) -> Result<Manifest, UpdateError> {
        let boot = Boot::open(&f.boot_dir, false).unwrap();
        let keys = [f.signer.public()];
        let t = Target {
            boot: &boot,
            root_device: f.device.clone(),
            booted: SlotId::A,
            identity: &f.identity,
            keys: &keys,
            records: &f.records,
            running: Running {
                root: f.running_root.clone(),
                kernel: f.boot_dir.join("ballast/a/vmlinuz"),
                initrd: f.boot_dir.join("ballast/a/initrd.img"),
            },
        };
        install(&t, &mut &bytes[..], allow_downgrade, &mut |_, _, _| {})
    }

    /// A delta from the 0.1.0 bundle (the fixture's root) to `version` whose
    /// root has a changed middle.
    fn delta(f: &Fixture, version: &str, signer: &ballast_bundle::Signer) -> (Vec<u8>, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("old.bundle");
        fs::write(&old, bundle(f, "0.1.0", signer)).unwrap();
        let mut changed = f.root.clone();
        changed[300_000..300_100].fill(0x55);
        let g = Fixture {
            _dir: tempfile::tempdir().unwrap(),
            boot_dir: f.boot_dir.clone(),
            device: f.device.clone(),
            running_root: f.running_root.clone(),
            records: f.records.clone(),
            signer: ballast_bundle::Signer::from_seed(&[7; 32]),
            identity: f.identity.clone(),
            root: changed.clone(),
        };
        let new = d.path().join("new.bundle");
        fs::write(&new, bundle(&g, version, signer)).unwrap();
        let out = d.path().join("x.delta");
        ballast_bundle::delta::write(&out, &old, &new, signer, &[signer.public()]).unwrap();
        (fs::read(&out).unwrap(), changed)
    }

    #[test]
    fn a_delta_installs_the_new_root_from_the_running_one() {
        let f = fixture();
        let (bytes, new_root) = delta(&f, "0.2.0", &f.signer);
        assert!(bytes.len() < 20_000, "{}", bytes.len());
        let m = try_install(&f, &bytes, false).unwrap();
        assert_eq!(m.version, "0.2.0");
        let dev = fs::read(&f.device).unwrap();
        assert_eq!(&dev[..new_root.len()], &new_root[..]);
        assert_eq!(
            fs::read(f.boot_dir.join("ballast/b/vmlinuz")).unwrap(),
            b"kernel 0.2.0"
        );
        let st = slot_b(&f);
        assert!(
            st.is_default && st.version.as_deref() == Some("0.2.0"),
            "{st:?}"
        );
        // The running slot was only read.
        assert_eq!(fs::read(&f.running_root).unwrap(), f.root);
    }

    #[test]
    fn refused_deltas_leave_the_active_slot_the_default() {
        let f = fixture();
        let (good, _) = delta(&f, "0.2.0", &f.signer);
        let n = good.len();
        let mut cases: Vec<(&str, Vec<u8>, Fixture)> = Vec::new();
        let mut tampered = good.clone();
        tampered[n - 30] ^= 0x40;
        cases.push(("tampered", tampered, fixture()));
        cases.push(("truncated", good[..n - 100].to_vec(), fixture()));
        let mut other_base = fixture();
        other_base.identity.verity = Some("OTHER".into());
        cases.push(("another base", good.clone(), other_base));
        let corrupt_running = fixture();
        let mut bad = f.root.clone();
        bad[10] ^= 1;
        fs::write(&corrupt_running.running_root, bad).unwrap();
        cases.push(("result mismatch", good.clone(), corrupt_running));
        for (what, bytes, g) in cases {
            let e = try_install(&g, &bytes, false).unwrap_err().to_string();
            assert!(e.contains("refused"), "{what}: {e}");
            let b = slot_b(&g);
            assert!(!b.is_default && b.health == Health::Bad, "{what}: {b:?}");
            assert!(g.records.pending().is_none(), "{what}");
            assert_eq!(
                fs::read(g.boot_dir.join("ballast/a/vmlinuz")).unwrap(),
                b"old kernel",
                "{what}"
            );
            assert_no_staged_files(&g, what);
        }
    }

    /// A refused write leaves nothing half-written on the boot partition (on vfat a
    /// power cut could turn such a file into a broken cluster chain).
    fn assert_no_staged_files(f: &Fixture, what: &str) {
        let left: Vec<_> = fs::read_dir(f.boot_dir.join("ballast/b"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: left {left:?}");
    }

    fn slot_b(f: &Fixture) -> SlotStatus {
        let boot = Boot::open(&f.boot_dir, false).unwrap();
        boot.status()
            .unwrap()
            .into_iter()
            .find(|s| s.slot == SlotId::B)
            .unwrap()
    }

    #[test]
    fn install_writes_the_inactive_slot_and_makes_it_the_default_on_probation() {
        let f = fixture();
        let b = bundle(&f, "0.2.0", &f.signer);
        let m = try_install(&f, &b, false).unwrap();
        assert_eq!(m.version, "0.2.0");
        let dev = fs::read(&f.device).unwrap();
        assert_eq!(&dev[..f.root.len()], &f.root[..]);
        assert_eq!(
            fs::read(f.boot_dir.join("ballast/b/vmlinuz")).unwrap(),
            b"kernel 0.2.0"
        );
        let st = slot_b(&f);
        assert_eq!(st.version.as_deref(), Some("0.2.0"));
        assert!(st.is_default);
        assert!(
            matches!(st.health, Health::Trying { tries_left: 3, .. }),
            "{st:?}"
        );
        let entries: Vec<String> = fs::read_dir(f.boot_dir.join("loader/entries"))
            .unwrap()
            .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(
            entries
                .iter()
                .any(|e| e.contains("ballast.verity=H ballast.disk=GUID ballast.slot=b")),
            "{entries:?}"
        );
        let p = f.records.pending().unwrap();
        assert_eq!((p.to_version.as_str(), p.to_slot), ("0.2.0", SlotId::B));
        // The old slot's files are untouched.
        assert_eq!(
            fs::read(f.boot_dir.join("ballast/a/vmlinuz")).unwrap(),
            b"old kernel"
        );
    }

    #[test]
    fn refused_bundles_leave_the_active_slot_the_default() {
        let f = fixture();
        let good = bundle(&f, "0.2.0", &f.signer);
        let n = good.len();
        let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
        let mut payload = good.clone();
        payload[n - 3] ^= 0x40;
        cases.push(("flipped payload byte", payload, "refused"));
        let mut manifest = good.clone();
        manifest[40] ^= 0x01;
        cases.push(("flipped manifest byte", manifest, "refused"));
        cases.push(("truncated", good[..n / 2].to_vec(), "refused"));
        let stranger = ballast_bundle::Signer::from_seed(&[9; 32]);
        cases.push(("unknown key", bundle(&f, "0.2.0", &stranger), "refused"));
        cases.push(("downgrade", bundle(&f, "0.0.9", &f.signer), "refused"));
        for (what, bytes, needle) in cases {
            let e = try_install(&f, &bytes, false).unwrap_err().to_string();
            assert!(e.contains(needle), "{what}: {e}");
            let b = slot_b(&f);
            assert!(!b.is_default && b.health == Health::Bad, "{what}: {b:?}");
            let boot = Boot::open(&f.boot_dir, false).unwrap();
            let a = boot
                .status()
                .unwrap()
                .into_iter()
                .find(|s| s.slot == SlotId::A)
                .unwrap();
            assert!(a.is_default && a.health == Health::Good, "{what}: {a:?}");
            assert!(f.records.pending().is_none(), "{what}");
            assert_no_staged_files(&f, what);
        }
        // The downgrade goes in when asked for.
        assert!(try_install(&f, &bundle(&f, "0.0.9", &f.signer), true).is_ok());
    }

    #[test]
    fn health_timeout_from_cmdline() {
        let secs = |text: &str| health_timeout(&Cmdline::parse(text)).as_secs();
        assert_eq!(secs("quiet"), 300);
        assert_eq!(secs("a ballast.health_timeout=20 b"), 20);
        assert_eq!(secs("ballast.health_timeout=x"), 300);
    }

    #[test]
    fn rollback_is_reported_once_with_the_recorded_reason() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::new(d.path());
        r.set_pending(Some(&PendingUpdate {
            from_version: "0.1.0".into(),
            from_slot: SlotId::A,
            to_version: "0.3.0".into(),
            to_slot: SlotId::B,
            at: 1,
        }))
        .unwrap();
        r.set_health_failure(Some(&HealthFailure {
            version: "0.3.0".into(),
            slot: SlotId::B,
            reason: "required service broken not healthy".into(),
            at: 2,
        }))
        .unwrap();
        let slots = vec![
            SlotStatus {
                slot: SlotId::A,
                version: Some("0.1.0".into()),
                health: Health::Good,
                is_default: true,
            },
            SlotStatus {
                slot: SlotId::B,
                version: Some("0.3.0".into()),
                health: Health::Bad,
                is_default: false,
            },
        ];
        // Booted the new slot: nothing to report.
        assert!(reconcile(&r, SlotId::B, "0.3.0", &slots).is_none());
        let rb = reconcile(&r, SlotId::A, "0.1.0", &slots).unwrap();
        assert_eq!(
            rollback_line(&rb),
            "ballast-rollback from=0.3.0 to=0.1.0 reason=required service broken not healthy"
        );
        assert_eq!(r.last_rollback().unwrap(), rb);
        assert!(r.pending().is_none());
        assert!(reconcile(&r, SlotId::A, "0.1.0", &slots).is_none());
    }
}
