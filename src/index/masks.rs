//! URL masks: `*` globs over normalized URLs, matched at a million masks per index.
//!
//! **Semantics.** A mask is split like a URL into host part (up to the first `/` or
//! `?`) and the rest. A `*` in the host part matches within the host only; a `*` in
//! the rest matches any run of bytes, `/` included. Both parts must match whole. So
//! `*.evil.com/*` means "any subdomain of evil.com, any path", and never matches a
//! different host that merely carries `.evil.com/` in its query string. A mask ending
//! in `/*` also matches the bare prefix; the compiler adds that variant as its own
//! entry, so the matcher knows nothing of the rule.
//!
//! **Why not one DFA.** The obvious design compiles every mask into one
//! `regex-automata` DFA. Its build time and size grow far faster than the mask count
//! (figures in the README, from `cargo run --release --example mask_dfa_scaling`):
//! the leading and embedded `*` create states that combine across masks. An earlier
//! version still used one for the rare shapes nothing else anchors, until fuzzing
//! found ten such masks that took 2.8 s and 22 MB to compile: a feed could stall
//! `compile` and a feed refresh. Every shape is now anchored by something that builds
//! in linear time.
//!
//! **What is built instead**, by the mask's shape (most common first):
//! - literal host (`host/path/*`, `host/*.ext`): bucketed by host in the index's hashed
//!   table (key `h` + host). One probe per lookup finds every mask of the URL's host.
//! - `*.domain…` (`*.host/*`): bucketed by domain (key `s` + domain). A lookup probes
//!   each parent domain of the URL's host (`a.b.c.com` → `b.c.com`, `c.com`, `com`).
//! - no leading `*` but a `*` inside the host (`discord*.gift/*`): an fst keyed by the
//!   literal prefix, walked along the URL; every final state passed is a prefix of it.
//! - another leading `*` with a literal host tail (`*-paypal.com/*`): an fst keyed by
//!   the reversed tail, walked along the reversed host.
//! - a literal inside the host only (`*paypal*/*`): the longest literal run of the
//!   host part, found in the URL's host by an Aho-Corasick automaton built when the
//!   index is opened (linear in the literals' length).
//! - no literal in the host at all (`*/admin/*`; only with `--allow-broad-masks`):
//!   checked one by one, for every URL.
//!
//! An earlier version kept every mask in the two fsts; the buckets replaced it after
//! profiling showed fst node decoding dominating lookups (README, Performance).
//!
//! Every candidate is then checked by [`matches`], the one definition of the semantics,
//! so the buckets, fsts and literals are only filters and cannot disagree with it.

use std::collections::BTreeMap;
use std::ops::Range;

use aho_corasick::AhoCorasick;
use fst::raw::Output;

use super::format::{le, SectionError, SectionId};
use super::hashtab::{self, Tag};
use super::postings::{self, Postings};
use super::storage::Bytes;

/// Split a normalized URL or mask into (host part, rest).
#[inline]
pub fn split_host(s: &[u8]) -> (&[u8], &[u8]) {
    let end = memchr::memchr2(b'/', b'?', s).unwrap_or(s.len());
    s.split_at(end)
}

/// `host`, then each of its parent domains: `a.b.c`, `b.c`, `c`.
pub fn domains_of(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::successors(Some(host), |h| {
        memchr::memchr(b'.', h).map(|dot| &h[dot + 1..])
    })
}

/// Is `mask` (normalized) one that matches every URL and every domain: a host part
/// that is empty or only `*` and dots (`*`, `*/*`, `/*`, `scheme:/*` normalized)?
/// One such row in a feed would make every lookup a hit, so the compiler refuses it
/// unless told otherwise.
pub fn is_broad(mask: &[u8]) -> bool {
    let (host, _) = split_host(mask);
    mask.contains(&b'*') && host.iter().all(|&b| b == b'*' || b == b'.')
}

/// Does `mask` match the normalized `url`? See the module docs for the semantics.
pub fn matches(mask: &[u8], url: &[u8]) -> bool {
    let (host, rest) = split_host(url);
    matches_split(mask, host, rest)
}

