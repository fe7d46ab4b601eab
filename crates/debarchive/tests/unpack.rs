//! Unpacking .deb files: packages built here with every kind of entry a real
//! package can carry, plus one real Debian package when apt can fetch it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ballast_debarchive::unpack::{
    read_control, unpack_deb, unpack_from_tree, EntryKind, Manifest, UnpackError,
};

const CONTROL: &str = "Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.org>\nDescription: demo package\n";

#[derive(Clone, Copy, Debug)]
enum Comp {
    Xz,
    Zstd,
    Gzip,
    None,
}

impl Comp {
    fn suffix(self) -> &'static str {
        match self {
            Comp::Xz => ".xz",
            Comp::Zstd => ".zst",
            Comp::Gzip => ".gz",
            Comp::None => "",
        }
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Comp::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(data, 3).unwrap(),
            Comp::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
            Comp::None => data.to_vec(),
        }
    }
}

/// One tar entry to put into data.tar.
struct T {
    path: &'static str,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    user: &'static str,
    data: &'static [u8],
    link: &'static str,
    dev: (u32, u32),
}

fn t(path: &'static str, kind: tar::EntryType, mode: u32) -> T {
    T {
        path,
        kind,
        mode,
        uid: 0,
        user: "root",
        data: b"",
        link: "",
        dev: (0, 0),
    }
}

fn dir(path: &'static str) -> T {
    t(path, tar::EntryType::Directory, 0o755)
}

fn file(path: &'static str, mode: u32, data: &'static [u8]) -> T {
    T {
        data,
        ..t(path, tar::EntryType::Regular, mode)
    }
}

fn symlink(path: &'static str, target: &'static str) -> T {
    T {
        link: target,
        ..t(path, tar::EntryType::Symlink, 0o777)
    }
}

/// Build a tar. Names are written raw into the header so that tests can
/// put `..` in them, which tar::Builder itself refuses.
fn tar_of(entries: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.uid);
        h.set_username(e.user).unwrap();
        h.set_groupname(e.user).unwrap();
        h.set_mtime(1_700_000_000);
        h.set_size(e.data.len() as u64);
        if !e.link.is_empty() {
            h.set_link_name(e.link).unwrap();
        }
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn ar_member(b: &mut ar::Builder<&mut Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
    h.set_mode(0o100644);
    b.append(&h, data).unwrap();
}

fn deb_bytes(version: &str, comp: Comp, data_tar: &[u8]) -> Vec<u8> {
    let control_tar = tar_of(&[dir("./"), file("./control", 0o644, CONTROL.as_bytes())]);
    let mut out = Vec::new();
    {
        let mut b = ar::Builder::new(&mut out);
        ar_member(&mut b, "debian-binary", version.as_bytes());
        ar_member(
            &mut b,
            &format!("control.tar{}", comp.suffix()),
            &comp.compress(&control_tar),
        );
        ar_member(
            &mut b,
            &format!("data.tar{}", comp.suffix()),
            &comp.compress(data_tar),
        );
    }
    out
}

