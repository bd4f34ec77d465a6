//! The configuration file (SPEC §10): `tracer serve --config tracer.toml`.
//!
//! Everything the command line can say, the file can say (a flag `--max-hits`
//! is the key `max_hits`), plus what only a file holds well: many feeds, index
//! files, enrichers, the HTTP listener. The file is read into [`File`], whose
//! fields are all optional, then [`File::resolve`]d into the typed settings the
//! server, the engine and the enrichers take ([`Resolved`]), with defaults filled
//! in; the command line then sets what its flags say (flags win).
//!
//! Errors name the key and its line: unknown keys and wrong types come from the TOML
//! reader; missing or contradictory settings of a `[[feed]]`, `[[enricher]]`… are
//! reported at that table's line. Any string may be `${ENV_VAR}` (or contain it), and
//! secrets have a `…_file` twin that reads the value from a file, so no secret needs
//! to sit in the file. Relative paths are relative to the file's directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::engine::{Plan, Sources};
use crate::enrich::client::shown_url;
use crate::enrich::{self, exec, http};
use crate::feed::Format;
use crate::index::compile::FeedSpec;
use crate::index::storage::IndexMode;
use crate::indicator::Kind;
use crate::serve::config::{Credential, HttpSettings, HttpUser, TlsFiles};
use crate::serve::{self, IoMode};
use crate::update::RemoteFeed;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The TOML reader's message (it names line, column and key).
    #[error("{}: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    #[error("{}: line {line}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// A string from the file: `${NAME}` in it is replaced by the environment variable
/// `NAME` (an error naming the key and line when it is not set).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw).map(Text).map_err(serde::de::Error::custom)
    }
}

fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without `}}` in {raw:?}"))?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration written as a string: `"500ms"`, `"2s"`, `"30m"`, `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"30m\""
                ))
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoName {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexModeName {
    Read,
    Map,
}

/// `log_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    Auto,
    Url,
    Domain,
    Ip,
    Hash,
    Raw,
}

impl KindName {
    fn kind(self) -> Option<Kind> {
        match self {
            KindName::Auto => None,
            KindName::Url => Some(Kind::Url),
            KindName::Domain => Some(Kind::Domain),
            KindName::Ip => Some(Kind::Ip),
            KindName::Hash => Some(Kind::Hash),
            KindName::Raw => Some(Kind::Raw),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    Json,
    Ndjson,
    Csv,
    Text,
}

impl FormatName {
    fn format(self) -> Format {
        match self {
            FormatName::Json => Format::Json,
            FormatName::Ndjson => Format::Ndjson,
            FormatName::Csv => Format::Csv,
            FormatName::Text => Format::Text,
        }
    }
}

/// The request kinds an enricher answers (`kinds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    Url,
    Domain,
    Ip,
    Hash,
}

impl RequestKind {
    fn kind(self) -> Kind {
        match self {
            RequestKind::Url => Kind::Url,
            RequestKind::Domain => Kind::Domain,
            RequestKind::Ip => Kind::Ip,
            RequestKind::Hash => Kind::Hash,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnricherType {
    Urldecode,
    Http,
    Misp,
    Exec,
}

/// The file, as read: every key optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<Text>,
    pub threads: Option<usize>,
    pub io: Option<IoName>,
    pub index_mode: Option<IndexModeName>,
    pub max_hits: Option<usize>,
    pub max_hits_per_line: Option<usize>,
    pub max_line: Option<usize>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub allow: Option<Vec<Text>>,
    pub log: Option<Text>,
    pub log_file: Option<Text>,
    pub log_format: Option<LogFormat>,
    pub log_requests: Option<bool>,
    pub watch: Option<bool>,
    pub strict: Option<bool>,
    pub allow_broad_masks: Option<bool>,
    pub takeover: Option<bool>,
    /// Where downloaded feeds and their compiled indexes are kept (§13).
    pub state_dir: Option<Text>,
    #[serde(default)]
    pub feed: Vec<Spanned<FeedEntry>>,
    #[serde(default)]
    pub index: Vec<Spanned<IndexEntry>>,
    #[serde(default)]
    pub enricher: Vec<Spanned<EnricherEntry>>,
    pub http: Option<Spanned<HttpSection>>,
    pub metrics: Option<MetricsSection>,
}

/// `[[feed]]`: a feed file, or (§13) a feed downloaded from a URL.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedEntry {
    pub path: Option<Text>,
    pub url: Option<Text>,
    pub key: Option<Text>,
    pub kind: Option<KindName>,
    pub category: Option<Text>,
    pub records: Option<Text>,
    pub format: Option<FormatName>,
    pub refresh: Option<Dur>,
    pub headers: Option<BTreeMap<String, Text>>,
    pub username: Option<Text>,
    pub password: Option<Text>,
    pub password_file: Option<Text>,
    pub max_skipped: Option<u64>,
    pub ca_file: Option<Text>,
    pub tls_verify: Option<bool>,
}

/// `[[index]]`: a compiled index file, as `-l`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    pub path: Text,
}

/// `[[enricher]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnricherEntry {
    pub name: Text,
    #[serde(rename = "type")]
    pub kind: EnricherType,
    pub kinds: Option<Vec<RequestKind>>,
    pub category: Option<Text>,
    pub timeout: Option<Dur>,
    pub ttl: Option<Dur>,
    pub negative_ttl: Option<Dur>,
    pub cache_size: Option<usize>,
    pub concurrency: Option<usize>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown: Option<Dur>,
    pub ca_file: Option<Text>,
    pub tls_verify: Option<bool>,
    // http
    pub method: Option<Text>,
    pub url: Option<Text>,
    pub headers: Option<BTreeMap<String, Text>>,
    pub body: Option<Text>,
    pub records: Option<Text>,
    // misp
    pub key: Option<Text>,
    pub key_file: Option<Text>,
    pub tags: Option<Vec<Text>>,
    pub to_ids: Option<bool>,
    pub limit: Option<u32>,
    // exec
    pub command: Option<Vec<Text>>,
    pub processes: Option<usize>,
}

