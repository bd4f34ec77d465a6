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

/// Record `i`'s context is `text[offsets[i]..offsets[i + 1]]`.
#[derive(Archive, Serialize, Deserialize, Default)]
pub struct Records {
    pub offsets: Vec<u64>,
    pub text: Vec<u8>,
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
    count: usize,
    feed_starts: Vec<u32>,
    categories: Vec<Box<[u8]>>,
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
            count,
            feed_starts: meta.feeds.iter().map(|f| f.first_record).collect(),
            categories: meta
                .feeds
                .iter()
                .map(|f| f.category.as_bytes().into())
                .collect(),
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
}
