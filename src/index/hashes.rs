//! Digest tables (MD5, SHA-1, SHA-256), one per length.
//!
//! Digests are random bytes, which share no prefixes and compress badly in an fst.
//! They are stored binary, sorted, with a directory over their leading bits:
//!
//! ```text
//! u32 width (16, 20 or 32)  u32 bits  u64 count
//! (2^bits + 1) × u32        first entry index of each bucket (by the top `bits` bits)
//! count × (width + 4)       digest, posting ref (u32 LE)
//! ```
//!
//! A lookup reads one directory slot, then binary-searches a bucket of a few entries.
//! Being uniform, digests fill buckets evenly, so `bits ≈ log2(count / 4)` keeps
//! buckets around four entries at the cost of 4 bytes per bucket. An empty section
//! means no digest of that width.

use std::ops::Range;

use super::format::{le, SectionError};
use super::postings;

pub const HEAD: usize = 16;
const MAX_BITS: u32 = 22;

/// The three digest widths, in section order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    Md5,
    Sha1,
    Sha256,
}

impl Digest {
    pub const ALL: [Digest; 3] = [Digest::Md5, Digest::Sha1, Digest::Sha256];

    /// The table for a digest of `len` bytes.
    pub fn of_len(len: usize) -> Option<Digest> {
        match len {
            16 => Some(Digest::Md5),
            20 => Some(Digest::Sha1),
            32 => Some(Digest::Sha256),
            _ => None,
        }
    }

    pub fn width(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

fn bits_for(count: usize) -> u32 {
    let mut bits = 0;
    while bits < MAX_BITS && (count >> bits) > 4 {
        bits += 1;
    }
    bits
}

#[inline]
fn bucket(digest: &[u8], bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (top >> (32 - bits)) as usize
}

/// Build a table from (digest, record id) pairs, all of `width` bytes.
pub fn build(
    width: usize,
    entries: Vec<(Box<[u8]>, u32)>,
    postings: &mut postings::Builder,
) -> Vec<u8> {
    let rows = postings.group(entries);
    let bits = bits_for(rows.len());
    let buckets = 1usize << bits;
    let mut out = Vec::with_capacity(HEAD + (buckets + 1) * 4 + rows.len() * (width + 4));
    le::put_u32(&mut out, width as u32);
    le::put_u32(&mut out, bits);
    le::put_u64(&mut out, rows.len() as u64);
    let mut next = 0usize;
    for b in 0..=buckets {
        while next < rows.len() && bucket(&rows[next].0, bits) < b {
            next += 1;
        }
        le::put_u32(&mut out, next as u32);
    }
    for (d, posting) in rows {
        out.extend_from_slice(&d);
        le::put_u32(&mut out, posting);
    }
    out
}

/// Where a checked table lies in the index bytes; made once at open.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    width: usize,
    bits: u32,
    dir: Range<usize>,
    rows: Range<usize>,
}

impl Layout {
    pub fn check(
        bytes: &[u8],
        section: Range<usize>,
        width: usize,
    ) -> Result<Layout, SectionError> {
        let s = &bytes[section.clone()];
        if s.is_empty() {
            return Ok(Layout {
                width,
                ..Layout::default()
            });
        }
        let short = SectionError::Short {
            what: "digest table header",
            needed: HEAD as u64,
            len: s.len() as u64,
        };
        let w = le::u32(s, 0).ok_or_else(|| short.clone())? as usize;
        let bits = le::u32(s, 4).ok_or_else(|| short.clone())?;
        let count = le::u64(s, 8).ok_or(short)? as usize;
        if w != width {
            return Err(SectionError::Mismatch {
                what: "digest width",
                expected: width as u64,
                found: w as u64,
            });
        }
        if bits > MAX_BITS {
            return Err(SectionError::OutOfRange {
                what: "directory bits",
                value: bits as u64,
                limit: MAX_BITS as u64,
            });
        }
        let dir_len = ((1usize << bits) + 1) * 4;
        let rows_len = count
            .checked_mul(width + 4)
            .ok_or(SectionError::OutOfRange {
                what: "digest count",
                value: count as u64,
                limit: (usize::MAX / (width + 4)) as u64,
            })?;
        let expected = HEAD as u64 + dir_len as u64 + rows_len as u64;
        if s.len() as u64 != expected {
            return Err(SectionError::Mismatch {
                what: "digest table length",
                expected,
                found: s.len() as u64,
            });
        }
        let dir_start = section.start + HEAD;
        Ok(Layout {
            width,
            bits,
            dir: dir_start..dir_start + dir_len,
            rows: dir_start + dir_len..section.end,
        })
    }

    #[inline]
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Table<'a> {
        Table {
            width: self.width,
            bits: self.bits,
            dir: bytes.get(self.dir.clone()).unwrap_or(&[]),
            rows: bytes.get(self.rows.clone()).unwrap_or(&[]),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len() / (self.width + 4)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Read side over one table.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    width: usize,
    bits: u32,
    dir: &'a [u8],
    rows: &'a [u8],
}

impl Table<'_> {
    fn dir(&self, b: usize) -> usize {
        le::u32_or_zero(self.dir, b * 4) as usize
    }

    /// The posting ref of `digest`, if present.
    #[inline]
    pub fn get(&self, digest: &[u8]) -> Option<u32> {
        if self.rows.is_empty() || digest.len() != self.width {
            return None;
        }
        let stride = self.width + 4;
        let b = bucket(digest, self.bits);
        let (mut lo, mut hi) = (self.dir(b), self.dir(b + 1));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let row = self.rows.get(mid * stride..(mid + 1) * stride)?;
            match row[..self.width].cmp(digest) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return le::u32(row, self.width),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_digest_and_misses_others() {
        let mut p = postings::Builder::default();
        let mut entries: Vec<(Box<[u8]>, u32)> = Vec::new();
        let mut x: u64 = 0x1234_5678;
        for id in 0..1000u32 {
            let mut d = [0u8; 16];
            for chunk in d.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            entries.push((Box::from(&d[..]), id));
        }
        entries.push((entries[5].0.clone(), 2000));
        let bytes = build(16, entries.clone(), &mut p);
        let layout = Layout::check(&bytes, 0..bytes.len(), 16).expect("valid table");
        assert_eq!(layout.len(), 1000);
        let t = layout.view(&bytes);
        for (d, id) in &entries[..1000] {
            let r = t.get(d).expect("present");
            if *id != 5 {
                assert_eq!(r, *id);
            }
        }
        assert!(t.get(&[0u8; 16]).is_none());
        assert!(Layout::check(&bytes, 0..bytes.len() - 1, 16).is_err());
        assert!(Layout::check(&bytes, 0..bytes.len(), 20).is_err());
    }
}
