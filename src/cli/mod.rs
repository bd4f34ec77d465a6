//! The command line: clap structs, and their translation into the library's typed
//! configs (`serve::Config`, `engine::Sources`, `FeedSpec`, `generate::Options`).
//! Usage errors are caught here, before anything starts.
//!
//! The Python tool's spellings still work: `tracer -f FEED -k KEY` (no subcommand)
//! serves, `tracer -d FEED -k KEY` compiles ("dump"), and `-l` may repeat. See
//! [`rewrite_legacy`].

pub mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use tracer::engine::Sources;
use tracer::feed::Format;
use tracer::index::compile::FeedSpec;
use tracer::index::storage::IndexMode;
use tracer::indicator::Kind;
use tracer::serve::{self, IoMode};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Threat-intelligence lookup server for KUMA (CyberTrace protocol)"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `tracer=debug`. Default:
    /// `info` for serve and compile, `warn` for the other commands.
    #[arg(long, global = true, env = "TRACER_LOG")]
    pub log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for shipping
    /// tracer's own logs into a SIEM.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve lookups over TCP (KUMA `cybertrace` source kind).
    Serve(ServeArgs),
    /// Compile one feed into an index file.
    Compile(CompileArgs),
    /// Answer indicators from the command line, printing what the server would send.
    Lookup(LookupArgs),
    /// Print an index file's header, feeds and counts.
    Inspect(InspectArgs),
    /// Write large synthetic feeds (for benchmarks and load tests).
    Generate(GenerateArgs),
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--kind` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Auto,
    Url,
    Domain,
    Ip,
    Hash,
    Raw,
}

impl KindArg {
    fn kind(self) -> Option<Kind> {
        match self {
            KindArg::Auto => None,
            KindArg::Url => Some(Kind::Url),
            KindArg::Domain => Some(Kind::Domain),
            KindArg::Ip => Some(Kind::Ip),
            KindArg::Hash => Some(Kind::Hash),
            KindArg::Raw => Some(Kind::Raw),
        }
    }
}

/// `--format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Json,
    Ndjson,
    Csv,
    Text,
}

impl FormatArg {
    fn format(self) -> Format {
        match self {
            FormatArg::Json => Format::Json,
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::Csv => Format::Csv,
            FormatArg::Text => Format::Text,
        }
    }
}

/// Feeds given as source files. Each of `-k`, `--kind`, `--category`, `--records`,
/// `--format` is given once (applies to every `-f`) or once per `-f`, in order.
#[derive(Args, Debug, Clone, Default)]
pub struct FeedArgs {
    /// Feed file (JSON, NDJSON, CSV, text), compiled in memory at start.
    #[arg(short = 'f', long = "feed")]
    pub feeds: Vec<PathBuf>,
    /// Indicator field of the feed, dotted for nested fields (`files.MD5`); a text
    /// feed needs none.
    #[arg(short = 'k', long = "key")]
    pub keys: Vec<String>,
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<KindArg>,
    /// Category name in answers (default: the file stem).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Path of the records array inside a JSON object (`response.Attribute`).
    #[arg(long = "records")]
    pub records: Vec<String>,
    #[arg(long = "format", value_enum)]
    pub formats: Vec<FormatArg>,
    /// Fail on the first malformed row instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Keep URL masks that would match every URL (`*`, `*/*`, `scheme:/*`); they are
    /// skipped as bad rows otherwise.
    #[arg(long)]
    pub allow_broad_masks: bool,
}

/// Pick the value for feed `i` of `n`: one per feed, or one for all.
fn per_feed<T: Clone>(name: &str, values: &[T], i: usize, n: usize) -> Result<Option<T>, String> {
    match values.len() {
        0 => Ok(None),
        1 => Ok(Some(values[0].clone())),
        m if m == n => Ok(Some(values[i].clone())),
        m => Err(format!(
            "{m} {name} values for {n} feeds: give one, or one per -f"
        )),
    }
}

impl FeedArgs {
    pub fn specs(&self) -> Result<Vec<FeedSpec>, String> {
        let n = self.feeds.len();
        let mut out = Vec::with_capacity(n);
        for (i, path) in self.feeds.iter().enumerate() {
            // No `-k`: fine for a text feed; other formats say so when read.
            let key = per_feed("-k", &self.keys, i, n)?.unwrap_or_default();
            let mut spec = FeedSpec::new(path.clone(), key);
            spec.kind = per_feed("--kind", &self.kinds, i, n)?.and_then(KindArg::kind);
            spec.category = per_feed("--category", &self.categories, i, n)?;
            spec.records = per_feed("--records", &self.records, i, n)?;
            spec.format = per_feed("--format", &self.formats, i, n)?.map(FormatArg::format);
            out.push(spec);
        }
        Ok(out)
    }
}

/// `--index-mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IndexModeArg {
    /// Read each index file into memory: nothing done to the file afterwards
    /// changes what is served.
    Read,
    /// Map a private copy of each index file (for indexes larger than memory; costs
    /// the disk space of the copy).
    Map,
}

