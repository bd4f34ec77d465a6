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

use tracer::config::{self, LogFormat, Resolved};
use tracer::feed::Format;
use tracer::index::compile::FeedSpec;
use tracer::index::storage::IndexMode;
use tracer::indicator::Kind;
use tracer::serve::IoMode;

#[derive(Parser, Debug, Clone)]
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
    /// tracer's own logs into a SIEM [default: text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Serve lookups over TCP (KUMA `cybertrace` source kind).
    Serve(Box<ServeArgs>),
    /// Compile one feed into an index file.
    Compile(CompileArgs),
    /// Answer indicators from the command line, printing what the server would send.
    Lookup(LookupArgs),
    /// Print an index file's header, feeds and counts.
    Inspect(InspectArgs),
    /// Write large synthetic feeds (for benchmarks and load tests).
    Generate(GenerateArgs),
    /// Check a configuration file and print the settings it gives, secrets masked.
    CheckConfig(CheckConfigArgs),
    /// Write a self-signed certificate and key for the HTTP API (a first run).
    Cert(CertArgs),
    /// Read a password from standard input and print its hash, for `password_hash`.
    Passwd,
}

#[derive(Args, Debug, Clone)]
pub struct CertArgs {
    /// Names and addresses the certificate is for (repeatable), e.g. `--host
    /// tracer.corp.example --host 10.0.0.5`.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// Directory to write `cert.pem` and `key.pem` into (created if needed).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CheckConfigArgs {
    pub file: PathBuf,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl LogFormatArg {
    pub fn format(self) -> LogFormat {
        match self {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
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

/// `serve`'s flags. Each one, when given, overrides the config file (or, without a
/// file, the default named in its help).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Configuration file (TOML; `deploy/tracer.toml` shows every key). Flags given
    /// here win over it; `-f`/`-l` replace its feeds/indexes.
    #[arg(long, env = "TRACER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub feeds: FeedArgs,
    /// Compiled index file; may repeat.
    #[arg(short = 'l', long = "load")]
    pub indexes: Vec<PathBuf>,
    /// How index files are held while served [default: read].
    #[arg(long, value_enum)]
    pub index_mode: Option<IndexModeArg>,
    /// Start even though another tracer serves this port: share it, then tell the
    /// other one to drain and exit (a zero-downtime upgrade or restart).
    #[arg(long)]
    pub takeover: bool,
    /// Address to listen on [default: 127.0.0.1:16666].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Worker threads [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// I/O runtime: io_uring, epoll, or io_uring when the kernel allows it
    /// [default: auto].
    #[arg(long, value_enum)]
    pub io: Option<IoArg>,
    /// Most hits returned per indicator [default: 32].
    #[arg(long)]
    pub max_hits: Option<usize>,
    /// Most hit lines in the answer to one request line; the answer ends there
    /// [default: 1024].
    #[arg(long)]
    pub max_hits_per_line: Option<usize>,
    /// Longest request line in bytes; longer lines are discarded and answered empty
    /// [default: 65536].
    #[arg(long)]
    pub max_line: Option<usize>,
    /// Most open connections; more are closed at once [default: 16384].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Close a connection idle this many seconds (0: never) [default: never].
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// After SIGTERM, seconds connections may take to answer what they received
    /// before they are closed anyway [default: 5].
    #[arg(long)]
    pub drain_timeout: Option<f64>,
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
    /// Also serve the HTTP API (KUMA `cybertrace-http`) on ADDR, over TLS with
    /// --tls-cert and --tls-key (the config file's [http] section says more).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// The HTTP API's certificate chain (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The HTTP API's private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
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
    /// Configuration file: its feeds, indexes and enrichers answer, as the server's
    /// would (`-f`/`-l` replace its feeds/indexes).
    #[arg(long, env = "TRACER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Compiled index file; may repeat.
    #[arg(short = 'l', long = "load")]
    pub indexes: Vec<PathBuf>,
    #[command(flatten)]
    pub feeds: FeedArgs,
    #[arg(long)]
    pub max_hits: Option<usize>,
    #[arg(long)]
    pub max_hits_per_line: Option<usize>,
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
    /// The settings to serve with: the config file (if any) resolved, then every flag
    /// given laid over it. With neither a file nor a feed, the demo feeds.
    pub fn resolve(&self, cli: &Cli) -> Result<Resolved, String> {
        let mut r = match &self.config {
            Some(path) => config::load(path).map_err(|e| e.to_string())?,
            None => config::File::default()
                .resolve(None)
                .map_err(|e| e.to_string())?,
        };
        self.apply(cli, &mut r)?;
        Ok(r)
    }

    /// Lay the flags given over `r`.
    pub fn apply(&self, cli: &Cli, r: &mut Resolved) -> Result<(), String> {
        let c = &mut r.serve;
        if let Some(v) = self.listen {
            c.listen = v;
        }
        match self.threads {
            Some(0) => return Err("--threads must be positive".into()),
            Some(n) => c.threads = n,
            None => {}
        }
        if let Some(io) = self.io {
            c.io = io.mode();
        }
        for (v, flag) in [
            (self.max_hits, "--max-hits"),
            (self.max_hits_per_line, "--max-hits-per-line"),
            (self.max_line, "--max-line"),
            (self.max_connections, "--max-connections"),
        ] {
            if v == Some(0) {
                return Err(format!("{flag} must be positive"));
            }
        }
        c.max_hits = self.max_hits.unwrap_or(c.max_hits);
        c.max_hits_per_line = self.max_hits_per_line.unwrap_or(c.max_hits_per_line);
        c.max_line = self.max_line.unwrap_or(c.max_line);
        c.max_connections = self.max_connections.unwrap_or(c.max_connections);
        if let Some(secs) = self.idle_timeout {
            c.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(secs) = self.drain_timeout {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err("--drain-timeout must be a number of seconds".into());
            }
            c.drain_timeout = Duration::from_secs_f64(secs);
        }
        if !self.allow.is_empty() {
            c.allow = parse_allow(&self.allow)?;
        }
        c.log_requests |= self.log_requests;
        c.takeover |= self.takeover;
        c.watch |= self.watch;
        c.bare |= self.bare;
        if self.metrics.is_some() {
            c.metrics = self.metrics;
        }
        if self.http_listen.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() {
            let http = c.http.get_or_insert_with(|| {
                tracer::serve::config::HttpSettings::new(([127, 0, 0, 1], 9443).into())
            });
            if let Some(a) = self.http_listen {
                http.listen = a;
            }
            match (&self.tls_cert, &self.tls_key, &mut http.tls) {
                (Some(cert), Some(key), tls) => {
                    *tls = Some(tracer::serve::config::TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    })
                }
                (Some(cert), None, Some(t)) => t.cert = cert.clone(),
                (None, Some(key), Some(t)) => t.key = key.clone(),
                (None, None, Some(_)) => {}
                _ => {
                    return Err(
                        "the HTTP API needs --tls-cert and --tls-key (PEM files; `tracer cert` makes a pair), or `tls = false` in the config file's [http] section".into(),
                    )
                }
            }
            if http.users.is_empty() && !http.allow_anonymous && !http.listen.ip().is_loopback() {
                return Err(format!(
                    "the HTTP API on {} would serve anyone beyond this machine: add [[http.user]] entries in a config file, or set allow_anonymous = true there",
                    http.listen
                ));
            }
        }
        let s = &mut r.plan.sources;
        if !self.feeds.feeds.is_empty() {
            s.feeds = self.feeds.specs()?;
        }
        if !self.indexes.is_empty() {
            s.indexes = self.indexes.clone();
        }
        s.strict |= self.feeds.strict;
        s.allow_broad_masks |= self.feeds.allow_broad_masks;
        if let Some(m) = self.index_mode {
            s.index_mode = m.mode();
        }
        if cli.log.is_some() {
            r.log.filter = cli.log.clone();
        }
        if let Some(f) = cli.log_format {
            r.log.format = f.format();
        }
        if self.log_file.is_some() {
            r.log.file = self.log_file.clone();
        }
        Ok(())
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
