//! A recording [`Sys`] for unit tests: an in-memory file table, scripted
//! failures, and a log of every action in order.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;

use crate::sys::{ModuleError, MountSpec, Shutdown, Sys};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Console(String),
    Mkdir(String),
    Mount { fstype: String, target: String },
    Module(String),
    Sync,
    Reboot(Shutdown),
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
}
