//! The server: one worker thread per core, each with its own runtime (io_uring via
//! `tokio-uring`, or tokio's epoll reactor) and its own `SO_REUSEPORT` listener, so the
//! kernel spreads connections over threads and a connection never changes thread.
//!
//! Threads share one read-only [`IndexSet`] through [`Shared`]. A reload (SIGHUP, or a
//! changed file with `--watch`) builds the new set on the signal thread, then
//! publishes it under a mutex and bumps `generation`; workers notice the new
//! generation with one atomic load per batch and pick the new set up, while batches
//! already running finish on the old one (kept alive by their `Rc`/`Arc`). A failed
//! reload changes nothing and logs why.
//!
//! SIGTERM/SIGINT: listeners close, each connection answers what it has received
//! (reading until its client goes quiet), then threads exit and so does the process,
//! with status 0.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::cli::IoMode;
use crate::commands::{LoadError, Sources};
use crate::connection::{self, Transport, Worker};
use crate::index::IndexSet;
use crate::indicator::{self, IpRange};

/// Validated `serve` settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub threads: usize,
    pub io: IoMode,
    pub max_hits: usize,
    pub max_line: usize,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    pub allow: Vec<IpRange>,
    pub log_requests: bool,
    pub watch: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Answer `LookupFinished` to every line without looking anything up: the load
    /// generator's transport ceiling (same runtimes, same connection code).
    pub bare: bool,
}

/// Upper bounds (µs) of the batch processing-time histogram buckets.
pub const BATCH_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Counters, updated once per batch (never per request) with relaxed atomics; what
/// `--metrics` exports.
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Indicators by kind, indexed by `Kind::index()`.
    pub by_kind: [AtomicU64; 5],
    pub hits: AtomicU64,
    /// Time from a read's completion to its answers being ready, per batch:
    /// cumulative bucket counts (last = +Inf), sum in µs.
    pub batch_buckets: [AtomicU64; 11],
    pub batch_sum_us: AtomicU64,
    pub connections: AtomicU64,
    pub refused_limit: AtomicU64,
    pub refused_allow: AtomicU64,
    pub overlong: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// What all threads share.
pub struct Shared {
    pub config: Config,
    sources: Sources,
    current: Mutex<(u64, Arc<IndexSet>)>,
    pub generation: AtomicU64,
    open: AtomicUsize,
    pub stats: Stats,
    reloading: Mutex<()>,
}

impl Shared {
    /// The published index and its generation.
    pub fn current(&self) -> (u64, Arc<IndexSet>) {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    pub fn count(&self, requests: u64, by_kind: &[u64; 5], hits: u64) {
        if requests > 0 {
            let s = &self.stats;
            s.requests.fetch_add(requests, Ordering::Relaxed);
            for (counter, n) in s.by_kind.iter().zip(by_kind) {
                if *n > 0 {
                    counter.fetch_add(*n, Ordering::Relaxed);
                }
            }
            s.hits.fetch_add(hits, Ordering::Relaxed);
        }
    }

    /// Record how long one batch took to answer.
    pub fn batch_time(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let bucket = BATCH_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BATCH_BUCKETS_US.len());
        self.stats.batch_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.stats.batch_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Open connections, over all threads.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Rebuild the index from the sources and publish it. On error the old index
    /// stays in service.
    pub fn reload(&self) -> Result<(), LoadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        match self.sources.load() {
            Ok(set) => {
                let records = set.record_count();
                let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
                let generation = guard.0 + 1;
                *guard = (generation, Arc::new(set));
                self.generation.store(generation, Ordering::Release);
                drop(guard);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    generation,
                    records,
                    ms = started.elapsed().as_millis() as u64,
                    "index reloaded"
                );
                Ok(())
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed, still serving the previous index: {e}");
                Err(e)
            }
        }
    }
}

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

/// Which runtime the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Uring,
    Epoll,
}

fn choose_runtime(mode: IoMode) -> Result<Runtime, ServerError> {
    // Creating a ring is what fails under old kernels, `kernel.io_uring_disabled` and
    // seccomp filters, so a small one is the probe.
    let probe = || io_uring::IoUring::new(8).map(drop);
    match mode {
        IoMode::Epoll => Ok(Runtime::Epoll),
        IoMode::Uring => probe()
            .map(|()| Runtime::Uring)
            .map_err(ServerError::NoUring),
        IoMode::Auto => match probe() {
            Ok(()) => Ok(Runtime::Uring),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}); falling back to epoll");
                Ok(Runtime::Epoll)
            }
        },
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
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
    /// Load the index, bind one listener per thread, start the workers.
    pub fn start(config: Config, sources: Sources) -> Result<Server, ServerError> {
        let runtime = choose_runtime(config.io)?;
        // Every connection is a descriptor; the usual soft limit of 1024 is far too low.
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => tracing::debug!(limit = n, "descriptor limit"),
            Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
        }
        let started = Instant::now();
        let set = sources.load()?;
        tracing::info!(
            records = set.record_count(),
            indexes = set.parts().len(),
            ms = started.elapsed().as_millis() as u64,
            "index ready"
        );
        let threads = config.threads.max(1);
        // Bind the first listener, then the others to the port it got (for port 0).
        let first = listener(config.listen).map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
        let addr = first.local_addr().map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(listener(addr).map_err(|source| ServerError::Listen { addr, source })?);
        }
        let shared = Arc::new(Shared {
            config,
            sources,
            current: Mutex::new((0, Arc::new(set))),
            generation: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            stats: Stats::default(),
            reloading: Mutex::new(()),
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut handles = Vec::with_capacity(threads);
        for (i, l) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("tracer-worker-{i}"))
                .spawn(move || worker_thread(runtime, l, shared, rx))
                .map_err(ServerError::Thread)?;
            handles.push(h);
        }
        tracing::info!(
            "listening on {addr} ({threads} worker threads, {} runtime)",
            match runtime {
                Runtime::Uring => "io_uring",
                Runtime::Epoll => "epoll",
            }
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
        let s = &self.shared.stats;
        tracing::info!(
            requests = s.requests.load(Ordering::Relaxed),
            indicators = s
                .by_kind
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>(),
            hits = s.hits.load(Ordering::Relaxed),
            connections = s.connections.load(Ordering::Relaxed),
            refused =
                s.refused_limit.load(Ordering::Relaxed) + s.refused_allow.load(Ordering::Relaxed),
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
        let stamps = stamp(&files);
        (files, stamps)
    });
    let server = Server::start(config, sources)?;
    if let Some(addr) = metrics {
        crate::metrics::spawn(addr, server.shared.clone())
            .map_err(|source| ServerError::Listen { addr, source })?;
    }
    if let Some((files, stamps)) = watched {
        let shared = server.shared.clone();
        let mut stop = server.shutdown.subscribe();
        std::thread::Builder::new()
            .name("tracer-watch".into())
            .spawn(move || watch_files(&shared, &files, stamps, &mut stop))
            .map_err(ServerError::Thread)?;
    }
    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!("SIGHUP: reloading");
            let _ = server.shared.reload();
        } else {
            break;
        }
    }
    server.shutdown();
    Ok(())
}

