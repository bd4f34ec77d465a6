//! Feed metadata and records, archived with rkyv, and the encoding of a record's
//! answer context.
//!
//! `Meta` is small and is deserialized once at open. `Records` holds every record's
//! answer context, pre-rendered at compile time, so an answer is a byte copy. It is
//! validated once (`rkyv::access` runs bytecheck), after which the reader keeps only
//! the byte ranges of the offsets array and the text ([`View`]): lookups then read
//! those ranges directly, without unsafe code and without re-validating.
//!
//! **Context encoding.** A record's context is its fields as `k1=v1|k2=v2…`, exactly
//! as the CyberTrace wire protocol prints them after `MatchedIndicator` (SPEC §2): in
//! keys and values `|`, CR and LF are percent-encoded, and `=` in keys, so no record
//! can break a line or a `key=value` split. The rule is defined here because it is
//! part of the file format; the wire protocol uses [`escape_into`] for the rest of
//! the hit line, so the two cannot drift apart.
//!
//! **Exact contexts.** The HTTP API (SPEC §12) shows contexts as JSON strings, so it
//! decodes the escapes ([`decode_context`]). That is exact unless a field holds one of
//! the escapes literally (a URL with `%7C` in it): such a record also gets an exact
//! rendition, in which `%` is escaped too, kept aside (`exact_*`, usually empty), so
//! the line protocol's bytes stay as the spec says and the JSON stays true.

use std::ops::Range;

use rkyv::{Archive, Deserialize, Serialize};

use super::format::{le, SectionError};

/// Everything `tracer inspect` shows, and the category of every feed.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Meta {
    pub built_unix: u64,
    pub tool_version: String,
    pub feeds: Vec<FeedMeta>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FeedMeta {
    pub category: String,
    pub source: String,
    pub key: String,
    pub kind: String,
    /// Records of this feed are `first_record .. first_record + records`.
    pub first_record: u32,
    pub records: u32,
    /// Entries by indicator kind, indexed by `Kind::index()`.
    pub entries: Vec<u64>,
    /// How many of the URL entries are masks.
    pub masks: u64,
    pub skipped: u64,
}

/// Record `i`'s context is `text[offsets[i]..offsets[i + 1]]`. Records whose context
/// does not decode exactly are listed in `exact_ids` (ascending); the `j`-th one's
/// exact rendition is `exact_text[exact_offsets[j]..exact_offsets[j + 1]]`.
#[derive(Archive, Serialize, Deserialize, Default)]
pub struct Records {
    pub offsets: Vec<u64>,
    pub text: Vec<u8>,
    pub exact_ids: Vec<u32>,
    pub exact_offsets: Vec<u64>,
    pub exact_text: Vec<u8>,
}

/// Whether the context of `pairs` would not decode back to them: a key or value holds
/// an escape literally (`%7C`, `%0D`, `%0A`, or `%3D` in a key).
pub fn needs_exact<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    let literal = |bytes: &[u8], is_key: bool| {
        memchr::memchr_iter(b'%', bytes).any(|i| {
            matches!(bytes.get(i + 1..i + 3), Some(b"7C" | b"0D" | b"0A"))
                || (is_key && bytes.get(i + 1..i + 3) == Some(b"3D"))
        })
    };
    pairs
        .into_iter()
        .any(|(k, v)| literal(k, true) || literal(v, false))
}

/// Append the exact rendition of `pairs`: as [`encode_context`], with `%` escaped as
/// `%25` too.
pub fn encode_exact<'a>(out: &mut Vec<u8>, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(b'|');
        }
        for (bytes, is_key) in [(key, true), (value, false)] {
            if !is_key {
                out.push(b'=');
            }
            let mut rest = bytes;
            while let Some(at) = memchr::memchr(b'%', rest) {
                escape_into(out, &rest[..at], is_key);
                out.extend_from_slice(b"%25");
                rest = &rest[at + 1..];
            }
            escape_into(out, rest, is_key);
        }
    }
}

