//! One client connection: read a chunk, answer every complete line in it, write the
//! answers, repeat. Long-lived: nothing but client EOF, an I/O error, the idle
//! timeout or shutdown ends it; never an answer, never bad input.
//!
//! **Buffers.** Reads land in `chunk`, a buffer of its own (io_uring owns it while the
//! read is in flight). A read is never cancelled while the connection lives: under
//! io_uring a dropped read stays armed in the kernel and would swallow the client's
//! next bytes, so shutdown only changes what happens after the read completes, and
//! the idle timeout closes the socket (which completes the read) rather than dropping
//! it. Bytes of an unfinished line wait in `pending`; the common case, a read that
//! ends on a line boundary, answers straight from `chunk` without copying.
//!
//! **Memory.** Answers are written before the next read. An answer is produced in
//! pieces: when the output passes [`OUT_HIGH`] it is written and the answer goes on
//! where it stopped ([`LineState`]), even in the middle of one line, so however many
//! hits one request line asks for, a connection holds about `READ_SIZE + OUT_HIGH +
//! max-line` bytes. A client that stops reading its answers stalls our write, so we
//! stop reading its requests (backpressure).
//!
//! **Drain.** After `SIGTERM` a connection answers every line it has received, then
//! closes at the next answer boundary once nothing more waits in its socket. The last
//! answer and the FIN leave in one segment (the socket is corked before the last
//! write), so a client reads the end of the connection together with its last answer
//! and does not send into a closed connection. A connection with nothing to answer
//! waits [`DRAIN_IDLE`] for a request already on its way. After the FIN the connection
//! keeps reading (and discarding) for [`LINGER`], so the close never resets the
//! connection under answers the client has not read yet. `--drain-timeout` caps it all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::io::{self, Transport};
use super::stats::ErrorReason;
use super::worker::{ThreadSnapshot, Worker};
use crate::protocol::cybertrace::{self as protocol, Decoder, Frame, LineState};

pub const READ_SIZE: usize = 64 * 1024;
pub const OUT_HIGH: usize = 256 * 1024;
/// During the drain, how long a connection with nothing to answer waits for a request
/// that may already be on its way.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// After our FIN, how long to keep reading before closing.
pub const LINGER: Duration = Duration::from_millis(500);

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed, or the connection failed.
    Client,
    /// The idle timeout.
    Idle,
    /// The drain closed it at an answer boundary; `late` request lines arrived after
    /// the FIN and went unanswered.
    Drained { late: u64 },
    /// `--drain-timeout` passed in the middle of a line.
    Cut,
}

/// Per-batch counters, added to the worker's once per batch.
#[derive(Default)]
struct Tally {
    requests: u64,
    by_kind: [u64; 5],
    hits: u64,
}

/// What a connection has logged already: each kind of problem once per connection.
#[derive(Default)]
struct Logged {
    truncated: bool,
    line_truncated: bool,
    overlong: u64,
}

/// Shutdown as a connection sees it: `None` while serving, the drain deadline after.
pub type Shutdown = tokio::sync::watch::Receiver<Option<Instant>>;

