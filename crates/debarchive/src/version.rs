//! Debian version numbers (Debian Policy §5.6.12) and their ordering.
//!
//! This module owns the one comparison every other part of Ballast uses to
//! decide which of two package versions is newer. It is a transcription of
//! dpkg's `verrevcmp`, not an approximation of it: if dpkg and this module
//! ever disagree, this module is wrong.
//!
//! A version is `[epoch:]upstream[-revision]`. The epoch is a decimal number
//! (absent means 0); the revision is everything after the *last* `-` (absent
//! means the empty revision); the upstream part may therefore contain `-`
//! itself when a revision is present.
//!
//! ## Equality follows the ordering
//!
//! `Eq` and `Hash` agree with `Ord`, exactly as `dpkg --compare-versions ... eq`
//! does. dpkg treats an absent revision as the empty string, and in
//! `verrevcmp` an empty digit run counts as 0 and leading zeros are ignored,
//! so these pairs are *equal*: `1.0` / `1.0-0`, `0:1.0` / `1.0`, `1.01` /
//! `1.1`, `1.0` / `1.00`. `Display` still prints the text exactly as parsed,
//! so a version round-trips byte for byte.
//!
//! ## What is rejected
//!
//! Parsing is strict where Policy is: an empty version, spaces, an empty or
//! non-numeric epoch, an upstream part that does not start with a digit, an
//! empty revision after `-`, and characters outside Policy's sets
//! (upstream: alphanumerics and `. + - ~` plus `:` when an epoch is present;
//! revision: alphanumerics and `. + ~`). dpkg only warns about some of these;
//! no package in Debian's archive needs the leniency, and a strict parser
//! catches typos in image files early.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A parsed Debian version. Cheap to compare; one heap allocation.
#[derive(Clone)]
pub struct Version {
    /// The version exactly as written (including any `epoch:` prefix).
    raw: Box<str>,
    epoch: u32,
    /// Byte range of the upstream part within `raw`.
    upstream_start: u32,
    upstream_end: u32,
}

/// Why a string is not a valid Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {text:?}: {reason}")]
pub struct VersionError {
    /// The rejected text.
    pub text: String,
    /// What is wrong with it, in words a user can act on.
    pub reason: &'static str,
}

impl Version {
    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part, between the epoch's `:` and the last `-`.
    pub fn upstream(&self) -> &str {
        &self.raw[self.upstream_start as usize..self.upstream_end as usize]
    }

    /// The Debian revision after the last `-`, or `""` when absent.
    pub fn revision(&self) -> &str {
        let end = self.upstream_end as usize;
        if end < self.raw.len() {
            &self.raw[end + 1..]
        } else {
            ""
        }
    }

    /// The version exactly as it was written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Parse without going through `FromStr` (same rules).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let err = |reason| VersionError {
            text: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(err("the version is empty"));
        }
        if text.len() > u32::MAX as usize {
            return Err(err("the version is too long"));
        }
        if text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(err("the version contains whitespace or control characters"));
        }
        let (epoch, upstream_start) = match text.find(':') {
            Some(colon) => {
                let digits = &text[..colon];
                if digits.is_empty() {
                    return Err(err("the epoch before ':' is empty"));
                }
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the epoch before ':' is not a number"));
                }
                let epoch: u32 = digits
                    .parse()
                    .map_err(|_| err("the epoch is too large (at most 4294967295)"))?;
                if colon + 1 == text.len() {
                    return Err(err("nothing follows the epoch's ':'"));
                }
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let rest = &text[upstream_start..];
        let upstream_end = match rest.rfind('-') {
            Some(dash) => {
                if dash + 1 == rest.len() {
                    return Err(err("the revision after the last '-' is empty"));
                }
                upstream_start + dash
            }
            None => text.len(),
        };
        let upstream = &text[upstream_start..upstream_end];
        match upstream.bytes().next() {
            None => return Err(err("the upstream version is empty")),
            Some(b) if !b.is_ascii_digit() => {
                return Err(err("the upstream version must start with a digit"))
            }
            Some(_) => {}
        }
        let has_revision = upstream_end < text.len();
        let epoch_present = upstream_start > 0;
        for b in upstream.bytes() {
            let ok = b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'+' | b'~')
                || (b == b'-' && has_revision)
                || (b == b':' && epoch_present);
            if !ok {
                return Err(err(
                    "the upstream version may only contain letters, digits and . + ~ (and - when a revision follows, : after an epoch)",
                ));
            }
        }
        if has_revision {
            let revision = &text[upstream_end + 1..];
            if !revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~'))
            {
                return Err(err(
                    "the revision may only contain letters, digits and . + ~",
                ));
            }
        }
        Ok(Version {
            raw: text.into(),
            epoch,
            upstream_start: upstream_start as u32,
            upstream_end: upstream_end as u32,
        })
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

