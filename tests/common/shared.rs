//! One build per (board, image, version, SSH key, extra build arguments) in a
//! test run, shared by every story that needs it, in any test binary or
//! thread.
//!
//! A shared build lives in `target/e2e/builds/<key>/` and is made once, under
//! a file lock, by whichever story asks first; the others wait for the lock
//! and reuse it. The directory is cleared when a new test run (or a
//! rebuilt `ballast`) first asks for a build, so a build from an older
//! checkout is never reused.
//!
//! A shared build is read-only for the stories: they boot it through a VM
//! disk of their own ([`Built::vm_disk`], a qcow2 overlay `ballast run` keeps
//! in the story's work directory), or copy the disk image when they must
//! write to it ([`Built::disk_copy`]). Nothing here may write into a shared
//! build after it is made.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// What to build. `common::Build::new(board).image("minimal").ssh_key().shared()`.
#[derive(Debug, Clone)]
pub struct Build {
    board: String,
    image: Option<String>,
    version: Option<String>,
    ssh_key: bool,
    args: Vec<String>,
}

/// A finished shared build.
#[derive(Debug, Clone)]
pub struct Built {
    /// `ballast build --out` (give it to `ballast run --out`, never boot the
    /// disk in it without a VM disk of your own).
    pub out: PathBuf,
    /// What `ballast build --json` printed.
    pub json: serde_json::Value,
    /// The private half of the SSH key baked in, with `ssh_key()`.
    pub key: Option<PathBuf>,
}

impl Build {
    pub fn new(board: &str) -> Build {
        Build {
            board: board.to_owned(),
            image: None,
            version: None,
            ssh_key: false,
            args: Vec::new(),
        }
    }

    /// An image of `images/` by name (`minimal`, `containerd`); default: `default`.
    pub fn image(mut self, name: &str) -> Build {
        self.image = Some(name.to_owned());
        self
    }

    pub fn version(mut self, version: &str) -> Build {
        self.version = Some(version.to_owned());
        self
    }

    /// Bake in an SSH key for user `ballast`, made for this build.
    pub fn ssh_key(mut self) -> Build {
        self.ssh_key = true;
        self
    }

    /// More `ballast build` arguments (`--kernel-arg`, `--suite`, ...).
    pub fn args(mut self, args: &[&str]) -> Build {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The `ballast build` arguments, except `--ssh-key`.
    fn build_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(image) = &self.image {
            let path = super::root().join("images").join(format!("{image}.toml"));
            args.push("--image".to_owned());
            args.push(path.to_string_lossy().into_owned());
        }
        if let Some(v) = &self.version {
            args.push("--version".to_owned());
            args.push(v.clone());
        }
        args.extend(self.args.iter().cloned());
        args
    }

