//! Slot state for legacy BIOS boots of the x86_64 disk: GRUB (i386-pc) reads two
//! environment blocks on the boot partition, counts tries down and boots the slot's
//! kernel with the same command line as its BLS entry. The UEFI path (systemd-boot,
//! [`crate::bls`]) and this one live side by side on one ESP; [`crate::install`] keeps
//! them in step so one disk boots on either firmware.
//!
//! # Files (on the boot partition)
//!
//! * `ballast/grub/grub.cfg` — the boot logic ([`script`]), fixed, written by the builder.
//! * `ballast/grubenv.0`, `ballast/grubenv.1` — two copies of the slot state, each a
//!   GRUB environment block: exactly 1024 bytes, `# GRUB Environment Block\n`, then
//!   `key=value\n` lines, padded with `#`:
//!
//!   ```text
//!   ballast_gen=1
//!   ballast_default=b
//!   ballast_a_good=1
//!   ballast_a_tries=0
//!   ballast_b_good=0
//!   ballast_b_tries=3
//!   ballast_check=1
//!   ```
//!
//!   Numbers are decimal: GRUB's script has no arithmetic, so [`script`] counts down
//!   by string comparison (a table up to [`MAX_TRIES`]).
//! * `ballast/<slot>/grub.cfg` — the slot's boot entry ([`slot_cfg`]): its version,
//!   `linux` with the slot's BLS options plus `ballast.slot=`, and `initrd`.
//!
//! # Which copy, and why a power cut cannot lose both
//!
//! `ballast_gen` is a generation counter modulo 3. Every write, by GRUB's `save_env` or
//! by [`GrubDir::write_state`], goes to the copy that was *not* read, with the read
//! copy's generation + 1 (mod 3). Of two valid copies, copy 1 is newer exactly when
//! `gen1 = gen0 + 1 (mod 3)`, otherwise copy 0 (ties, the fresh image, go to copy 0);
//! with only two copies written alternately the two generations always differ by
//! ±1, so this picks the last write without arithmetic.
//!
//! A copy is valid when its header is intact and `ballast_check` (the last key)
//! equals `ballast_gen` (the first). A write that tears inside the content changes the
//! head and not the tail (or the reverse): the new generation differs from the one the
//! copy held (it was the older copy: new = read + 1, old = read − 1, mod 3), so the
//! torn copy fails the check and the other, untouched copy is used. The content stays
//! under 200 bytes, inside the block's first 512-byte sector; the second sector is `#`
//! padding in every version, so a write torn between the sectors changes nothing.
//! The device (sysd) never writes in place: it replaces a copy atomically (temp file,
//! rename, ADR 0003), so GRUB finds either the old or the new file.
//!
//! # Boot rule (shared with [`crate::bls`] and [`crate::uboot`])
//!
//! The same [`State`] as U-Boot's (`seq` is the generation): boot the default slot when
//! good, or when it has tries left (decrement first, write, then boot); otherwise the
//! other slot by the same rule; both bad: the default anyway. A try that cannot be
//! recorded (`save_env` fails, or the copy read back lacks the new generation) is not
//! taken: the other slot boots when it is good.

use std::fs;
use std::path::{Path, PathBuf};

use crate::uboot::{SlotState, State};
use crate::{boot_files, io_err, write_atomic, MAX_TRIES};
use crate::{Health, SlotError, SlotId, SlotStatus};

/// GRUB's environment block size.
pub const ENV_SIZE: usize = 1024;
/// GRUB's environment block header.
pub const ENV_HEADER: &str = "# GRUB Environment Block\n";

/// The two copies of the slot state.
pub const ENV_COPIES: [&str; 2] = ["ballast/grubenv.0", "ballast/grubenv.1"];
/// The boot logic, GRUB's configuration file (core.img's prefix is `ballast/grub`).
pub const GRUB_CFG: &str = "ballast/grub/grub.cfg";
/// Directory of `grub.cfg` on the boot partition (core.img's `$prefix`).
pub const GRUB_DIR: &str = "ballast/grub";

/// `ballast/<slot>/grub.cfg`.
pub fn slot_cfg_path(slot: SlotId) -> String {
    format!("{}/{}/grub.cfg", boot_files::SLOT_DIR, slot.as_str())
}