/// dpkg's `order()`: digits (and the end) weigh 0, letters their ASCII code,
/// `~` sorts before everything including the end, other symbols after letters.
#[inline]
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`, byte for byte.
pub fn compare_parts(a: &str, b: &str) -> Ordering {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let (mut i, mut j) = (0usize, 0usize);
    let is_digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        // Non-digit prefix, compared with `order`.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit run, compared numerically without overflow.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a, i) && is_digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if is_digit(a, i) {
            return Ordering::Greater;
        }
        if is_digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_parts(self.upstream(), other.upstream()))
            .then_with(|| compare_parts(self.revision(), other.revision()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Hash the canonical form `verrevcmp` sees: alternating non-digit runs and
/// digit runs without leading zeros, trailing "empty non-digit + zero" pairs
/// dropped. Two parts hash alike whenever `compare_parts` calls them equal.
fn hash_part<H: Hasher>(part: &str, state: &mut H) {
    let s = part.as_bytes();
    let mut i = 0;
    // Runs come in (non-digit, digit) pairs; a pair that is ("", zero) only
    // occurs at the very end (every later pair starts with a non-digit), and
    // `verrevcmp` treats it as absent.
    while i < s.len() {
        let start = i;
        while i < s.len() && !s[i].is_ascii_digit() {
            i += 1;
        }
        let non_digits = &s[start..i];
        while i < s.len() && s[i] == b'0' {
            i += 1;
        }
        let digits_start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[digits_start..i];
        if non_digits.is_empty() && digits.is_empty() {
            continue;
        }
        state.write_usize(non_digits.len());
        state.write(non_digits);
        state.write_usize(digits.len());
        state.write(digits);
    }
    state.write_u8(0xff);
}

impl Hash for Version {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.epoch.hash(state);
        hash_part(self.upstream(), state);
        hash_part(self.revision(), state);
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn cmp(a: &str, b: &str) -> Ordering {
        v(a).cmp(&v(b))
    }

    #[test]
    fn splits_epoch_upstream_revision() {
        let x = v("2:1.2-3-4");
        assert_eq!(x.epoch(), 2);
        assert_eq!(x.upstream(), "1.2-3");
        assert_eq!(x.revision(), "4");
        let y = v("1.0");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.0", ""));
        let z = v("1:2.30:1-0ubuntu1");
        assert_eq!(z.upstream(), "2.30:1");
        assert_eq!(z.revision(), "0ubuntu1");
    }

    #[test]
    fn policy_tilde_example() {
        // Policy §5.6.12: "~~" < "~~a" < "~" < "" < "a".
        let ordered = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"];
        for w in ordered.windows(2) {
            assert_eq!(cmp(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(cmp("1.0~rc1-1", "1.0-1"), Ordering::Less);
        assert_eq!(cmp("1.0-1~bpo1", "1.0-1"), Ordering::Less);
    }

    #[test]
    fn dpkg_edge_cases() {
        use Ordering::*;
        let cases: &[(&str, &str, Ordering)] = &[
            // epochs dominate everything
            ("1:1.0", "1.0", Greater),
            ("1:0.1", "9.9-9", Greater),
            ("0:1.0", "1.0", Equal),
            // digits compare numerically, leading zeros ignored
            ("1.10", "1.9", Greater),
            ("1.01", "1.1", Equal),
            ("1.0", "1.00", Equal),
            ("1.002", "1.2", Equal),
            ("10", "9", Greater),
            // absent revision equals "0" and ""
            ("1.0", "1.0-0", Equal),
            ("1.0-1", "1.0", Greater),
            // letters sort before non-letters, after the end
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("1.0.", "1.0", Greater),
            ("1.0.", "1.0.0", Equal),
            ("1a", "1b", Less),
            ("1A", "1a", Less),
            ("1.0+dfsg", "1.0", Greater),
            ("1.0+b1", "1.0", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("3.0.9-1", "3.0.11-1~deb12u2", Less),
            // revisions containing dashes in upstream
            ("1.2-3-4", "1.2-3-5", Less),
            ("1.2-3-4", "1.2-4", Greater), // dpkg --compare-versions agrees
            // huge numbers do not overflow
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
            ("1.18446744073709551616", "1.18446744073709551615", Greater),
        ];
        for &(a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn equal_versions_hash_alike() {
        let h = |s: &str| {
            let mut st = DefaultHasher::new();
            v(s).hash(&mut st);
            st.finish()
        };
        for (a, b) in [
            ("1.0", "1.0-0"),
            ("0:1.0", "1.0"),
            ("1.01", "1.1"),
            ("1.0", "1.00"),
            ("1.", "1.0"),
            ("1a", "1a0"),
        ] {
            assert_eq!(v(a), v(b), "{a} == {b}");
            assert_eq!(h(a), h(b), "hash({a}) == hash({b})");
        }
        assert_ne!(h("1.0"), h("1.1"));
    }

    #[test]
    fn rejects_invalid_versions_with_a_reason() {
        for bad in [
            "",
            " 1.0",
            "1.0 ",
            "a1.0",
            ":1.0",
            "x:1.0",
            "1:",
            "1.0-",
            "-1",
            "1.0_1",
            "1.0-1:2",
            "1.0-a_b",
            "99999999999:1.0",
            "1.0-1-",
        ] {
            let e = Version::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty());
            assert!(e.to_string().contains("invalid version"), "{e}");
        }
        assert!(Version::parse("1.0:1").is_err(), "':' needs an epoch");
        assert!(Version::parse("0:1.0:1").is_ok());
    }

    #[test]
    fn display_is_the_input() {
        for s in ["1:2.3-4", "0:1.0", "1.0-0", "1.0~rc1+dfsg-2+deb12u1"] {
            assert_eq!(v(s).to_string(), s);
        }
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        (
            prop::option::of(0u32..4),
            "[0-9][0-9a-z.+~]{0,6}",
            prop::option::of("[0-9a-z.+~]{1,5}"),
        )
            .prop_map(|(e, up, rev)| {
                let mut s = String::new();
                if let Some(e) = e {
                    s.push_str(&format!("{e}:"));
                }
                s.push_str(&up);
                if let Some(r) = rev {
                    s.push('-');
                    s.push_str(&r);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn display_round_trips(s in version_strategy()) {
            let x = v(&s);
            prop_assert_eq!(x.to_string(), s.clone());
            prop_assert_eq!(v(&x.to_string()), x);
        }

        #[test]
        fn ordering_is_antisymmetric(a in version_strategy(), b in version_strategy()) {
            prop_assert_eq!(cmp(&a, &b), cmp(&b, &a).reverse());
        }

        #[test]
        fn ordering_is_transitive(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            let mut xs = [v(&a), v(&b), v(&c)];
            xs.sort();
            prop_assert!(xs[0] <= xs[1] && xs[1] <= xs[2] && xs[0] <= xs[2]);
        }

        #[test]
        fn equality_agrees_with_hash(a in version_strategy(), b in version_strategy()) {
            let (x, y) = (v(&a), v(&b));
            if x == y {
                let mut h1 = DefaultHasher::new();
                let mut h2 = DefaultHasher::new();
                x.hash(&mut h1);
                y.hash(&mut h2);
                prop_assert_eq!(h1.finish(), h2.finish());
            }
        }

        #[test]
        fn tilde_sorts_before_anything(a in version_strategy(), suffix in "[0-9a-z.+~]{0,3}") {
            let x = v(&a);
            let with_tilde = format!("{}~{}", x.upstream(), suffix);
            let mut s = String::new();
            if a.contains(':') { s.push_str(&format!("{}:", x.epoch())); }
            s.push_str(&with_tilde);
            if !x.revision().is_empty() { s.push('-'); s.push_str(x.revision()); }
            prop_assert!(v(&s) < x, "{} < {}", s, a);
        }
    }
}
