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
pub mod auth;
pub mod config;
pub mod connection;
pub mod http;
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

use crate::engine::{Engine, LoadError, Plan, Sources};

/// Re-reads the configuration (on `SIGHUP`): the server settings and what to serve.
pub type Reread = Box<dyn Fn() -> Result<(Config, Plan), String> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: port {} is already served by another tracer ({holder}); stop it first, or start this one with --takeover to take its place without a gap", addr.port())]
    PortServed { addr: SocketAddr, holder: String },
    #[error("cannot listen on {addr}: another process already listens on port {}", addr.port())]
    PortInUse { addr: SocketAddr },
    #[error("--takeover: the tracer serving port {port} refused: {answer}")]
    TakeoverRefused { port: u16, answer: String },
    #[error("io_uring is not available here ({0}); use --io epoll or --io auto")]
    NoUring(std::io::Error),
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Update(crate::update::UpdateError),
    #[error("[http] listen {0}: the HTTP API needs a port of its own, not the line protocol's")]
    SamePort(SocketAddr),
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<Option<std::time::Instant>>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    runtime: Runtime,
    /// The port's lock; `None` only while a takeover waits for the old server to
    /// release it (a thread then takes it).
    lock: Arc<std::sync::Mutex<Option<listen::PortLock>>>,
    /// The HTTP API's address and its port's lock, when it is configured.
    http: Option<(SocketAddr, Arc<std::sync::Mutex<Option<listen::PortLock>>>)>,
}

type Lock = Arc<std::sync::Mutex<Option<listen::PortLock>>>;

