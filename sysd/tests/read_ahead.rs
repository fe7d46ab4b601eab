//! `sysd --read-ahead`, as PID 1's stage 1 starts it: in the mounted root
//! (its working directory), reading the builder's list through.

use std::process::Command;

#[test]
fn read_ahead_reads_the_roots_list_from_its_working_directory() {
    let root = tempfile::tempdir().expect("temp dir");
    let at = |p: &str| root.path().join(p);
    std::fs::create_dir_all(at("usr/lib/ballast/userland/usr/sbin")).expect("dirs");
    std::fs::write(at("usr/lib/ballast/sysd"), vec![1u8; 4096]).expect("sysd");
    std::fs::write(
        at("usr/lib/ballast/userland/usr/sbin/sshd"),
        vec![2u8; 1 << 20],
    )
    .expect("sshd");
    std::fs::write(
        at("usr/lib/ballast/read-ahead"),
        "usr/lib/ballast/sysd\nusr/lib/ballast/userland/usr/sbin/sshd\n",
    )
    .expect("list");
    let out = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--read-ahead")
        .current_dir(root.path())
        .output()
        .expect("running it");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("sysd: read-ahead: 2 files, 1.0 MiB in "),
        "{err}"
    );
    assert!(!err.contains("unread"), "{err}");

    // A listed file the root lacks is named; the rest is still read.
    std::fs::remove_file(at("usr/lib/ballast/sysd")).expect("removing");
    let out = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--read-ahead")
        .current_dir(root.path())
        .output()
        .expect("running it");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-ahead: 1 files, 1.0 MiB"), "{err}");
    assert!(
        err.contains("; 1 listed files unread (first: ./usr/lib/ballast/sysd: "),
        "{err}"
    );

    // No list: it says so and exits 1.
    let empty = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--read-ahead")
        .current_dir(empty.path())
        .output()
        .expect("running it");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("read-ahead: cannot read /usr/lib/ballast/read-ahead"),
        "{out:?}"
    );
}
