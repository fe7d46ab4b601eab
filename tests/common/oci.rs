//! A container image for the engine stories without any registry: Debian's
//! static busybox (fetched and checked by `ballast fetch`) in a one-layer
//! image, written as a `docker save` tarball.

use std::path::Path;
use std::process::Stdio;

use sha2::{Digest, Sha256};

/// A ustar archive in memory: directories, regular files, symlinks.
#[derive(Default)]
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        assert!(
            name.len() < 100 && link.len() < 100,
            "short names only: {name}"
        );
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}", v, width = field.len() - 1);
            field[..s.len()].copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size as u64);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
    }

    pub fn dir(&mut self, name: &str) {
        self.header(&format!("{name}/"), 0o755, 0, b'5', "");
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Debian's busybox-static for arm64, fetched and checked by `ballast fetch`.
pub fn static_busybox(work: &Path) -> Vec<u8> {
    let out = super::ballast()
        .args(["fetch", "--arch", "arm64", "--json", "busybox-static"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running ballast fetch");
    assert!(out.status.success(), "ballast fetch busybox-static failed");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ballast fetch --json prints JSON");
    let deb = json["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "busybox-static"))
        .and_then(|p| p["path"].as_str())
        .unwrap_or_else(|| panic!("no busybox-static in {json}"));
    let dest = work.join("busybox-static");
    ballast_debarchive::unpack::unpack_deb(Path::new(deb), &dest, &|_| true)
        .expect("unpacking busybox-static");
    let bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| dest.join(p))
        .find(|p| p.is_file())
        .expect("busybox-static has bin/busybox");
    let bytes = std::fs::read(bin).expect("reading busybox");
    // A static ELF for aarch64 (e_machine 183).
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 183);
    bytes
}

/// The image as `docker save` writes it, tagged `tag`: one layer (busybox,
/// its applets, `/www/index.html`), its config, manifest.json. Docker loads
/// it and `ctr image import` takes it too.
pub fn image_tarball(busybox: &[u8], tag: &str) -> Vec<u8> {
    let mut layer = Tar::default();
    for d in ["bin", "www", "tmp", "proc", "sys", "dev", "etc"] {
        layer.dir(d);
    }
    layer.file("bin/busybox", 0o755, busybox);
    for applet in ["sh", "echo", "cat", "httpd", "wget", "ls", "sleep"] {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer.file("www/index.html", 0o644, b"hello from a ballast container\n");
    let layer = layer.finish();
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "ballast tests/common/oci.rs"}],
    })
    .to_string();
    let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": ["layer/layer.tar"],
    }])
    .to_string();
    let mut tar = Tar::default();
    tar.file(&config_name, 0o644, config.as_bytes());
    tar.dir("layer");
    tar.file("layer/layer.tar", 0o644, &layer);
    tar.file("manifest.json", 0o644, manifest.as_bytes());
    tar.finish()
}
