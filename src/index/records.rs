//! Feed metadata and records, archived with rkyv.
//!
//! `Meta` is small and is deserialized once at open. `Records` holds every record's
//! answer context, pre-rendered at compile time, so an answer is a byte copy. It is
//! validated once (`rkyv::access` runs bytecheck), after which the reader keeps only
//! the byte ranges of the offsets array and the text inside the mapped file: lookups
//! then read those ranges directly, without unsafe code and without re-validating.

use rkyv::{Archive, Deserialize, Serialize};

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