fn write_deb(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// The package every format test unpacks: a binary, a setuid binary, a hard
/// link, a symlink, a user-owned file and a device node.
fn demo_entries() -> Vec<T> {
    vec![
        dir("./"),
        dir("./usr/"),
        dir("./usr/bin/"),
        file("./usr/bin/tool", 0o755, b"#!/bin/sh\necho tool\n"),
        file("./usr/bin/su-helper", 0o4755, b"setuid helper"),
        T {
            link: "./usr/bin/tool",
            ..t("./usr/bin/tool-again", tar::EntryType::Link, 0o755)
        },
        symlink("./usr/bin/t", "tool"),
        dir("./usr/share/"),
        dir("./usr/share/doc/"),
        dir("./usr/share/doc/demo/"),
        file("./usr/share/doc/demo/README", 0o644, b"read me"),
        dir("./home/"),
        T {
            uid: 1000,
            user: "alice",
            ..dir("./home/alice/")
        },
        T {
            uid: 1000,
            user: "alice",
            ..file("./home/alice/notes", 0o600, b"private")
        },
        dir("./dev/"),
        T {
            dev: (5, 1),
            ..t("./dev/console", tar::EntryType::Char, 0o600)
        },
        t("./dev/initctl", tar::EntryType::Fifo, 0o600),
    ]
}

fn entry<'a>(m: &'a Manifest, path: &str) -> &'a ballast_debarchive::unpack::Entry {
    m.entries
        .iter()
        .find(|e| e.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} not in manifest"))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn unpacks_every_compression_with_modes_links_and_ownership() {
    for comp in [Comp::Xz, Comp::Zstd, Comp::Gzip, Comp::None] {
        let tmp = tempfile::tempdir().unwrap();
        let deb = write_deb(
            tmp.path(),
            "demo.deb",
            &deb_bytes("2.0\n", comp, &tar_of(&demo_entries())),
        );
        let root = tmp.path().join("root");
        let m = unpack_deb(&deb, &root, &|_| true).unwrap_or_else(|e| panic!("{comp:?}: {e}"));

        assert_eq!(read_control(&deb).unwrap(), CONTROL, "{comp:?}");

        let tool = root.join("usr/bin/tool");
        assert_eq!(fs::read(&tool).unwrap(), b"#!/bin/sh\necho tool\n");
        assert_eq!(mode(&tool), 0o755, "{comp:?}");
        assert_eq!(mode(&root.join("usr/bin/su-helper")), 0o4755, "{comp:?}");
        assert_eq!(mode(&root.join("home/alice/notes")), 0o600);

        let again = fs::metadata(root.join("usr/bin/tool-again")).unwrap();
        assert_eq!(again.ino(), fs::metadata(&tool).unwrap().ino(), "hard link");
        assert_eq!(again.nlink(), 2);
        assert_eq!(
            fs::read_link(root.join("usr/bin/t")).unwrap(),
            Path::new("tool")
        );

        // Devices and fifos are recorded, never created.
        assert!(!root.join("dev/console").exists());
        assert!(!root.join("dev/initctl").exists());
        let console = entry(&m, "dev/console");
        assert_eq!(console.kind, EntryKind::CharDev { major: 5, minor: 1 });
        assert_eq!(
            (console.mode, console.uid, console.uname.as_str()),
            (0o600, 0, "root")
        );
        assert_eq!(entry(&m, "dev/initctl").kind, EntryKind::Fifo);

        let notes = entry(&m, "home/alice/notes");
        assert_eq!((notes.uid, notes.gid), (1000, 1000));
        assert_eq!(
            (notes.uname.as_str(), notes.gname.as_str()),
            ("alice", "alice")
        );
        assert_eq!((notes.size, notes.mtime), (7, 1_700_000_000));
        let su = entry(&m, "usr/bin/su-helper");
        assert_eq!((su.mode, su.uid, su.uname.as_str()), (0o4755, 0, "root"));
        assert_eq!(
            entry(&m, "usr/bin/tool-again").kind,
            EntryKind::Hardlink {
                target: PathBuf::from("usr/bin/tool")
            }
        );
        assert_eq!(
            entry(&m, "usr/bin/t").kind,
            EntryKind::Symlink {
                target: PathBuf::from("tool")
            }
        );
        assert_eq!(entry(&m, "usr/bin").kind, EntryKind::Dir);
        // Paths are relative, without "./"; the root entry itself is not listed.
        assert!(m.entries.iter().all(|e| e.path.is_relative()
            && !e.path.as_os_str().is_empty()
            && !e.path.starts_with(".")));
        assert_eq!(m.entries.len(), demo_entries().len() - 1);

        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""kind":{"type":"char_dev","major":5,"minor":1}"#),
            "{json}"
        );
    }
}

#[test]
fn filter_skips_entries_but_descends_into_skipped_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = write_deb(
        tmp.path(),
        "demo.deb",
        &deb_bytes("2.0\n", Comp::Xz, &tar_of(&demo_entries())),
    );
    let root = tmp.path().join("root");
    let keep = |p: &Path| p != Path::new("usr/share/doc") && !p.starts_with("home");
    let m = unpack_deb(&deb, &root, &keep).unwrap();
    assert!(!root.join("home").exists());
    assert!(m.entries.iter().all(|e| !e.path.starts_with("home")));
    assert!(m
        .entries
        .iter()
        .all(|e| e.path != Path::new("usr/share/doc")));
    // The doc dir entry was skipped, but its contents were still unpacked.
    assert_eq!(
        fs::read(root.join("usr/share/doc/demo/README")).unwrap(),
        b"read me"
    );
}

#[test]
fn hard_link_to_a_filtered_out_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = write_deb(
        tmp.path(),
        "demo.deb",
        &deb_bytes("2.0\n", Comp::Gzip, &tar_of(&demo_entries())),
    );
    let err = unpack_deb(&deb, &tmp.path().join("root"), &|p| {
        p != Path::new("usr/bin/tool")
    })
    .unwrap_err();
    assert!(matches!(err, UnpackError::Hardlink { .. }), "{err:?}");
    assert!(err.to_string().contains("usr/bin/tool-again"), "{err}");
}

