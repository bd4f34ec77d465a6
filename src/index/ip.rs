//! IP tables: addresses, CIDR networks and ranges, in one structure per family.
//!
//! Every entry is an aligned CIDR block (an address is a /32 or /128, an `a-b` range
//! is split by the compiler into its minimal block cover). Blocks are grouped by
//! prefix length, and each group is a sorted array of network addresses. To look up
//! an address, mask it to each length present and binary-search that group: real
//! feeds use a handful of lengths, so this is a few searches, with no interval tree
//! and no special case for overlapping networks (an address matches every block that
//! holds it, in any feed).
//!
//! ```text
//! u32 groups   u32 width (4 or 16)
//! groups × (u32 prefix len, u32 first row, u32 rows)
//! rows × (network, width bytes LE; posting ref u32 LE)
//! ```

use std::ops::Range;

use super::format::{le, SectionError};
use super::postings;

/// Build a table of `width` (4 or 16) bytes from (prefix len, network, record id).
pub fn build(
    width: usize,
    entries: Vec<(u8, u128, u32)>,
    postings: &mut postings::Builder,
) -> Vec<u8> {
    // Sorting by (prefix len, network) groups the blocks by length, networks ascending.
    let rows = postings.group(
        entries
            .into_iter()
            .map(|(len, net, id)| ((len, net), id))
            .collect(),
    );
    let mut groups: Vec<(u8, u32, u32)> = Vec::new();
    for (i, ((len, _), _)) in rows.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if g.0 == *len => g.2 += 1,
            _ => groups.push((*len, i as u32, 1)),
        }
    }
    let mut out = Vec::new();
    le::put_u32(&mut out, groups.len() as u32);
    le::put_u32(&mut out, width as u32);
    for (len, first, count) in &groups {
        le::put_u32(&mut out, *len as u32);
        le::put_u32(&mut out, *first);
        le::put_u32(&mut out, *count);
    }
    for ((_, net), posting) in rows {
        le::put_uint(&mut out, net, width);
        le::put_u32(&mut out, posting);
    }
    out
}

/// One prefix length's rows.
#[derive(Clone, Copy, Debug)]
struct Group {
    len: u32,
    first: usize,
    rows: usize,
}

/// A checked table: its groups parsed once, at open.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    width: usize,
    groups: Vec<Group>,
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
        let short = |needed: usize| SectionError::Short {
            what: "IP table",
            needed: needed as u64,
            len: s.len() as u64,
        };
        let n = le::u32(s, 0).ok_or(short(8))? as usize;
        let w = le::u32(s, 4).ok_or(short(8))? as usize;
        if w != width {
            return Err(SectionError::Mismatch {
                what: "address width",
                expected: width as u64,
                found: w as u64,
            });
        }
        if n > 129 {
            return Err(SectionError::OutOfRange {
                what: "prefix groups",
                value: n as u64,
                limit: 129,
            });
        }
        let rows_at = 8 + n * 12;
        let mut groups = Vec::with_capacity(n);
        let mut total = 0usize;
        for g in 0..n {
            let at = 8 + g * 12;
            let len = le::u32(s, at).ok_or(short(rows_at))?;
            let first = le::u32(s, at + 4).ok_or(short(rows_at))? as usize;
            let rows = le::u32(s, at + 8).ok_or(short(rows_at))? as usize;
            if len > (width * 8) as u32 {
                return Err(SectionError::OutOfRange {
                    what: "prefix length",
                    value: len as u64,
                    limit: (width * 8) as u64,
                });
            }
            if first != total {
                return Err(SectionError::Mismatch {
                    what: "group start row",
                    expected: total as u64,
                    found: first as u64,
                });
            }
            total += rows;
            groups.push(Group { len, first, rows });
        }
        let expected = rows_at as u64 + total as u64 * (width as u64 + 4);
        if s.len() as u64 != expected {
            return Err(SectionError::Mismatch {
                what: "IP table length",
                expected,
                found: s.len() as u64,
            });
        }
        Ok(Layout {
            width,
            groups,
            rows: section.start + rows_at..section.end,
        })
    }

    #[inline]
    pub fn view<'a>(&'a self, bytes: &'a [u8]) -> Table<'a> {
        Table {
            width: self.width,
            groups: &self.groups,
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

#[derive(Clone, Copy)]
pub struct Table<'a> {
    width: usize,
    groups: &'a [Group],
    rows: &'a [u8],
}

impl Table<'_> {
    fn net(&self, row: usize) -> Option<(u128, u32)> {
        let at = row * (self.width + 4);
        Some((
            le::uint(self.rows, at, self.width)?,
            le::u32(self.rows, at + self.width)?,
        ))
    }

    /// Call `f` with the posting ref of every block holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: u128, mut f: impl FnMut(u32)) {
        let bits = (self.width * 8) as u32;
        for g in self.groups {
            let host = bits.saturating_sub(g.len);
            let masked = if host >= 128 { 0 } else { addr >> host << host };
            let (mut lo, mut hi) = (g.first, g.first + g.rows);
            while lo < hi {
                let mid = (lo + hi) / 2;
                let Some((net, posting)) = self.net(mid) else {
                    return;
                };
                match net.cmp(&masked) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => {
                        f(posting);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_networks_all_match() {
        let mut p = postings::Builder::default();
        let entries = vec![
            (8, 0x0a00_0000, 1),
            (16, 0x0a01_0000, 2),
            (32, 0x0a01_0203, 3),
            (32, 0x0a01_0203, 4),
            (0, 0, 5),
        ];
        let bytes = build(4, entries, &mut p);
        let post = p.into_bytes();
        let layout = Layout::check(&bytes, 0..bytes.len(), 4).expect("valid");
        let t = layout.view(&bytes);
        let mut got = Vec::new();
        t.lookup(0x0a01_0203, |r| {
            postings::Postings(&post).for_each(r, |id| got.push(id));
        });
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        got.clear();
        t.lookup(0x0b00_0000, |r| got.push(r));
        assert_eq!(got, vec![5]);
        assert!(Layout::check(&bytes, 0..bytes.len() - 2, 4).is_err());
    }
}
