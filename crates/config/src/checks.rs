//! Checks of single values (names, keys, addresses, encodings). Each returns
//! `Err(message)` whose text ends with the fix in parentheses.

use std::io::Read;
use std::net::IpAddr;

use base64::Engine as _;

/// Largest decoded `write_files` content.
pub const MAX_FILE: usize = 16 << 20;

pub(crate) fn b64(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if clean.len() / 4 * 3 > MAX_FILE + 3 {
        return Err(format!("decoded data larger than {} MiB", MAX_FILE >> 20));
    }
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| format!("{e}"))
}

pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not valid gzip data: {e}"))?;
    if out.len() > MAX_FILE {
        return Err(format!(
            "decompressed content is larger than {} MiB (ship big files in a container image)",
            MAX_FILE >> 20
        ));
    }
    Ok(out)
}

/// RFC 1123 host name (one label or a dotted name).
pub(crate) fn hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!(
            "`{s}` is not a valid host name (1 to 253 characters)"
        ));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{s}` is not a valid host name (labels of letters, digits and `-`, 1 to 63 characters, not starting or ending with `-`)"
            ));
        }
    }
    Ok(())
}

/// A host name or an IP address (NTP servers, registries).
pub(crate) fn host_or_ip(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    hostname(s).map_err(|_| format!("`{s}` is neither a host name nor an IP address"))
}

pub(crate) fn user_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = s.bytes().enumerate().skip(1).all(|(i, b)| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'_'
            || b == b'-'
            || (b == b'$' && i + 1 == s.len())
    });
    if !first_ok || !rest_ok || s.len() > 32 {
        return Err(format!(
            "`{s}` is not a valid user name (start with a-z or _, then a-z 0-9 _ -, at most 32 characters)"
        ));
    }
    Ok(())
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
];

/// An `authorized_keys` line: optional options, key type, base64 blob whose
/// first field names the same type, optional comment.
pub(crate) fn ssh_key(line: &str) -> Result<(), String> {
    let fix =
        "(paste the whole line of your `id_ed25519.pub`, e.g. `ssh-ed25519 AAAAC3Nz... you@host`)";
    if line.contains('\n') {
        return Err(format!(
            "one key per list item, this one has several lines {fix}"
        ));
    }
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let Some(pos) = tokens.iter().position(|t| KEY_TYPES.contains(t)) else {
        if line.trim_start().starts_with("-----BEGIN") {
            return Err(format!(
                "this is a private key, never put it in a config; give the public key {fix}"
            ));
        }
        return Err(format!(
            "no OpenSSH key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*) {fix}"
        ));
    };
    let kind = tokens[pos];
    let Some(blob) = tokens.get(pos + 1) else {
        return Err(format!("`{kind}` is not followed by the base64 key {fix}"));
    };
    let data = base64::engine::general_purpose::STANDARD
        .decode(blob.as_bytes())
        .map_err(|_| format!("the key after `{kind}` is not valid base64 {fix}"))?;
    let named = data
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| data.get(4..n.checked_add(4)?));
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "the base64 key does not hold a `{kind}` key (truncated or mixed up?) {fix}"
        ));
    }
    Ok(())
}

/// The zones of the IANA database whose name is one word (files at the top
/// of /usr/share/zoneinfo); every other zone is `Area/Location`.
const SINGLE_WORD_ZONES: &[&str] = &[
    "CET",
    "CST6CDT",
    "Cuba",
    "EET",
    "EST",
    "EST5EDT",
    "Egypt",
    "Eire",
    "Factory",
    "GB",
    "GB-Eire",
    "GMT",
    "GMT+0",
    "GMT-0",
    "GMT0",
    "Greenwich",
    "HST",
    "Hongkong",
    "Iceland",
    "Iran",
    "Israel",
    "Jamaica",
    "Japan",
    "Kwajalein",
    "Libya",
    "MET",
    "MST",
    "MST7MDT",
    "NZ",
    "NZ-CHAT",
    "Navajo",
    "PRC",
    "PST8PDT",
    "Poland",
    "Portugal",
    "ROC",
    "ROK",
    "Singapore",
    "Turkey",
    "UCT",
    "UTC",
    "Universal",
    "W-SU",
    "WET",
    "Zulu",
];

/// A zone name as found under /usr/share/zoneinfo: `Area/Location`
/// (`Europe/Berlin`, `America/Argentina/Buenos_Aires`, `Etc/GMT+5`) or one
/// of the one-word zones. No path tricks: no `..`, no leading `/`, no empty
/// part, only the characters zone names use. Whether the zone exists is the
/// device's check (its zone data).
pub(crate) fn timezone(s: &str) -> Result<(), String> {
    let fix =
        "(a zone name like `Europe/Berlin` or `UTC`, as listed by `timedatectl list-timezones`)";
    let part = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
    };
    if SINGLE_WORD_ZONES.contains(&s) {
        return Ok(());
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() >= 2 && parts.len() <= 3 && parts.iter().all(|p| part(p)) {
        return Ok(());
    }
    if s.split('/').any(|p| p == ".." || p == ".") || s.starts_with('/') {
        return Err(format!("`{s}` is a path, not a time zone name {fix}"));
    }
    Err(format!("`{s}` is not a time zone name {fix}"))
}

/// One or more PEM certificate blocks (`-----BEGIN CERTIFICATE-----` ...
/// `-----END CERTIFICATE-----`), each with a base64 body, nothing else but
/// blank lines between them.
pub(crate) fn pem_certificates(s: &str) -> Result<(), String> {
    let fix = "(paste the PEM file, from `-----BEGIN CERTIFICATE-----` to `-----END CERTIFICATE-----`, using YAML's `|`)";
    let mut blocks = 0;
    let mut body: Option<String> = None;
    for line in s.lines().map(str::trim) {
        match (&mut body, line) {
            (None, "") => {}
            (None, "-----BEGIN CERTIFICATE-----") => body = Some(String::new()),
            (None, l) if l.contains("PRIVATE KEY") => {
                return Err(format!(
                    "this is a private key, never put it in a config {fix}"
                ))
            }
            (None, _) => return Err(format!("not a PEM certificate {fix}")),
            (Some(b), "-----END CERTIFICATE-----") => {
                let der = b64(b)
                    .map_err(|e| format!("a certificate's body is not valid base64: {e} {fix}"))?;
                // A DER certificate is a SEQUENCE (0x30).
                if der.first() != Some(&0x30) {
                    return Err(format!(
                        "a certificate's body is not a DER certificate {fix}"
                    ));
                }
                blocks += 1;
                body = None;
            }
            (Some(b), l) => b.push_str(l),
        }
    }
    if body.is_some() {
        return Err(format!(
            "a certificate has no `-----END CERTIFICATE-----` line {fix}"
        ));
    }
    if blocks == 0 {
        return Err(format!("no certificate {fix}"));
    }
    Ok(())
}

/// A calendar date `YYYY-MM-DD` (`expiredate`).
pub(crate) fn date(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not a date (YYYY-MM-DD, e.g. 2030-12-31)");
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return Err(bad());
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(())
}

/// `10.0.0.2/24`, `fd00::1/64`.
pub(crate) fn cidr(s: &str) -> Result<(), String> {
    let bad = || {
        format!("`{s}` is not an address with prefix length (e.g. 192.168.1.10/24 or fd00::10/64)")
    };
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

pub(crate) fn ip(s: &str) -> Result<(), String> {
    s.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("`{s}` is not an IP address (e.g. 192.168.1.1 or fd00::1)"))
}

pub(crate) fn url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("`{s}` is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{s}` is not a URL with a host (e.g. https://updates.example.org/stable)"
        ));
    }
    Ok(())
}

