//! A recording [`Sys`] for unit tests: an in-memory file table, scripted
//! failures, and a log of every action in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;

use crate::dm;
use crate::sys::{
    ExitStatus, KillSignal, ModuleError, MountArgs, PartInfo, PartTable, Reaped, Shutdown, Signal,
    Sys,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Console(String),
    Mkdir(String),
    Mount {
        fstype: String,
        target: String,
    },
    Module(String),
    /// Loading this many modules beside stage 1 began.
    BeginModules(usize),
    Sync,
    Reboot(Shutdown),
    Mknod(String),
    Dm(dm::Command),
    Loop(String),
    Grow(String),
    Blkpg {
        index: u32,
        start: u64,
        length: u64,
    },
    Ext4Resize(u64),
    Bind {
        from: String,
        to: String,
    },
    Move {
        from: String,
        to: String,
    },
    RemountRo(String),
    Unmount(String),
    Chdir(String),
    Chroot(String),
    FreeInitramfs,
    Exec(Vec<String>),
    Append {
        path: String,
        text: String,
    },
    SetupSignals,
    Spawn(String),
    /// A spawn outside `/`: its working directory and argv (then `Spawn`).
    SpawnIn {
        cwd: String,
        argv: Vec<String>,
    },
    Kill {
        pid: i32,
        sig: KillSignal,
    },
    Reaped(i32, ExitStatus),
    WatchdogOpen(String),
    WatchdogTimeout(u32),
    Pet,
}

/// What a spawned (or re-parented) process does in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildPlan {
    /// Exits on its own this long (µs) after it started, with that status.
    pub exits_after: Option<(u64, ExitStatus)>,
    /// Exits this long (µs) after SIGTERM; `None`: ignores SIGTERM.
    pub term_takes: Option<u64>,
}

impl ChildPlan {
    /// A well-behaved daemon: runs until SIGTERM, then exits after `us`.
    pub fn obeys_term(us: u64) -> ChildPlan {
        ChildPlan {
            exits_after: None,
            term_takes: Some(us),
        }
    }

