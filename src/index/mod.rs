//! The compiled index: opened by mapping the file, checked once, then used in place.
//!
//! One file holds one or more feeds (see [`format`] for the byte layout). A lookup
//! goes to the structure that suits the indicator:
//!
//! | indicator | structure |
//! | --- | --- |
//! | exact URL, domain, raw string | [`hashtab`]: one hashed table keyed by a kind byte (`u`, `d`, `r`) + normalized value |
//! | URL mask | [`masks`]: host and subdomain buckets in the same table; fsts and a small DFA for rare shapes |
//! | hash | [`hashes`]: sorted binary digests with a bucket directory |
//! | IP, CIDR, range | [`ip`]: per-prefix-length sorted networks |
//!
//! Every structure yields *posting refs* ([`postings`]) that resolve to record ids.
//! Record ids follow feed order and row order, so sorting the ids of one lookup gives
//! the answer order SPEC §2 asks for. A record's answer context was rendered at
//! compile time ([`records`]); serving copies it.
//!
//! An [`Index`] never changes after open and holds no locks; the server shares it by
//! `Arc` and swaps it whole on reload. [`IndexSet`] serves several files together, in
//! the order given.

pub mod format;
pub mod hashes;
pub mod hashtab;
pub mod ip;
pub mod masks;
pub mod postings;
pub mod records;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex_automata::dfa::dense;

use crate::indicator::{self, Family, Kind};
pub use format::IndexError;
use format::{Header, SectionId};
use postings::Postings;
use records::{ArchivedRecords, Meta};

/// The bytes of an index: a read-only file mapping, or a buffer compiled in memory.
pub enum Storage {
    Mapped(memmap2::Mmap),
    Owned(rkyv::util::AlignedVec<16>),
}

impl AsRef<[u8]> for Storage {
    fn as_ref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A section of the storage, owning a handle to it (so the fsts need no lifetimes).
#[derive(Clone)]
pub struct Bytes {
    storage: Arc<Storage>,
    range: Range<usize>,
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &(*self.storage).as_ref()[self.range.clone()]
    }
}

/// Per-thread buffers, so a lookup allocates nothing once warmed up.
#[derive(Default)]
pub struct Scratch {
    norm: Vec<u8>,
    key: Vec<u8>,
    ids: Vec<u32>,
}

/// Counts shown by `inspect` and logged at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub exact_keys: u64,
    pub masks: u64,
    pub dfa_masks: u64,
    pub md5: u64,
    pub sha1: u64,
    pub sha256: u64,
    pub ipv4_blocks: u64,
    pub ipv6_blocks: u64,
}

pub struct Index {
    path: PathBuf,
    storage: Arc<Storage>,
    header: Header,
    meta: Meta,
    categories: Vec<Box<[u8]>>,
    feed_starts: Vec<u32>,
    offsets: Range<usize>,
    text: Range<usize>,
    record_count: usize,
    postings: Range<usize>,
    exact: Range<usize>,
    /// Which kinds this file holds, so a set of files skips the ones that cannot hit.
    has_urls: bool,
    has_domains: bool,
    has_raw: bool,
    mask_prefix: fst::raw::Fst<Bytes>,
    mask_suffix: fst::raw::Fst<Bytes>,
    mask_table: Range<usize>,
    dfa_ids: Range<usize>,
    dfa: Option<dense::DFA<Vec<u32>>>,
    digests: [Range<usize>; 3],
    ips: [Range<usize>; 2],
    counts: Counts,
}

const DIGEST_SECTIONS: [SectionId; 3] = [SectionId::Md5, SectionId::Sha1, SectionId::Sha256];

