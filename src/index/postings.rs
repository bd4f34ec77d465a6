//! Posting lists: which records (or masks) a key leads to.
//!
//! A key found in an fst or a table carries a 32-bit *posting ref*. Most keys belong
//! to one record, so a ref with the top bit clear *is* that record id and costs no
//! extra read. With the top bit set, the low 31 bits index the postings section (in
//! u32 units), where `count, id_1 … id_count` follow, ids ascending.

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

    pub fn into_bytes(self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Read side: the postings section bytes.
#[derive(Clone, Copy)]
pub struct Postings<'a>(pub &'a [u8]);

impl Postings<'_> {
    fn u32(&self, i: usize) -> Option<u32> {
        let b = self.0.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Call `f` for every id behind `r`. A ref pointing outside the section (only a
    /// damaged file that slipped past the checksum could hold one) yields nothing.
    pub fn for_each(&self, r: u32, mut f: impl FnMut(u32)) {
        if r & LIST == 0 {
            f(r);
            return;
        }
        let at = (r & !LIST) as usize;
        let Some(n) = self.u32(at) else { return };
        for i in 0..n as usize {
            match self.u32(at + 1 + i) {
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
}
