//! GUIDs as GPT uses them: text form, on-disk mixed-endian form, and stable
//! (name-derived) GUIDs so that rebuilding an image gives identical bytes.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::DiskError;

/// A GUID/UUID. The bytes are kept in the order of the text form (RFC 9562
/// "network" order): `Guid([0xc1, 0x2a, 0x73, 0x28, ..])` is
/// `c12a7328-...`. GPT stores the first three fields little-endian; use
/// [`Guid::to_gpt_bytes`] / [`Guid::from_gpt_bytes`] at the disk boundary and
/// nowhere else, so the mixed-endian quirk lives in two functions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID: an unused GPT entry has this type.
    pub const NIL: Guid = Guid([0; 16]);

    /// Parse at compile time; for the constant type GUIDs. Panics (at compile
    /// time, for constants) on malformed text.
    pub const fn from_str_const(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "GUID text must be 36 characters");
        let mut out = [0u8; 16];
        let mut i = 0;
        let mut o = 0;
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                assert!(b[i] == b'-', "GUID text needs '-' at 8, 13, 18, 23");
                i += 1;
                continue;
            }
            out[o] = (hex_val(b[i]) << 4) | hex_val(b[i + 1]);
            o += 1;
            i += 2;
        }
        Guid(out)
    }

    /// A GUID derived from `sha256(namespace || 0x00 || name)`: the first 16
    /// bytes with the RFC 9562 version 8 ("custom") and variant bits set. The
    /// image builder derives disk and partition GUIDs from the image identity
    /// with this, so two builds of the same inputs are byte-identical, while
    /// different images (different names) get different GUIDs.
    pub fn stable(namespace: &str, name: &str) -> Guid {
        let mut h = Sha256::new();
        h.update(namespace.as_bytes());
        h.update([0u8]);
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut g = [0u8; 16];
        g.copy_from_slice(&d[..16]);
        g[6] = (g[6] & 0x0f) | 0x80; // version 8
        g[8] = (g[8] & 0x3f) | 0x80; // variant 10xx (RFC 9562)
        Guid(g)
    }

    /// The 16 bytes as GPT stores them (first three fields little-endian).
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let g = self.0;
        [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ]
    }

    /// Inverse of [`Guid::to_gpt_bytes`].
    pub fn from_gpt_bytes(b: &[u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(*b).swapped()
    }

    fn swapped(&self) -> Guid {
        Guid(self.to_gpt_bytes())
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("GUID text has a non-hex digit"),
    }
}

impl fmt::Display for Guid {
    /// Lower-case `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i == 4 || i == 6 || i == 8 || i == 10 {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = DiskError;

    /// Accepts the usual 36-character text form, either case.
    fn from_str(s: &str) -> Result<Guid, DiskError> {
        let bad = || DiskError::GuidSyntax {
            text: s.to_string(),
        };
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        let mut o = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(bad());
                }
                i += 1;
                continue;
            }
            let hi = (b[i] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (b[i + 1] as char).to_digit(16).ok_or_else(bad)?;
            out[o] = (hi * 16 + lo) as u8;
            o += 1;
            i += 2;
        }
        Ok(Guid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_disk_order() {
        let g: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            g.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_gpt_bytes(&g.to_gpt_bytes()), g);
        assert_eq!(
            Guid::from_str_const("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            g
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93g",
            "c12a7328-f81f-11d2+ba4b-00a0c93ec93b",
        ] {
            let e = s.parse::<Guid>().unwrap_err();
            assert!(e.to_string().contains("GUID"), "{e}");
        }
    }

    #[test]
    fn stable_is_deterministic_versioned_and_name_sensitive() {
        let a = Guid::stable("ballast-disk", "image-x/root-a");
        let b = Guid::stable("ballast-disk", "image-x/root-a");
        let c = Guid::stable("ballast-disk", "image-x/root-b");
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(Guid::stable("ab", "c"), Guid::stable("a", "bc"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let t = a.to_string();
        assert_eq!(&t[14..15], "8", "version nibble in {t}");
        assert!(
            matches!(&t[19..20], "8" | "9" | "a" | "b"),
            "variant in {t}"
        );
    }
}
