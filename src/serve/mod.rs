//! The TCP server: one worker thread per core, each with its own runtime (io_uring
//! via `tokio-uring`, or tokio's epoll reactor) and its own `SO_REUSEPORT` listener,
//! so the kernel spreads connections over threads and a connection never changes
//! thread. The threads share the [`Engine`] (the served snapshot) through [`Shared`].
//!
//! In the order a connection meets them: [`listen`] binds, [`runtime`] runs the
//! threads, [`accept`] admits connections, [`connection`] answers them (through
//! [`crate::protocol::cybertrace`]), [`worker`] holds each thread's state and
//! [`stats`] its counters; [`metrics`] and [`watch`] run beside the workers.
//!
//! Signals: `SIGHUP` reloads the engine (so does a changed file with `--watch`);
//! `SIGTERM`/`SIGINT` close the listeners, let each connection answer what it has
//! received, and exit with status 0.

pub mod accept;
pub mod config;
pub mod connection;
pub mod io;
pub mod listen;
pub mod metrics;
pub mod runtime;
pub mod stats;
pub mod watch;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Config, IoMode};
pub use runtime::Runtime;
pub use worker::Shared;

use crate::engine::{Engine, LoadError, Sources};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("io_uring is not available here ({0}); use --io epoll or --io auto")]
    NoUring(std::io::Error),
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    runtime: Runtime,
}

impl Server {
    /// Load the sources, then start serving them.
    pub fn start(config: Config, sources: Sources) -> Result<Server, ServerError> {
        let started = std::time::Instant::now();
        let engine = Engine::load(sources)?;
        let snapshot = engine.current();
        tracing::info!(
            records = snapshot.record_count(),
            indexes = snapshot.index().parts().len(),
            ms = started.elapsed().as_millis() as u64,
            "index ready"
        );
        Server::with_engine(config, Arc::new(engine))
    }

    /// Bind one listener per thread and start the workers on `engine`.
    pub fn with_engine(config: Config, engine: Arc<Engine>) -> Result<Server, ServerError> {
        let runtime = runtime::choose(config.io).map_err(ServerError::NoUring)?;
        // Every connection is a descriptor; the usual soft limit of 1024 is far too low.
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => tracing::debug!(limit = n, "descriptor limit"),
            Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
        }
        let threads = config.threads.max(1);
        let (listeners, addr) = listen::bind_all(config.listen, threads)
            .map_err(|(addr, source)| ServerError::Listen { addr, source })?;
        let shared = Arc::new(Shared::new(config, engine));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut handles = Vec::with_capacity(threads);
        for (i, l) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("tracer-worker-{i}"))
                .spawn(move || runtime::worker_thread(runtime, l, shared, rx))
                .map_err(ServerError::Thread)?;
            handles.push(h);
        }
        tracing::info!(
            "listening on {addr} ({threads} worker threads, {} runtime)",
            runtime.name()
        );
        Ok(Server {
            shared,
            shutdown: tx,
            threads: handles,
            addr,
            runtime,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop accepting, let connections answer what they received, join the threads.
    pub fn shutdown(self) {
        tracing::info!("shutting down: answering requests already received");
        let _ = self.shutdown.send(true);
        for h in self.threads {
            if h.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        let t = self.shared.stats.sum();
        tracing::info!(
            requests = t.requests,
            indicators = t.by_kind.iter().sum::<u64>(),
            hits = t.hits,
            connections = t.connections,
            refused = t.errors[stats::ErrorReason::MaxConnections as usize]
                + t.errors[stats::ErrorReason::NotAllowed as usize],
            "stopped"
        );
    }
}

/// Serve until SIGTERM/SIGINT; reload on SIGHUP (and on file changes with `--watch`).
pub fn run(config: Config, sources: Sources) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Registered before the listeners open, so no signal finds the default action.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(ServerError::Signals)?;
    let metrics = config.metrics;
    // Stamped before loading, so no change after the load can slip into the baseline.
    let watched = config.watch.then(|| {
        let files = sources.files();
        let stamps = watch::stamp(&files);
        (files, stamps)
    });
    let server = Server::start(config, sources)?;
    if let Some(addr) = metrics {
        metrics::spawn(addr, server.shared.clone())
            .map_err(|source| ServerError::Listen { addr, source })?;
    }
    if let Some((files, stamps)) = watched {
        let engine = server.shared.engine.clone();
        let mut stop = server.shutdown.subscribe();
        std::thread::Builder::new()
            .name("tracer-watch".into())
            .spawn(move || watch::watch_files(&engine, &files, stamps, &mut stop))
            .map_err(ServerError::Thread)?;
    }
    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!("SIGHUP: reloading");
            let _ = server.shared.engine.reload();
        } else {
            break;
        }
    }
    server.shutdown();
    Ok(())
}
