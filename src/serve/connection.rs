//! One client connection: read a chunk, answer every complete line in it, write all
//! those answers with one write, repeat. Long-lived: nothing but client EOF, an I/O
//! error, the idle timeout or shutdown ends it; never an answer, never bad input.
//!
//! Buffers: reads land in `chunk`, a buffer of its own (io_uring owns it while the
//! read is in flight). A read is never cancelled while the connection lives: under
//! io_uring a dropped read stays armed in the kernel and would swallow the client's
//! next bytes, so shutdown only changes what happens after the read completes, and
//! the idle timeout closes the socket (which completes the read) rather than dropping
//! it. Bytes of an unfinished line wait in `pending`; the common case, a read that
//! ends on a line boundary, answers straight from `chunk` without copying.
//!
//! Backpressure: answers are written before the next read, and a batch whose answers
//! pass [`OUT_HIGH`] is written in parts. A client that stops reading its answers stalls
//! our write, so we stop reading its requests; memory per connection stays bounded by
//! about `READ_SIZE + OUT_HIGH + max-line`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::io::Transport;
use super::stats::ErrorReason;
use super::worker::{ThreadSnapshot, Worker};
use crate::protocol::cybertrace::{self as protocol, Decoder, Frame};

pub const READ_SIZE: usize = 64 * 1024;
pub const OUT_HIGH: usize = 256 * 1024;
/// After shutdown, keep reading what clients had already sent until they go quiet
/// for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// Per-batch counters, added to the worker's once per batch.
#[derive(Default)]
struct Tally {
    requests: u64,
    by_kind: [u64; 5],
    hits: u64,
}

/// Serve one connection until it ends.
pub async fn serve<T: Transport>(
    mut io: T,
    peer: SocketAddr,
    worker: Rc<Worker>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = &worker.shared.config;
    let mut decoder = Decoder::new(cfg.max_line);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut draining = *shutdown.borrow();
    let mut overlong_counted = 0;
    let mut warned_truncated = false;

    loop {
        chunk.clear();
        if chunk.capacity() < READ_SIZE {
            chunk.reserve(READ_SIZE);
        }
        // The read stays armed until it completes or the connection closes. Dropping
        // an io_uring read in flight would leave it armed in the kernel, and the next
        // bytes the client sends would be consumed by it and lost: so shutdown only
        // switches to draining, it never cancels the read.
        let event = {
            let mut read = std::pin::pin!(io.read_into(std::mem::take(&mut chunk)));
            loop {
                if draining {
                    break tokio::time::timeout(DRAIN_QUIET, read.as_mut()).await.ok();
                }
                tokio::select! {
                    r = read.as_mut() => break Some(r),
                    _ = shutdown.changed() => draining = true,
                    _ = sleep_or_forever(cfg.idle_timeout) => {
                        tracing::debug!(%peer, "idle timeout, closing");
                        break None;
                    }
                }
            }
        };
        let Some(read) = event else { break };
        let (res, buf) = read;
        chunk = buf;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed, closing");
                break;
            }
        };
        let snap = worker.snapshot();
        if n == 0 {
            // Client half-closed: a last line without LF still gets its answer.
            if let Some(frame) = decoder.finish(&pending) {
                let mut tally = Tally::default();
                let started = std::time::Instant::now();
                answer_frame(&worker, &snap, frame, &mut out, &mut tally, peer);
                worker.stats.batch(
                    tally.requests,
                    &tally.by_kind,
                    tally.hits,
                    started.elapsed(),
                );
            }
            if !out.is_empty() {
                let (_, _) = io.write_all(std::mem::take(&mut out)).await;
            }
            break;
        }

        // Answer every complete line, writing whenever the answers grow past OUT_HIGH.
        let from_chunk = pending.is_empty();
        if !from_chunk {
            pending.extend_from_slice(&chunk);
        }
        let mut pos = 0;
        let mut failed = false;
        loop {
            let data: &[u8] = if from_chunk { &chunk } else { &pending };
            let batch = answer_batch(&worker, &snap, &mut decoder, &data[pos..], &mut out, peer);
            pos += batch.consumed;
            if batch.truncated && !warned_truncated {
                warned_truncated = true;
                tracing::warn!(%peer, max_hits = cfg.max_hits, "an indicator matched more records than --max-hits; extra hits dropped");
            }
            if !out.is_empty() {
                let (res, buf) = io.write_all(std::mem::take(&mut out)).await;
                out = buf;
                out.clear();
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "write failed, closing");
                    failed = true;
                    break;
                }
            }
            if !batch.more {
                break;
            }
        }
        if failed {
            break;
        }
        let overlong = decoder.overlong_count();
        if overlong > overlong_counted {
            if overlong_counted == 0 {
                tracing::warn!(%peer, max_line = cfg.max_line, "request line longer than --max-line discarded (logged once per connection, counted in metrics)");
            }
            for _ in overlong_counted..overlong {
                worker.stats.error(ErrorReason::LineTooLong);
            }
            overlong_counted = overlong;
        }
        // Keep the unfinished line for the next read.
        if from_chunk {
            pending.extend_from_slice(&chunk[pos..]);
        } else {
            pending.drain(..pos);
        }
        // A connection that held a huge partial line once should not keep its memory.
        if pending.is_empty() && pending.capacity() > 4 * READ_SIZE {
            pending = Vec::new();
        }
        if out.capacity() > 4 * OUT_HIGH {
            out = Vec::with_capacity(16 * 1024);
        }
    }
    io.close();
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}