/// Take `port`'s lock once the server being taken over releases it (it does when its
/// listeners are closed).
fn take_lock_later(lock: Lock, port: u16) -> Result<(), ServerError> {
    std::thread::Builder::new()
        .name("tracer-port-lock-wait".into())
        .spawn(move || loop {
            match listen::PortLock::try_take(port) {
                Ok(Some(l)) => {
                    *lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                    tracing::info!("the previous tracer has released port {port}");
                    return;
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(e) => {
                    tracing::warn!("cannot take the lock of port {port}: {e}");
                    return;
                }
            }
        })
        .map(drop)
        .map_err(ServerError::Thread)
}

/// The error for a port another tracer serves, naming it (its pid and address, as
/// it answers over the port's lock).
fn port_served(want: SocketAddr) -> ServerError {
    let holder = listen::ask_holder(want.port(), "who")
        .map(|a| {
            let mut w = a.split_whitespace().skip(1);
            match (w.next(), w.next()) {
                (Some(pid), Some(addr)) => format!("pid {pid}, listening on {addr}"),
                _ => a.clone(),
            }
        })
        .unwrap_or_else(|e| format!("no answer: {e}"));
    ServerError::PortServed { addr: want, holder }
}

/// Bind the HTTP API's listeners (one per thread), taking its port's lock as the line
/// protocol's is taken; with `--takeover` the lock comes later, from the server taken
/// over.
fn bind_http(
    want: SocketAddr,
    threads: usize,
    takeover: bool,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr, Lock), ServerError> {
    let listen_err = |(addr, source)| ServerError::Listen { addr, source };
    let locked = |lock| Arc::new(std::sync::Mutex::new(lock));
    if want.port() == 0 {
        let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
        let lock = listen::PortLock::try_take(addr.port())
            .map_err(|source| ServerError::Listen { addr, source })?;
        return Ok((listeners, addr, locked(lock)));
    }
    match listen::PortLock::try_take(want.port())
        .map_err(|source| ServerError::Listen { addr: want, source })?
    {
        Some(lock) => {
            if listen::foreign_listener(want) {
                return Err(ServerError::PortInUse { addr: want });
            }
            let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
            Ok((listeners, addr, locked(Some(lock))))
        }
        None if takeover => {
            let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
            let lock = locked(None);
            take_lock_later(lock.clone(), addr.port())?;
            Ok((listeners, addr, lock))
        }
        None => Err(port_served(want)),
    }
}

/// Bind the listeners for `config`, taking the port's lock first (see [`listen`]).
/// Returns the listeners, the bound address, the lock (if taken) and the process id
/// of the server taken over from (with `--takeover`).
type Bound = (
    Vec<std::net::TcpListener>,
    SocketAddr,
    Option<listen::PortLock>,
    Option<String>,
);

fn bind(config: &Config, threads: usize) -> Result<Bound, ServerError> {
    let want = config.listen;
    let listen_err = |(addr, source)| ServerError::Listen { addr, source };
    if want.port() == 0 {
        // A fresh ephemeral port: nobody else can be serving it.
        let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
        let lock = listen::PortLock::try_take(addr.port())
            .map_err(|source| ServerError::Listen { addr, source })?;
        return Ok((listeners, addr, lock, None));
    }
    let lock = listen::PortLock::try_take(want.port())
        .map_err(|source| ServerError::Listen { addr: want, source })?;
    match lock {
        Some(lock) => {
            if listen::foreign_listener(want) {
                return Err(ServerError::PortInUse { addr: want });
            }
            let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
            Ok((listeners, addr, Some(lock), None))
        }
        None if !config.takeover => Err(port_served(want)),
        None => {
            // Listen beside the old server first, so no connection finds no one; then
            // ask it to hand over.
            let (listeners, addr) = listen::bind_all(want, threads).map_err(listen_err)?;
            let me = std::process::id();
            let answer = listen::ask_holder(want.port(), &format!("takeover {me}"))
                .map_err(|source| ServerError::Listen { addr, source })?;
            match answer.strip_prefix("ok ") {
                Some(pid) => Ok((listeners, addr, None, Some(pid.to_string()))),
                None => Err(ServerError::TakeoverRefused {
                    port: want.port(),
                    answer,
                }),
            }
        }
    }
}

impl Server {
    /// Load the sources, then start serving them.
    pub fn start(config: Config, sources: Sources) -> Result<Server, ServerError> {
        Server::start_plan(
            config,
            Plan {
                sources,
                enrichers: Vec::new(),
            },
        )
    }

    /// Start serving a plan (sources and enrichers). The listeners are bound first, so
    /// a port that is taken is reported before a long load; connections wait in the
    /// kernel's queue until the index is loaded, and the HTTP API answers `425`
    /// meanwhile. A takeover loads first, then binds beside the server it replaces,
    /// which serves until then.
    pub fn start_plan(config: Config, plan: Plan) -> Result<Server, ServerError> {
        Server::start_plan_with(config, plan, || {})
    }

    /// As [`Server::start_plan`], running `before_load` just before the index is loaded
    /// (the first download of feed sources).
    pub fn start_plan_with(
        config: Config,
        plan: Plan,
        before_load: impl FnOnce(),
    ) -> Result<Server, ServerError> {
        let started = std::time::Instant::now();
        let ready = |engine: &Engine| {
            let snapshot = engine.current();
            tracing::info!(
                records = snapshot.record_count(),
                indexes = snapshot.index().parts().len(),
                ms = started.elapsed().as_millis() as u64,
                "index ready"
            );
        };
        if config.takeover {
            before_load();
            let engine = Engine::start(plan)?;
            ready(&engine);
            return Server::with_engine(config, Arc::new(engine));
        }
        let engine = Arc::new(Engine::loading(plan));
        let server = Server::with_engine(config, engine.clone())?;
        before_load();
        if let Err(e) = engine.load_first() {
            server.abort();
            return Err(e.into());
        }
        ready(&engine);
        Ok(server)
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
        if let Some(h) = &config.http {
            if h.listen.port() != 0 && h.listen.port() == config.listen.port() {
                return Err(ServerError::SamePort(h.listen));
            }
        }
        // The certificate and users are read before any port is taken.
        let http_shared = match &config.http {
            Some(h) => Some(Arc::new(http::HttpShared::new(h.clone())?)),
            None => None,
        };
        let (listeners, addr, lock, took_over) = bind(&config, threads)?;
        let lock = Arc::new(std::sync::Mutex::new(lock));
        if let Some(pid) = &took_over {
            tracing::info!(pid = %pid, "taking over port {} from the tracer serving it; it drains and exits", addr.port());
            take_lock_later(lock.clone(), addr.port())?;
        }
        let (http_listeners, http) = match &config.http {
            Some(h) => {
                let (l, a, lock) = bind_http(h.listen, threads, took_over.is_some())?;
                (l.into_iter().map(Some).collect(), Some((a, lock)))
            }
            None => ((0..threads).map(|_| None).collect::<Vec<_>>(), None),
        };
        let shared = Arc::new(Shared::new(config, engine, http_shared));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let mut handles = Vec::with_capacity(threads);
        for (i, (l, h)) in listeners.into_iter().zip(http_listeners).enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("tracer-worker-{i}"))
                .spawn(move || runtime::worker_thread(runtime, l, h, shared, rx))
                .map_err(ServerError::Thread)?;
            handles.push(h);
        }
        tracing::info!(
            "listening on {addr} ({threads} worker threads, {} runtime)",
            runtime.name()
        );
        if let (Some((a, _)), Some(h)) = (&http, &shared.config.http) {
            tracing::info!(
                "HTTP API on {}://{a}/api/1.1/lookup ({})",
                if h.tls.is_some() { "https" } else { "http" },
                match h.users.len() {
                    0 => "no users: anyone who reaches it".to_string(),
                    1 => "1 user".to_string(),
                    n => format!("{n} users"),
                }
            );
        }
        Ok(Server {
            shared,
            shutdown: tx,
            threads: handles,
            addr,
            runtime,
            lock,
            http,
        })
    }

    /// Stop a server whose index never loaded: close everything, say nothing more.
    fn abort(self) {
        let _ = self.shutdown.send(Some(std::time::Instant::now()));
        for h in self.threads {
            let _ = h.join();
        }
    }

    /// The HTTP API's address, when it is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(a, _)| *a)
    }

    /// Answer `who` and `takeover` requests on the port's lock (once held); a granted
    /// takeover calls `on_takeover` with the new server's process id.
    pub fn answer_lock_requests(&self, on_takeover: impl Fn(u32) + Send + Clone + 'static) {
        let lock = self.lock.clone();
        let addr = self.addr;
        let tcp_takeover = on_takeover.clone();
        let start = move |l: &listen::PortLock| {
            if let Err(e) = l.answer_requests(addr, tcp_takeover.clone()) {
                tracing::warn!("cannot answer on the port lock: {e}");
            }
        };
        if let Some((http_addr, http_lock)) = &self.http {
            let (http_addr, http_lock, on_takeover) =
                (*http_addr, http_lock.clone(), on_takeover.clone());
            let _ = std::thread::Builder::new()
                .name("tracer-port-lock-answer".into())
                .spawn(move || loop {
                    if let Some(l) = &*http_lock.lock().unwrap_or_else(|p| p.into_inner()) {
                        if let Err(e) = l.answer_requests(http_addr, on_takeover.clone()) {
                            tracing::warn!("cannot answer on the HTTP port's lock: {e}");
                        }
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                });
        }
        if let Some(l) = &*self.lock.lock().unwrap_or_else(|p| p.into_inner()) {
            start(l);
            return;
        }
        // Taking over: the lock comes later.
        let _ = std::thread::Builder::new()
            .name("tracer-port-lock-answer".into())
            .spawn(move || loop {
                if let Some(l) = &*lock.lock().unwrap_or_else(|p| p.into_inner()) {
                    start(l);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            });
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

    /// Stop accepting, let connections answer what they received and close at an
    /// answer boundary (within `--drain-timeout`), join the threads.
    pub fn shutdown(self) {
        let started = std::time::Instant::now();
        let timeout = self.shared.config.drain_timeout;
        tracing::info!(
            timeout_ms = timeout.as_millis() as u64,
            "shutting down: answering requests already received, then closing each connection at an answer boundary"
        );
        let _ = self.shutdown.send(Some(started + timeout));
        // Once every listener is closed, let the port go: a new server may start on
        // it while this one drains.
        let lock = self.lock.clone();
        let http_lock = self.http.as_ref().map(|(_, l)| l.clone());
        let shared = self.shared.clone();
        let _ = std::thread::Builder::new()
            .name("tracer-port-release".into())
            .spawn(move || {
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while shared.listeners.load(std::sync::atomic::Ordering::Acquire) > 0
                    && std::time::Instant::now() < give_up
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                lock.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(l) = http_lock {
                    l.lock().unwrap_or_else(|p| p.into_inner()).take();
                }
            });
        for h in self.threads {
            if h.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        let t = self.shared.stats.sum();
        tracing::info!(
            connections_closed = t.drain_closed,
            requests_answered = t.drain_answered,
            cut_at_timeout = t.drain_cut,
            lines_after_close = t.drain_late,
            ms = started.elapsed().as_millis() as u64,
            "drained: {} connections closed at an answer boundary, {} requests answered during the drain, {} connections cut by --drain-timeout",
            t.drain_closed,
            t.drain_answered,
            t.drain_cut
        );
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

/// Tell systemd (when it started us with `Type=notify`; otherwise nothing happens).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// What the main thread waits for.
enum Event {
    Signal(i32),
    /// Another tracer took the port over (its process id).
    Takeover(u32),
}

/// Serve until SIGTERM/SIGINT or a takeover; reload on SIGHUP (re-reading the
/// configuration with `reread`) and on file changes with `--watch`.
pub fn run(config: Config, plan: Plan, reread: Option<Reread>) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Registered before the listeners open, so no signal finds the default action.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(ServerError::Signals)?;
    let metrics = config.metrics;
    // Stamped before loading, so no change after the load can slip into the baseline.
    let watched = config.watch.then(|| {
        let files = plan.sources.files();
        let stamps = watch::stamp(&files);
        (files, stamps)
    });
    let updater = match (&config.fetch.state_dir, config.fetch.feeds.is_empty()) {
        (Some(dir), false) => Some(Arc::new(
            crate::update::Updater::new(dir.clone(), config.fetch.feeds.clone())
                .map_err(ServerError::Update)?,
        )),
        _ => None,
    };
    let server = Server::start_plan_with(config, plan, || {
        if let Some(u) = &updater {
            u.fetch_missing();
        }
    })?;
    if let Some(u) = &updater {
        let _ = server.shared.feeds.set(u.status.clone());
        let engine = server.shared.engine.clone();
        u.spawn(
            Box::new(move || {
                let _ = engine.reload();
            }),
            server.shutdown.subscribe(),
        )
        .map_err(ServerError::Thread)?;
    }
    // systemd (`Type=notify`): ready once the index is served.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    if let Some(addr) = metrics {
        metrics::spawn(addr, server.shared.clone())
            .map_err(|source| ServerError::Listen { addr, source })?;
    }
    if let Some((files, stamps)) = watched {
        let engine = server.shared.engine.clone();
        let stop = server.shutdown.subscribe();
        std::thread::Builder::new()
            .name("tracer-watch".into())
            .spawn(move || watch::watch_files(&engine, &files, stamps, &stop))
            .map_err(ServerError::Thread)?;
    }
    let (tx, events) = std::sync::mpsc::channel();
    let to_main = tx.clone();
    server.answer_lock_requests(move |pid| {
        let _ = to_main.send(Event::Takeover(pid));
    });
    std::thread::Builder::new()
        .name("tracer-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map_err(ServerError::Thread)?;
    while let Ok(event) = events.recv() {
        if let Event::Signal(SIGHUP) = event {
            let mut reloading = vec![sd_notify::NotifyState::Reloading];
            reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
            notify(&reloading);
        }
        match event {
            Event::Signal(SIGHUP) => match &reread {
                None => {
                    tracing::info!("SIGHUP: reloading");
                    if let (Some(http), Some(settings)) =
                        (&server.shared.http, &server.shared.config.http)
                    {
                        if let Err(e) = http.reload(settings) {
                            tracing::error!("{e}; the HTTP API keeps its users and certificate");
                        }
                    }
                    let _ = server.shared.engine.reload();
                }
                Some(reread) => {
                    tracing::info!("SIGHUP: re-reading the configuration and reloading");
                    match reread() {
                        // Downloaded feeds live in the state directory the updater
                        // started with: a plan pointing into another one would serve
                        // none of them.
                        Ok((config, _))
                            if config.fetch.state_dir != server.shared.config.fetch.state_dir =>
                        {
                            tracing::error!(
                                "the configuration cannot be used, nothing changed: `state_dir` changed (from {} to {}): it can only change at a restart",
                                shown_dir(&server.shared.config.fetch.state_dir),
                                shown_dir(&config.fetch.state_dir)
                            );
                        }
                        Ok((config, plan)) => {
                            for what in config.needs_restart(&server.shared.config) {
                                tracing::warn!("`{what}` changed in the configuration: it takes effect at the next restart");
                            }
                            // The feeds first: a plan the engine cannot load (its
                            // error is logged) changes nothing else either.
                            if server.shared.engine.reconfigure(plan).is_ok() {
                                if let Some(u) = &updater {
                                    u.reconfigure(config.fetch.feeds.clone());
                                }
                                if let (Some(http), Some(settings)) =
                                    (&server.shared.http, &config.http)
                                {
                                    if let Err(e) = http.reload(settings) {
                                        tracing::error!(
                                            "{e}; the HTTP API keeps its users and certificate"
                                        );
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::error!(
                            "the configuration cannot be used, nothing changed: {e}"
                        ),
                    }
                }
            },
            Event::Signal(_) => break,
            Event::Takeover(pid) => {
                tracing::info!(pid, "handing the port over to a new tracer");
                break;
            }
        }
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("serving"),
        ]);
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    server.shutdown();
    Ok(())
}

fn shown_dir(dir: &Option<std::path::PathBuf>) -> String {
    dir.as_ref()
        .map_or_else(|| "none".to_string(), |d| d.display().to_string())
}
