//! The archive client against archives this test publishes itself: a real
//! OpenPGP key, real `.deb` files, `InRelease` cleartext-signed, served from
//! `file://` and from a small HTTP server. Each story checks what a user would:
//! a good archive resolves and fetches with matching hashes; every broken link
//! of the trust chain is refused with a message naming what broke.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use ballast_debarchive::cache::Cache;
use ballast_debarchive::client::{Archive, ArchiveConfig, ArchiveError};
use ballast_debarchive::keyring::Keyring;
use ballast_debarchive::resolve::Request;
use ballast_debarchive::sources::Sources;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::types::Password;
use sha2::{Digest, Sha256};

const ARCH: &str = "arm64";
const FAR_FUTURE: &str = "Fri, 01 Jan 2100 00:00:00 UTC";

fn gen_key(name: &str) -> SignedSecretKey {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("{name} <{name}@test.invalid>"));
    params
        .build()
        .unwrap()
        .generate(rand::thread_rng())
        .unwrap()
}

fn sign(key: &SignedSecretKey, text: &str) -> String {
    let msg = CleartextSignedMessage::sign(
        rand::thread_rng(),
        text,
        &key.primary_key,
        &Password::empty(),
    )
    .unwrap();
    msg.to_armored_string(ArmorOptions::default()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A minimal but real `.deb`: `debian-binary`, `control.tar.gz`, `data.tar.gz`.
fn build_deb(name: &str, version: &str, depends: Option<&str>) -> Vec<u8> {
    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {ARCH}\nMaintainer: t <t@test.invalid>\nDescription: test package\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    let control_tar = tar_gz(&[("./control", control.as_bytes())]);
    let content = format!("{name} {version}\n");
    let data_tar = tar_gz(&[(&format!("./usr/share/{name}/VERSION"), content.as_bytes())]);
    let mut out = Vec::new();
    {
        let mut ar = ar::Builder::new(&mut out);
        for (id, data) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar.gz", &control_tar),
            ("data.tar.gz", &data_tar),
        ] {
            let header = ar::Header::new(id.as_bytes().to_vec(), data.len() as u64);
            ar.append(&header, data).unwrap();
        }
    }
    out
}

struct Pkg {
    name: &'static str,
    version: &'static str,
    depends: Option<&'static str>,
}

/// A published test mirror: `<root>/debian` (bookworm) and `<root>/debian-security`.
struct Mirror {
    root: tempfile::TempDir,
    key: SignedSecretKey,
    /// suite -> Packages text as published
    packages: Vec<(String, String)>,
}

impl Mirror {
    fn new() -> Mirror {
        let mirror = Mirror {
            root: tempfile::tempdir().unwrap(),
            key: gen_key("archive"),
            packages: Vec::new(),
        };
        let mut mirror = mirror;
        mirror.add_suite(
            "bookworm",
            &[
                Pkg {
                    name: "hello",
                    version: "1.0-1",
                    depends: Some("libfoo (>= 1.0)"),
                },
                Pkg {
                    name: "libfoo",
                    version: "1.0-1",
                    depends: None,
                },
                Pkg {
                    name: "unrelated",
                    version: "2.0",
                    depends: None,
                },
            ],
        );
        mirror.add_suite(
            "bookworm-security",
            &[Pkg {
                name: "libfoo",
                version: "1.0-1+deb12u1",
                depends: None,
            }],
        );
        mirror
    }

    fn base(&self, suite: &str) -> PathBuf {
        let archive = if suite.ends_with("-security") {
            "debian-security"
        } else {
            "debian"
        };
        self.root.path().join(archive)
    }

    fn sources(&self) -> Sources {
        Sources {
            debian: format!("file://{}", self.base("bookworm").display()),
            security: format!("file://{}", self.base("bookworm-security").display()),
        }
    }

    fn add_suite(&mut self, suite: &str, pkgs: &[Pkg]) {
        let base = self.base(suite);
        let mut text = String::new();
        for p in pkgs {
            let deb = build_deb(p.name, p.version, p.depends);
            let pool = if suite.ends_with("-security") {
                "pool/updates/main"
            } else {
                "pool/main"
            };
            let filename = format!(
                "{pool}/{}/{}/{}_{}_{ARCH}.deb",
                &p.name[..1],
                p.name,
                p.name,
                p.version
            );
            let path = base.join(&filename);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &deb).unwrap();
            text.push_str(&format!(
                "Package: {}\nVersion: {}\nArchitecture: {ARCH}\n{}Priority: optional\nFilename: {filename}\nSize: {}\nSHA256: {}\nDescription: test\n\n",
                p.name,
                p.version,
                p.depends.map(|d| format!("Depends: {d}\n")).unwrap_or_default(),
                deb.len(),
                sha256(&deb)
            ));
        }
        self.packages.push((suite.to_string(), text.clone()));
        self.publish(suite, &text, |r| r);
    }

    /// Write Packages(.xz), Release (edited by `edit`) and InRelease signed by the archive key.
    fn publish(&self, suite: &str, packages: &str, edit: impl Fn(String) -> String) {
        let dists = self.base(suite).join("dists").join(suite);
        let bin = dists.join(format!("main/binary-{ARCH}"));
        std::fs::create_dir_all(&bin).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(packages.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        std::fs::write(bin.join("Packages.xz"), &xz).unwrap();
        std::fs::write(bin.join("Packages"), packages).unwrap();
        let release = format!(
            "Origin: Test\nLabel: Test\nSuite: {suite}\nCodename: {suite}\nDate: Sat, 09 Nov 2024 10:11:12 UTC\nValid-Until: {FAR_FUTURE}\nArchitectures: {ARCH}\nComponents: main\nDescription: test archive\nSHA256:\n {} {} main/binary-{ARCH}/Packages\n {} {} main/binary-{ARCH}/Packages.xz\n",
            sha256(packages.as_bytes()),
            packages.len(),
            sha256(&xz),
            xz.len()
        );
        let release = edit(release);
        std::fs::write(dists.join("Release"), &release).unwrap();
        std::fs::write(dists.join("InRelease"), sign(&self.key, &release)).unwrap();
    }

    fn republish(&self, suite: &str, edit_packages: impl Fn(&str) -> String) {
        let text = &self.packages.iter().find(|(s, _)| s == suite).unwrap().1;
        self.publish(suite, &edit_packages(text), |r| r);
    }

    fn in_release(&self, suite: &str) -> PathBuf {
        self.base(suite).join("dists").join(suite).join("InRelease")
    }

    fn keyring(&self) -> Keyring {
        let mut ring = Keyring::empty();
        ring.add_key("test archive key", SignedPublicKey::from(self.key.clone()));
        ring
    }

    fn config(&self, cache: &Path) -> ArchiveConfig {
        let mut config =
            ArchiveConfig::new(ARCH, self.sources(), cache.to_path_buf(), self.keyring());
        config.suites = vec!["bookworm".into(), "bookworm-security".into()];
        config
    }
}

fn request(names: &[&str]) -> Request {
    Request {
        packages: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn open_err(config: ArchiveConfig) -> String {
    match Archive::open(config) {
        Ok(a) => panic!("archive accepted: {a:?}"),
        Err(e) => e.to_string(),
    }
}

/// Resolve and fetch `hello`; check names, versions, origins and hashes.
fn resolve_and_fetch_hello(archive: &Archive, security_base: &str) -> Vec<PathBuf> {
    let resolution = archive.resolve(&request(&["hello"])).unwrap();
    let mut names: Vec<String> = resolution
        .packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    names.sort();
    assert_eq!(names, ["hello=1.0-1", "libfoo=1.0-1+deb12u1"]);
    let libfoo = resolution
        .packages
        .iter()
        .find(|p| p.name == "libfoo")
        .unwrap();
    assert_eq!(
        archive.url_for(libfoo),
        format!("{security_base}/pool/updates/main/l/libfoo/libfoo_1.0-1+deb12u1_{ARCH}.deb")
    );
    let debs = archive.fetch(&resolution.packages).unwrap();
    assert_eq!(debs.len(), 2);
    for deb in &debs {
        let bytes = std::fs::read(&deb.path).unwrap();
        assert_eq!(sha256(&bytes), deb.package.sha256, "{}", deb.path.display());
        assert_eq!(bytes.len() as u64, deb.package.size);
        assert!(bytes.starts_with(b"!<arch>\n"));
    }
    debs.into_iter().map(|d| d.path).collect()
}

#[test]
fn good_archive_resolves_and_fetches_with_matching_hashes() {
    let mirror = Mirror::new();
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive::open(mirror.config(cache.path())).unwrap();
    let paths = resolve_and_fetch_hello(&archive, &mirror.sources().security);
    for p in &paths {
        assert!(p.starts_with(cache.path()), "{}", p.display());
    }
    // A second fetch finds everything cached, even with the mirror gone.
    std::fs::remove_dir_all(mirror.root.path().join("debian/pool")).unwrap();
    let resolution = archive.resolve(&request(&["hello"])).unwrap();
    assert_eq!(archive.fetch(&resolution.packages).unwrap().len(), 2);
}

#[test]
fn altered_signed_text_is_refused_as_bad_signature() {
    let mirror = Mirror::new();
    let path = mirror.in_release("bookworm");
    let text = std::fs::read_to_string(&path).unwrap();
    let altered = text.replacen("Components: main", "Components: mainx", 1);
    assert_ne!(altered, text);
    std::fs::write(&path, altered).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(err.contains("BAD signature"), "{err}");
    assert!(err.contains("bookworm InRelease"), "{err}");
}

#[test]
fn unsigned_release_is_refused() {
    let mirror = Mirror::new();
    let plain = mirror.in_release("bookworm").with_file_name("Release");
    std::fs::copy(plain, mirror.in_release("bookworm")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(err.contains("unsigned release"), "{err}");
}

#[test]
fn release_signed_by_unknown_key_is_refused() {
    let mirror = Mirror::new();
    let other = gen_key("intruder");
    let release =
        std::fs::read_to_string(mirror.in_release("bookworm").with_file_name("Release")).unwrap();
    std::fs::write(mirror.in_release("bookworm"), sign(&other, &release)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(err.contains("not in the trusted keyring"), "{err}");
    // The embedded Debian keys do not trust the test archive either.
    let mut config = mirror.config(cache.path());
    config.keyring = Keyring::debian().unwrap();
    let err = open_err(config);
    assert!(err.contains("not in the trusted keyring"), "{err}");
}

#[test]
fn index_not_matching_signed_hash_is_refused_naming_the_index() {
    let mirror = Mirror::new();
    let packages = mirror.packages[0].1.clone();
    mirror.publish("bookworm", &packages, |r| {
        let line = r
            .lines()
            .find(|l| l.ends_with("Packages.xz"))
            .unwrap()
            .to_string();
        let bad = format!(
            " {} {}",
            "0".repeat(64),
            line.trim().split_once(' ').unwrap().1
        );
        r.replace(&line, &bad)
    });
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(
        err.contains(&format!("main/binary-{ARCH}/Packages.xz")),
        "{err}"
    );
    assert!(err.contains(&"0".repeat(64)), "{err}");
    // Nothing unverified went into the cache under the index's key.
    let url = format!(
        "{}/dists/bookworm/main/binary-{ARCH}/Packages.xz",
        mirror.sources().debian
    );
    let c = Cache::open(cache.path()).unwrap();
    assert_eq!(c.get(&Cache::key_for_url(&url)).unwrap(), None);
}

#[test]
fn release_for_another_suite_is_refused() {
    let mirror = Mirror::new();
    let packages = mirror.packages[0].1.clone();
    mirror.publish("bookworm", &packages, |r| {
        r.replace(
            "Suite: bookworm\nCodename: bookworm",
            "Suite: oldstable\nCodename: bullseye",
        )
    });
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(
        err.contains("bullseye") && err.contains("\"bookworm\""),
        "{err}"
    );
}

#[test]
fn deb_with_wrong_hash_is_refused_and_not_cached() {
    let mirror = Mirror::new();
    let wrong = "ab".repeat(32);
    let hello_line = mirror.packages[0]
        .1
        .lines()
        .find(|l| l.starts_with("SHA256:"))
        .unwrap()
        .to_string();
    mirror.republish("bookworm", |t| {
        t.replacen(&hello_line, &format!("SHA256: {wrong}"), 1)
    });
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive::open(mirror.config(cache.path())).unwrap();
    let resolution = archive.resolve(&request(&["hello"])).unwrap();
    let hello = resolution
        .packages
        .iter()
        .find(|p| p.name == "hello")
        .unwrap();
    assert_eq!(hello.sha256, wrong);
    let err = archive.fetch(&resolution.packages).unwrap_err().to_string();
    assert!(err.contains("hello_1.0-1_arm64.deb"), "{err}");
    assert!(err.contains(&wrong), "{err}");
    let path = Cache::open(cache.path()).unwrap().deb_path(&wrong);
    assert!(!path.exists(), "unverified file at {}", path.display());
}

#[test]
fn truncated_deb_is_refused() {
    let mirror = Mirror::new();
    let deb = mirror
        .base("bookworm")
        .join(format!("pool/main/h/hello/hello_1.0-1_{ARCH}.deb"));
    let bytes = std::fs::read(&deb).unwrap();
    std::fs::write(&deb, &bytes[..bytes.len() / 2]).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let archive = Archive::open(mirror.config(cache.path())).unwrap();
    let resolution = archive.resolve(&request(&["hello"])).unwrap();
    let err = archive.fetch(&resolution.packages).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("hello_1.0-1_arm64.deb"), "{msg}");
    assert!(matches!(err, ArchiveError::Fetch(_)), "{msg}");
    let hello = resolution
        .packages
        .iter()
        .find(|p| p.name == "hello")
        .unwrap();
    assert!(!Cache::open(cache.path())
        .unwrap()
        .deb_path(&hello.sha256)
        .exists());
}

#[test]
fn expired_release_is_refused_with_its_date() {
    let mirror = Mirror::new();
    let packages = mirror.packages[1].1.clone();
    mirror.publish("bookworm-security", &packages, |r| {
        r.replace(FAR_FUTURE, "Mon, 01 Jan 2001 00:00:00 UTC")
    });
    let cache = tempfile::tempdir().unwrap();
    let err = open_err(mirror.config(cache.path()));
    assert!(err.contains("bookworm-security InRelease"), "{err}");
    assert!(err.contains("Mon, 01 Jan 2001 00:00:00 UTC"), "{err}");
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn offline_with_empty_cache_names_what_is_missing() {
    let mirror = Mirror::new();
    let cache = tempfile::tempdir().unwrap();
    let mut config = mirror.config(cache.path());
    config.offline = true;
    let err = open_err(config);
    assert!(err.contains("offline"), "{err}");
    assert!(err.contains("bookworm InRelease"), "{err}");
    assert!(err.contains("bookworm-security InRelease"), "{err}");
    assert!(err.contains("without --offline"), "{err}");
}

#[test]
fn offline_after_an_online_run_needs_no_mirror() {
    let mirror = Mirror::new();
    let cache = tempfile::tempdir().unwrap();
    let online = Archive::open(mirror.config(cache.path())).unwrap();
    let security = mirror.sources().security;
    let fetched = resolve_and_fetch_hello(&online, &security);
    // Before the mirror goes: an offline fetch of a package never fetched fails
    // listing it with its size.
    let mut config = mirror.config(cache.path());
    config.offline = true;
    let offline = Archive::open(config).unwrap();
    let unrelated = offline.resolve(&request(&["unrelated"])).unwrap();
    let err = offline.fetch(&unrelated.packages).unwrap_err().to_string();
    assert!(
        err.contains("unrelated 2.0") && err.contains("bytes"),
        "{err}"
    );

    let keyring = mirror.keyring();
    let sources = mirror.sources();
    drop(mirror); // deletes the whole mirror
    let mut config = ArchiveConfig::new(ARCH, sources, cache.path().to_path_buf(), keyring);
    config.suites = vec!["bookworm".into(), "bookworm-security".into()];
    config.offline = true;
    let offline = Archive::open(config).unwrap();
    let again = resolve_and_fetch_hello(&offline, &security);
    assert_eq!(again, fetched);
}

#[test]
fn offline_refuses_a_tampered_cached_index() {
    let mirror = Mirror::new();
    let cache = tempfile::tempdir().unwrap();
    Archive::open(mirror.config(cache.path())).unwrap();
    let url = format!(
        "{}/dists/bookworm/main/binary-{ARCH}/Packages.xz",
        mirror.sources().debian
    );
    let c = Cache::open(cache.path()).unwrap();
    // Both copies: the index as fetched and its decompressed text.
    for url in [url.clone(), url.trim_end_matches(".xz").to_string()] {
        let mut bytes = c.get(&Cache::key_for_url(&url)).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        c.put(&Cache::key_for_url(&url), &bytes).unwrap();
    }
    let mut config = mirror.config(cache.path());
    config.offline = true;
    let err = open_err(config);
    assert!(
        err.contains(&format!("main/binary-{ARCH}/Packages.xz")),
        "{err}"
    );
}

/// The decompressed text of an index is kept and used while the signed
/// release names it (size and SHA-256); a copy that is not what the release
/// names is passed over for the compressed index.
#[test]
fn the_decompressed_index_is_used_only_while_the_release_names_it() {
    let mirror = Mirror::new();
    let cache = tempfile::tempdir().unwrap();
    let first = Archive::open(mirror.config(cache.path())).unwrap();
    let want = format!("{first:?}");
    let packages = format!(
        "{}/dists/bookworm/main/binary-{ARCH}/Packages",
        mirror.sources().debian
    );
    let c = Cache::open(cache.path()).unwrap();
    let xz_key = Cache::key_for_url(&format!("{packages}.xz"));
    let xz = c.get(&xz_key).unwrap().unwrap();
    let offline = || {
        let mut config = mirror.config(cache.path());
        config.offline = true;
        config
    };
    // Offline, with only the decompressed text: it is enough.
    let xz_file = c.put(&xz_key, &xz).unwrap();
    std::fs::remove_file(xz_file).unwrap();
    assert_eq!(format!("{:?}", Archive::open(offline()).unwrap()), want);
    // A changed text is passed over: the compressed index is read again.
    c.put(&xz_key, &xz).unwrap();
    let mut text = c.get(&Cache::key_for_url(&packages)).unwrap().unwrap();
    text.extend_from_slice(b"\nPackage: planted\nVersion: 1\n");
    c.put(&Cache::key_for_url(&packages), &text).unwrap();
    let again = Archive::open(offline()).unwrap();
    assert_eq!(format!("{again:?}"), want);
    assert!(again.universe().get("planted").is_none());
}

/// Serve `root` over HTTP/1.1 (GET only, one request per connection).
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let file = root.join(path.trim_start_matches('/').replace("%2B", "+"));
                let mut body = Vec::new();
                let status =
                    match std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut body)) {
                        Ok(_) if file.is_file() => "200 OK",
                        _ => {
                            body.clear();
                            "404 Not Found"
                        }
                    };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn good_archive_over_http() {
    let mirror = Mirror::new();
    let url = serve(mirror.root.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let mut config = mirror.config(cache.path());
    config.sources = Sources {
        debian: format!("{url}/debian"),
        security: format!("{url}/debian-security"),
    };
    let archive = Archive::open(config).unwrap();
    resolve_and_fetch_hello(&archive, &format!("{url}/debian-security"));
}
