//! Writing and streaming bundles. The reader verifies the signature before it
//! believes a single manifest byte, and verifies each payload's size and hash
//! while it streams it out; the caller must not make a slot bootable unless
//! every `copy_next` returned `Ok`.

#[cfg(feature = "write")]
use crate::Signer;
use crate::{BundleError, Manifest, Payload, PublicKey};
use sha2::{Digest, Sha256};
#[cfg(feature = "write")]
use std::fs::{self, File};
use std::io::{self, Read, Write};
#[cfg(feature = "write")]
use std::io::{BufWriter, Seek, SeekFrom};
use std::path::Path;
#[cfg(feature = "write")]
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

pub const MAGIC: &[u8; 16] = b"BALLAST-BUNDLE1\n";
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;
#[cfg(feature = "write")]
/// zstd level for payloads: a good ratio on kernels and initrds at a speed
/// that keeps a build short; the root image is mostly squashfs (already compressed).
pub const COMPRESSION_LEVEL: i32 = 9;
pub(crate) const CHUNK: usize = 1 << 20;
/// How often (in output bytes) `copy_next` reports progress.
const PROGRESS_EVERY: u64 = 8 << 20;

/// One file to put in a bundle under its payload name.
pub struct Input<'a> {
    pub name: crate::PayloadName,
    pub path: &'a Path,
}

#[cfg(feature = "write")]
/// Removes a temporary file unless disarmed.
pub(crate) struct TempFile(pub(crate) PathBuf);
#[cfg(feature = "write")]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(feature = "write")]
pub(crate) fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(feature = "write")]
/// Compresses each input, fills payload sizes/hashes and key_id, and writes the
/// bundle atomically (OUT.tmp, fsync, rename, fsync the directory).
pub fn write(
    out: &Path,
    base: Manifest,
    inputs: &[Input],
    signer: &Signer,
) -> Result<Manifest, BundleError> {
    let mut manifest = base;
    manifest.key_id = signer.public().id;
    manifest.payloads.clear();
    manifest.check_header()?;
    for (i, input) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|o| o.name == input.name) {
            return Err(BundleError::Input {
                name: input.name.to_string(),
                detail: "given twice".to_string(),
            });
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| BundleError::io("creating directory", dir, e))?;
    }

    // The manifest (with sizes and hashes) precedes the payloads, so compress
    // each into a temporary file beside the output first.
    let mut temps = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let tmp = TempFile(sibling(out, &format!(".payload{i}.tmp")));
        let payload = compress(input, &tmp.0)?;
        manifest.payloads.push(payload);
        temps.push(tmp);
    }
    manifest.check()?;

    let json = serde_json::to_vec(&manifest)
        .map_err(|e| BundleError::Manifest(format!("serialising: {e}")))?;
    let header = signed_header(MAGIC, &json, signer)?;

    ballast_device::atomic::replace_with(out, |tmp, file| {
        let werr = |e| BundleError::io("writing", tmp, e);
        let mut writer = BufWriter::with_capacity(CHUNK, file);
        writer.write_all(&header).map_err(werr)?;
        for t in &temps {
            let mut src = File::open(&t.0).map_err(|e| BundleError::io("reading back", &t.0, e))?;
            io::copy(&mut src, &mut writer).map_err(werr)?;
        }
        writer.flush().map_err(werr)
    })?;
    Ok(manifest)
}

#[cfg(feature = "write")]
/// Compress `input` into `dest` as one zstd frame, hashing the uncompressed bytes.
pub(crate) fn compress(input: &Input, dest: &Path) -> Result<Payload, BundleError> {
    let mut src = File::open(input.path)
        .map_err(|e| BundleError::io("opening payload input", input.path, e))?;
    let file = File::create(dest).map_err(|e| BundleError::io("creating", dest, e))?;
    let werr = |e| BundleError::io("compressing into", dest, e);
    let mut enc =
        zstd::stream::write::Encoder::new(BufWriter::with_capacity(CHUNK, file), COMPRESSION_LEVEL)
            .map_err(werr)?;
    // Always the multithreaded mode, even with one worker: its output does not
    // depend on the worker count, so builds of the same inputs on machines with
    // different CPU counts give the same bytes (SOURCE_DATE_EPOCH builds).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    enc.multithread(threads.max(1)).map_err(werr)?;
    // No frame checksum: the stored frame's SHA-256 (compressed_sha256) and the
    // output's SHA-256 are both checked, and an xxh64 pass on the device is time
    // an upgrade does not need.
    enc.include_checksum(false).map_err(werr)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io("reading payload input", input.path, e)),
        };
        hasher.update(&buf[..n]);
        enc.write_all(&buf[..n]).map_err(werr)?;
        size += n as u64;
    }
    let mut file = enc
        .finish()
        .map_err(werr)?
        .into_inner()
        .map_err(|e| werr(e.into_error()))?;
    let compressed_size = file.seek(SeekFrom::End(0)).map_err(werr)?;
    drop(file);
    let mut framed = Sha256::new();
    let mut stored = File::open(dest).map_err(|e| BundleError::io("hashing", dest, e))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = fill(&mut stored, &mut buf).map_err(|e| BundleError::io("hashing", dest, e))?;
        if n == 0 {
            break;
        }
        framed.update(&buf[..n]);
    }
    Ok(Payload {
        name: input.name.to_string(),
        size,
        sha256: hex::encode(hasher.finalize()),
        compressed_size,
        compressed_sha256: hex::encode(framed.finalize()),
    })
}

