//! Accepting connections on one worker's listener: apply `--allow` and
//! `--max-connections`, then serve each connection as a task on this thread.
//!
//! On shutdown the loop stops taking new connections, but first takes in those
//! already waiting in the kernel's accept queue: their clients have sent requests we
//! owe answers to. Only once its listener is closed does it tell its connections to
//! drain (a client whose connection the drain closes finds the listener refusing,
//! and a balancer sends it to another replica), and it then waits for them, until
//! the drain deadline.
//!
//! A connection is counted open by a [`Slot`], released when its task ends however
//! it ends: normally, cancelled by the runtime's end, or by a panic. A panic while
//! answering one connection is caught at the task's edge: that connection is closed
//! and counted (`errors{reason="panic"}`); the thread, its other connections and the
//! counters go on.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;

use super::connection::{self, End, Shutdown};
use super::io::{self, Acceptor};
use super::stats::ErrorReason;
use super::worker::Worker;
use crate::indicator::{self, IpRange};

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

/// After shutdown, how long the accept queue must stay empty before the listener
/// closes, and the most time spent taking in queued connections.
const DRAIN_INTAKE_QUIET: Duration = Duration::from_millis(10);
const DRAIN_INTAKE: Duration = Duration::from_millis(50);

pub async fn accept_loop<A: Acceptor>(listener: A, worker: Rc<Worker>, mut shutdown: Shutdown) {
    // One accept stays armed for the life of the loop and is never dropped while
    // connections may arrive: under io_uring, dropping an accept in flight discards a
    // connection the kernel has already accepted (its completion is ignored).
    // Until the index is loaded, connections wait in the kernel's queue: answers
    // from an empty index would be wrong, and a refused connection is an error in
    // KUMA's log.
    while !worker.shared.engine.is_ready() && shutdown.borrow().is_none() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = shutdown.changed() => {}
        }
    }
    if !worker.shared.engine.is_ready() {
        // Stopped before the index was loaded: nothing to answer with.
        listener.close();
        drop(listener);
        worker.shared.listeners.fetch_sub(1, Ordering::AcqRel);
        worker.shared.line_listeners.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    // This listener's connections see the drain only once the listener is closed (the
    // server's shutdown reaches them through `drain`): connections closed by the drain
    // reconnect, and a balancer in front must find this listener refusing them, so it
    // sends them elsewhere, rather than hand them back to a replica that is stopping.
    let (drain, drain_rx) = tokio::sync::watch::channel(None);
    let mut accept = Box::pin(listener.accept());
    if shutdown.borrow().is_none() {
        loop {
            tokio::select! {
                r = &mut accept => {
                    accept = Box::pin(listener.accept());
                    match r {
                        Ok((stream, peer)) => admit::<A>(stream, peer, &worker, &drain_rx),
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
    // Take in the clients waiting in the accept queue: first as many as the kernel
    // says were queued at the signal (each accept completes however long the thread
    // is busy answering the ones before), then those that arrive until the queue has
    // been empty for 10 ms. Clients that keep connecting would keep it busy forever:
    // the second part ends after 50 ms however busy it is, and later connections are
    // refused, for a balancer to redispatch.
    for _ in 0..io::accept_queue_len(&listener) {
        match tokio::time::timeout(Duration::from_secs(1), &mut accept).await {
            Ok(r) => {
                accept = Box::pin(listener.accept());
                if let Ok((stream, peer)) = r {
                    admit::<A>(stream, peer, &worker, &drain_rx);
                }
            }
            Err(_) => break,
        }
    }
    let intake_ends = tokio::time::Instant::now() + DRAIN_INTAKE;
    while let Ok(r) = tokio::time::timeout_at(
        intake_ends.min(tokio::time::Instant::now() + DRAIN_INTAKE_QUIET),
        &mut accept,
    )
    .await
    {
        accept = Box::pin(listener.accept());
        if let Ok((stream, peer)) = r {
            admit::<A>(stream, peer, &worker, &drain_rx);
        }
    }
    listener.close();
    drop(accept);
    drop(listener);
    worker.shared.listeners.fetch_sub(1, Ordering::AcqRel);
    // The other threads' listeners share the port: a client closed here could
    // reconnect through one of them. Drain once all are closed (each closes within
    // its intake).
    worker.shared.line_listeners.fetch_sub(1, Ordering::AcqRel);
    let all_closed_by = tokio::time::Instant::now() + 4 * DRAIN_INTAKE;
    while worker.shared.line_listeners.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < all_closed_by
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = drain.send(*shutdown.borrow());
    // Connections are draining; the runtime must outlive them, up to the deadline
    // (and the linger of the last ones closed just before it).
    let deadline = shutdown.borrow().unwrap_or_else(std::time::Instant::now) + connection::LINGER;
    while worker.open.get() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stats.drain_cut.add(worker.open.get() as u64);
}

/// One open connection, counted in the thread's and the server's totals until
/// dropped (the server's count was taken by [`admission`]).
pub struct Slot<'w>(&'w Worker);

impl<'w> Slot<'w> {
    pub fn take(worker: &'w Worker) -> Slot<'w> {
        worker.open.set(worker.open.get() + 1);
        Slot(worker)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.shared.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

/// Apply `--allow` and `--max-connections` to a new connection (of either protocol):
/// `true` when it may be served, counted open in the server's total (a [`Slot`] must
/// then be taken, which releases it).
pub fn admission(worker: &Worker, peer: SocketAddr) -> bool {
    let shared = &worker.shared;
    let cfg = &shared.config;
    if !allowed(&cfg.allow, peer) {
        let n = worker.stats.error(ErrorReason::NotAllowed);
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, "connection from outside --allow closed");
        }
        return false;
    }
    if shared.open.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        let n = worker.stats.error(ErrorReason::MaxConnections);
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, max = cfg.max_connections, "--max-connections reached, connection closed");
        }
        return false;
    }
    worker.stats.connections.add(1);
    true
}

/// Apply `--allow` and `--max-connections` to a new connection, then serve it.
fn admit<A: Acceptor>(
    stream: A::Stream,
    peer: SocketAddr,
    worker: &Rc<Worker>,
    shutdown: &Shutdown,
) {
    if !admission(worker, peer) {
        return;
    }
    A::set_nodelay(&stream);
    let w = worker.clone();
    let rx = shutdown.clone();
    tokio::task::spawn_local(async move {
        let _slot = Slot::take(&w);
        let served = AssertUnwindSafe(connection::serve(stream, peer, &w, rx))
            .catch_unwind()
            .await;
        match served {
            Ok(End::Drained { late }) => {
                w.stats.drain_closed.add(1);
                w.stats.drain_late.add(late);
            }
            Ok(_) => {}
            Err(_) => {
                // The panic itself was logged by the panic hook, with its message.
                let n = w.stats.error(ErrorReason::Panic);
                tracing::error!(%peer, panics = n, "a panic while answering this connection; it was closed, the server goes on");
            }
        }
    });
}