const KEYS: [&str; 7] = [
    "ballast_gen",
    "ballast_default",
    "ballast_a_good",
    "ballast_a_tries",
    "ballast_b_good",
    "ballast_b_tries",
    "ballast_check",
];

/// One environment block holding `state` (its `seq` taken modulo 3).
pub fn render_env(state: &State) -> Result<Vec<u8>, SlotError> {
    crate::check_countable(state, "BIOS")?;
    let gen = state.seq % 3;
    let text = format!(
        "{ENV_HEADER}ballast_gen={gen}\nballast_default={}\nballast_a_good={}\nballast_a_tries={}\nballast_b_good={}\nballast_b_tries={}\nballast_check={gen}\n",
        state.default,
        u8::from(state.a.good),
        state.a.tries,
        u8::from(state.b.good),
        state.b.tries,
    );
    let mut block = text.into_bytes();
    // Stays in the first sector: see the module doc (power cuts).
    debug_assert!(block.len() <= 512);
    block.resize(ENV_SIZE, b'#');
    Ok(block)
}

/// Parse one environment block. Fails on a wrong size or header, a torn copy
/// (`ballast_check` ≠ `ballast_gen`), a missing key or a value the script never writes.
pub fn parse_env(bytes: &[u8], file: &str) -> Result<State, SlotError> {
    let invalid = |reason: String| SlotError::Invalid {
        what: file.to_string(),
        reason,
    };
    if bytes.len() != ENV_SIZE {
        return Err(invalid(format!(
            "{} bytes; a GRUB environment block is exactly {ENV_SIZE}",
            bytes.len()
        )));
    }
    let Some(body) = bytes.strip_prefix(ENV_HEADER.as_bytes()) else {
        return Err(invalid(format!(
            "does not start with `{}`: not a GRUB environment block",
            ENV_HEADER.trim_end()
        )));
    };
    let perr = |line: usize, reason: String| SlotError::Parse {
        file: file.to_string(),
        line,
        reason,
    };
    let mut vals: [Option<(usize, String)>; 7] = Default::default();
    // GRUB's own rule: lines up to the padding; a line starting with `#` is a comment.
    for (n, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 2;
        if raw.is_empty() || raw[0] == b'#' {
            continue;
        }
        let line = std::str::from_utf8(raw)
            .map_err(|_| perr(line_no, "not UTF-8: the copy is damaged".into()))?;
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| perr(line_no, format!("`{line}` is not `key=value`")))?;
        if let Some(i) = KEYS.iter().position(|x| *x == k) {
            vals[i] = Some((line_no, v.to_string()));
        }
    }
    let get = |i: usize| -> Result<(usize, &str), SlotError> {
        vals[i]
            .as_ref()
            .map(|(l, v)| (*l, v.as_str()))
            .ok_or(SlotError::MissingField {
                file: file.to_string(),
                field: KEYS[i],
                fix: "the copy is torn or foreign; sysd rewrites it on the next state change, or rebuild the boot partition",
            })
    };
    let num = |i: usize, max: u32| -> Result<u32, SlotError> {
        let (line, v) = get(i)?;
        v.parse::<u32>()
            .ok()
            .filter(|n| *n <= max && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| perr(line, format!("{}=`{v}` is not a number 0..={max}", KEYS[i])))
    };
    let flag = |i: usize| -> Result<bool, SlotError> {
        match get(i)? {
            (_, "1") => Ok(true),
            (_, "0") => Ok(false),
            (line, v) => Err(perr(line, format!("{}=`{v}` must be 0 or 1", KEYS[i]))),
        }
    };
    let gen = num(0, 2)?;
    let (check_line, check) = get(6)?;
    if check != gen.to_string() {
        return Err(perr(
            check_line,
            format!("ballast_check=`{check}` differs from ballast_gen={gen}: the copy is torn (a write did not complete) and is ignored"),
        ));
    }
    let (dline, dv) = get(1)?;
    let default = SlotId::parse(dv)
        .ok_or_else(|| perr(dline, format!("ballast_default=`{dv}` must be `a` or `b`")))?;
    Ok(State {
        seq: gen,
        seq_boot: 0,
        default,
        a: SlotState {
            good: flag(2)?,
            tries: num(3, MAX_TRIES)?,
        },
        b: SlotState {
            good: flag(4)?,
            tries: num(5, MAX_TRIES)?,
        },
    })
}