impl IndexModeArg {
    fn mode(self) -> IndexMode {
        match self {
            IndexModeArg::Read => IndexMode::Read,
            IndexModeArg::Map => IndexMode::Map,
        }
    }
}

/// `--io` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoArg {
    Auto,
    Uring,
    Epoll,
}

impl IoArg {
    fn mode(self) -> IoMode {
        match self {
            IoArg::Auto => IoMode::Auto,
            IoArg::Uring => IoMode::Uring,
            IoArg::Epoll => IoMode::Epoll,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub feeds: FeedArgs,
    /// Compiled index file; may repeat.
    #[arg(short = 'l', long = "load")]
    pub indexes: Vec<PathBuf>,
    /// How index files are held while served.
    #[arg(long, value_enum, default_value = "read")]
    pub index_mode: IndexModeArg,
    /// Start even though another tracer serves this port: share it, then tell the
    /// other one to drain and exit (a zero-downtime upgrade or restart).
    #[arg(long)]
    pub takeover: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:16666")]
    pub listen: SocketAddr,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// I/O runtime: io_uring, epoll, or io_uring when the kernel allows it.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoArg,
    /// Most hits returned per indicator.
    #[arg(long, default_value_t = 32)]
    pub max_hits: usize,
    /// Most hit lines in the answer to one request line; the answer ends there.
    #[arg(long, default_value_t = 1024)]
    pub max_hits_per_line: usize,
    /// Longest request line in bytes; longer lines are discarded and answered empty.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_line: usize,
    /// Most open connections; more are closed at once.
    #[arg(long, default_value_t = 16384)]
    pub max_connections: usize,
    /// Close a connection idle this many seconds (default: never).
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// After SIGTERM, seconds connections may take to answer what they received
    /// before they are closed anyway.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Accept clients only from these networks (comma-separated CIDRs).
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Log every request at debug level.
    #[arg(long)]
    pub log_requests: bool,
    /// Also write logs to this file, rotated daily.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Reload when a feed or index file changes (polled every 2 s).
    #[arg(long)]
    pub watch: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Benchmarking only: answer `LookupFinished` to every line without looking
    /// anything up (the transport ceiling `loadtest` compares against).
    #[arg(long, hide = true)]
    pub bare: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// Feed file to compile.
    #[arg(required_unless_present = "dump")]
    pub feed: Option<PathBuf>,
    /// The Python tool's spelling of FEED ("dump").
    #[arg(short = 'd', long = "dump", hide = true)]
    pub dump: Option<PathBuf>,
    /// Indicator field (not needed for a text feed).
    #[arg(short = 'k', long = "key")]
    pub key: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub kind: KindArg,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long)]
    pub records: Option<String>,
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    #[arg(long)]
    pub strict: bool,
    /// Keep URL masks that would match every URL.
    #[arg(long)]
    pub allow_broad_masks: bool,
    /// Output file (default: FEED.tracer).
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

impl CompileArgs {
    pub fn spec(&self) -> Result<(FeedSpec, PathBuf), String> {
        let feed = self
            .feed
            .clone()
            .or_else(|| self.dump.clone())
            .ok_or("give the feed file")?;
        let out = self.out.clone().unwrap_or_else(|| {
            let mut name = feed.clone().into_os_string();
            name.push(".tracer");
            PathBuf::from(name)
        });
        let mut spec = FeedSpec::new(feed, self.key.clone().unwrap_or_default());
        spec.kind = self.kind.kind();
        spec.category = self.category.clone();
        spec.records = self.records.clone();
        spec.format = self.format.map(FormatArg::format);
        Ok((spec, out))
    }
}

#[derive(Args, Debug, Clone)]
pub struct LookupArgs {
    /// Compiled index file; may repeat.
    #[arg(short = 'l', long = "load")]
    pub indexes: Vec<PathBuf>,
    #[command(flatten)]
    pub feeds: FeedArgs,
    #[arg(long, default_value_t = 32)]
    pub max_hits: usize,
    #[arg(long, default_value_t = 1024)]
    pub max_hits_per_line: usize,
    /// Indicators as `key=value` (`url=…`, `ip=…`, `hash=…`, `domain=…`) or bare
    /// values; together they form one request line.
    #[arg(required = true)]
    pub indicators: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub indexes: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Directory to write the feeds into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub urls: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub hashes: usize,
    #[arg(long, default_value_t = 200_000)]
    pub ips: usize,
    #[arg(long, default_value_t = 100_000)]
    pub domains: usize,
    /// Also write `mixed.csv` (`ioc,context`) with this many rows of every kind
    /// (URLs, masks, hashes, IPs, CIDRs), for `--kind auto` compiles.
    #[arg(long, default_value_t = 0)]
    pub mixed: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Map the Python tool's invocations onto subcommands: `tracer -d F -k K` compiles,
/// `tracer -f F -k K` / `tracer -l X` serves.
pub fn rewrite_legacy(mut args: Vec<String>) -> Vec<String> {
    // Skip the global options (`--log X`, `--log-format X`, `--log=X`) to the first
    // word that says what to do.
    let mut i = 1;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--log" | "--log-format" => i += 2,
            a if a.starts_with("--log=") || a.starts_with("--log-format=") => i += 1,
            _ => break,
        }
    }
    let Some(first) = args.get(i) else {
        return args;
    };
    let is_flag = first.starts_with('-');
    let is_meta = matches!(first.as_str(), "-h" | "--help" | "-V" | "--version");
    if is_flag && !is_meta {
        let sub = if args.iter().any(|a| a == "-d") {
            "compile"
        } else {
            "serve"
        };
        args.insert(i, sub.to_string());
    }
    args
}

