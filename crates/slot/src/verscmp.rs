//! systemd's `strverscmp_improved()`, the version ordering systemd-boot uses for the
//! `version` field and entry ids (UAPI "Version Format Specification"). Reimplemented
//! from its documented rules so [`crate::bls::Esp::default_slot`] predicts systemd-boot.
//!
//! Rules: only `[A-Za-z0-9~^.-]` count, other characters are skipped; `~` sorts lower
//! than anything (pre-releases); a string that ends first is older; `-` sorts lower than
//! `^` and `.`; `^` lower than `.`; numeric segments compare numerically and beat
//! alphabetic ones; alphabetic segments compare bytewise, longer is newer.

use std::cmp::Ordering;

fn valid(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Compare two version strings the way systemd-boot does.
pub fn strverscmp_improved(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    loop {
        while i < a.len() && !valid(a[i]) {
            i += 1;
        }
        while j < b.len() && !valid(b[j]) {
            j += 1;
        }
        // '~' marks a pre-release: the one with it is older.
        if at(a, i) == b'~' || at(b, j) == b'~' {
            let r = (at(a, i) != b'~').cmp(&(at(b, j) != b'~'));
            if r != Ordering::Equal {
                return r;
            }
            i += 1;
            j += 1;
        }
        if i >= a.len() || j >= b.len() {
            return a[i.min(a.len())..].cmp(&b[j.min(b.len())..]);
        }
        for sep in [b'-', b'^', b'.'] {
            if at(a, i) == sep || at(b, j) == sep {
                let r = (at(a, i) != sep).cmp(&(at(b, j) != sep));
                if r != Ordering::Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }
        let (ii, jj);
        if at(a, i).is_ascii_digit() || at(b, j).is_ascii_digit() {
            let mut x = i;
            while at(a, x).is_ascii_digit() {
                x += 1;
            }
            let mut y = j;
            while at(b, y).is_ascii_digit() {
                y += 1;
            }
            // A numeric segment is newer than an alphabetic (empty numeric) one.
            let r = (x != i).cmp(&(y != j));
            if r != Ordering::Equal {
                return r;
            }
            while at(a, i) == b'0' && i < x {
                i += 1;
            }
            while at(b, j) == b'0' && j < y {
                j += 1;
            }
            let r = (x - i).cmp(&(y - j)).then_with(|| a[i..x].cmp(&b[j..y]));
            if r != Ordering::Equal {
                return r;
            }
            ii = x;
            jj = y;
        } else {
            let mut x = i;
            while at(a, x).is_ascii_alphabetic() {
                x += 1;
            }
            let mut y = j;
            while at(b, y).is_ascii_alphabetic() {
                y += 1;
            }
            let n = (x - i).min(y - j);
            let r = a[i..i + n]
                .cmp(&b[j..j + n])
                .then_with(|| (x - i).cmp(&(y - j)));
            if r != Ordering::Equal {
                return r;
            }
            ii = x;
            jj = y;
        }
        i = ii;
        j = jj;
    }
}

#[cfg(test)]
mod tests {
    use super::strverscmp_improved as cmp;
    use std::cmp::Ordering::*;

    #[test]
    fn orders_like_systemd() {
        // Pairs from the UAPI Version Format Specification's examples: left < right.
        let older_newer = [
            ("1.0.0", "1.0.1"),
            ("1.9", "1.10"),
            ("122.1", "123"),
            ("123~rc1", "123"),
            ("123-a", "123.a"),
            ("123-a", "123^a"),
            ("123^a", "123.a"),
            ("123", "123.1"),
            ("abc", "abcd"),
            ("a", "1"),
            ("5", "10"),
            // unlike semver, a suffix after `-` makes a version newer
            ("1.2.0", "1.2.0-rc.1"),
        ];
        for (o, n) in older_newer {
            assert_eq!(cmp(o, n), Less, "{o} < {n}");
            assert_eq!(cmp(n, o), Greater, "{n} > {o}");
        }
        assert_eq!(cmp("1.0", "1.0"), Equal);
        assert_eq!(cmp("007", "7"), Equal);
        assert_eq!(cmp("", ""), Equal);
        assert_eq!(cmp("", "1"), Less);
    }
}
