//! Slot state for U-Boot boards: a two-copy state file on the boot partition, the
//! `boot.scr` that reads it, counts down and boots, and the legacy-image wrapper
//! (`mkimage -T script`) around that script.
//!
//! # State file
//!
//! `ballast/state.0.env` and `ballast/state.1.env`, U-Boot `env import -t` text, one
//! `key=value` per line, keys in the order `env export -t` writes them (sorted), so the
//! script's write and this crate's write are byte-identical:
//!
//! ```text
//! ballast_a_good=1
//! ballast_a_tries=0
//! ballast_b_good=0
//! ballast_b_tries=3
//! ballast_default=b
//! ballast_seq=1f
//! ballast_seq_boot=1
//! end=ballast
//! ```
//!
//! Numbers are **hexadecimal without `0x`**, as U-Boot's `itest` reads them. `end=ballast`
//! sorts last and proves the write completed: a copy without it is torn and ignored.
//!
//! # No arithmetic in the script
//!
//! Some boards' U-Boot has no `setexpr` (Debian's `am335x_boneblack`, the BeagleBone's),
//! so the script does no arithmetic; it needs `itest`, `test`, `fatload`, `fatwrite` and
//! `env import`/`env export`, which every U-Boot build Ballast uses has:
//!
//! * tries count down through a table, `1` → `0` up to [`MAX_TRIES`] (GRUB's script does
//!   the same); a state with more tries is refused when written;
//! * the write order is two numbers. `ballast_seq` is set by the system: every
//!   [`BootDir::write_state`] writes the newest copy's `seq + 1` and `ballast_seq_boot=0`.
//!   The script cannot add to `seq`, so it keeps it and steps `ballast_seq_boot` through
//!   a table instead (it writes at most once per counted try, so at most
//!   2 × [`MAX_TRIES`] times before the system writes again).
//!
//! Of two valid copies the one with the larger `(seq, seq_boot)` wins (`itest -gt`,
//! `-eq`; ties go to copy 0). Every write — by the script or by
//! [`BootDir::write_state`] — goes to the *other* copy, so a power cut mid-write leaves
//! the copy that was read intact. A copy without `ballast_seq_boot` (written by an older
//! Ballast) reads as `0`; an older boot script, which counted with `setexpr`, reads only
//! the keys it knows and writes `seq + 1`, which orders the same way.
//!
//! # Boot rule (shared with [`crate::bls`])
//!
//! Boot the default slot when good, or when it has tries left (decrement first, write,
//! then boot); otherwise boot the other slot when it is good or has tries left (same
//! counting); when both are bad boot the default anyway. The script never changes the
//! default itself: userspace sees it booted the non-default slot and records a rollback.
//!
//! A try that cannot be recorded is not taken: `fatwrite` must succeed *and* the copy
//! read back must carry the new `seq` (belt and braces against a medium that drops
//! writes silently); when that fails and the other slot is good, the script boots the other
//! slot, so an unwritable boot partition can never loop a broken update forever.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{boot_files, io_err, write_atomic, MAX_TRIES};
use crate::{Health, SlotError, SlotId, SlotStatus};

/// One slot in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    /// Boot attempts left before the slot counts as bad (0 for a good slot).
    pub tries: u32,
    /// Blessed by userspace after a healthy boot.
    pub good: bool,
}

impl SlotState {
    pub fn health(self) -> Health {
        if self.good {
            Health::Good
        } else if self.tries > 0 {
            // The file does not count tries done.
            Health::Trying {
                tries_left: self.tries,
                tries_done: 0,
            }
        } else {
            Health::Bad
        }
    }
    fn usable(self) -> bool {
        self.good || self.tries > 0
    }
}

/// The whole slot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The system's write counter (see the module docs).
    pub seq: u32,
    /// The boot script's writes since `seq` was last written (U-Boot only; 0 elsewhere).
    pub seq_boot: u32,
    pub default: SlotId,
    pub a: SlotState,
    pub b: SlotState,
}

/// What the boot script does with a state: which slot it boots, and whether that boot
/// consumes a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootChoice {
    pub slot: SlotId,
    pub counts: bool,
}

impl State {
    /// A fresh boot partition: `slot` installed and good, the other empty (bad).
    pub fn new(default: SlotId) -> State {
        let mut s = State {
            seq: 0,
            seq_boot: 0,
            default,
            a: SlotState {
                tries: 0,
                good: false,
            },
            b: SlotState {
                tries: 0,
                good: false,
            },
        };
        s.slot_mut(default).good = true;
        s
    }

    pub fn slot(&self, slot: SlotId) -> SlotState {
        match slot {
            SlotId::A => self.a,
            SlotId::B => self.b,
        }
    }

    fn slot_mut(&mut self, slot: SlotId) -> &mut SlotState {
        match slot {
            SlotId::A => &mut self.a,
            SlotId::B => &mut self.b,
        }
    }

    /// A new image was written into `slot`: it gets `tries` tries and becomes the default.
    pub fn install(&mut self, slot: SlotId, tries: u32) {
        *self.slot_mut(slot) = SlotState { tries, good: false };
        self.default = slot;
    }

    /// The booted slot passed its health check.
    pub fn mark_good(&mut self, slot: SlotId) {
        *self.slot_mut(slot) = SlotState {
            tries: 0,
            good: true,
        };
    }

    /// Never boot `slot` again while the other is usable.
    pub fn mark_bad(&mut self, slot: SlotId) {
        *self.slot_mut(slot) = SlotState {
            tries: 0,
            good: false,
        };
    }

    /// Make `slot` the default (rollback). Does not change its health.
    pub fn set_default(&mut self, slot: SlotId) {
        self.default = slot;
    }