impl GenerateArgs {
    pub fn options(&self) -> tracer::generate::Options {
        tracer::generate::Options {
            out: self.out.clone(),
            urls: self.urls,
            hashes: self.hashes,
            ips: self.ips,
            domains: self.domains,
            mixed: self.mixed,
            seed: self.seed,
        }
    }
}

/// Parse `--allow` networks.
pub fn parse_allow(list: &[String]) -> Result<Vec<tracer::indicator::IpRange>, String> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            tracer::indicator::parse_ip_entry(s.trim().as_bytes())
                .ok_or_else(|| format!("--allow: `{s}` is not an address, CIDR or range"))
        })
        .collect()
}

impl ServeArgs {
    /// What to serve: `-l` index files, then `-f` feeds.
    pub fn sources(&self) -> Result<Sources, String> {
        Ok(Sources {
            indexes: self.indexes.clone(),
            feeds: self.feeds.specs()?,
            strict: self.feeds.strict,
            allow_broad_masks: self.feeds.allow_broad_masks,
            index_mode: self.index_mode.mode(),
        })
    }

    /// The validated server settings.
    pub fn config(&self) -> Result<serve::Config, String> {
        if self.max_line == 0
            || self.max_hits == 0
            || self.max_hits_per_line == 0
            || self.max_connections == 0
        {
            return Err(
                "--max-line, --max-hits, --max-hits-per-line and --max-connections must be positive"
                    .into(),
            );
        }
        if !(self.drain_timeout.is_finite() && self.drain_timeout >= 0.0) {
            return Err("--drain-timeout must be a number of seconds".into());
        }
        let threads = match self.threads {
            Some(0) => return Err("--threads must be positive".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(serve::Config {
            listen: self.listen,
            threads,
            io: self.io.mode(),
            max_hits: self.max_hits,
            max_hits_per_line: self.max_hits_per_line,
            max_line: self.max_line,
            max_connections: self.max_connections,
            idle_timeout: self
                .idle_timeout
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            drain_timeout: Duration::from_secs_f64(self.drain_timeout),
            allow: parse_allow(&self.allow)?,
            log_requests: self.log_requests,
            takeover: self.takeover,
            watch: self.watch,
            metrics: self.metrics,
            bare: self.bare,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn legacy_spellings_map_to_subcommands() {
        assert_eq!(
            rewrite_legacy(v(&["tracer", "-f", "a.csv", "-k", "ioc"]))[1],
            "serve"
        );
        assert_eq!(
            rewrite_legacy(v(&["tracer", "-d", "a.csv", "-k", "ioc"]))[1],
            "compile"
        );
        assert_eq!(
            rewrite_legacy(v(&["tracer", "-l", "a.tracer", "-l", "b.tracer"]))[1],
            "serve"
        );
        assert_eq!(rewrite_legacy(v(&["tracer", "inspect", "x"]))[1], "inspect");
        assert_eq!(
            rewrite_legacy(v(&["tracer", "--log-format", "json", "compile", "x"])),
            v(&["tracer", "--log-format", "json", "compile", "x"])
        );
        assert_eq!(
            rewrite_legacy(v(&["tracer", "--log", "debug", "-f", "a.csv", "-k", "ioc"]))[3],
            "serve"
        );
        let cli = Cli::try_parse_from(rewrite_legacy(v(&["tracer", "-d", "a.csv", "-k", "ioc"])))
            .expect("legacy dump parses");
        match cli.command {
            Command::Compile(c) => {
                assert_eq!(c.spec().expect("spec").1, PathBuf::from("a.csv.tracer"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn per_feed_options_pair_by_position() {
        let f = FeedArgs {
            feeds: vec!["a.csv".into(), "b.json".into()],
            keys: vec!["ioc".into(), "mask".into()],
            kinds: vec![KindArg::Domain],
            ..FeedArgs::default()
        };
        let specs = f.specs().expect("valid");
        assert_eq!(specs[1].key, "mask");
        assert_eq!(specs[1].kind, Some(Kind::Domain));
        let bad = FeedArgs {
            feeds: vec!["a".into(), "b".into(), "c".into()],
            keys: vec!["x".into(), "y".into()],
            ..FeedArgs::default()
        };
        assert!(bad.specs().is_err());
    }
}
