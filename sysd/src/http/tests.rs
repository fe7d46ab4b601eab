//! The client against a real TLS server (rustls, certificates from rcgen):
//! the right CA is accepted, another CA and an empty trust are refused.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A server for 127.0.0.1 signed by `ca`, answering `hello` to every request.
fn serve(ca: &Ca) -> u16 {
    let p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
    });
    port
}

fn get(trust: &Trust, port: u16) -> Result<String, ureq::Error> {
    agent(trust, Limits::call(Duration::from_secs(10)))
        .get(format!("https://127.0.0.1:{port}/x"))
        .call()?
        .body_mut()
        .read_to_string()
}

#[test]
fn https_is_verified_against_the_trusted_cas() {
    let (good, other) = (ca("good CA"), ca("other CA"));
    let port = serve(&good);

    let mut trust = Trust::default();
    assert_eq!(trust.add_pem(&good.cert.pem(), "the seed's ca_certs"), 1);
    assert_eq!(get(&trust, port).unwrap(), "hello");

    let mut wrong = Trust::default();
    // Text around and between certificates is skipped, as in Debian's bundle.
    let bundle = format!("# a comment\n{}\nnot a cert\n", other.cert.pem());
    assert_eq!(wrong.add_pem(&bundle, "the image's CA bundle"), 1);
    let e = get(&wrong, port).unwrap_err();
    let why = explain(&e, &wrong);
    assert!(tls_error(&e).is_some(), "{e:?}");
    assert!(
        why.contains("certificate") && why.contains("the image's CA bundle (1)"),
        "{why}"
    );

    let e = get(&Trust::default(), port).unwrap_err();
    assert!(tls_error(&e).is_some(), "{e:?}");
    assert!(Trust::default().describe().contains("no CA certificates"));
}