/// Streams a bundle: header, manifest and signature on `open`, then the payloads
/// one by one with [`Reader::copy_next`].
pub struct Reader<R: Read> {
    input: R,
    manifest: Manifest,
    next: usize,
    /// A payload failed: the stream is mid-frame, nothing after it can be read.
    failed: bool,
    /// Payloads checked by their stored frame's hash only.
    stored_hash_only: Vec<String>,
}

/// [`fill`], with a read error as the bundle's.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, BundleError> {
    fill(r, buf).map_err(BundleError::Read)
}

fn read_exact_or_truncated(r: &mut impl Read, buf: &mut [u8]) -> Result<(), BundleError> {
    if read_full(r, buf)? < buf.len() {
        return Err(BundleError::Truncated);
    }
    Ok(())
}

/// Whether a reader has nothing more (used to tell "truncated" from "corrupt").
/// Only for choosing between UnknownKey and BadSignature when no trusted key
/// verifies: the key_id is read from unverified bytes and never acted on.
#[derive(serde::Deserialize)]
struct ClaimedKey {
    key_id: String,
}

/// Reads `magic`, the manifest length, the manifest and its signature, and
/// verifies the signature against `trusted` before anything parses the
/// manifest. Returns the manifest's JSON bytes and the id of the key that
/// verified them. Shared by bundles and deltas (same layout, other magic).
pub(crate) fn read_signed_header(
    input: &mut impl Read,
    magic: &[u8; 16],
    trusted: &[PublicKey],
) -> Result<(Vec<u8>, String), BundleError> {
    let mut got_magic = [0u8; 16];
    let got = read_full(input, &mut got_magic)?;
    if got_magic[..got] != magic[..got] {
        return Err(BundleError::BadMagic);
    }
    if got < magic.len() {
        return Err(BundleError::Truncated);
    }
    let mut len = [0u8; 4];
    read_exact_or_truncated(input, &mut len)?;
    let n = u32::from_be_bytes(len);
    if !(1..=MAX_MANIFEST_LEN).contains(&n) {
        return Err(BundleError::ManifestLength { len: u64::from(n) });
    }
    let mut signed = Vec::with_capacity(20 + n as usize);
    signed.extend_from_slice(magic);
    signed.extend_from_slice(&len);
    signed.resize(20 + n as usize, 0);
    read_exact_or_truncated(input, &mut signed[20..])?;
    let mut signature = [0u8; 64];
    read_exact_or_truncated(input, &mut signature)?;

    let Some(key) = trusted.iter().find(|k| k.verify(&signed, &signature)) else {
        return Err(match serde_json::from_slice::<ClaimedKey>(&signed[20..]) {
            Ok(claim) if !trusted.iter().any(|k| k.id == claim.key_id) => {
                // Printable and short, whatever the untrusted bytes said.
                let key_id: String = claim
                    .key_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(32)
                    .collect();
                BundleError::UnknownKey { key_id }
            }
            _ => BundleError::BadSignature,
        });
    };
    signed.drain(..20);
    Ok((signed, key.id.clone()))
}

