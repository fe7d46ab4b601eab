//! Wave placement: a channel entry's rollout spreads a release over `duration`
//! seconds from `start`; each machine's place in it comes from a stable hash of its
//! machine id, so the same machines go first every time and a fleet updates
//! gradually without any coordination.

use ballast_bundle::channel::Rollout;

/// This machine's place in a wave, in [0, 1).
pub fn place(machine_id: &str) -> f64 {
    // FNV-1a, then a 64-bit finalizer (splitmix64) so that ids differing in one
    // character land far apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Unix seconds from which this machine may install an entry with `rollout`.
pub fn eligible_at(rollout: &Rollout, machine_id: &str) -> u64 {
    rollout
        .start
        .saturating_add((place(machine_id) * rollout.duration as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_stable_and_spread() {
        assert_eq!(place("machine-a"), place("machine-a"));
        assert_ne!(place("machine-a"), place("machine-b"));
        let places: Vec<f64> = (0..1000).map(|i| place(&format!("m{i:04}"))).collect();
        assert!(places.iter().all(|p| (0.0..1.0).contains(p)));
        // About a tenth of the fleet in each tenth of the wave.
        for tenth in 0..10 {
            let lo = f64::from(tenth) / 10.0;
            let n = places
                .iter()
                .filter(|p| **p >= lo && **p < lo + 0.1)
                .count();
            assert!((60..=140).contains(&n), "tenth {tenth}: {n}");
        }
    }

    #[test]
    fn eligibility_inside_the_rollout() {
        let r = Rollout {
            start: 1000,
            duration: 3600,
        };
        let at = eligible_at(&r, "m1");
        assert!((1000..4600).contains(&at));
        let none = Rollout {
            start: 1000,
            duration: 0,
        };
        assert_eq!(eligible_at(&none, "m1"), 1000);
    }
}
