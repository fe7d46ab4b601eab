//! A bundle as the builder writes it and the device reads it: round trip,
//! and every kind of damage refused before anything is trusted.

use ballast_bundle::channel::{self, Index};
use ballast_bundle::{keys, BundleError, Input, Manifest, PayloadName, PublicKey, Reader, Signer};
use std::fs;
use std::path::{Path, PathBuf};

fn base(version: &str, arch: &str) -> Manifest {
    Manifest {
        format: 1,
        os: "ballast".into(),
        version: version.into(),
        arch: arch.into(),
        boards: vec!["qemu-x86_64".into(), "pc".into()],
        build_time: 1_700_000_000,
        rollback_index: 2,
        key_id: String::new(),
        cmdline: "console=ttyS0 quiet".into(),
        payloads: vec![],
    }
}

/// Pseudo-random but partly compressible bytes, reproducible.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    bundle: PathBuf,
    signer: Signer,
    root: Vec<u8>,
    kernel: Vec<u8>,
}

fn fixture(version: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let root = data(3 << 20, 1);
    let kernel = data(100_000, 2);
    fs::write(dir.join("root.img"), &root).unwrap();
    fs::write(dir.join("vmlinuz"), &kernel).unwrap();
    let signer = Signer::from_seed(&[42; 32]);
    let bundle = dir.join("out/x.bundle");
    write_bundle(&dir, &bundle, version, &signer);
    Fixture {
        _dir: tmp,
        dir,
        bundle,
        signer,
        root,
        kernel,
    }
}

fn write_bundle(dir: &Path, out: &Path, version: &str, signer: &Signer) -> Manifest {
    let root_path = dir.join("root.img");
    let kernel_path = dir.join("vmlinuz");
    let inputs = [
        Input {
            name: PayloadName::Root,
            path: &root_path,
        },
        Input {
            name: PayloadName::Kernel,
            path: &kernel_path,
        },
    ];
    ballast_bundle::write(out, base(version, "x86_64"), &inputs, signer).unwrap()
}

/// Read every payload; the outputs, or the first error.
fn read_all(bytes: &[u8], trusted: &[PublicKey]) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    read_all_with(bytes, trusted, &[])
}

/// `read_all`, checking the `stored_only` payloads by their stored frame's hash only.
fn read_all_with(
    bytes: &[u8],
    trusted: &[PublicKey],
    stored_only: &[ballast_bundle::PayloadName],
) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let mut reader = Reader::open(bytes, trusted)?;
    reader.check_stored_hash_only(stored_only);
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::new();
        match reader.copy_next(&mut buf, &mut |_| {})? {
            Some(p) => out.push((p.name, buf)),
            None => return Ok(out),
        }
    }
}

#[test]
fn roundtrip_gives_back_the_inputs_and_the_manifest() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let bytes = fs::read(&f.bundle).unwrap();
    assert!(bytes.starts_with(b"BALLAST-BUNDLE1\n"));
    assert!(!f.dir.join("out/x.bundle.tmp").exists());
    assert_eq!(
        fs::read_dir(f.dir.join("out")).unwrap().count(),
        1,
        "no temporary files left"
    );

    let mut reader = Reader::open(&bytes[..], std::slice::from_ref(&pk)).unwrap();
    let m = reader.manifest().clone();
    assert_eq!(m.key_id, pk.id);
    assert_eq!(m.version, "1.4.0");
    assert_eq!(m.payloads.len(), 2);
    assert_eq!(m.payloads[0].size, f.root.len() as u64);
    assert!(
        m.payloads[0].compressed_size < m.payloads[0].size,
        "compressible data shrinks"
    );
    let mut root = Vec::new();
    let mut reports = Vec::new();
    let p = reader
        .copy_next(&mut root, &mut |n| reports.push(n))
        .unwrap()
        .unwrap();
    assert_eq!(p.name, "root");
    assert_eq!(root, f.root);
    assert_eq!(reports.last(), Some(&(f.root.len() as u64)));
    let mut kernel = Vec::new();
    assert_eq!(
        reader
            .copy_next(&mut kernel, &mut |_| {})
            .unwrap()
            .unwrap()
            .name,
        "kernel"
    );
    assert_eq!(kernel, f.kernel);
    assert!(reader
        .copy_next(&mut Vec::new(), &mut |_| {})
        .unwrap()
        .is_none());
}

