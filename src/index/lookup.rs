//! Looking indicators up in opened indexes.
//!
//! An indicator is prepared once ([`Prepared`]: normalized URL or host, binary digest,
//! parsed address) and then asked of every index of the [`IndexSet`], in order. Each
//! structure yields posting refs that resolve to record ids; record ids follow feed
//! order and row order, so sorting the ids of one index gives the answer order SPEC
//! §2 asks for (indicator order, then feed order).

use super::hashes::Digest;
use super::hashtab::{self, Tag};
use super::masks;
use super::open::{Counts, Index};
use super::postings::Postings;
use crate::indicator::{self, Family, Kind};

/// Per-thread buffers, so a lookup allocates nothing once warmed up.
#[derive(Default)]
pub struct Scratch {
    norm: Vec<u8>,
    key: Vec<u8>,
    ids: Vec<u32>,
    masks: masks::Scratch,
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

impl Index {
    fn postings(&self) -> Postings<'_> {
        Postings(self.bytes().get(self.postings.clone()).unwrap_or(&[]))
    }

    fn exact_get(&self, tag: Tag, value: &[u8], key: &mut Vec<u8>, ids: &mut Vec<u32>) {
        hashtab::key_into(key, tag, value);
        if let Some(r) = self.exact.view(self.bytes()).get(key) {
            self.postings().for_each(r, |id| ids.push(id));
        }
    }

    /// Add to `ids` the (unsorted, possibly repeated) record ids matching one prepared
    /// indicator.
    fn collect(
        &self,
        q: &Prepared<'_>,
        key: &mut Vec<u8>,
        mask_scratch: &mut masks::Scratch,
        ids: &mut Vec<u32>,
    ) {
        // Raw entries answer to the value of any key, as sent.
        if self.holds.raw {
            self.exact_get(Tag::Raw, q.raw, key, ids);
        }
        if let Some(url) = q.url {
            self.collect_url(url, key, mask_scratch, ids);
        }
        if let Some((digest, len)) = &q.digest {
            self.collect_hash(&digest[..*len], ids);
        }
        if let Some((family, addr)) = q.ip {
            self.collect_ip(family, addr, ids);
        }
    }

    /// Start loading the table slots that [`Index::collect`] will probe for `q`: a
    /// URL probes its exact key, the mask buckets of its host and parent domains and
    /// the domain entries of the same names, 3–10 independent slots that would
    /// otherwise be fetched from memory one after another.
    fn prefetch(&self, q: &Prepared<'_>, key: &mut Vec<u8>) {
        let Some(url) = q.url else {
            return;
        };
        let (host, _) = masks::split_host(url);
        let table = self.exact.view(self.bytes());
        if self.holds.urls {
            hashtab::key_into(key, Tag::Url, url);
            table.prefetch(key);
            self.masks.prefetch(table, host, key);
        }
        if self.holds.domains {
            for name in masks::domains_of(host) {
                hashtab::key_into(key, Tag::Domain, name);
                table.prefetch(key);
            }
        }
    }

    fn collect_url(
        &self,
        url: &[u8],
        key: &mut Vec<u8>,
        mask_scratch: &mut masks::Scratch,
        ids: &mut Vec<u32>,
    ) {
        let split = masks::split_host(url);
        if self.holds.urls {
            // Exact URLs, then masks.
            self.exact_get(Tag::Url, url, key, ids);
            let bytes = self.bytes();
            self.masks.lookup(
                bytes,
                self.exact.view(bytes),
                split,
                self.postings(),
                mask_scratch,
                ids,
            );
        }
        if !self.holds.domains {
            return;
        }
        // Domain entries match the host and every parent domain of it.
        for name in masks::domains_of(split.0) {
            self.exact_get(Tag::Domain, name, key, ids);
        }
    }

    fn collect_hash(&self, digest: &[u8], ids: &mut Vec<u32>) {
        let Some(which) = Digest::of_len(digest.len()) else {
            return;
        };
        if let Some(r) = self.digests[which.index()].view(self.bytes()).get(digest) {
            self.postings().for_each(r, |id| ids.push(id));
        }
    }

    fn collect_ip(&self, family: Family, addr: u128, ids: &mut Vec<u32>) {
        let which = match family {
            Family::V4 => 0,
            Family::V6 => 1,
        };
        let postings = self.postings();
        self.ips[which]
            .view(self.bytes())
            .lookup(addr, |r| postings.for_each(r, |id| ids.push(id)));
    }
}

/// One matched record: which index of the set, which record in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub part: u32,
    pub record: u32,
}

/// The indexes served together, in the order given; this is what a reload swaps.
pub struct IndexSet {
    parts: Vec<Index>,
    /// Slot of each part's first feed: the feeds of the set, numbered in order.
    feed_base: Vec<usize>,
}

/// What a hit prints: its feed's category, its slot among the set's feeds, and the
/// record's pre-rendered context.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub category: &'a [u8],
    pub slot: usize,
    pub context: &'a [u8],
}

impl IndexSet {
    pub fn new(parts: Vec<Index>) -> IndexSet {
        let mut feed_base = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in &parts {
            feed_base.push(n);
            n += p.records.feeds();
        }
        IndexSet { parts, feed_base }
    }

    /// The category of every feed of the set, by slot.
    pub fn categories(&self) -> Vec<Box<[u8]>> {
        self.parts
            .iter()
            .flat_map(|p| (0..p.records.feeds()).map(|f| Box::from(p.records.category(f))))
            .collect()
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
        let Scratch {
            norm,
            key,
            ids,
            masks: mask_scratch,
        } = scratch;
        let q = Prepared::new(kind, value, norm);
        for index in &self.parts {
            index.prefetch(&q, key);
        }
        let mut found = 0;
        for (p, index) in self.parts.iter().enumerate() {
            ids.clear();
            index.collect(&q, key, mask_scratch, ids);
            ids.sort_unstable();
            ids.dedup();
            for &id in ids.iter() {
                if (id as usize) >= index.record_count() {
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

    /// What a hit prints.
    #[inline]
    pub fn record(&self, hit: Hit) -> Record<'_> {
        match self.parts.get(hit.part as usize) {
            Some(i) => {
                let (feed, context) = i.records.record(i.bytes(), hit.record);
                Record {
                    category: i.records.category(feed),
                    slot: self.feed_base[hit.part as usize] + feed,
                    context,
                }
            }
            None => Record {
                category: &[],
                slot: usize::MAX,
                context: &[],
            },
        }
    }

    /// What the HTTP API shows of a hit besides [`IndexSet::record`]: the feed's
    /// indicator field, and the exact rendition of the context when it has one.
    pub fn record_detail(&self, hit: Hit) -> (&[u8], Option<&[u8]>) {
        match self.parts.get(hit.part as usize) {
            Some(i) => {
                let feed = i.records.feed_of(hit.record);
                (i.records.key(feed), i.records.exact(i.bytes(), hit.record))
            }
            None => (&[], None),
        }
    }

    pub fn record_count(&self) -> usize {
        self.parts.iter().map(Index::record_count).sum()
    }

    /// Entry counts over all the indexes of the set.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for c in self.parts.iter().map(Index::counts) {
            total.add(c);
        }
        total
    }
}
