//! A recording [`Sys`] for unit tests: an in-memory file table, scripted
//! failures, and a log of every action in order.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;

use crate::dm;
use crate::sys::{ModuleError, MountSpec, PartInfo, PartTable, Shutdown, Sys};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Console(String),
    Mkdir(String),
    Mount { fstype: String, target: String },
    Module(String),
    Sync,
    Reboot(Shutdown),
    Mknod(String),
    Dm(dm::Command),
    Grow(String),
    Blkpg { index: u32, start: u64, length: u64 },
    Ext4Resize(u64),
    Bind { from: String, to: String },
    Move { from: String, to: String },
    RemountRo(String),
    Unmount(String),
    Chdir(String),
    Chroot(String),
    FreeInitramfs,
    Exec(Vec<String>),
    Append { path: String, text: String },
}

#[derive(Debug, Default)]
pub struct TestSys {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub mounted: BTreeSet<String>,
    pub mount_errors: BTreeMap<String, Errno>,
    pub module_errors: BTreeMap<PathBuf, ModuleError>,
    pub release: String,
    pub actions: Vec<Action>,
    pub clock_us: std::cell::Cell<u64>,
    /// `/sys/block` names and when (µs of test clock) each appears.
    pub block_devices: Vec<(String, u64)>,
    pub tables: BTreeMap<PathBuf, PartTable>,
    pub nodes: BTreeSet<PathBuf>,
    pub dm_errors: BTreeMap<dm::Command, Errno>,
    /// What `grow_last_partition` returns; `Ok(None)` when unset.
    pub grow: Option<Result<Option<PartInfo>, String>>,
    pub sizes: BTreeMap<PathBuf, u64>,
    /// Failures of the other calls, by method name (`"blkpg_resize"`, ...).
    pub fail: BTreeMap<&'static str, Errno>,
}

impl TestSys {
    /// A machine as the builder's initramfs leaves it, booted with `cmdline`.
    pub fn booted_with(cmdline: &str) -> TestSys {
        let mut sys = TestSys {
            release: "6.1.0-28-amd64".to_string(),
            ..TestSys::default()
        };
        sys.file("/usr/lib/os-release", "ID=ballast\nVERSION_ID=0.1.0\n");
        sys.file("/proc/cmdline", &format!("{cmdline}\n"));
        sys
    }

    pub fn file(&mut self, path: &str, text: &str) {
        self.files
            .insert(PathBuf::from(path), text.as_bytes().to_vec());
    }

    fn failing(&self, method: &'static str) -> Result<(), Errno> {
        self.fail.get(method).map_or(Ok(()), |e| Err(*e))
    }