#[test]
fn merged_usr_symlinks_inside_dest_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let deb = write_deb(
        tmp.path(),
        "sh.deb",
        &deb_bytes(
            "2.0\n",
            Comp::Zstd,
            &tar_of(&[dir("./"), dir("./bin/"), file("./bin/sh", 0o755, b"sh")]),
        ),
    );
    unpack_deb(&deb, &root, &|_| true).unwrap();
    assert_eq!(fs::read(root.join("usr/bin/sh")).unwrap(), b"sh");
    assert!(fs::symlink_metadata(root.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn paths_escaping_the_destination_are_refused() {
    let cases: Vec<(&str, Vec<T>)> = vec![
        ("dotdot", vec![dir("./"), file("./../escaped", 0o644, b"x")]),
        (
            "absolute symlink parent",
            vec![
                dir("./"),
                symlink("./etc", "/tmp"),
                file("./etc/escaped", 0o644, b"x"),
            ],
        ),
        (
            "relative symlink leaving dest",
            vec![
                dir("./"),
                symlink("./up", "../.."),
                file("./up/escaped", 0o644, b"x"),
            ],
        ),
        (
            "hard link with dotdot",
            vec![
                dir("./"),
                T {
                    link: "../../outside",
                    ..t("./h", tar::EntryType::Link, 0o644)
                },
            ],
        ),
    ];
    for (what, entries) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let deb = write_deb(
            tmp.path(),
            "evil.deb",
            &deb_bytes("2.0\n", Comp::Xz, &tar_of(&entries)),
        );
        let root = tmp.path().join("a/b/root");
        let err = unpack_deb(&deb, &root, &|_| true).unwrap_err();
        assert!(matches!(err, UnpackError::Unsafe { .. }), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("evil.deb") && msg.contains("data.tar.xz"),
            "{msg}"
        );
        assert!(!tmp.path().join("a/b/escaped").exists(), "{what}");
        assert!(!tmp.path().join("a/escaped").exists(), "{what}");
        assert!(!Path::new("/tmp/escaped").exists(), "{what}");
    }
}

#[test]
fn truncated_and_malformed_debs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = deb_bytes("2.0\n", Comp::Xz, &tar_of(&demo_entries()));

    let cut = write_deb(tmp.path(), "cut.deb", &good[..good.len() - 100]);
    let err = unpack_deb(&cut, &tmp.path().join("r1"), &|_| true).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cut.deb") && msg.contains("data.tar.xz") && msg.contains("truncated"),
        "{msg}"
    );

    // Cut before data.tar even starts.
    let short = write_deb(tmp.path(), "short.deb", &good[..80]);
    let err = unpack_deb(&short, &tmp.path().join("r2"), &|_| true).unwrap_err();
    assert!(err.to_string().contains("short.deb"), "{err}");

    let junk = write_deb(tmp.path(), "junk.deb", b"<html>404 Not Found</html>");
    let err = read_control(&junk).unwrap_err();
    assert!(matches!(err, UnpackError::NotDeb { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.deb"));

    let v3 = write_deb(
        tmp.path(),
        "v3.deb",
        &deb_bytes("3.0\n", Comp::Xz, &tar_of(&demo_entries())),
    );
    let err = unpack_deb(&v3, &tmp.path().join("r3"), &|_| true).unwrap_err();
    assert!(
        matches!(err, UnpackError::Format { ref found, .. } if found == "3.0"),
        "{err:?}"
    );

    let missing = tmp.path().join("nope.deb");
    assert!(matches!(
        read_control(&missing),
        Err(UnpackError::Open { .. })
    ));
}

/// Parse `dpkg-deb -c` lines into (path, kind letter, link target).
fn dpkg_listing(deb: &Path) -> Vec<(String, char, String)> {
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let kind = line.chars().next()?;
            // perms owner/group size date time path [-> target | link to target]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields[5..].join(" ");
            let (name, target) = match name.split_once(" -> ") {
                Some((n, t)) => (n.to_string(), t.to_string()),
                None => match name.split_once(" link to ") {
                    Some((n, t)) => (n.to_string(), t.to_string()),
                    None => (name, String::new()),
                },
            };
            let name = name
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let target = if kind == 'h' {
                target.trim_start_matches("./").to_string()
            } else {
                target
            };
            (!name.is_empty()).then_some((name, kind, target))
        })
        .collect()
}

