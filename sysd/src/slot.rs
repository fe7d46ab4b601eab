//! What sysd needs to know about the boot: the booted slot (kernel command line), the
//! version (os-release), both slots' state and marking the booted slot good. The slot
//! formats themselves belong to ballast-slot; this module only picks the right backend.

use std::path::Path;

use ballast_slot::{bls::Esp, uboot::BootDir, SlotId, SlotStatus};

/// `ballast.slot=X` from a kernel command line. `Err` names the bad value.
pub fn slot_from_cmdline(cmdline: &str) -> Option<Result<SlotId, String>> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("ballast.slot="))
        .next_back()
        .map(|v| {
            SlotId::parse(v).ok_or_else(|| {
                format!("kernel command line: ballast.slot={v} is not a slot (expected a or b)")
            })
        })
}

/// Booted slot from the file at `cmdline` (/proc/cmdline on the device).
pub fn booted_slot(cmdline: &Path) -> Result<SlotId, String> {
    let text = std::fs::read_to_string(cmdline)
        .map_err(|e| format!("cannot read {}: {e}", cmdline.display()))?;
    slot_from_cmdline(&text).unwrap_or_else(|| {
        Err(format!(
            "{}: no ballast.slot= on the kernel command line; the bootloader entry must pass it (the slot cannot be marked good)",
            cmdline.display()
        ))
    })
}

/// VERSION_ID from an os-release text.
pub fn version_from_os_release(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("VERSION_ID="))
        .next_back()
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty())
}

pub fn version(os_release: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(os_release)
        .map_err(|e| format!("cannot read {}: {e}", os_release.display()))?;
    version_from_os_release(&text)
        .ok_or_else(|| format!("{}: no VERSION_ID line", os_release.display()))
}

/// The boot partition's slot state, in whichever format the board uses.
pub enum Boot {
    Esp(Esp),
    UBoot(BootDir),
}

impl Boot {
    /// `DIR/loader` exists: systemd-boot BLS entries; otherwise the U-Boot state file.
    /// `check_mounted`: on the device, refuse a `/boot` that is just a directory of the
    /// root file system (init did not mount the boot partition).
    pub fn open(dir: &Path, check_mounted: bool) -> Result<Boot, String> {
        if check_mounted {
            use std::os::unix::fs::MetadataExt;
            let parent = dir.parent().unwrap_or(Path::new("/"));
            match (std::fs::metadata(dir), std::fs::metadata(parent)) {
                (Ok(b), Ok(p)) if b.dev() == p.dev() => {
                    return Err(format!(
                        "{} is not a mount point: the boot partition is not mounted (init mounts it before starting sysd); slot state cannot be read or marked good",
                        dir.display()
                    ))
                }
                (Err(e), _) => return Err(format!("cannot read {}: {e}", dir.display())),
                _ => {}
            }
        }
        if dir.join("loader").is_dir() {
            Ok(Boot::Esp(Esp::new(dir)))
        } else {
            Ok(Boot::UBoot(BootDir::new(dir)))
        }
    }

    pub fn status(&self) -> Result<Vec<SlotStatus>, String> {
        match self {
            Boot::Esp(e) => e.status(),
            Boot::UBoot(b) => b.status(),
        }
        .map_err(|e| e.to_string())
    }

    /// Make `slot` unbootable while its files are rewritten: U-Boot's state marks it
    /// bad; for systemd-boot the caller removes its kernel (an entry whose kernel is
    /// missing is skipped), so nothing to do here.
    pub fn invalidate(&self, slot: SlotId) -> Result<(), String> {
        match self {
            Boot::Esp(_) => Ok(()),
            Boot::UBoot(b) => b.mark_bad(slot),
        }
        .map_err(|e| format!("cannot mark slot {slot} bad: {e}"))
    }

    /// Write `slot`'s boot entry (its kernel and initrd are in place) with `tries`
    /// tries and make it the default.
    pub fn install(
        &self,
        slot: SlotId,
        version: &str,
        options: &str,
        tries: u32,
    ) -> Result<(), String> {
        match self {
            Boot::Esp(e) => {
                let entry = ballast_slot::bls::Entry::new(slot, version, options);
                e.write_entry(&entry, Some(tries))
            }
            Boot::UBoot(b) => b
                .write_boot_env(slot, options, version)
                .and_then(|()| b.install(slot, tries)),
        }
        .map_err(|e| format!("cannot install slot {slot}'s boot entry: {e}"))
    }

    /// Boot `slot` next (it must be good or trying).
    pub fn set_default(&self, slot: SlotId) -> Result<(), String> {
        match self {
            Boot::Esp(e) => e.set_default(slot),
            Boot::UBoot(b) => b.set_default(slot),
        }
        .map_err(|e| format!("cannot make slot {slot} the default: {e}"))
    }

    pub fn mark_good(&self, slot: SlotId) -> Result<(), String> {
        match self {
            Boot::Esp(e) => e.mark_good(slot),
            Boot::UBoot(b) => b.mark_good(slot),
        }
        .map_err(|e| format!("cannot mark slot {slot} good: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_slot() {
        assert_eq!(
            slot_from_cmdline("console=ttyS0 ballast.slot=b quiet"),
            Some(Ok(SlotId::B))
        );
        assert_eq!(slot_from_cmdline("console=ttyS0"), None);
        assert!(slot_from_cmdline("ballast.slot=c").unwrap().is_err());
    }

    #[test]
    fn os_release_version() {
        assert_eq!(
            version_from_os_release("NAME=Ballast\nVERSION_ID=\"1.4.0\"\n").as_deref(),
            Some("1.4.0")
        );
        assert_eq!(
            version_from_os_release("VERSION_ID=2.0").as_deref(),
            Some("2.0")
        );
        assert_eq!(version_from_os_release("NAME=x"), None);
    }

    #[test]
    fn uboot_state_is_marked_good() {
        let dir = tempfile::tempdir().unwrap();
        let bd = BootDir::new(dir.path());
        let mut st = ballast_slot::uboot::State::new(SlotId::A);
        st.install(SlotId::B, 3);
        st.set_default(SlotId::B);
        bd.initialize(&st).unwrap();
        let boot = Boot::open(dir.path(), false).unwrap();
        assert!(matches!(boot, Boot::UBoot(_)));
        let before = boot.status().unwrap();
        let b = before.iter().find(|s| s.slot == SlotId::B).unwrap();
        assert_eq!(b.health.as_str(), "trying");
        boot.mark_good(SlotId::B).unwrap();
        let after = boot.status().unwrap();
        let b = after.iter().find(|s| s.slot == SlotId::B).unwrap();
        assert_eq!(b.health.as_str(), "good");
    }

    #[test]
    fn unmounted_boot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        let err = Boot::open(&dir.path().join("boot"), true).err().unwrap();
        assert!(err.contains("not mounted"), "{err}");
    }
}