/// Index (0 or 1) of the newer of two valid copies by their generations (see the
/// module doc); exactly the script's comparison.
pub fn newer_copy(gen0: u32, gen1: u32) -> usize {
    if gen1 % 3 == (gen0 + 1) % 3 {
        1
    } else {
        0
    }
}

/// Characters GRUB's script language would interpret inside a word.
const GRUB_SPECIAL: &[char] = &[
    '\'', '"', '\\', '$', ';', '|', '&', '<', '>', '{', '}', '\n', '\r', '\0',
];

/// `ballast/<slot>/grub.cfg`: the slot's version and the `linux`/`initrd` lines, with
/// `options` (the BLS entry's options, without `ballast.slot=`) plus `ballast.slot=`.
/// Every word is single-quoted; a word GRUB could not take literally is refused.
pub fn slot_cfg(slot: SlotId, version: &str, options: &str) -> Result<String, SlotError> {
    let mut words: Vec<&str> = options.split_whitespace().collect();
    let slot_word = format!("ballast.slot={slot}");
    words.push(&slot_word);
    for (what, v) in
        std::iter::once(("version", version)).chain(words.iter().map(|w| ("kernel argument", *w)))
    {
        if v.contains(GRUB_SPECIAL) || v.is_empty() {
            return Err(SlotError::Invalid {
                what: format!("{what} `{v}`"),
                reason: "empty, or contains a quote, `\\`, `$`, `;`, `|`, `&`, `<`, `>`, a brace or a line break, which the GRUB boot entry cannot carry".into(),
            });
        }
    }
    let args: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    Ok(format!(
        "# Ballast slot {slot}: written by ballast-slot, sourced by /{GRUB_CFG}.\n\
         set ballast_version='{version}'\n\
         linux /{kernel} {args}\n\
         initrd /{initrd}\n",
        kernel = boot_files::kernel(slot),
        initrd = boot_files::initrd(slot),
        args = args.join(" "),
    ))
}

/// The version a slot's `grub.cfg` names.
fn version_in(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("set ballast_version="))
        .map(|v| v.trim().trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
}

