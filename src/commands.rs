//! The operator commands other than `serve`: `compile`, `lookup`, `inspect`, and the
//! loading of feeds and index files that `serve` shares with them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::answer::Responder;
use crate::cli::{CompileArgs, FeedArgs, InspectArgs, LookupArgs};
use crate::compile::{self, CompileError, Compiler, FeedSpec, FeedSummary};
use crate::index::{Index, IndexError, IndexSet};
use crate::indicator::Kind;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0}")]
    Usage(String),
}

/// Everything `serve` or `lookup` loads: index files, then feeds compiled in memory.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub indexes: Vec<PathBuf>,
    pub feeds: Vec<FeedSpec>,
    pub strict: bool,
}

impl Sources {
    pub fn new(indexes: &[PathBuf], feeds: &FeedArgs) -> Result<Sources, LoadError> {
        Ok(Sources {
            indexes: indexes.to_vec(),
            feeds: feeds.specs().map_err(LoadError::Usage)?,
            strict: feeds.strict,
        })
    }

    /// The bundled demo feeds in `fixtures/` (what `serve` uses when given none).
    pub fn demo(root: &Path) -> Sources {
        let f = |name: &str, key: &str, kind: Option<Kind>| {
            let mut s = FeedSpec::new(root.join(name), key);
            s.kind = kind;
            s
        };
        Sources {
            indexes: Vec::new(),
            feeds: vec![
                f("demo_ioc.csv", "ioc", None),
                f("Phishing_URL_Data_Feed.json", "mask", Some(Kind::Url)),
                f("Malicious_Hash_Data_Feed.json", "MD5", Some(Kind::Hash)),
                f("ip_reputation.csv", "ip", Some(Kind::Ip)),
                f("bad_domains.txt", "domain", Some(Kind::Domain)),
            ],
            strict: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty() && self.feeds.is_empty()
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
            let index = Index::open(path)?;
            tracing::info!(
                file = %path.display(),
                records = index.record_count(),
                bytes = index.size(),
                ms = started.elapsed().as_millis() as u64,
                "index opened"
            );
            parts.push(index);
        }
        if !self.feeds.is_empty() {
            let mut compiler = Compiler::new(self.strict);
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

/// `tracer compile`.
pub fn compile(args: &CompileArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (spec, target) = args.spec().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut compiler = Compiler::new(args.strict).with_progress();
    let summary = compiler.add_feed(&spec)?;
    let read_secs = started.elapsed().as_secs_f64();
    let sections = compiler.finish()?;
    let bytes = compile::write_atomically(&target, &sections)?;
    writeln!(
        out,
        "compiled {} -> {}",
        spec.path.display(),
        target.display()
    )?;
    writeln!(out, "  category   {}", summary.category)?;
    writeln!(out, "  rows read  {}", summary.rows + summary.skipped)?;
    writeln!(out, "  records    {}", summary.records)?;
    for kind in Kind::ALL {
        let n = summary.entries[kind.index()];
        if n > 0 {
            let extra = if kind == Kind::Url {
                format!(" ({} masks)", summary.masks)
            } else {
                String::new()
            };
            writeln!(out, "  {:<10} {n}{extra}", kind.name())?;
        }
    }
    writeln!(out, "  skipped    {}", summary.skipped)?;
    for (reason, n) in &summary.skip_reasons {
        writeln!(out, "    {n:>8}  {reason}")?;
    }
    writeln!(
        out,
        "  index      {bytes} bytes in {:.2}s (reading {read_secs:.2}s)",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// `tracer lookup`: the arguments form one request line; print its answer.
pub fn lookup(args: &LookupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let sources = Sources::new(&args.indexes, &args.feeds)?;
    if sources.is_empty() {
        anyhow::bail!("give an index with -l FILE.tracer or a feed with -f FILE -k KEY");
    }
    let set = sources.load()?;
    let line = args.indicators.join("|");
    let mut answer = Vec::new();
    Responder::new(args.max_hits).answer(&set, line.as_bytes(), &mut answer);
    out.write_all(&answer)?;
    Ok(())
}

/// `tracer inspect`.
pub fn inspect(args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    for path in &args.indexes {
        let started = Instant::now();
        let index = Index::open(path)?;
        let open_ms = started.elapsed().as_secs_f64() * 1000.0;
        let meta = index.meta();
        let c = index.counts();
        writeln!(out, "{}", path.display())?;
        writeln!(out, "  format version  {}", index.header().version)?;
        writeln!(
            out,
            "  written by      tracer {} ({})",
            meta.tool_version,
            index.header().crate_versions
        )?;
        writeln!(out, "  built           {} (unix time)", meta.built_unix)?;
        writeln!(
            out,
            "  size            {} bytes, opened and verified in {open_ms:.1} ms",
            index.size()
        )?;
        writeln!(out, "  records         {}", c.records)?;
        writeln!(
            out,
            "  exact keys      {} (URLs, domains, raw)",
            c.exact_keys
        )?;
        writeln!(
            out,
            "  mask patterns   {} ({} in the DFA)",
            c.masks, c.dfa_masks
        )?;
        writeln!(
            out,
            "  hashes          md5 {}, sha1 {}, sha256 {}",
            c.md5, c.sha1, c.sha256
        )?;
        writeln!(
            out,
            "  IP blocks       v4 {}, v6 {}",
            c.ipv4_blocks, c.ipv6_blocks
        )?;
        writeln!(out, "  sections")?;
        for (id, range) in &index.header().sections {
            writeln!(
                out,
                "    {:<20} {:>12} bytes at {}",
                id.name(),
                range.len(),
                range.start
            )?;
        }
        writeln!(out, "  feeds")?;
        for f in &meta.feeds {
            let entries: Vec<String> = Kind::ALL
                .iter()
                .filter(|k| f.entries.get(k.index()).copied().unwrap_or(0) > 0)
                .map(|k| format!("{} {}", k.name(), f.entries[k.index()]))
                .collect();
            writeln!(
                out,
                "    {} ({}; key {}, kind {}): {} records; {}; {} rows skipped",
                f.category,
                f.source,
                f.key,
                f.kind,
                f.records,
                entries.join(", "),
                f.skipped
            )?;
        }
    }
    Ok(())
}