#[test]
fn the_same_inputs_give_the_same_bundle_bytes() {
    let f = fixture("1.4.0");
    let again = f.dir.join("again.bundle");
    write_bundle(&f.dir, &again, "1.4.0", &f.signer);
    assert_eq!(fs::read(&again).unwrap(), fs::read(&f.bundle).unwrap());
}

#[test]
fn a_flipped_manifest_or_signature_byte_is_a_bad_signature() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let bytes = fs::read(&f.bundle).unwrap();
    let n = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    // Every byte of the manifest's key_id-free region and the signature; sample the rest.
    for at in (20..20 + n + 64).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        match Reader::open(&bad[..], std::slice::from_ref(&pk)) {
            Err(BundleError::BadSignature) | Err(BundleError::UnknownKey { .. }) => {}
            Err(other) => panic!("byte {at}: {other}"),
            Ok(_) => panic!("byte {at}: a changed manifest was accepted"),
        }
    }
}

#[test]
fn a_flipped_payload_byte_is_never_ok() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let bytes = fs::read(&f.bundle).unwrap();
    let n = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let start = 20 + n + 64;
    let step = ((bytes.len() - start) / 40).max(1);
    // The same with root checked by its stored frame's hash only, as sysd reads it.
    let good = read_all(&bytes, std::slice::from_ref(&pk)).unwrap();
    assert_eq!(
        read_all_with(
            &bytes,
            std::slice::from_ref(&pk),
            &[ballast_bundle::PayloadName::Root]
        )
        .unwrap(),
        good
    );
    for stored_only in [
        &[][..],
        &[
            ballast_bundle::PayloadName::Root,
            ballast_bundle::PayloadName::Kernel,
        ][..],
    ] {
        for at in (start..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x80;
            match read_all_with(&bad, std::slice::from_ref(&pk), stored_only) {
                Err(BundleError::PayloadMismatch { .. })
                | Err(BundleError::Decompress { .. })
                | Err(BundleError::Truncated) => {}
                Err(other) => panic!("byte {at}: unexpected error {other}"),
                Ok(_) => panic!("byte {at} ({stored_only:?}): a damaged payload was accepted"),
            }
        }
    }
}

#[test]
fn truncated_anywhere_is_an_error_and_trailing_bytes_too() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let bytes = fs::read(&f.bundle).unwrap();
    let n = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let mut cuts = vec![
        0,
        5,
        16,
        18,
        20,
        20 + n / 2,
        20 + n,
        20 + n + 63,
        20 + n + 64,
        20 + n + 65,
    ];
    cuts.extend((20 + n + 64..bytes.len()).step_by(bytes.len() / 30));
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        match read_all(&bytes[..cut], std::slice::from_ref(&pk)) {
            Err(BundleError::Truncated) | Err(BundleError::Decompress { .. }) => {}
            Err(other) => panic!("cut at {cut}: unexpected error {other}"),
            Ok(_) => panic!("cut at {cut}: a truncated bundle was accepted"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        read_all(&longer, &[pk]),
        Err(BundleError::TrailingData)
    ));
}