/// Size and modification time of each file (`None` where it cannot be read).
type Stamps = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &[std::path::PathBuf]) -> Stamps {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Reload whenever the files differ from `last`, which was taken before the index was
/// loaded: a change made while loading or before this thread starts is still seen.
fn watch_files(
    shared: &Shared,
    files: &[std::path::PathBuf],
    mut last: Stamps,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        std::thread::sleep(Duration::from_secs(2));
        let now = stamp(files);
        if now != last {
            tracing::info!("a watched file changed: reloading");
            let _ = shared.reload();
            last = now;
        }
    }
}

/// Accepting, for both runtimes' listeners.
trait Acceptor {
    type Stream: Transport + 'static;
    fn accept(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, SocketAddr)>>;
    fn set_nodelay(stream: &Self::Stream);
}

impl Acceptor for tokio_uring::net::TcpListener {
    type Stream = tokio_uring::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        tokio_uring::net::TcpListener::accept(self).await
    }
    fn set_nodelay(stream: &Self::Stream) {
        let _ = stream.set_nodelay(true);
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }
    fn set_nodelay(stream: &Self::Stream) {
        let _ = stream.set_nodelay(true);
    }
}

fn worker_thread(
    runtime: Runtime,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let worker = Rc::new(Worker::new(shared));
    match runtime {
        Runtime::Uring => tokio_uring::builder().entries(1024).start(async move {
            let l = tokio_uring::net::TcpListener::from_std(listener);
            accept_loop(l, worker, shutdown).await
        }),
        Runtime::Epoll => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot build the epoll runtime: {e}");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, worker, shutdown).await,
                    Err(e) => tracing::error!("cannot register the listener: {e}"),
                }
            });
        }
    }
}

/// Log the 1st, 2nd, 4th, 8th… occurrence, so a flood of refusals is visible but
/// bounded in the log.
fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

fn allowed(allow: &[IpRange], peer: SocketAddr) -> bool {
    if allow.is_empty() {
        return true;
    }
    let (family, addr) = indicator::canonical_ip(peer.ip());
    allow
        .iter()
        .any(|r| r.family == family && r.start <= addr && addr <= r.end)
}

async fn accept_loop<A: Acceptor>(
    listener: A,
    worker: Rc<Worker>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // One accept stays armed for the life of the loop and is never dropped while
    // connections may arrive: under io_uring, dropping an accept in flight discards a
    // connection the kernel has already accepted (its completion is ignored).
    let mut accept = Box::pin(listener.accept());
    if !*shutdown.borrow() {
        loop {
            tokio::select! {
                r = &mut accept => {
                    accept = Box::pin(listener.accept());
                    match r {
                        Ok((stream, peer)) => admit::<A>(stream, peer, &worker, &shutdown),
                        Err(e) => {
                            // Out of descriptors and the like: back off, don't spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
    // Clients whose connections wait in the kernel's accept queue have sent requests
    // we owe answers to: take them in (they start in drain mode) until the queue has
    // been empty for 20 ms, then close.
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(20), &mut accept).await {
        accept = Box::pin(listener.accept());
        if let Ok((stream, peer)) = r {
            admit::<A>(stream, peer, &worker, &shutdown);
        }
    }
    drop(accept);
    drop(listener);
    // Connections are draining; the runtime must outlive them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.open.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Apply `--allow` and `--max-connections` to a new connection, then serve it.
fn admit<A: Acceptor>(
    stream: A::Stream,
    peer: SocketAddr,
    worker: &Rc<Worker>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) {
    let shared = &worker.shared;
    let cfg = &shared.config;
    if !allowed(&cfg.allow, peer) {
        let n = shared.stats.refused_allow.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, "connection from outside --allow closed");
        }
        return;
    }
    if shared.open.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        let n = shared.stats.refused_limit.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, max = cfg.max_connections, "--max-connections reached, connection closed");
        }
        return;
    }
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    A::set_nodelay(&stream);
    worker.open.set(worker.open.get() + 1);
    let w = worker.clone();
    let rx = shutdown.clone();
    tokio::task::spawn_local(async move {
        connection::serve(stream, peer, w.clone(), rx).await;
        w.shared.open.fetch_sub(1, Ordering::AcqRel);
        w.open.set(w.open.get() - 1);
    });
}