#[test]
fn real_debian_package_matches_dpkg_deb() {
    let tmp = tempfile::tempdir().unwrap();
    let mut deb = None;
    for pkg in ["hello", "busybox-static"] {
        let ok = Command::new("apt-get")
            .args(["download", "-q", pkg])
            .current_dir(tmp.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            deb = fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"));
            if deb.is_some() {
                break;
            }
        }
    }
    let Some(deb) = deb else {
        eprintln!(
            "NOTE: skipping the real-package test: `apt-get download hello` did not work here"
        );
        return;
    };
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("NOTE: skipping the real-package comparison: dpkg-deb is not installed");
        return;
    }
    let root = tmp.path().join("root");
    let m = unpack_deb(&deb, &root, &|_| true).unwrap();

    let expected = dpkg_listing(&deb);
    let got: Vec<(String, char, String)> = m
        .entries
        .iter()
        .map(|e| {
            let path = e.path.to_string_lossy().into_owned();
            match &e.kind {
                EntryKind::File => (path, '-', String::new()),
                EntryKind::Dir => (path, 'd', String::new()),
                EntryKind::Symlink { target } => (path, 'l', target.to_string_lossy().into()),
                EntryKind::Hardlink { target } => (path, 'h', target.to_string_lossy().into()),
                EntryKind::CharDev { .. } => (path, 'c', String::new()),
                EntryKind::BlockDev { .. } => (path, 'b', String::new()),
                EntryKind::Fifo => (path, 'p', String::new()),
            }
        })
        .collect();
    // dpkg-deb prints hard links with a '-' type letter.
    let normalize = |v: Vec<(String, char, String)>| -> Vec<(String, char, String)> {
        v.into_iter()
            .map(|(p, k, t)| if k == 'h' { (p, '-', t) } else { (p, k, t) })
            .collect()
    };
    assert_eq!(normalize(got), normalize(expected.clone()));
    assert!(expected.len() > 5, "{expected:?}");

    // Every regular file is on disk with the size the manifest says.
    for e in &m.entries {
        if e.kind == EntryKind::File {
            let meta = fs::metadata(root.join(&e.path)).unwrap();
            assert_eq!(meta.len(), e.size, "{}", e.path.display());
            assert_eq!(meta.permissions().mode() & 0o7777, e.mode);
        }
    }

    let control = read_control(&deb).unwrap();
    let dpkg = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("control")
        .output()
        .unwrap();
    assert_eq!(control, String::from_utf8(dpkg.stdout).unwrap());
}

/// Every path under `root` with what a user would compare: kind, mode, and
/// the bytes of a file or the target of a symlink.
fn listing(root: &Path) -> Vec<(PathBuf, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                format!("{:?} links={}", fs::read(&path).unwrap(), meta.nlink())
            };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, meta.permissions().mode() & 0o7777, what));
        }
    }
    out.sort();
    out
}

#[test]
fn an_unpacked_copy_lays_out_what_the_deb_itself_would() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = write_deb(
        tmp.path(),
        "demo.deb",
        &deb_bytes("2.0\n", Comp::Xz, &tar_of(&demo_entries())),
    );
    // The cache's copy: everything kept.
    let tree = tmp.path().join("tree");
    let full = unpack_deb(&deb, &tree, &|_| true).unwrap();
    let keep = |p: &Path| !p.starts_with("usr/share/doc") && !p.starts_with("home");
    // Both into a root with merged /usr, as the userland is.
    let prepare = |name: &str| {
        let root = tmp.path().join(name);
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        root
    };
    let direct = prepare("direct");
    let copied = prepare("copied");
    let want = unpack_deb(&deb, &direct, &keep).unwrap();
    let got = unpack_from_tree(&deb, &tree, &full, &copied, &keep).unwrap();
    assert_eq!(got, want);
    assert_eq!(listing(&copied), listing(&direct));
    assert_eq!(mode(&copied.join("usr/bin/su-helper")), 0o4755);
    assert!(!copied.join("home").exists());
}

#[test]
fn an_unpacked_copy_that_lost_a_file_or_bytes_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = write_deb(
        tmp.path(),
        "demo.deb",
        &deb_bytes("2.0\n", Comp::Gzip, &tar_of(&demo_entries())),
    );
    let tree = tmp.path().join("tree");
    let full = unpack_deb(&deb, &tree, &|_| true).unwrap();
    fs::write(tree.join("usr/bin/su-helper"), b"cut").unwrap();
    let err = unpack_from_tree(&deb, &tree, &full, &tmp.path().join("a"), &|_| true).unwrap_err();
    assert!(matches!(err, UnpackError::Copy { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("usr/bin/su-helper"), "{text}");
    assert!(text.contains("3 bytes, the manifest says 13"), "{text}");
    assert!(
        text.contains(&format!("delete {}", tree.display())),
        "{text}"
    );
    fs::remove_file(tree.join("usr/bin/tool")).unwrap();
    let err = unpack_from_tree(&deb, &tree, &full, &tmp.path().join("b"), &|_| true).unwrap_err();
    assert!(err.to_string().contains("usr/bin/tool"), "{err}");
}
