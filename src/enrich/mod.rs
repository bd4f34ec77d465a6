//! Enrichers (SPEC §11): answers from code and from other systems, declared in the
//! config file, asked after the feeds for each indicator of the kinds they handle.
//!
//! - [`urldecode`]: the Python tool's URL decoder, computed on the spot.
//! - [`http`]: a JSON-over-HTTP(S) lookup, and MISP's `attributes/restSearch` preset.
//! - [`exec`]: long-running helper processes speaking JSON lines.
//!
//! The remote ones share [`remote::Remote`]: a bounded cache with a time to live (and
//! a shorter one for "nothing found"), one upstream call for concurrent lookups of the
//! same value, a limit on calls in flight, a timeout, a circuit breaker, and counters.
//! An upstream failure never reaches the client: the indicator is answered without
//! that enricher's hits, and the failure is counted and logged.
//!
//! A lookup either answers now ([`Answer::Ready`]: nothing to ask, or cached) or
//! returns a future that resolves within the enricher's timeout. The future runs on
//! the calling thread's runtime; the upstream call behind it is a task of its own, so
//! it goes on (and fills the cache) even when no one waits any longer.

pub mod client;
pub mod exec;
pub mod http;
pub mod remote;
pub mod urldecode;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::index::records;
use crate::indicator::Kind;

/// One hit an enricher produced: its category and its fields, encoded as feed
/// records are ([`records::encode_context`]), so both wire formats print it alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichHit {
    pub category: Box<[u8]>,
    pub context: Box<[u8]>,
    /// The exact rendition of the context, when the context alone would not decode
    /// back to the fields ([`records::needs_exact`]).
    pub exact: Option<Box<[u8]>>,
}

impl EnrichHit {
    /// A hit made of `(key, value)` fields.
    pub fn new<'a>(
        category: &[u8],
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> EnrichHit {
        let fields: Vec<(&[u8], &[u8])> = fields.into_iter().collect();
        let mut context = Vec::new();
        records::encode_context(&mut context, fields.iter().copied());
        let exact = records::needs_exact(fields.iter().copied()).then(|| {
            let mut exact = Vec::new();
            records::encode_exact(&mut exact, fields.iter().copied());
            exact.into()
        });
        EnrichHit {
            category: category.into(),
            context: context.into(),
            exact,
        }
    }
}

/// An enricher's hits for one indicator (shared: a cached answer is handed out as is).
pub type Hits = Arc<[EnrichHit]>;

/// No hits (one shared empty list per thread: asked for on every lookup an enricher
/// has nothing for, it must not allocate).
pub fn none() -> Hits {
    thread_local! {
        static NONE: Hits = Arc::from(Vec::new());
    }
    NONE.with(Hits::clone)
}

/// What one enricher says about one indicator.
pub enum Answer {
    /// Known now.
    Ready(Hits),
    /// To wait for; resolves within the enricher's timeout, with no hits if the
    /// upstream was late or failed.
    Pending(Pin<Box<dyn Future<Output = Hits>>>),
}

/// Settings every remote enricher has (SPEC §11), with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    pub timeout: Duration,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_size: usize,
    pub concurrency: usize,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl Default for Common {
    fn default() -> Common {
        Common {
            timeout: Duration::from_secs(2),
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(60),
            cache_size: 100_000,
            concurrency: 32,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// TLS settings of an enricher that speaks HTTPS.
#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    /// A PEM file of CAs to trust besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// `false` accepts any certificate (logged as a warning at start).
    pub verify: bool,
}

/// What kind of enricher, with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    UrlDecode,
    Http(http::HttpSpec),
    Misp(http::MispSpec),
    Exec(exec::ExecSpec),
}

impl Type {
    pub fn name(&self) -> &'static str {
        match self {
            Type::UrlDecode => "urldecode",
            Type::Http(_) => "http",
            Type::Misp(_) => "misp",
            Type::Exec(_) => "exec",
        }
    }
}

/// One enricher as the config file declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub kind: Type,
    /// The request kinds it answers (all when empty).
    pub kinds: Vec<Kind>,
    /// Category of its hits (default: its name); `{kind}` is replaced by the
    /// indicator's kind.
    pub category: Option<String>,
    pub common: Common,
    pub tls: Tls,
}

impl Spec {
    pub fn category(&self) -> String {
        self.category.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// Counts one enricher keeps (summed across threads; read by the metrics).
pub use remote::Stats;

/// An enricher, shared by every worker thread.
pub trait Enricher: Send + Sync {
    fn name(&self) -> &str;
    /// The kind of enricher (`urldecode`, `http`, …).
    fn kind(&self) -> &'static str;
    fn handles(&self, kind: Kind) -> bool;
    /// Look one indicator up (on a worker thread, inside its runtime).
    fn lookup(&self, kind: Kind, value: &[u8]) -> Answer;
    fn stats(&self) -> Option<&Stats> {
        None
    }
    /// Breaker state for the metrics: 0 closed, 1 open, 2 probing.
    fn breaker(&self) -> u8 {
        0
    }
}

/// The enrichers of a snapshot, in config order.
#[derive(Default)]
pub struct Enrichers {
    list: Vec<Arc<dyn Enricher>>,
    /// Which request kinds any enricher handles (bit `Kind::index()`).
    kinds: u8,
}

impl Enrichers {
    pub fn new(list: Vec<Arc<dyn Enricher>>) -> Enrichers {
        let mut kinds = 0u8;
        for e in &list {
            for k in Kind::ALL {
                if e.handles(k) {
                    kinds |= 1 << k.index();
                }
            }
        }
        Enrichers { list, kinds }
    }

    /// Build the enrichers the config declares.
    pub fn build(specs: &[Spec]) -> Result<Enrichers, BuildError> {
        let mut list: Vec<Arc<dyn Enricher>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let e: Arc<dyn Enricher> = match &spec.kind {
                Type::UrlDecode => Arc::new(urldecode::UrlDecode::new(spec)),
                Type::Http(_) | Type::Misp(_) => http::build(spec)?,
                Type::Exec(_) => exec::build(spec)?,
            };
            if !spec.tls.verify && matches!(spec.kind, Type::Http(_) | Type::Misp(_)) {
                tracing::warn!(enricher = %spec.name, "tls_verify = false: this enricher accepts any certificate");
            }
            list.push(e);
        }
        Ok(Enrichers::new(list))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether any enricher handles `kind`: one bit test, so lines of other kinds
    /// pay nothing for enrichers.
    #[inline]
    pub fn handle(&self, kind: Kind) -> bool {
        self.kinds & (1 << kind.index()) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Enricher>> {
        self.list.iter()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("enricher `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error("enricher `{name}`: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}