#[test]
fn wrong_magic_unknown_key_and_huge_manifest_length_are_refused() {
    let f = fixture("1.4.0");
    let bytes = fs::read(&f.bundle).unwrap();
    let mut html = b"<html>".to_vec();
    html.extend_from_slice(&bytes);
    assert!(matches!(
        Reader::open(&html[..], &[f.signer.public()]),
        Err(BundleError::BadMagic)
    ));

    let other = Signer::from_seed(&[9; 32]).public();
    match Reader::open(&bytes[..], std::slice::from_ref(&other)) {
        Err(BundleError::UnknownKey { key_id }) => assert_eq!(key_id, f.signer.public().id),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted with an untrusted key"),
    }
    let err = Reader::open(&bytes[..], &[]).err().unwrap().to_string();
    assert!(
        err.contains(&f.signer.public().id) && err.contains("/usr/lib/ballast/keys"),
        "{err}"
    );

    let mut huge = bytes.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Reader::open(&huge[..], &[f.signer.public()]),
        Err(BundleError::ManifestLength { .. })
    ));
}

#[test]
fn write_refuses_bad_input_names_and_versions_and_leaves_nothing() {
    let f = fixture("1.0.0");
    let out = f.dir.join("bad/y.bundle");
    let root = f.dir.join("root.img");
    let err = ballast_bundle::write(
        &out,
        base("1.0", "x86_64"),
        &[Input {
            name: PayloadName::Root,
            path: &root,
        }],
        &f.signer,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`version`"), "{err}");
    let err = ballast_bundle::write(
        &out,
        base("1.0.0", "x86_64"),
        &[
            Input {
                name: PayloadName::Root,
                path: &root,
            },
            Input {
                name: PayloadName::Root,
                path: &root,
            },
        ],
        &f.signer,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("root") && err.contains("given twice"), "{err}");
    let missing = f.dir.join("nope.img");
    let err = ballast_bundle::write(
        &out,
        base("1.0.0", "x86_64"),
        &[Input {
            name: PayloadName::Root,
            path: &missing,
        }],
        &f.signer,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.img"), "{err}");
    let left: Vec<_> = fs::read_dir(f.dir.join("bad"))
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        left.is_empty() || left == [0],
        "temporary files left: {left:?}"
    );
}

fn read_index(dir: &Path) -> (Vec<u8>, String) {
    (
        fs::read(dir.join("index.json")).unwrap(),
        fs::read_to_string(dir.join("index.json.sig")).unwrap(),
    )
}

#[test]
fn channel_publish_then_verify_latest_and_replace() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let chan = f.dir.join("channel");
    channel::publish(&chan, &f.bundle, &f.signer, Some("first"), 30).unwrap();
    let newer = f.dir.join("newer.bundle");
    write_bundle(&f.dir, &newer, "1.10.0-rc.1", &f.signer);
    let index = channel::publish(&chan, &newer, &f.signer, None, 30).unwrap();
    assert_eq!(index.entries.len(), 2);

    let (json, sig) = read_index(&chan);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified: Index =
        channel::verify_index(&json, &sig, std::slice::from_ref(&pk), now).unwrap();
    assert_eq!(verified, index);
    assert!(verified.expires >= now + 29 * 86_400);
    let latest = verified.latest("x86_64", "pc").unwrap();
    assert_eq!(latest.version, "1.10.0-rc.1");
    assert_eq!(latest.file, "1.10.0-rc.1-x86_64.bundle");
    let served = fs::read(chan.join(&latest.file)).unwrap();
    assert_eq!(served.len() as u64, latest.size);
    assert_eq!(served, fs::read(&newer).unwrap());
    assert!(verified.latest("arm64", "pc").is_none());
    assert!(verified.latest("x86_64", "rpi4").is_none());
    let first = verified
        .entries
        .iter()
        .find(|e| e.version == "1.4.0")
        .unwrap();
    assert_eq!(first.notes.as_deref(), Some("first"));

    // The same (version, arch) again replaces its entry.
    let index = channel::publish(&chan, &f.bundle, &f.signer, Some("again"), 30).unwrap();
    assert_eq!(index.entries.len(), 2);
    assert_eq!(
        index
            .entries
            .iter()
            .find(|e| e.version == "1.4.0")
            .unwrap()
            .notes
            .as_deref(),
        Some("again")
    );
}

