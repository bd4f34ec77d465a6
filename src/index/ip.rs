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

use std::collections::BTreeMap;

use super::postings;

/// Build a table of `width` (4 or 16) bytes from (prefix len, network, record id).
pub fn build(
    width: usize,
    entries: Vec<(u8, u128, u32)>,
    postings: &mut postings::Builder,
) -> Vec<u8> {
    let mut groups: BTreeMap<u8, BTreeMap<u128, Vec<u32>>> = BTreeMap::new();
    for (len, net, id) in entries {
        groups
            .entry(len)
            .or_default()
            .entry(net)
            .or_default()
            .push(id);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    let mut row = 0u32;
    for (len, nets) in &groups {
        out.extend_from_slice(&(*len as u32).to_le_bytes());
        out.extend_from_slice(&row.to_le_bytes());
        out.extend_from_slice(&(nets.len() as u32).to_le_bytes());
        row += nets.len() as u32;
    }
    for nets in groups.into_values() {
        for (net, mut ids) in nets {
            ids.sort_unstable();
            ids.dedup();
            out.extend_from_slice(&net.to_le_bytes()[..width]);
            out.extend_from_slice(&postings.add(&ids).to_le_bytes());
        }
    }
    out
}

#[derive(Clone, Copy)]
pub struct Table<'a> {
    width: usize,
    groups: &'a [u8],
    rows: &'a [u8],
}

impl<'a> Table<'a> {
    /// Parse and fully check a table (once, when the index is opened).
    pub fn open(section: &'a [u8], width: usize) -> Result<Table<'a>, String> {
        let t = Table::view(section, width)?;
        let total: usize = (0..t.groups.len() / 12).map(|g| t.group(g).2).sum();
        if t.rows.len() != total * (width + 4) {
            return Err(format!("{} row bytes for {total} rows", t.rows.len()));
        }
        Ok(t)
    }

    /// Parse the header only: what a lookup needs, in O(1), on a table that `open`
    /// has already checked. Row reads stay bounds-checked regardless.
    pub fn view(section: &'a [u8], width: usize) -> Result<Table<'a>, String> {
        if section.is_empty() {
            return Ok(Table {
                width,
                groups: &[],
                rows: &[],
            });
        }
        let head = section.get(..8).ok_or("header missing")?;
        let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let w = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if w != width || n > 129 {
            return Err(format!(
                "width {w}, {n} prefix groups: not a {width}-byte table"
            ));
        }
        let groups = section
            .get(8..8 + n * 12)
            .ok_or("group directory truncated")?;
        let rows = &section[8 + n * 12..];
        Ok(Table {
            width,
            groups,
            rows,
        })
    }

    fn group(&self, g: usize) -> (u32, usize, usize) {
        let b = &self.groups[g * 12..g * 12 + 12];
        let f = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (f(0), f(4) as usize, f(8) as usize)
    }

    fn net(&self, row: usize) -> Option<(u128, u32)> {
        let stride = self.width + 4;
        let r = self.rows.get(row * stride..(row + 1) * stride)?;
        let mut n = [0u8; 16];
        n[..self.width].copy_from_slice(&r[..self.width]);
        let p = &r[self.width..];
        Some((
            u128::from_le_bytes(n),
            u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        ))
    }

    /// Call `f` with the posting ref of every block holding `addr`.
    pub fn lookup(&self, addr: u128, mut f: impl FnMut(u32)) {
        let bits = (self.width * 8) as u32;
        for g in 0..self.groups.len() / 12 {
            let (len, first, count) = self.group(g);
            let host = bits.saturating_sub(len);
            let masked = if host >= 128 { 0 } else { addr >> host << host };
            let (mut lo, mut hi) = (first, first + count);
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
        let t = Table::open(&bytes, 4).expect("valid");
        let mut got = Vec::new();
        t.lookup(0x0a01_0203, |r| {
            postings::Postings(&post).for_each(r, |id| got.push(id));
        });
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        got.clear();
        t.lookup(0x0b00_0000, |r| got.push(r));
        assert_eq!(got, vec![5]);
    }
}