/// `[http]` (§12).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub listen: Option<Text>,
    pub tls: Option<bool>,
    pub tls_cert: Option<Text>,
    pub tls_key: Option<Text>,
    pub allow_anonymous: Option<bool>,
    pub max_inflight: Option<usize>,
    pub max_body: Option<usize>,
    pub request_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    #[serde(default)]
    pub user: Vec<Spanned<UserEntry>>,
}

/// `[[http.user]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: Text,
    pub password_hash: Option<Text>,
    pub password_file: Option<Text>,
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<Spanned<Text>>,
}

/// Logging, as the binary sets it up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSettings {
    pub filter: Option<String>,
    pub file: Option<PathBuf>,
    pub format: LogFormat,
}

/// Everything a server is started with, defaults filled in.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub serve: serve::Config,
    pub plan: Plan,
    pub log: LogSettings,
}

impl File {
    /// Read and parse a config file (nothing resolved yet).
    pub fn read(path: &Path) -> Result<(File, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let file = toml::from_str::<File>(&text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Ok((file, text))
    }

    /// The settings, defaults filled in. `source` names the file (and holds its text,
    /// for line numbers) when there is one; relative paths are taken from its
    /// directory.
    pub fn resolve(&self, source: Option<(&Path, &str)>) -> Result<Resolved, ConfigError> {
        let name = source.map_or_else(|| PathBuf::from("<command line>"), |(p, _)| p.to_path_buf());
        let base = source
            .and_then(|(p, _)| p.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let text = source.map_or("", |(_, t)| t);
        let line_of = |span: std::ops::Range<usize>| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        };
        let err = |line: usize, message: String| ConfigError::Invalid {
            file: name.clone(),
            line,
            message,
        };
        // The line of a top-level key (for errors found after parsing).
        let key_line = |key: &str| {
            text.lines()
                .position(|l| {
                    l.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                })
                .map_or(0, |i| i + 1)
        };
        let path = |t: &Text| {
            let p = PathBuf::from(&t.0);
            if p.is_absolute() || source.is_none() {
                p
            } else {
                base.join(p)
            }
        };
        let secret = |inline: &Option<Text>,
                      file: &Option<Text>,
                      line: usize,
                      what: &str|
         -> Result<Option<String>, ConfigError> {
            match (inline, file) {
                (Some(_), Some(_)) => Err(err(
                    line,
                    format!("give `{what}` or `{what}_file`, not both"),
                )),
                (Some(v), None) => Ok(Some(v.0.clone())),
                (None, Some(f)) => {
                    let p = path(f);
                    std::fs::read_to_string(&p)
                        .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                        .map_err(|e| err(line, format!("`{what}_file` {}: {e}", p.display())))
                }
                (None, None) => Ok(None),
            }
        };

        let mut cfg = serve::Config::new(match &self.listen {
            Some(t) => t.0.parse().map_err(|_| {
                err(
                    key_line("listen"),
                    format!("`listen`: `{}` is not an address:port", t.0),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 16666)),
        });
        if let Some(n) = self.threads {
            if n == 0 {
                return Err(err(
                    key_line("threads"),
                    "`threads` must be positive".into(),
                ));
            }
            cfg.threads = n;
        }
        cfg.io = match self.io {
            Some(IoName::Uring) => IoMode::Uring,
            Some(IoName::Epoll) => IoMode::Epoll,
            _ => IoMode::Auto,
        };
        for (v, key) in [
            (self.max_hits, "max_hits"),
            (self.max_hits_per_line, "max_hits_per_line"),
            (self.max_line, "max_line"),
            (self.max_connections, "max_connections"),
        ] {
            if v == Some(0) {
                return Err(err(key_line(key), format!("`{key}` must be positive")));
            }
        }
        cfg.max_hits = self.max_hits.unwrap_or(cfg.max_hits);
        cfg.max_hits_per_line = self.max_hits_per_line.unwrap_or(cfg.max_hits_per_line);
        cfg.max_line = self.max_line.unwrap_or(cfg.max_line);
        cfg.max_connections = self.max_connections.unwrap_or(cfg.max_connections);
        cfg.idle_timeout = self.idle_timeout.map(|d| d.0).filter(|d| !d.is_zero());
        cfg.drain_timeout = self.drain_timeout.map_or(cfg.drain_timeout, |d| d.0);
        cfg.allow = self
            .allow
            .iter()
            .flatten()
            .filter(|t| !t.0.trim().is_empty())
            .map(|t| {
                crate::indicator::parse_ip_entry(t.0.trim().as_bytes()).ok_or_else(|| {
                    err(
                        key_line("allow"),
                        format!("`allow`: `{}` is not an address, CIDR or range", t.0),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        cfg.log_requests = self.log_requests.unwrap_or(false);
        cfg.watch = self.watch.unwrap_or(false);
        cfg.takeover = self.takeover.unwrap_or(false);
        cfg.metrics = match self.metrics.as_ref().and_then(|m| m.listen.as_ref()) {
            Some(t) => Some(t.get_ref().0.parse().map_err(|_| {
                err(
                    line_of(t.span()),
                    format!(
                        "`metrics.listen`: `{}` is not an address:port",
                        t.get_ref().0
                    ),
                )
            })?),
            None => None,
        };

        cfg.http = match &self.http {
            Some(h) => Some(resolve_http(h, &line_of, &err, &path)?),
            None => None,
        };

        let state_dir = self
            .state_dir
            .as_ref()
            .map(path)
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from));
        let strict = self.strict.unwrap_or(false);
        let allow_broad_masks = self.allow_broad_masks.unwrap_or(false);
        let mut feeds = Vec::with_capacity(self.feed.len());
        let mut remote: Vec<RemoteFeed> = Vec::new();
        for f in &self.feed {
            let line = line_of(f.span());
            let f = f.get_ref();
            let mut spec = FeedSpec::new(
                PathBuf::new(),
                f.key.as_ref().map(|k| k.0.clone()).unwrap_or_default(),
            );
            spec.kind = f.kind.and_then(KindName::kind);
            spec.category = f.category.as_ref().map(|c| c.0.clone());
            spec.records = f.records.as_ref().map(|r| r.0.clone());
            spec.format = f.format.map(FormatName::format);
            spec.max_skipped = f.max_skipped;
            match (&f.path, &f.url) {
                (Some(p), None) => {
                    for (key, set) in [
                        ("refresh", f.refresh.is_some()),
                        ("headers", f.headers.is_some()),
                        ("username", f.username.is_some()),
                        ("password", f.password.is_some()),
                        ("password_file", f.password_file.is_some()),
                        ("ca_file", f.ca_file.is_some()),
                        ("tls_verify", f.tls_verify.is_some()),
                    ] {
                        if set {
                            return Err(err(
                                line,
                                format!("[[feed]] `{key}` is for feeds with a `url`, not a `path`"),
                            ));
                        }
                    }
                    spec.path = path(p);
                    feeds.push(spec);
                }
                (None, Some(u)) => {
                    let url = u.0.clone();
                    let parsed = reqwest::Url::parse(&url)
                        .ok()
                        .filter(|p| matches!(p.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            err(
                                line,
                                format!("[[feed]] url `{}`: not an http(s) URL", shown_url(&url)),
                            )
                        })?;
                    if state_dir.is_none() {
                        return Err(err(line, "[[feed]] with a `url` needs `state_dir` (where downloads and their indexes are kept; systemd's StateDirectory= sets it)".into()));
                    }
                    let stem = parsed
                        .path_segments()
                        .and_then(|mut s| s.next_back())
                        .map(|last| last.trim_end_matches(".gz"))
                        .and_then(|last| Path::new(last).file_stem().and_then(|s| s.to_str()))
                        .filter(|s| !s.is_empty())
                        .unwrap_or("feed")
                        .to_string();
                    let name: String = spec
                        .category
                        .clone()
                        .unwrap_or(stem)
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    if remote.iter().any(|r| r.name == name) {
                        return Err(err(line, format!("[[feed]] url `{}`: another downloaded feed is also called `{name}`; give one a different `category`", shown_url(&url))));
                    }
                    let refresh = f.refresh.map_or(Duration::from_secs(30 * 60), |d| d.0);
                    if refresh.is_zero() {
                        return Err(err(line, "[[feed]] `refresh` must be positive".into()));
                    }
                    let password = secret(&f.password, &f.password_file, line, "password")?;
                    let basic = match (&f.username, password) {
                        (Some(user), pw) => Some((user.0.clone(), pw.unwrap_or_default())),
                        (None, Some(_)) => {
                            return Err(err(line, "[[feed]] `password` without `username`".into()))
                        }
                        (None, None) => None,
                    };
                    remote.push(RemoteFeed {
                        name,
                        url,
                        refresh,
                        headers: f
                            .headers
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.0.clone()))
                            .collect(),
                        basic,
                        tls: enrich::Tls {
                            ca_file: f.ca_file.as_ref().map(path),
                            verify: f.tls_verify.unwrap_or(true),
                        },
                        spec,
                        strict,
                        allow_broad_masks,
                    });
                }
                (Some(_), Some(_)) => {
                    return Err(err(line, "[[feed]]: give `path` or `url`, not both".into()))
                }
                (None, None) => {
                    return Err(err(line, "[[feed]]: give `path` (a file) or `url`".into()))
                }
            }
        }
        let fetched = match &state_dir {
            Some(dir) => remote.iter().map(|r| r.index_path(dir)).collect(),
            None => Vec::new(),
        };
        cfg.fetch = crate::serve::config::Fetch {
            state_dir,
            feeds: remote,
        };
        let indexes = self.index.iter().map(|i| path(&i.get_ref().path)).collect();

        let mut enrichers: Vec<enrich::Spec> = Vec::with_capacity(self.enricher.len());
        for e in &self.enricher {
            let line = line_of(e.span());
            let e = e.get_ref();
            let name = e.name.0.clone();
            if name.is_empty() {
                return Err(err(line, "[[enricher]]: `name` is empty".into()));
            }
            if enrichers.iter().any(|x| x.name == name) {
                return Err(err(
                    line,
                    format!("[[enricher]]: a second enricher named `{name}`"),
                ));
            }
            let type_name = match e.kind {
                EnricherType::Urldecode => "urldecode",
                EnricherType::Http => "http",
                EnricherType::Misp => "misp",
                EnricherType::Exec => "exec",
            };
            let not_for = |key: &str, set: bool| -> Result<(), ConfigError> {
                if set {
                    Err(err(
                        line,
                        format!(
                            "enricher `{name}`: `{key}` is not a setting of a {type_name} enricher"
                        ),
                    ))
                } else {
                    Ok(())
                }
            };
            let http_keys = [
                ("method", e.method.is_some()),
                ("headers", e.headers.is_some()),
                ("body", e.body.is_some()),
                ("records", e.records.is_some()),
            ];
            let misp_keys = [
                ("key", e.key.is_some()),
                ("key_file", e.key_file.is_some()),
                ("tags", e.tags.is_some()),
                ("to_ids", e.to_ids.is_some()),
                ("limit", e.limit.is_some()),
            ];
            let exec_keys = [
                ("command", e.command.is_some()),
                ("processes", e.processes.is_some()),
            ];
            let remote_keys = [
                ("timeout", e.timeout.is_some()),
                ("ttl", e.ttl.is_some()),
                ("negative_ttl", e.negative_ttl.is_some()),
                ("cache_size", e.cache_size.is_some()),
                ("concurrency", e.concurrency.is_some()),
                ("breaker_failures", e.breaker_failures.is_some()),
                ("breaker_cooldown", e.breaker_cooldown.is_some()),
            ];
            let tls_keys = [
                ("ca_file", e.ca_file.is_some()),
                ("tls_verify", e.tls_verify.is_some()),
            ];
            let (forbidden, url_ok): (Vec<(&str, bool)>, bool) = match e.kind {
                EnricherType::Urldecode => (
                    [
                        &http_keys[..],
                        &misp_keys,
                        &exec_keys,
                        &remote_keys,
                        &tls_keys,
                    ]
                    .concat(),
                    false,
                ),
                EnricherType::Http => ([&misp_keys[..], &exec_keys].concat(), true),
                EnricherType::Misp => ([&http_keys[..], &exec_keys].concat(), true),
                EnricherType::Exec => ([&http_keys[..], &misp_keys, &tls_keys].concat(), false),
            };
            for (key, set) in forbidden {
                not_for(key, set)?;
            }
            not_for("url", !url_ok && e.url.is_some())?;
            let url = || {
                e.url
                    .as_ref()
                    .map(|u| u.0.clone())
                    .ok_or_else(|| err(line, format!("enricher `{name}`: `url` is required")))
            };
            let kind = match e.kind {
                EnricherType::Urldecode => enrich::Type::UrlDecode,
                EnricherType::Http => enrich::Type::Http(http::HttpSpec {
                    method: e.method.as_ref().map_or_else(|| "GET".to_string(), |m| m.0.clone()),
                    url: url()?,
                    headers: e
                        .headers
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect(),
                    body: e.body.as_ref().map(|b| b.0.clone()),
                    records: e.records.as_ref().map(|r| r.0.clone()),
                }),
                EnricherType::Misp => enrich::Type::Misp(http::MispSpec {
                    url: url()?,
                    key: secret(&e.key, &e.key_file, line, "key")?.ok_or_else(|| {
                        err(line, format!("enricher `{name}`: `key` (or `key_file`) is required"))
                    })?,
                    tags: e.tags.iter().flatten().map(|t| t.0.clone()).collect(),
                    to_ids: e.to_ids,
                    limit: e.limit,
                }),
                EnricherType::Exec => enrich::Type::Exec(exec::ExecSpec {
                    command: match &e.command {
                        Some(c) if !c.is_empty() => c.iter().map(|t| t.0.clone()).collect(),
                        _ => return Err(err(line, format!("enricher `{name}`: `command` (a list: program, arguments) is required"))),
                    },
                    processes: e.processes.unwrap_or(1),
                    dir: source.map(|_| base.clone()),
                }),
            };
            let d = enrich::Common::default();
            let common = enrich::Common {
                timeout: e.timeout.map_or(d.timeout, |x| x.0),
                ttl: e.ttl.map_or(d.ttl, |x| x.0),
                negative_ttl: e.negative_ttl.map_or(d.negative_ttl, |x| x.0),
                cache_size: e.cache_size.unwrap_or(d.cache_size),
                concurrency: e.concurrency.unwrap_or(d.concurrency),
                breaker_failures: e.breaker_failures.unwrap_or(d.breaker_failures),
                breaker_cooldown: e.breaker_cooldown.map_or(d.breaker_cooldown, |x| x.0),
            };
            if common.timeout.is_zero() || common.concurrency == 0 || common.cache_size == 0 {
                return Err(err(line, format!("enricher `{name}`: `timeout`, `concurrency` and `cache_size` must be positive")));
            }
            enrichers.push(enrich::Spec {
                name,
                kind,
                kinds: e.kinds.iter().flatten().map(|k| k.kind()).collect(),
                category: e.category.as_ref().map(|c| c.0.clone()),
                common,
                tls: enrich::Tls {
                    ca_file: e.ca_file.as_ref().map(path),
                    verify: e.tls_verify.unwrap_or(true),
                },
            });
        }

        Ok(Resolved {
            serve: cfg,
            plan: Plan {
                sources: Sources {
                    indexes,
                    feeds,
                    fetched,
                    strict,
                    allow_broad_masks,
                    index_mode: match self.index_mode {
                        Some(IndexModeName::Map) => IndexMode::Map,
                        _ => IndexMode::Read,
                    },
                },
                enrichers,
            },
            log: LogSettings {
                filter: self.log.as_ref().map(|t| t.0.clone()),
                file: self.log_file.as_ref().map(path),
                format: self.log_format.unwrap_or_default(),
            },
        })
    }
}

/// `[http]` → the listener's settings: defaults filled in, users' credentials read
/// and checked, and the refusal to serve anonymously beyond loopback.
fn resolve_http(
    h: &Spanned<HttpSection>,
    line_of: &dyn Fn(std::ops::Range<usize>) -> usize,
    err: &dyn Fn(usize, String) -> ConfigError,
    path: &dyn Fn(&Text) -> PathBuf,
) -> Result<HttpSettings, ConfigError> {
    let line = line_of(h.span());
    let h = h.get_ref();
    let listen = match &h.listen {
        Some(t) => t.0.parse().map_err(|_| {
            err(
                line,
                format!("[http] `listen`: `{}` is not an address:port", t.0),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 9443)),
    };
    let mut http = HttpSettings::new(listen);
    http.tls = match (h.tls.unwrap_or(true), &h.tls_cert, &h.tls_key) {
        (false, _, _) => None,
        (true, Some(cert), Some(key)) => Some(TlsFiles {
            cert: path(cert),
            key: path(key),
        }),
        (true, _, _) => {
            return Err(err(
                line,
                "[http] needs `tls_cert` and `tls_key` (PEM files; `tracer cert` makes a pair), or `tls = false` for plain HTTP".into(),
            ))
        }
    };
    http.allow_anonymous = h.allow_anonymous.unwrap_or(false);
    for (v, key) in [(h.max_inflight, "max_inflight"), (h.max_body, "max_body")] {
        if v == Some(0) {
            return Err(err(line, format!("[http] `{key}` must be positive")));
        }
    }
    http.max_inflight = h.max_inflight.unwrap_or(http.max_inflight);
    http.max_body = h.max_body.unwrap_or(http.max_body);
    http.request_timeout = h.request_timeout.map_or(http.request_timeout, |d| d.0);
    http.idle_timeout = h.idle_timeout.map_or(http.idle_timeout, |d| d.0);
    if http.request_timeout.is_zero() || http.idle_timeout.is_zero() {
        return Err(err(
            line,
            "[http] `request_timeout` and `idle_timeout` must be positive".into(),
        ));
    }
    for u in &h.user {
        let line = line_of(u.span());
        let u = u.get_ref();
        let name = u.name.0.clone();
        if name.is_empty() || name.contains(':') {
            return Err(err(
                line,
                "[[http.user]] `name` must be non-empty and hold no `:`".into(),
            ));
        }
        if http.users.iter().any(|x| x.name == name) {
            return Err(err(line, format!("[[http.user]] `{name}` is given twice")));
        }
        let hash = |v: String| match argon2::password_hash::phc::PasswordHash::new(&v) {
            Ok(_) => Ok(Credential::Hash(v)),
            Err(e) => Err(err(
                line,
                format!("[[http.user]] `{name}`: not a password hash `tracer passwd` makes: {e}"),
            )),
        };
        let credential = match (&u.password_hash, &u.password_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    line,
                    format!("[[http.user]] `{name}`: give `password_hash` or `password_file`, not both"),
                ))
            }
            (Some(h), None) => hash(h.0.clone())?,
            (None, Some(f)) => {
                let p = path(f);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    err(line, format!("[[http.user]] `{name}`: `password_file` {}: {e}", p.display()))
                })?;
                let text = text.trim_end_matches(['\n', '\r']).to_string();
                if text.starts_with("$argon2") {
                    hash(text)?
                } else if text.is_empty() {
                    return Err(err(
                        line,
                        format!("[[http.user]] `{name}`: `password_file` {} is empty", p.display()),
                    ));
                } else {
                    Credential::Password(text)
                }
            }
            (None, None) => {
                return Err(err(
                    line,
                    format!("[[http.user]] `{name}`: give `password_hash` (from `tracer passwd`) or `password_file`"),
                ))
            }
        };
        http.users.push(HttpUser { name, credential });
    }
    if http.users.is_empty() && !http.allow_anonymous && !listen.ip().is_loopback() {
        return Err(err(
            line,
            format!("[http] listens on {listen}, beyond this machine, with no [[http.user]]: add users, or set `allow_anonymous = true` to serve anyone who reaches it"),
        ));
    }
    Ok(http)
}

