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
//! buckets around four entries at the cost of 4 bytes per bucket.

use super::postings;

pub const HEAD: usize = 16;

/// Digest widths of the three tables (MD5, SHA-1, SHA-256), in section order.
pub const WIDTHS: [usize; 3] = [16, 20, 32];

/// Which of the three tables holds digests of `len` bytes (16, 20 or 32).
pub fn table_for(len: usize) -> usize {
    match len {
        16 => 0,
        20 => 1,
        _ => 2,
    }
}

fn bits_for(count: usize) -> u32 {
    let mut bits = 0;
    while bits < 22 && (count >> bits) > 4 {
        bits += 1;
    }
    bits
}

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
    mut entries: Vec<(Box<[u8]>, u32)>,
    postings: &mut postings::Builder,
) -> Vec<u8> {
    entries.sort_unstable();
    entries.dedup();
    // Group equal digests into one row.
    let mut rows: Vec<(&[u8], u32)> = Vec::new();
    let mut ids = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let d = &entries[i].0;
        ids.clear();
        while i < entries.len() && entries[i].0 == *d {
            ids.push(entries[i].1);
            i += 1;
        }
        rows.push((d, postings.add(&ids)));
    }
    let bits = bits_for(rows.len());
    let buckets = 1usize << bits;
    let mut out = Vec::with_capacity(HEAD + (buckets + 1) * 4 + rows.len() * (width + 4));
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    let mut next = 0usize;
    for b in 0..=buckets {
        while next < rows.len() && bucket(rows[next].0, bits) < b {
            next += 1;
        }
        out.extend_from_slice(&(next as u32).to_le_bytes());
    }
    for (d, posting) in rows {
        out.extend_from_slice(d);
        out.extend_from_slice(&posting.to_le_bytes());
    }
    out
}

/// Read side over one table section.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    width: usize,
    bits: u32,
    dir: &'a [u8],
    rows: &'a [u8],
}

impl<'a> Table<'a> {
    pub fn open(section: &'a [u8], width: usize) -> Result<Table<'a>, String> {
        if section.is_empty() {
            return Ok(Table {
                width,
                bits: 0,
                dir: &[],
                rows: &[],
            });
        }
        let head = section.get(..HEAD).ok_or("header missing")?;
        let w = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let bits = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let count = u64::from_le_bytes(head[8..16].try_into().map_err(|_| "header")?) as usize;
        if w != width || bits > 22 {
            return Err(format!(
                "width {w}, bits {bits}: not a {width}-byte digest table"
            ));
        }
        let dir_len = ((1usize << bits) + 1) * 4;
        let rows_len = count.checked_mul(width + 4).ok_or("count overflows")?;
        if section.len() != HEAD + dir_len + rows_len {
            return Err(format!(
                "{} bytes for {count} rows and 2^{bits} buckets",
                section.len()
            ));
        }
        Ok(Table {
            width,
            bits,
            dir: &section[HEAD..HEAD + dir_len],
            rows: &section[HEAD + dir_len..],
        })
    }

    fn dir(&self, b: usize) -> usize {
        self.dir
            .get(b * 4..b * 4 + 4)
            .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize)
    }

    /// The posting ref of `digest`, if present.
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
                std::cmp::Ordering::Equal => {
                    let p = &row[self.width..];
                    return Some(u32::from_le_bytes([p[0], p[1], p[2], p[3]]));
                }
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.rows.len() / (self.width + 4)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
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
        let t = Table::open(&bytes, 16).expect("valid table");
        assert_eq!(t.len(), 1000);
        for (d, id) in &entries[..1000] {
            let r = t.get(d).expect("present");
            if *id != 5 {
                assert_eq!(r, *id);
            }
        }
        assert!(t.get(&[0u8; 16]).is_none());
        assert!(Table::open(&bytes[..bytes.len() - 1], 16).is_err());
    }
}