#[cfg(feature = "write")]
/// The signed header of a bundle or delta: magic, length, manifest, signature
/// over them.
pub(crate) fn signed_header(
    magic: &[u8; 16],
    json: &[u8],
    signer: &crate::Signer,
) -> Result<Vec<u8>, BundleError> {
    let len = u32::try_from(json.len())
        .ok()
        .filter(|n| (1..=MAX_MANIFEST_LEN).contains(n))
        .ok_or(BundleError::ManifestLength {
            len: json.len() as u64,
        })?;
    let mut header = Vec::with_capacity(20 + json.len() + 64);
    header.extend_from_slice(magic);
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(json);
    let signature = signer.sign(&header);
    header.extend_from_slice(&signature);
    Ok(header)
}

impl<R: Read> Reader<R> {
    /// Reads magic, manifest and signature, and verifies the signature against
    /// `trusted` before parsing the manifest.
    pub fn open(mut input: R, trusted: &[PublicKey]) -> Result<Reader<R>, BundleError> {
        let (json, key_id) = read_signed_header(&mut input, MAGIC, trusted)?;
        let manifest = Manifest::from_json(&json)?;
        if manifest.key_id != key_id {
            return Err(BundleError::Manifest(format!(
                "field `key_id`: says {} but the bundle was signed by key {key_id}; it was signed wrongly (sign it again with `ballast publish`/`ballast build`)",
                manifest.key_id
            )));
        }
        Ok(Reader::verified(input, manifest))
    }