/// The boot logic, `ballast/grub/grub.cfg` (module doc: the copies, the boot rule).
pub fn script() -> String {
    let keys = KEYS.join(" ");
    let unset: String = KEYS.iter().map(|k| format!("unset {k}\n")).collect();
    let mut s = String::new();
    s.push_str(
        "# Ballast legacy BIOS boot, generated by ballast-slot: A/B slot choice with boot counting.\n\
         # State: /ballast/grubenv.0 and /ballast/grubenv.1 (GRUB environment blocks); a copy is\n\
         # valid when ballast_check equals ballast_gen; the newer valid copy is read and the\n\
         # counted-down state goes to the other copy.\n\
         set timeout=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n",
    );
    for (i, copy) in ENV_COPIES.iter().enumerate() {
        s.push_str(&format!(
            "set ballast_ok{i}=0\n{unset}\
             if load_env --skip-sig --file /{copy} {keys}; then\n\
             \x20 if [ -n \"$ballast_gen\" ]; then\n\
             \x20   if [ \"$ballast_gen\" = \"$ballast_check\" ]; then\n\
             \x20     set ballast_ok{i}=1\n\
             \x20     set ballast_g{i}=\"$ballast_gen\"\n\
             \x20   fi\n\
             \x20 fi\n\
             fi\n"
        ));
    }
    s.push_str(
        "set ballast_newest=none\n\
         if [ \"$ballast_ok0\" = 1 ]; then set ballast_newest=0; fi\n\
         if [ \"$ballast_ok1\" = 1 ]; then\n\
         \x20 if [ \"$ballast_ok0\" = 1 ]; then\n",
    );
    for g in 0..3 {
        s.push_str(&format!(
            "    if [ \"$ballast_g0\" = {g} ]; then if [ \"$ballast_g1\" = {} ]; then set ballast_newest=1; fi; fi\n",
            (g + 1) % 3
        ));
    }
    s.push_str(
        "  else\n\
         \x20   set ballast_newest=1\n\
         \x20 fi\n\
         fi\n",
    );
    s.push_str(&unset);
    for (i, other) in [(0, 1), (1, 0)] {
        s.push_str(&format!(
            "if [ \"$ballast_newest\" = {i} ]; then\n\
             \x20 load_env --skip-sig --file /{copy} {keys}\n\
             \x20 set ballast_target=/{target}\n\
             fi\n",
            copy = ENV_COPIES[i],
            target = ENV_COPIES[other],
        ));
    }
    for g in 0..3 {
        s.push_str(&format!(
            "if [ \"$ballast_gen\" = {g} ]; then set ballast_next={}; fi\n",
            (g + 1) % 3
        ));
    }
    // The choice: default first, then the other; both bad: the default (or a, with no
    // valid state at all): never brick.
    s.push_str("set ballast_slot=a\nset ballast_count=0\n");
    for (first, second) in [("a", "b"), ("b", "a")] {
        s.push_str(&format!(
            "if [ \"$ballast_default\" = {first} ]; then\n\
             \x20 set ballast_slot={first}\n\
             \x20 if [ \"$ballast_{first}_good\" = 1 ]; then set ballast_slot={first}\n\
             \x20 elif [ \"$ballast_{first}_tries\" != 0 ]; then set ballast_slot={first}; set ballast_count=1\n\
             \x20 elif [ \"$ballast_{second}_good\" = 1 ]; then set ballast_slot={second}\n\
             \x20 elif [ \"$ballast_{second}_tries\" != 0 ]; then set ballast_slot={second}; set ballast_count=1\n\
             \x20 fi\n\
             fi\n"
        ));
    }
    s.push_str("if [ \"$ballast_count\" = 1 ]; then\n");
    for slot in ["a", "b"] {
        s.push_str(&format!("  if [ \"$ballast_slot\" = {slot} ]; then\n"));
        for t in (1..=MAX_TRIES).rev() {
            let kw = if t == MAX_TRIES { "if" } else { "elif" };
            s.push_str(&format!(
                "    {kw} [ \"$ballast_{slot}_tries\" = {t} ]; then set ballast_{slot}_tries={}\n",
                t - 1
            ));
        }
        s.push_str("    fi\n  fi\n");
    }
    s.push_str(&format!(
        "  set ballast_gen=\"$ballast_next\"\n\
         \x20 set ballast_check=\"$ballast_next\"\n\
         \x20 set ballast_saved=0\n\
         \x20 if save_env --file \"$ballast_target\" {keys}; then\n\
         \x20   unset ballast_gen\n\
         \x20   if load_env --skip-sig --file \"$ballast_target\" ballast_gen; then\n\
         \x20     if [ \"$ballast_gen\" = \"$ballast_next\" ]; then set ballast_saved=1; fi\n\
         \x20   fi\n\
         \x20 fi\n\
         \x20 if [ \"$ballast_saved\" = 0 ]; then\n\
         \x20   echo \"ballast: cannot record the try in $ballast_target: not taking it\"\n\
         \x20   if [ \"$ballast_slot\" = a ]; then\n\
         \x20     if [ \"$ballast_b_good\" = 1 ]; then set ballast_slot=b; fi\n\
         \x20   else\n\
         \x20     if [ \"$ballast_a_good\" = 1 ]; then set ballast_slot=a; fi\n\
         \x20   fi\n\
         \x20 fi\n\
         fi\n"
    ));
    s.push_str(
        "echo \"ballast: booting slot $ballast_slot\"\n\
         source /ballast/$ballast_slot/grub.cfg\n\
         boot\n\
         # The slot's kernel could not be loaded: the other slot, then a shell.\n\
         if [ \"$ballast_slot\" = a ]; then set ballast_slot=b; else set ballast_slot=a; fi\n\
         echo \"ballast: booting slot $ballast_slot instead\"\n\
         source /ballast/$ballast_slot/grub.cfg\n\
         boot\n",
    );
    s
}

