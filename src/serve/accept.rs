//! Accepting connections on one worker's listener: apply `--allow` and
//! `--max-connections`, then serve each connection as a task on this thread.
//!
//! On shutdown the loop stops taking new connections, but first takes in those
//! already waiting in the kernel's accept queue: their clients have sent requests we
//! owe answers to.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::connection;
use super::io::Acceptor;
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

pub async fn accept_loop<A: Acceptor>(
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
    // Take in the clients waiting in the accept queue (they start in drain mode) until
    // the queue has been empty for 20 ms, then close.
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
        let n = worker.stats.error(ErrorReason::NotAllowed);
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, "connection from outside --allow closed");
        }
        return;
    }
    if shared.open.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        let n = worker.stats.error(ErrorReason::MaxConnections);
        if worth_logging(n) {
            tracing::warn!(%peer, refused = n, max = cfg.max_connections, "--max-connections reached, connection closed");
        }
        return;
    }
    worker.stats.connections.add(1);
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
