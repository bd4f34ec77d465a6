//! The index file layout, its header, and the checks made before anything is trusted.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TRACERIX"
//!      8     4  format version (u32 LE)                   -> FORMAT_VERSION
//!     12     4  endianness marker 0x01020304 written LE    (a BE writer would differ)
//!     16     4  header length in bytes, section table included
//!     20     4  section count
//!     24     8  file length
//!     32     8  xxh3-64 of the chunk-checksum trailer
//!     40     8  xxh3-64 of the header with this field zeroed
//!     48     8  payload end (= start of the trailer)
//!     56    56  versions of the serializing crates, NUL padded ("rkyv 0.8, fst 0.4, …")
//!    112  24*n  section table: id u32, reserved u32, offset u64, length u64
//!           …   sections (the payload)
//! payload end   trailer: xxh3-64 of each 16 MiB chunk of the payload, in order
//! ```
//!
//! Sections start on 16-byte boundaries (rkyv needs aligned bytes; the file
//! is mapped at a page boundary). All integers are little-endian. The sections and how
//! lookups use them are described in [`super`].
//!
//! Open-time checks, in order: length ≥ fixed header, magic, version, endianness,
//! header checksum, file length, section bounds, trailer checksum, then every payload
//! chunk's checksum. Chunks are verified on all cores at once: one serial pass over a
//! 1 GB index took over 200 ms on 2 cores. Only then are the sections parsed, and each
//! parser validates its own structure too (rkyv `access`, table bounds, the fsts'
//! own checksums), so a damaged file is an error that names the file and the
//! reason, never undefined behaviour.

use std::ops::Range;
use std::path::PathBuf;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

pub const MAGIC: &[u8; 8] = b"TRACERIX";
/// 2: rare URL masks are anchored by a literal of their host (an infix section)
/// instead of one DFA. 3: records keep an exact rendition of contexts that hold an
/// escape literally (for the HTTP API's JSON).
pub const FORMAT_VERSION: u32 = 3;
pub const ENDIAN_MARK: u32 = 0x0102_0304;
const FIXED: usize = 112;
const ENTRY: usize = 24;
pub const ALIGN: usize = 16;
pub const CRATE_VERSIONS: &str = "rkyv 0.8, fst 0.4";
/// Payload bytes per checksum chunk.
pub const CHUNK: usize = 16 << 20;

/// What each section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionId {
    /// rkyv `Meta`: feeds, categories, counts, build time.
    Meta = 1,
    /// rkyv `Records`: offsets into the pre-rendered answer text, and the text.
    Records = 2,
    /// u32 posting lists: `count, id, id, …` (see `postings`).
    Postings = 3,
    /// Hashed table: kind byte + normalized value → posting ref (exact URLs, domains,
    /// raw strings, and the `h`/`s` buckets of URL masks).
    Exact = 4,
    /// Mask table: `u64 count, u32 host buckets, u32 subdomain buckets`, then per mask
    /// `text offset u32, text len u32, posting u32, 0u32`, then the mask text.
    Masks = 5,
    /// fst map: literal prefix of a mask → posting ref of mask ids.
    MaskPrefix = 6,
    /// fst map: reversed literal host suffix of a `*…` mask → posting ref of mask ids.
    MaskSuffix = 7,
    /// Literals inside the host of masks nothing else anchors, and the masks with no
    /// host literal at all (see `masks`).
    MaskInfix = 8,
    /// Sorted digest tables (see `hashes`).
    Md5 = 9,
    Sha1 = 10,
    Sha256 = 11,
    /// Per-prefix-length sorted network tables (see `ip`).
    Ipv4 = 12,
    Ipv6 = 13,
}

impl SectionId {
    pub const ALL: [SectionId; 13] = [
        SectionId::Meta,
        SectionId::Records,
        SectionId::Postings,
        SectionId::Exact,
        SectionId::Masks,
        SectionId::MaskPrefix,
        SectionId::MaskSuffix,
        SectionId::MaskInfix,
        SectionId::Md5,
        SectionId::Sha1,
        SectionId::Sha256,
        SectionId::Ipv4,
        SectionId::Ipv6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SectionId::Meta => "meta",
            SectionId::Records => "records",
            SectionId::Postings => "postings",
            SectionId::Exact => "exact keys",
            SectionId::Masks => "mask table",
            SectionId::MaskPrefix => "mask prefixes",
            SectionId::MaskSuffix => "mask host suffixes",
            SectionId::MaskInfix => "mask infixes",
            SectionId::Md5 => "md5 table",
            SectionId::Sha1 => "sha1 table",
            SectionId::Sha256 => "sha256 table",
            SectionId::Ipv4 => "ipv4 table",
            SectionId::Ipv6 => "ipv6 table",
        }
    }

    fn from_u32(v: u32) -> Option<SectionId> {
        SectionId::ALL.into_iter().find(|s| *s as u32 == v)
    }
}

