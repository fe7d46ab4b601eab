//! Where and when `ballast bench powercut` cuts the power: the phase and the
//! moment of each run, drawn from the seed and the run's number alone, and the
//! console lines that mean a filesystem was hurt.
//!
//! Std only and free of the builder's types, so the arm64 update story
//! (`tests/update.rs`) cuts its machine by the same draw at a fixed seed.

/// What the machine is doing when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first boot of a new disk, while init grows the state partition
    /// (table, then ext4).
    Grow,
    /// `osctl upgrade` writing the inactive slot (verify, root, kernel,
    /// initrd, activate).
    Upgrade,
    /// The first boot of the new slot, from QEMU's start (firmware, boot
    /// counting, kernel, init) until it is ready.
    FirstBoot,
    /// sysd on the new slot's first boot, up to marking the slot good.
    MarkGood,
    /// `osctl rollback --reboot`: the default slot switched back, then the
    /// orderly reboot.
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Grow,
        Phase::Upgrade,
        Phase::FirstBoot,
        Phase::MarkGood,
        Phase::Rollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Grow => "grow",
            Phase::Upgrade => "upgrade",
            Phase::FirstBoot => "first-boot",
            Phase::MarkGood => "mark-good",
            Phase::Rollback => "rollback",
        }
    }

    /// What the cut's delay counts from.
    pub fn anchor(self) -> &'static str {
        match self {
            Phase::Grow => "the console line `ballast-init: disk:` of the first boot",
            Phase::Upgrade => "the start of `osctl upgrade -` over SSH",
            Phase::FirstBoot => "QEMU's start on the upgraded disk",
            Phase::MarkGood => "the console line `started /usr/lib/ballast/sysd` of the new slot",
            Phase::Rollback => "the start of `osctl rollback --reboot` over SSH",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Console line (substring) that [`Phase::Grow`] counts from.
pub const GROW_ANCHOR: &str = "ballast-init: disk:";
/// Console line (substring) that [`Phase::MarkGood`] counts from.
pub const SYSD_ANCHOR: &str = "started /usr/lib/ballast/sysd";

/// One run's cut: the phase, and where in that phase's window it falls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    pub phase: Phase,
    /// In [0, 1): the delay after the anchor is this fraction of the phase's
    /// window (measured by the bench on a reference pass, or fixed by a story).
    pub fraction: f64,
}

impl Cut {
    /// Run `run` (0-based) of seed `seed`, among `phases` (all of them when
    /// empty): the same for the same three, whatever ran before it.
    pub fn draw(seed: u64, run: u64, phases: &[Phase]) -> Cut {
        let phases = if phases.is_empty() {
            &Phase::ALL[..]
        } else {
            phases
        };
        let mut state = seed ^ run.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let a = splitmix64(&mut state);
        let b = splitmix64(&mut state);
        Cut {
            phase: phases[(a % phases.len() as u64) as usize],
            // 53 random bits: a uniform f64 in [0, 1).
            fraction: (b >> 11) as f64 / (1u64 << 53) as f64,
        }
    }

    /// The delay after the anchor, for a window of `window_s` seconds.
    pub fn delay(&self, window_s: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((self.fraction * window_s).max(0.0))
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, and good enough to spread cuts.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Console lines that say a filesystem was damaged or went read-only: after a
/// power cut the kernel may replay the ext4 journal and stage 1 may repair
/// the boot partition's dirty bit, but none of these may appear.
pub fn console_faults(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l.contains("EXT4-fs error")
                || (l.contains("FAT-fs (") && l.contains("error"))
                || l.contains("Remounting filesystem read-only")
                || l.contains("Read-only file system")
                || l.contains("I/O error")
                || l.contains("Kernel panic")
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_draws_the_same_cut_whatever_ran_before() {
        let all: Vec<Cut> = (0..50).map(|k| Cut::draw(19, k, &[])).collect();
        assert_eq!(Cut::draw(19, 37, &[]), all[37]);
        assert_ne!(Cut::draw(20, 37, &[]), all[37]);
    }

    #[test]
    fn draws_cover_every_phase_and_the_whole_window() {
        let cuts: Vec<Cut> = (0..500).map(|k| Cut::draw(7, k, &[])).collect();
        for p in Phase::ALL {
            assert!(cuts.iter().any(|c| c.phase == p), "{p:?} never drawn");
        }
        assert!(cuts.iter().all(|c| (0.0..1.0).contains(&c.fraction)));
        assert!(cuts.iter().any(|c| c.fraction < 0.1));
        assert!(cuts.iter().any(|c| c.fraction > 0.9));
    }

    #[test]
    fn a_phase_list_limits_the_draw() {
        for k in 0..100 {
            assert_eq!(Cut::draw(1, k, &[Phase::Upgrade]).phase, Phase::Upgrade);
        }
        assert_eq!(Phase::parse("mark-good"), Some(Phase::MarkGood));
        assert_eq!(Phase::parse("fsck"), None);
    }

    #[test]
    fn journal_replay_and_the_fat_repair_are_not_faults() {
        let lines: Vec<String> = [
            "[    5.593307] EXT4-fs (vda4): recovery complete",
            "ballast-init: boot: /dev/vda1 was not cleanly unmounted; fsck.fat -a: repaired: Dirty bit is set.",
            "[    1.0] EXT4-fs error (device vda4): ext4_lookup:1855: inode #2: comm sysd: deleted inode referenced: 12",
            "[    2.0] FAT-fs (vda1): error, fat_free_clusters: deleting FAT entry beyond EOF",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(console_faults(&lines), lines[2..].to_vec());
    }
}