/// The GRUB side of a boot partition, as a directory.
#[derive(Debug, Clone)]
pub struct GrubDir {
    root: PathBuf,
}

impl GrubDir {
    pub fn new(root: impl Into<PathBuf>) -> GrubDir {
        GrubDir { root: root.into() }
    }

    /// `DIR` carries GRUB slot state (either copy exists).
    pub fn present(root: &Path) -> bool {
        ENV_COPIES.iter().any(|c| root.join(c).exists())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Both copies; `None` for a missing or invalid (torn) copy.
    pub fn read_copies(&self) -> Result<[Option<State>; 2], SlotError> {
        let mut out = [None, None];
        for (i, rel) in ENV_COPIES.iter().enumerate() {
            let path = self.root.join(rel);
            match fs::read(&path) {
                Ok(bytes) => out[i] = parse_env(&bytes, &path.display().to_string()).ok(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(out)
    }

    fn newest(&self) -> Result<Option<(usize, State)>, SlotError> {
        Ok(match self.read_copies()? {
            [Some(a), Some(b)] => Some(if newer_copy(a.seq, b.seq) == 0 {
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
            .ok_or_else(|| SlotError::Invalid {
                what: format!(
                    "{} and {} in {}",
                    ENV_COPIES[0],
                    ENV_COPIES[1],
                    self.root.display()
                ),
                reason: "neither copy is a complete GRUB slot state; reinstall the boot partition"
                    .into(),
            })
    }

    /// Write `state` with the next generation into the copy that was *not* read (copy 0
    /// when neither is valid), atomically (temp file, rename).
    pub fn write_state(&self, state: &State) -> Result<(), SlotError> {
        let (target, seq) = match self.newest()? {
            Some((i, cur)) => (1 - i, (cur.seq + 1) % 3),
            None => (0, state.seq % 3),
        };
        let s = State { seq, ..*state };
        write_atomic(&self.root.join(ENV_COPIES[target]), &render_env(&s)?)
    }

    /// A new boot partition (builder): the script and both copies, identical (generation 0).
    pub fn initialize(&self, state: &State) -> Result<(), SlotError> {
        let dir = self.root.join(GRUB_DIR);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        write_atomic(&self.root.join(GRUB_CFG), script().as_bytes())?;
        let s = State { seq: 0, ..*state };
        for rel in ENV_COPIES {
            write_atomic(&self.root.join(rel), &render_env(&s)?)?;
        }
        Ok(())
    }

    /// Write `ballast/<slot>/grub.cfg`.
    pub fn write_slot_cfg(
        &self,
        slot: SlotId,
        version: &str,
        options: &str,
    ) -> Result<(), SlotError> {
        let path = self.root.join(slot_cfg_path(slot));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        write_atomic(&path, slot_cfg(slot, version, options)?.as_bytes())
    }

    fn version_of(&self, slot: SlotId) -> Result<Option<String>, SlotError> {
        let path = self.root.join(slot_cfg_path(slot));
        match fs::read_to_string(&path) {
            Ok(t) => Ok(version_in(&t)),
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

    /// Change the state; nothing is written when the change changes nothing (sysd marks
    /// the booted slot good on every boot).
    fn update(&self, f: impl FnOnce(&mut State)) -> Result<(), SlotError> {
        let cur = self.read_state()?;
        let mut s = cur;
        f(&mut s);
        if s == cur {
            return Ok(());
        }
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

    /// Run the script's logic on the files (tests): returns the slot it boots and writes
    /// the counted-down state to the other copy, as GRUB's `save_env` would.
    pub fn simulate_boot(&self) -> Result<SlotId, SlotError> {
        let s = self.read_state()?;
        let c = s.boot_choice();
        if c.counts {
            self.write_state(&s.after_boot())?;
        }
        Ok(c.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(state: &State) -> (tempfile::TempDir, GrubDir) {
        let d = tempfile::tempdir().unwrap();
        let g = GrubDir::new(d.path());
        g.initialize(state).unwrap();
        (d, g)
    }

    #[test]
    fn an_env_block_is_grubs_format_and_round_trips() {
        let mut st = State::new(SlotId::A);
        st.install(SlotId::B, 3);
        st.seq = 4;
        let block = render_env(&st).unwrap();
        assert_eq!(block.len(), 1024);
        let text = String::from_utf8(block.clone()).unwrap();
        assert!(text.starts_with(
            "# GRUB Environment Block\nballast_gen=1\nballast_default=b\nballast_a_good=1\nballast_a_tries=0\nballast_b_good=0\nballast_b_tries=3\nballast_check=1\n#"
        ), "{text}");
        assert!(text.trim_start_matches(|c| c != '#').len() > 800);
        // The content lives in the first sector; the second is padding only.
        assert!(block[512..].iter().all(|&b| b == b'#'));
        let back = parse_env(&block, "e").unwrap();
        assert_eq!(back, State { seq: 1, ..st });
    }

    #[test]
    fn bad_blocks_are_refused_with_the_reason() {
        let st = State::new(SlotId::A);
        let good = render_env(&st).unwrap();
        let e = parse_env(&good[..1000], "f").unwrap_err().to_string();
        assert!(e.contains("1000 bytes"), "{e}");
        let mut hdr = good.clone();
        hdr[2] = b'X';
        let e = parse_env(&hdr, "f").unwrap_err().to_string();
        assert!(e.contains("not a GRUB environment block"), "{e}");
        let text = String::from_utf8(good.clone()).unwrap();
        let bad = text.replacen("ballast_a_tries=0", "ballast_a_tries=x", 1);
        let e = parse_env(bad.as_bytes(), "f").unwrap_err().to_string();
        assert!(
            e.contains("f:5:") && e.contains("ballast_a_tries=`x`"),
            "{e}"
        );
        let big = State {
            a: SlotState {
                tries: MAX_TRIES + 1,
                good: false,
            },
            ..st
        };
        let e = render_env(&big).unwrap_err().to_string();
        assert!(e.contains("lower `tries`"), "{e}");
    }

    /// Every prefix of a new block written over an old one (a torn write, at any byte)
    /// either reads as the old or the new state, or is rejected; it never reads as a
    /// third state.
    #[test]
    fn a_torn_write_at_any_byte_is_either_old_new_or_rejected() {
        let mut old = State::new(SlotId::A);
        old.seq = 2;
        let mut new = old;
        new.install(SlotId::B, 3);
        new.seq = 1; // the older copy held gen-1 = 2, the new write carries gen+1 = 1
        let (ob, nb) = (render_env(&old).unwrap(), render_env(&new).unwrap());
        let (o, n) = (State { seq: 2, ..old }, State { seq: 1, ..new });
        for cut in 0..=ENV_SIZE {
            // Written front to back, and back to front.
            for torn in [
                [&nb[..cut], &ob[cut..]].concat(),
                [&ob[..cut], &nb[cut..]].concat(),
            ] {
                if let Ok(s) = parse_env(&torn, "t") {
                    assert!(s == o || s == n, "cut at {cut}: {s:?}");
                }
            }
        }
    }

    #[test]
    fn the_newer_copy_wins_by_generation_mod_3() {
        assert_eq!(newer_copy(0, 0), 0);
        assert_eq!(newer_copy(0, 1), 1);
        assert_eq!(newer_copy(1, 2), 1);
        assert_eq!(newer_copy(2, 0), 1);
        assert_eq!(newer_copy(1, 0), 0);
        assert_eq!(newer_copy(2, 1), 0);
        assert_eq!(newer_copy(0, 2), 0);
    }

    #[test]
    fn writes_alternate_copies_and_a_torn_copy_falls_back_to_the_other() {
        let mut st = State::new(SlotId::A);
        st.a = SlotState {
            tries: 0,
            good: true,
        };
        let (d, g) = dir_with(&st);
        // Many writes: always the other copy, always readable, generations cycle.
        for i in 0..7 {
            g.install(SlotId::B, 3).unwrap();
            g.mark_good(SlotId::B).unwrap();
            g.install(SlotId::A, 2 + (i % 2)).unwrap();
            let s = g.read_state().unwrap();
            assert_eq!(s.default, SlotId::A);
        }
        let before = g.read_state().unwrap();
        // Tear the newest copy: the other one (the previous state) is read.
        let [c0, c1] = g.read_copies().unwrap();
        let newest = newer_copy(c0.unwrap().seq, c1.unwrap().seq);
        let path = d.path().join(ENV_COPIES[newest]);
        let mut bytes = fs::read(&path).unwrap();
        let other = fs::read(d.path().join(ENV_COPIES[1 - newest])).unwrap();
        bytes[40..].copy_from_slice(&other[40..]);
        fs::write(&path, &bytes).unwrap();
        let after = g.read_state().unwrap();
        assert_ne!(after, before);
        assert_eq!(after, g.read_copies().unwrap()[1 - newest].unwrap());
        // The next write repairs the torn copy.
        g.mark_good(SlotId::A).unwrap();
        assert!(g.read_copies().unwrap().iter().all(Option::is_some));
    }

    #[test]
    fn boot_counting_falls_back_to_the_good_slot_like_the_other_bootloaders() {
        let (_d, g) = dir_with(&State::new(SlotId::A));
        g.write_slot_cfg(SlotId::A, "0.1.0", "console=ttyS0 ballast.verity=H")
            .unwrap();
        g.write_slot_cfg(SlotId::B, "0.2.0", "console=ttyS0 ballast.verity=I")
            .unwrap();
        g.install(SlotId::B, 2).unwrap();
        assert_eq!(g.simulate_boot().unwrap(), SlotId::B);
        assert_eq!(g.simulate_boot().unwrap(), SlotId::B);
        // Tries spent: back to a, b is bad, the default still names b.
        assert_eq!(g.simulate_boot().unwrap(), SlotId::A);
        let st = g.status().unwrap();
        assert_eq!(st[1].health, Health::Bad);
        assert_eq!(st[1].version.as_deref(), Some("0.2.0"));
        assert!(st[0].is_default && st[0].health == Health::Good);
        assert!(g.set_default(SlotId::B).is_err());
        // Marking the running slot good again writes nothing.
        let copies = g.read_copies().unwrap();
        g.mark_good(SlotId::A).unwrap();
        assert_eq!(g.read_copies().unwrap(), copies);
    }

    #[test]
    fn a_slot_cfg_carries_the_bls_options_and_refuses_what_grub_would_interpret() {
        let t = slot_cfg(
            SlotId::B,
            "0.2.0",
            "console=ttyS0 panic=5 ballast.verity=a:b:1:2",
        )
        .unwrap();
        assert!(t.contains("set ballast_version='0.2.0'\n"), "{t}");
        assert!(t.contains("linux /ballast/b/vmlinuz 'console=ttyS0' 'panic=5' 'ballast.verity=a:b:1:2' 'ballast.slot=b'\n"), "{t}");
        assert!(t.contains("initrd /ballast/b/initrd.img\n"), "{t}");
        assert_eq!(version_in(&t).as_deref(), Some("0.2.0"));
        let e = slot_cfg(SlotId::A, "1", "x=$y").unwrap_err().to_string();
        assert!(e.contains("`x=$y`"), "{e}");
    }

    #[test]
    fn the_script_counts_down_every_tries_value_and_reads_both_copies() {
        let s = script();
        for t in 1..=MAX_TRIES {
            assert!(s.contains(&format!(
                "[ \"$ballast_b_tries\" = {t} ]; then set ballast_b_tries={}",
                t - 1
            )));
        }
        assert!(s.contains("load_env --skip-sig --file /ballast/grubenv.0 ballast_gen"));
        assert!(s.contains("save_env --file \"$ballast_target\" ballast_gen ballast_default"));
        assert!(s.contains("source /ballast/$ballast_slot/grub.cfg\nboot\n"));
        // Balanced if/fi: GRUB refuses the whole file otherwise.
        let ifs = s.matches("if [").count() - s.matches("elif [").count()
            + s.matches("if load_env").count()
            + s.matches("if save_env").count();
        assert_eq!(
            ifs,
            s.matches("fi\n").count() + s.matches("fi;").count(),
            "{s}"
        );
    }
}