/// Why an index file cannot be used. Every variant is shown with the file name.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a tracer index (bad magic {found:02x?})", file.display())]
    Magic { file: PathBuf, found: Vec<u8> },
    #[error("{}: index format version {found}, this build reads version {expected}; recompile the feed with `tracer compile`", file.display())]
    Version {
        file: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("{}: written on a machine of the other byte order", file.display())]
    Endianness { file: PathBuf },
    #[error("{}: truncated: {section} needs bytes up to {needed}, file has {len}", file.display())]
    Truncated {
        file: PathBuf,
        section: &'static str,
        needed: u64,
        len: u64,
    },
    #[error("{}: corrupted: {what} checksum mismatch", file.display())]
    Checksum { file: PathBuf, what: String },
    #[error("{}: corrupted: {section}: {source}", file.display())]
    Corrupt {
        file: PathBuf,
        section: &'static str,
        source: SectionError,
    },
}

/// Why one section's bytes cannot be used. Section parsers return these; [`IndexError`]
/// adds the file and the section name.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SectionError {
    #[error("section missing")]
    Missing,
    #[error("{what} needs {needed} bytes, the section has {len}")]
    Short {
        what: &'static str,
        needed: u64,
        len: u64,
    },
    #[error("{what} is {found}, expected {expected}")]
    Mismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("{what} {value} is out of range (at most {limit})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{what} is not {requirement}")]
    Malformed {
        what: &'static str,
        requirement: &'static str,
    },
    /// A section's own validation refused the bytes (rkyv's check, an fst map, the
    /// infix automaton).
    #[error("{what}: {reason}")]
    Rejected { what: &'static str, reason: String },
}

