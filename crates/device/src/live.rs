//! The live medium's config area: a fixed-size file on the ISO
//! ([`crate::paths::MEDIUM_CONFIG_AREA`]) that `ballast iso customize` fills in
//! place with a first-boot config, so a customised ISO is a byte copy with a
//! few sectors changed, made in seconds without a rebuild (as
//! `coreos-installer iso customize` does with its embed area).
//!
//! Layout (one writer: the builder; one reader: sysd on a live system):
//!
//! ```text
//! ballast-config-area 1\n            the magic line, also in an empty area
//! user-data LEN\n<LEN bytes>\n        optional
//! meta-data LEN\n<LEN bytes>\n        optional
//! end\n
//! NUL padding to the area's size
//! ```
//!
//! This module only encodes and decodes; it never reads the medium itself.

/// The first line of every config area, empty or not.
pub const MAGIC: &[u8] = b"ballast-config-area 1\n";
/// The area's size on the ISO: room for a generous config, two ISO sectors' worth
/// of slack, and still nothing next to the root image.
pub const AREA_BYTES: usize = 256 * 1024;

/// What a config area holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigArea {
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<Vec<u8>>,
}

/// Why an area could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    #[error(
        "not a Ballast config area (it does not start with {:?})",
        String::from_utf8_lossy(MAGIC)
    )]
    NoMagic,
    #[error("config area: malformed record at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
    #[error("config area: the config takes {need} bytes, the area holds {room}; shorten the user-data or meta-data")]
    TooBig { need: usize, room: usize },
}

impl ConfigArea {
    /// The area's bytes, exactly `room` long (NUL padded).
    pub fn encode(&self, room: usize) -> Result<Vec<u8>, AreaError> {
        let mut out = MAGIC.to_vec();
        for (name, data) in [
            ("user-data", &self.user_data),
            ("meta-data", &self.meta_data),
        ] {
            if let Some(data) = data {
                out.extend_from_slice(format!("{name} {}\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.push(b'\n');
            }
        }
        out.extend_from_slice(b"end\n");
        if out.len() > room {
            return Err(AreaError::TooBig {
                need: out.len(),
                room,
            });
        }
        out.resize(room, 0);
        Ok(out)
    }

    /// Reads an area; an area without records is `ConfigArea::default()`.
    pub fn decode(bytes: &[u8]) -> Result<ConfigArea, AreaError> {
        let mut at = MAGIC.len();
        if bytes.get(..at) != Some(MAGIC) {
            return Err(AreaError::NoMagic);
        }
        let mut area = ConfigArea::default();
        loop {
            let rest = bytes.get(at..).unwrap_or_default();
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                return Err(AreaError::Malformed {
                    at,
                    what: "a record line without its newline (no `end`)",
                });
            };
            let line = &rest[..nl];
            if line == b"end" {
                return Ok(area);
            }
            let bad = |what| AreaError::Malformed { at, what };
            let text = std::str::from_utf8(line).map_err(|_| bad("not text"))?;
            let (name, len) = text.split_once(' ').ok_or(bad("no length"))?;
            let len: usize = len
                .parse()
                .map_err(|_| bad("a length that is not a number"))?;
            let start = at + nl + 1;
            let end = start.checked_add(len).ok_or(bad("a length too large"))?;
            let data = bytes
                .get(start..end)
                .ok_or(bad("a length past the area's end"))?
                .to_vec();
            if bytes.get(end) != Some(&b'\n') {
                return Err(bad("no newline after the data"));
            }
            match name {
                "user-data" => area.user_data = Some(data),
                "meta-data" => area.meta_data = Some(data),
                _ => return Err(bad("an unknown record (expected user-data or meta-data)")),
            }
            at = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let area = ConfigArea {
            user_data: Some(b"#cloud-config\nhostname: x\n".to_vec()),
            meta_data: Some(b"instance-id: i\n".to_vec()),
        };
        let bytes = area.encode(4096).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(ConfigArea::decode(&bytes).unwrap(), area);
        let empty = ConfigArea::default().encode(AREA_BYTES).unwrap();
        assert_eq!(ConfigArea::decode(&empty).unwrap(), ConfigArea::default());
    }

    #[test]
    fn refuses_what_is_not_an_area() {
        assert_eq!(ConfigArea::decode(&[0; 64]), Err(AreaError::NoMagic));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(b"user-data 999\nabc\n");
        assert!(matches!(
            ConfigArea::decode(&bytes),
            Err(AreaError::Malformed { .. })
        ));
        let big = ConfigArea {
            user_data: Some(vec![b'x'; 100]),
            meta_data: None,
        };
        assert!(matches!(big.encode(64), Err(AreaError::TooBig { .. })));
    }
}