    /// The directory name: readable, and unique for what is built.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{self:?}"));
        let hash = hex::encode(&h.finalize()[..6]);
        let board = Path::new(&self.board)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let image = self.image.as_deref().unwrap_or("default");
        format!("{board}-{image}-{hash}")
    }

    /// The build, made now unless this test run made it already.
    pub fn shared(&self) -> Built {
        let builds = builds_dir();
        let dir = builds.join(self.key());
        let lock = File::create(builds.join(format!("{}.lock", self.key())))
            .expect("creating a shared build's lock file");
        // Held until the build is complete; a panicking build drops it too,
        // and the next story tries again.
        lock.lock().expect("locking a shared build");
        let done = dir.join("build.json");
        if let Ok(text) = std::fs::read_to_string(&done) {
            let json: serde_json::Value =
                serde_json::from_str(&text).expect("a shared build's build.json");
            eprintln!("shared build: reusing {}", dir.display());
            return self.built(&dir, json);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a shared build directory");
        let mut args = self.build_args();
        if self.ssh_key {
            let key = dir.join("id_ed25519");
            let keygen = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .expect("ssh-keygen");
            assert!(keygen.success(), "ssh-keygen failed");
            args.push("--ssh-key".to_owned());
            args.push(key.with_extension("pub").to_string_lossy().into_owned());
        }
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let json = super::build(&self.board, &dir.join("out"), &arg_refs);
        eprintln!(
            "shared build: {} built in {:.1} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        let tmp = dir.join("build.json.tmp");
        std::fs::write(&tmp, json.to_string()).expect("writing build.json");
        std::fs::rename(&tmp, &done).expect("completing a shared build");
        self.built(&dir, json)
    }

    fn built(&self, dir: &Path, json: serde_json::Value) -> Built {
        Built {
            out: dir.join("out"),
            json,
            key: self.ssh_key.then(|| dir.join("id_ed25519")),
        }
    }
}

impl Built {
    /// A later `version` of this minimal build, with the same SSH key and
    /// `args`: built once per run and board for every story that asks.
    fn release(&self, version: &str, args: &[&str]) -> Built {
        let board = self.json["board"]
            .as_str()
            .unwrap_or_else(|| panic!("no board in {}", self.json));
        let pubkey = self.ssh_key().with_extension("pub");
        Build::new(board)
            .image("minimal")
            .version(version)
            .args(&["--ssh-key", pubkey.to_str().expect("utf-8 path")])
            .args(args)
            .shared()
    }

    /// 0.2.0 of this 0.1.0 minimal build: rollback index 1 (it "fixes a
    /// security hole") and `extra` build arguments. The update, BIOS and fleet
    /// stories all upgrade to it.
    pub fn next_release(&self, extra: &[&str]) -> Built {
        let args = [&["--rollback-index", "1"], extra].concat();
        self.release("0.2.0", &args)
    }

    /// 0.3.0 of this 0.1.0 minimal build, broken: its required network service
    /// cannot start (`ballast.ip` without its prefix length), and a slot on
    /// probation gives up its health check after 10 s. The update story's
    /// automatic rollback and the papercuts story's console boot it.
    pub fn broken_network_release(&self) -> Built {
        self.release(
            "0.3.0",
            &[
                "--kernel-arg",
                "ballast.ip=10.0.2.15",
                "--kernel-arg",
                "ballast.health_timeout=10",
            ],
        )
    }

    /// The path of artifact `name` (`disk`, `bundle`, `kernel`, `initrd`).
    pub fn artifact(&self, name: &str) -> PathBuf {
        PathBuf::from(
            self.json["artifacts"][name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} artifact in {}", self.json)),
        )
    }

    pub fn disk(&self) -> PathBuf {
        self.artifact("disk")
    }

    pub fn version(&self) -> String {
        self.json["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no version in {}", self.json))
            .to_owned()
    }

    /// The SSH key baked in (the build must have asked for one).
    pub fn ssh_key(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| panic!("this shared build has no SSH key: {}", self.json))
    }

    /// A machine of the story's own that boots this build: `work/NAME.img`,
    /// a link to the shared disk image, for `ballast run` to boot through the
    /// overlay it keeps beside it (`work/NAME.vm.qcow2`, its UEFI variables
    /// too). Each call starts a new machine; pass the same path to every
    /// `ballast run` of that machine.
    pub fn vm_disk(&self, work: &Path, name: &str) -> PathBuf {
        let link = work.join(format!("{name}.img"));
        for old in [
            link.clone(),
            link.with_extension("vm.qcow2"),
            link.with_extension("vm.efivars.fd"),
            link.with_extension("vm.base"),
        ] {
            let _ = std::fs::remove_file(old);
        }
        std::os::unix::fs::symlink(self.disk(), &link).expect("linking the shared disk image");
        link
    }

    /// A copy of the disk image for a story that writes the image itself
    /// (grows it, flips a byte, boots it with `ballast run --no-overlay`).
    pub fn disk_copy(&self, to: &Path) -> PathBuf {
        let _ = std::fs::remove_file(to.with_extension("efivars.fd"));
        let ok = Command::new("cp")
            .arg("--sparse=always")
            .arg(self.disk())
            .arg(to)
            .status()
            .expect("cp");
        assert!(ok.success(), "copying {}", self.disk().display());
        to.to_path_buf()
    }
}

/// `target/e2e/builds`, emptied first when this is a new test run.
fn builds_dir() -> PathBuf {
    let e2e = super::root().join("target").join("e2e");
    let builds = e2e.join("builds");
    std::fs::create_dir_all(&builds).expect("creating target/e2e/builds");
    let lock = File::create(e2e.join("builds.lock")).expect("creating builds.lock");
    lock.lock().expect("locking target/e2e/builds");
    let run = run_id();
    let marker = builds.join("RUN");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(run.as_str()) {
        eprintln!(
            "shared build: a new test run; clearing {}",
            builds.display()
        );
        std::fs::remove_dir_all(&builds).expect("clearing target/e2e/builds");
        std::fs::create_dir_all(&builds).expect("creating target/e2e/builds");
        std::fs::write(&marker, &run).expect("writing target/e2e/builds/RUN");
    }
    builds
}

/// Which test run this is: `BALLAST_E2E_RUN` when set (`scripts/test` sets
/// it; set it yourself to reuse builds across runs, at your own risk), else
/// the process that started the test binary (`cargo test` or `cargo
/// nextest`, by id and start time). The `ballast` binary's mtime is part of
/// it, so a rebuilt builder never sees an older build.
fn run_id() -> String {
    let ballast = std::fs::metadata(env!("CARGO_BIN_EXE_ballast"))
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    if let Ok(run) = std::env::var("BALLAST_E2E_RUN") {
        return format!("{run} {ballast}");
    }
    let parent = std::os::unix::process::parent_id();
    // Field 22 of /proc/PID/stat, counted after the command name's ')'.
    let started = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            rest.split_whitespace().nth(19).map(str::to_owned)
        })
        .unwrap_or_default();
    format!("{parent}@{started} {ballast}")
}
