//! A test CA and an HTTPS server (rustls, certificates from rcgen) for the
//! stories of the device's TLS: the guest reaches the host as 10.0.2.2, so the
//! server's certificate names that address.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

/// A certificate authority made for one test run.
pub struct TestCa {
    /// Its certificate, PEM (what a seed's `ca_certs` carries).
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A server configuration for `hosts` (addresses or names), signed by this CA.
    pub fn server(&self, hosts: &[&str]) -> Arc<rustls::ServerConfig> {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let p = rcgen::CertificateParams::new(names).expect("server params");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = p.signed_by(&key, &self.issuer).expect("server certificate");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server certificate and key");
        Arc::new(config)
    }
}

/// A stream a handler reads the request from and writes the answer to.
pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Serve HTTPS on a free port of 127.0.0.1 (QEMU's 10.0.2.2), a thread per
/// connection; `handle` answers each decrypted connection. Returns the port.
pub fn serve(
    config: Arc<rustls::ServerConfig>,
    handle: impl Fn(&mut dyn Stream) + Send + Sync + 'static,
) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding the HTTPS server");
    let port = l.local_addr().expect("local addr").port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let (config, handle) = (config.clone(), handle.clone());
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                handle(&mut s);
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    port
}