    /// The slot the boot script boots next, by the rule in the module docs.
    pub fn boot_choice(&self) -> BootChoice {
        let cur = self.default;
        for slot in [cur, cur.other()] {
            let s = self.slot(slot);
            if s.usable() {
                return BootChoice {
                    slot,
                    counts: !s.good,
                };
            }
        }
        BootChoice {
            slot: cur,
            counts: false,
        }
    }

    /// The state the script writes before booting: one try fewer, the same `seq`,
    /// `seq_boot` one more (unchanged when the boot does not count).
    pub fn after_boot(&self) -> State {
        let mut next = *self;
        let c = self.boot_choice();
        if c.counts {
            let s = next.slot_mut(c.slot);
            s.tries = s.tries.saturating_sub(1);
            next.seq_boot = next.seq_boot.saturating_add(1);
        }
        next
    }

    /// Its place in the write order: the larger is the newer copy.
    fn order(&self) -> (u32, u32) {
        (self.seq, self.seq_boot)
    }
}

const KEYS: [&str; 8] = [
    "ballast_a_good",
    "ballast_a_tries",
    "ballast_b_good",
    "ballast_b_tries",
    "ballast_default",
    "ballast_seq",
    "ballast_seq_boot",
    "end",
];
/// `KEYS`' index of `end`.
const END: usize = 7;
/// The most script writes between two writes by the system: one per counted try.
const MAX_SEQ_BOOT: u32 = 2 * MAX_TRIES;

/// Render the state file (byte-identical to the script's `env export -t`, minus the
/// trailing NUL U-Boot may add).
pub fn render(s: &State) -> String {
    format!(
        "ballast_a_good={}\nballast_a_tries={:x}\nballast_b_good={}\nballast_b_tries={:x}\nballast_default={}\nballast_seq={:x}\nballast_seq_boot={:x}\nend=ballast\n",
        u8::from(s.a.good),
        s.a.tries,
        u8::from(s.b.good),
        s.b.tries,
        s.default,
        s.seq,
        s.seq_boot
    )
}

/// Parse a state file. Fails on a torn copy (no final `end=ballast`), a missing key or a
/// value that is not what the script writes.
pub fn parse(text: &str) -> Result<State, SlotError> {
    parse_named(text, "slot state")
}

fn parse_named(text: &str, file: &str) -> Result<State, SlotError> {
    let perr = |line: usize, reason: String| SlotError::Parse {
        file: file.to_string(),
        line,
        reason,
    };
    // U-Boot's export may end with NUL bytes.
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    let mut vals: [Option<(usize, &str)>; 8] = [None; 8];
    let mut last_key = "";
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| perr(n + 1, format!("`{line}` is not `key=value`")))?;
        last_key = k;
        if let Some(i) = KEYS.iter().position(|x| *x == k) {
            vals[i] = Some((n + 1, v));
        }
    }
    match vals[END] {
        Some((_, "ballast")) if last_key == "end" => {}
        _ => {
            return Err(SlotError::Invalid {
                what: file.to_string(),
                reason: "no final `end=ballast` line: the copy is torn (a write did not complete) and is ignored".into(),
            })
        }
    }
    let get = |i: usize| -> Result<(usize, &str), SlotError> {
        vals[i].ok_or(SlotError::MissingField {
            file: file.to_string(),
            field: KEYS[i],
            fix:
                "rewrite the state with BootDir::write_state (osctl) or rebuild the boot partition",
        })
    };
    let hex = |i: usize| -> Result<u32, SlotError> {
        let (line, v) = get(i)?;
        let digits = v.strip_prefix("0x").unwrap_or(v);
        u32::from_str_radix(digits, 16).map_err(|_| {
            perr(
                line,
                format!("{}=`{v}` is not a hexadecimal number", KEYS[i]),
            )
        })
    };
    let flag = |i: usize| -> Result<bool, SlotError> {
        match get(i)? {
            (_, "1") => Ok(true),
            (_, "0") => Ok(false),
            (line, v) => Err(perr(line, format!("{}=`{v}` must be 0 or 1", KEYS[i]))),
        }
    };
    let (dline, dv) = get(4)?;
    let default = SlotId::parse(dv)
        .ok_or_else(|| perr(dline, format!("ballast_default=`{dv}` must be `a` or `b`")))?;
    Ok(State {
        seq: hex(5)?,
        // Absent in copies written by an older Ballast.
        seq_boot: if vals[6].is_some() { hex(6)? } else { 0 },
        default,
        a: SlotState {
            good: flag(0)?,
            tries: hex(1)?,
        },
        b: SlotState {
            good: flag(2)?,
            tries: hex(3)?,
        },
    })
}

/// Index (0 or 1) of the newer of two valid copies, by `(seq, seq_boot)`; ties go to
/// copy 0. The boot script computes exactly this.
pub fn newer_copy(copy0: &State, copy1: &State) -> usize {
    usize::from(copy1.order() > copy0.order())
}

/// `ballast/<slot>/boot.env`: the slot's kernel command line and version, for `env import -t`.
pub fn boot_env(args: &str, version: &str) -> Result<String, SlotError> {
    for (what, v) in [("kernel command line", args), ("version", version)] {
        if v.contains(['\n', '\r', '\0']) {
            return Err(SlotError::Invalid {
                what: what.into(),
                reason: "contains a line break or NUL; boot.env values are one line".into(),
            });
        }
    }
    Ok(format!("ballast_args={args}\nballast_version={version}\n"))
}

/// The boot partition of a U-Boot board, as a directory.
#[derive(Debug, Clone)]
pub struct BootDir {
    root: PathBuf,
}

