//! Throughput of `write` (compress + hash + sign) and `Reader::copy_next`
//! (decompress + hash) on a 64 MiB incompressible payload, the worst case for
//! a root image. `cargo bench -p ballast-bundle --bench stream`; set
//! BALLAST_BENCH_MIB to change the size.

use ballast_bundle::{Input, Manifest, PayloadName, Reader, Signer};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::time::Instant;

fn main() {
    let mib: usize = std::env::var("BALLAST_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("root.img");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(&input, &bytes).expect("writing the input");
    drop(bytes);
    let signer = Signer::from_seed(&[1; 32]);
    let base = Manifest {
        format: 1,
        os: "ballast".into(),
        version: "1.0.0".into(),
        arch: "x86_64".into(),
        boards: vec![],
        build_time: 0,
        rollback_index: 0,
        key_id: String::new(),
        cmdline: String::new(),
        payloads: vec![],
    };
    let out = dir.path().join("b.bundle");
    let start = Instant::now();
    ballast_bundle::write(
        &out,
        base,
        &[Input {
            name: PayloadName::Root,
            path: &input,
        }],
        &signer,
    )
    .expect("writing the bundle");
    let write_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let file = BufReader::new(File::open(&out).expect("opening the bundle"));
    let mut reader = Reader::open(file, &[signer.public()]).expect("opening the bundle");
    while reader
        .copy_next(&mut io::sink(), &mut |_| {})
        .expect("reading the payload")
        .is_some()
    {}
    let read_s = start.elapsed().as_secs_f64();
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "payload {mib} MiB random, bundle {:.1} MiB: write {:.0} MB/s, copy_next {:.0} MB/s",
        size as f64 / (1 << 20) as f64,
        (mib << 20) as f64 / 1e6 / write_s,
        (mib << 20) as f64 / 1e6 / read_s
    );
}
