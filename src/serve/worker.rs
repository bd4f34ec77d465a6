//! What the worker threads share ([`Shared`]), and what one worker thread keeps for
//! its connections ([`Worker`]): its cached snapshot, its answering buffers, its
//! counters.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::config::Config;
use super::http::HttpShared;
use super::stats::{CategoryTable, Registry, WorkerStats};
use crate::engine::{Engine, Snapshot};
use crate::protocol::cybertrace::Responder;

/// What all threads share.
pub struct Shared {
    pub config: Config,
    pub engine: Arc<Engine>,
    /// Open connections over all threads (for `--max-connections`).
    pub open: AtomicUsize,
    /// Listeners still open; the port is given up when none is.
    pub listeners: AtomicUsize,
    /// Line-protocol listeners still open: on shutdown, no connection drains before
    /// every one is closed.
    pub line_listeners: AtomicUsize,
    pub stats: Registry,
    /// The HTTP API listener's state, when it is configured.
    pub http: Option<Arc<HttpShared>>,
    /// The downloaded feeds' state, when there are any (for `/metrics`).
    pub feeds: std::sync::OnceLock<Arc<crate::update::Status>>,
}

impl Shared {
    pub fn new(config: Config, engine: Arc<Engine>, http: Option<Arc<HttpShared>>) -> Shared {
        Shared {
            // One line-protocol listener per thread, and one HTTP listener per thread.
            listeners: AtomicUsize::new(config.threads.max(1) * if http.is_some() { 2 } else { 1 }),
            line_listeners: AtomicUsize::new(config.threads.max(1)),
            config,
            engine,
            open: AtomicUsize::new(0),
            stats: Registry::default(),
            http,
            feeds: std::sync::OnceLock::new(),
        }
    }

    /// Open connections, over all threads.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The snapshot a worker serves, with the table its hits are counted in.
pub struct ThreadSnapshot {
    pub snapshot: Arc<Snapshot>,
    pub categories: Arc<CategoryTable>,
}

/// One worker thread's state, shared by its connections (they run on the same
/// thread, so `Rc`/`RefCell` and no locks).
pub struct Worker {
    pub shared: Arc<Shared>,
    pub stats: Arc<WorkerStats>,
    /// The snapshot this thread serves. Connections take an `Rc` of it per batch (a
    /// non-atomic count, where cloning the `Arc` would bounce its count's cache line
    /// between cores on every batch), so requests in flight finish on the snapshot
    /// they started with.
    snapshot: RefCell<Rc<ThreadSnapshot>>,
    pub responder: RefCell<Responder>,
    /// Connections open on this thread.
    pub open: Cell<usize>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>) -> Worker {
        let stats = shared.stats.register();
        let snapshot = shared.engine.current();
        let categories = stats.categories.switch(snapshot.categories());
        let limits = shared.config.limits();
        Worker {
            shared,
            stats,
            snapshot: RefCell::new(Rc::new(ThreadSnapshot {
                snapshot,
                categories,
            })),
            responder: RefCell::new(Responder::new(limits)),
            open: Cell::new(0),
        }
    }

    /// The current snapshot: one atomic load when nothing changed, no lock.
    pub fn snapshot(&self) -> Rc<ThreadSnapshot> {
        let generation = self.shared.engine.generation();
        let mut cached = self.snapshot.borrow_mut();
        if cached.snapshot.generation() != generation {
            let snapshot = self.shared.engine.current();
            let categories = self.stats.categories.switch(snapshot.categories());
            *cached = Rc::new(ThreadSnapshot {
                snapshot,
                categories,
            });
        }
        cached.clone()
    }
}
