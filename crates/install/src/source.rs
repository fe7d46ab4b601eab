//! An image to write: raw or zstd (told apart by the zstd magic, not the file
//! name), its uncompressed size, and the reader that yields the raw bytes.
//! The size must be known before the first byte is written: the target is
//! checked against it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::InstallError;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// An opened image.
pub struct Image {
    /// The file or URL, for messages.
    pub name: String,
    /// Bytes of the raw (uncompressed) image.
    pub raw_size: u64,
    pub compressed: bool,
    reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("raw_size", &self.raw_size)
            .field("compressed", &self.compressed)
            .finish_non_exhaustive()
    }
}

impl Image {
    /// Open a file. `raw_size`: from a signed manifest when there is one.
    pub fn open(path: &Path, raw_size: Option<u64>) -> Result<Image, InstallError> {
        let f = File::open(path).map_err(|e| InstallError::Image {
            what: path.display().to_string(),
            detail: format!("cannot open it: {e}"),
        })?;
        let len = f.metadata().ok().map(|m| m.len());
        Image::from_reader(&path.display().to_string(), Box::new(f), len, raw_size)
    }

    /// `stored_size`: bytes the reader yields, when known (file length,
    /// Content-Length). `raw_size`: the uncompressed size from a manifest.
    pub fn from_reader(
        name: &str,
        mut reader: Box<dyn Read + Send>,
        stored_size: Option<u64>,
        raw_size: Option<u64>,
    ) -> Result<Image, InstallError> {
        let err = |detail: String| InstallError::Image {
            what: name.to_string(),
            detail,
        };
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match reader.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(format!("reading it: {e}"))),
            }
        }
        let chained: Box<dyn Read + Send> =
            Box::new(io::Cursor::new(magic[..got].to_vec()).chain(reader));
        if got == 4 && magic == ZSTD_MAGIC {
            let dec = ruzstd::decoding::StreamingDecoder::new(chained)
                .map_err(|e| err(format!("not a readable zstd stream: {e}")))?;
            let frame_size = dec.decoder.content_size();
            let raw_size = match raw_size {
                Some(n) => n,
                None if frame_size > 0 => frame_size,
                None => {
                    return Err(err(
                        "a zstd stream that does not record its uncompressed size: give its signed manifest, or decompress it first".into(),
                    ))
                }
            };
            Ok(Image {
                name: name.to_string(),
                raw_size,
                compressed: true,
                reader: Box::new(ZstdReader(dec)),
            })
        } else {
            let raw_size = raw_size.or(stored_size).ok_or_else(|| {
                err("its size is unknown (a stream without a length): give its signed manifest or a file".into())
            })?;
            Ok(Image {
                name: name.to_string(),
                raw_size,
                compressed: false,
                reader: chained,
            })
        }
    }

    /// Put a signed manifest's fills in place while streaming: their bytes
    /// come from files in `dir` (the medium's directory of the image).
    /// Each fill is hashed against its own SHA-256 unless the manifest has
    /// chunk sums (format 3), which the writer checks over the fills too.
    pub fn with_fills(
        mut self,
        manifest: &crate::Manifest,
        dir: &Path,
    ) -> Result<Image, InstallError> {
        if manifest.fills.is_empty() {
            return Ok(self);
        }
        let check = manifest.format != crate::manifest::FORMAT_CHUNKS;
        let inner = std::mem::replace(&mut self.reader, Box::new(io::empty()));
        self.reader = Box::new(crate::fill::FillReader::new(
            inner,
            &manifest.fills,
            dir,
            &self.name,
            check,
        )?);
        Ok(self)
    }

    pub(crate) fn reader(&mut self) -> &mut (dyn Read + Send) {
        &mut *self.reader
    }
}

/// ruzstd's decoder as a `Send` reader.
struct ZstdReader<R: Read>(ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>);

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
