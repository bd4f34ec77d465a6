//! Posting lists: which records (or masks) a key leads to.
//!
//! A key found in an fst or a table carries a 32-bit *posting ref*. Most keys belong
//! to one record, so a ref with the top bit clear *is* that record id and costs no
//! extra read. With the top bit set, the low 31 bits index the postings section (in
//! u32 units), where `count, id_1 … id_count` follow, ids ascending.

use super::format::le;

pub const LIST: u32 = 0x8000_0000;

/// Builds the postings section while keys are assigned their refs.
#[derive(Default)]
pub struct Builder {
    data: Vec<u32>,
}

impl Builder {
    /// The ref for `ids` (sorted, deduplicated, non-empty).
    pub fn add(&mut self, ids: &[u32]) -> u32 {
        if let [only] = ids {
            if *only < LIST {
                return *only;
            }
        }
        let at = self.data.len() as u32;
        self.data.push(ids.len() as u32);
        self.data.extend_from_slice(ids);
        at | LIST
    }

    /// Turn `(key, id)` pairs into one `(key, ref)` per distinct key. The pairs are
    /// sorted here (by key, then id) and duplicates dropped, so each list comes out
    /// ascending, as lookups expect.
    pub fn group<K: Ord + Clone>(&mut self, mut pairs: Vec<(K, u32)>) -> Vec<(K, u32)> {
        pairs.sort_unstable();
        pairs.dedup();
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let mut rest = &pairs[..];
        while let Some((first, _)) = rest.first() {
            let n = rest.iter().take_while(|(k, _)| k == first).count();
            ids.clear();
            ids.extend(rest[..n].iter().map(|(_, id)| *id));
            out.push((first.clone(), self.add(&ids)));
            rest = &rest[n..];
        }
        out
    }

    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 4);
        for v in self.data {
            le::put_u32(&mut out, v);
        }
        out
    }
}

/// Read side: the postings section bytes.
#[derive(Clone, Copy)]
pub struct Postings<'a>(pub &'a [u8]);

impl Postings<'_> {
    /// Call `f` for every id behind `r`. A ref pointing outside the section (only a
    /// damaged file that slipped past the checksum could hold one) yields nothing.
    #[inline]
    pub fn for_each(&self, r: u32, mut f: impl FnMut(u32)) {
        if r & LIST == 0 {
            f(r);
            return;
        }
        let at = (r & !LIST) as usize;
        let Some(n) = le::u32(self.0, at * 4) else {
            return;
        };
        for i in 0..n as usize {
            match le::u32(self.0, (at + 1 + i) * 4) {
                Some(id) => f(id),
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ids_are_inline_and_lists_round_trip() {
        let mut b = Builder::default();
        assert_eq!(b.add(&[7]), 7);
        let r = b.add(&[1, 2, 3]);
        assert!(r & LIST != 0);
        let bytes = b.into_bytes();
        let mut got = Vec::new();
        Postings(&bytes).for_each(r, |id| got.push(id));
        assert_eq!(got, vec![1, 2, 3]);
        got.clear();
        Postings(&bytes).for_each(LIST | 999, |id| got.push(id));
        assert!(got.is_empty());
    }

    #[test]
    fn grouping_sorts_dedups_and_keeps_one_ref_per_key() {
        let mut b = Builder::default();
        let grouped = b.group(vec![("b", 5), ("a", 9), ("b", 2), ("b", 5), ("a", 1)]);
        let bytes = std::mem::take(&mut b).into_bytes();
        let lists: Vec<(&str, Vec<u32>)> = grouped
            .iter()
            .map(|(k, r)| {
                let mut ids = Vec::new();
                Postings(&bytes).for_each(*r, |id| ids.push(id));
                (*k, ids)
            })
            .collect();
        assert_eq!(lists, vec![("a", vec![1, 9]), ("b", vec![2, 5])]);
    }
}