impl SectionError {
    pub fn rejected(what: &'static str, reason: impl std::fmt::Display) -> SectionError {
        SectionError::Rejected {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Little-endian integers: the one place the file's byte order is spelled out. Reads
/// return `None` past the end, so a damaged length can never index out of bounds.
pub mod le {
    #[inline]
    pub fn u32(b: &[u8], at: usize) -> Option<u32> {
        let bytes = b.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    #[inline]
    pub fn u64(b: &[u8], at: usize) -> Option<u64> {
        let bytes = b.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A read the caller has already bounds-checked (at open); 0 if it ever was not.
    #[inline]
    pub fn u32_or_zero(b: &[u8], at: usize) -> u32 {
        u32(b, at).unwrap_or(0)
    }

    pub fn put_u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// The low `width` bytes of `v` (an address of 4 or 16 bytes).
    pub fn put_uint(out: &mut Vec<u8>, v: u128, width: usize) {
        out.extend_from_slice(&v.to_le_bytes()[..width]);
    }

    /// An unsigned integer of `width` (≤ 16) bytes at `at`. The two widths the file
    /// uses (IPv4 and IPv6 addresses) are read directly, without a variable-length
    /// copy: this is the inner loop of an IP lookup.
    #[inline]
    pub fn uint(b: &[u8], at: usize, width: usize) -> Option<u128> {
        match width {
            4 => u32(b, at).map(u128::from),
            16 => {
                let bytes = b.get(at..at.checked_add(16)?)?;
                Some(u128::from_le_bytes(bytes.try_into().ok()?))
            }
            _ => {
                let bytes = b.get(at..at.checked_add(width)?)?;
                let mut n = [0u8; 16];
                n.get_mut(..width)?.copy_from_slice(bytes);
                Some(u128::from_le_bytes(n))
            }
        }
    }

    pub fn set_u64(out: &mut [u8], at: usize, v: u64) {
        out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Overwrite 4 bytes at `at` (a field filled in after its contents are known).
    pub fn set_u32(out: &mut [u8], at: usize, v: u32) {
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// The parsed header: where each section lies.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub crate_versions: String,
    pub sections: Vec<(SectionId, Range<usize>)>,
}

impl Header {
    pub fn section(&self, id: SectionId) -> Option<Range<usize>> {
        self.sections
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, r)| r.clone())
    }
}

/// Header fields: `check` has verified the fixed header is there before reading them.
fn u32_at(b: &[u8], at: usize) -> u32 {
    le::u32_or_zero(b, at)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    le::u64(b, at).unwrap_or(0)
}

/// Check everything the header promises. `bytes` is the whole file.
pub fn check(file: &std::path::Path, bytes: &[u8]) -> Result<Header, IndexError> {
    let file_buf = || file.to_path_buf();
    let len = bytes.len() as u64;
    let truncated = |section, needed: u64| IndexError::Truncated {
        file: file_buf(),
        section,
        needed,
        len,
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(IndexError::Magic {
            file: file_buf(),
            found: bytes[..bytes.len().min(8)].to_vec(),
        });
    }
    if bytes.len() < FIXED {
        return Err(truncated("header", FIXED as u64));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(IndexError::Version {
            file: file_buf(),
            expected: FORMAT_VERSION,
            found: version,
        });
    }
    if u32_at(bytes, 12) != ENDIAN_MARK {
        return Err(IndexError::Endianness { file: file_buf() });
    }
    let header_len = u32_at(bytes, 16) as usize;
    let count = u32_at(bytes, 20) as usize;
    if header_len != FIXED + count * ENTRY {
        return Err(IndexError::Corrupt {
            file: file_buf(),
            section: "header",
            source: SectionError::Mismatch {
                what: "header length",
                expected: (FIXED + count * ENTRY) as u64,
                found: header_len as u64,
            },
        });
    }
    if bytes.len() < header_len {
        return Err(truncated("section table", header_len as u64));
    }
    let mut header = bytes[..header_len].to_vec();
    header[40..48].fill(0);
    if xxh3_64(&header) != u64_at(bytes, 40) {
        return Err(IndexError::Checksum {
            file: file_buf(),
            what: "header".into(),
        });
    }
    let file_len = u64_at(bytes, 24);
    if len < file_len {
        return Err(truncated("file", file_len));
    }
    if len > file_len {
        return Err(IndexError::Corrupt {
            file: file_buf(),
            section: "file",
            source: SectionError::Mismatch {
                what: "file length",
                expected: file_len,
                found: len,
            },
        });
    }
    let payload_end = u64_at(bytes, 48);
    let chunks = (payload_end.saturating_sub(header_len as u64)).div_ceil(CHUNK as u64);
    if payload_end < header_len as u64 || payload_end.checked_add(chunks * 8) != Some(file_len) {
        return Err(IndexError::Corrupt {
            file: file_buf(),
            section: "header",
            source: SectionError::OutOfRange {
                what: "payload end",
                value: payload_end,
                limit: file_len,
            },
        });
    }
    let payload_end = payload_end as usize;
    let trailer = &bytes[payload_end..];
    if xxh3_64(trailer) != u64_at(bytes, 32) {
        return Err(IndexError::Checksum {
            file: file_buf(),
            what: "chunk table".into(),
        });
    }
    let mut sections = Vec::with_capacity(count);
    for i in 0..count {
        let at = FIXED + i * ENTRY;
        let raw_id = u32_at(bytes, at);
        let id = SectionId::from_u32(raw_id).ok_or_else(|| IndexError::Corrupt {
            file: file_buf(),
            section: "section table",
            source: SectionError::OutOfRange {
                what: "section id",
                value: raw_id as u64,
                limit: SectionId::ALL.len() as u64,
            },
        })?;
        let off = u64_at(bytes, at + 8);
        let slen = u64_at(bytes, at + 16);
        let end = off
            .checked_add(slen)
            .ok_or_else(|| truncated(id.name(), u64::MAX))?;
        if off < header_len as u64 || end > len {
            return Err(truncated(id.name(), end));
        }
        if !(off as usize).is_multiple_of(ALIGN) {
            return Err(IndexError::Corrupt {
                file: file_buf(),
                section: id.name(),
                source: SectionError::Malformed {
                    what: "section offset",
                    requirement: "16-byte aligned",
                },
            });
        }
        sections.push((id, off as usize..end as usize));
    }
    if let Some(bad) = first_bad_chunk(&bytes[header_len..payload_end], trailer) {
        let start = header_len + bad * CHUNK;
        let end = (start + CHUNK).min(payload_end);
        return Err(IndexError::Checksum {
            file: file_buf(),
            what: format!("payload (bytes {start}..{end})"),
        });
    }
    let crate_versions = String::from_utf8_lossy(&bytes[56..112])
        .trim_end_matches('\0')
        .to_string();
    Ok(Header {
        version,
        crate_versions,
        sections,
    })
}

/// Recompute the checksums of an index image whose payload was changed in place, so
/// that the section parsers (not the checksums) meet the change: for fuzzing them.
/// Leaves `bytes` alone when its fixed header does not describe it.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < FIXED {
        return;
    }
    let header_len = u32_at(bytes, 16) as usize;
    let payload_end = u64_at(bytes, 48) as usize;
    if header_len > payload_end || payload_end > bytes.len() {
        return;
    }
    let sums: Vec<u64> = bytes[header_len..payload_end]
        .chunks(CHUNK)
        .map(xxh3_64)
        .collect();
    if payload_end + sums.len() * 8 != bytes.len() {
        return;
    }
    for (i, sum) in sums.iter().enumerate() {
        let at = payload_end + i * 8;
        bytes[at..at + 8].copy_from_slice(&sum.to_le_bytes());
    }
    let trailer = xxh3_64(&bytes[payload_end..]);
    bytes[32..40].copy_from_slice(&trailer.to_le_bytes());
    bytes[40..48].fill(0);
    let header = xxh3_64(&bytes[..header_len]);
    bytes[40..48].copy_from_slice(&header.to_le_bytes());
}

/// Index of the first payload chunk whose checksum differs from the trailer's,
/// checking chunks on all cores.
fn first_bad_chunk(payload: &[u8], trailer: &[u8]) -> Option<usize> {
    let chunks: Vec<&[u8]> = payload.chunks(CHUNK).collect();
    let want = |i: usize| u64_at(trailer, i * 8);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.len())
        .max(1);
    if threads == 1 {
        return (0..chunks.len()).find(|&i| xxh3_64(chunks[i]) != want(i));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let chunks = &chunks;
                scope.spawn(move || {
                    (t..chunks.len())
                        .step_by(threads)
                        .find(|&i| xxh3_64(chunks[i]) != want(i))
                })
            })
            .collect();
        // A thread that panicked cannot vouch for its chunks: report its first one.
        handles
            .into_iter()
            .enumerate()
            .filter_map(|(t, h)| h.join().unwrap_or(Some(t)))
            .min()
    })
}