/// A context's fields, decoded: `(key, value)` pairs. `exact` says the context is an
/// exact rendition (`%25` decodes too).
pub fn decode_context(
    context: &[u8],
    exact: bool,
) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    context
        .split(|&b| b == b'|')
        .filter(|pair| !pair.is_empty())
        .map(move |pair| {
            let (k, v) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (unescape(k, true, exact), unescape(v, false, exact))
        })
}

fn unescape(bytes: &[u8], is_key: bool, exact: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = memchr::memchr(b'%', rest) {
        out.extend_from_slice(&rest[..at]);
        let byte = match rest.get(at + 1..at + 3) {
            Some(b"7C") => Some(b'|'),
            Some(b"0D") => Some(b'\r'),
            Some(b"0A") => Some(b'\n'),
            Some(b"3D") if is_key => Some(b'='),
            Some(b"25") if exact => Some(b'%'),
            _ => None,
        };
        match byte {
            Some(b) => {
                out.push(b);
                rest = &rest[at + 3..];
            }
            None => {
                out.push(b'%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Append a context, `k1=v1|k2=v2…`, made of `pairs` (in order) to `out`.
pub fn encode_context<'a>(
    out: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(b'|');
        }
        escape_into(out, key, true);
        out.push(b'=');
        escape_into(out, value, false);
    }
}

/// Percent-encode the bytes that would break the framing: `|`, CR, LF, and in keys
/// `=`.
#[inline]
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8], is_key: bool) {
    let special = |b: u8| matches!(b, b'|' | b'\r' | b'\n') || (is_key && b == b'=');
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| special(b)) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(match rest[i] {
            b'|' => b"%7C",
            b'\r' => b"%0D",
            b'\n' => b"%0A",
            _ => b"%3D",
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// The records of an opened index: where the offsets and the text lie, and which feed
/// (so which category) each record belongs to.
#[derive(Clone, Debug)]
pub struct View {
    offsets: Range<usize>,
    text: Range<usize>,
    exact_ids: Range<usize>,
    exact_offsets: Range<usize>,
    exact_text: Range<usize>,
    count: usize,
    feed_starts: Vec<u32>,
    categories: Vec<Box<[u8]>>,
    keys: Vec<Box<[u8]>>,
}

impl View {
    /// Validate the records section `bytes[section]` against `meta`.
    pub fn check(bytes: &[u8], section: Range<usize>, meta: &Meta) -> Result<View, SectionError> {
        let records = rkyv::access::<ArchivedRecords, rkyv::rancor::Error>(&bytes[section])
            .map_err(|e| SectionError::rejected("records archive", e))?;
        let base = bytes.as_ptr() as usize;
        let span = |ptr: *const u8, len: usize| {
            let start = ptr as usize - base;
            start..start + len
        };
        let offsets = span(records.offsets.as_ptr().cast(), records.offsets.len() * 8);
        let text = span(records.text.as_ptr(), records.text.len());
        let count = records.offsets.len().saturating_sub(1);
        let exact_ids = span(
            records.exact_ids.as_ptr().cast(),
            records.exact_ids.len() * 4,
        );
        let exact_offsets = span(
            records.exact_offsets.as_ptr().cast(),
            records.exact_offsets.len() * 8,
        );
        let exact_text = span(records.exact_text.as_ptr(), records.exact_text.len());
        if records.exact_offsets.len() != records.exact_ids.len() + 1
            && !(records.exact_ids.is_empty() && records.exact_offsets.is_empty())
        {
            return Err(SectionError::OutOfRange {
                what: "exact context offsets",
                value: records.exact_offsets.len() as u64,
                limit: records.exact_ids.len() as u64 + 1,
            });
        }
        // Ascending and in range, so a binary search finds what it should.
        let mut last: Option<u32> = None;
        for id in records.exact_ids.iter().map(|id| id.to_native()) {
            if id as usize >= count || last.is_some_and(|l| l >= id) {
                return Err(SectionError::OutOfRange {
                    what: "exact context record id",
                    value: u64::from(id),
                    limit: count as u64,
                });
            }
            last = Some(id);
        }
        for f in &meta.feeds {
            let end = f.first_record as u64 + f.records as u64;
            if end > count as u64 {
                return Err(SectionError::OutOfRange {
                    what: "feed record range end",
                    value: end,
                    limit: count as u64,
                });
            }
        }
        Ok(View {
            offsets,
            text,
            exact_ids,
            exact_offsets,
            exact_text,
            count,
            feed_starts: meta.feeds.iter().map(|f| f.first_record).collect(),
            categories: meta
                .feeds
                .iter()
                .map(|f| f.category.as_bytes().into())
                .collect(),
            keys: meta.feeds.iter().map(|f| f.key.as_bytes().into()).collect(),
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The feed a record belongs to (an index into `Meta::feeds`).
    #[inline]
    pub fn feed_of(&self, id: u32) -> usize {
        self.feed_starts
            .partition_point(|&s| s <= id)
            .saturating_sub(1)
    }

    /// The category of feed `feed`.
    pub fn category(&self, feed: usize) -> &[u8] {
        self.categories.get(feed).map_or(&[][..], |c| &c[..])
    }

    /// The feed (an index into `Meta::feeds`) and pre-rendered context of a record.
    #[inline]
    pub fn record<'a>(&self, bytes: &'a [u8], id: u32) -> (usize, &'a [u8]) {
        let feed = self.feed_of(id);
        let offsets = bytes.get(self.offsets.clone()).unwrap_or(&[]);
        let at = id as usize * 8;
        let context = match (le::u64(offsets, at), le::u64(offsets, at + 8)) {
            (Some(a), Some(b)) => bytes
                .get(self.text.clone())
                .and_then(|t| t.get(a as usize..b as usize))
                .unwrap_or(&[]),
            _ => &[],
        };
        (feed, context)
    }

    /// The exact rendition of a record's context, when it has one (see the module
    /// documentation): rare, and an empty list costs one comparison.
    pub fn exact<'a>(&self, bytes: &'a [u8], id: u32) -> Option<&'a [u8]> {
        if self.exact_ids.is_empty() {
            return None;
        }
        let ids = bytes.get(self.exact_ids.clone())?;
        let n = ids.len() / 4;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = le::u32(ids, mid * 4)?;
            match at.cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let offsets = bytes.get(self.exact_offsets.clone())?;
                    let a = le::u64(offsets, mid * 8)?;
                    let b = le::u64(offsets, mid * 8 + 8)?;
                    return bytes
                        .get(self.exact_text.clone())?
                        .get(a as usize..b as usize);
                }
            }
        }
        None
    }

    /// The indicator field (`-k`) of a feed.
    pub fn key(&self, feed: usize) -> &[u8] {
        self.keys.get(feed).map_or(&[][..], |k| &k[..])
    }

    /// Feeds in this index.
    pub fn feeds(&self) -> usize {
        self.feed_starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_framing_bytes() {
        let mut out = b"prefix ".to_vec();
        encode_context(
            &mut out,
            [(&b"a=b|c"[..], &b"x|y\r\nz=1"[..]), (&b"k"[..], &b""[..])],
        );
        assert_eq!(out, b"prefix a%3Db%7Cc=x%7Cy%0D%0Az=1|k=");
    }

    fn round_trip(pairs: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let exact = needs_exact(pairs.iter().copied());
        if exact {
            encode_exact(&mut out, pairs.iter().copied());
        } else {
            encode_context(&mut out, pairs.iter().copied());
        }
        decode_context(&out, exact).collect()
    }

    #[test]
    fn contexts_decode_to_their_fields_even_with_literal_escapes() {
        let cases: [&[(&[u8], &[u8])]; 4] = [
            &[(b"a=b|c", b"x|y\r\nz=1"), (b"k", b"")],
            &[(b"url", b"evil.example/a%7Cb?q=%25%0A"), (b"n", b"100%")],
            &[(b"k%3D", b"v"), (b"pct", b"%2")],
            &[(b"plain", b"value with %20 and % alone")],
        ];
        for pairs in cases {
            let want: Vec<(Vec<u8>, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(round_trip(pairs), want);
        }
        assert!(
            !needs_exact([(&b"u"[..], &b"a%20b%7c"[..])]),
            "lowercase escapes are never produced"
        );
        assert!(needs_exact([(&b"u"[..], &b"a%7Cb"[..])]));
    }
}
