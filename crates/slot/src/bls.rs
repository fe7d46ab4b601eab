//! Boot Loader Specification (Type #1) entries with systemd's Automatic Boot Assessment,
//! as systemd-boot v252 (Debian bookworm's `systemd-boot-efi`) reads them.
//!
//! # What systemd-boot does (researched from its `boot.c`, v252, and the man pages of
//! `systemd-boot(7)` / `systemd-bless-boot.service(8)`)
//!
//! * It reads every `loader/entries/*.conf` (case-insensitive suffix, not `auto-*`).
//!   An entry whose `linux` file does not exist is dropped. The entry *id* is the file
//!   name, lower-cased, **including** the counter and `.conf`.
//! * Boot counting lives in the file name: `NAME+LEFT-DONE.conf` (or `NAME+LEFT.conf`).
//!   Before booting such an entry systemd-boot renames it to `+(LEFT-1)-(DONE+1)`
//!   (unless LEFT is already 0). `systemd-bless-boot` marks it good by renaming to
//!   `NAME.conf`; an entry without a counter is never counted again.
//! * Sorting (`config_entry_compare`): entries with LEFT = 0 ("bad") go last; then
//!   entries with a `sort-key` before those without; with sort keys on both: `sort-key`
//!   ascending (strcmp), `machine-id`, then `version` **descending**
//!   ([`crate::strverscmp_improved`]); then id descending; then more tries left first,
//!   fewer done first.
//! * Default: the `LoaderEntryOneShot`/`LoaderEntryDefault` EFI variables win (set by
//!   `bootctl set-default`/`set-oneshot`: Ballast never sets them, and a user who does
//!   disables rollback), then the **first entry in sorted order** whose id matches the
//!   glob in loader.conf's `default`, else the first entry. Bad entries are *not*
//!   skipped by the glob; they only sort last.
//!
//! # Ballast's choice
//!
//! `loader.conf` says `default ballast-*`, so the default is whichever Ballast entry
//! sorts first. Both entries carry `sort-key ballast-NNNNNNNNNN` where NNNNNNNNNN is
//! `u32::MAX - priority` in ten digits: the entry written last with a higher priority
//! sorts first. Making a slot the default is therefore **one atomic rewrite of that
//! slot's entry**, never a two-file dance, and a bad entry still falls behind a usable
//! one because systemd-boot orders bad entries last before it looks at sort keys. When
//! both are bad, the higher-priority one boots: never brick.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{boot_files, io_err, rename_synced, strverscmp_improved, sync_dir, write_atomic};
use crate::{Health, SlotError, SlotId, SlotStatus};

/// One Ballast boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub slot: SlotId,
    pub title: String,
    pub version: String,
    /// ESP-absolute kernel path, `/ballast/a/vmlinuz`.
    pub linux: String,
    /// ESP-absolute initrd path, `/ballast/a/initrd.img`.
    pub initrd: String,
    /// Kernel command line without `ballast.slot=`, which [`render`] appends.
    pub options: String,
}

impl Entry {
    /// The standard entry for `slot` with its kernel and initrd at their fixed boot-partition paths.
    pub fn new(slot: SlotId, version: &str, options: &str) -> Entry {
        Entry {
            slot,
            title: format!("Ballast {version} (slot {slot})"),
            version: version.to_string(),
            linux: format!("/{}", boot_files::kernel(slot)),
            initrd: format!("/{}", boot_files::initrd(slot)),
            options: options.to_string(),
        }
    }
}

/// `ballast-a.conf`, `ballast-b+3-0.conf`.
pub fn file_name(slot: SlotId, counter: Option<(u32, u32)>) -> String {
    match counter {
        None => format!("{}{}.conf", boot_files::ENTRY_PREFIX, slot),
        Some((left, done)) => format!("{}{}+{left}-{done}.conf", boot_files::ENTRY_PREFIX, slot),
    }
}

