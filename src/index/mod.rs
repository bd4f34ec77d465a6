//! The compiled index: built by [`compile`], stored in one file laid out as
//! [`format`] describes, opened by [`open`] (checked once, kept as typed views) and
//! read by [`lookup`].
//!
//! A lookup goes to the structure that suits the indicator:
//!
//! | indicator | structure |
//! | --- | --- |
//! | exact URL, domain, raw string | [`hashtab`]: one hashed table keyed by a [`hashtab::Tag`] + normalized value |
//! | URL mask | [`masks`]: host and subdomain buckets in the same table; fsts and host literals (Aho-Corasick) for rarer shapes |
//! | hash | [`hashes`]: sorted binary digests with a bucket directory |
//! | IP, CIDR, range | [`ip`]: per-prefix-length sorted networks |
//!
//! Every structure yields *posting refs* ([`postings`]) that resolve to record ids,
//! whose answer context was rendered at compile time ([`records`]).
//!
//! Where the bytes live is [`storage`]'s business, the only I/O here besides writing
//! a compiled file.

pub mod compile;
pub mod format;
pub mod hashes;
pub mod hashtab;
pub mod ip;
pub mod lookup;
pub mod masks;
pub mod open;
pub mod postings;
pub mod records;
pub mod storage;

pub use format::IndexError;
pub use lookup::{Hit, IndexSet, Record, Scratch};
pub use open::{Counts, Index};