    pub fn console(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Console(l) => Some(l.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Console lines without the `[ time] ballast-init: ` stamp.
    pub fn messages(&self) -> Vec<&str> {
        self.console()
            .into_iter()
            .map(|l| l.split_once("ballast-init: ").map_or(l, |(_, m)| m))
            .collect()
    }
}

impl Sys for TestSys {
    fn now(&self) -> Duration {
        // Each reading advances 1 ms so durations are non-zero and ordered.
        let t = self.clock_us.get() + 1000;
        self.clock_us.set(t);
        Duration::from_micros(t)
    }

    fn write_console(&mut self, line: &str) {
        self.actions.push(Action::Console(line.to_string()));
    }

    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno> {
        Ok(self.mounted.contains(&path.display().to_string()))
    }

    fn mkdir(&mut self, path: &Path, _mode: u32) -> Result<(), Errno> {
        self.actions.push(Action::Mkdir(path.display().to_string()));
        Ok(())
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
        if let Some(e) = self.mount_errors.get(spec.target) {
            return Err(*e);
        }
        self.actions.push(Action::Mount {
            fstype: spec.fstype.to_string(),
            target: spec.target.to_string(),
        });
        self.mounted.insert(spec.target.to_string());
        Ok(())
    }

    fn kernel_release(&self) -> String {
        self.release.clone()
    }

    fn finit_module(&mut self, path: &Path) -> Result<(), ModuleError> {
        self.actions
            .push(Action::Module(path.display().to_string()));
        match self.module_errors.get(path) {
            Some(e) => Err(*e),
            None => Ok(()),
        }
    }

    fn sync(&mut self) {
        self.actions.push(Action::Sync);
    }

    fn reboot(&mut self, how: Shutdown) -> Result<(), Errno> {
        self.actions.push(Action::Reboot(how));
        Ok(())
    }

    fn sleep(&mut self, how_long: Duration) {
        let us = u64::try_from(how_long.as_micros()).unwrap_or(u64::MAX);
        self.clock_us.set(self.clock_us.get().saturating_add(us));
    }

    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno> {
        if path != Path::new("/sys/block") {
            return Err(Errno::NOENT);
        }
        let now = self.clock_us.get();
        Ok(self
            .block_devices
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn exists(&mut self, path: &Path) -> bool {
        self.nodes.contains(path) || self.files.contains_key(path)
    }

    fn mknod_char(&mut self, path: &Path, _major: u32, _minor: u32) -> Result<(), Errno> {
        self.failing("mknod_char")?;
        self.actions.push(Action::Mknod(path.display().to_string()));
        self.nodes.insert(path.to_path_buf());
        Ok(())
    }

    fn dm_ioctl(&mut self, cmd: dm::Command, buf: &mut [u8]) -> Result<(), Errno> {
        self.actions.push(Action::Dm(cmd));
        if let Some(e) = self.dm_errors.get(&cmd) {
            return Err(*e);
        }
        if cmd == dm::Command::DevCreate {
            buf[40..48].copy_from_slice(&dm::encode_dev(253, 0).to_ne_bytes());
        }
        Ok(())
    }

    fn read_partition_table(&mut self, disk: &Path) -> Result<PartTable, String> {
        self.tables
            .get(disk)
            .cloned()
            .ok_or_else(|| "no partition table".to_string())
    }

    fn grow_last_partition(
        &mut self,
        disk: &Path,
        _index: u32,
    ) -> Result<Option<PartInfo>, String> {
        self.actions.push(Action::Grow(disk.display().to_string()));
        self.grow.clone().unwrap_or(Ok(None))
    }

    fn blkpg_resize(
        &mut self,
        _disk: &Path,
        index: u32,
        start: u64,
        length: u64,
    ) -> Result<(), Errno> {
        self.failing("blkpg_resize")?;
        self.actions.push(Action::Blkpg {
            index,
            start,
            length,
        });
        Ok(())
    }

    fn device_bytes(&mut self, dev: &Path) -> Result<u64, Errno> {
        self.sizes.get(dev).copied().ok_or(Errno::NOENT)
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let bytes = self.read_file(path)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        bytes
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    fn ext4_resize(&mut self, _mountpoint: &Path, blocks: u64) -> Result<(), Errno> {
        self.failing("ext4_resize")?;
        self.actions.push(Action::Ext4Resize(blocks));
        Ok(())
    }

    fn bind_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        self.failing("bind_mount")?;
        self.actions.push(Action::Bind {
            from: from.display().to_string(),
            to: to.display().to_string(),
        });
        Ok(())
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        self.failing("move_mount")?;
        self.actions.push(Action::Move {
            from: from.display().to_string(),
            to: to.display().to_string(),
        });
        Ok(())
    }

    fn remount_ro(&mut self, target: &Path) -> Result<(), Errno> {
        self.failing("remount_ro")?;
        self.actions
            .push(Action::RemountRo(target.display().to_string()));
        Ok(())
    }

    fn unmount(&mut self, target: &Path) -> Result<(), Errno> {
        self.failing("unmount")?;
        self.actions
            .push(Action::Unmount(target.display().to_string()));
        Ok(())
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.actions.push(Action::Chdir(path.display().to_string()));
        Ok(())
    }

    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        self.failing("chroot")?;
        self.actions
            .push(Action::Chroot(path.display().to_string()));
        Ok(())
    }

    fn free_initramfs(&mut self) -> u64 {
        self.actions.push(Action::FreeInitramfs);
        3
    }

    fn exec(&mut self, path: &Path, argv: &[&str]) -> io::Result<()> {
        let mut all = vec![path.display().to_string()];
        all.extend(argv.iter().map(|a| a.to_string()));
        self.actions.push(Action::Exec(all));
        if self.fail.contains_key("exec") {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(())
    }

    fn append_sync(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some(e) = self.fail.get("append_sync") {
            return Err(io::Error::from_raw_os_error(e.raw_os_error()));
        }
        self.actions.push(Action::Append {
            path: path.display().to_string(),
            text: String::from_utf8_lossy(bytes).into_owned(),
        });
        self.files
            .entry(path.to_path_buf())
            .or_default()
            .extend_from_slice(bytes);
        Ok(())
    }
}
