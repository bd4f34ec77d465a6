//! The server's settings, as the command line (or a config file) produces them:
//! plain typed values, validated before a server starts.

use std::net::SocketAddr;
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
        }
    }
}
