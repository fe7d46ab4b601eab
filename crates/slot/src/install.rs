//! The install order of an update, as verbs on the boot partition, whichever
//! bootloader the board uses. sysd calls them in this order and only streams bytes
//! in between; the order is what makes an update safe (README, docs/adr/0003):
//!
//! 1. [`BootPartition::prepare_inactive`]: the inactive slot's kernel and initrd are
//!    removed (systemd-boot skips an entry whose kernel is missing) and, on U-Boot,
//!    its state is marked bad. From here a power cut leaves the active slot the only
//!    bootable one. It returns the `*.tmp` files the caller streams the new kernel and
//!    initrd into (the root goes to its partition, opened `O_EXCL`, by the caller).
//! 2. [`BootPartition::commit_install`]: the `*.tmp` files are renamed into place
//!    (durably, on vfat), and only then the slot's entry is written with its tries and
//!    made the default (one atomic rename or state copy).
//!    A write that fails between 1 and 2 calls [`BootPartition::discard`]: the
//!    half-written `*.tmp` files go, durably. Left behind unsynced, a power cut could
//!    leave a directory entry pointing into a cluster chain the FAT never got, and
//!    Linux sets the whole boot partition read-only the next time the file is
//!    truncated or removed ("deleting FAT entry beyond EOF").
//! 3. [`BootPartition::mark_good`] once the new slot passed its health check, or
//!    [`BootPartition::rollback`] to the other, good slot.
//!
//! What this module must never do: touch the booted slot's files, or make a slot the
//! default before its kernel and initrd are in place.

use std::fs;
use std::path::{Path, PathBuf};

use crate::bls::{Entry, Esp};
use crate::grub::GrubDir;
use crate::uboot::BootDir;
use crate::{boot_files, io_err, rename_synced, sync_dir, Health, SlotError, SlotId, SlotStatus};

/// The boot partition's slot state, in whichever format the board uses.
pub enum BootPartition {
    /// UEFI boards: systemd-boot and BLS entries.
    Esp(Esp),
    /// U-Boot boards: the two-copy state file.
    UBoot(BootDir),
    /// The x86_64 disk, bootable on UEFI and BIOS: systemd-boot's BLS entries and
    /// GRUB's two environment blocks on one ESP. Every verb writes both, so the disk
    /// boots the same slot on either firmware; `bios` says which firmware booted this
    /// machine, whose state is the truth for [`BootPartition::status`] (it is the one
    /// the bootloader counted down).
    Hybrid { esp: Esp, grub: GrubDir, bios: bool },
}

/// The inactive slot, invalidated, waiting for its new kernel and initrd.
#[derive(Debug)]
pub struct Staged {
    pub slot: SlotId,
    /// Write the new kernel here (and fsync it).
    pub kernel: PathBuf,
    /// Write the new initrd here (and fsync it).
    pub initrd: PathBuf,
    dir: PathBuf,
}

impl BootPartition {
    /// `DIR/loader` exists: systemd-boot BLS entries (plus GRUB's state when the ESP
    /// carries it, read as booted through UEFI); otherwise the U-Boot state file.
    pub fn open(dir: &Path) -> BootPartition {
        BootPartition::open_booted(dir, false)
    }

    /// As [`BootPartition::open`], for a machine that booted through legacy BIOS when
    /// `bios` (sysd: `/sys/firmware/efi` is absent): on a hybrid ESP GRUB's state is
    /// then the one reported and rolled back by.
    pub fn open_booted(dir: &Path, bios: bool) -> BootPartition {
        if dir.join("loader").is_dir() {
            if GrubDir::present(dir) {
                BootPartition::Hybrid {
                    esp: Esp::new(dir),
                    grub: GrubDir::new(dir),
                    bios,
                }
            } else {
                BootPartition::Esp(Esp::new(dir))
            }
        } else {
            BootPartition::UBoot(BootDir::new(dir))
        }
    }

    fn root(&self) -> &Path {
        match self {
            BootPartition::Esp(e) | BootPartition::Hybrid { esp: e, .. } => e.root(),
            BootPartition::UBoot(b) => b.root(),
        }
    }

