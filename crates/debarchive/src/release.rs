//! The `Release` file of a Debian suite: which indices exist and their hashes.
//!
//! This module owns reading a (signed) `Release`/`InRelease`: its dates, its
//! architectures and components, and its `SHA256` list, which is the only link
//! between the archive signature and every `Packages` index. It also checks an
//! index's bytes against that list and decompresses them.
//!
//! What it must never do: hand out a release whose signature did not verify
//! (use [`Release::verified`]; [`Release::parse`] is for text already
//! verified), accept an expired `Valid-Until` when freshness is asked for, or
//! decompress index bytes before [`verify_index`] has accepted them.
//!
//! Only SHA-256 is read: MD5 and SHA-1 lists are ignored, as apt does for
//! trust decisions.

use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::deb822;
use crate::keyring::{Keyring, TrustError};

/// Largest decompressed index accepted (a real bookworm amd64 `Packages` is
/// about 50 MB); guards against a compression bomb behind a valid hash.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Why a release or an index was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{what}: line {line}: {message}")]
    Syntax {
        what: String,
        line: usize,
        message: String,
    },
    #[error("{what}: holds no paragraph; is this really a Debian Release file?")]
    Empty { what: String },
    #[error("{what}: field {field}: {reason}")]
    BadField {
        what: String,
        field: String,
        reason: String,
    },
    #[error("{what}: expired: Valid-Until {valid_until} (unix {valid_until_unix}) is before now (unix {now}); the mirror is stale or replaying an old release: use a newer mirror or snapshot (--mirror / BALLAST_DEBIAN_MIRROR)")]
    Expired {
        what: String,
        valid_until: String,
        valid_until_unix: u64,
        now: u64,
    },
    #[error("index {path}: size {actual_size} bytes, SHA-256 {actual}; the signed Release says {expected_size} bytes, SHA-256 {expected}: the mirror served a corrupt or altered file (retry, or use another mirror)")]
    IndexMismatch {
        path: String,
        expected: String,
        actual: String,
        expected_size: u64,
        actual_size: u64,
    },
    #[error("index {path}: cannot decompress ({compression:?}): {message}")]
    Decompress {
        path: String,
        compression: Compression,
        message: String,
    },
}

/// How an index file is compressed (from its file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gz,
    None,
}

/// One file listed in the release's `SHA256` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Path relative to `dists/<suite>/`, e.g. `main/binary-arm64/Packages.xz`.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub compression: Compression,
}

/// A parsed release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    /// `Date` in unix seconds.
    pub date: Option<u64>,
    /// `Valid-Until` as written (for messages) and in unix seconds.
    pub valid_until: Option<(String, u64)>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// `SHA256` list: path -> (size, sha256).
    pub sha256: BTreeMap<String, (u64, String)>,
    /// `Acquire-By-Hash: yes`: indices are also served under
    /// `<dir>/by-hash/SHA256/<hash>`, immune to a mirror updating mid-fetch.
    pub acquire_by_hash: bool,
}

impl Release {
    /// Parse release text (already verified, or for inspection only).
    pub fn parse(text: &str) -> Result<Release, ReleaseError> {
        Self::parse_named("Release", text)
    }

