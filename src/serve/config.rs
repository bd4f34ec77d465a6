//! The server's settings, as the command line (or a config file) produces them:
//! plain typed values, validated before a server starts.

use std::net::SocketAddr;
use std::time::Duration;

use crate::indicator::IpRange;

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
    pub max_line: usize,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    /// Client networks allowed to connect; empty = everyone.
    pub allow: Vec<IpRange>,
    pub log_requests: bool,
    /// Reload when a source file changes.
    pub watch: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Answer `LookupFinished` to every line without looking anything up: the load
    /// generator's transport ceiling (same runtimes, same connection code).
    pub bare: bool,
}

impl Config {
    /// Defaults for `listen`: what `tracer serve` uses when given no flags.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            io: IoMode::Auto,
            max_hits: 32,
            max_line: 64 * 1024,
            max_connections: 16384,
            idle_timeout: None,
            allow: Vec::new(),
            log_requests: false,
            watch: false,
            metrics: None,
            bare: false,
        }
    }
}