impl Index {
    /// Map and check an index file.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let io = |source| IndexError::Io {
            file: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to this process. Another process
        // truncating the file while it is mapped would fault on access; `compile` never
        // does that (it writes a new file and renames it over the old one).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Index::from_storage(path, Storage::Mapped(map))
    }

    /// Use bytes compiled in memory (`serve -f`), with the same checks as a file.
    pub fn from_bytes(name: &Path, bytes: &[u8]) -> Result<Index, IndexError> {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Index::from_storage(name, Storage::Owned(v))
    }

    fn from_storage(path: &Path, storage: Storage) -> Result<Index, IndexError> {
        let storage = Arc::new(storage);
        let bytes: &[u8] = (*storage).as_ref();
        let header = format::check(path, bytes)?;
        let corrupt = |section: SectionId, reason: String| IndexError::Corrupt {
            file: path.to_path_buf(),
            section: section.name(),
            reason,
        };
        let section = |id: SectionId| {
            header
                .section(id)
                .ok_or_else(|| corrupt(id, "section missing".into()))
        };

        let meta_range = section(SectionId::Meta)?;
        let meta: Meta = rkyv::from_bytes::<Meta, rkyv::rancor::Error>(&bytes[meta_range])
            .map_err(|e| corrupt(SectionId::Meta, e.to_string()))?;
        let mut feed_starts = Vec::with_capacity(meta.feeds.len());
        let mut categories = Vec::with_capacity(meta.feeds.len());
        for f in &meta.feeds {
            feed_starts.push(f.first_record);
            categories.push(f.category.as_bytes().into());
        }

        let rec_range = section(SectionId::Records)?;
        let rec_bytes = &bytes[rec_range];
        let records = rkyv::access::<ArchivedRecords, rkyv::rancor::Error>(rec_bytes)
            .map_err(|e| corrupt(SectionId::Records, e.to_string()))?;
        let base = bytes.as_ptr() as usize;
        let span = |ptr: *const u8, len: usize| {
            let start = ptr as usize - base;
            start..start + len
        };
        let offsets = span(records.offsets.as_ptr().cast(), records.offsets.len() * 8);
        let text = span(records.text.as_ptr(), records.text.len());
        let record_count = records.offsets.len().saturating_sub(1);
        if meta
            .feeds
            .iter()
            .any(|f| (f.first_record as usize + f.records as usize) > record_count)
        {
            return Err(corrupt(
                SectionId::Meta,
                "feed record range beyond the records".into(),
            ));
        }

        let fst_bytes = |id: SectionId| -> Result<Bytes, IndexError> {
            Ok(Bytes {
                storage: storage.clone(),
                range: section(id)?,
            })
        };
        let exact = section(SectionId::Exact)?;
        let exact_keys = hashtab::Table::open(&bytes[exact.clone()])
            .map_err(|e| corrupt(SectionId::Exact, e))?
            .len();
        let any = |kind: Kind| {
            meta.feeds
                .iter()
                .any(|f| f.entries.get(kind.index()).copied().unwrap_or(0) > 0)
        };
        let (has_urls, has_domains, has_raw) = (any(Kind::Url), any(Kind::Domain), any(Kind::Raw));
        let mask_prefix = fst::raw::Fst::new(fst_bytes(SectionId::MaskPrefix)?)
            .map_err(|e| corrupt(SectionId::MaskPrefix, e.to_string()))?;
        let mask_suffix = fst::raw::Fst::new(fst_bytes(SectionId::MaskSuffix)?)
            .map_err(|e| corrupt(SectionId::MaskSuffix, e.to_string()))?;

        let mask_table = section(SectionId::Masks)?;
        let mask_count = bytes[mask_table.clone()]
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| corrupt(SectionId::Masks, "mask count missing".into()))?;
        if mask_count
            .checked_mul(16)
            .map_or(true, |n| n + 8 > mask_table.len() as u64)
        {
            return Err(corrupt(
                SectionId::Masks,
                format!("{mask_count} rows do not fit"),
            ));
        }
        let dfa_range = section(SectionId::MaskDfa)?;
        let (ids, dfa) = masks::open_dfa(&bytes[dfa_range.clone()])
            .map_err(|e| corrupt(SectionId::MaskDfa, e))?;
        let dfa_ids = dfa_range.start + ids.start..dfa_range.start + ids.end;

        let mut counts = Counts {
            records: record_count as u64,
            exact_keys: exact_keys as u64,
            masks: mask_count,
            dfa_masks: (dfa_ids.len() / 4) as u64,
            ..Counts::default()
        };
        let mut digests: [Range<usize>; 3] = Default::default();
        for (i, id) in DIGEST_SECTIONS.into_iter().enumerate() {
            let r = section(id)?;
            let t = hashes::Table::open(&bytes[r.clone()], hashes::WIDTHS[i])
                .map_err(|e| corrupt(id, e))?;
            let n = t.len() as u64;
            match i {
                0 => counts.md5 = n,
                1 => counts.sha1 = n,
                _ => counts.sha256 = n,
            }
            digests[i] = r;
        }
        let mut ips: [Range<usize>; 2] = Default::default();
        for (i, (id, width)) in [(SectionId::Ipv4, 4), (SectionId::Ipv6, 16)]
            .into_iter()
            .enumerate()
        {
            let r = section(id)?;
            let t = ip::Table::open(&bytes[r.clone()], width).map_err(|e| corrupt(id, e))?;
            if i == 0 {
                counts.ipv4_blocks = t.len() as u64;
            } else {
                counts.ipv6_blocks = t.len() as u64;
            }
            ips[i] = r;
        }
        let postings = section(SectionId::Postings)?;

        Ok(Index {
            path: path.to_path_buf(),
            storage: storage.clone(),
            header,
            meta,
            categories,
            feed_starts,
            offsets,
            text,
            record_count,
            postings,
            exact,
            has_urls,
            has_domains,
            has_raw,
            mask_prefix,
            mask_suffix,
            mask_table,
            dfa_ids,
            dfa,
            digests,
            ips,
            counts,
        })
    }

    fn bytes(&self) -> &[u8] {
        (*self.storage).as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn size(&self) -> usize {
        self.bytes().len()
    }

    /// Category and pre-rendered context of a record.
    pub fn record(&self, id: u32) -> (&[u8], &[u8]) {
        let feed = self
            .feed_starts
            .partition_point(|&s| s <= id)
            .saturating_sub(1);
        let category = self.categories.get(feed).map_or(&[][..], |c| &c[..]);
        let bytes = self.bytes();
        let offsets = &bytes[self.offsets.clone()];
        let at = id as usize * 8;
        let read = |i: usize| {
            offsets.get(i..i + 8).map(|b| {
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize
            })
        };
        let context = match (read(at), read(at + 8)) {
            (Some(a), Some(b)) => bytes[self.text.clone()].get(a..b).unwrap_or(&[]),
            _ => &[],
        };
        (category, context)
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    fn exact_table(&self) -> hashtab::Table<'_> {
        // Validated at open; should it ever fail here, an empty table is a safe answer.
        hashtab::Table::open(&self.bytes()[self.exact.clone()]).unwrap_or(hashtab::Table::EMPTY)
    }

    fn exact_get(
        &self,
        kind: u8,
        value: &[u8],
        key: &mut Vec<u8>,
        postings: Postings<'_>,
        ids: &mut Vec<u32>,
    ) {
        key.clear();
        key.push(kind);
        key.extend_from_slice(value);
        if let Some(r) = self.exact_table().get(key) {
            postings.for_each(r, |id| ids.push(id));
        }
    }

    /// Add to `ids` the (unsorted, possibly repeated) record ids matching one prepared
    /// indicator.
    fn collect(&self, q: &Prepared<'_>, key: &mut Vec<u8>, ids: &mut Vec<u32>) {
        let bytes = self.bytes();
        let postings = Postings(&bytes[self.postings.clone()]);
        // Raw entries answer to the value of any key, as sent.
        if self.has_raw {
            self.exact_get(b'r', q.raw, key, postings, ids);
        }
        if let Some(url) = q.url {
            self.collect_url(url, key, postings, ids);
        }
        if let Some((digest, len)) = &q.digest {
            self.collect_hash(&digest[..*len], postings, ids);
        }
        if let Some((family, addr)) = q.ip {
            self.collect_ip(family, addr, postings, ids);
        }
    }

    fn collect_url(
        &self,
        url: &[u8],
        key: &mut Vec<u8>,
        postings: Postings<'_>,
        ids: &mut Vec<u32>,
    ) {
        if self.has_urls {
            self.collect_url_entries(url, key, postings, ids);
        }
        if !self.has_domains {
            return;
        }
        // Domain entries match the host and every parent domain of it.
        let (host, _) = masks::split_host(url);
        let mut rest = host;
        loop {
            self.exact_get(b'd', rest, key, postings, ids);
            match memchr::memchr(b'.', rest) {
                Some(dot) => rest = &rest[dot + 1..],
                None => break,
            }
        }
    }

    /// Exact URLs and masks.
    fn collect_url_entries(
        &self,
        url: &[u8],
        key: &mut Vec<u8>,
        postings: Postings<'_>,
        ids: &mut Vec<u32>,
    ) {
        self.exact_get(b'u', url, key, postings, ids);
        let bytes = self.bytes();
        let matcher = masks::Matcher {
            table: &bytes[self.mask_table.clone()],
            buckets: self.exact_table(),
            prefix: &self.mask_prefix,
            suffix: &self.mask_suffix,
            dfa_ids: &bytes[self.dfa_ids.clone()],
            dfa: self.dfa.as_ref(),
        };
        matcher.lookup(url, postings, key, ids);
    }

    fn collect_hash(&self, digest: &[u8], postings: Postings<'_>, ids: &mut Vec<u32>) {
        let which = hashes::table_for(digest.len());
        let bytes = self.bytes();
        if let Ok(t) =
            hashes::Table::open(&bytes[self.digests[which].clone()], hashes::WIDTHS[which])
        {
            if let Some(r) = t.get(digest) {
                postings.for_each(r, |id| ids.push(id));
            }
        }
    }

    fn collect_ip(&self, family: Family, addr: u128, postings: Postings<'_>, ids: &mut Vec<u32>) {
        let (which, width) = match family {
            Family::V4 => (0, 4),
            Family::V6 => (1, 16),
        };
        let bytes = self.bytes();
        if let Ok(t) = ip::Table::view(&bytes[self.ips[which].clone()], width) {
            t.lookup(addr, |r| postings.for_each(r, |id| ids.push(id)));
        }
    }
}

