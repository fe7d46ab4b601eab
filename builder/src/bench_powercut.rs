//! `ballast bench powercut --board B --runs N [--seed S]`: power cuts at
//! moments drawn from a seed, each followed by the checks a user would make.
//!
//! It builds a release pair (`1.0.0`, `1.0.1`, or takes `--v1 DIR --v2 DIR
//! --ssh-key KEY`), then makes its reference disks once, with clean power-offs,
//! measuring each phase's window on the way:
//! - *pristine*: the built disk with 256 MiB more, so the first boot grows the
//!   state partition (window: `ballast-init: disk:` to the state mounted, + 1 s);
//! - *booted*: after that first boot (window of `osctl upgrade`: the whole
//!   command, on the next boot);
//! - *upgraded*: 1.0.1 installed in slot b, not booted yet (windows: QEMU start
//!   to ready, and sysd's start to ready + 1 s, on the next boot);
//! - *good*: 1.0.1 booted and marked good (window of `osctl rollback
//!   --reboot`: a fixed 5 s, the switch and the orderly reboot).
//!
//! Each run copies the reference disk its phase starts from (sparse, reflink
//! where the filesystem can), boots it, and SIGKILLs QEMU at
//! `fraction × window` after the phase's anchor ([`plan`]). Then it boots the
//! disk again and checks: a slot reaches `ballast-ready` (the old or new
//! version, as the cut allows), `osctl status` shows the running slot good and
//! no errors, the console of both boots shows no filesystem fault, the next
//! `osctl upgrade` installs (every `--upgrade-every` runs), and after a clean
//! power-off `e2fsck -fn` of the state partition and `fsck.fat -n` of the boot
//! partition find nothing to repair (from the host, through read-only loop
//! devices: root).
//!
//! A run's cut depends only on the seed and its number, so `--seed S --skip K
//! --runs 1` cuts run K again at the same fraction of the window (the window
//! itself is measured again on that invocation's reference pass).

pub mod plan;

use anyhow::{bail, Context, Result};
use ballast_inputs::{Board, QemuProfile};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench_ssh::{release_pair, Remote};
use crate::build::BuildResult;
use crate::project::Project;
use crate::qemu::{self, Accel, AccelChoice, Console, Launch};
use plan::{Cut, Phase};

#[derive(Args, Debug)]
pub struct PowercutBenchArgs {
    /// Board to cut.
    #[arg(long)]
    pub board: String,
    /// Power cuts to make.
    #[arg(long, default_value_t = 10)]
    pub runs: u64,
    /// Seed of the draw (default: the clock; printed, to reproduce a run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip the first K runs of the seed (with --runs 1: reproduce run K+1).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub skip: u64,
    /// Only these phases (comma-separated: grow, upgrade, first-boot,
    /// mark-good, rollback); default all.
    #[arg(long, value_delimiter = ',', value_name = "PHASES")]
    pub phases: Vec<String>,
    /// Check that the next `osctl upgrade` installs after every K-th run
    /// (1: every run).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub upgrade_every: u64,
    /// The older release's build (with --v2 and --ssh-key; default: build 1.0.0).
    #[arg(long, value_name = "DIR", requires_all = ["v2", "ssh_key"])]
    pub v1: Option<PathBuf>,
    /// The newer release's build, same key and signing key, version above --v1's.
    #[arg(long, value_name = "DIR", requires = "v1")]
    pub v2: Option<PathBuf>,
    /// The private SSH key for user `ballast` baked into --v1 and --v2.
    #[arg(long, value_name = "FILE", requires = "v1")]
    pub ssh_key: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Print the runs as JSON.
    #[arg(long)]
    pub json: bool,
    /// Extra arguments for both `ballast build`s (default: `--image images/minimal.toml`).
    #[arg(last = true)]
    pub build_args: Vec<String>,
}

/// Boot timeouts: generous, TCG on a loaded host.
const BOOT: Duration = Duration::from_secs(900);
/// The partitions the host checks after each run.
const BOOT_PARTITION: u32 = 1;
const STATE_PARTITION: u32 = 4;
/// Bytes added to the built disk so the first boot grows the state partition.
const GROW_BYTES: u64 = 256 << 20;
/// `osctl rollback --reboot`: the switch and the orderly reboot, a few seconds.
const ROLLBACK_WINDOW_S: f64 = 5.0;