    fn parse_named(what: &str, text: &str) -> Result<Release, ReleaseError> {
        let para = deb822::paragraphs(text)
            .next()
            .ok_or_else(|| ReleaseError::Empty {
                what: what.to_string(),
            })?
            .map_err(|e| ReleaseError::Syntax {
                what: what.to_string(),
                line: e.line,
                message: e.message,
            })?;
        let bad = |field: &str, reason: String| ReleaseError::BadField {
            what: what.to_string(),
            field: field.to_string(),
            reason,
        };
        let date_field = |field: &str| -> Result<Option<(String, u64)>, ReleaseError> {
            match para.get(field) {
                None => Ok(None),
                Some(v) => parse_rfc2822(v)
                    .map(|t| Some((v.to_string(), t)))
                    .map_err(|reason| bad(field, format!("{v:?}: {reason}"))),
            }
        };
        let words = |field: &str| -> Vec<String> {
            para.get(field)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let mut sha256 = BTreeMap::new();
        if let Some(list) = para.get("SHA256") {
            for line in list.lines() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let parts: Vec<&str> = line.split_whitespace().collect();
                let [hash, size, path] = parts[..] else {
                    return Err(bad(
                        "SHA256",
                        format!("line {line:?}: expected `sha256 size path`"),
                    ));
                };
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(
                        "SHA256",
                        format!("{path}: {hash:?} is not a SHA-256 in hex"),
                    ));
                }
                let size: u64 = size
                    .parse()
                    .map_err(|_| bad("SHA256", format!("{path}: size {size:?} is not a number")))?;
                sha256.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
            }
        }
        Ok(Release {
            origin: para.get("Origin").map(str::to_string),
            suite: para.get("Suite").map(str::to_string),
            codename: para.get("Codename").map(str::to_string),
            date: date_field("Date")?.map(|(_, t)| t),
            valid_until: date_field("Valid-Until")?,
            architectures: words("Architectures"),
            components: words("Components"),
            sha256,
            acquire_by_hash: para
                .get("Acquire-By-Hash")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")),
        })
    }

    /// Verify a cleartext-signed `InRelease` with `keyring` at `now` (unix
    /// seconds) and parse the signed text. With `check_expiry`, a release whose
    /// `Valid-Until` has passed is refused. `what` names it in errors
    /// (e.g. "bookworm InRelease from URL").
    pub fn verified(
        keyring: &Keyring,
        what: &str,
        bytes: &[u8],
        now: u64,
        check_expiry: bool,
    ) -> Result<Release, ReleaseError> {
        let verified = keyring.verify_cleartext(what, bytes, now)?;
        let release = Self::parse_named(what, &verified.text)?;
        if check_expiry {
            release.check_fresh(what, now)?;
        }
        Ok(release)
    }

    /// Refuse the release when its `Valid-Until` is at or before `now`.
    pub fn check_fresh(&self, what: &str, now: u64) -> Result<(), ReleaseError> {
        match &self.valid_until {
            Some((text, until)) if *until <= now => Err(ReleaseError::Expired {
                what: what.to_string(),
                valid_until: text.clone(),
                valid_until_unix: *until,
                now,
            }),
            _ => Ok(()),
        }
    }

    /// The binary `Packages` index of `component` for `arch`, preferring
    /// `Packages.xz`, then `.gz`, then uncompressed. `None` when the release
    /// lists none of them.
    pub fn packages_index(&self, component: &str, arch: &str) -> Option<(String, IndexFile)> {
        self.packages_indices(component, arch).into_iter().next()
    }

    /// Every listed variant of the `Packages` index, in order of preference
    /// (a mirror may list `Packages` without serving it uncompressed).
    pub fn packages_indices(&self, component: &str, arch: &str) -> Vec<(String, IndexFile)> {
        [
            ("Packages.xz", Compression::Xz),
            ("Packages.gz", Compression::Gz),
            ("Packages", Compression::None),
        ]
        .into_iter()
        .filter_map(|(name, compression)| {
            let path = format!("{component}/binary-{arch}/{name}");
            let (size, sha256) = self.sha256.get(&path)?;
            Some((
                path.clone(),
                IndexFile {
                    path,
                    size: *size,
                    sha256: sha256.clone(),
                    compression,
                },
            ))
        })
        .collect()
    }
}

impl IndexFile {
    /// The content-addressed path of this index (`Acquire-By-Hash`), relative
    /// to `dists/<suite>/`.
    pub fn by_hash_path(&self) -> String {
        let dir = self.path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/by-hash/SHA256/{}", self.sha256)
    }
}

