//! The worker threads and their runtimes: io_uring through `tokio-uring`, or tokio's
//! epoll reactor (current-thread, with a `LocalSet`) where io_uring is unavailable.
//! Each thread runs its listener's accept loop until shutdown.

use std::rc::Rc;
use std::sync::Arc;

use super::accept::accept_loop;
use super::config::IoMode;
use super::connection::Shutdown;
use super::worker::{Shared, Worker};

/// Which runtime the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Uring,
    Epoll,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Uring => "io_uring",
            Runtime::Epoll => "epoll",
        }
    }
}

/// Whether this process may create an io_uring: what fails under old kernels,
/// `kernel.io_uring_disabled` and seccomp filters is creating a ring, so a small
/// one is the probe.
pub fn uring_available() -> std::io::Result<()> {
    io_uring::IoUring::new(8).map(drop)
}

/// Ring settings: where the kernel offers them (5.19, 6.0), completions are handled
/// when the thread next enters the kernel instead of interrupting it
/// (`COOP_TASKRUN`), and only the worker thread submits (`SINGLE_ISSUER`), which
/// spares the kernel some locking. Probed once, on a thread of its own (dropping a
/// ring interrupts its thread's next blocking call).
fn uring_setup() -> io_uring::Builder {
    static COOP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let coop = *COOP.get_or_init(|| {
        std::thread::spawn(|| {
            tokio_uring::uring_builder()
                .setup_coop_taskrun()
                .setup_single_issuer()
                .build(8)
                .is_ok()
        })
        .join()
        .unwrap_or(false)
    });
    let mut b = tokio_uring::uring_builder();
    if coop {
        b.setup_coop_taskrun().setup_single_issuer();
    }
    b
}

/// The runtime for `mode`: an error only when io_uring was asked for explicitly and
/// is not available.
pub fn choose(mode: IoMode) -> std::io::Result<Runtime> {
    match mode {
        IoMode::Epoll => Ok(Runtime::Epoll),
        IoMode::Uring => uring_available().map(|()| Runtime::Uring),
        IoMode::Auto => match uring_available() {
            Ok(()) => Ok(Runtime::Uring),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}); falling back to epoll");
                Ok(Runtime::Epoll)
            }
        },
    }
}

/// Body of one worker thread: serve `listener` until `shutdown` says so and the
/// connections have drained.
pub fn worker_thread(
    runtime: Runtime,
    listener: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let worker = Rc::new(Worker::new(shared));
    // The HTTP listener's loop runs beside the line protocol's, as a task of its own
    // on the same runtime; the line protocol's loop outlives it (it waits for all
    // the thread's connections to drain).
    let start_http = move |worker: &Rc<Worker>, shutdown: &Shutdown| {
        if let Some(l) = http {
            tokio::task::spawn_local(super::http::accept_loop(
                l,
                worker.clone(),
                shutdown.clone(),
            ));
        }
    };
    match runtime {
        Runtime::Uring => tokio_uring::builder()
            .entries(1024)
            .uring_builder(&uring_setup())
            .start(async move {
                start_http(&worker, &shutdown);
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
                start_http(&worker, &shutdown);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, worker, shutdown).await,
                    Err(e) => tracing::error!("cannot register the listener: {e}"),
                }
            });
        }
    }
}
