//! Feeds → index file.
//!
//! The [`Compiler`] reads feeds one after another (record ids follow feed order and
//! row order, which is the answer order), renders each record's context once (in the
//! encoding [`super::records`] defines), and files every indicator value under its
//! kind: exact keys for the hashed table, masks for the matcher, digests and IP
//! blocks for their tables. [`Compiler::finish`] sorts and serializes each structure
//! into its section; [`super::storage::write_atomically`] writes the file next to its
//! destination and renames it into place, so a crash or Ctrl-C never leaves a
//! half-written index where `serve` would open it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::{self, Section, SectionId};
use super::hashes::Digest;
use super::hashtab::{self, Tag};
use super::records::{self, FeedMeta, Meta, Records};
use super::{ip, masks, postings};
use crate::feed::{self, FeedError, Format, RawRecord, ReadOptions, Skip};
use crate::indicator::{self, Kind};

/// One feed to compile.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedSpec {
    pub path: PathBuf,
    pub key: String,
    /// `None` detects the kind of each value (`--kind auto`).
    pub kind: Option<Kind>,
    pub category: Option<String>,
    pub format: Option<Format>,
    pub records: Option<String>,
    /// Refuse the feed when more rows than this are skipped as malformed (the data
    /// served before stays).
    pub max_skipped: Option<u64>,
    /// Where the feed came from, as `tracer inspect` shows it (default: its path).
    pub origin: Option<String>,
}

impl FeedSpec {
    pub fn new(path: impl Into<PathBuf>, key: impl Into<String>) -> FeedSpec {
        FeedSpec {
            path: path.into(),
            key: key.into(),
            kind: None,
            category: None,
            format: None,
            records: None,
            max_skipped: None,
            origin: None,
        }
    }

    /// `--category`, or the file stem (`Phishing_URL_Data_Feed.json` → `Phishing_URL_Data_Feed`).
    pub fn category(&self) -> String {
        self.category.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "feed".into())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("building {what}: {reason}")]
    Build { what: &'static str, reason: String },
    #[error("{}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {skipped} malformed rows skipped, more than max_skipped = {max}; the feed is refused", file.display())]
    TooManySkipped {
        file: PathBuf,
        skipped: u64,
        max: u64,
    },
}

/// What one feed contributed, for the end-of-compile summary.
#[derive(Clone, Debug, Default)]
pub struct FeedSummary {
    pub category: String,
    pub rows: u64,
    pub records: u64,
    pub entries: [u64; 5],
    pub masks: u64,
    pub skipped: u64,
    /// Skip counts by reason (reasons with the value cut off), most frequent first.
    pub skip_reasons: Vec<(String, u64)>,
}

#[derive(Default)]
pub struct Compiler {
    feeds: Vec<FeedMeta>,
    offsets: Vec<u64>,
    text: Vec<u8>,
    /// Records whose context needs an exact rendition (see [`records`]).
    exact_ids: Vec<u32>,
    exact_offsets: Vec<u64>,
    exact_text: Vec<u8>,
    exact: Vec<(Box<[u8]>, u32)>,
    masks: Vec<(Box<[u8]>, u32)>,
    digests: [Vec<(Box<[u8]>, u32)>; 3],
    ips: [Vec<(u8, u128, u32)>; 2],
    strict: bool,
    allow_broad_masks: bool,
    progress: Option<indicatif::ProgressBar>,
}

impl Compiler {
    pub fn new(strict: bool) -> Compiler {
        Compiler {
            offsets: vec![0],
            strict,
            ..Compiler::default()
        }
    }

    /// Keep URL masks that match every URL (`*`, `*/*`, `scheme:/*`…) instead of
    /// skipping them as bad rows.
    pub fn allow_broad_masks(mut self, allow: bool) -> Compiler {
        self.allow_broad_masks = allow;
        self
    }