#[derive(Serialize, Clone, Default)]
struct Windows {
    grow_s: f64,
    upgrade_s: f64,
    first_boot_s: f64,
    mark_good_s: f64,
    rollback_s: f64,
}

impl Windows {
    fn of(&self, phase: Phase) -> f64 {
        match phase {
            Phase::Grow => self.grow_s,
            Phase::Upgrade => self.upgrade_s,
            Phase::FirstBoot => self.first_boot_s,
            Phase::MarkGood => self.mark_good_s,
            Phase::Rollback => self.rollback_s,
        }
    }
}

#[derive(Serialize)]
struct RunReport {
    /// 1-based, counted from the seed's first run (with --skip too).
    run: u64,
    phase: &'static str,
    anchor: &'static str,
    fraction: f64,
    window_s: f64,
    delay_s: f64,
    /// The ready line of the boot after the cut.
    ready: Option<String>,
    upgrade_checked: bool,
    /// The cut boot and the check (boot, status, upgrade, power-off, fsck).
    seconds: f64,
    error: Option<String>,
    reproduce: String,
}

#[derive(Serialize)]
struct Report {
    board: String,
    accel: String,
    seed: u64,
    skip: u64,
    runs: u64,
    passed: u64,
    windows: Windows,
    results: Vec<RunReport>,
}

/// One release of the pair.
struct Release {
    build: BuildResult,
    version: String,
    bundle: PathBuf,
}

struct Bench {
    dir: PathBuf,
    profile: QemuProfile,
    accel: Accel,
    v1: Release,
    v2: Release,
    remote: Remote,
}

