//! A hashed table of byte-string keys (exact URLs, domains, raw strings, and the host
//! buckets of URL masks), stored so it is used in place from the mapped file.
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
//! Linear probing at a load factor of at most 0.7. The slot is picked by the low bits
//! of `xxh3_64(key)`, the fingerprint is the high 32 bits with the lowest bit forced on
//! (so it is never 0); xxh3's output is fixed by its specification, so files stay
//! readable across builds.

use xxhash_rust::xxh3::xxh3_64;

const HEAD: usize = 16;
const SLOT: usize = 16;

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
    out[..8].copy_from_slice(&(slots as u64).to_le_bytes());
    out[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    out.reserve(keys_len);
    let mask = slots - 1;
    for (key, posting) in entries {
        let h = xxh3_64(key);
        let mut i = h as usize & mask;
        loop {
            let at = HEAD + i * SLOT;
            if out[at..at + 4] == [0, 0, 0, 0] {
                let off = (out.len() - HEAD - slots * SLOT) as u32;
                out[at..at + 4].copy_from_slice(&fingerprint(h).to_le_bytes());
                out[at + 4..at + 8].copy_from_slice(&posting.to_le_bytes());
                out[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
                out[at + 12..at + 16].copy_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                break;
            }
            i = (i + 1) & mask;
        }
    }
    Ok(out)
}

/// Read side over the table bytes.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    mask: usize,
    slots: &'a [u8],
    keys: &'a [u8],
    len: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Table<'a> {
    pub const EMPTY: Table<'static> = Table {
        mask: 0,
        slots: &[],
        keys: &[],
        len: 0,
    };

    pub fn open(section: &'a [u8]) -> Result<Table<'a>, String> {
        let head = section.get(..HEAD).ok_or("header missing")?;
        let slots = u64::from_le_bytes(head[..8].try_into().map_err(|_| "header")?) as usize;
        let len = u64::from_le_bytes(head[8..16].try_into().map_err(|_| "header")?) as usize;
        if !slots.is_power_of_two() || len > slots {
            return Err(format!("{slots} slots for {len} keys"));
        }
        let slots_end = slots
            .checked_mul(SLOT)
            .and_then(|n| n.checked_add(HEAD))
            .filter(|&end| end <= section.len())
            .ok_or_else(|| format!("{slots} slots do not fit in {} bytes", section.len()))?;
        Ok(Table {
            mask: slots - 1,
            slots: &section[HEAD..slots_end],
            keys: &section[slots_end..],
            len,
        })
    }

    /// The posting ref stored for `key`.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let h = xxh3_64(key);
        let fp = fingerprint(h);
        let mut i = h as usize & self.mask;
        // A table is never full (load ≤ 0.7), so an empty slot ends every probe; the
        // bound only guards against a damaged file.
        for _ in 0..=self.mask {
            let s = self.slots.get(i * SLOT..i * SLOT + SLOT)?;
            let f = u32_at(s, 0);
            if f == 0 {
                return None;
            }
            if f == fp {
                let off = u32_at(s, 8) as usize;
                let len = u32_at(s, 12) as usize;
                if self.keys.get(off..off + len) == Some(key) {
                    return Some(u32_at(s, 4));
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = Table::open(&bytes).expect("open");
        assert_eq!(t.len(), 5000);
        for (k, v) in &entries {
            assert_eq!(t.get(k), Some(*v));
        }
        assert_eq!(t.get(b"key-5000.example/path"), None);
        assert_eq!(t.get(b""), None);
        let empty = build(&[]).expect("build");
        assert_eq!(Table::open(&empty).expect("open").get(b"x"), None);
        assert!(Table::open(&bytes[..100]).is_err());
    }
}