/// `host[:port]` (insecure registries).
pub(crate) fn host_port(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    host_or_ip(host)?;
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("`{s}`: `{p}` is not a port number (1-65535)"))?;
    }
    Ok(())
}

pub(crate) fn abs_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path (start it with /)"));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(format!("`{s}` contains `..` (write the path without it)"));
    }
    if s.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    Ok(())
}

/// Container names: `[a-z0-9-]`, start alphanumeric, at most 63.
pub(crate) fn container_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-');
    if !ok {
        return Err(format!(
            "`{s}` is not a valid container name (a-z, 0-9 and -, at most 63, not starting with -)"
        ));
    }
    Ok(())
}

pub(crate) fn env_name(s: &str) -> Result<(), String> {
    let ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(format!(
            "`{s}` is not a valid environment variable name (letters, digits, _)"
        ));
    }
    Ok(())
}

pub(crate) fn sysctl_name(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    let ok = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        });
    if !ok {
        return Err(format!(
            "`{s}` is not a sysctl name (dotted words like net.ipv4.ip_forward)"
        ));
    }
    Ok(())
}

pub(crate) fn module_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 56
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(format!(
            "`{s}` is not a kernel module name (letters, digits, _ and -)"
        ));
    }
    Ok(())
}

pub(crate) fn interface_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return Err(format!(
            "`{s}` is not an interface name (1 to 15 characters, no / : or spaces, e.g. eth0)"
        ));
    }
    Ok(())
}

