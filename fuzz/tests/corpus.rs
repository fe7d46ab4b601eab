//! Replays every committed input through its harness: the seed corpora
//! (`corpus/TARGET/`) and the inputs that once crashed a target
//! (`regressions/TARGET/`, each fixed in the parser it names). It runs in
//! `cargo test` without libFuzzer, so CI checks every target on its inputs.

use std::fs;
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for (name, harness) in ballast_fuzz::TARGETS {
        for file in files(&root.join(kind).join(name)) {
            let data = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            eprintln!("{name}: {}", file.display());
            harness(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn every_target_has_a_binary_and_a_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in ballast_fuzz::TARGETS {
        let bin = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(bin.is_file(), "{} is missing", bin.display());
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let seeds = files(&root.join("corpus").join(name));
        assert!(seeds.len() >= 2, "corpus/{name}/ needs seed inputs");
    }
    let bins = files(&root.join("fuzz_targets"));
    assert_eq!(
        bins.len(),
        ballast_fuzz::TARGETS.len(),
        "a target in fuzz_targets/ is not in TARGETS"
    );
}

#[test]
fn seed_corpora_replay() {
    assert!(replay("corpus") > 0);
}

#[test]
fn regressions_replay() {
    replay("regressions");
}