/// Serve one connection until it ends.
pub async fn serve<T: Transport>(
    mut io: T,
    peer: SocketAddr,
    worker: &Worker,
    mut shutdown: Shutdown,
) -> End {
    let cfg = &worker.shared.config;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
    let mut decoder = Decoder::new(cfg.max_line);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut line = LineState::default();
    let mut logged = Logged::default();
    let mut drain: Option<Instant> = *shutdown.borrow();
    // When an idle connection stops waiting for a request during the drain.
    let mut idle_until = drain.map(|d| d.min(Instant::now() + DRAIN_IDLE));

    let end = loop {
        chunk.clear();
        if chunk.capacity() < READ_SIZE {
            chunk.reserve(READ_SIZE);
        }
        let event = {
            let mut read = std::pin::pin!(io.read_into(std::mem::take(&mut chunk)));
            loop {
                if let Some(deadline) = drain {
                    let until = match idle_until {
                        Some(t) if pending.is_empty() => t,
                        _ => deadline,
                    };
                    match tokio::time::timeout_at(until.into(), read.as_mut()).await {
                        Ok(r) => break Some(Ok(r)),
                        Err(_) if pending.is_empty() => {
                            // Nothing came: close at this answer boundary.
                            io::shutdown(&fd, std::net::Shutdown::Write);
                            let first = tokio::time::timeout(LINGER, read.as_mut()).await.ok();
                            break first.map(Err);
                        }
                        Err(_) => break None,
                    }
                }
                tokio::select! {
                    r = read.as_mut() => break Some(Ok(r)),
                    _ = shutdown.changed() => {
                        drain = *shutdown.borrow();
                        idle_until = drain.map(|d| d.min(Instant::now() + DRAIN_IDLE));
                    }
                    _ = sleep_or_forever(cfg.idle_timeout) => {
                        tracing::debug!(%peer, "idle timeout, closing");
                        io::shutdown(&fd, std::net::Shutdown::Both);
                        break Some(Err((Ok(0), Vec::new())));
                    }
                }
            }
        };
        // `Err` carries a read that completed after our FIN (or the idle close).
        let (res, buf) = match event {
            Some(Ok(r)) => r,
            Some(Err((res, buf))) => {
                chunk = buf;
                if drain.is_none() {
                    break End::Idle;
                }
                let late = linger(&mut io, res, &mut chunk, drain).await;
                break End::Drained { late };
            }
            None if drain.is_some() && pending.is_empty() => {
                break End::Drained { late: 0 };
            }
            None => break End::Cut,
        };
        chunk = buf;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "read failed, closing");
                break End::Client;
            }
        };
        let started = Instant::now();
        let snap = worker.snapshot();
        let mut tally = Tally::default();
        if n == 0 {
            // Client half-closed: a last line without LF still gets its answer.
            if let Some(frame) = decoder.finish(&pending) {
                let r = answer_frame(
                    worker,
                    &snap,
                    frame,
                    &mut io,
                    &mut out,
                    &mut line,
                    &mut tally,
                    &mut logged,
                    peer,
                )
                .await;
                if r.is_ok() && !out.is_empty() {
                    let (_, _) = io.write_all(std::mem::take(&mut out)).await;
                }
            }
            worker.stats.batch(
                tally.requests,
                &tally.by_kind,
                tally.hits,
                started.elapsed(),
            );
            break End::Client;
        }

        // Answer every complete line.
        let from_chunk = pending.is_empty();
        if !from_chunk {
            pending.extend_from_slice(&chunk);
        }
        let data: &[u8] = if from_chunk { &chunk } else { &pending };
        let mut pos = 0;
        let mut failed = false;
        loop {
            let (used, frame) = decoder.next(&data[pos..]);
            pos += used;
            let Some(frame) = frame else {
                if used == 0 {
                    break;
                }
                continue;
            };
            if answer_frame(
                worker,
                &snap,
                frame,
                &mut io,
                &mut out,
                &mut line,
                &mut tally,
                &mut logged,
                peer,
            )
            .await
            .is_err()
            {
                failed = true;
                break;
            }
            if out.len() >= OUT_HIGH && write_out(&mut io, &mut out, peer).await.is_err() {
                failed = true;
                break;
            }
        }
        worker.stats.batch(
            tally.requests,
            &tally.by_kind,
            tally.hits,
            started.elapsed(),
        );
        if drain.is_some() {
            worker.stats.drain_answered.add(tally.requests);
        }
        if failed {
            break End::Client;
        }
        note_overlong(worker, &decoder, &mut logged, peer);
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
        if drain.is_some() && pending.is_empty() && io.input_pending() {
            // More is waiting: read it (the idle grace no longer applies) and answer it.
            idle_until = drain;
        } else if drain.is_some() && pending.is_empty() {
            // The drain's answer boundary: this write is the last, with the FIN.
            io.cork();
            if !out.is_empty() && write_out(&mut io, &mut out, peer).await.is_err() {
                break End::Client;
            }
            io.shutdown_write();
            let late = linger(&mut io, Ok(usize::MAX), &mut chunk, drain).await;
            break End::Drained { late };
        }
        if !out.is_empty() && write_out(&mut io, &mut out, peer).await.is_err() {
            break End::Client;
        }
        if out.capacity() > 4 * OUT_HIGH {
            out = Vec::with_capacity(16 * 1024);
        }
    };
    io.close();
    end
}

