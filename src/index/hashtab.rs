//! A hashed table of byte-string keys (exact URLs, domains, raw strings, and the host
//! buckets of URL masks), stored so it is used in place from the index bytes.
//!
//! Why not the fst: an fst lookup decodes one node per key byte, and a normalized URL
//! is 20–80 bytes; measured on 1M URL masks, the fst-only design spent 35 % of its
//! time in node decoding and answered 228k URL lookups/s per core (README). A probe
//! here is one xxh3 hash, one 16-byte slot (usually one cache miss) and one key
//! compare. The fst stays where it wins: walking prefixes of rare mask shapes.
//!
//! ```text
//! u64 slot count (a power of two)   u64 key count
//! slots × 16 bytes: u32 fingerprint (0 = empty), u32 posting ref, u32 key offset, u32 key length
//! key bytes, concatenated
//! ```
//!
//! Every key starts with a [`Tag`] byte saying what kind of entry it is, so URLs,
//! domains, raw strings and mask buckets share one table without colliding.
//!
//! Linear probing at a load factor of at most 0.7. The slot is picked by the low bits
//! of `xxh3_64(key)`, the fingerprint is the high 32 bits with the lowest bit forced on
//! (so it is never 0); xxh3's output is fixed by its specification, so files stay
//! readable across builds.

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64;

use super::format::{le, SectionError};

const HEAD: usize = 16;
const SLOT: usize = 16;

/// The first byte of every key: what kind of entry the rest of the key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// A normalized exact URL.
    Url = b'u',
    /// A normalized domain (matches itself and its subdomains).
    Domain = b'd',
    /// A raw value, as sent.
    Raw = b'r',
    /// The bucket of URL masks whose host part is this literal host.
    MaskHost = b'h',
    /// The bucket of `*.domain…` masks for this domain.
    MaskSubdomain = b's',
}

/// Write `tag` + `value` into `key` (cleared first): the table's key for the entry.
#[inline]
pub fn key_into(key: &mut Vec<u8>, tag: Tag, value: &[u8]) {
    key.clear();
    key.reserve(value.len() + 1);
    key.push(tag as u8);
    key.extend_from_slice(value);
}

/// An owned key, for the compile side.
pub fn key(tag: Tag, value: &[u8]) -> Box<[u8]> {
    let mut k = Vec::new();
    key_into(&mut k, tag, value);
    k.into_boxed_slice()
}

fn fingerprint(h: u64) -> u32 {
    (h >> 32) as u32 | 1
}

/// Build the table from (key, posting ref) pairs with distinct keys.
pub fn build(entries: &[(Box<[u8]>, u32)]) -> Result<Vec<u8>, String> {
    let mut slots = 16usize;
    while slots * 7 < entries.len() * 10 {
        slots *= 2;
    }
    let keys_len: usize = entries.iter().map(|(k, _)| k.len()).sum();
    if keys_len > u32::MAX as usize {
        return Err(format!(
            "{keys_len} bytes of keys; the table holds at most 4 GiB"
        ));
    }
    let mut out = vec![0u8; HEAD + slots * SLOT];
    le::set_u64(&mut out, 0, slots as u64);
    le::set_u64(&mut out, 8, entries.len() as u64);
    out.reserve(keys_len);
    let mask = slots - 1;
    for (key, posting) in entries {
        let h = xxh3_64(key);
        let mut i = h as usize & mask;
        loop {
            let at = HEAD + i * SLOT;
            if out[at..at + 4] == [0, 0, 0, 0] {
                let off = (out.len() - HEAD - slots * SLOT) as u32;
                le::set_u32(&mut out, at, fingerprint(h));
                le::set_u32(&mut out, at + 4, *posting);
                le::set_u32(&mut out, at + 8, off);
                le::set_u32(&mut out, at + 12, key.len() as u32);
                out.extend_from_slice(key);
                break;
            }
            i = (i + 1) & mask;
        }
    }
    Ok(out)
}

/// Where a checked table lies in the index bytes; made once at open.
#[derive(Clone, Debug)]
pub struct Layout {
    mask: usize,
    slots: Range<usize>,
    keys: Range<usize>,
    len: usize,
}