impl BootDir {
    pub fn new(root: impl Into<PathBuf>) -> BootDir {
        BootDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Both copies; `None` for a missing or invalid (torn) copy.
    pub fn read_copies(&self) -> Result<[Option<State>; 2], SlotError> {
        let mut out = [None, None];
        for (i, rel) in boot_files::STATE_COPIES.iter().enumerate() {
            let path = self.root.join(rel);
            match fs::read(&path) {
                Ok(bytes) => {
                    out[i] = parse_named(
                        &String::from_utf8_lossy(&bytes),
                        &path.display().to_string(),
                    )
                    .ok()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(out)
    }

    fn newest(&self) -> Result<Option<(usize, State)>, SlotError> {
        Ok(match self.read_copies()? {
            [Some(a), Some(b)] => Some(if newer_copy(&a, &b) == 0 {
                (0, a)
            } else {
                (1, b)
            }),
            [Some(a), None] => Some((0, a)),
            [None, Some(b)] => Some((1, b)),
            [None, None] => None,
        })
    }

    /// The newest valid copy.
    pub fn read_state(&self) -> Result<State, SlotError> {
        self.newest()?
            .map(|(_, s)| s)
            .ok_or_else(|| SlotError::NoValidState {
                dir: self.root.clone(),
            })
    }

    /// Write `state` with `seq` = newest seq + 1 and `seq_boot` 0 into the copy that
    /// was *not* read (copy 0 when neither is valid): tmp file, fsync, rename, fsync dir.
    pub fn write_state(&self, state: &State) -> Result<(), SlotError> {
        let (target, seq) = match self.newest()? {
            Some((i, cur)) => (1 - i, cur.seq.wrapping_add(1)),
            None => (0, state.seq.wrapping_add(1)),
        };
        self.write_copy(
            target,
            &State {
                seq,
                seq_boot: 0,
                ..*state
            },
        )
    }

    fn write_copy(&self, copy: usize, state: &State) -> Result<(), SlotError> {
        crate::check_countable(state, "U-Boot")?;
        write_atomic(
            &self.root.join(boot_files::STATE_COPIES[copy]),
            render(state).as_bytes(),
        )
    }

    /// A new boot partition (builder): both copies, identical.
    pub fn initialize(&self, state: &State) -> Result<(), SlotError> {
        crate::check_countable(state, "U-Boot")?;
        for rel in boot_files::STATE_COPIES {
            write_atomic(&self.root.join(rel), render(state).as_bytes())?;
        }
        Ok(())
    }

    /// Write `ballast/<slot>/boot.env`.
    pub fn write_boot_env(&self, slot: SlotId, args: &str, version: &str) -> Result<(), SlotError> {
        write_atomic(
            &self.root.join(boot_files::boot_env(slot)),
            boot_env(args, version)?.as_bytes(),
        )
    }

    fn version_of(&self, slot: SlotId) -> Result<Option<String>, SlotError> {
        let path = self.root.join(boot_files::boot_env(slot));
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t
                .lines()
                .find_map(|l| l.strip_prefix("ballast_version="))
                .map(str::to_string)
                .filter(|v| !v.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Both slots; `is_default` marks the slot the script boots next.
    pub fn status(&self) -> Result<Vec<SlotStatus>, SlotError> {
        let st = self.read_state()?;
        let next = st.boot_choice().slot;
        SlotId::ALL
            .iter()
            .map(|&slot| {
                Ok(SlotStatus {
                    slot,
                    version: self.version_of(slot)?,
                    health: st.slot(slot).health(),
                    is_default: slot == next,
                })
            })
            .collect()
    }

    fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), SlotError> {
        let mut s = self.read_state()?;
        f(&mut s);
        self.write_state(&s)
    }

    pub fn mark_good(&self, slot: SlotId) -> Result<(), SlotError> {
        self.update(|s| s.mark_good(slot))
    }

    pub fn mark_bad(&self, slot: SlotId) -> Result<(), SlotError> {
        self.update(|s| s.mark_bad(slot))
    }

    /// After writing a new image into `slot`: `tries` tries, default.
    pub fn install(&self, slot: SlotId, tries: u32) -> Result<(), SlotError> {
        if tries == 0 || tries > MAX_TRIES {
            return Err(SlotError::Invalid {
                what: "tries".into(),
                reason: format!("{tries}: give 1..={MAX_TRIES} (0 would install the slot as bad)"),
            });
        }
        self.update(|s| s.install(slot, tries))
    }

    /// Rollback: make `slot` the default. Refused when it is bad (the script would skip it).
    pub fn set_default(&self, slot: SlotId) -> Result<(), SlotError> {
        let s = self.read_state()?;
        if s.slot(slot).health() == Health::Bad {
            return Err(SlotError::Invalid {
                what: format!("default slot {slot}"),
                reason: format!("slot {slot} is bad (not good, no tries left); reinstall it first"),
            });
        }
        self.update(|s| s.set_default(slot))
    }

    /// Run the boot script's logic on the files (tests, dry runs): returns the slot it
    /// boots and writes the counted-down state to the other copy, as the script does.
    pub fn simulate_boot(&self) -> Result<SlotId, SlotError> {
        let (read, s) = self.newest()?.ok_or_else(|| SlotError::NoValidState {
            dir: self.root.clone(),
        })?;
        let c = s.boot_choice();
        if c.counts {
            self.write_copy(1 - read, &s.after_boot())?;
        }
        Ok(c.slot)
    }
}

/// How the boot script reaches the boot partition and starts the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptParams {
    /// U-Boot block interface, `virtio`, `mmc`, `usb`; or `${devtype}`, which
    /// distro boot sets to the device it found `boot.scr` on.
    pub devtype: String,
    /// Device number (`0`, or `${devnum}`).
    pub devnum: String,
    /// Boot partition number (`1`, or `${distro_bootpart}`).
    pub boot_part: String,
    /// `bootz` (armv7 zImage) or `booti` (arm64 Image).
    pub boot_cmd: String,
    /// Device tree address argument, `${fdtcontroladdr}` on qemu_arm (U-Boot's own DT).
    pub fdt: String,
    /// A device tree file on the boot partition to boot the kernel with
    /// instead, when it loads (`dtbs/${fdtfile}`: the kernel's own DT for the
    /// model U-Boot detected); `fdt` is the fallback.
    pub fdt_file: Option<String>,
    /// `name=value` variables set before anything is loaded (load addresses).
    pub env: Vec<String>,
    /// A text file in the boot partition's root whose contents the script adds
    /// to the kernel command line when it exists ([`CMDLINE_EXTRA`] on boards
    /// started by distro boot), the way `cmdline.txt` works on Raspberry Pi
    /// OS: the user's own arguments, kept across upgrades (a slot's
    /// `boot.env` is replaced by each one).
    pub extra_args_file: Option<String>,
    /// Kernel arguments for one model, keyed by the device tree file U-Boot
    /// chose for it (`${fdtfile}`), added after the slot's command line (see
    /// the board file's `model_cmdline`).
    pub model_args: Vec<(String, String)>,
}

/// The boot partition's file of extra kernel arguments on distro-boot boards.
pub const CMDLINE_EXTRA: &str = "cmdline_extra.txt";

impl ScriptParams {
    /// QEMU `virt` (armv7) with a virtio disk: partition 1, `bootz`, U-Boot's DT.
    pub fn qemu_arm() -> ScriptParams {
        ScriptParams {
            devtype: "virtio".into(),
            devnum: "0".into(),
            boot_part: boot_files::PART_BOOT.to_string(),
            boot_cmd: "bootz".into(),
            fdt: "${fdtcontroladdr}".into(),
            fdt_file: None,
            env: Vec::new(),
            extra_args_file: None,
            model_args: Vec::new(),
        }
    }

    /// A board's own U-Boot running `boot.scr` by distro boot (Raspberry Pi,
    /// BeagleBone): the partition distro boot found the script on, and the
    /// kernel's device tree for the detected model.
    pub fn distro_boot(boot_cmd: &str, env: &[String]) -> ScriptParams {
        ScriptParams {
            devtype: "${devtype}".into(),
            devnum: "${devnum}".into(),
            boot_part: "${distro_bootpart}".into(),
            boot_cmd: boot_cmd.into(),
            fdt: "${fdtcontroladdr}".into(),
            fdt_file: Some("dtbs/${fdtfile}".into()),
            env: env.to_vec(),
            extra_args_file: Some(CMDLINE_EXTRA.into()),
            model_args: Vec::new(),
        }
    }
}

/// The U-Boot hush script (`boot.scr` source). Uses `${ramdisk_addr_r}` as scratch for
/// the state files before the initrd is loaded there, and `${kernel_addr_r}`.
pub fn boot_script(p: &ScriptParams) -> String {
    let dev = format!("{} {}:{}", p.devtype, p.devnum, p.boot_part);
    let keys = KEYS.join(" ");
    let clear: String = KEYS
        .iter()
        .map(|k| format!("setenv {k}; "))
        .collect::<String>();
    let clear = clear.trim_end();
    let mut s = String::new();
    s.push_str(
        "# Ballast boot script, generated by ballast-slot: A/B slot choice with boot counting.\n\
         # State: ballast/state.0.env and ballast/state.1.env (hex numbers, last line end=ballast);\n\
         # the newer complete copy is read, the counted-down state goes to the other copy.\n\
         setenv ballast_ok0 0\n\
         setenv ballast_ok1 0\n"
    );
    for var in &p.env {
        if let Some((k, v)) = var.split_once('=') {
            s.push_str(&format!("setenv {k} {v}\n"));
        }
    }
    for n in 0..2 {
        s.push_str(&format!(
            "{clear}\n\
             if fatload {dev} ${{ramdisk_addr_r}} ballast/state.{n}.env; then\n\
             \x20 if env import -t ${{ramdisk_addr_r}} ${{filesize}} {keys}; then\n\
             \x20   if test \"${{end}}\" = \"ballast\" -a -n \"${{ballast_seq}}\"; then\n\
             \x20     setenv ballast_ok{n} 1; setenv ballast_seq{n} ${{ballast_seq}}; setenv ballast_sb{n} 0\n\
             \x20     if test -n \"${{ballast_seq_boot}}\"; then setenv ballast_sb{n} ${{ballast_seq_boot}}; fi\n\
             \x20   else\n\
             \x20     echo \"ballast: ballast/state.{n}.env is incomplete (torn write); ignoring it\"\n\
             \x20   fi\n\
             \x20 fi\n\
             fi\n"
        ));
    }
    s.push_str(&format!(
        "setenv ballast_copy none\n\
         if test \"${{ballast_ok0}}\" = 1; then\n\
         \x20 setenv ballast_copy 0\n\
         \x20 if test \"${{ballast_ok1}}\" = 1; then\n\
         \x20   if itest ${{ballast_seq1}} -gt ${{ballast_seq0}}; then setenv ballast_copy 1; fi\n\
         \x20   if itest ${{ballast_seq1}} -eq ${{ballast_seq0}}; then\n\
         \x20     if itest ${{ballast_sb1}} -gt ${{ballast_sb0}}; then setenv ballast_copy 1; fi\n\
         \x20   fi\n\
         \x20 fi\n\
         else\n\
         \x20 if test \"${{ballast_ok1}}\" = 1; then setenv ballast_copy 1; fi\n\
         fi\n\
         {clear}\n\
         if test \"${{ballast_copy}}\" = none; then\n\
         \x20 echo \"ballast: no valid slot state in ballast/state.0.env or ballast/state.1.env; booting slot a without counting\"\n\
         \x20 setenv ballast_default a; setenv ballast_a_good 1; setenv ballast_a_tries 0; setenv ballast_b_good 0; setenv ballast_b_tries 0\n\
         else\n\
         \x20 fatload {dev} ${{ramdisk_addr_r}} ballast/state.${{ballast_copy}}.env\n\
         \x20 env import -t ${{ramdisk_addr_r}} ${{filesize}} {keys}\n\
         \x20 if test -z \"${{ballast_seq_boot}}\"; then setenv ballast_seq_boot 0; fi\n\
         \x20 if test \"${{ballast_copy}}\" = 0; then setenv ballast_target 1; else setenv ballast_target 0; fi\n\
         fi\n\
         if test \"${{ballast_default}}\" = b; then\n\
         \x20 setenv ballast_slot b; setenv ballast_other a\n\
         \x20 setenv ballast_sg ${{ballast_b_good}}; setenv ballast_st ${{ballast_b_tries}}\n\
         \x20 setenv ballast_og ${{ballast_a_good}}; setenv ballast_ot ${{ballast_a_tries}}\n\
         else\n\
         \x20 setenv ballast_slot a; setenv ballast_other b\n\
         \x20 setenv ballast_sg ${{ballast_a_good}}; setenv ballast_st ${{ballast_a_tries}}\n\
         \x20 setenv ballast_og ${{ballast_b_good}}; setenv ballast_ot ${{ballast_b_tries}}\n\
         fi\n\
         setenv ballast_boot ${{ballast_slot}}\n\
         setenv ballast_count 0\n\
         if test \"${{ballast_sg}}\" != 1; then\n\
         \x20 if test \"${{ballast_st}}\" != 0; then\n\
         \x20   setenv ballast_count 1\n\
         \x20 else\n\
         \x20   echo \"ballast: slot ${{ballast_slot}} is bad (no tries left)\"\n\
         \x20   if test \"${{ballast_og}}\" = 1; then\n\
         \x20     setenv ballast_boot ${{ballast_other}}\n\
         \x20   else\n\
         \x20     if test \"${{ballast_ot}}\" != 0; then\n\
         \x20       setenv ballast_boot ${{ballast_other}}; setenv ballast_count 1\n\
         \x20     else\n\
         \x20       echo \"ballast: both slots are bad; booting default slot ${{ballast_slot}} anyway\"\n\
         \x20     fi\n\
         \x20   fi\n\
         \x20 fi\n\
         fi\n\
         if test \"${{ballast_count}}\" = 1; then\n\
         \x20 if test \"${{ballast_boot}}\" = a; then setenv ballast_t ${{ballast_a_tries}}; else setenv ballast_t ${{ballast_b_tries}}; fi\n\
         \x20 setenv ballast_left none\n\
         {tries_table}\
         \x20 setenv ballast_next none\n\
         {seq_boot_table}\
         \x20 setenv ballast_written 0\n\
         \x20 if test \"${{ballast_left}}\" = none -o \"${{ballast_next}}\" = none; then\n\
         \x20   echo \"ballast: tries ${{ballast_t}} or ballast_seq_boot=${{ballast_seq_boot}} in ballast/state.${{ballast_copy}}.env is beyond what this script counts\"\n\
         \x20 else\n\
         \x20   if test \"${{ballast_boot}}\" = a; then setenv ballast_a_tries ${{ballast_left}}; else setenv ballast_b_tries ${{ballast_left}}; fi\n\
         \x20   setenv ballast_seq_boot ${{ballast_next}}\n\
         \x20   env export -t ${{ramdisk_addr_r}} {keys}\n\
         \x20   setenv ballast_wseq ${{ballast_seq}}\n\
         \x20   if fatwrite {dev} ${{ramdisk_addr_r}} ballast/state.${{ballast_target}}.env ${{filesize}}; then\n\
         \x20     setenv ballast_seq; setenv ballast_seq_boot\n\
         \x20     if fatload {dev} ${{ramdisk_addr_r}} ballast/state.${{ballast_target}}.env; then\n\
         \x20       env import -t ${{ramdisk_addr_r}} ${{filesize}} ballast_seq ballast_seq_boot\n\
         \x20       if test \"${{ballast_seq}}\" = \"${{ballast_wseq}}\" -a \"${{ballast_seq_boot}}\" = \"${{ballast_next}}\"; then setenv ballast_written 1; fi\n\
         \x20     fi\n\
         \x20   fi\n\
         \x20 fi\n\
         \x20 if test \"${{ballast_written}}\" = 1; then\n\
         \x20   echo \"ballast: booting slot ${{ballast_boot}} (tries left ${{ballast_left}})\"\n\
         \x20 else\n\
         \x20   echo \"ballast: could not write ballast/state.${{ballast_target}}.env\"\n\
         \x20   if test \"${{ballast_boot}}\" = \"${{ballast_slot}}\" -a \"${{ballast_og}}\" = 1; then\n\
         \x20     setenv ballast_boot ${{ballast_other}}\n\
         \x20     echo \"ballast: cannot count tries; booting good slot ${{ballast_boot}} instead\"\n\
         \x20   else\n\
         \x20     echo \"ballast: booting slot ${{ballast_boot}} without counting\"\n\
         \x20   fi\n\
         \x20 fi\n\
         else\n\
         \x20 echo \"ballast: booting slot ${{ballast_boot}}\"\n\
         fi\n\
         setenv ballast_args; setenv ballast_version\n\
         if fatload {dev} ${{ramdisk_addr_r}} ballast/${{ballast_boot}}/boot.env; then\n\
         \x20 env import -t ${{ramdisk_addr_r}} ${{filesize}} ballast_args ballast_version\n\
         fi\n\
         {extra_load}\
         {model_load}\
         if fatload {dev} ${{kernel_addr_r}} ballast/${{ballast_boot}}/{kernel}; then\n\
         {fdt_load}\
         \x20 if fatload {dev} ${{ramdisk_addr_r}} ballast/${{ballast_boot}}/{initrd}; then\n\
         \x20   setenv bootargs \"${{ballast_args}}{model_arg}{extra_arg} ballast.slot=${{ballast_boot}}\"\n\
         \x20   echo \"ballast: starting version ${{ballast_version}} from slot ${{ballast_boot}}\"\n\
         \x20   {cmd} ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} {fdt}\n\
         \x20 fi\n\
         fi\n\
         echo \"ballast: boot of slot ${{ballast_boot}} failed\"\n",
        kernel = boot_files::KERNEL,
        initrd = boot_files::INITRD,
        tries_table = step_table(
            "ballast_t",
            "ballast_left",
            (1..=MAX_TRIES).map(|t| (t, t - 1))
        ),
        seq_boot_table = step_table(
            "ballast_seq_boot",
            "ballast_next",
            (0..MAX_SEQ_BOOT).map(|n| (n, n + 1))
        ),
        cmd = p.boot_cmd,
        // The file's text, NUL-terminated in memory so `setexpr.s` reads it
        // as a string (a trailing newline is whitespace to the kernel). A
        // U-Boot without setexpr (the BeagleBone's) must not write to an
        // empty address: the file is ignored there.
        extra_load = match &p.extra_args_file {
            Some(file) => format!(
                "setenv ballast_extra\n\
                 if fatload {dev} ${{ramdisk_addr_r}} {file}; then\n\
                 \x20 if setexpr ballast_end ${{ramdisk_addr_r}} + ${{filesize}}; then\n\
                 \x20   mw.b ${{ballast_end}} 0 1\n\
                 \x20   setexpr.s ballast_extra *${{ramdisk_addr_r}}\n\
                 \x20   echo \"ballast: kernel arguments from {file}: ${{ballast_extra}}\"\n\
                 \x20 else\n\
                 \x20   echo \"ballast: {file} ignored: this U-Boot has no setexpr\"\n\
                 \x20 fi\n\
                 fi\n"
            ),
            None => String::new(),
        },
        model_load = if p.model_args.is_empty() {
            String::new()
        } else {
            let mut m = String::from("setenv ballast_model\n");
            for (fdtfile, args) in &p.model_args {
                m.push_str(&format!(
                    "if test \"${{fdtfile}}\" = \"{fdtfile}\"; then setenv ballast_model \"{args}\"; fi\n"
                ));
            }
            m
        },
        model_arg = if p.model_args.is_empty() {
            ""
        } else {
            " ${ballast_model}"
        },
        extra_arg = if p.extra_args_file.is_some() {
            " ${ballast_extra}"
        } else {
            ""
        },
        fdt = if p.fdt_file.is_some() {
            "${ballast_fdt}"
        } else {
            &p.fdt
        },
        fdt_load = match &p.fdt_file {
            Some(file) => format!(
                "\x20 setenv ballast_fdt {fdt}\n\
                 \x20 if fatload {dev} ${{fdt_addr_r}} {file}; then setenv ballast_fdt ${{fdt_addr_r}}; fi\n",
                fdt = p.fdt
            ),
            None => String::new(),
        },
    ));
    s
}

/// Script lines that set `to` to `b` when `from` is `a`, for each `(a, b)` (hex):
/// the script's arithmetic, as a table.
fn step_table(from: &str, to: &str, steps: impl Iterator<Item = (u32, u32)>) -> String {
    steps
        .map(|(a, b)| format!("  if test \"${{{from}}}\" = {a:x}; then setenv {to} {b:x}; fi\n"))
        .collect()
}

const IH_MAGIC: u32 = 0x2705_1956;
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM: u8 = 2;
const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;

/// Wrap a script as a legacy U-Boot image (`mkimage -A arm -O linux -T script -C none
/// -n NAME` with `SOURCE_DATE_EPOCH=0`): 64-byte header with header and data CRC32,
/// data = `[len u32 BE][0 u32][script]`. The time stamp is 0 so builds are reproducible.
pub fn mkimage_script(text: &str, name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(text.len() + 8);
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text.as_bytes());
    let mut h = [0u8; 64];
    h[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    // 4..8 header CRC, 8..12 time (0)
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    // 16..20 load, 20..24 entry point: 0
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = IH_OS_LINUX;
    h[29] = IH_ARCH_ARM;
    h[30] = IH_TYPE_SCRIPT;
    h[31] = IH_COMP_NONE;
    let n = name.as_bytes();
    let len = n.len().min(32);
    h[32..32 + len].copy_from_slice(&n[..len]);
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(seq: u32, default: SlotId, a: (u32, bool), b: (u32, bool)) -> State {
        State {
            seq,
            seq_boot: 0,
            default,
            a: SlotState {
                tries: a.0,
                good: a.1,
            },
            b: SlotState {
                tries: b.0,
                good: b.1,
            },
        }
    }

    #[test]
    fn state_text_round_trips() {
        let s = st(0x1f, SlotId::B, (0, true), (3, false));
        let t = render(&s);
        assert_eq!(
            t,
            "ballast_a_good=1\nballast_a_tries=0\nballast_b_good=0\nballast_b_tries=3\nballast_default=b\nballast_seq=1f\nballast_seq_boot=0\nend=ballast\n"
        );
        assert_eq!(parse(&t).unwrap(), s);
        // A copy from an older Ballast has no ballast_seq_boot: 0.
        assert_eq!(parse(&t.replace("ballast_seq_boot=0\n", "")).unwrap(), s);
        // U-Boot's export may end with a NUL; 0x prefixes are accepted.
        assert_eq!(parse(&format!("{t}\0")).unwrap(), s);
        assert_eq!(parse(&t.replace("=1f", "=0x1f")).unwrap(), s);
    }

    #[test]
    fn torn_or_broken_copies_are_rejected() {
        let t = render(&st(2, SlotId::A, (0, true), (0, false)));
        let torn = &t[..t.len() - 5];
        let e = parse(torn).unwrap_err().to_string();
        assert!(e.contains("torn"), "{e}");
        let e = parse(&t.replace("ballast_default=a", "ballast_default=c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":5:") && e.contains("`a` or `b`"), "{e}");
        let e = parse(&t.replace("ballast_seq=2\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ballast_seq"), "{e}");
        let e = parse(&t.replace("ballast_a_good=1", "ballast_a_good=yes"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 or 1"), "{e}");
        // end marker not last: a reordered or appended file is not trusted
        assert!(parse(&format!("{t}ballast_seq=9\n")).is_err());
    }

    #[test]
    fn newer_copy_orders_by_seq_then_the_scripts_writes() {
        let c = |seq, seq_boot| State {
            seq,
            seq_boot,
            ..State::new(SlotId::A)
        };
        assert_eq!(newer_copy(&c(5, 0), &c(4, 0)), 0);
        assert_eq!(newer_copy(&c(4, 0), &c(5, 0)), 1);
        assert_eq!(newer_copy(&c(7, 0), &c(7, 0)), 0);
        // The script kept seq 7 and counted a try: its copy is newer.
        assert_eq!(newer_copy(&c(7, 0), &c(7, 1)), 1);
        assert_eq!(newer_copy(&c(7, 2), &c(7, 1)), 0);
        // The system's next write (seq + 1, seq_boot 0) is newer than any of them.
        assert_eq!(newer_copy(&c(8, 0), &c(7, 0x20)), 0);
    }

    #[test]
    fn more_tries_than_the_script_counts_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let bd = BootDir::new(d.path());
        bd.initialize(&State::new(SlotId::A)).unwrap();
        let e = bd
            .install(SlotId::B, MAX_TRIES + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1..=16"), "{e}");
        let mut s = State::new(SlotId::A);
        s.install(SlotId::B, MAX_TRIES + 1);
        let e = bd.write_state(&s).unwrap_err().to_string();
        assert!(e.contains("lower `tries` in the image file"), "{e}");
        bd.install(SlotId::B, MAX_TRIES).unwrap();
    }

    #[test]
    fn the_script_does_no_arithmetic() {
        // The BeagleBone's U-Boot has no setexpr: only the optional
        // cmdline_extra.txt block may try it, as an `if` condition.
        for p in [
            ScriptParams::qemu_arm(),
            ScriptParams::distro_boot("bootz", &[]),
        ] {
            let s = boot_script(&p);
            let commands = s.lines().filter(|l| !l.trim_start().starts_with("echo"));
            for line in commands.filter(|l| l.contains("setexpr")) {
                let inside_guard = line.trim_start().starts_with("if setexpr ballast_end")
                    || line.trim_start().starts_with("setexpr.s ballast_extra");
                assert!(inside_guard, "setexpr outside the optional block: {line}");
            }
        }
        // The tables cover every tries value and every script write.
        let s = boot_script(&ScriptParams::qemu_arm());
        assert!(s.contains("if test \"${ballast_t}\" = 10; then setenv ballast_left f; fi"));
        assert!(s.contains("if test \"${ballast_t}\" = 1; then setenv ballast_left 0; fi"));
        assert!(s.contains("if test \"${ballast_seq_boot}\" = 1f; then setenv ballast_next 20; fi"));
        assert!(!s.contains("= 0; then setenv ballast_left"));
    }

    #[test]
    fn boot_rule() {
        use SlotId::*;
        let c = |s: State| {
            let b = s.boot_choice();
            (b.slot, b.counts)
        };
        assert_eq!(c(st(0, A, (0, true), (0, false))), (A, false));
        assert_eq!(c(st(0, B, (0, true), (2, false))), (B, true));
        assert_eq!(c(st(0, B, (0, true), (0, false))), (A, false)); // b exhausted -> a
        assert_eq!(c(st(0, B, (1, false), (0, false))), (A, true)); // other trying
        assert_eq!(c(st(0, B, (0, false), (0, false))), (B, false)); // both bad: default
        let s = st(0, B, (0, true), (1, false)).after_boot();
        assert_eq!(
            s.b,
            SlotState {
                tries: 0,
                good: false
            }
        );
        assert_eq!(s.boot_choice().slot, A);
    }

    #[test]
    fn update_story_on_the_files() {
        let d = tempfile::tempdir().unwrap();
        let bd = BootDir::new(d.path());
        assert!(bd
            .read_state()
            .unwrap_err()
            .to_string()
            .contains("end=ballast"));
        bd.initialize(&State::new(SlotId::A)).unwrap();
        bd.write_boot_env(SlotId::B, "console=ttyAMA0", "1.1.0")
            .unwrap();
        bd.install(SlotId::B, 2).unwrap();
        let s1 = fs::read_to_string(d.path().join("ballast/state.1.env")).unwrap();
        assert!(
            s1.contains("ballast_seq=1\n") && s1.contains("ballast_b_tries=2\n"),
            "{s1}"
        );
        assert_eq!(bd.simulate_boot().unwrap(), SlotId::B);
        // written to copy 0 (copy 1 was read) as the script does: seq 1 kept,
        // its first write since
        let s0 = parse(&fs::read_to_string(d.path().join("ballast/state.0.env")).unwrap()).unwrap();
        assert_eq!((s0.seq, s0.seq_boot, s0.b.tries), (1, 1, 1));
        let status = bd.status().unwrap();
        assert_eq!(status[1].version.as_deref(), Some("1.1.0"));
        assert_eq!(
            status[1].health,
            Health::Trying {
                tries_left: 1,
                tries_done: 0
            }
        );
        assert!(status[1].is_default);
        assert_eq!(bd.simulate_boot().unwrap(), SlotId::B);
        assert_eq!(bd.simulate_boot().unwrap(), SlotId::A); // rolled back
        assert!(bd
            .set_default(SlotId::B)
            .unwrap_err()
            .to_string()
            .contains("bad"));
        bd.install(SlotId::B, 3).unwrap();
        bd.mark_good(SlotId::B).unwrap();
        assert_eq!(
            bd.read_state().unwrap().b,
            SlotState {
                tries: 0,
                good: true
            }
        );
        bd.set_default(SlotId::A).unwrap();
        assert!(bd.status().unwrap()[0].is_default);
    }

    #[test]
    fn torn_newer_copy_falls_back_to_older() {
        let d = tempfile::tempdir().unwrap();
        let bd = BootDir::new(d.path());
        bd.initialize(&State::new(SlotId::A)).unwrap();
        bd.install(SlotId::B, 3).unwrap(); // copy 1, seq 1
        let p = d.path().join("ballast/state.1.env");
        let t = fs::read_to_string(&p).unwrap();
        fs::write(&p, &t[..t.len() / 2]).unwrap();
        let s = bd.read_state().unwrap();
        assert_eq!((s.seq, s.default), (0, SlotId::A));
        // the next write goes to the torn copy, never over the one read
        bd.mark_good(SlotId::A).unwrap();
        assert!(parse(&fs::read_to_string(&p).unwrap()).is_ok());
    }

    #[test]
    fn boot_env_text() {
        assert_eq!(
            boot_env("console=ttyAMA0 ro", "1.0.0").unwrap(),
            "ballast_args=console=ttyAMA0 ro\nballast_version=1.0.0\n"
        );
        assert!(boot_env("a\nb", "1").is_err());
    }

    #[test]
    fn script_mentions_the_boot_files() {
        let s = boot_script(&ScriptParams::qemu_arm());
        assert!(s.contains("fatload virtio 0:1 ${kernel_addr_r} ballast/${ballast_boot}/vmlinuz"));
        assert!(
            s.contains("bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}")
        );
        assert!(s.contains(
            "fatwrite virtio 0:1 ${ramdisk_addr_r} ballast/state.${ballast_target}.env ${filesize}"
        ));
    }

    #[test]
    fn distro_boot_script_uses_the_found_partition_and_the_kernels_dt() {
        let env = vec!["kernel_addr_r=0x00200000".to_owned()];
        let s = boot_script(&ScriptParams::distro_boot("booti", &env));
        assert!(s.contains("setenv kernel_addr_r 0x00200000\n"), "{s}");
        let dev = "${devtype} ${devnum}:${distro_bootpart}";
        assert!(s.contains(&format!(
            "fatload {dev} ${{kernel_addr_r}} ballast/${{ballast_boot}}/vmlinuz"
        )));
        assert!(s.contains(&format!(
            "if fatload {dev} ${{fdt_addr_r}} dtbs/${{fdtfile}}; then setenv ballast_fdt ${{fdt_addr_r}}; fi"
        )));
        assert!(s.contains("booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${ballast_fdt}"));
        // The DT is loaded before the initrd, whose size ${filesize} must be.
        let dt = s.find("dtbs/${fdtfile}").unwrap();
        let rd = s.find("ballast/${ballast_boot}/initrd.img").unwrap();
        assert!(dt < rd);
        // The user's extra kernel arguments, read before the kernel, added
        // before the slot (so ballast.slot is the script's, whatever they say).
        let extra = s
            .find(&format!(
                "if fatload {dev} ${{ramdisk_addr_r}} cmdline_extra.txt; then"
            ))
            .unwrap();
        assert!(extra < s.find("ballast/${ballast_boot}/vmlinuz").unwrap());
        assert!(s.contains("setexpr.s ballast_extra *${ramdisk_addr_r}"));
        assert!(s.contains(
            "setenv bootargs \"${ballast_args} ${ballast_extra} ballast.slot=${ballast_boot}\""
        ));
    }

    #[test]
    fn model_arguments_go_after_the_slots_command_line() {
        let mut p = ScriptParams::distro_boot("bootz", &[]);
        p.model_args = vec![(
            "bcm2836-rpi-2-b.dtb".into(),
            "console=ttyAMA0,115200".into(),
        )];
        let s = boot_script(&p);
        assert!(s.contains(
            "if test \"${fdtfile}\" = \"bcm2836-rpi-2-b.dtb\"; then setenv ballast_model \"console=ttyAMA0,115200\"; fi"
        ));
        assert!(s.contains(
            "setenv bootargs \"${ballast_args} ${ballast_model} ${ballast_extra} ballast.slot=${ballast_boot}\""
        ));
        // Set before the kernel loads, cleared first: no model, no arguments.
        let clear = s.find("setenv ballast_model\n").unwrap();
        assert!(clear < s.find("ballast/${ballast_boot}/vmlinuz").unwrap());
    }

    #[test]
    fn qemu_arm_script_reads_no_extra_arguments() {
        // Its script stays as it was before cmdline_extra.txt existed.
        let s = boot_script(&ScriptParams::qemu_arm());
        assert!(!s.contains("cmdline_extra"));
        assert!(s.contains("setenv bootargs \"${ballast_args} ballast.slot=${ballast_boot}\""));
    }

    #[test]
    fn legacy_image_header() {
        let img = mkimage_script("echo hi\n", "ballast boot");
        assert_eq!(&img[0..4], &[0x27, 0x05, 0x19, 0x56]);
        assert_eq!(u32::from_be_bytes(img[12..16].try_into().unwrap()), 16);
        let mut h = img[..64].to_vec();
        let hcrc = u32::from_be_bytes(h[4..8].try_into().unwrap());
        h[4..8].fill(0);
        assert_eq!(crc32fast::hash(&h), hcrc);
        assert_eq!(
            u32::from_be_bytes(img[24..28].try_into().unwrap()),
            crc32fast::hash(&img[64..])
        );
        assert_eq!(&img[64..72], &[0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(&img[72..], b"echo hi\n");
        assert_eq!(&img[28..32], &[5, 2, 6, 0]);
    }
}
