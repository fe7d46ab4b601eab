//! sysd's one HTTP(S) client: every fetch sysd makes goes through [`agent`]: the
//! first-boot `ballast.config=URL`, the unattended install's image, the update
//! agent's channel index, bundles and deltas, the reboot lock engines (etcd,
//! FleetLock) and the user's HTTP health checks.
//!
//! `https://` is verified with rustls (ring as its crypto provider, ADR
//! 0010-fleet) against a [`Trust`]: the image's CA bundle (Debian's
//! ca-certificates, as the admin userland carries it), replaced by the applied
//! config's bundle when the config has `ca_certs` (that one is the image's plus
//! the config's, or only the config's with `remove_defaults`), plus CAs a caller
//! adds (the NoCloud seed's `ca_certs` for a `ballast.config=https://` URL: a
//! document fetched from a URL cannot carry the CA that verifies that URL). No
//! roots are compiled in. `http://` stays allowed: channels, bundles and deltas
//! are signed, so the transport only hides them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The image's CA bundle, in the admin userland (Debian's path under it).
pub const IMAGE_CA_BUNDLE: &str = "/usr/lib/ballast/userland/etc/ssl/certs/ca-certificates.crt";

/// The applied config's CA bundle (written by first boot's `ca_certs`).
pub fn config_ca_bundle() -> PathBuf {
    Path::new(ballast_device::paths::CONFIG_DIR).join("etc/ssl/certs/ca-certificates.crt")
}

/// The CAs an `https://` server's certificate must chain to.
#[derive(Clone, Default, Debug)]
pub struct Trust {
    certs: Vec<Certificate<'static>>,
    /// Where they came from, for messages.
    from: Vec<String>,
}

impl Trust {
    /// The device's trust: the applied config's bundle when it has one, else the
    /// image's.
    pub fn device() -> Trust {
        let mut t = Trust::default();
        let config = config_ca_bundle();
        let from_config = std::fs::read_to_string(&config)
            .map(|pem| t.add_pem(&pem, "the config's ca_certs with the image's CA bundle") > 0)
            .unwrap_or(false);
        if !from_config {
            if let Ok(pem) = std::fs::read_to_string(IMAGE_CA_BUNDLE) {
                t.add_pem(&pem, "the image's CA bundle");
            }
        }
        t
    }

    /// Add every certificate in `pem`; returns how many. Text that is not a
    /// certificate is skipped (the config check reports it).
    pub fn add_pem(&mut self, pem: &str, from: &str) -> usize {
        let before = self.certs.len();
        self.certs.extend(
            ureq::tls::parse_pem(pem.as_bytes()).filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            }),
        );
        let added = self.certs.len() - before;
        if added > 0 {
            self.from.push(format!("{from} ({added})"));
        }
        added
    }

    /// "the image's CA bundle (146), the seed's ca_certs (1)".
    pub fn describe(&self) -> String {
        if self.from.is_empty() {
            "no CA certificates (the image has no CA bundle and the config no ca_certs)".into()
        } else {
            self.from.join(", ")
        }
    }
}

/// Timeouts and status handling of one client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole call, body included; `None`: no limit (bundles stream for minutes).
    pub global: Option<Duration>,
    pub connect: Option<Duration>,
    /// `false`: 4xx and 5xx are answers, not errors.
    pub status_as_error: bool,
}

impl Limits {
    /// A bounded call whose status the caller looks at.
    pub fn call(timeout: Duration) -> Limits {
        Limits {
            global: Some(timeout),
            connect: None,
            status_as_error: false,
        }
    }

    /// A download: only the connection is bounded; HTTP errors are errors.
    pub fn download() -> Limits {
        Limits {
            global: None,
            connect: Some(Duration::from_secs(10)),
            status_as_error: true,
        }
    }
}

/// An HTTP(S) client trusting `trust`.
pub fn agent(trust: &Trust, limits: Limits) -> ureq::Agent {
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&trust.certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(limits.global)
        .timeout_connect(limits.connect)
        .http_status_as_error(limits.status_as_error)
        .build()
        .new_agent()
}

/// The device's client (see [`Trust::device`]).
pub fn device_agent(limits: Limits) -> ureq::Agent {
    agent(&Trust::device(), limits)
}

/// Why a call failed, in words; a certificate that does not verify says so and
/// what was trusted.
pub fn explain(e: &ureq::Error, trust: &Trust) -> String {
    match tls_error(e) {
        Some(tls) => format!(
            "TLS: the server's certificate was refused ({tls}); trusted: {}",
            trust.describe()
        ),
        None => e.to_string(),
    }
}

/// The TLS failure inside `e`, if it is one.
pub fn tls_error(e: &ureq::Error) -> Option<String> {
    match e {
        ureq::Error::Rustls(r) => Some(r.to_string()),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(|r| r.to_string()),
        _ => None,
    }
}

/// `true` for the schemes sysd fetches.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

#[cfg(test)]
mod tests;