/// Check index bytes against the signed release's size and SHA-256.
pub fn verify_index(index: &IndexFile, bytes: &[u8]) -> Result<(), ReleaseError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if bytes.len() as u64 != index.size || actual != index.sha256 {
        return Err(ReleaseError::IndexMismatch {
            path: index.path.clone(),
            expected: index.sha256.clone(),
            actual,
            expected_size: index.size,
            actual_size: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Verify, then decompress an index into text.
pub fn open_index(index: &IndexFile, bytes: &[u8]) -> Result<String, ReleaseError> {
    verify_index(index, bytes)?;
    let err = |message: String| ReleaseError::Decompress {
        path: index.path.clone(),
        compression: index.compression,
        message,
    };
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = match index.compression {
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new(bytes)),
        Compression::Gz => Box::new(flate2::read::GzDecoder::new(bytes)),
        Compression::None => Box::new(bytes),
    };
    reader
        .take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(e.to_string()))?;
    if out.len() as u64 > MAX_INDEX_BYTES {
        return Err(err(format!(
            "decompressed size exceeds {MAX_INDEX_BYTES} bytes"
        )));
    }
    String::from_utf8(out).map_err(|e| err(format!("not UTF-8: {e}")))
}

/// Parse an RFC 2822 date as Debian writes it (`Sat, 09 Nov 2024 10:11:12 UTC`)
/// into unix seconds. Accepts an optional weekday, zones `UTC`, `GMT`, `Z` and
/// numeric `+hhmm`/`-hhmm`, and an optional `:ss`.
pub fn parse_rfc2822(text: &str) -> Result<u64, String> {
    let mut rest = text.trim();
    if let Some((head, tail)) = rest.split_once(',') {
        if head.trim().chars().all(|c| c.is_ascii_alphabetic()) {
            rest = tail.trim();
        }
    }
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let (day, month, year, time, zone) = match parts[..] {
        [d, m, y, t, z] => (d, m, y, t, z),
        [d, m, y, t] => (d, m, y, t, "UTC"),
        _ => return Err("expected `[Day,] DD Mon YYYY hh:mm[:ss] ZONE`".into()),
    };
    let num = |s: &str, what: &str| -> Result<i64, String> {
        s.parse::<i64>()
            .map_err(|_| format!("{what} {s:?} is not a number"))
    };
    let day = num(day, "day")?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .ok_or_else(|| format!("month {month:?} is not Jan..Dec"))? as i64
        + 1;
    let year = num(year, "year")?;
    let hms: Vec<&str> = time.split(':').collect();
    let (h, mi, s) = match hms[..] {
        [h, m] => (num(h, "hour")?, num(m, "minute")?, 0),
        [h, m, s] => (num(h, "hour")?, num(m, "minute")?, num(s, "second")?),
        _ => return Err(format!("time {time:?} is not hh:mm[:ss]")),
    };
    if !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return Err("day or time out of range".into());
    }
    let offset = match zone.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh = num(&z[1..3], "zone hours")?;
            let mm = num(&z[3..5], "zone minutes")?;
            let secs = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        z => return Err(format!("time zone {z:?} is not UTC, GMT or +hhmm")),
    };
    let days = days_from_civil(year, month, day);
    let t = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(t).map_err(|_| "date is before 1970".to_string())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 09 Nov 2024 10:11:12 UTC\nValid-Until: Sat, 16 Nov 2024 10:11:12 UTC\nArchitectures: all amd64 arm64 armhf\nComponents: main contrib\nDescription: Debian 12.8\nMD5Sum:\n 0123456789abcdef0123456789abcdef 10 main/binary-arm64/Packages\nSHA256:\n 1111111111111111111111111111111111111111111111111111111111111111 100 main/binary-arm64/Packages\n 2222222222222222222222222222222222222222222222222222222222222222 20 main/binary-arm64/Packages.gz\n 3333333333333333333333333333333333333333333333333333333333333333 15 main/binary-arm64/Packages.xz\n 4444444444444444444444444444444444444444444444444444444444444444 30 main/binary-armhf/Packages.gz\n";

    #[test]
    fn parses_debian_release_fields() {
        let r = Release::parse(RELEASE).unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert_eq!(r.date, Some(1_731_147_072));
        assert_eq!(
            r.valid_until.as_ref().unwrap().1,
            1_731_147_072 + 7 * 86_400
        );
        assert_eq!(r.architectures, ["all", "amd64", "arm64", "armhf"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.sha256.len(), 4);
    }

    #[test]
    fn prefers_xz_then_gz_then_plain() {
        let r = Release::parse(RELEASE).unwrap();
        let (path, idx) = r.packages_index("main", "arm64").unwrap();
        assert_eq!(path, "main/binary-arm64/Packages.xz");
        assert_eq!((idx.size, idx.compression), (15, Compression::Xz));
        let (path, idx) = r.packages_index("main", "armhf").unwrap();
        assert_eq!(path, "main/binary-armhf/Packages.gz");
        assert_eq!(idx.compression, Compression::Gz);
        assert!(r.packages_index("main", "amd64").is_none());
        assert!(r.packages_index("contrib", "arm64").is_none());
    }

    #[test]
    fn expiry_is_checked_against_now() {
        let r = Release::parse(RELEASE).unwrap();
        let until = r.valid_until.as_ref().unwrap().1;
        assert!(r.check_fresh("x", until - 1).is_ok());
        let err = r
            .check_fresh("bookworm InRelease", until)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Sat, 16 Nov 2024 10:11:12 UTC"), "{err}");
        assert!(err.contains("newer mirror or snapshot"), "{err}");
    }

    #[test]
    fn rfc2822_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Ok(0));
        assert_eq!(parse_rfc2822("29 Feb 2024 12:00 GMT"), Ok(1_709_208_000));
        assert_eq!(
            parse_rfc2822("Sat, 09 Nov 2024 12:11:12 +0200"),
            Ok(1_731_147_072)
        );
        assert!(parse_rfc2822("Sat, 09 Foo 2024 10:11:12 UTC").is_err());
        assert!(parse_rfc2822("yesterday").is_err());
    }

    #[test]
    fn index_hash_mismatch_names_path_and_both_hashes() {
        let body = b"Package: a\n";
        let good = IndexFile {
            path: "main/binary-arm64/Packages".into(),
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
            compression: Compression::None,
        };
        assert_eq!(open_index(&good, body).unwrap(), "Package: a\n");
        let bad = IndexFile {
            sha256: "0".repeat(64),
            ..good.clone()
        };
        let err = verify_index(&bad, body).unwrap_err().to_string();
        assert!(err.contains("main/binary-arm64/Packages"), "{err}");
        assert!(
            err.contains(&good.sha256) && err.contains(&bad.sha256),
            "{err}"
        );
    }

    #[test]
    fn malformed_sha256_line_is_refused() {
        let err = Release::parse("Codename: x\nSHA256:\n abc 12 main/x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA256") && err.contains("main/x"), "{err}");
    }
}
