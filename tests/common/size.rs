//! Sizes of release artifacts, measured the way a release publishes them.

use std::io::{Read, Write};
use std::path::Path;

/// The disk image compressed with zstd -19, as a release publishes it.
pub fn zstd19_size(disk: &Path) -> u64 {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut enc = zstd::stream::Encoder::new(Count(0), 19).expect("zstd encoder");
    enc.multithread(2).expect("zstd threads");
    let mut f = std::fs::File::open(disk).expect("opening the disk image");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("reading the disk image");
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).expect("compressing");
    }
    enc.finish().expect("zstd finish").0
}
