//! The server's settings, as the command line (or a config file) produces them:
//! plain typed values, validated before a server starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::indicator::IpRange;
use crate::protocol::cybertrace::Limits;

/// Which I/O runtime the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    Uring,
    Epoll,
}

/// Validated `serve` settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub threads: usize,
    pub io: IoMode,
    /// Hits per indicator.
    pub max_hits: usize,
    /// Hit lines per request line.
    pub max_hits_per_line: usize,
    pub max_line: usize,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    /// After `SIGTERM`, how long connections may take to answer what they received.
    pub drain_timeout: Duration,
    /// Client networks allowed to connect; empty = everyone.
    pub allow: Vec<IpRange>,
    pub log_requests: bool,
    /// Start even if another tracer serves the port, then make it drain and exit.
    pub takeover: bool,
    /// Reload when a source file changes.
    pub watch: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Answer `LookupFinished` to every line without looking anything up: the load
    /// generator's transport ceiling (same runtimes, same connection code).
    pub bare: bool,
    /// The HTTP API listener (SPEC §12), if configured.
    pub http: Option<HttpSettings>,
    /// Feeds to download and keep fresh (SPEC §13).
    pub fetch: Fetch,
}

/// Feeds that update themselves, and where their files are kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fetch {
    pub state_dir: Option<PathBuf>,
    pub feeds: Vec<crate::update::RemoteFeed>,
}

/// The HTTP API listener's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Certificate and key (PEM); `None` serves plain HTTP (`tls = false`).
    pub tls: Option<TlsFiles>,
    pub users: Vec<HttpUser>,
    /// Serve a non-loopback listener without users.
    pub allow_anonymous: bool,
    /// Lookup requests being answered at once, over all threads; beyond: `429`.
    pub max_inflight: usize,
    /// Largest request body, bytes; beyond: `413`.
    pub max_body: usize,
    /// Time to receive a request body once its head is in; beyond: `408`.
    pub request_timeout: Duration,
    /// A connection that sends no complete request head within this time (since it
    /// opened, or since its last answer) is closed: idle keep-alive and slow clients.
    pub idle_timeout: Duration,
}

impl HttpSettings {
    pub fn new(listen: SocketAddr) -> HttpSettings {
        HttpSettings {
            listen,
            tls: None,
            users: Vec::new(),
            allow_anonymous: false,
            max_inflight: 256,
            max_body: 64 << 20,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// Settings a re-read configuration cannot change while the server runs (users and
    /// the certificate's files can: they are re-read).
    fn fixed(&self) -> (SocketAddr, bool, bool, usize, usize, Duration, Duration) {
        (
            self.listen,
            self.tls.is_some(),
            self.allow_anonymous,
            self.max_inflight,
            self.max_body,
            self.request_timeout,
            self.idle_timeout,
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A user of the HTTP API.
#[derive(Clone, PartialEq)]
pub struct HttpUser {
    pub name: String,
    pub credential: Credential,
}

/// How a user's password is checked.
#[derive(Clone, PartialEq)]
pub enum Credential {
    /// A PHC string (`$argon2id$…`), as `tracer passwd` prints.
    Hash(String),
    /// The password itself, read from a `password_file`.
    Password(String),
}

impl std::fmt::Debug for HttpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUser")
            .field("name", &self.name)
            .field("credential", &"********")
            .finish()
    }
}

impl Config {
    /// The settings that differ from `running`'s: they are fixed while a server runs
    /// (listeners, threads, limits), so a re-read configuration reports them.
    pub fn needs_restart(&self, running: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("listen", self.listen != running.listen);
        check("threads", self.threads != running.threads);
        check("io", self.io != running.io);
        check("max_hits", self.max_hits != running.max_hits);
        check(
            "max_hits_per_line",
            self.max_hits_per_line != running.max_hits_per_line,
        );
        check("max_line", self.max_line != running.max_line);
        check(
            "max_connections",
            self.max_connections != running.max_connections,
        );
        check("idle_timeout", self.idle_timeout != running.idle_timeout);
        check("drain_timeout", self.drain_timeout != running.drain_timeout);
        check("allow", self.allow != running.allow);
        check("log_requests", self.log_requests != running.log_requests);
        check("watch", self.watch != running.watch);
        check("metrics.listen", self.metrics != running.metrics);
        check(
            "[[feed]] url (downloads start with the first one)",
            running.fetch.feeds.is_empty() && !self.fetch.feeds.is_empty(),
        );
        check(
            "http",
            self.http.as_ref().map(HttpSettings::fixed)
                != running.http.as_ref().map(HttpSettings::fixed),
        );
        changed
    }

    /// The limits on one answer.
    pub fn limits(&self) -> Limits {
        Limits {
            max_hits: self.max_hits,
            max_hits_per_line: self.max_hits_per_line,
        }
    }

    /// Defaults for `listen`: what `tracer serve` uses when given no flags.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            io: IoMode::Auto,
            max_hits: 32,
            max_hits_per_line: 1024,
            max_line: 64 * 1024,
            max_connections: 16384,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(5),
            allow: Vec::new(),
            log_requests: false,
            takeover: false,
            watch: false,
            metrics: None,
            bare: false,
            http: None,
            fetch: Fetch::default(),
        }
    }
}