/// Inverse of [`file_name`]; also accepts `+LEFT` without `-DONE` (systemd's short form)
/// and any case of `.conf`. Returns `None` for files that are not Ballast entries.
pub fn parse_file_name(name: &str) -> Option<(SlotId, Option<(u32, u32)>)> {
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".conf")?;
    let rest = stem.strip_prefix(boot_files::ENTRY_PREFIX)?;
    let (slot, counter) = match rest.split_once('+') {
        None => (rest, None),
        Some((slot, c)) => {
            let (left, done) = match c.split_once('-') {
                None => (c, "0"),
                Some((l, d)) => (l, d),
            };
            let num = |s: &str| -> Option<u32> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse().ok()
            };
            (slot, Some((num(left)?, num(done)?)))
        }
    };
    Some((SlotId::parse(slot)?, counter))
}

const SORT_KEY_PREFIX: &str = "ballast-";

fn sort_key(priority: u32) -> String {
    format!("{SORT_KEY_PREFIX}{:010}", u32::MAX - priority)
}

fn priority_of(sort_key: Option<&str>) -> u32 {
    sort_key
        .and_then(|k| k.strip_prefix(SORT_KEY_PREFIX))
        .and_then(|n| n.parse::<u32>().ok())
        .map(|n| u32::MAX - n)
        .unwrap_or(0)
}

/// What separates kernel arguments: the kernel's `isspace` (ASCII whitespace
/// and vertical tab, which `char::is_ascii_whitespace` leaves out).
fn is_kernel_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

/// Render an entry (lowest priority). [`Esp::write_entry`] renders with the priority that
/// makes the written slot the default.
pub fn render(e: &Entry) -> String {
    render_with_priority(e, 0)
}

fn render_with_priority(e: &Entry, priority: u32) -> String {
    let mut options = e.options.trim_matches(is_kernel_space).to_string();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!("ballast.slot={}", e.slot));
    // A key without a value is refused by `parse`, so an empty field (an entry
    // read from a hand-written file without `initrd`, say) leaves its line out
    // rather than rewriting the entry into one that no longer parses.
    let line = |key: &str, value: &str| {
        let value = value.trim_matches(is_kernel_space);
        if value.is_empty() {
            String::new()
        } else {
            format!("{key} {value}\n")
        }
    };
    format!(
        "# Ballast slot {slot}: written by ballast-slot; the file name carries the boot counter.\n\
         {title}{version}sort-key {key}\n{linux}{initrd}options {options}\n",
        slot = e.slot,
        title = line("title", &e.title),
        version = line("version", &e.version),
        key = sort_key(priority),
        linux = line("linux", &e.linux),
        initrd = line("initrd", &e.initrd),
    )
}

struct Parsed {
    entry: Entry,
    sort_key: Option<String>,
    machine_id: Option<String>,
}

/// Parse an entry's text. The slot comes from `ballast.slot=` in `options` or, failing
/// that, from a `linux` path under `/ballast/<slot>/`.
pub fn parse(text: &str) -> Result<Entry, SlotError> {
    parse_named(text, "boot entry").map(|p| p.entry)
}