    pub fn status(&self) -> Result<Vec<SlotStatus>, SlotError> {
        match self {
            BootPartition::Esp(e) => e.status(),
            BootPartition::UBoot(b) => b.status(),
            BootPartition::Hybrid {
                grub, bios: true, ..
            } => grub.status(),
            BootPartition::Hybrid { esp, .. } => esp.status(),
        }
    }

    /// Step 1: make `slot` unbootable while it is rewritten (see the module doc).
    pub fn prepare_inactive(&self, slot: SlotId) -> Result<Staged, SlotError> {
        let dir = self.root().join(boot_files::SLOT_DIR).join(slot.as_str());
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        for name in [boot_files::KERNEL, boot_files::INITRD] {
            let p = dir.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
        }
        sync_dir(&dir)?;
        match self {
            BootPartition::UBoot(b) => b.mark_bad(slot)?,
            BootPartition::Hybrid { grub, .. } => grub.mark_bad(slot)?,
            BootPartition::Esp(_) => {}
        }
        Ok(Staged {
            slot,
            kernel: dir.join(format!("{}.tmp", boot_files::KERNEL)),
            initrd: dir.join(format!("{}.tmp", boot_files::INITRD)),
            dir,
        })
    }

    /// A failed write after [`BootPartition::prepare_inactive`]: removes the staged
    /// files, whatever was written of them, and syncs the directory (on vfat that
    /// also writes the FAT), so no half-written file waits in memory for a power cut.
    /// The slot stays invalid, as `prepare_inactive` left it.
    pub fn discard(&self, staged: Staged) -> Result<(), SlotError> {
        for p in [&staged.kernel, &staged.initrd] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", p)(e)),
            }
        }
        sync_dir(&staged.dir)
    }

    /// Step 2: the staged kernel and initrd go into place, then the slot's entry
    /// (`options` on the kernel command line, `tries` tries) becomes the default.
    pub fn commit_install(
        &self,
        staged: Staged,
        version: &str,
        options: &str,
        tries: u32,
    ) -> Result<(), SlotError> {
        rename_synced(&staged.kernel, &staged.dir.join(boot_files::KERNEL))?;
        rename_synced(&staged.initrd, &staged.dir.join(boot_files::INITRD))?;
        let slot = staged.slot;
        match self {
            BootPartition::Esp(e) => {
                e.write_entry(&Entry::new(slot, version, options), Some(tries))
            }
            BootPartition::UBoot(b) => b
                .write_boot_env(slot, options, version)
                .and_then(|()| b.install(slot, tries)),
            // Either order leaves each firmware a bootable slot: until its own state
            // names the new slot, a firmware boots the old one.
            BootPartition::Hybrid { esp, grub, .. } => {
                grub.write_slot_cfg(slot, version, options)?;
                esp.write_entry(&Entry::new(slot, version, options), Some(tries))?;
                grub.install(slot, tries)
            }
        }
    }

    /// The booted slot passed its health check: it stays.
    ///
    /// Hybrid: both states; and when the booted firmware's bootloader found the other
    /// slot bad (its tries spent: a rollback), the other state learns it too, so the
    /// other firmware does not spend those tries again.
    pub fn mark_good(&self, slot: SlotId) -> Result<(), SlotError> {
        match self {
            BootPartition::Esp(e) => e.mark_good(slot),
            BootPartition::UBoot(b) => b.mark_good(slot),
            BootPartition::Hybrid { esp, grub, bios } => {
                esp.mark_good(slot)?;
                grub.mark_good(slot)?;
                let other = slot.other();
                let spent = self
                    .status()?
                    .iter()
                    .any(|s| s.slot == other && s.health == Health::Bad);
                if spent {
                    let r = if *bios {
                        esp.mark_bad(other)
                    } else {
                        grub.mark_bad(other)
                    };
                    match r {
                        // No entry for the other slot: nothing to boot there anyway.
                        Err(SlotError::NoEntry { .. }) | Ok(()) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Boot `slot` next (it must be good or trying).
    pub fn set_default(&self, slot: SlotId) -> Result<(), SlotError> {
        match self {
            BootPartition::Esp(e) => e.set_default(slot),
            BootPartition::UBoot(b) => b.set_default(slot),
            // The booted firmware's state first: its refusal is the one that counts.
            BootPartition::Hybrid {
                esp,
                grub,
                bios: true,
            } => grub.set_default(slot).and_then(|()| esp.set_default(slot)),
            BootPartition::Hybrid { esp, grub, .. } => {
                esp.set_default(slot).and_then(|()| grub.set_default(slot))
            }
        }
    }

    /// Make the slot that is not `booted` the default, when it is good: the next boot
    /// runs it. Returns its status (for the version it holds).
    pub fn rollback(&self, booted: SlotId) -> Result<SlotStatus, SlotError> {
        let other = booted.other();
        let st = self
            .status()?
            .into_iter()
            .find(|s| s.slot == other)
            .ok_or(SlotError::NoRollbackTarget { slot: other })?;
        if st.health != Health::Good {
            return Err(SlotError::RollbackTargetNotGood {
                slot: other,
                state: st.health.as_str(),
                version: st.version.unwrap_or_else(|| "no version".into()),
            });
        }
        self.set_default(other)?;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp_with_slot_a() -> (tempfile::TempDir, BootPartition) {
        let d = tempfile::tempdir().unwrap();
        let esp = Esp::new(d.path());
        fs::create_dir_all(d.path().join("loader/entries")).unwrap();
        esp.write_loader_conf().unwrap();
        for (name, text) in [("a/vmlinuz", "old kernel"), ("a/initrd.img", "old initrd")] {
            let p = d.path().join("ballast").join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        esp.write_entry(&Entry::new(SlotId::A, "0.1.0", "x"), None)
            .unwrap();
        (d, BootPartition::open(esp.root()))
    }

    fn slot(p: &BootPartition, s: SlotId) -> Option<SlotStatus> {
        p.status().unwrap().into_iter().find(|x| x.slot == s)
    }

    #[test]
    fn an_install_stages_then_commits_the_inactive_slot_as_the_default_on_probation() {
        let (d, p) = esp_with_slot_a();
        let staged = p.prepare_inactive(SlotId::B).unwrap();
        fs::write(&staged.kernel, "new kernel").unwrap();
        fs::write(&staged.initrd, "new initrd").unwrap();
        // Staged, not committed: the booted slot is still the default.
        assert!(slot(&p, SlotId::A).unwrap().is_default);
        p.commit_install(staged, "0.2.0", "ballast.verity=H", 3)
            .unwrap();
        let b = slot(&p, SlotId::B).unwrap();
        assert!(b.is_default, "{b:?}");
        assert!(
            matches!(b.health, Health::Trying { tries_left: 3, .. }),
            "{b:?}"
        );
        assert_eq!(
            fs::read_to_string(d.path().join("ballast/b/vmlinuz")).unwrap(),
            "new kernel"
        );
        assert!(!d.path().join("ballast/b/vmlinuz.tmp").exists());
        assert_eq!(
            fs::read_to_string(d.path().join("ballast/a/vmlinuz")).unwrap(),
            "old kernel"
        );
        // Not good yet: no rollback to it from a.
        let e = p.rollback(SlotId::A).unwrap_err().to_string();
        assert!(e.contains("only a good slot"), "{e}");
        p.mark_good(SlotId::B).unwrap();
        assert_eq!(p.rollback(SlotId::A).unwrap().slot, SlotId::B);
    }

    #[test]
    fn a_discarded_install_leaves_no_staged_file_and_the_booted_slot_the_default() {
        let (d, p) = esp_with_slot_a();
        let staged = p.prepare_inactive(SlotId::B).unwrap();
        fs::write(&staged.kernel, "new kernel").unwrap();
        fs::write(&staged.initrd, "half an ini").unwrap();
        p.discard(staged).unwrap();
        let b = d.path().join("ballast/b");
        let left: Vec<_> = fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(slot(&p, SlotId::A).unwrap().is_default);
        // Only the kernel was written before the failure: discarding still works.
        let staged = p.prepare_inactive(SlotId::B).unwrap();
        fs::write(&staged.kernel, "new kernel").unwrap();
        p.discard(staged).unwrap();
        assert!(!b.join("vmlinuz.tmp").exists());
    }

    #[test]
    fn preparing_a_slot_removes_its_kernel_so_no_bootloader_picks_it() {
        let (d, p) = esp_with_slot_a();
        p.prepare_inactive(SlotId::A).unwrap();
        assert!(!d.path().join("ballast/a/vmlinuz").exists());
        assert!(!d.path().join("ballast/a/initrd.img").exists());
    }

    #[test]
    fn uboot_marks_the_prepared_slot_bad_and_commits_it_with_tries() {
        let d = tempfile::tempdir().unwrap();
        let bd = BootDir::new(d.path());
        bd.initialize(&crate::uboot::State::new(SlotId::A)).unwrap();
        let p = BootPartition::open(d.path());
        let staged = p.prepare_inactive(SlotId::B).unwrap();
        assert_eq!(slot(&p, SlotId::B).unwrap().health, Health::Bad);
        fs::write(&staged.kernel, "k").unwrap();
        fs::write(&staged.initrd, "i").unwrap();
        p.commit_install(staged, "0.2.0", "o", 2).unwrap();
        let b = slot(&p, SlotId::B).unwrap();
        assert!(b.is_default && matches!(b.health, Health::Trying { tries_left: 2, .. }));
        let e = p.rollback(SlotId::B).unwrap();
        assert_eq!(e.slot, SlotId::A);
    }

    /// The x86_64 ESP with both bootloaders: an install, a boot and a rollback seen
    /// through BIOS keep the BLS entries in step, so UEFI boots the same slot.
    #[test]
    fn hybrid_keeps_bls_and_grub_in_step() {
        let (d, _) = esp_with_slot_a();
        let grub = GrubDir::new(d.path());
        grub.initialize(&crate::uboot::State::new(SlotId::A))
            .unwrap();
        grub.write_slot_cfg(SlotId::A, "0.1.0", "x").unwrap();
        let bios = BootPartition::open_booted(d.path(), true);
        assert!(matches!(bios, BootPartition::Hybrid { bios: true, .. }));
        let staged = bios.prepare_inactive(SlotId::B).unwrap();
        fs::write(&staged.kernel, "k").unwrap();
        fs::write(&staged.initrd, "i").unwrap();
        bios.commit_install(staged, "0.2.0", "ballast.verity=H", 2)
            .unwrap();
        let uefi = BootPartition::open(d.path());
        for p in [&bios, &uefi] {
            let b = slot(p, SlotId::B).unwrap();
            assert!(b.is_default, "{b:?}");
            assert!(
                matches!(b.health, Health::Trying { tries_left: 2, .. }),
                "{b:?}"
            );
            assert_eq!(b.version.as_deref(), Some("0.2.0"));
        }
        let cfg = fs::read_to_string(d.path().join("ballast/b/grub.cfg")).unwrap();
        assert!(cfg.contains("'ballast.verity=H' 'ballast.slot=b'"), "{cfg}");
        // GRUB spends b's tries and boots a; sysd on a marks a good, and the BLS side
        // learns that b is spent.
        assert_eq!(grub.simulate_boot().unwrap(), SlotId::B);
        assert_eq!(grub.simulate_boot().unwrap(), SlotId::B);
        assert_eq!(grub.simulate_boot().unwrap(), SlotId::A);
        bios.mark_good(SlotId::A).unwrap();
        let b = slot(&uefi, SlotId::B).unwrap();
        assert_eq!(b.health, Health::Bad, "{b:?}");
        assert!(slot(&uefi, SlotId::A).unwrap().is_default);
        assert_eq!(
            crate::bls::Esp::new(d.path()).simulate_boot().unwrap(),
            Some(SlotId::A)
        );
    }
}