/// An indicator normalized once for every index of a set.
struct Prepared<'a> {
    /// The value as sent (trimmed), for raw entries.
    raw: &'a [u8],
    /// The normalized URL (`url`) or host (`domain`).
    url: Option<&'a [u8]>,
    digest: Option<([u8; 32], usize)>,
    ip: Option<(Family, u128)>,
}

impl<'a> Prepared<'a> {
    fn new(kind: Kind, raw: &'a [u8], norm: &'a mut Vec<u8>) -> Prepared<'a> {
        let digest = |v: &[u8]| {
            let mut d = [0u8; 32];
            indicator::hash_digest(v, &mut d).map(|len| (d, len))
        };
        let mut q = Prepared {
            raw,
            url: None,
            digest: None,
            ip: None,
        };
        match kind {
            Kind::Url => {
                // Operators map hashes and addresses into `url` too.
                match indicator::detect(raw) {
                    Kind::Hash => q.digest = digest(raw),
                    Kind::Ip => q.ip = indicator::parse_ip(raw),
                    _ => {}
                }
                indicator::normalize_url(raw, norm);
                q.url = (!norm.is_empty()).then_some(&norm[..]);
            }
            Kind::Domain => {
                q.url = indicator::normalize_domain(raw, norm).then_some(&norm[..]);
            }
            Kind::Ip => q.ip = indicator::parse_ip(raw),
            Kind::Hash => q.digest = digest(raw),
            Kind::Raw => {}
        }
        q
    }
}