    /// A reader over payloads whose list comes from a manifest the caller has
    /// already verified (the delta format reuses the payload streaming).
    pub(crate) fn verified(input: R, manifest: Manifest) -> Reader<R> {
        Reader {
            input,
            manifest,
            next: 0,
            failed: false,
            stored_hash_only: Vec::new(),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The payload `copy_next` reads next, if any.
    pub fn next_payload(&self) -> Option<crate::PayloadName> {
        self.manifest
            .payloads
            .get(self.next)
            .and_then(Payload::kind)
    }

    /// Check the named payloads by their stored frame's SHA-256 and their size
    /// only, without a second SHA-256 pass over the decompressed bytes. Both
    /// hashes are in the signed manifest and decompression is deterministic, so
    /// every byte is still checked; the second pass only guards against a
    /// decoder bug, which the caller must guard against another way (sysd: the
    /// kernel's dm-verity checks every block of `root` against the root hash in
    /// the signed command line, on every read).
    pub fn check_stored_hash_only(&mut self, names: &[crate::PayloadName]) {
        self.stored_hash_only = names.iter().map(|n| n.as_str().to_string()).collect();
    }

    /// The reader, positioned after the last payload consumed so far.
    pub fn into_inner(self) -> R {
        self.input
    }

    /// Next payload in manifest order: decompress exactly `compressed_size`
    /// bytes of input into `out`, hashing; `progress(bytes_out_so_far)` is called
    /// now and then. Fails on any size or hash difference, or a short bundle.
    /// After the last payload it checks the bundle ends there and returns None.
    pub fn copy_next(
        &mut self,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<Payload>, BundleError> {
        if self.failed {
            return Err(BundleError::Manifest(
                "a payload of this bundle already failed verification; nothing after it is read (start again with a good bundle)".to_string(),
            ));
        }
        let Some(payload) = self.manifest.payloads.get(self.next).cloned() else {
            if self.next == self.manifest.payloads.len() {
                self.next += 1;
                let mut byte = [0u8; 1];
                if read_full(&mut self.input, &mut byte)? != 0 {
                    return Err(BundleError::TrailingData);
                }
            }
            return Ok(None);
        };
        self.failed = true; // until this payload has verified
        let name = payload.name.clone();
        let mismatch = |detail: String| BundleError::PayloadMismatch {
            name: name.clone(),
            detail,
        };
        // The SHA-256 passes (stored frame, decompressed bytes) run on their
        // own threads, beside the decompression: on a small board the hashing,
        // not the decompression, is what costs (docs/adr/0003, "Update streaming").
        let check_plain = !self.stored_hash_only.contains(&name);
        let input = &mut self.input;
        let (streamed, framed, plain) = std::thread::scope(|s| {
            let (framed_lane, framed_work) = HashLane::new();
            let framed = s.spawn(move || framed_work.run());
            let (plain_lane, plain) = if check_plain {
                let (lane, work) = HashLane::new();
                (Some(lane), Some(s.spawn(move || work.run())))
            } else {
                (None, None)
            };
            // The lanes are moved in and dropped when it returns, so the
            // hashers always finish, whatever happened.
            let streamed = stream(input, &payload, out, progress, framed_lane, plain_lane);
            let plain = plain.map(|h| h.join()).transpose();
            (streamed, framed.join(), plain)
        });
        let written = streamed?;
        let (Ok(framed), Ok(plain)) = (framed, plain) else {
            return Err(BundleError::Decompress {
                name,
                source: io::Error::other("a hashing thread panicked"),
            });
        };
        if framed != payload.compressed_sha256 {
            return Err(mismatch(format!(
                "its stored frame has sha256 {framed}, the manifest says {}",
                payload.compressed_sha256
            )));
        }
        if written != payload.size {
            return Err(mismatch(format!(
                "{written} bytes, the manifest says {}",
                payload.size
            )));
        }
        if let Some(plain) = plain.filter(|p| *p != payload.sha256) {
            return Err(mismatch(format!(
                "sha256 {plain}, the manifest says {}",
                payload.sha256
            )));
        }
        out.flush().map_err(|source| BundleError::Output {
            name: name.clone(),
            source,
        })?;
        progress(written);
        self.next += 1;
        self.failed = false;
        Ok(Some(payload))
    }
}

/// Largest zstd window a payload frame may ask for. The builder writes 4 MiB
/// windows (level 9); the device refuses more before decoding, since the
/// decoder reserves the window before the frame's hash can be checked.
pub const MAX_WINDOW: u64 = 16 << 20;

/// Chunks in flight to each hashing thread.
const HASH_QUEUE: usize = 4;

/// The sending end of a hashing thread: chunks go to it, and come back to be
/// filled again. Fresh 1 MiB buffers for every chunk cost more than the hashing
/// on a small board (each is a new mapping to fault in and unmap again).
struct HashLane {
    tx: mpsc::SyncSender<Arc<Vec<u8>>>,
    back: mpsc::Receiver<Arc<Vec<u8>>>,
    spare: Vec<Arc<Vec<u8>>>,
}

/// The hashing thread's end of a [`HashLane`].
struct Hasher {
    rx: mpsc::Receiver<Arc<Vec<u8>>>,
    back: mpsc::Sender<Arc<Vec<u8>>>,
}

impl HashLane {
    fn new() -> (HashLane, Hasher) {
        let (tx, rx) = mpsc::sync_channel(HASH_QUEUE);
        let (back_tx, back) = mpsc::channel();
        (
            HashLane {
                tx,
                back,
                spare: Vec::new(),
            },
            Hasher { rx, back: back_tx },
        )
    }

    /// A buffer of `len` bytes (contents unspecified), reused when one is free.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.spare.extend(self.back.try_iter());
        while let Some(i) = self.spare.iter().position(|a| Arc::strong_count(a) == 1) {
            if let Ok(mut v) = Arc::try_unwrap(self.spare.swap_remove(i)) {
                v.resize(len, 0);
                return v;
            }
        }
        vec![0u8; len]
    }

    /// Hand a chunk to the hasher; false when the hashing thread has gone.
    fn send(&self, chunk: Arc<Vec<u8>>) -> bool {
        self.tx.send(chunk).is_ok()
    }
}

impl Hasher {
    fn run(self) -> String {
        let mut hasher = Sha256::new();
        for chunk in self.rx {
            hasher.update(chunk.as_slice());
            let _ = self.back.send(chunk);
        }
        hex::encode(hasher.finalize())
    }
}

/// Decompresses one payload's frame from `input` into `out`, sending the
/// stored bytes to `framed` and the decompressed ones to `plain` (if any) for hashing.
/// Returns the number of decompressed bytes written.
fn stream<R: Read>(
    input: &mut R,
    payload: &Payload,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
    framed: HashLane,
    mut plain: Option<HashLane>,
) -> Result<u64, BundleError> {
    let name = &payload.name;
    let hasher_gone = || BundleError::Decompress {
        name: name.clone(),
        source: io::Error::other("a hashing thread stopped"),
    };
    let mut frame = FrameInput {
        inner: input,
        left: payload.compressed_size,
        eof: false,
        chunk: Arc::new(Vec::new()),
        pos: 0,
        lane: framed,
        hasher_gone: false,
    };
    // A short bundle shows as a decoder error with stored bytes still missing.
    let failed = |frame: &FrameInput<'_, R>, source: io::Error| {
        if frame.left != 0 && frame.eof {
            BundleError::Truncated
        } else if frame.hasher_gone {
            hasher_gone()
        } else {
            BundleError::Decompress {
                name: name.clone(),
                source,
            }
        }
    };
    // The decoder reserves the frame's window before any hash can be checked:
    // a forged frame must not make a small board spend 100 MiB on it.
    match frame.window() {
        Ok(Some(w)) if w > MAX_WINDOW => {
            return Err(BundleError::PayloadMismatch {
                name: name.clone(),
                detail: format!(
                    "its zstd frame asks for a {} MiB window; bundles use at most {} MiB (ballast build writes 4 MiB), so it is not one the builder wrote",
                    w >> 20,
                    MAX_WINDOW >> 20
                ),
            })
        }
        Ok(_) => {}
        Err(e) => return Err(failed(&frame, e)),
    }
    let mut decoder = match ruzstd::decoding::StreamingDecoder::new(&mut frame) {
        Ok(d) => d,
        Err(e) => {
            let e = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            return Err(failed(&frame, e));
        }
    };
    let mut written = 0u64;
    let mut next_report = PROGRESS_EVERY;
    let mut own = Vec::new();
    loop {
        let mut chunk = match &mut plain {
            Some(lane) => lane.buffer(CHUNK),
            None => {
                own.resize(CHUNK, 0);
                std::mem::take(&mut own)
            }
        };
        let n = match fill(&mut decoder, &mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                drop(decoder);
                return Err(failed(&frame, e));
            }
        };
        chunk.truncate(n);
        written += n as u64;
        if written > payload.size {
            // Stop before writing past the size the signed manifest promised.
            return Err(BundleError::PayloadMismatch {
                name: name.clone(),
                detail: format!(
                    "decompresses to more than the {} bytes the manifest says",
                    payload.size
                ),
            });
        }
        out.write_all(&chunk)
            .map_err(|source| BundleError::Output {
                name: name.clone(),
                source,
            })?;
        match &plain {
            Some(lane) => {
                if !lane.send(Arc::new(chunk)) {
                    return Err(hasher_gone());
                }
            }
            None => own = chunk,
        }
        if written >= next_report {
            progress(written);
            next_report = written + PROGRESS_EVERY;
        }
    }
    drop(decoder);
    if frame.left != 0 {
        return Err(BundleError::Truncated);
    }
    Ok(written)
}