    pub fn dies_after(us: u64, status: ExitStatus) -> ChildPlan {
        ChildPlan {
            exits_after: Some((us, status)),
            term_takes: Some(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub plan: ChildPlan,
    /// When (µs) and how it exits, if it does.
    pub exit: Option<(u64, ExitStatus)>,
}

#[derive(Debug, Default)]
pub struct TestSys {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub mounted: BTreeSet<String>,
    pub mount_errors: BTreeMap<String, Errno>,
    pub module_errors: BTreeMap<PathBuf, ModuleError>,
    /// Modules `begin_modules` was given; `finish_modules` loads them.
    pub beside: Vec<Vec<PathBuf>>,
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
    /// Signals that arrive, at µs of the test clock, in time order.
    pub signals: VecDeque<(u64, Signal)>,
    /// How each spawned process behaves, in spawn order (default: obeys
    /// SIGTERM after 0.5 s).
    pub spawn_plan: VecDeque<ChildPlan>,
    /// Live children by pid (spawned, or orphans a test puts here).
    pub children: BTreeMap<i32, Child>,
    pub next_pid: i32,
    /// Test clock µs of each watchdog keepalive.
    pub pets: Vec<u64>,
    /// Paths that start to exist at a time (µs of the test clock).
    pub appear: BTreeMap<PathBuf, u64>,
    /// The argv of each `run_to_end`, in order.
    pub ran: Vec<Vec<String>>,
    /// What each `run_to_end` returns, in order (default: the program is
    /// not there).
    pub run_results: VecDeque<io::Result<(Option<i32>, String)>>,
}

/// Where the first action `want` accepts stands in `actions` (panics, listing
/// them, if none): for tests of the order of things.
pub fn position(actions: &[&Action], want: &dyn Fn(&Action) -> bool) -> usize {
    actions
        .iter()
        .position(|a| want(a))
        .unwrap_or_else(|| panic!("{actions:?}"))
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

    /// Adds a process re-parented to PID 1 that behaves as `plan`.
    pub fn orphan(&mut self, pid: i32, plan: ChildPlan) {
        let now = self.clock_us.get();
        self.children.insert(
            pid,
            Child {
                plan,
                exit: plan.exits_after.map(|(us, st)| (now + us, st)),
            },
        );
    }

    fn next_exit(&self) -> Option<u64> {
        self.children
            .values()
            .filter_map(|c| c.exit.map(|e| e.0))
            .min()
    }

    /// Seconds of the test clock at the first console line containing `needle`.
    pub fn when(&self, needle: &str) -> Option<f64> {
        self.console().into_iter().find_map(|l| {
            if !l.contains(needle) {
                return None;
            }
            l.strip_prefix('[')?.split(']').next()?.trim().parse().ok()
        })
    }

    /// Seconds of every console line containing `needle`.
    pub fn whens(&self, needle: &str) -> Vec<f64> {
        self.console()
            .into_iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.trim().parse().ok())
            .collect()
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

    fn mount(&mut self, args: &MountArgs) -> Result<(), Errno> {
        if let Some(e) = self.mount_errors.get(args.target) {
            return Err(*e);
        }
        self.actions.push(Action::Mount {
            fstype: args.fstype.to_string(),
            target: args.target.to_string(),
        });
        self.mounted.insert(args.target.to_string());
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

    fn begin_modules(&mut self, waves: Vec<Vec<PathBuf>>) {
        self.actions
            .push(Action::BeginModules(waves.iter().flatten().count()));
        self.beside = waves;
    }

    fn finish_modules(&mut self) -> Vec<(PathBuf, Result<(), ModuleError>)> {
        let mut out = Vec::new();
        for wave in std::mem::take(&mut self.beside) {
            let results = self.finit_modules(&wave);
            out.extend(wave.into_iter().zip(results));
        }
        out
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
        self.nodes.contains(path)
            || self.files.contains_key(path)
            || self
                .appear
                .get(path)
                .is_some_and(|at| *at <= self.clock_us.get())
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

    fn loop_attach(&mut self, file: &Path) -> Result<PathBuf, Errno> {
        self.failing("loop_attach")?;
        self.actions.push(Action::Loop(file.display().to_string()));
        Ok(PathBuf::from("/dev/loop0"))
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

    fn statfs(&mut self, _path: &Path) -> Result<(u64, u64), Errno> {
        self.failing("statfs")?;
        Ok((60 << 20, 64 << 20))
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

    fn setup_signals(&mut self) -> Result<(), Errno> {
        self.actions.push(Action::SetupSignals);
        self.failing("setup_signals")
    }

    fn wait_signal(&mut self, timeout: Duration) -> Option<Signal> {
        let now = self.clock_us.get();
        assert!(
            now < 24 * 3600 * 1_000_000,
            "test clock passed a day: the script has no shutdown signal"
        );
        let horizon = now + u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        let signal_at = self.signals.front().map(|s| s.0);
        let exit_at = self.next_exit();
        match (signal_at, exit_at) {
            (Some(s), e) if s <= horizon && e.is_none_or(|e| s <= e) => {
                self.clock_us.set(now.max(s));
                self.signals.pop_front().map(|s| s.1)
            }
            (_, Some(e)) if e <= horizon => {
                self.clock_us.set(now.max(e));
                Some(Signal::Chld)
            }
            _ => {
                self.clock_us.set(horizon);
                None
            }
        }
    }

    fn run_to_end(&mut self, _path: &Path, argv: &[&str]) -> io::Result<(Option<i32>, String)> {
        self.ran.push(argv.iter().map(|a| a.to_string()).collect());
        self.run_results
            .pop_front()
            .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::NotFound)))
    }

    fn spawn_in(&mut self, cwd: &Path, path: &Path, argv: &[&str]) -> io::Result<i32> {
        if cwd != Path::new("/") {
            self.actions.push(Action::SpawnIn {
                cwd: cwd.display().to_string(),
                argv: argv.iter().map(|a| a.to_string()).collect(),
            });
        }
        self.actions.push(Action::Spawn(path.display().to_string()));
        if self.fail.contains_key("spawn") {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.next_pid = self.next_pid.max(100) + 1;
        let pid = self.next_pid;
        let plan = self
            .spawn_plan
            .pop_front()
            .unwrap_or(ChildPlan::obeys_term(500_000));
        self.orphan(pid, plan);
        Ok(pid)
    }

    fn reap(&mut self) -> Reaped {
        let now = self.clock_us.get();
        let mut exited: Vec<(u64, i32, ExitStatus)> = self
            .children
            .iter()
            .filter_map(|(pid, c)| c.exit.filter(|e| e.0 <= now).map(|e| (e.0, *pid, e.1)))
            .collect();
        exited.sort_by_key(|e| (e.0, e.1));
        let mut reaped = Reaped::default();
        for (_, pid, status) in exited {
            self.children.remove(&pid);
            self.actions.push(Action::Reaped(pid, status));
            reaped.exited.push((pid, status));
        }
        reaped.children_left = !self.children.is_empty();
        reaped
    }

    fn kill(&mut self, pid: i32, sig: KillSignal) -> Result<(), Errno> {
        self.actions.push(Action::Kill { pid, sig });
        let now = self.clock_us.get();
        let targets: Vec<i32> = if pid == -1 {
            self.children.keys().copied().collect()
        } else if self.children.contains_key(&pid) {
            vec![pid]
        } else {
            return Err(Errno::SRCH);
        };
        if targets.is_empty() {
            return Err(Errno::SRCH);
        }
        for t in targets {
            if let Some(child) = self.children.get_mut(&t) {
                let ends = match sig {
                    KillSignal::Kill => Some((now, ExitStatus::Signal(9))),
                    KillSignal::Term => child
                        .plan
                        .term_takes
                        .map(|us| (now + us, ExitStatus::Signal(15))),
                };
                if let Some(end) = ends {
                    if child.exit.is_none_or(|e| end.0 < e.0) {
                        child.exit = Some(end);
                    }
                }
            }
        }
        Ok(())
    }

    fn watchdog_open(&mut self, path: &Path) -> Result<(), Errno> {
        self.failing("watchdog_open")?;
        self.actions
            .push(Action::WatchdogOpen(path.display().to_string()));
        Ok(())
    }

    fn watchdog_set_timeout(&mut self, secs: u32) -> Result<u32, Errno> {
        self.failing("watchdog_set_timeout")?;
        self.actions.push(Action::WatchdogTimeout(secs));
        Ok(secs)
    }

    fn watchdog_keepalive(&mut self) -> Result<(), Errno> {
        self.actions.push(Action::Pet);
        self.pets.push(self.clock_us.get());
        Ok(())
    }
}