/// A serialized section: rkyv's output keeps its aligned buffer rather than being
/// copied (the records section alone can be most of the index).
pub enum Section {
    Plain(Vec<u8>),
    Aligned(rkyv::util::AlignedVec),
}

impl AsRef<[u8]> for Section {
    fn as_ref(&self) -> &[u8] {
        match self {
            Section::Plain(v) => v,
            Section::Aligned(v) => v,
        }
    }
}

/// Checksums of consecutive CHUNK-sized pieces of a byte stream.
struct ChunkSums {
    hasher: Xxh3,
    filled: usize,
    sums: Vec<u64>,
}

impl ChunkSums {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (CHUNK - self.filled).min(bytes.len());
            self.hasher.update(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == CHUNK {
                self.sums.push(self.hasher.digest());
                self.hasher = Xxh3::new();
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<u64> {
        if self.filled > 0 {
            self.sums.push(self.hasher.digest());
        }
        self.sums
    }
}

/// Write sections after a header, computing offsets and checksums. The writer needs
/// `Seek` only to come back and fill the header in.
pub fn write<W: std::io::Write + std::io::Seek>(
    out: &mut W,
    sections: &[(SectionId, &[u8])],
) -> std::io::Result<u64> {
    let header_len = FIXED + sections.len() * ENTRY;
    out.write_all(&vec![0u8; header_len])?;
    let mut pos = header_len;
    let mut hasher = ChunkSums {
        hasher: Xxh3::new(),
        filled: 0,
        sums: Vec::new(),
    };
    let mut table = Vec::with_capacity(sections.len());
    let zeros = [0u8; ALIGN];
    for (id, body) in sections {
        let pad = (ALIGN - pos % ALIGN) % ALIGN;
        out.write_all(&zeros[..pad])?;
        hasher.update(&zeros[..pad]);
        pos += pad;
        table.push((*id, pos as u64, body.len() as u64));
        out.write_all(body)?;
        hasher.update(body);
        pos += body.len();
    }
    let payload_end = pos;
    let trailer: Vec<u8> = hasher
        .finish()
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    out.write_all(&trailer)?;
    pos += trailer.len();
    let mut header = Vec::with_capacity(header_len);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&ENDIAN_MARK.to_le_bytes());
    header.extend_from_slice(&(header_len as u32).to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&(pos as u64).to_le_bytes());
    header.extend_from_slice(&xxh3_64(&trailer).to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&(payload_end as u64).to_le_bytes());
    let mut versions = [0u8; 56];
    versions[..CRATE_VERSIONS.len()].copy_from_slice(CRATE_VERSIONS.as_bytes());
    header.extend_from_slice(&versions);
    for (id, off, len) in table {
        header.extend_from_slice(&(id as u32).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&off.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
    }
    let sum = xxh3_64(&header);
    header[40..48].copy_from_slice(&sum.to_le_bytes());
    out.seek(std::io::SeekFrom::Start(0))?;
    out.write_all(&header)?;
    out.seek(std::io::SeekFrom::Start(pos as u64))?;
    Ok(pos as u64)
}
