//! How hard a build compresses what it writes (`ballast build --compress`).
//!
//! The root filesystem's zstd at level 19 is most of a warm build's time (about
//! 30 s of CPU for the minimal image, against 1 s at level 3) and the
//! initramfs's most of the rest; both are worth it only for what users
//! download. `fast` writes the same formats with the same boot, about 20 %
//! larger: for iterating on an image, and for the test suite's builds (ADR
//! 0016).

use ballast_kernel::initramfs::Compression;

/// The compression effort of one build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Effort {
    /// The smallest images: what you ship and what machines download.
    #[default]
    Best,
    /// The same formats, many times quicker, somewhat larger.
    Fast,
}

impl Effort {
    /// The zstd level of the root filesystem (squashfs).
    pub fn root_zstd_level(self) -> u32 {
        match self {
            Effort::Best => 19,
            Effort::Fast => 3,
        }
    }

    /// The root filesystem's squashfs block size. Reading a file cold
    /// decompresses the whole block it is in: 1 MiB blocks make the
    /// downloaded root about 10 % smaller, 128 KiB ones decompress less on
    /// the way to ready (about 0.6 s less on a first boot of the minimal
    /// arm64 image under QEMU's TCG, where every story boots).
    pub fn root_block_size(self) -> &'static str {
        match self {
            Effort::Best => "1M",
            Effort::Fast => "128K",
        }
    }

    /// The level for `method`, on its own scale: the initramfs's (zstd 19
    /// takes 5 s for the minimal image's 7.7 MB archive, 1.9 MB; zstd 3 0.1 s,
    /// 2.4 MB) and the gzip of the kernel a live ISO's GRUB loads (arm64).
    pub fn level(self, method: Compression) -> u32 {
        match (self, method) {
            (Effort::Best, m) => m.best_level(),
            (Effort::Fast, Compression::Gzip) => 1,
            (Effort::Fast, Compression::Xz) => 0,
            (Effort::Fast, Compression::Zstd) => 3,
            (Effort::Fast, Compression::None) => 0,
        }
    }
}