fn parse_named(text: &str, file: &str) -> Result<Parsed, SlotError> {
    let (mut title, mut version, mut linux, mut initrd) = (None, None, None, None);
    let mut options: Vec<String> = Vec::new();
    let (mut sort_key, mut machine_id) = (None, None);
    for (n, raw) in text.lines().enumerate() {
        // Trimmed as it is split: by the kernel's white space only. Unicode
        // white space (U+00A0, ...) is part of a word, as it is to the kernel.
        let line = raw.trim_matches(is_kernel_space);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(is_kernel_space) {
            Some((k, v)) => (k, v.trim_matches(is_kernel_space).to_string()),
            None => {
                return Err(SlotError::Parse {
                    file: file.to_string(),
                    line: n + 1,
                    reason: format!("`{line}` has a key but no value (BLS lines are `key value`)"),
                })
            }
        };
        match key {
            "title" => title = Some(value),
            "version" => version = Some(value),
            "linux" => linux = Some(value),
            "initrd" => initrd = Some(value),
            // systemd concatenates repeated `options` lines.
            "options" => options.push(value),
            "sort-key" => sort_key = Some(value),
            "machine-id" => machine_id = Some(value),
            _ => {} // BLS: unknown keys are ignored
        }
    }
    let linux = linux.ok_or(SlotError::MissingField {
        file: file.to_string(),
        field: "linux",
        fix: "a Ballast entry names its kernel, e.g. `linux /ballast/a/vmlinuz`",
    })?;
    let mut slot_opt = None;
    let mut kept = Vec::new();
    let joined = options.join(" ");
    for word in joined.split(is_kernel_space).filter(|w| !w.is_empty()) {
        match word.strip_prefix("ballast.slot=") {
            Some(s) => slot_opt = Some(s.parse::<SlotId>()?),
            None => kept.push(word),
        }
    }
    let slot_path = linux
        .trim_start_matches('/')
        .strip_prefix("ballast/")
        .and_then(|r| r.split('/').next())
        .and_then(SlotId::parse);
    let slot = slot_opt.or(slot_path).ok_or(SlotError::MissingField {
        file: file.to_string(),
        field: "options ballast.slot=",
        fix: "add `ballast.slot=a` or `ballast.slot=b` to the options line",
    })?;
    Ok(Parsed {
        entry: Entry {
            slot,
            title: title.unwrap_or_default(),
            version: version.unwrap_or_default(),
            linux,
            initrd: initrd.unwrap_or_default(),
            options: kept.join(" "),
        },
        sort_key,
        machine_id,
    })
}

/// `loader/loader.conf` for Ballast: boot without a menu the first Ballast entry in
/// systemd-boot's order (see the module docs); no command-line editor (it would let
/// anyone at the console bypass verity), no auto entries for other OSes or firmware.
pub fn loader_conf() -> String {
    "# Ballast: written by ballast-slot. The default is the first Ballast entry in\n\
     # systemd-boot's order: usable entries by sort-key, entries with 0 tries left last.\n\
     timeout 0\n\
     default ballast-*\n\
     editor no\n\
     auto-entries no\n\
     auto-firmware no\n\
     console-mode keep\n"
        .to_string()
}

/// An entry found on the ESP.
#[derive(Debug, Clone)]
struct Found {
    file_name: String,
    counter: Option<(u32, u32)>,
    entry: Entry,
    sort_key: Option<String>,
    machine_id: Option<String>,
    /// systemd-boot drops entries whose kernel is missing.
    linux_exists: bool,
}

impl Found {
    fn id(&self) -> String {
        self.file_name.to_ascii_lowercase()
    }
    fn health(&self) -> Health {
        health_of(self.counter)
    }
    fn priority(&self) -> u32 {
        priority_of(self.sort_key.as_deref())
    }
}

fn health_of(counter: Option<(u32, u32)>) -> Health {
    match counter {
        None => Health::Good,
        Some((0, _)) => Health::Bad,
        Some((tries_left, tries_done)) => Health::Trying {
            tries_left,
            tries_done,
        },
    }
}

/// systemd-boot v252's `config_entry_compare`.
fn compare(a: &Found, b: &Found) -> Ordering {
    let bad = |f: &Found| matches!(f.counter, Some((0, _)));
    bad(a)
        .cmp(&bad(b))
        .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
        .then_with(|| match (&a.sort_key, &b.sort_key) {
            (Some(ka), Some(kb)) => ka
                .as_bytes()
                .cmp(kb.as_bytes())
                .then_with(|| a.machine_id.cmp(&b.machine_id))
                .then_with(|| strverscmp_improved(&a.entry.version, &b.entry.version).reverse()),
            _ => Ordering::Equal,
        })
        .then_with(|| strverscmp_improved(&a.id(), &b.id()).reverse())
        .then_with(|| match (a.counter, b.counter) {
            (Some((la, da)), Some((lb, db))) => lb.cmp(&la).then(da.cmp(&db)),
            _ => Ordering::Equal,
        })
}

