//! Our trees against cryptsetup's `veritysetup`, the reference the kernel's users trust:
//! it must accept what we append, dump our parameters, reject what we reject, and
//! `veritysetup format` on the same data must give the same bytes.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use ballast_verity::{
    append_hash_tree, read_superblock, verify, Params, Verity, VerityError, DEFAULT_BLOCK_SIZE,
};

const BS: u64 = DEFAULT_BLOCK_SIZE as u64;

fn salt() -> Vec<u8> {
    Params::derived_salt(b"ballast test image 1")
}

/// Pseudo-random, non-repeating content (every block differs, so a tree mixing up
/// blocks cannot pass).
fn write_data(path: &Path, len: u64) {
    let mut f = fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len;
    let mut buf = Vec::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len as usize);
    f.write_all(&buf).unwrap();
}

fn veritysetup(args: &[&str]) -> (bool, String) {
    let out = Command::new("veritysetup")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run veritysetup ({e}); install it: apt-get install -y cryptsetup-bin")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn vs_verify(path: &Path, v: &Verity) -> (bool, String) {
    let p = path.to_str().unwrap();
    veritysetup(&[
        "verify",
        p,
        p,
        &v.root_hash_hex(),
        &format!("--hash-offset={}", v.hash_offset),
    ])
}

fn flip_byte(path: &Path, offset: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

/// The whole story for one data size: append, veritysetup accepts and dumps it,
/// veritysetup format agrees byte for byte, one flipped data byte is caught by both.
fn check_size(len: u64) {
    check_with(len, Params::new(salt()));
}

fn check_with(len: u64, params: Params) {
    let dbs = u64::from(params.data_block_size);
    let hbs = u64::from(params.hash_block_size);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    write_data(&img, len);
    let original = fs::read(&img).unwrap();

    let v = append_hash_tree(&img, &params).unwrap();
    let blocks = len.div_ceil(dbs);
    assert_eq!(v.data_blocks, blocks);
    assert_eq!(v.hash_offset, (blocks * dbs).div_ceil(hbs) * hbs);
    let bytes = fs::read(&img).unwrap();
    assert_eq!(
        &bytes[..len as usize],
        &original[..],
        "data must be untouched"
    );
    assert!(bytes[len as usize..v.hash_offset as usize]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(bytes.len() as u64, v.hash_offset + v.hash_area_size());

    // veritysetup reads our superblock and checks the whole tree against our root.
    let (ok, text) = vs_verify(&img, &v);
    assert!(
        ok,
        "veritysetup verify rejected our tree for {len} bytes:\n{text}"
    );
    verify(&img, &v).unwrap();

    let (ok, dump) = veritysetup(&[
        "dump",
        img.to_str().unwrap(),
        &format!("--hash-offset={}", v.hash_offset),
    ]);
    assert!(ok, "{dump}");
    assert!(dump.contains(&v.salt_hex()), "{dump}");
    assert!(
        dump.contains(&format!("Data blocks:     \t{blocks}\n")),
        "{dump}"
    );
    assert!(dump.contains(&v.uuid_string()), "{dump}");
    assert!(dump.contains("Hash type:       \t1\n"), "{dump}");

    // Our superblock reader gives back what we wrote.
    let sb = read_superblock(&img, v.hash_offset).unwrap();
    assert_eq!(sb.to_verity(v.root_hash, v.hash_offset), v);

    // veritysetup format on a copy of the padded data: same root hash, same bytes.
    let copy = dir.path().join("copy.img");
    let mut padded = original.clone();
    padded.resize(v.hash_offset as usize, 0);
    fs::write(&copy, &padded).unwrap();
    let c = copy.to_str().unwrap();
    let (ok, text) = veritysetup(&[
        "format",
        c,
        c,
        &format!("--hash-offset={}", v.hash_offset),
        &format!("--data-blocks={blocks}"),
        &format!("--salt={}", v.salt_hex()),
        &format!("--uuid={}", v.uuid_string()),
        &format!("--data-block-size={dbs}"),
        &format!("--hash-block-size={hbs}"),
    ]);
    assert!(ok, "{text}");
    let root_line = text
        .lines()
        .find(|l| l.starts_with("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in veritysetup output:\n{text}"));
    assert_eq!(
        root_line.split_whitespace().last().unwrap(),
        v.root_hash_hex()
    );
    assert!(
        fs::read(&copy).unwrap() == bytes,
        "veritysetup wrote different bytes for {len}"
    );

    // One flipped bit in the last data block: both refuse, we name the block.
    let bad_block = blocks - 1;
    flip_byte(&img, bad_block * dbs + 7);
    match verify(&img, &v) {
        Err(VerityError::DataBlockMismatch { block, .. }) => assert_eq!(block, bad_block),
        other => panic!("expected a data block mismatch, got {other:?}"),
    }
    let (ok, text) = vs_verify(&img, &v);
    assert!(!ok, "veritysetup accepted corrupt data:\n{text}");
}

#[test]
fn one_block() {
    check_size(BS);
}

#[test]
fn less_than_one_block() {
    check_size(100);
}

#[test]
fn one_hash_block_short_of_full() {
    check_size(127 * BS);
}

#[test]
fn two_levels() {
    check_size(129 * BS);
}

#[test]
fn five_thousand_blocks() {
    check_size(5000 * BS);
}

#[test]
fn size_not_a_multiple_of_the_block() {
    check_size(300 * BS + 1234);
}

#[test]
fn small_hash_blocks_give_a_four_level_tree() {
    // 16 digests per 512-byte hash block: 5000 blocks need 313, 20, 2 and 1 hash blocks.
    check_with(
        5000 * BS,
        Params {
            hash_block_size: 512,
            ..Params::new(salt())
        },
    );
}

#[test]
fn data_blocks_smaller_than_hash_blocks() {
    // 1001 data blocks of 512 bytes end mid hash block: the superblock moves to the next one.
    check_with(
        1001 * 512 - 3,
        Params {
            data_block_size: 512,
            ..Params::new(salt())
        },
    );
}

#[test]
fn bad_params_are_refused_before_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    write_data(&img, 3 * BS);
    let e = append_hash_tree(
        &img,
        &Params {
            hash_block_size: 3000,
            ..Params::new(salt())
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("hash_block_size") && e.contains("3000"), "{e}");
    let e = append_hash_tree(&img, &Params::new(vec![0; 257]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("salt"), "{e}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 3 * BS);
}

#[test]
fn empty_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("empty.img");
    fs::write(&img, b"").unwrap();
    let e = append_hash_tree(&img, &Params::new(salt())).unwrap_err();
    assert!(matches!(e, VerityError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("empty.img"), "{e}");
    assert_eq!(
        fs::metadata(&img).unwrap().len(),
        0,
        "an empty image must stay untouched"
    );
}

#[test]
fn same_input_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    write_data(&a, 700 * BS + 5);
    write_data(&b, 700 * BS + 5);
    let va = append_hash_tree(&a, &Params::new(salt())).unwrap();
    let vb = append_hash_tree(&b, &Params::new(salt())).unwrap();
    assert_eq!(va, vb);
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap());
    // A different salt changes root and UUID.
    let c = dir.path().join("c.img");
    write_data(&c, 700 * BS + 5);
    let vc = append_hash_tree(&c, &Params::new(Params::derived_salt(b"other"))).unwrap();
    assert_ne!(vc.root_hash, va.root_hash);
    assert_ne!(vc.uuid, va.uuid);
}

#[test]
fn corrupt_hash_tree_and_wrong_root_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    write_data(&img, 200 * BS);
    let v = append_hash_tree(&img, &Params::new(salt())).unwrap();

    let mut wrong = v.clone();
    wrong.root_hash[0] ^= 1;
    assert!(matches!(
        verify(&img, &wrong),
        Err(VerityError::RootHashMismatch { .. })
    ));
    assert!(!vs_verify(&img, &wrong).0);

    // The top level is the first block after the superblock block.
    flip_byte(&img, v.hash_offset + BS + 3);
    match verify(&img, &v) {
        Err(VerityError::HashBlockMismatch { level, block, .. }) => {
            assert_eq!((level, block), (1, 0))
        }
        other => panic!("expected a hash block mismatch, got {other:?}"),
    }
    assert!(!vs_verify(&img, &v).0);
}

#[test]
fn superblock_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    write_data(&img, 10 * BS);
    let v = append_hash_tree(&img, &Params::new(salt())).unwrap();
    let e = read_superblock(&img, 0).unwrap_err().to_string();
    assert!(e.contains("root.img") && e.contains("signature"), "{e}");
    let e = read_superblock(&img, 1 << 30).unwrap_err().to_string();
    assert!(e.contains("root.img") && e.contains("ends before"), "{e}");

    let mut other = v.clone();
    other.data_blocks = 9;
    let e = verify(&img, &other).unwrap_err().to_string();
    assert!(e.contains("data_blocks = 10"), "{e}");

    // A truncated image is reported as such.
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(v.hash_offset + BS).unwrap();
    let e = verify(&img, &v).unwrap_err();
    assert!(matches!(e, VerityError::TooShort { .. }), "{e}");
}

#[test]
fn cmdline_carries_a_built_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("root.img");
    write_data(&img, 3 * BS);
    let v = append_hash_tree(&img, &Params::new(salt())).unwrap();
    let word = v.to_cmdline();
    assert!(!word.contains(' '));
    let back = Verity::find_in_cmdline(&format!("root=/dev/dm-0 {word} ro"))
        .unwrap()
        .unwrap();
    assert_eq!(
        back, v,
        "the UUID must be derivable from the command line alone"
    );
    verify(&img, &back).unwrap();
    assert_eq!(
        v.table("/dev/vda2", "/dev/vda2"),
        format!(
            "0 24 verity 1 /dev/vda2 /dev/vda2 4096 4096 3 4 sha256 {} {}",
            v.root_hash_hex(),
            v.salt_hex()
        )
    );
}