struct Batch {
    consumed: usize,
    /// Stopped because the output passed OUT_HIGH; more frames may follow.
    more: bool,
    truncated: bool,
}

/// Answer frames from `data` until it runs out of complete lines or the output is
/// big enough to write. Synchronous: no borrow is held across an await.
fn answer_batch(
    worker: &Worker,
    snap: &ThreadSnapshot,
    decoder: &mut Decoder,
    data: &[u8],
    out: &mut Vec<u8>,
    peer: SocketAddr,
) -> Batch {
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut pos = 0;
    let mut truncated = false;
    let mut more = false;
    loop {
        let (n, frame) = decoder.next(&data[pos..]);
        pos += n;
        match frame {
            Some(f) => truncated |= answer_frame(worker, snap, f, out, &mut tally, peer),
            None if n == 0 => break,
            None => {}
        }
        if out.len() >= OUT_HIGH {
            more = true;
            break;
        }
    }
    worker.stats.batch(
        tally.requests,
        &tally.by_kind,
        tally.hits,
        started.elapsed(),
    );
    Batch {
        consumed: pos,
        more,
        truncated,
    }
}

/// Answer one frame; returns whether hits were dropped by `--max-hits`.
fn answer_frame(
    worker: &Worker,
    snap: &ThreadSnapshot,
    frame: Frame<'_>,
    out: &mut Vec<u8>,
    tally: &mut Tally,
    peer: SocketAddr,
) -> bool {
    match frame {
        Frame::Ping => {
            out.extend_from_slice(protocol::PONG);
            false
        }
        Frame::Overlong => {
            out.extend_from_slice(protocol::FINISHED);
            tally.requests += 1;
            false
        }
        Frame::Line(_) if worker.shared.config.bare => {
            out.extend_from_slice(protocol::FINISHED);
            tally.requests += 1;
            false
        }
        Frame::Line(line) => {
            let start = out.len();
            let categories = &snap.categories;
            let outcome = worker
                .responder
                .borrow_mut()
                .answer(&snap.snapshot, line, out, |h| categories.hit(h.slot));
            tally.requests += 1;
            for (t, n) in tally.by_kind.iter_mut().zip(outcome.by_kind) {
                *t += n as u64;
            }
            tally.hits += outcome.hits as u64;
            if worker.shared.config.log_requests {
                tracing::debug!(
                    %peer,
                    request = %String::from_utf8_lossy(line),
                    hits = outcome.hits,
                    answer_bytes = out.len() - start,
                    "request"
                );
            }
            outcome.truncated
        }
    }
}