/// systemd-boot's glob (`*`, `?`), on case-folded strings.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// The ESP (or boot partition) as a directory: mounted on the device, or a staging
/// directory in the builder.
#[derive(Debug, Clone)]
pub struct Esp {
    root: PathBuf,
}

impl Esp {
    pub fn new(root: impl Into<PathBuf>) -> Esp {
        Esp { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join(boot_files::ENTRIES_DIR)
    }

    /// Write `loader/loader.conf` ([`loader_conf`]) crash-safely.
    pub fn write_loader_conf(&self) -> Result<(), SlotError> {
        write_atomic(
            &self.root.join(boot_files::LOADER_CONF),
            loader_conf().as_bytes(),
        )
    }

    /// All Ballast entries, sorted as systemd-boot sorts them (the ones it would drop
    /// for a missing kernel included, flagged).
    fn scan(&self) -> Result<Vec<Found>, SlotError> {
        let dir = self.entries_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &dir)(e)),
        };
        let mut found = Vec::new();
        for de in rd {
            let de = de.map_err(io_err("read directory", &dir))?;
            let name = de.file_name().to_string_lossy().into_owned();
            let Some((slot, counter)) = parse_file_name(&name) else {
                continue;
            };
            let path = de.path();
            let parsed = fs::read_to_string(&path)
                .map_err(io_err("read", &path))
                .and_then(|text| parse_named(&text, &path.display().to_string()));
            let p = match parsed {
                Ok(p) if p.entry.slot == slot => p,
                // An entry that does not parse (a power cut while the boot
                // partition was written, or a hand edit) is one systemd-boot
                // cannot boot either: the slot shows as bad, and its next
                // install replaces the file. It must not stop the other slot
                // from being marked good or made the default.
                _ => {
                    found.push(Found {
                        file_name: name,
                        counter,
                        entry: Entry::new(slot, "", ""),
                        sort_key: None,
                        machine_id: None,
                        linux_exists: false,
                    });
                    continue;
                }
            };
            let linux_exists = self
                .root
                .join(p.entry.linux.trim_start_matches('/'))
                .is_file();
            found.push(Found {
                file_name: name,
                counter,
                entry: p.entry,
                sort_key: p.sort_key,
                machine_id: p.machine_id,
                linux_exists,
            });
        }
        found.sort_by(compare);
        Ok(found)
    }

    fn default_pattern(&self) -> Result<Option<String>, SlotError> {
        let path = self.root.join(boot_files::LOADER_CONF);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(text.lines().find_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once(|c: char| c.is_ascii_whitespace())?;
            (k == "default").then(|| v.trim().to_ascii_lowercase())
        }))
    }

    fn pick_default<'a>(&self, found: &'a [Found]) -> Result<Option<&'a Found>, SlotError> {
        let bootable: Vec<&Found> = found.iter().filter(|f| f.linux_exists).collect();
        let pattern = self.default_pattern()?;
        if let Some(p) = pattern {
            if let Some(f) = bootable
                .iter()
                .find(|f| glob(p.as_bytes(), f.id().as_bytes()))
            {
                return Ok(Some(f));
            }
        }
        Ok(bootable.first().copied())
    }

    /// The slot systemd-boot would boot now (ignoring EFI variables, which Ballast never
    /// sets). `None` when no entry has its kernel on the ESP.
    pub fn default_slot(&self) -> Result<Option<SlotId>, SlotError> {
        let found = self.scan()?;
        Ok(self.pick_default(&found)?.map(|f| f.entry.slot))
    }

    /// Both slots. A slot without an entry (or whose kernel is missing) reports
    /// `version: None` and [`Health::Bad`]: the bootloader cannot boot it.
    pub fn status(&self) -> Result<Vec<SlotStatus>, SlotError> {
        let found = self.scan()?;
        let default = self.pick_default(&found)?.map(|f| f.entry.slot);
        Ok(SlotId::ALL
            .iter()
            .map(|&slot| {
                match found
                    .iter()
                    .find(|f| f.entry.slot == slot && f.linux_exists)
                {
                    Some(f) => SlotStatus {
                        slot,
                        version: Some(f.entry.version.clone()).filter(|v| !v.is_empty()),
                        health: f.health(),
                        is_default: default == Some(slot),
                    },
                    None => SlotStatus {
                        slot,
                        version: None,
                        health: Health::Bad,
                        is_default: false,
                    },
                }
            })
            .collect())
    }

    fn current(&self, found: &[Found], slot: SlotId) -> Result<Found, SlotError> {
        let of_slot = || found.iter().filter(|f| f.entry.slot == slot);
        of_slot()
            .find(|f| f.linux_exists)
            .or_else(|| of_slot().next())
            .cloned()
            .ok_or_else(|| SlotError::NoEntry {
                slot,
                dir: self.entries_dir(),
            })
    }

    fn remove_others(&self, found: &[Found], slot: SlotId, keep: &str) -> Result<(), SlotError> {
        let dir = self.entries_dir();
        let mut removed = false;
        for f in found
            .iter()
            .filter(|f| f.entry.slot == slot && f.file_name != keep)
        {
            let p = dir.join(&f.file_name);
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove old entry", &p)(e)),
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Install or replace `entry.slot`'s entry with `tries` tries (`None` = good) and
    /// make it the default: `<name>.tmp`, fsync, rename, fsync dir; the slot's older
    /// entry is removed only after. The other slot's entry is never touched.
    pub fn write_entry(&self, entry: &Entry, tries: Option<u32>) -> Result<(), SlotError> {
        for (what, v) in [
            ("title", &entry.title),
            ("version", &entry.version),
            ("linux", &entry.linux),
            ("initrd", &entry.initrd),
            ("options", &entry.options),
        ] {
            if v.contains(['\n', '\r']) {
                return Err(SlotError::Invalid {
                    what: format!("boot entry {what}"),
                    reason: "contains a line break; BLS values are one line".into(),
                });
            }
        }
        if tries == Some(0) {
            return Err(SlotError::Invalid {
                what: "tries".into(),
                reason: "0 tries would install the slot as bad; give at least 1, or None for good"
                    .into(),
            });
        }
        let found = self.scan()?;
        let priority = found
            .iter()
            .map(Found::priority)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let name = file_name(entry.slot, tries.map(|t| (t, 0)));
        write_atomic(
            &self.entries_dir().join(&name),
            render_with_priority(entry, priority).as_bytes(),
        )?;
        self.remove_others(&found, entry.slot, &name)
    }

    /// Bless `slot`: drop its counter (what `systemd-bless-boot good` does). No-op when
    /// already good.
    pub fn mark_good(&self, slot: SlotId) -> Result<(), SlotError> {
        self.rename_counter(slot, None)
    }

    /// Mark `slot` bad: counter `+0-DONE`, so systemd-boot sorts it last.
    pub fn mark_bad(&self, slot: SlotId) -> Result<(), SlotError> {
        let found = self.scan()?;
        let done = self
            .current(&found, slot)?
            .counter
            .map(|c| c.1)
            .unwrap_or(0);
        self.rename_counter(slot, Some((0, done)))
    }

    fn rename_counter(&self, slot: SlotId, counter: Option<(u32, u32)>) -> Result<(), SlotError> {
        let found = self.scan()?;
        let cur = self.current(&found, slot)?;
        let name = file_name(slot, counter);
        if cur.file_name != name {
            let dir = self.entries_dir();
            rename_synced(&dir.join(&cur.file_name), &dir.join(&name))?;
        }
        self.remove_others(&found, slot, &name)
    }

    /// Make `slot` the default without changing its counter (rollback to the other
    /// slot): one atomic rewrite of its entry with the highest priority. Refused for a
    /// bad slot, which systemd-boot would skip anyway.
    pub fn set_default(&self, slot: SlotId) -> Result<(), SlotError> {
        let found = self.scan()?;
        let cur = self.current(&found, slot)?;
        if cur.health() == Health::Bad {
            return Err(SlotError::Invalid {
                what: format!("default slot {slot}"),
                reason: format!(
                    "slot {slot} is bad (0 tries left in {}); systemd-boot would skip it. Reinstall it first",
                    cur.file_name
                ),
            });
        }
        if !cur.linux_exists {
            return Err(SlotError::Invalid {
                what: format!("default slot {slot}"),
                reason: format!("its kernel {} is missing from the ESP", cur.entry.linux),
            });
        }
        let priority = found
            .iter()
            .map(Found::priority)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        write_atomic(
            &self.entries_dir().join(&cur.file_name),
            render_with_priority(&cur.entry, priority).as_bytes(),
        )
    }

    /// Simulate one boot attempt the way systemd-boot does it: pick the default entry and,
    /// if it counts, rename it `+(LEFT-1)-(DONE+1)`. Returns the booted slot. For tests
    /// and for `ballast run`-less dry runs; the device never calls this.
    pub fn simulate_boot(&self) -> Result<Option<SlotId>, SlotError> {
        let found = self.scan()?;
        let Some(f) = self.pick_default(&found)? else {
            return Ok(None);
        };
        if let Some((left, done)) = f.counter {
            if left > 0 {
                let dir = self.entries_dir();
                let to = file_name(f.entry.slot, Some((left - 1, done + 1)));
                rename_synced(&dir.join(&f.file_name), &dir.join(to))?;
            }
        }
        Ok(Some(f.entry.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `bls_entry` fuzz target: an entry without `version` and
    /// `initrd` lines was rendered with `version \n`, which `parse` refuses.
    #[test]
    fn an_entry_with_empty_fields_renders_to_one_that_parses() {
        let text = "title Ballast\nlinux /ballast/b/vmlinuz\noptions quiet\n";
        let entry = parse(text).unwrap();
        assert_eq!(entry.version, "");
        assert_eq!(parse(&render(&entry)).unwrap(), entry);
    }

    /// Found by fuzzing `bls_entry`: a vertical tab was an option word to
    /// `parse` but whitespace to `render`'s trim, so a rewrite changed options.
    #[test]
    fn unicode_white_space_is_part_of_a_word_as_in_the_kernel() {
        // Found by the bls_entry fuzz target: `parse` trimmed U+00A0 off a
        // value's start (Unicode `trim`) but kept it inside, so rewriting the
        // entry changed its options.
        let text =
            "linux /\noptions ballast.slot=a\noptions \u{a0}\u{a0}quiet\u{a0}x ballast.slot=a\n";
        let entry = parse(text).expect("parses");
        assert_eq!(entry.options, "\u{a0}\u{a0}quiet\u{a0}x");
        assert_eq!(parse(&render(&entry)).expect("parses again"), entry);
    }

    #[test]
    fn a_vertical_tab_separates_options_as_in_the_kernel() {
        let text = "linux ///mg\noptions nc \t\x0b\tballast.slot=a\n";
        let entry = parse(text).unwrap();
        assert_eq!(entry.options, "nc");
        assert_eq!(parse(&render(&entry)).unwrap(), entry);
    }

    fn esp_with_kernels() -> (tempfile::TempDir, Esp) {
        let d = tempfile::tempdir().unwrap();
        for s in SlotId::ALL {
            let k = d.path().join(boot_files::kernel(s));
            fs::create_dir_all(k.parent().unwrap()).unwrap();
            fs::write(&k, b"kernel").unwrap();
        }
        let esp = Esp::new(d.path());
        esp.write_loader_conf().unwrap();
        (d, esp)
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d.join(boot_files::ENTRIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(SlotId::A, None), "ballast-a.conf");
        assert_eq!(file_name(SlotId::B, Some((3, 0))), "ballast-b+3-0.conf");
        for (s, c) in [
            (SlotId::A, None),
            (SlotId::B, Some((2, 1))),
            (SlotId::A, Some((0, 3))),
        ] {
            assert_eq!(parse_file_name(&file_name(s, c)), Some((s, c)));
        }
        assert_eq!(
            parse_file_name("ballast-b+3.conf"),
            Some((SlotId::B, Some((3, 0))))
        );
        assert_eq!(parse_file_name("BALLAST-A.CONF"), Some((SlotId::A, None)));
        for bad in [
            "ballast-c.conf",
            "ballast-a+.conf",
            "ballast-a+x-1.conf",
            "debian.conf",
            "ballast-a.conf.tmp",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn entry_round_trips_and_carries_the_slot() {
        let e = Entry::new(SlotId::B, "1.4.0", "console=ttyS0 ro");
        let text = render(&e);
        assert!(text.contains("linux /ballast/b/vmlinuz\n"), "{text}");
        assert!(
            text.contains("options console=ttyS0 ro ballast.slot=b\n"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), e);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = parse("title x\noptions ballast.slot=a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`linux`"), "{e}");
        let e = parse("title x\nlinux /vmlinuz\n").unwrap_err().to_string();
        assert!(e.contains("ballast.slot="), "{e}");
        let e = parse("title x\nlinux\n").unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
        // slot from the kernel path when options do not say
        assert_eq!(parse("linux /ballast/b/vmlinuz\n").unwrap().slot, SlotId::B);
    }

    #[test]
    fn update_story_new_slot_tries_then_good() {
        let (d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", "quiet"), None)
            .unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::A));
        // Update into b with 3 tries: b becomes the default.
        esp.write_entry(&Entry::new(SlotId::B, "1.1.0", "quiet"), Some(3))
            .unwrap();
        assert_eq!(entries(d.path()), ["ballast-a.conf", "ballast-b+3-0.conf"]);
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
        assert_eq!(esp.simulate_boot().unwrap(), Some(SlotId::B));
        let st = esp.status().unwrap();
        assert_eq!(
            st[1],
            SlotStatus {
                slot: SlotId::B,
                version: Some("1.1.0".into()),
                health: Health::Trying {
                    tries_left: 2,
                    tries_done: 1
                },
                is_default: true
            }
        );
        assert_eq!(st[0].health, Health::Good);
        assert!(!st[0].is_default);
        esp.mark_good(SlotId::B).unwrap();
        assert_eq!(entries(d.path()), ["ballast-a.conf", "ballast-b.conf"]);
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn an_empty_entry_left_by_a_power_cut_is_a_bad_slot_not_an_error() {
        let (d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", "quiet"), None)
            .unwrap();
        let entries_dir = d.path().join("loader/entries");
        fs::write(entries_dir.join("ballast-b.conf"), b"").unwrap();
        let st = esp.status().unwrap();
        assert_eq!(st[0].health, Health::Good);
        assert!(st[0].is_default);
        assert_eq!(
            (st[1].health, st[1].version.as_deref()),
            (Health::Bad, None)
        );
        esp.mark_good(SlotId::A).unwrap();
        esp.set_default(SlotId::A).unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::A));
        // The next install of b replaces the broken file.
        esp.write_entry(&Entry::new(SlotId::B, "1.1.0", "quiet"), Some(3))
            .unwrap();
        assert_eq!(entries(d.path()), ["ballast-a.conf", "ballast-b+3-0.conf"]);
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn rollback_story_exhausted_tries_fall_back_to_good_slot() {
        let (d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", ""), None)
            .unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "2.0.0", ""), Some(2))
            .unwrap();
        assert_eq!(esp.simulate_boot().unwrap(), Some(SlotId::B)); // +1-1
        assert_eq!(esp.simulate_boot().unwrap(), Some(SlotId::B)); // +0-2: last try
        assert_eq!(entries(d.path()), ["ballast-a.conf", "ballast-b+0-2.conf"]);
        // never blessed: the next boot takes a, although b is newer and higher priority
        assert_eq!(esp.simulate_boot().unwrap(), Some(SlotId::A));
        let st = esp.status().unwrap();
        assert_eq!(st[1].health, Health::Bad);
        assert!(st[0].is_default);
        assert!(esp
            .set_default(SlotId::B)
            .unwrap_err()
            .to_string()
            .contains("is bad"));
    }

    #[test]
    fn explicit_rollback_to_older_good_slot() {
        let (_d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", ""), None)
            .unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "2.0.0", ""), Some(3))
            .unwrap();
        esp.mark_good(SlotId::B).unwrap();
        esp.set_default(SlotId::A).unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::A));
        esp.set_default(SlotId::B).unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn both_bad_boots_the_default_anyway() {
        let (_d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", ""), Some(1))
            .unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "2.0.0", ""), Some(1))
            .unwrap();
        esp.mark_bad(SlotId::A).unwrap();
        esp.mark_bad(SlotId::B).unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn missing_kernel_is_skipped_like_systemd_boot() {
        let (d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", ""), None)
            .unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "2.0.0", ""), Some(3))
            .unwrap();
        fs::remove_file(d.path().join(boot_files::kernel(SlotId::B))).unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::A));
        assert_eq!(esp.status().unwrap()[1].version, None);
    }

    #[test]
    fn rewrite_removes_the_slots_old_entry_only() {
        let (d, esp) = esp_with_kernels();
        esp.write_entry(&Entry::new(SlotId::A, "1.0.0", ""), None)
            .unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "1.1.0", ""), Some(3))
            .unwrap();
        esp.simulate_boot().unwrap();
        esp.write_entry(&Entry::new(SlotId::B, "1.2.0", ""), Some(3))
            .unwrap();
        assert_eq!(entries(d.path()), ["ballast-a.conf", "ballast-b+3-0.conf"]);
        let text = fs::read_to_string(d.path().join("loader/entries/ballast-b+3-0.conf")).unwrap();
        assert!(text.contains("version 1.2.0"));
        assert!(esp.mark_good(SlotId::A).is_ok());
        let e = Esp::new(d.path().join("nowhere"))
            .mark_good(SlotId::A)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no boot entry for slot a") && e.contains("write_entry"),
            "{e}"
        );
    }

    #[test]
    fn sorting_matches_systemd_boot_rules() {
        let (d, esp) = esp_with_kernels();
        let dir = d.path().join(boot_files::ENTRIES_DIR);
        fs::create_dir_all(&dir).unwrap();
        // No sort keys: id descending, so b before a (why Ballast writes sort keys).
        fs::write(
            dir.join("ballast-a.conf"),
            "linux /ballast/a/vmlinuz\nversion 9\n",
        )
        .unwrap();
        fs::write(
            dir.join("ballast-b.conf"),
            "linux /ballast/b/vmlinuz\nversion 1\n",
        )
        .unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
        // Same sort key: version descending wins.
        fs::write(
            dir.join("ballast-a.conf"),
            "linux /ballast/a/vmlinuz\nversion 1.10\nsort-key x\n",
        )
        .unwrap();
        fs::write(
            dir.join("ballast-b.conf"),
            "linux /ballast/b/vmlinuz\nversion 1.9\nsort-key x\n",
        )
        .unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::A));
        // An entry with a sort key beats one without.
        fs::write(
            dir.join("ballast-a.conf"),
            "linux /ballast/a/vmlinuz\nversion 1.10\n",
        )
        .unwrap();
        assert_eq!(esp.default_slot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn loader_conf_selects_ballast_entries() {
        let c = loader_conf();
        assert!(
            c.contains("\ndefault ballast-*\n")
                && c.contains("\ntimeout 0\n")
                && c.contains("editor no")
        );
        assert!(glob(b"ballast-*", b"ballast-b+2-1.conf"));
        assert!(!glob(b"ballast-*", b"debian.conf"));
        assert!(glob(b"ballast-?.conf", b"ballast-a.conf"));
    }
}
