//! What an engine serves and how it is loaded: compiled index files (opened and
//! checked) and feed files (compiled in memory, all into one index), in that order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::index::compile::{CompileError, Compiler, FeedSpec, FeedSummary};
use crate::index::storage::IndexMode;
use crate::index::{Index, IndexError, IndexSet};
use crate::indicator::Kind;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Enricher(#[from] crate::enrich::BuildError),
}

/// Everything `serve` or `lookup` loads: index files, then feeds compiled in memory.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub indexes: Vec<PathBuf>,
    pub feeds: Vec<FeedSpec>,
    /// Indexes compiled from downloaded feeds (SPEC §13): served when present; one
    /// not downloaded yet, or that cannot be used (see [`unusable`]), is skipped
    /// with a warning.
    pub fetched: Vec<PathBuf>,
    /// Refuse a feed with any malformed row instead of skipping the row.
    pub strict: bool,
    /// Keep URL masks that match every URL (normally skipped as bad rows).
    pub allow_broad_masks: bool,
    /// How index files are held while served.
    pub index_mode: IndexMode,
}

impl Sources {
    /// The bundled demo feeds in `root` (`fixtures/`), what `serve` uses when given
    /// none.
    pub fn demo(root: &Path) -> Sources {
        let f = |name: &str, key: &str, kind: Option<Kind>| {
            let mut s = FeedSpec::new(root.join(name), key);
            s.kind = kind;
            s
        };
        Sources {
            indexes: Vec::new(),
            fetched: Vec::new(),
            feeds: vec![
                f("demo_ioc.csv", "ioc", None),
                f("Phishing_URL_Data_Feed.json", "mask", Some(Kind::Url)),
                f("Malicious_Hash_Data_Feed.json", "MD5", Some(Kind::Hash)),
                f("ip_reputation.csv", "ip", Some(Kind::Ip)),
                f("bad_domains.txt", "domain", Some(Kind::Domain)),
            ],
            strict: false,
            allow_broad_masks: false,
            index_mode: IndexMode::Read,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty() && self.feeds.is_empty() && self.fetched.is_empty()
    }

    /// Every file a reload depends on (for `--watch`).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = self.indexes.clone();
        v.extend(self.feeds.iter().map(|f| f.path.clone()));
        v
    }

    /// Open the index files and compile the feeds (all feeds into one in-memory index).
    pub fn load(&self) -> Result<IndexSet, LoadError> {
        let mut parts = Vec::with_capacity(self.indexes.len() + 1);
        for path in &self.indexes {
            let started = Instant::now();
            let index = Index::open_with(path, self.index_mode)?;
            tracing::info!(
                file = %path.display(),
                records = index.record_count(),
                bytes = index.size(),
                ms = started.elapsed().as_millis() as u64,
                "index opened"
            );
            parts.push(index);
        }
        for path in &self.fetched {
            if !path.exists() {
                tracing::warn!(file = %path.display(), "a downloaded feed is not there yet: served once its first download succeeds");
                continue;
            }
            // Written by the updater, which rebuilds or downloads again one that cannot
            // be used (an older build's format, damage): the rest is served meanwhile.
            // Any other error fails the load, so a reload keeps what is served.
            let index = match Index::open_with(path, IndexMode::Read) {
                Ok(index) => index,
                Err(e) if unusable(&e) => {
                    tracing::warn!(file = %path.display(), "a downloaded feed's index does not open, skipped until it is compiled or downloaded again: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            tracing::info!(
                file = %path.display(),
                records = index.record_count(),
                "downloaded feed opened"
            );
            parts.push(index);
        }
        if !self.feeds.is_empty() {
            let mut compiler = Compiler::new(self.strict).allow_broad_masks(self.allow_broad_masks);
            for spec in &self.feeds {
                let s = compiler.add_feed(spec)?;
                log_summary(&spec.path, &s);
            }
            let image = compiler.finish_to_vec()?;
            parts.push(Index::from_bytes(Path::new("<feeds>"), &image)?);
        }
        Ok(IndexSet::new(parts))
    }
}

/// Whether `e` says the file itself cannot be served: another format version,
/// damage, a file cut short, or gone since it was seen. Other failures (memory, file
/// descriptors, permissions) may pass and say nothing of the file, so they are not
/// a reason to stop serving a feed.
fn unusable(e: &IndexError) -> bool {
    match e {
        IndexError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        IndexError::Magic { .. }
        | IndexError::Version { .. }
        | IndexError::Endianness { .. }
        | IndexError::Truncated { .. }
        | IndexError::Checksum { .. }
        | IndexError::Corrupt { .. } => true,
    }
}

fn log_summary(path: &Path, s: &FeedSummary) {
    tracing::info!(
        feed = %path.display(),
        category = %s.category,
        records = s.records,
        urls = s.entries[Kind::Url.index()],
        masks = s.masks,
        domains = s.entries[Kind::Domain.index()],
        ips = s.entries[Kind::Ip.index()],
        hashes = s.entries[Kind::Hash.index()],
        raw = s.entries[Kind::Raw.index()],
        skipped = s.skipped,
        "feed loaded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downloaded_index_that_does_not_open_is_skipped_and_the_rest_served() {
        let dir = std::env::temp_dir().join(format!("tracer-sources-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let feed = dir.join("local.csv");
        std::fs::write(&feed, "ioc,context\nlocal.example,local\n").expect("feed");
        let damaged = dir.join("damaged.tracer");
        std::fs::write(&damaged, b"not an index at all").expect("index");
        let sources = Sources {
            feeds: vec![FeedSpec::new(&feed, "ioc")],
            fetched: vec![damaged, dir.join("not-downloaded-yet.tracer")],
            ..Sources::default()
        };
        let loaded = sources.load();
        let _ = std::fs::remove_dir_all(&dir);
        let set = loaded.expect("the local feed is served");
        assert_eq!(set.parts().len(), 1);
        assert_eq!(set.record_count(), 1);
    }

    #[test]
    fn a_downloaded_index_that_cannot_be_read_fails_the_load() {
        // Reading a directory fails as running out of memory or file descriptors
        // would: an error that says nothing of the file.
        let dir = std::env::temp_dir().join(format!("tracer-sources-io-{}", std::process::id()));
        let index = dir.join("feed.tracer");
        std::fs::create_dir_all(&index).expect("temp dir");
        let opened = Index::open(&index).map(drop);
        let loaded = Sources {
            fetched: vec![index],
            ..Sources::default()
        }
        .load()
        .map(drop);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(opened, Err(IndexError::Io { .. })),
            "an I/O error: {opened:?}"
        );
        assert!(
            matches!(loaded, Err(LoadError::Index(IndexError::Io { .. }))),
            "{loaded:?}"
        );
    }
}