/// Read, parse and resolve a config file.
pub fn load(path: &Path) -> Result<Resolved, ConfigError> {
    let (file, text) = File::read(path)?;
    file.resolve(Some((path, &text)))
}

/// `s` as a TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `headers.NAME = value` lines, the `Authorization` value masked.
fn write_headers(o: &mut String, headers: &[(String, String)]) {
    use std::fmt::Write as _;
    for (k, v) in headers {
        let shown = if SHOWN_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            q(v)
        } else {
            mask(v).to_string()
        };
        let _ = writeln!(o, "headers.{} = {shown}", q(k));
    }
}

/// Headers whose values `check-config` shows; any other may carry a key or a token
/// (`Authorization`, `X-Api-Key`, …) and is masked.
const SHOWN_HEADERS: [&str; 6] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-type",
    "user-agent",
];

fn mask(secret: &str) -> &'static str {
    if secret.is_empty() {
        "\"\""
    } else {
        "\"********\""
    }
}

impl Resolved {
    /// The effective settings as `tracer check-config` prints them: TOML, every
    /// default shown, secrets masked.
    pub fn describe(&self) -> String {
        let c = &self.serve;
        let mut o = String::new();
        let dur = |d: Duration| q(&humantime::format_duration(d).to_string());
        let _ = writeln!(o, "listen = {}", q(&c.listen.to_string()));
        let _ = writeln!(o, "threads = {}", c.threads);
        let _ = writeln!(
            o,
            "io = {}",
            q(match c.io {
                IoMode::Auto => "auto",
                IoMode::Uring => "uring",
                IoMode::Epoll => "epoll",
            })
        );
        let s = &self.plan.sources;
        let _ = writeln!(
            o,
            "index_mode = {}",
            q(match s.index_mode {
                IndexMode::Read => "read",
                IndexMode::Map => "map",
            })
        );
        let _ = writeln!(o, "max_hits = {}", c.max_hits);
        let _ = writeln!(o, "max_hits_per_line = {}", c.max_hits_per_line);
        let _ = writeln!(o, "max_line = {}", c.max_line);
        let _ = writeln!(o, "max_connections = {}", c.max_connections);
        match c.idle_timeout {
            Some(d) => {
                let _ = writeln!(o, "idle_timeout = {}", dur(d));
            }
            None => {
                let _ = writeln!(o, "# idle_timeout: never");
            }
        }
        let _ = writeln!(o, "drain_timeout = {}", dur(c.drain_timeout));
        let allow: Vec<String> = c.allow.iter().map(|r| q(&r.to_string())).collect();
        let _ = writeln!(o, "allow = [{}]", allow.join(", "));
        let _ = writeln!(o, "log_requests = {}", c.log_requests);
        let _ = writeln!(o, "watch = {}", c.watch);
        let _ = writeln!(o, "strict = {}", s.strict);
        let _ = writeln!(o, "allow_broad_masks = {}", s.allow_broad_masks);
        if let Some(f) = &self.log.filter {
            let _ = writeln!(o, "log = {}", q(f));
        }
        if let Some(f) = &self.log.file {
            let _ = writeln!(o, "log_file = {}", q(&f.display().to_string()));
        }
        let _ = writeln!(
            o,
            "log_format = {}",
            q(match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            })
        );
        if let Some(d) = &self.serve.fetch.state_dir {
            let _ = writeln!(o, "state_dir = {}", q(&d.display().to_string()));
        }
        for f in &s.feeds {
            let _ = writeln!(o, "\n[[feed]]\npath = {}", q(&f.path.display().to_string()));
            let _ = writeln!(o, "key = {}", q(&f.key));
            let _ = writeln!(o, "kind = {}", q(f.kind.map_or("auto", Kind::name)));
            let _ = writeln!(o, "category = {}", q(&f.category()));
            if let Some(r) = &f.records {
                let _ = writeln!(o, "records = {}", q(r));
            }
            if let Some(fm) = f.format {
                let _ = writeln!(o, "format = {}", q(fm.name()));
            }
        }
        for r in &c.fetch.feeds {
            let f = &r.spec;
            let _ = writeln!(o, "\n[[feed]]\nurl = {}", q(&r.shown_url()));
            let _ = writeln!(o, "refresh = {}", dur(r.refresh));
            let _ = writeln!(o, "key = {}", q(&f.key));
            let _ = writeln!(o, "kind = {}", q(f.kind.map_or("auto", Kind::name)));
            let _ = writeln!(
                o,
                "category = {}",
                q(f.category.as_deref().unwrap_or(&r.name))
            );
            if let Some(rec) = &f.records {
                let _ = writeln!(o, "records = {}", q(rec));
            }
            if let Some(fm) = f.format {
                let _ = writeln!(o, "format = {}", q(fm.name()));
            }
            if let Some(m) = f.max_skipped {
                let _ = writeln!(o, "max_skipped = {m}");
            }
            write_headers(&mut o, &r.headers);
            if let Some((user, password)) = &r.basic {
                let _ = writeln!(o, "username = {}\npassword = {}", q(user), mask(password));
            }
            if let Some(ca) = &r.tls.ca_file {
                let _ = writeln!(o, "ca_file = {}", q(&ca.display().to_string()));
            }
            let _ = writeln!(o, "tls_verify = {}", r.tls.verify);
            if let Some(dir) = &c.fetch.state_dir {
                let _ = writeln!(o, "# served from {}", r.index_path(dir).display());
            }
        }
        for i in &s.indexes {
            let _ = writeln!(o, "\n[[index]]\npath = {}", q(&i.display().to_string()));
        }
        for e in &self.plan.enrichers {
            let _ = writeln!(
                o,
                "\n[[enricher]]\nname = {}\ntype = {}",
                q(&e.name),
                q(e.kind.name())
            );
            let kinds: Vec<String> = e.kinds.iter().map(|k| q(k.name())).collect();
            if !kinds.is_empty() {
                let _ = writeln!(o, "kinds = [{}]", kinds.join(", "));
            }
            let _ = writeln!(o, "category = {}", q(&e.category()));
            match &e.kind {
                enrich::Type::UrlDecode => continue,
                enrich::Type::Http(h) => {
                    let _ = writeln!(
                        o,
                        "method = {}\nurl = {}",
                        q(&h.method),
                        q(&shown_url(&h.url))
                    );
                    write_headers(&mut o, &h.headers);
                    if let Some(b) = &h.body {
                        let _ = writeln!(o, "body = {}", q(b));
                    }
                    if let Some(r) = &h.records {
                        let _ = writeln!(o, "records = {}", q(r));
                    }
                }
                enrich::Type::Misp(m) => {
                    let _ = writeln!(o, "url = {}\nkey = {}", q(&shown_url(&m.url)), mask(&m.key));
                    let tags: Vec<String> = m.tags.iter().map(|t| q(t)).collect();
                    let _ = writeln!(o, "tags = [{}]", tags.join(", "));
                    if let Some(t) = m.to_ids {
                        let _ = writeln!(o, "to_ids = {t}");
                    }
                    if let Some(l) = m.limit {
                        let _ = writeln!(o, "limit = {l}");
                    }
                }
                enrich::Type::Exec(x) => {
                    let cmd: Vec<String> = x.command.iter().map(|t| q(t)).collect();
                    let _ = writeln!(
                        o,
                        "command = [{}]\nprocesses = {}",
                        cmd.join(", "),
                        x.processes
                    );
                }
            }
            let m = &e.common;
            let _ = writeln!(
                o,
                "timeout = {}\nttl = {}\nnegative_ttl = {}\ncache_size = {}\nconcurrency = {}\nbreaker_failures = {}\nbreaker_cooldown = {}",
                dur(m.timeout), dur(m.ttl), dur(m.negative_ttl), m.cache_size, m.concurrency, m.breaker_failures, dur(m.breaker_cooldown)
            );
            if matches!(e.kind, enrich::Type::Http(_) | enrich::Type::Misp(_)) {
                if let Some(ca) = &e.tls.ca_file {
                    let _ = writeln!(o, "ca_file = {}", q(&ca.display().to_string()));
                }
                let _ = writeln!(o, "tls_verify = {}", e.tls.verify);
            }
        }
        if let Some(h) = &c.http {
            let _ = writeln!(o, "\n[http]\nlisten = {}", q(&h.listen.to_string()));
            match &h.tls {
                Some(t) => {
                    let _ = writeln!(
                        o,
                        "tls = true\ntls_cert = {}\ntls_key = {}",
                        q(&t.cert.display().to_string()),
                        q(&t.key.display().to_string())
                    );
                }
                None => {
                    let _ = writeln!(o, "tls = false");
                }
            }
            let _ = writeln!(
                o,
                "allow_anonymous = {}\nmax_inflight = {}\nmax_body = {}\nrequest_timeout = {}\nidle_timeout = {}",
                h.allow_anonymous,
                h.max_inflight,
                h.max_body,
                dur(h.request_timeout),
                dur(h.idle_timeout)
            );
            for u in &h.users {
                let _ = writeln!(
                    o,
                    "\n[[http.user]]\nname = {}\n{} = \"********\"",
                    q(&u.name),
                    match u.credential {
                        Credential::Hash(_) => "password_hash",
                        Credential::Password(_) => "password",
                    }
                );
            }
        }
        if let Some(m) = c.metrics {
            let _ = writeln!(o, "\n[metrics]\nlisten = {}", q(&m.to_string()));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Resolved, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: "t.toml".into(),
            message: e.to_string(),
        })?;
        file.resolve(Some((Path::new("/etc/tracer/t.toml"), text)))
    }

    #[test]
    fn the_specs_example_resolves() {
        std::env::set_var("TRACER_TEST_MISP_KEY", "s3cret");
        let r = parse(
            r#"
listen = "127.0.0.1:16666"
threads = 2
max_hits = 32

[[feed]]
path = "feeds/Phishing_URL_Data_Feed.json"
key = "mask"
kind = "url"
category = "KL_Phishing_URL"

[[index]]
path = "/var/lib/tracer/big.tracer"

[[enricher]]
name = "misp"
type = "misp"
url = "https://misp.example"
key = "${TRACER_TEST_MISP_KEY}"
kinds = ["hash", "ip", "domain", "url"]
timeout = "2s"
ttl = "10m"

[metrics]
listen = "127.0.0.1:9100"
"#,
        )
        .expect("resolves");
        assert_eq!(r.serve.threads, 2);
        assert_eq!(
            r.plan.sources.feeds[0].path,
            Path::new("/etc/tracer/feeds/Phishing_URL_Data_Feed.json")
        );
        assert_eq!(
            r.plan.sources.indexes[0],
            Path::new("/var/lib/tracer/big.tracer")
        );
        let e = &r.plan.enrichers[0];
        assert_eq!(e.common.ttl, Duration::from_secs(600));
        match &e.kind {
            enrich::Type::Misp(m) => assert_eq!(m.key, "s3cret"),
            other => panic!("{other:?}"),
        }
        let shown = r.describe();
        assert!(
            shown.contains("key = \"********\"") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn enricher_urls_are_shown_without_their_credentials() {
        let r = parse(
            "[[enricher]]\nname = \"h\"\ntype = \"http\"\nurl = \"https://svc:pa55@ti.example/v1?q={value}&api_key=pa55\"\nheaders = { \"X-Api-Key\" = \"pa55\", \"Accept\" = \"application/json\" }\n\n[[enricher]]\nname = \"m\"\ntype = \"misp\"\nurl = \"https://u:pa55@misp.example\"\nkey = \"k\"\n",
        )
        .expect("valid");
        let shown = r.describe();
        assert!(
            shown.contains("url = \"https://ti.example/v1?q={value}&api_key=********\"")
                && shown.contains("headers.\"X-Api-Key\" = \"********\"")
                && shown.contains("headers.\"Accept\" = \"application/json\"")
                && shown.contains("url = \"https://misp.example\"")
                && !shown.contains("pa55"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_metrics_address_is_named_with_its_own_line() {
        let e = parse("listen = \"127.0.0.1:16666\"\n\n[metrics]\nlisten = \"nowhere\"\n")
            .expect_err("bad address")
            .to_string();
        assert!(e.contains("line 4") && e.contains("metrics.listen"), "{e}");
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let e = parse("threads = 2\nmax_hitz = 3\n")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("line 2") && e.contains("max_hitz"), "{e}");
        let e = parse("threads = \"two\"\n")
            .expect_err("wrong type")
            .to_string();
        assert!(e.contains("line 1") && e.contains("threads"), "{e}");
        let e = parse("\n\n[[enricher]]\nname = \"m\"\ntype = \"misp\"\nkey = \"k\"\n")
            .expect_err("no url")
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("`url` is required"),
            "{e}"
        );
        let e = parse(
            "[[enricher]]\nname = \"m\"\ntype = \"exec\"\ncommand = [\"x\"]\nurl = \"http://a\"\n",
        )
        .expect_err("url on exec")
        .to_string();
        assert!(
            e.contains("`url` is not a setting of a exec enricher"),
            "{e}"
        );
        let e = parse(
            "[[enricher]]\nname = \"m\"\ntype = \"http\"\nurl = \"${TRACER_TEST_UNSET_VAR}\"\n",
        )
        .expect_err("unset env")
        .to_string();
        assert!(
            e.contains("line 4") && e.contains("TRACER_TEST_UNSET_VAR"),
            "{e}"
        );
        let e = parse("[[enricher]]\nname = \"m\"\ntype = \"http\"\nurl = \"http://a\"\ntimeout = \"2 parsecs\"\n").expect_err("bad duration").to_string();
        assert!(e.contains("line 5") && e.contains("not a duration"), "{e}");
    }
}