/// Write `out` and clear it (keeping its buffer).
async fn write_out<T: Transport>(
    io: &mut T,
    out: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<(), ()> {
    let (res, buf) = io.write_all(std::mem::take(out)).await;
    *out = buf;
    out.clear();
    res.map_err(|e| tracing::debug!(%peer, error = %e, "write failed, closing"))
}

/// After our FIN: read and discard until the client closes, `LINGER` passes or the
/// drain deadline does. `first` is a read already completed (`Ok(usize::MAX)`: none
/// yet). Returns how many request lines arrived too late to be answered.
async fn linger<T: Transport>(
    io: &mut T,
    first: std::io::Result<usize>,
    chunk: &mut Vec<u8>,
    drain: Option<Instant>,
) -> u64 {
    let until = Instant::now() + LINGER;
    let until = drain.map_or(until, |d| d.min(until));
    let mut late = 0;
    let mut res = first;
    loop {
        match res {
            Ok(0) | Err(_) => return late,
            Ok(usize::MAX) => {}
            Ok(_) => late += memchr::memchr_iter(b'\n', chunk).count() as u64,
        }
        chunk.clear();
        let read = io.read_into(std::mem::take(chunk));
        match tokio::time::timeout_at(until.into(), read).await {
            Ok((r, buf)) => {
                *chunk = buf;
                res = r;
            }
            Err(_) => return late,
        }
    }
}

fn note_overlong(worker: &Worker, decoder: &Decoder, logged: &mut Logged, peer: SocketAddr) {
    let overlong = decoder.overlong_count();
    if overlong > logged.overlong {
        if logged.overlong == 0 {
            tracing::warn!(%peer, max_line = worker.shared.config.max_line, "request line longer than --max-line discarded (logged once per connection, counted in metrics)");
        }
        for _ in logged.overlong..overlong {
            worker.stats.error(ErrorReason::LineTooLong);
        }
        logged.overlong = overlong;
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// Answer one frame into `out`, writing `out` whenever it passes [`OUT_HIGH`] in the
/// middle of a long answer. `Err` means the connection failed.
#[allow(clippy::too_many_arguments)]
async fn answer_frame<T: Transport>(
    worker: &Worker,
    snap: &ThreadSnapshot,
    frame: Frame<'_>,
    io: &mut T,
    out: &mut Vec<u8>,
    line: &mut LineState,
    tally: &mut Tally,
    logged: &mut Logged,
    peer: SocketAddr,
) -> Result<(), ()> {
    let cfg = &worker.shared.config;
    let text = match frame {
        Frame::Ping => {
            out.extend_from_slice(protocol::PONG);
            return Ok(());
        }
        Frame::Overlong => {
            out.extend_from_slice(protocol::FINISHED);
            tally.requests += 1;
            return Ok(());
        }
        Frame::Line(_) if cfg.bare => {
            out.extend_from_slice(protocol::FINISHED);
            tally.requests += 1;
            return Ok(());
        }
        Frame::Line(text) => text,
    };
    #[cfg(feature = "fault-injection")]
    if text == b"tracer-fault:panic" {
        panic!("fault injection: a panic while answering a request");
    }
    let start = out.len();
    line.reset();
    let categories = &snap.categories;
    loop {
        // The responder is shared by this thread's connections: borrow it only for
        // the synchronous part, never across the write below.
        let done = worker.responder.borrow_mut().answer_part(
            &snap.snapshot,
            text,
            line,
            out,
            OUT_HIGH,
            |h| categories.hit(h.slot),
        );
        if done {
            break;
        }
        write_out(io, out, peer).await?;
    }
    let outcome = line.outcome();
    tally.requests += 1;
    for (t, n) in tally.by_kind.iter_mut().zip(outcome.by_kind) {
        *t += n as u64;
    }
    tally.hits += outcome.hits as u64;
    if outcome.truncated && !logged.truncated {
        logged.truncated = true;
        tracing::warn!(%peer, max_hits = cfg.max_hits, "an indicator matched more records than --max-hits; extra hits dropped (logged once per connection)");
    }
    if outcome.line_truncated {
        worker.stats.lines_truncated.add(1);
        if !logged.line_truncated {
            logged.line_truncated = true;
            tracing::warn!(%peer, max_hits_per_line = cfg.max_hits_per_line, "a request line matched more than --max-hits-per-line records; its answer was cut there (logged once per connection, counted in metrics)");
        }
    }
    if cfg.log_requests {
        tracing::debug!(
            %peer,
            request = %String::from_utf8_lossy(text),
            hits = outcome.hits,
            answer_bytes = out.len().saturating_sub(start),
            "request"
        );
    }
    Ok(())
}