pub fn run(project: &Project, args: &PowercutBenchArgs) -> Result<()> {
    let board = Board::find(&project.boards_dir(), &args.board)?;
    let profile_name = board
        .qemu
        .as_deref()
        .with_context(|| format!("{}: board has no `qemu` profile", board.path.display()))?;
    let profile = QemuProfile::find(&project.qemu_dir(), profile_name)?;
    let mut phases = Vec::new();
    for name in &args.phases {
        phases.push(Phase::parse(name).with_context(|| {
            format!("--phases: no phase {name:?}; the phases are grow, upgrade, first-boot, mark-good, rollback")
        })?);
    }
    if args.upgrade_every == 0 {
        bail!("--upgrade-every 0: give 1 to check the upgrade after every run, K for every K-th");
    }
    let seed = match args.seed {
        Some(s) => s,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let top = project
        .target_dir()
        .join("bench-powercut")
        .join(&board.name);
    // The disks and consoles of the last invocation go; builds stay (given
    // with --v1/--v2 they may live here).
    let dir = top.join("runs");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let (v1, v2, key) = releases(project, &board.name, &top, args)?;
    let launch = launch(&profile, &v1, &v1.build.artifact("disk")?, true)?;
    let cache = crate::project::cache_dir(None);
    let accel = qemu::choose_accel(&launch, board.arch, args.accel, &cache)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bench = Bench {
        dir,
        profile,
        accel,
        v1,
        v2,
        remote: Remote { key, port },
    };
    let cuts: Vec<(u64, Cut)> = (args.skip..args.skip + args.runs)
        .map(|k| (k, Cut::draw(seed, k, &phases)))
        .collect();
    eprintln!(
        "bench powercut: {} ({:?}), seed {seed}, runs {}..{}: making the reference disks",
        board.name,
        accel,
        args.skip + 1,
        args.skip + args.runs
    );
    let windows = bench.references(&cuts)?;
    let mut results = Vec::new();
    for (k, cut) in &cuts {
        let started = Instant::now();
        let window = windows.of(cut.phase);
        let delay = cut.delay(window);
        let reproduce = format!(
            "ballast bench powercut --board {} --seed {seed} --skip {k} --runs 1",
            board.name
        );
        let check_upgrade = (k + 1) % args.upgrade_every == 0;
        let outcome = bench.one_run(*k, *cut, delay, check_upgrade);
        let (ready, error) = match outcome {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let r = RunReport {
            run: k + 1,
            phase: cut.phase.name(),
            anchor: cut.phase.anchor(),
            fraction: cut.fraction,
            window_s: window,
            delay_s: delay.as_secs_f64(),
            ready,
            upgrade_checked: check_upgrade,
            seconds: started.elapsed().as_secs_f64(),
            error,
            reproduce,
        };
        eprintln!("{}", run_line(&r));
        results.push(r);
    }
    let passed = results.iter().filter(|r| r.error.is_none()).count() as u64;
    let report = Report {
        board: board.name.clone(),
        accel: format!("{accel:?}").to_lowercase(),
        seed,
        skip: args.skip,
        runs: args.runs,
        passed,
        windows,
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if passed != args.runs {
        bail!(
            "{} of {} power cuts failed (seed {seed}); each failed run above names the command that repeats it",
            args.runs - passed,
            args.runs
        );
    }
    Ok(())
}

fn run_line(r: &RunReport) -> String {
    let head = format!(
        "run {}: {} cut {:.2} s after {} ({:.2} of {:.1} s)",
        r.run, r.phase, r.delay_s, r.anchor, r.fraction, r.window_s
    );
    match (&r.ready, &r.error) {
        (_, Some(e)) => format!(
            "{head}: FAILED in {:.0} s: {e}\n  repeat: {}",
            r.seconds, r.reproduce
        ),
        (Some(ready), None) => format!(
            "{head}: ok in {:.0} s: {ready}{}, e2fsck and fsck.fat clean",
            r.seconds,
            if r.upgrade_checked {
                ", next upgrade installed"
            } else {
                ""
            }
        ),
        (None, None) => format!("{head}: ok"),
    }
}

fn print_report(r: &Report) {
    println!(
        "{} ({}), seed {}: {}/{} power cuts recovered",
        r.board, r.accel, r.seed, r.passed, r.runs
    );
    for res in &r.results {
        println!("  {}", run_line(res));
    }
    let secs: f64 = r.results.iter().map(|x| x.seconds).sum();
    if !r.results.is_empty() {
        println!(
            "  {:.0} s per cut with its checks ({:.0} s in all, after the reference disks)",
            secs / r.results.len() as f64,
            secs
        );
    }
    println!(
        "  windows: grow {:.1} s, upgrade {:.1} s, first boot {:.1} s, mark good {:.1} s, rollback {:.1} s",
        r.windows.grow_s,
        r.windows.upgrade_s,
        r.windows.first_boot_s,
        r.windows.mark_good_s,
        r.windows.rollback_s
    );
}

/// The release pair and the SSH key: given, or built now (1.0.0 and 1.0.1).
fn releases(
    project: &Project,
    board: &str,
    dir: &Path,
    args: &PowercutBenchArgs,
) -> Result<(Release, Release, PathBuf)> {
    let release = |build: BuildResult| -> Result<Release> {
        Ok(Release {
            version: build.version.clone(),
            bundle: build.artifact("bundle")?,
            build,
        })
    };
    if let (Some(v1), Some(v2), Some(key)) = (&args.v1, &args.v2, &args.ssh_key) {
        let (v1, v2) = (BuildResult::load(v1)?, BuildResult::load(v2)?);
        return Ok((release(v1)?, release(v2)?, key.clone()));
    }
    let mut extra = args.build_args.clone();
    if extra.is_empty() {
        extra = vec![
            "--image".into(),
            project
                .root
                .join("images/minimal.toml")
                .to_string_lossy()
                .into_owned(),
        ];
    }
    let (v1, v2, key) = release_pair(project, board, dir, &extra)?;
    Ok((release(v1)?, release(v2)?, key))
}

/// QEMU booting `disk` through the board's firmware with `release`'s files.
fn launch(
    profile: &QemuProfile,
    release: &Release,
    disk: &Path,
    no_reboot: bool,
) -> Result<Launch> {
    Ok(Launch {
        profile: profile.clone(),
        kernel: release.build.artifact("kernel")?,
        initrd: release.build.artifact("initrd")?,
        cmdline: release.build.cmdline.clone(),
        ssh_port: None,
        no_reboot,
        disk: Some(crate::run::disk_boot(profile, disk)?),
    })
}

/// `cp --sparse=always --reflink=auto` of a disk and its UEFI variables.
fn copy_disk(from: &Path, to: &Path) -> Result<()> {
    for (a, b) in [
        (from.to_path_buf(), to.to_path_buf()),
        (
            from.with_extension("efivars.fd"),
            to.with_extension("efivars.fd"),
        ),
    ] {
        let _ = std::fs::remove_file(&b);
        if !a.exists() {
            continue;
        }
        let st = Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&a)
            .arg(&b)
            .status()
            .context("running cp")?;
        if !st.success() {
            bail!("copying {} to {} failed", a.display(), b.display());
        }
    }
    Ok(())
}

fn remove_disk(disk: &Path) {
    let _ = std::fs::remove_file(disk);
    let _ = std::fs::remove_file(disk.with_extension("efivars.fd"));
}

/// `ballast-ready version=V slot=S` → (V, S).
fn ready_fields(line: &str) -> Option<(String, String)> {
    let rest = &line[line.find("ballast-ready ")? + "ballast-ready ".len()..];
    let mut version = None;
    let mut slot = None;
    for f in rest.split_whitespace() {
        if let Some(v) = f.strip_prefix("version=") {
            version = Some(v.to_owned());
        } else if let Some(s) = f.strip_prefix("slot=") {
            slot = Some(s.to_owned());
        }
    }
    Some((version?, slot?))
}

/// Seconds between the first lines containing `from` and `to` of a boot's
/// console, timed by the host as they came.
fn between(timed: &[(f64, String)], from: &str, to: &str) -> Result<f64> {
    let at = |needle: &str| {
        timed
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .with_context(|| format!("the reference boot printed no line with {needle:?}"))
    };
    Ok(at(to)? - at(from)?)
}

impl Bench {
    fn disk(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.img"))
    }

    fn boot(&self, disk: &Path, no_reboot: bool) -> Result<Console> {
        let mut l = launch(&self.profile, &self.v1, disk, no_reboot)?;
        l.ssh_port = Some(self.remote.port);
        Console::spawn_with_stderr(l.command(self.accel), Stdio::null())
    }

    fn save(&self, name: &str, console: &Console) {
        let _ = std::fs::write(self.dir.join(name), console.transcript.join("\n"));
    }

    /// `osctl poweroff` over SSH, and QEMU's exit.
    fn poweroff(&self, console: &mut Console) -> Result<()> {
        // The session may end with the machine: its exit status says nothing.
        let _ = self
            .remote
            .command("osctl poweroff")
            .stdin(Stdio::null())
            .output();
        console
            .wait_exit(Duration::from_secs(300))
            .context("the machine did not power off after `osctl poweroff`")?;
        Ok(())
    }

    /// Waits until `osctl status` says the running slot is good; the status.
    fn wait_good(&self) -> Result<serde_json::Value> {
        let started = Instant::now();
        loop {
            let text = self.remote.run("osctl status --json", None)?;
            let st: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("osctl status --json printed {text:?}"))?;
            let running = st["slot"].as_str().unwrap_or_default().to_owned();
            let good = st["slots"].as_array().is_some_and(|slots| {
                slots
                    .iter()
                    .any(|s| s["slot"] == running.as_str() && s["health"]["state"] == "good")
            });
            if good && st["ready"] == true {
                return Ok(st);
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("the running slot {running:?} never became good: {st}");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The reference disks the drawn phases start from (see the module doc),
    /// and the windows measured on the way.
    fn references(&self, cuts: &[(u64, Cut)]) -> Result<Windows> {
        let need = |p: &[Phase]| cuts.iter().any(|(_, c)| p.contains(&c.phase));
        let mut w = Windows {
            rollback_s: ROLLBACK_WINDOW_S,
            ..Windows::default()
        };
        let pristine = self.disk("pristine");
        copy_disk(&self.v1.build.artifact("disk")?, &pristine)?;
        let f = std::fs::OpenOptions::new().write(true).open(&pristine)?;
        f.set_len(f.metadata()?.len() + GROW_BYTES)?;
        drop(f);
        if !need(&[
            Phase::Grow,
            Phase::Upgrade,
            Phase::FirstBoot,
            Phase::MarkGood,
            Phase::Rollback,
        ]) {
            return Ok(w);
        }
        // First boot: grows the state partition.
        let work = self.disk("reference");
        copy_disk(&pristine, &work)?;
        let mut c = self.boot(&work, true)?;
        let timed = c
            .timed_until("ballast-ready", Instant::now(), BOOT)
            .context("the reference first boot of the pristine disk")?;
        self.save("reference-1-first-boot.log", &c);
        // The ext4 grow's own line when it grew, else the plain mount's.
        w.grow_s = between(&timed, plan::GROW_ANCHOR, "state: ext4 on ")
            .or_else(|_| between(&timed, plan::GROW_ANCHOR, "mounted on /sysroot/state"))?
            + 1.0;
        self.wait_good()?;
        self.poweroff(&mut c)?;
        self.save("reference-1-first-boot.log", &c);
        copy_disk(&work, &self.disk("booted"))?;
        if !need(&[
            Phase::Upgrade,
            Phase::FirstBoot,
            Phase::MarkGood,
            Phase::Rollback,
        ]) {
            return Ok(w);
        }
        // The upgrade to v2, timed whole from the host (the anchor of its cuts).
        let mut c = self.boot(&work, true)?;
        c.wait_for("ballast-ready", BOOT)
            .context("booting the booted reference disk")?;
        let started = Instant::now();
        let out = self
            .remote
            .run("osctl upgrade --json -", Some(&self.v2.bundle))
            .context("the reference upgrade")?;
        w.upgrade_s = started.elapsed().as_secs_f64();
        if !out.contains("\"installed\":true") && !out.contains("\"installed\": true") {
            bail!("the reference upgrade did not install: {out}");
        }
        self.poweroff(&mut c)?;
        self.save("reference-2-upgrade.log", &c);
        copy_disk(&work, &self.disk("upgraded"))?;
        if !need(&[Phase::FirstBoot, Phase::MarkGood, Phase::Rollback]) {
            return Ok(w);
        }
        // The new slot's first boot, to good.
        let mut c = self.boot(&work, true)?;
        let since = Instant::now();
        let timed = c
            .timed_until("ballast-ready", since, BOOT)
            .context("the reference first boot of the new slot")?;
        self.save("reference-3-new-slot.log", &c);
        w.first_boot_s = since.elapsed().as_secs_f64();
        w.mark_good_s = between(&timed, plan::SYSD_ANCHOR, "ballast-ready")? + 1.0;
        let want = format!("ballast-ready version={} slot=b", self.v2.version);
        if !timed.last().is_some_and(|(_, l)| l.contains(&want)) {
            bail!("the reference boot of the upgraded disk did not print {want:?}");
        }
        self.wait_good()?;
        self.poweroff(&mut c)?;
        self.save("reference-3-new-slot.log", &c);
        copy_disk(&work, &self.disk("good"))?;
        remove_disk(&work);
        Ok(w)
    }

    /// Cut run `k` and check the machine after it; the ready line after the cut.
    fn one_run(&self, k: u64, cut: Cut, delay: Duration, check_upgrade: bool) -> Result<String> {
        let start = match cut.phase {
            Phase::Grow => "pristine",
            Phase::Upgrade => "booted",
            Phase::FirstBoot | Phase::MarkGood => "upgraded",
            Phase::Rollback => "good",
        };
        let disk = self.disk(&format!("run-{}", k + 1));
        copy_disk(&self.disk(start), &disk)?;
        let result = self.cut_and_check(k, cut, delay, check_upgrade, &disk);
        if result.is_ok() {
            remove_disk(&disk);
        }
        result
    }

    fn cut_and_check(
        &self,
        k: u64,
        cut: Cut,
        delay: Duration,
        check_upgrade: bool,
        disk: &Path,
    ) -> Result<String> {
        let (v1, v2) = (&self.v1.version, &self.v2.version);
        let mut c = self.boot(disk, true)?;
        // Which (version, slot) may come up after this cut.
        let allowed: Vec<(String, String)> = match cut.phase {
            Phase::Grow => {
                c.wait_for(plan::GROW_ANCHOR, BOOT)?;
                std::thread::sleep(delay);
                vec![(v1.clone(), "a".into())]
            }
            Phase::Upgrade => {
                c.wait_for("ballast-ready", BOOT)?;
                let mut ssh = self
                    .remote
                    .command("osctl upgrade -")
                    .stdin(Stdio::from(std::fs::File::open(&self.v2.bundle)?))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("running ssh osctl upgrade")?;
                std::thread::sleep(delay);
                // An upgrade that finished before the cut boots the new slot.
                let finished = matches!(ssh.try_wait(), Ok(Some(st)) if st.success());
                c.kill_and_drain();
                let _ = ssh.kill();
                let _ = ssh.wait();
                let mut ok = vec![(v1.clone(), "a".to_string())];
                if finished {
                    ok.push((v2.clone(), "b".into()));
                }
                ok
            }
            Phase::FirstBoot => {
                std::thread::sleep(delay);
                vec![(v2.clone(), "b".into())]
            }
            Phase::MarkGood => {
                c.wait_for(plan::SYSD_ANCHOR, BOOT)?;
                std::thread::sleep(delay);
                vec![(v2.clone(), "b".into())]
            }
            Phase::Rollback => {
                c.wait_for("ballast-ready", BOOT)?;
                let mut ssh = self
                    .remote
                    .command("osctl rollback --reboot")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("running ssh osctl rollback")?;
                std::thread::sleep(delay);
                c.kill_and_drain();
                let _ = ssh.kill();
                let _ = ssh.wait();
                vec![(v1.clone(), "a".into()), (v2.clone(), "b".into())]
            }
        };
        c.kill_and_drain();
        self.save(&format!("run-{}-cut.log", k + 1), &c);
        let mut faults = plan::console_faults(&c.transcript);
        // The boot after the cut: QEMU restarts the machine in place, as a board would.
        let mut c2 = self.boot(disk, false)?;
        let checked = (|| -> Result<String> {
            c2.wait_for("ballast-ready", BOOT)
                .context("no slot reached ballast-ready after the cut")?;
            let line = c2.transcript.last().cloned().unwrap_or_default();
            let got = ready_fields(&line)
                .with_context(|| format!("a ready line without version and slot: {line:?}"))?;
            if !allowed.contains(&got) {
                bail!(
                    "after a {} cut {line:?}; expected one of {allowed:?}",
                    cut.phase.name()
                );
            }
            let st = self.wait_good()?;
            if st["errors"].as_array().is_none_or(|e| !e.is_empty()) {
                bail!("osctl status shows errors: {}", st["errors"]);
            }
            if check_upgrade {
                // The other release into the other slot (same rollback index).
                let (bundle, flag) = if got.0 == *v1 {
                    (&self.v2.bundle, "")
                } else {
                    (&self.v1.bundle, " --allow-downgrade")
                };
                let out = self
                    .remote
                    .run(&format!("osctl upgrade --json{flag} -"), Some(bundle))
                    .context("the next osctl upgrade after the cut")?;
                if !out.contains("\"installed\":true") && !out.contains("\"installed\": true") {
                    bail!("the next osctl upgrade did not install: {out}");
                }
            }
            self.poweroff(&mut c2)?;
            Ok(line.trim().to_owned())
        })();
        if checked.is_err() {
            c2.kill_and_drain();
        }
        self.save(&format!("run-{}-check.log", k + 1), &c2);
        let line = checked?;
        faults.extend(plan::console_faults(&c2.transcript));
        if !faults.is_empty() {
            bail!("filesystem faults on the console: {}", faults.join(" | "));
        }
        fsck(disk, STATE_PARTITION, &["e2fsck", "-fn"])?;
        fsck(disk, BOOT_PARTITION, &["fsck.fat", "-n"])?;
        Ok(line)
    }
}

/// `TOOL... /dev/loopN` over partition `index` of `disk`, read-only: exit 0 or
/// an error with what the tool printed.
fn fsck(disk: &Path, index: u32, tool: &[&str]) -> Result<()> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let table = ballast_disk::read_table(&mut f, 512)
        .with_context(|| format!("reading the partition table of {}", disk.display()))?;
    let p = table
        .partitions
        .iter()
        .find(|p| p.index == index)
        .with_context(|| format!("{} has no partition {index}", disk.display()))?;
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only", "--offset"])
        .arg((p.start_lba * 512).to_string())
        .arg("--sizelimit")
        .arg(((p.end_lba + 1 - p.start_lba) * 512).to_string())
        .arg(disk)
        .output()
        .context("running losetup (the host checks need root)")?;
    if !out.status.success() {
        bail!(
            "losetup of partition {index} of {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let checked = Command::new(tool[0]).args(&tool[1..]).arg(&dev).output();
    let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    let checked = checked.with_context(|| format!("running {}", tool[0]))?;
    if !checked.status.success() {
        bail!(
            "{} of partition {index} found problems ({}): {}{}",
            tool.join(" "),
            checked.status,
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_gives_version_and_slot() {
        assert_eq!(
            ready_fields("ballast-ready version=1.0.1 slot=b"),
            Some(("1.0.1".into(), "b".into()))
        );
        assert_eq!(ready_fields("[ 3.1] ballast-ready"), None);
    }

    #[test]
    fn windows_are_measured_between_console_lines() {
        let timed = vec![
            (1.0, "x".to_string()),
            (2.5, "ballast-init: disk: /dev/vda".to_string()),
            (
                4.0,
                "state: /dev/vda4 (ext4) mounted on /sysroot/state".to_string(),
            ),
        ];
        let w = between(&timed, plan::GROW_ANCHOR, "mounted on /sysroot/state").unwrap();
        assert!((w - 1.5).abs() < 1e-9);
        assert!(between(&timed, "nothing", "x").is_err());
    }
}