impl Layout {
    /// Check the table in `bytes[section]` and record where its parts lie.
    pub fn check(bytes: &[u8], section: Range<usize>) -> Result<Layout, SectionError> {
        let s = &bytes[section.clone()];
        let short = |needed: u64| SectionError::Short {
            what: "hashed table",
            needed,
            len: s.len() as u64,
        };
        let slots = le::u64(s, 0).ok_or(short(HEAD as u64))? as usize;
        let len = le::u64(s, 8).ok_or(short(HEAD as u64))? as usize;
        if !slots.is_power_of_two() {
            return Err(SectionError::Malformed {
                what: "slot count",
                requirement: "a power of two",
            });
        }
        if len > slots {
            return Err(SectionError::OutOfRange {
                what: "key count",
                value: len as u64,
                limit: slots as u64,
            });
        }
        let slots_end = slots
            .checked_mul(SLOT)
            .and_then(|n| n.checked_add(HEAD))
            .filter(|&end| end <= s.len())
            .ok_or(short((slots as u64).saturating_mul(SLOT as u64)))?;
        Ok(Layout {
            mask: slots - 1,
            slots: section.start + HEAD..section.start + slots_end,
            keys: section.start + slots_end..section.end,
            len,
        })
    }

    /// The table over the same bytes `check` saw.
    #[inline]
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Table<'a> {
        Table {
            mask: self.mask,
            slots: bytes.get(self.slots.clone()).unwrap_or(&[]),
            keys: bytes.get(self.keys.clone()).unwrap_or(&[]),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Read side over the table bytes.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    mask: usize,
    slots: &'a [u8],
    keys: &'a [u8],
}

impl Table<'_> {
    /// Ask the CPU to start loading the slot where a probe for `key` begins, so that
    /// several probes' cache misses overlap instead of following one another. A hint
    /// only: it changes no result.
    #[inline]
    pub fn prefetch(&self, key: &[u8]) {
        let i = xxh3_64(key) as usize & self.mask;
        if let Some(slot) = self.slots.get(i * SLOT..) {
            prefetch_read(slot.as_ptr());
        }
    }

    /// The posting ref stored for `key`.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let h = xxh3_64(key);
        let fp = fingerprint(h);
        let mut i = h as usize & self.mask;
        // A table is never full (load ≤ 0.7), so an empty slot ends every probe; the
        // bound only guards against a damaged file.
        for _ in 0..=self.mask {
            let s = self.slots.get(i * SLOT..i * SLOT + SLOT)?;
            let f = le::u32_or_zero(s, 0);
            if f == 0 {
                return None;
            }
            if f == fp {
                let off = le::u32_or_zero(s, 8) as usize;
                let len = le::u32_or_zero(s, 12) as usize;
                if self.keys.get(off..off + len) == Some(key) {
                    return Some(le::u32_or_zero(s, 4));
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// A prefetch hint for the cache line at `p` (nothing on other architectures).
#[inline(always)]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing into the program: any address
    // is allowed, and `p` points into a live slice anyway.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(bytes: &[u8]) -> Result<Table<'_>, SectionError> {
        Ok(Layout::check(bytes, 0..bytes.len())?.view(bytes))
    }

    #[test]
    fn finds_every_key_and_nothing_else() {
        let entries: Vec<(Box<[u8]>, u32)> = (0..5000u32)
            .map(|i| {
                (
                    format!("key-{i}.example/path")
                        .into_bytes()
                        .into_boxed_slice(),
                    i,
                )
            })
            .collect();
        let bytes = build(&entries).expect("build");
        let layout = Layout::check(&bytes, 0..bytes.len()).expect("layout");
        assert_eq!(layout.len(), 5000);
        let t = layout.view(&bytes);
        for (k, v) in &entries {
            assert_eq!(t.get(k), Some(*v));
        }
        assert_eq!(t.get(b"key-5000.example/path"), None);
        assert_eq!(t.get(b""), None);
        let empty = build(&[]).expect("build");
        assert_eq!(open(&empty).expect("open").get(b"x"), None);
        assert!(open(&bytes[..100]).is_err());
    }

    #[test]
    fn tags_keep_kinds_apart() {
        let entries = vec![
            (key(Tag::Url, b"a.com"), 1),
            (key(Tag::Domain, b"a.com"), 2),
        ];
        let bytes = build(&entries).expect("build");
        let t = open(&bytes).expect("open");
        let mut k = Vec::new();
        key_into(&mut k, Tag::Domain, b"a.com");
        assert_eq!(t.get(&k), Some(2));
        key_into(&mut k, Tag::Raw, b"a.com");
        assert_eq!(t.get(&k), None);
    }
}
