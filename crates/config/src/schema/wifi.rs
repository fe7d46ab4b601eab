//! Wi-Fi networks: netplan's `access-points` mapping (SSID -> settings), read
//! the same way under network-config v2 `wifis:` and `ballast.network`
//! interfaces (`access_points:`), with the checks WPA puts on SSIDs and
//! passwords.

use super::*;

use crate::{AccessPoint, KeyManagement};

/// `{SSID: {password, hidden, bssid, mode, auth: {key-management, password}}}`.
/// `snake` spells the keys `key_management` (the `ballast:` section) instead
/// of netplan's `key-management`.
pub(super) fn access_points(n: &Node, path: &str, snake: bool, ctx: &mut Ctx) -> Vec<AccessPoint> {
    let mut out = Vec::new();
    let V::Map(entries) = &n.v else {
        ctx.expected(
            n,
            path,
            "a mapping of network names (SSIDs) to their settings, e.g. {\"home\": {password: \"...\"}}",
        );
        return out;
    };
    let km_key = if snake {
        "key_management"
    } else {
        "key-management"
    };
    for e in entries {
        let p = format!("{path}.\"{}\"", e.key);
        if let Err(m) = ssid(&e.key) {
            ctx.err(e.key_line, &p, m);
            continue;
        }
        // `"open-cafe": {}` and `"open-cafe":` (null) both mean an open network.
        let empty = Node {
            line: e.value.line,
            v: V::Map(Vec::new()),
        };
        let value = if matches!(e.value.v, V::Null) {
            &empty
        } else {
            &e.value
        };
        let Some(mut g) = Fields::new(value, &p, ctx) else {
            continue;
        };
        let mut password = opt_str(&mut g, "password", ctx, wpa_password);
        let mut km = None;
        if let Some(a) = g.get("auth") {
            if let Some(mut h) = Fields::new(a, &g.path("auth"), ctx) {
                km = opt_str(&mut h, km_key, ctx, key_management).map(|k| match k.as_str() {
                    "none" => KeyManagement::None,
                    "sae" => KeyManagement::Sae,
                    _ => KeyManagement::Psk,
                });
                if let Some(pw) = opt_str(&mut h, "password", ctx, wpa_password) {
                    if password.is_some() {
                        ctx.err(
                            h.key_line("password"),
                            &h.path("password"),
                            "the password is given twice (here and as the access point's `password`): keep one",
                        );
                    }
                    password = Some(pw);
                }
                h.finish(ctx, &[km_key, "password"]);
            }
        }
        let key_management = match (km, &password) {
            (Some(k), _) => k,
            (None, Some(_)) => KeyManagement::Psk,
            (None, None) => KeyManagement::None,
        };
        match (key_management, &password) {
            (KeyManagement::None, Some(_)) => ctx.err(
                value.line,
                &p,
                format!("`{km_key}: none` is an open network: remove the password, or use `{km_key}: psk`"),
            ),
            (KeyManagement::Psk | KeyManagement::Sae, None) => ctx.err(
                value.line,
                &sub(&p, "password"),
                "missing: a WPA network needs its `password` (8 to 63 characters, or the 64-hex-digit PSK)",
            ),
            (KeyManagement::Sae, Some(pw)) if is_hex_psk(pw) => ctx.err(
                value.line,
                &sub(&p, "password"),
                "WPA3 (sae) needs the passphrase itself, not a 64-hex-digit PSK",
            ),
            _ => {}
        }
        if let Some(mode) = opt_str(&mut g, "mode", ctx, any) {
            if mode != "infrastructure" {
                ctx.err(
                    g.key_line("mode"),
                    &g.path("mode"),
                    format!("`{mode}` is not supported: Ballast joins Wi-Fi networks as a client (`mode: infrastructure`, the default)"),
                );
            }
        }
        let hidden = opt_bool(&mut g, "hidden", false, ctx);
        let bssid = opt_str(&mut g, "bssid", ctx, mac_address).map(|b| b.to_ascii_lowercase());
        g.finish(ctx, &["password", "auth", "mode", "hidden", "bssid"]);
        out.push(AccessPoint {
            ssid: e.key.clone(),
            key_management,
            password,
            hidden,
            bssid,
        });
    }
    if entries.is_empty() {
        ctx.err(
            n.line,
            path,
            "no network given: name at least one SSID, e.g. {\"home\": {password: \"...\"}}",
        );
    }
    out
}

/// An SSID: 1 to 32 bytes (802.11), no control characters.
fn ssid(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 32 {
        return Err(format!(
            "`{s}` is not a Wi-Fi network name: an SSID is 1 to 32 bytes ({} given)",
            s.len()
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("an SSID with control characters is not supported".into());
    }
    Ok(())
}

/// The 256-bit PSK written as 64 hex digits (what `wpa_passphrase` prints).
pub(crate) fn is_hex_psk(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A WPA passphrase (8 to 63 printable ASCII characters, as IEEE 802.11i
/// says) or the 64-hex-digit PSK.
fn wpa_password(s: &str) -> Result<(), String> {
    if is_hex_psk(s) {
        return Ok(());
    }
    if !(8..=63).contains(&s.len()) {
        return Err(format!(
            "a WPA password is 8 to 63 characters (or the 64-hex-digit PSK); this one has {}",
            s.chars().count()
        ));
    }
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(
            "a WPA password is printable ASCII only (letters, digits, spaces and punctuation)"
                .into(),
        );
    }
    Ok(())
}

fn key_management(s: &str) -> Result<(), String> {
    match s {
        "none" | "psk" | "sae" => Ok(()),
        "eap" | "eap-sha256" | "eap-suite-b-192" | "802.1x" => Err(format!(
            "`{s}` (WPA enterprise) is not supported yet: use none, psk or sae"
        )),
        _ => Err(format!(
            "`{s}` is not a key management: use none, psk or sae"
        )),
    }
}