#[test]
fn expired_tampered_or_foreign_index_is_refused() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let chan = f.dir.join("channel");
    channel::publish(&chan, &f.bundle, &f.signer, None, 1).unwrap();
    let (json, sig) = read_index(&chan);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(channel::verify_index(&json, &sig, std::slice::from_ref(&pk), now).is_ok());
    let later = now + 2 * 86_400;
    assert!(matches!(
        channel::verify_index(&json, &sig, std::slice::from_ref(&pk), later),
        Err(BundleError::IndexExpired { .. })
    ));

    let text = String::from_utf8(json.clone()).unwrap();
    let tampered = text.replacen("\"1.4.0\"", "\"9.4.0\"", 1);
    assert_ne!(tampered, text);
    let err = channel::verify_index(tampered.as_bytes(), &sig, std::slice::from_ref(&pk), now)
        .unwrap_err();
    assert!(err.to_string().contains("bad signature"), "{err}");

    let other = Signer::from_seed(&[5; 32]);
    assert!(matches!(
        channel::verify_index(&json, &sig, &[other.public()], now),
        Err(BundleError::UnknownKey { .. })
    ));
    // Another key may not publish into this channel, nor publish a bundle it did not sign.
    let err = channel::publish(&chan, &f.bundle, &other, None, 30)
        .unwrap_err()
        .to_string();
    assert!(err.contains("index.json"), "{err}");
    let err = channel::publish(&f.dir.join("chan2"), &f.bundle, &other, None, 30)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.bundle") && err.contains(&pk.id), "{err}");
    assert!(channel::publish_with(
        &f.dir.join("chan3"),
        &f.bundle,
        &other,
        None,
        30,
        std::slice::from_ref(&pk)
    )
    .is_ok());
}

#[test]
fn a_corrupt_payload_is_not_published() {
    let f = fixture("1.4.0");
    let mut bytes = fs::read(&f.bundle).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    let bad = f.dir.join("bad.bundle");
    fs::write(&bad, &bytes).unwrap();
    let chan = f.dir.join("channel");
    assert!(channel::publish(&chan, &bad, &f.signer, None, 30).is_err());
    assert!(!chan.join("index.json").exists());
    assert!(!chan.join("1.4.0-x86_64.bundle").exists());
}

#[test]
fn keys_from_files_sign_and_verify_a_bundle() {
    let f = fixture("1.4.0");
    let (secret, public) = keys::generate(&f.dir.join("keys/release"), "ci").unwrap();
    let signer = keys::read_secret(&secret).unwrap();
    let out = f.dir.join("k.bundle");
    write_bundle(&f.dir, &out, "2.0.0", &signer);
    let trusted = keys::read_dir(&f.dir.join("keys")).unwrap();
    assert_eq!(trusted, vec![keys::read_public(&public).unwrap()]);
    assert_eq!(
        read_all(&fs::read(&out).unwrap(), &trusted).unwrap().len(),
        2
    );
}

#[test]
fn a_frame_asking_for_a_huge_window_is_refused_before_decoding() {
    let f = fixture("1.4.0");
    let pk = f.signer.public();
    let mut bytes = fs::read(&f.bundle).unwrap();
    let n = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let start = 20 + n + 64;
    assert_eq!(bytes[start..start + 4], [0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(
        bytes[start + 4] & 0x20,
        0,
        "the builder writes multi-segment frames"
    );
    // Window descriptor: exponent 17 -> 2^27 = 128 MiB.
    bytes[start + 5] = 17 << 3;
    match read_all(&bytes, std::slice::from_ref(&pk)) {
        Err(BundleError::PayloadMismatch { name, detail }) => {
            assert_eq!(name, "root");
            assert!(detail.contains("128 MiB window"), "{detail}");
        }
        other => panic!("a 128 MiB window was not refused: {other:?}"),
    }
}
