//! Opening an index: check the bytes once, then keep typed views of every section.
//!
//! [`format::check`] verifies the header and every checksum before anything else is
//! read; each section is then parsed by its own module, which validates its
//! structure (rkyv `access`, table bounds, fst checksums, infix literals) and keeps
//! only offsets. After that an [`Index`] never changes and holds no locks: lookups
//! ([`super::lookup`]) read the views without re-checking.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, Header, IndexError, SectionError, SectionId};
use super::hashes::{self, Digest};
use super::masks::Masks;
use super::records::{self, Meta};
use super::storage::{Bytes, IndexMode, Storage};
use super::{hashtab, ip};
use crate::indicator::Kind;

/// Counts shown by `inspect` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub exact_keys: u64,
    pub masks: u64,
    /// Masks anchored by a literal inside their host, and masks with no host literal.
    pub infix_masks: u64,
    pub any_masks: u64,
    pub md5: u64,
    pub sha1: u64,
    pub sha256: u64,
    pub ipv4_blocks: u64,
    pub ipv6_blocks: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.records += o.records;
        self.exact_keys += o.exact_keys;
        self.masks += o.masks;
        self.infix_masks += o.infix_masks;
        self.any_masks += o.any_masks;
        self.md5 += o.md5;
        self.sha1 += o.sha1;
        self.sha256 += o.sha256;
        self.ipv4_blocks += o.ipv4_blocks;
        self.ipv6_blocks += o.ipv6_blocks;
    }
}

/// Which kinds of entry a file holds, so a set of files skips those that cannot hit.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Holds {
    pub urls: bool,
    pub domains: bool,
    pub raw: bool,
}

/// One opened index file (or in-memory image).
pub struct Index {
    pub(super) path: PathBuf,
    pub(super) storage: Arc<Storage>,
    pub(super) header: Header,
    pub(super) meta: Meta,
    pub(super) records: records::View,
    pub(super) postings: Range<usize>,
    pub(super) exact: hashtab::Layout,
    pub(super) masks: Masks,
    pub(super) digests: [hashes::Layout; 3],
    pub(super) ips: [ip::Layout; 2],
    pub(super) holds: Holds,
    pub(super) counts: Counts,
}

impl Index {
    /// Read and check an index file (in [`IndexMode::Read`]).
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Index::open_with(path, IndexMode::Read)
    }

    /// Load an index file as `mode` says, and check it.
    pub fn open_with(path: &Path, mode: IndexMode) -> Result<Index, IndexError> {
        Index::from_storage(path, Storage::load(path, mode)?)
    }

    /// Use bytes compiled in memory (`serve -f`), with the same checks as a file.
    pub fn from_bytes(name: &Path, bytes: &[u8]) -> Result<Index, IndexError> {
        Index::from_storage(name, Storage::copy_of(bytes))
    }

    fn from_storage(path: &Path, storage: Storage) -> Result<Index, IndexError> {
        let storage = Arc::new(storage);
        let bytes: &[u8] = (*storage).as_ref();
        let header = format::check(path, bytes)?;
        let corrupt = |section: SectionId| {
            move |source: SectionError| IndexError::Corrupt {
                file: path.to_path_buf(),
                section: section.name(),
                source,
            }
        };
        let section = |id: SectionId| {
            header
                .section(id)
                .ok_or_else(|| corrupt(id)(SectionError::Missing))
        };
        let shared = |id: SectionId| -> Result<Bytes, IndexError> {
            Ok(Bytes::new(storage.clone(), section(id)?))
        };

        let meta: Meta =
            rkyv::from_bytes::<Meta, rkyv::rancor::Error>(&bytes[section(SectionId::Meta)?])
                .map_err(|e| corrupt(SectionId::Meta)(SectionError::rejected("meta archive", e)))?;
        let records = records::View::check(bytes, section(SectionId::Records)?, &meta)
            .map_err(corrupt(SectionId::Records))?;
        let exact = hashtab::Layout::check(bytes, section(SectionId::Exact)?)
            .map_err(corrupt(SectionId::Exact))?;
        let masks = Masks::open(
            shared(SectionId::Masks)?,
            shared(SectionId::MaskPrefix)?,
            shared(SectionId::MaskSuffix)?,
            shared(SectionId::MaskInfix)?,
        )
        .map_err(|(id, e)| corrupt(id)(e))?;
        let mut digests: [hashes::Layout; 3] = Default::default();
        for (d, id) in Digest::ALL.into_iter().zip(DIGEST_SECTIONS) {
            digests[d.index()] =
                hashes::Layout::check(bytes, section(id)?, d.width()).map_err(corrupt(id))?;
        }
        let ips = [
            ip::Layout::check(bytes, section(SectionId::Ipv4)?, 4)
                .map_err(corrupt(SectionId::Ipv4))?,
            ip::Layout::check(bytes, section(SectionId::Ipv6)?, 16)
                .map_err(corrupt(SectionId::Ipv6))?,
        ];
        let postings = section(SectionId::Postings)?;

        let any = |kind: Kind| {
            meta.feeds
                .iter()
                .any(|f| f.entries.get(kind.index()).copied().unwrap_or(0) > 0)
        };
        let holds = Holds {
            urls: any(Kind::Url),
            domains: any(Kind::Domain),
            raw: any(Kind::Raw),
        };
        let counts = Counts {
            records: records.count() as u64,
            exact_keys: exact.len() as u64,
            masks: masks.count() as u64,
            infix_masks: masks.infix_count().0 as u64,
            any_masks: masks.infix_count().1 as u64,
            md5: digests[0].len() as u64,
            sha1: digests[1].len() as u64,
            sha256: digests[2].len() as u64,
            ipv4_blocks: ips[0].len() as u64,
            ipv6_blocks: ips[1].len() as u64,
        };
        Ok(Index {
            path: path.to_path_buf(),
            storage: storage.clone(),
            header,
            meta,
            records,
            postings,
            exact,
            masks,
            digests,
            ips,
            holds,
            counts,
        })
    }

    pub(super) fn bytes(&self) -> &[u8] {
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

    pub fn record_count(&self) -> usize {
        self.records.count()
    }

    /// Category and pre-rendered context of a record.
    pub fn record(&self, id: u32) -> (&[u8], &[u8]) {
        let (feed, context) = self.records.record(self.bytes(), id);
        (self.records.category(feed), context)
    }
}

const DIGEST_SECTIONS: [SectionId; 3] = [SectionId::Md5, SectionId::Sha1, SectionId::Sha256];