/// Reads `buf` full, unless the reader ends first; returns the bytes read.
pub(crate) fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The stored bytes of one payload: at most `left` bytes of `inner`, read in
/// large chunks, each of which is also sent to the hashing thread.
struct FrameInput<'a, R: Read> {
    inner: &'a mut R,
    left: u64,
    eof: bool,
    chunk: Arc<Vec<u8>>,
    pos: usize,
    lane: HashLane,
    /// Set when the hashing thread could not take a chunk.
    hasher_gone: bool,
}

impl<R: Read> FrameInput<'_, R> {
    /// The next chunk of stored bytes, when the current one is used up.
    fn refill(&mut self) -> io::Result<()> {
        if self.pos == self.chunk.len() && self.left != 0 && !self.eof {
            let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(CHUNK);
            let mut chunk = self.lane.buffer(want);
            let n = fill(self.inner, &mut chunk)?;
            if n < want {
                self.eof = true;
            }
            chunk.truncate(n);
            self.left -= n as u64;
            self.chunk = Arc::new(chunk);
            self.pos = 0;
            if !self.lane.send(Arc::clone(&self.chunk)) {
                self.hasher_gone = true;
                return Err(io::Error::other("the hashing thread stopped"));
            }
        }
        Ok(())
    }

    /// The decoding window the frame header asks for, read before the
    /// decoder sees it (`None`: too short to tell; the decoder reports that).
    fn window(&mut self) -> io::Result<Option<u64>> {
        self.refill()?;
        let h = &self.chunk[self.pos..];
        if h.len() < 6 || h[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
            return Ok(None);
        }
        let descriptor = h[4];
        if descriptor & 0x20 != 0 {
            // Single segment: the window is the content size, in 1, 2, 4 or 8 bytes.
            let len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
            let start = 5 + [0usize, 1, 2, 4][usize::from(descriptor & 3)];
            let Some(b) = h.get(start..start + len) else {
                return Ok(None);
            };
            let mut v = [0u8; 8];
            v[..len].copy_from_slice(b);
            let size = u64::from_le_bytes(v);
            return Ok(Some(if len == 2 { size + 256 } else { size }));
        }
        let (exponent, mantissa) = (u64::from(h[5] >> 3), u64::from(h[5] & 7));
        let base = 1u64 << (10 + exponent);
        Ok(Some(base + base / 8 * mantissa))
    }
}

impl<R: Read> Read for FrameInput<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.refill()?;
        let n = (self.chunk.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