/// [`matches`], with the URL already split by [`split_host`].
#[inline]
fn matches_split(mask: &[u8], host: &[u8], rest: &[u8]) -> bool {
    let (mh, mr) = split_host(mask);
    glob(mh, host) && glob(mr, rest)
}

/// Whole-string glob where `*` matches any run of bytes. Linear in practice: it keeps
/// one backtrack point (the last `*`), which is enough for `*`-only patterns.
pub fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

/// How a mask is anchored for candidate search.
#[derive(Debug, PartialEq, Eq)]
pub enum Anchor<'a> {
    /// The whole host is literal: bucket by host.
    Host(&'a [u8]),
    /// The host is `*.` + a literal domain: bucket by that domain.
    Subdomain(&'a [u8]),
    /// Literal bytes before the first `*` (which is inside the host).
    Prefix(&'a [u8]),
    /// Literal host tail after the last `*`, not yet reversed.
    HostSuffix(&'a [u8]),
    /// The longest literal run inside the host part.
    Infix(&'a [u8]),
    /// No literal in the host part at all.
    Any,
}

pub fn anchor(mask: &[u8]) -> Anchor<'_> {
    let (host, _) = split_host(mask);
    if !host.contains(&b'*') {
        return Anchor::Host(host);
    }
    if let Some(domain) = host.strip_prefix(b"*.") {
        if !domain.is_empty() && !domain.contains(&b'*') {
            return Anchor::Subdomain(domain);
        }
    }
    if mask.first() != Some(&b'*') {
        let end = memchr::memchr(b'*', mask).unwrap_or(mask.len());
        return Anchor::Prefix(&mask[..end]);
    }
    let tail_start = memchr::memrchr(b'*', host).map_or(0, |i| i + 1);
    if tail_start < host.len() {
        return Anchor::HostSuffix(&host[tail_start..]);
    }
    host.split(|&b| b == b'*')
        .max_by_key(|run| run.len())
        .filter(|run| !run.is_empty())
        .map_or(Anchor::Any, Anchor::Infix)
}

/// The regex for a mask, with the same semantics as [`matches`]. Every literal byte is
/// written as `\xHH` so no mask byte is read as regex syntax.
pub fn to_regex(mask: &[u8]) -> String {
    let (host, rest) = split_host(mask);
    let mut re = String::with_capacity(mask.len() * 4 + 8);
    for (part, star) in [(host, "[^/?]*"), (rest, "(?s:.)*")] {
        for &b in part {
            if b == b'*' {
                re.push_str(star);
            } else if b.is_ascii_alphanumeric() {
                re.push(b as char);
            } else {
                re.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    re.push('$');
    re
}

/// The serialized mask sections, produced at compile time.
pub struct Built {
    pub table: Vec<u8>,
    /// Bucket keys ([`Tag::MaskHost`] + host, [`Tag::MaskSubdomain`] + domain) and
    /// their mask lists, for the index's hashed table.
    pub buckets: Vec<(Box<[u8]>, u32)>,
    pub prefix_fst: Vec<u8>,
    pub suffix_fst: Vec<u8>,
    /// The infix literals and the masks with no host literal (see [`Masks::open`]).
    pub infix: Vec<u8>,
}

const TABLE_HEAD: usize = 16;
const ROW: usize = 16;

/// Compile-time side: `entries` are (normalized mask, record id) pairs in any order.
pub fn build(
    entries: Vec<(Box<[u8]>, u32)>,
    postings: &mut postings::Builder,
) -> Result<Built, String> {
    // Mask table: one row per distinct mask, text appended after the rows.
    let masks = postings.group(entries);
    let mut table = Vec::with_capacity(TABLE_HEAD + ROW * masks.len());
    le::put_u64(&mut table, masks.len() as u64);
    // Bucket counts, filled in below: lookups skip the kinds of bucket that are empty.
    table.extend_from_slice(&[0u8; 8]);
    let mut text = Vec::new();
    for (mask, posting) in &masks {
        let off = u32::try_from(text.len()).map_err(|_| "mask text exceeds 4 GiB")?;
        le::put_u32(&mut table, off);
        le::put_u32(&mut table, mask.len() as u32);
        le::put_u32(&mut table, *posting);
        le::put_u32(&mut table, 0);
        text.extend_from_slice(mask);
    }
    table.extend_from_slice(&text);

    let mut prefixes: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    let mut suffixes: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    let mut buckets: BTreeMap<Box<[u8]>, Vec<u32>> = BTreeMap::new();
    let mut infixes: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    let mut any = Vec::new();
    let (mut hosts, mut subdomains) = (0u32, 0u32);
    for (id, (mask, _)) in masks.iter().enumerate() {
        let id = id as u32;
        match anchor(mask) {
            Anchor::Host(h) => {
                hosts += 1;
                buckets
                    .entry(hashtab::key(Tag::MaskHost, h))
                    .or_default()
                    .push(id);
            }
            Anchor::Subdomain(d) => {
                subdomains += 1;
                buckets
                    .entry(hashtab::key(Tag::MaskSubdomain, d))
                    .or_default()
                    .push(id);
            }
            Anchor::Prefix(p) => prefixes.entry(p.to_vec()).or_default().push(id),
            Anchor::HostSuffix(s) => {
                let rev: Vec<u8> = s.iter().rev().copied().collect();
                suffixes.entry(rev).or_default().push(id);
            }
            Anchor::Infix(run) => infixes.entry(run.to_vec()).or_default().push(id),
            Anchor::Any => any.push(id),
        }
    }
    let fst_of = |map: BTreeMap<Vec<u8>, Vec<u32>>, postings: &mut postings::Builder| {
        let mut b = fst::MapBuilder::memory();
        for (k, ids) in map {
            b.insert(k, postings.add(&ids) as u64)
                .map_err(|e| e.to_string())?;
        }
        b.into_inner().map_err(|e| e.to_string())
    };
    le::set_u32(&mut table, 8, hosts);
    le::set_u32(&mut table, 12, subdomains);
    let buckets = buckets
        .into_iter()
        .map(|(k, ids)| (k, postings.add(&ids)))
        .collect();
    let prefix_fst = fst_of(prefixes, postings)?;
    let suffix_fst = fst_of(suffixes, postings)?;

    // Infix section: u32 literals, u32 masks-with-no-literal; per literal u32 text
    // offset, u32 length, u32 posting ref (of mask ids); the "any" mask ids; the
    // literals' text.
    let mut infix = Vec::new();
    le::put_u32(&mut infix, infixes.len() as u32);
    le::put_u32(&mut infix, any.len() as u32);
    let mut text = Vec::new();
    for (literal, ids) in &infixes {
        let off = u32::try_from(text.len()).map_err(|_| "infix text exceeds 4 GiB")?;
        le::put_u32(&mut infix, off);
        le::put_u32(&mut infix, literal.len() as u32);
        le::put_u32(&mut infix, postings.add(ids));
        text.extend_from_slice(literal);
    }
    for id in &any {
        le::put_u32(&mut infix, *id);
    }
    infix.extend_from_slice(&text);
    Ok(Built {
        table,
        buckets,
        prefix_fst,
        suffix_fst,
        infix,
    })
}

/// The mask sections of an opened index, checked once: the table's header and row
/// bounds, both fsts, and the infix literals (their automaton built here).
pub struct Masks {
    count: usize,
    host_buckets: u32,
    subdomain_buckets: u32,
    rows: Range<usize>,
    text: Range<usize>,
    prefix: fst::raw::Fst<Bytes>,
    suffix: fst::raw::Fst<Bytes>,
    /// Finds the infix literals in a host; pattern `i` leads to `infix_refs[i]`.
    infix: Option<AhoCorasick>,
    infix_refs: Vec<u32>,
    /// Masks with no literal in their host part.
    any: Vec<u32>,
}

/// Buffers a mask lookup reuses.
#[derive(Default)]
pub struct Scratch {
    key: Vec<u8>,
    patterns: Vec<u32>,
}

impl Masks {
    /// Check the mask table, the two fsts and the DFA section. An error names the
    /// section it was found in.
    pub fn open(
        table: Bytes,
        prefix: Bytes,
        suffix: Bytes,
        infix: Bytes,
    ) -> Result<Masks, (SectionId, SectionError)> {
        let in_table = |e| (SectionId::Masks, e);
        let (count, host_buckets, subdomain_buckets, rows, text) =
            table_layout(&table).map_err(in_table)?;
        // The fst crate trusts its bytes once `new` has read the header, and panics on
        // a damaged body: its own checksum is checked here, so damage is an error.
        let fst = |bytes: Bytes, id: SectionId| {
            let f =
                fst::raw::Fst::new(bytes).map_err(|e| (id, SectionError::rejected("fst", e)))?;
            f.verify()
                .map_err(|e| (id, SectionError::rejected("fst checksum", e)))?;
            Ok::<_, (SectionId, SectionError)>(f)
        };
        let prefix = fst(prefix, SectionId::MaskPrefix)?;
        let suffix = fst(suffix, SectionId::MaskSuffix)?;
        let (infix, infix_refs, any) =
            open_infix(infix.as_ref()).map_err(|e| (SectionId::MaskInfix, e))?;
        for &id in &any {
            if id as usize >= count {
                return Err((
                    SectionId::MaskInfix,
                    SectionError::OutOfRange {
                        what: "mask id",
                        value: id as u64,
                        limit: count as u64,
                    },
                ));
            }
        }
        Ok(Masks {
            count,
            host_buckets,
            subdomain_buckets,
            rows,
            text,
            prefix,
            suffix,
            infix,
            infix_refs,
            any,
        })
    }

    /// Distinct masks.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Masks found by a literal inside their host, and masks with no host literal.
    pub fn infix_count(&self) -> (usize, usize) {
        (self.infix_refs.len(), self.any.len())
    }

    fn mask_row<'a>(&self, bytes: &'a [u8], id: u32) -> Option<(&'a [u8], u32)> {
        let rows = bytes.get(self.rows.clone())?;
        let at = id as usize * ROW;
        let off = le::u32(rows, at)? as usize;
        let len = le::u32(rows, at + 4)? as usize;
        let posting = le::u32(rows, at + 8)?;
        let text = bytes.get(self.text.clone())?;
        Some((text.get(off..off.checked_add(len)?)?, posting))
    }

    /// Check mask `id` against `url`; on a match, add its records to `out`.
    #[inline]
    fn verify(
        &self,
        bytes: &[u8],
        id: u32,
        (host, rest): (&[u8], &[u8]),
        postings: Postings<'_>,
        out: &mut Vec<u32>,
    ) {
        if let Some((mask, posting)) = self.mask_row(bytes, id) {
            if matches_split(mask, host, rest) {
                postings.for_each(posting, |r| out.push(r));
            }
        }
    }

    /// Prefetch the slots of the host and subdomain buckets [`Masks::lookup`] will
    /// probe for a URL of this `host` (`key` is scratch space).
    #[inline]
    pub fn prefetch(&self, buckets: hashtab::Table<'_>, host: &[u8], key: &mut Vec<u8>) {
        if self.host_buckets > 0 {
            hashtab::key_into(key, Tag::MaskHost, host);
            buckets.prefetch(key);
        }
        if self.subdomain_buckets > 0 {
            for parent in domains_of(host).skip(1) {
                hashtab::key_into(key, Tag::MaskSubdomain, parent);
                buckets.prefetch(key);
            }
        }
    }

    /// Add to `out` the records of every mask matching the normalized URL `url`,
    /// split by [`split_host`]. `bytes` are the index bytes and `buckets` its hashed
    /// table, which holds the host and subdomain buckets.
    pub fn lookup(
        &self,
        bytes: &[u8],
        buckets: hashtab::Table<'_>,
        url: (&[u8], &[u8]),
        postings: Postings<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        let host = url.0;
        let key = &mut scratch.key;
        let mut bucket = |tag: Tag, name: &[u8], out: &mut Vec<u32>| {
            hashtab::key_into(key, tag, name);
            if let Some(r) = buckets.get(key) {
                postings.for_each(r, |id| self.verify(bytes, id, url, postings, out));
            }
        };
        if self.host_buckets > 0 {
            bucket(Tag::MaskHost, host, out);
        }
        if self.subdomain_buckets > 0 {
            for parent in domains_of(host).skip(1) {
                bucket(Tag::MaskSubdomain, parent, out);
            }
        }
        // Prefix-anchored masks have their first `*` inside the host, so their literal
        // prefix is part of the host: walking the host is enough.
        walk(&self.prefix, host.iter().copied(), |r| {
            postings.for_each(r, |id| self.verify(bytes, id, url, postings, out));
        });
        walk(&self.suffix, host.iter().rev().copied(), |r| {
            postings.for_each(r, |id| self.verify(bytes, id, url, postings, out));
        });
        if let Some(ac) = &self.infix {
            // Each literal once, however often it occurs in the host.
            let found = &mut scratch.patterns;
            found.clear();
            found.extend(ac.find_overlapping_iter(host).map(|m| m.pattern().as_u32()));
            found.sort_unstable();
            found.dedup();
            for &p in found.iter() {
                if let Some(&r) = self.infix_refs.get(p as usize) {
                    postings.for_each(r, |id| self.verify(bytes, id, url, postings, out));
                }
            }
        }
        for &id in &self.any {
            self.verify(bytes, id, url, postings, out);
        }
    }
}

/// The infix section, parsed: the literals' automaton, each literal's posting ref,
/// and the masks with no host literal.
type OpenedInfix = (Option<AhoCorasick>, Vec<u32>, Vec<u32>);

fn open_infix(s: &[u8]) -> Result<OpenedInfix, SectionError> {
    let short = |needed: usize| SectionError::Short {
        what: "infix literals",
        needed: needed as u64,
        len: s.len() as u64,
    };
    let n = le::u32(s, 0).ok_or(short(8))? as usize;
    let any_n = le::u32(s, 4).ok_or(short(8))? as usize;
    let rows_end = n
        .checked_mul(12)
        .and_then(|r| r.checked_add(8))
        .ok_or(short(usize::MAX))?;
    let any_end = any_n
        .checked_mul(4)
        .and_then(|a| a.checked_add(rows_end))
        .filter(|&e| e <= s.len())
        .ok_or(short(rows_end.saturating_add(any_n.saturating_mul(4))))?;
    let text = &s[any_end..];
    let mut literals = Vec::with_capacity(n);
    let mut refs = Vec::with_capacity(n);
    for i in 0..n {
        let at = 8 + i * 12;
        let off = le::u32(s, at).ok_or(short(rows_end))? as usize;
        let len = le::u32(s, at + 4).ok_or(short(rows_end))? as usize;
        let lit = off
            .checked_add(len)
            .and_then(|end| text.get(off..end))
            .filter(|l| !l.is_empty())
            .ok_or(SectionError::Malformed {
                what: "infix literal",
                requirement: "a non-empty range of the section's text",
            })?;
        literals.push(lit);
        refs.push(le::u32(s, at + 8).ok_or(short(rows_end))?);
    }
    let any = (0..any_n)
        .map(|i| le::u32(s, rows_end + i * 4).ok_or(short(any_end)))
        .collect::<Result<Vec<u32>, _>>()?;
    let ac = if literals.is_empty() {
        None
    } else {
        Some(
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(&literals)
                .map_err(|e| SectionError::rejected("infix automaton", e))?,
        )
    };
    Ok((ac, refs, any))
}

/// The mask table's header, once: (masks, host buckets, subdomain buckets, row range,
/// text range), ranges absolute in the index bytes.
type TableLayout = (usize, u32, u32, Range<usize>, Range<usize>);

fn table_layout(table: &Bytes) -> Result<TableLayout, SectionError> {
    let t = table.as_ref();
    let short = |needed: u64| SectionError::Short {
        what: "mask table",
        needed,
        len: t.len() as u64,
    };
    let count = le::u64(t, 0).ok_or(short(TABLE_HEAD as u64))?;
    let hosts = le::u32(t, 8).ok_or(short(TABLE_HEAD as u64))?;
    let subdomains = le::u32(t, 12).ok_or(short(TABLE_HEAD as u64))?;
    let rows_len = count
        .checked_mul(ROW as u64)
        .filter(|&n| n + TABLE_HEAD as u64 <= t.len() as u64)
        .ok_or(short(count.saturating_mul(ROW as u64)))? as usize;
    let base = table.range().start;
    let text_start = base + TABLE_HEAD + rows_len;
    Ok((
        count as usize,
        hosts,
        subdomains,
        base + TABLE_HEAD..text_start,
        text_start..table.range().end,
    ))
}

/// Follow `input` through the fst from its root, calling `f` with the value of every
/// key that is a prefix of `input`.
fn walk<D: AsRef<[u8]>>(
    fst: &fst::raw::Fst<D>,
    input: impl Iterator<Item = u8>,
    mut f: impl FnMut(u32),
) {
    if fst.is_empty() {
        return;
    }
    let mut node = fst.root();
    let mut acc = Output::zero();
    if node.is_final() {
        f(acc.cat(node.final_output()).value() as u32);
    }
    for b in input {
        let Some(i) = node.find_input(b) else { return };
        let t = node.transition(i);
        acc = acc.cat(t.out);
        node = fst.node(t.addr);
        if node.is_final() {
            f(acc.cat(node.final_output()).value() as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_that_match_everything_are_recognized() {
        let norm = |s: &str| {
            let mut out = Vec::new();
            crate::indicator::normalize_url(s.as_bytes(), &mut out);
            out
        };
        for broad in [
            "*",
            "*/*",
            "/*",
            "scheme:/*",
            "http://*",
            "https://*/",
            "*.*/*",
            ".*",
            "**",
            "*?*",
            "*:8080/*",
            "http://*/x/*",
        ] {
            assert!(
                is_broad(&norm(broad)),
                "{broad} -> {:?}",
                String::from_utf8_lossy(&norm(broad))
            );
        }
        for narrow in [
            "*.evil.com/*",
            "a*.com/*",
            "evil.com/*",
            "x.com",
            "*a/*",
            "/path",
        ] {
            assert!(!is_broad(&norm(narrow)), "{narrow}");
        }
    }

    #[test]
    fn glob_semantics() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"/*.exe", b"/x/y.exe"));
        assert!(!glob(b"/*.exe", b"/x/y.exe2"));
        assert!(glob(b"*aab", b"aaab"));
    }

    #[test]
    fn host_star_stays_in_host() {
        assert!(matches(b"*.evil.com/*", b"a.b.evil.com/x/y"));
        assert!(!matches(b"*.evil.com/*", b"evil.com/x"));
        assert!(!matches(b"*.evil.com/*", b"good.com/?u=a.evil.com/x"));
        assert!(matches(b"discord*.gift/*", b"discord-nitro.gift/claim"));
        assert!(!matches(b"discord*.gift/*", b"discord.gift.evil.com/a"));
        assert!(matches(b"host.com/*.exe", b"host.com/a/b/c.exe"));
        assert!(matches(b"a.com/x?*", b"a.com/x?id=1"));
    }

    #[test]
    fn anchors_by_shape() {
        assert_eq!(anchor(b"a.com/x/*"), Anchor::Host(b"a.com"));
        assert_eq!(anchor(b"a.com/*.exe"), Anchor::Host(b"a.com"));
        assert_eq!(anchor(b"discord*.gift/*"), Anchor::Prefix(b"discord"));
        assert_eq!(anchor(b"*.evil.com/*"), Anchor::Subdomain(b"evil.com"));
        assert_eq!(anchor(b"*.*.evil.com/*"), Anchor::HostSuffix(b".evil.com"));
        assert_eq!(anchor(b"*-pay.com/*"), Anchor::HostSuffix(b"-pay.com"));
        assert_eq!(anchor(b"*pay*pal.com"), Anchor::HostSuffix(b"pal.com"));
        assert_eq!(anchor(b"*paypal*/*"), Anchor::Infix(b"paypal"));
        assert_eq!(anchor(b"*x*secure-pay*/*"), Anchor::Infix(b"secure-pay"));
        assert_eq!(anchor(b"*/admin/*"), Anchor::Any);
        assert_eq!(anchor(b"*"), Anchor::Any);
    }

    /// Compile masks into sections, open them, look URLs up: what matches must be
    /// exactly what [`matches`] says, for every anchor shape.
    fn lookup_all(masks: &[&[u8]], urls: &[&[u8]]) {
        let mut post = postings::Builder::default();
        let entries: Vec<(Box<[u8]>, u32)> = masks
            .iter()
            .enumerate()
            .map(|(i, m)| (Box::from(*m), i as u32))
            .collect();
        let built = build(entries, &mut post).expect("build");
        let table = hashtab::build(&built.buckets).expect("buckets");
        let sections: Vec<&[u8]> = vec![
            &built.table,
            &built.prefix_fst,
            &built.suffix_fst,
            &built.infix,
            &table,
        ];
        let mut all = Vec::new();
        let mut ranges = Vec::new();
        for s in sections {
            let start = all.len();
            all.extend_from_slice(s);
            ranges.push(start..all.len());
            while all.len() % 16 != 0 {
                all.push(0);
            }
        }
        let storage = std::sync::Arc::new(super::super::storage::Storage::copy_of(&all));
        let bytes = |i: usize| Bytes::new(storage.clone(), ranges[i].clone());
        let m = Masks::open(bytes(0), bytes(1), bytes(2), bytes(3)).expect("open");
        let table_layout =
            hashtab::Layout::check(storage.as_ref().as_ref(), ranges[4].clone()).expect("table");
        let post = post.into_bytes();
        let mut scratch = Scratch::default();
        for url in urls {
            let mut got = Vec::new();
            let whole: &[u8] = storage.as_ref().as_ref();
            m.lookup(
                whole,
                table_layout.view(whole),
                split_host(url),
                Postings(&post),
                &mut scratch,
                &mut got,
            );
            got.sort_unstable();
            got.dedup();
            let want: Vec<u32> = (0..masks.len() as u32)
                .filter(|&i| matches(masks[i as usize], url))
                .collect();
            assert_eq!(got, want, "url {:?}", String::from_utf8_lossy(url));
        }
    }

    #[test]
    fn every_anchor_shape_finds_what_glob_matches() {
        let masks: Vec<&[u8]> = vec![
            b"a.com/x/*",
            b"*.evil.com/*",
            b"discord*.gift/*",
            b"*-pay.com/*",
            b"*paypal*/*",
            b"*x*secure*/a*b",
            b"*/admin/*",
        ];
        let urls: Vec<&[u8]> = vec![
            b"a.com/x/y",
            b"b.evil.com/z",
            b"discord-nitro.gift/claim",
            b"my-pay.com/x",
            b"secure-paypal.com/login",
            b"xxsecurex/a1b",
            b"any.host/admin/panel",
            b"paypal.com",
            b"nothing.example/",
            b"aaaa.paypalpaypal.com/x",
        ];
        lookup_all(&masks, &urls);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn glob_agrees_with_regex(pat in "[ab*/.]{0,8}", text in "[ab/.]{0,10}") {
                let re = regex::bytes::Regex::new(&format!("^(?:{})", to_regex(pat.as_bytes())))
                    .expect("mask regex compiles");
                prop_assert_eq!(matches(pat.as_bytes(), text.as_bytes()), re.is_match(text.as_bytes()));
            }
        }
    }
}