    /// Show a progress line on a terminal while reading.
    pub fn with_progress(mut self) -> Compiler {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} {pos} records ({per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        self.progress = Some(bar);
        self
    }

    /// Read one feed and file its records and entries.
    pub fn add_feed(&mut self, spec: &FeedSpec) -> Result<FeedSummary, CompileError> {
        self.add_feed_with(spec, |opts, sink| feed::read(&spec.path, opts, sink))
    }

    /// Read one feed from `reader` (its format given in `spec`, `spec.path` only
    /// naming it in messages) and file its records.
    pub fn add_feed_from(
        &mut self,
        spec: &FeedSpec,
        format: Format,
        reader: impl std::io::BufRead,
    ) -> Result<FeedSummary, CompileError> {
        self.add_feed_with(spec, |opts, sink| {
            feed::read_from(&spec.path, reader, format, opts, sink)
        })
    }

    fn add_feed_with(
        &mut self,
        spec: &FeedSpec,
        read: impl FnOnce(&ReadOptions, &mut dyn feed::Sink) -> Result<(), FeedError>,
    ) -> Result<FeedSummary, CompileError> {
        let first_record = self.record_count();
        let category = spec.category();
        if let Some(bar) = &self.progress {
            bar.set_message(category.clone());
        }
        let mut sink = FeedSink {
            compiler: self,
            kind: spec.kind,
            summary: FeedSummary {
                category: category.clone(),
                ..FeedSummary::default()
            },
            reasons: Default::default(),
            norm: Vec::new(),
            path: &spec.path,
        };
        let opts = ReadOptions {
            format: spec.format,
            key: spec.key.clone(),
            records: spec.records.clone(),
        };
        let result = read(&opts, &mut sink);
        let mut summary = sink.summary;
        let mut reasons: Vec<(String, u64)> = sink.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        summary.skip_reasons = reasons;
        result?;
        if let Some(max) = spec.max_skipped {
            if summary.skipped > max {
                return Err(CompileError::TooManySkipped {
                    file: spec.path.clone(),
                    skipped: summary.skipped,
                    max,
                });
            }
        }
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        self.feeds.push(FeedMeta {
            category,
            source: spec
                .origin
                .clone()
                .unwrap_or_else(|| spec.path.display().to_string()),
            key: spec.key.clone(),
            kind: spec.kind.map_or("auto", Kind::name).to_string(),
            first_record,
            records: summary.records as u32,
            entries: summary.entries.to_vec(),
            masks: summary.masks,
            skipped: summary.skipped,
        });
        Ok(summary)
    }

    fn record_count(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    /// File one value of record `id` under its kind. `Err` says why it was refused.
    fn add_value(
        &mut self,
        kind: Option<Kind>,
        value: &str,
        id: u32,
        norm: &mut Vec<u8>,
    ) -> Result<Kind, String> {
        let raw = value.trim().as_bytes();
        let kind = kind.unwrap_or_else(|| indicator::detect(raw));
        match kind {
            Kind::Url => {
                indicator::normalize_url(raw, norm);
                if norm.is_empty() {
                    return Err("empty URL".into());
                }
                if !self.allow_broad_masks && masks::is_broad(norm) {
                    return Err("URL mask would match every URL (its host part is empty or only `*`); --allow-broad-masks keeps it".into());
                }
                self.add_url(norm, id);
            }
            Kind::Domain => {
                if !indicator::normalize_domain(raw, norm) {
                    return Err("no host in domain value".into());
                }
                // `*.evil.com` in a domain feed means what `evil.com` already does.
                let host = norm.strip_prefix(b"*.").unwrap_or(norm);
                if host.contains(&b'*') {
                    return Err("`*` inside a domain (use --kind url for masks)".into());
                }
                self.exact.push((hashtab::key(Tag::Domain, host), id));
            }
            Kind::Ip => {
                let range =
                    indicator::parse_ip_entry(raw).ok_or("not an IP address, CIDR or range")?;
                let which = (range.family == indicator::Family::V6) as usize;
                for (net, len) in indicator::range_to_cidrs(range) {
                    self.ips[which].push((len, net, id));
                }
            }
            Kind::Hash => {
                let mut d = [0u8; 32];
                let (len, which) = indicator::hash_digest(raw, &mut d)
                    .and_then(|len| Some((len, Digest::of_len(len)?)))
                    .ok_or("not a 32/40/64-digit hex digest")?;
                self.digests[which.index()].push((Box::from(&d[..len]), id));
            }
            Kind::Raw => {
                if raw.is_empty() {
                    return Err("empty value".into());
                }
                self.exact.push((hashtab::key(Tag::Raw, raw), id));
            }
        }
        Ok(kind)
    }

    fn add_url(&mut self, url: &[u8], id: u32) {
        if url.contains(&b'*') {
            self.masks.push((Box::from(url), id));
            // `a.com/x/*` also matches `a.com/x` (SPEC §3).
            if let Some(bare) = url.strip_suffix(b"/*") {
                if !bare.is_empty() {
                    self.add_url(bare, id);
                }
            }
        } else {
            self.exact.push((hashtab::key(Tag::Url, url), id));
        }
    }

    /// Serialize everything into index sections, in file order.
    pub fn finish(self) -> Result<Vec<(SectionId, Section)>, CompileError> {
        let build = |what| move |reason: String| CompileError::Build { what, reason };
        let mut post = postings::Builder::default();

        let meta = Meta {
            built_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            feeds: self.feeds,
        };
        let meta = rkyv::to_bytes::<rkyv::rancor::Error>(&meta)
            .map_err(|e| build("meta")(e.to_string()))?;
        // The record text is the largest thing in memory: serialize it, then let the
        // source go before anything else is built.
        let records = {
            let records = Records {
                offsets: self.offsets,
                text: self.text,
                exact_offsets: self.exact_offsets,
                exact_ids: self.exact_ids,
                exact_text: self.exact_text,
            };
            rkyv::to_bytes::<rkyv::rancor::Error>(&records)
                .map_err(|e| build("records")(e.to_string()))?
        };

        let m = masks::build(self.masks, &mut post).map_err(build("URL masks"))?;
        // Exact keys and mask buckets share one hashed table.
        let mut keys = post.group(self.exact);
        keys.extend(m.buckets);
        let exact_table = hashtab::build(&keys).map_err(build("exact keys"))?;
        drop(keys);

        let [md5, sha1, sha256] = self.digests;
        let digest_table = |d: Digest, e, post: &mut postings::Builder| {
            table_or_empty(e, |e| super::hashes::build(d.width(), e, post))
        };
        let md5 = digest_table(Digest::Md5, md5, &mut post);
        let sha1 = digest_table(Digest::Sha1, sha1, &mut post);
        let sha256 = digest_table(Digest::Sha256, sha256, &mut post);
        let [v4, v6] = self.ips;
        let v4 = table_or_empty(v4, |e| ip::build(4, e, &mut post));
        let v6 = table_or_empty(v6, |e| ip::build(16, e, &mut post));

        Ok(vec![
            (SectionId::Meta, Section::Aligned(meta)),
            (SectionId::Records, Section::Aligned(records)),
            (SectionId::Postings, Section::Plain(post.into_bytes())),
            (SectionId::Exact, Section::Plain(exact_table)),
            (SectionId::Masks, Section::Plain(m.table)),
            (SectionId::MaskPrefix, Section::Plain(m.prefix_fst)),
            (SectionId::MaskSuffix, Section::Plain(m.suffix_fst)),
            (SectionId::MaskInfix, Section::Plain(m.infix)),
            (SectionId::Md5, Section::Plain(md5)),
            (SectionId::Sha1, Section::Plain(sha1)),
            (SectionId::Sha256, Section::Plain(sha256)),
            (SectionId::Ipv4, Section::Plain(v4)),
            (SectionId::Ipv6, Section::Plain(v6)),
        ])
    }

    /// Finish into an in-memory index file image.
    pub fn finish_to_vec(self) -> Result<Vec<u8>, CompileError> {
        let sections = self.finish()?;
        let refs: Vec<(SectionId, &[u8])> =
            sections.iter().map(|(id, b)| (*id, b.as_ref())).collect();
        let mut cur = std::io::Cursor::new(Vec::new());
        format::write(&mut cur, &refs).map_err(|source| CompileError::Write {
            file: PathBuf::from("<memory>"),
            source,
        })?;
        Ok(cur.into_inner())
    }
}

fn table_or_empty<T>(entries: Vec<T>, build: impl FnOnce(Vec<T>) -> Vec<u8>) -> Vec<u8> {
    if entries.is_empty() {
        Vec::new()
    } else {
        build(entries)
    }
}

/// The feed reader's consumer for one feed.
struct FeedSink<'c> {
    compiler: &'c mut Compiler,
    kind: Option<Kind>,
    summary: FeedSummary,
    reasons: std::collections::HashMap<String, u64>,
    norm: Vec<u8>,
    path: &'c Path,
}

impl feed::Sink for FeedSink<'_> {
    fn record(&mut self, record: RawRecord<'_>) -> Result<Option<String>, FeedError> {
        self.summary.rows += 1;
        let c = &mut *self.compiler;
        let id = c.record_count();
        if id >= postings::LIST {
            return Err(FeedError::TooManyRecords {
                file: self.path.to_path_buf(),
                limit: postings::LIST as u64,
            });
        }
        let mut filed = 0;
        let mut refused = None;
        for v in record.values {
            let masks_before = c.masks.len();
            match c.add_value(self.kind, v, id, &mut self.norm) {
                Ok(kind) => {
                    filed += 1;
                    self.summary.entries[kind.index()] += 1;
                    if c.masks.len() > masks_before {
                        self.summary.masks += 1;
                    }
                }
                Err(reason) => refused = Some(format!("{reason}: `{}`", truncate(v, 80))),
            }
        }
        if filed == 0 {
            return Ok(Some(refused.unwrap_or_else(|| "no indicator value".into())));
        }
        if let Some(reason) = refused {
            // Some values of this record were filed: keep it, but say what was dropped.
            tracing::warn!("{}: {}", record.location, reason);
        }
        if records::needs_exact(record.fields.iter()) {
            if c.exact_offsets.is_empty() {
                c.exact_offsets.push(0);
            }
            records::encode_exact(&mut c.exact_text, record.fields.iter());
            c.exact_offsets.push(c.exact_text.len() as u64);
            c.exact_ids.push(id);
        }
        records::encode_context(&mut c.text, record.fields.iter());
        c.offsets.push(c.text.len() as u64);
        self.summary.records += 1;
        if let Some(bar) = &c.progress {
            if self.summary.records.is_multiple_of(4096) {
                bar.set_position(self.summary.records);
            }
        }
        Ok(None)
    }

    fn skip(&mut self, skip: Skip) -> Result<(), FeedError> {
        self.summary.skipped += 1;
        let kind = skip.reason.split(':').next().unwrap_or("").to_string();
        *self.reasons.entry(kind).or_default() += 1;
        if self.compiler.strict {
            return Err(FeedError::Strict { skip });
        }
        // The first skips of a feed name their row; past that only the count grows, so
        // a feed with a million bad rows does not drown the log.
        if self.summary.skipped <= 20 {
            tracing::warn!("skipped {skip}");
        } else if self.summary.skipped == 21 {
            tracing::warn!(
                "{}: more rows skipped; counts in the summary",
                skip.file.display()
            );
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