/// `ballast-ed25519 HEX` (64 hex digits): the update signing key format.
/// Returns the lowercased hex.
pub(crate) fn trusted_key(s: &str) -> Result<String, String> {
    let fix = "(a line `ballast-ed25519 ` followed by 64 hex digits, as printed by the builder's key tool)";
    let mut parts = s.split_whitespace();
    if parts.next() != Some("ballast-ed25519") {
        return Err(format!("does not start with `ballast-ed25519` {fix}"));
    }
    let hex = parts.next().unwrap_or("");
    if parts.next().is_some() || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("the key is not 64 hex digits {fix}"));
    }
    Ok(hex.to_ascii_lowercase())
}

/// Did the user mean one of `known`? (edit distance at most 2)
pub(crate) fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    if word.len() > 64 {
        return None;
    }
    known
        .iter()
        .map(|k| (dist(word, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f alice@laptop";

    #[test]
    fn ssh_keys() {
        assert_eq!(ssh_key(ED), Ok(()));
        assert_eq!(ssh_key(&format!("no-pty,from=\"10.0.0.0/8\" {ED}")), Ok(()));
        assert!(ssh_key(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
        )
        .unwrap_err()
        .contains("does not hold a `ssh-rsa` key"));
        assert!(ssh_key("ssh-ed25519 not!base64")
            .unwrap_err()
            .contains("base64"));
        assert!(ssh_key("hello")
            .unwrap_err()
            .contains("no OpenSSH key type"));
        assert!(ssh_key("-----BEGIN OPENSSH PRIVATE KEY-----")
            .unwrap_err()
            .contains("private key"));
    }

    #[test]
    fn names_and_addresses() {
        assert!(hostname("web-1.example.org").is_ok());
        assert!(hostname("-bad").is_err());
        assert!(hostname("a..b").is_err());
        assert!(user_name("alice").is_ok());
        assert!(user_name("Alice").is_err());
        assert!(user_name("1x").is_err());
        assert!(timezone("Europe/Paris").is_ok());
        assert!(timezone("America/Argentina/Buenos_Aires").is_ok());
        assert!(timezone("UTC").is_ok());
        assert!(timezone("Paris").is_err());
        assert!(timezone("Etc/GMT+5").is_ok());
        assert!(timezone("EST5EDT").is_ok());
        assert!(timezone("/etc/passwd").is_err());
        assert!(timezone("../../etc/shadow").is_err());
        assert!(timezone("Europe//Berlin").is_err());
        assert!(date("2030-02-29").is_err());
        assert!(date("2032-02-29").is_ok());
        assert!(date("2030-1-1").is_err());
        assert!(timezone("Europe/../etc").is_err());
        assert!(cidr("10.0.0.2/24").is_ok());
        assert!(cidr("fd00::1/64").is_ok());
        assert!(cidr("10.0.0.2/33").is_err());
        assert!(cidr("10.0.0.2").is_err());
        assert!(url("https://u.example.org/stable").is_ok());
        assert!(url("ftp://x").is_err());
        assert!(host_port("registry.local:5000").is_ok());
        assert!(host_port("registry.local:http").is_err());
        assert!(sysctl_name("net.ipv4.ip_forward").is_ok());
        assert!(sysctl_name("forward").is_err());
        assert!(abs_path("/etc/x").is_ok());
        assert!(abs_path("etc/x").is_err());
        assert!(abs_path("/etc/../x").is_err());
        assert_eq!(suggest("hostnme", &["hostname", "fqdn"]), Some("hostname"));
        assert_eq!(suggest("zzzzzz", &["hostname"]), None);
        assert!(trusted_key(&format!("ballast-ed25519 {}", "AB".repeat(32))).is_ok());
        assert!(trusted_key("ballast-ed25519 abcd").is_err());
    }
}