/// One matched record: which index of the set, which record in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub part: u32,
    pub record: u32,
}

/// The indexes served together, in the order given; this is what the server swaps.
pub struct IndexSet {
    parts: Vec<Index>,
}

impl IndexSet {
    pub fn new(parts: Vec<Index>) -> IndexSet {
        IndexSet { parts }
    }

    pub fn parts(&self) -> &[Index] {
        &self.parts
    }

    /// Look one indicator up. Appends at most `max_hits` hits to `hits` in answer
    /// order and returns how many there were before truncation.
    pub fn lookup(
        &self,
        kind: Kind,
        value: &[u8],
        scratch: &mut Scratch,
        max_hits: usize,
        hits: &mut Vec<Hit>,
    ) -> usize {
        let value = value.trim_ascii();
        if value.is_empty() {
            return 0;
        }
        let Scratch { norm, key, ids } = scratch;
        let q = Prepared::new(kind, value, norm);
        let mut found = 0;
        for (p, index) in self.parts.iter().enumerate() {
            ids.clear();
            index.collect(&q, key, ids);
            ids.sort_unstable();
            ids.dedup();
            for &id in ids.iter() {
                if (id as usize) >= index.record_count {
                    continue;
                }
                if found < max_hits {
                    hits.push(Hit {
                        part: p as u32,
                        record: id,
                    });
                }
                found += 1;
            }
        }
        found
    }

    /// Category and context of a hit.
    pub fn record(&self, hit: Hit) -> (&[u8], &[u8]) {
        match self.parts.get(hit.part as usize) {
            Some(i) => i.record(hit.record),
            None => (&[], &[]),
        }
    }

    pub fn record_count(&self) -> usize {
        self.parts.iter().map(Index::record_count).sum()
    }

    /// Entry counts over all the indexes of the set.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for c in self.parts.iter().map(Index::counts) {
            total.records += c.records;
            total.exact_keys += c.exact_keys;
            total.masks += c.masks;
            total.dfa_masks += c.dfa_masks;
            total.md5 += c.md5;
            total.sha1 += c.sha1;
            total.sha256 += c.sha256;
            total.ipv4_blocks += c.ipv4_blocks;
            total.ipv6_blocks += c.ipv6_blocks;
        }
        total
    }
}
