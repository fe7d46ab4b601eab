//! `sysd --read-ahead`, as PID 1's stage 1 starts it: in the mounted root
//! (its working directory), reading the builder's list through, under a
//! name of its own (`pgrep -x sysd` finds only the supervisor).

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
    // Its name while it runs: a FIFO in the list holds it until written.
    let fifo = at("usr/lib/ballast/hold");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    std::fs::write(at("usr/lib/ballast/read-ahead"), "usr/lib/ballast/hold\n").expect("list");
    let mut held = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--read-ahead")
        .current_dir(root.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting it");
    let comm = format!("/proc/{}/comm", held.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut name = String::new();
    while std::time::Instant::now() < deadline {
        name = std::fs::read_to_string(&comm).unwrap_or_default();
        if name.trim() == "read-ahead" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(&fifo, b"x").expect("releasing it");
    assert_eq!(held.wait().expect("waiting").code(), Some(0));
    assert_eq!(name.trim(), "read-ahead");
    std::fs::remove_file(&fifo).expect("removing the fifo");
    std::fs::write(
        at("usr/lib/ballast/read-ahead"),
        "usr/lib/ballast/sysd\nusr/lib/ballast/userland/usr/sbin/sshd\n",
    )
    .expect("list");

    let (code, err) = read_ahead_in(root.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.starts_with("sysd: read-ahead: 2 files, 1.0 MiB in "),
        "{err}"
    );
    assert!(!err.contains("unread"), "{err}");

    // A listed file the root lacks is named; the rest is still read.
    std::fs::remove_file(at("usr/lib/ballast/sysd")).expect("removing");
    let (code, err) = read_ahead_in(root.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("read-ahead: 1 files, 1.0 MiB"), "{err}");
    assert!(
        err.contains("; 1 listed files unread (first: ./usr/lib/ballast/sysd: "),
        "{err}"
    );

    // No list: it says so and exits 1.
    let empty = tempfile::tempdir().expect("temp dir");
    let (code, err) = read_ahead_in(empty.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("read-ahead: cannot read /usr/lib/ballast/read-ahead"),
        "{err}"
    );
}

/// `sysd --read-ahead` run to its end in `root`: exit code and stderr.
fn read_ahead_in(root: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sysd"))
        .arg("--read-ahead")
        .current_dir(root)
        .output()
        .expect("running it");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
