//! Story: a release engineer makes a signing key, then publishes two releases
//! into a channel directory that devices will poll. A second keygen never
//! clobbers the key; the index lists both releases, signed.

mod common;

use ballast_bundle::{channel, keys, Input, Manifest, PayloadName};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn bundle(dir: &Path, version: &str, signer: &ballast_bundle::Signer) -> std::path::PathBuf {
    let root = dir.join(format!("root-{version}.img"));
    fs::write(&root, version.repeat(10_000)).unwrap();
    let out = dir.join(format!("ballast-{version}.bundle"));
    let base = Manifest {
        format: 1,
        os: "ballast".into(),
        version: version.into(),
        arch: "arm64".into(),
        boards: vec!["qemu-arm64".into()],
        build_time: 1_700_000_000,
        rollback_index: 0,
        key_id: String::new(),
        cmdline: "console=ttyAMA0".into(),
        payloads: vec![],
    };
    ballast_bundle::write(
        &out,
        base,
        &[Input {
            name: PayloadName::Root,
            path: &root,
        }],
        signer,
    )
    .unwrap();
    out
}

#[test]
fn keygen_makes_a_private_key_and_refuses_to_overwrite_it() {
    let _story = common::story();
    let dir = common::workdir("keygen");
    let run = || {
        common::ballast()
            .current_dir(&dir)
            .args(["keygen", "--comment", "release team", "--json"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let secret = dir.join("keys/ballast.key");
    let public = dir.join("keys/ballast.pub");
    assert_eq!(dir.join(printed["secret"].as_str().unwrap()), secret);
    assert_eq!(dir.join(printed["public"].as_str().unwrap()), public);
    let pk = keys::read_public(&public).unwrap();
    assert_eq!(printed["key_id"], pk.id.as_str());
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(&public)
        .unwrap()
        .trim_end()
        .ends_with("release team"));
    assert_eq!(keys::read_secret(&secret).unwrap().public(), pk);

    let before = fs::read(&secret).unwrap();
    let second = run();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("keys/ballast.key") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(
        fs::read(&secret).unwrap(),
        before,
        "the key was overwritten"
    );

    let other = common::ballast()
        .current_dir(&dir)
        .args(["keygen", "--out", "keys/second"])
        .output()
        .unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(String::from_utf8_lossy(&other.stdout).contains("keys/second.key"));
}

#[test]
fn publish_two_releases_into_a_signed_channel() {
    let _story = common::story();
    let dir = common::workdir("publish");
    let status = common::ballast()
        .current_dir(&dir)
        .args(["keygen", "--out", "release"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let signer = keys::read_secret(&dir.join("release.key")).unwrap();
    let trusted = [keys::read_public(&dir.join("release.pub")).unwrap()];
    let chan = dir.join("channel");
    for (version, notes) in [("1.0.0", "first release"), ("1.1.0", "fixes")] {
        let b = bundle(&dir, version, &signer);
        let out = common::ballast()
            .arg("publish")
            .arg(&chan)
            .arg(&b)
            .args(["--key", dir.join("release.key").to_str().unwrap()])
            .args(["--notes", notes, "--expires-days", "7", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["entry"]["version"], version);
        assert_eq!(printed["entry"]["file"], format!("{version}-arm64.bundle"));
    }

    let json = fs::read(chan.join("index.json")).unwrap();
    let sig = fs::read_to_string(chan.join("index.json.sig")).unwrap();
    assert!(sig.starts_with(&format!("ballast-ed25519-sig {} ", trusted[0].id)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let index = channel::verify_index(&json, &sig, &trusted, now).unwrap();
    assert!(index.expires > now + 6 * 86_400 && index.expires <= now + 7 * 86_400 + 60);
    let versions: Vec<_> = index.entries.iter().map(|e| e.version.as_str()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    let latest = index.latest("arm64", "qemu-arm64").unwrap();
    assert_eq!(latest.notes.as_deref(), Some("fixes"));
    assert_eq!(
        fs::read(chan.join(&latest.file)).unwrap(),
        fs::read(dir.join("ballast-1.1.0.bundle")).unwrap()
    );
    // The raw JSON a web server would hand out says the same.
    let raw: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(raw["entries"][1]["boards"][0], "qemu-arm64");
    assert_eq!(raw["format"], 1);

    // A bundle signed by someone else is refused, and the channel is unchanged.
    let stranger = keys::generate(&dir.join("stranger"), "").unwrap();
    let foreign = bundle(&dir, "9.9.9", &keys::read_secret(&stranger.0).unwrap());
    let out = common::ballast()
        .arg("publish")
        .arg(&chan)
        .arg(&foreign)
        .args(["--key", dir.join("release.key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ballast-9.9.9.bundle") && err.contains("not trusted"),
        "{err}"
    );
    assert_eq!(fs::read(chan.join("index.json")).unwrap(), json);
    assert!(!chan.join("9.9.9-arm64.bundle").exists());

    // A release spread over a wave: the entry carries the rollout the update
    // agents place themselves in (by a hash of their machine id).
    let b = bundle(&dir, "1.2.0", &signer);
    let publish = |extra: &[&str]| {
        common::ballast()
            .arg("publish")
            .arg(&chan)
            .arg(&b)
            .args(["--key", dir.join("release.key").to_str().unwrap()])
            .args(["--deltas", "0"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = publish(&["--rollout-start", "soon", "--rollout-hours", "24"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rollout-start soon") && err.contains("2026-12-24T06:00:00Z"),
        "{err}"
    );
    let out = publish(&[
        "--rollout-start",
        "2026-12-24T06:00:00Z",
        "--rollout-hours",
        "24",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rollout: from unix 1798092000 over 86400 s")
    );
    let json = fs::read(chan.join("index.json")).unwrap();
    let sig = fs::read_to_string(chan.join("index.json.sig")).unwrap();
    let index = channel::verify_index(&json, &sig, &trusted, now).unwrap();
    let e = index.latest("arm64", "qemu-arm64").unwrap();
    assert_eq!(e.version, "1.2.0");
    assert_eq!(
        e.rollout,
        Some(channel::Rollout {
            start: 1_798_092_000,
            duration: 86_400
        })
    );
    // Earlier releases keep going out to every machine at once.
    assert!(index
        .entries
        .iter()
        .filter(|e| e.version != "1.2.0")
        .all(|e| e.rollout.is_none()));
}
