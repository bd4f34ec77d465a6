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
//! **Enrichers.** A line whose answer waits on an enricher is *parked*: the lines
//! after it in the same read are looked up meanwhile (their enrichers asked at once)
//! into buffers of their own, and answers leave strictly in request order as each
//! head of the queue completes, within the enrichers' timeouts. The next read waits
//! until the queue is empty, and a queue that grows past a bound stops taking lines
//! (the rest wait in `pending`), so a client cannot make it hold more than about
//! `PARK_BYTES` of answers. Other connections never wait: each is a task of its own.
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

use std::collections::VecDeque;
use std::rc::Rc;

use super::io::{self, Transport};
use super::stats::ErrorReason;
use super::worker::{ThreadSnapshot, Worker};
use crate::protocol::cybertrace::{self as protocol, Decoder, Frame, LineState, Outcome, Progress};

pub const READ_SIZE: usize = 64 * 1024;
pub const OUT_HIGH: usize = 256 * 1024;
/// During the drain, how long a connection with nothing to answer waits for a request
/// that may already be on its way.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// After our FIN, how long to keep reading before closing.
pub const LINGER: Duration = Duration::from_millis(500);
/// Parked answers a connection holds at most before it stops taking further lines.
pub const PARK_BYTES: usize = 4 * OUT_HIGH;
/// Parked lines at most.
pub const PARK_LINES: usize = 1024;

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
    let mut parked: VecDeque<Parked> = VecDeque::new();
    // False when the last batch stopped early with complete lines left in `pending`
    // (too much parked): answer those before reading more.
    let mut need_read = true;
    let mut logged = Logged::default();
    let mut drain: Option<Instant> = *shutdown.borrow();
    // When an idle connection stops waiting for a request during the drain.
    let mut idle_until = drain.map(|d| d.min(Instant::now() + DRAIN_IDLE));

    let end = loop {
        chunk.clear();
        if chunk.capacity() < READ_SIZE {
            chunk.reserve(READ_SIZE);
        }
        let event = if !need_read {
            // Lines already here: answer them, with nothing read.
            Some(Ok((Ok(usize::MAX), std::mem::take(&mut chunk))))
        } else {
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
            Ok(usize::MAX) => {
                chunk.clear();
                usize::MAX
            }
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
                let mut ctx = Ctx {
                    worker,
                    io: &mut io,
                    out: &mut out,
                    line: &mut line,
                    parked: &mut parked,
                    tally: &mut tally,
                    logged: &mut logged,
                    peer,
                };
                if ctx.frame(&snap, frame).await.is_ok() {
                    let _ = ctx.settle(drain).await;
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
        need_read = true;
        {
            let mut ctx = Ctx {
                worker,
                io: &mut io,
                out: &mut out,
                line: &mut line,
                parked: &mut parked,
                tally: &mut tally,
                logged: &mut logged,
                peer,
            };
            loop {
                if ctx.parked_too_much() {
                    // The rest waits in `pending`, answered once the queue drains.
                    need_read = false;
                    break;
                }
                let (used, frame) = decoder.next(&data[pos..]);
                pos += used;
                let Some(frame) = frame else {
                    if used == 0 {
                        break;
                    }
                    continue;
                };
                if ctx.frame(&snap, frame).await.is_err() {
                    failed = true;
                    break;
                }
                if ctx.out.len() >= OUT_HIGH && write_out(ctx.io, ctx.out, peer).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if !failed && !ctx.parked.is_empty() {
                failed = ctx.settle(drain).await.is_err();
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

/// A line that waits on an enricher, or one answered behind such a line: answers
/// leave in request order.
struct Parked {
    text: Vec<u8>,
    state: LineState,
    out: Vec<u8>,
    snap: Rc<ThreadSnapshot>,
    /// Answered completely (only writing it remains): also a frame with nothing to
    /// look up (`PONG`, an over-long line's answer).
    done: bool,
}

/// What answering a connection's lines works with.
struct Ctx<'c, T> {
    worker: &'c Worker,
    io: &'c mut T,
    out: &'c mut Vec<u8>,
    line: &'c mut LineState,
    parked: &'c mut VecDeque<Parked>,
    tally: &'c mut Tally,
    logged: &'c mut Logged,
    peer: SocketAddr,
}

impl<T: Transport> Ctx<'_, T> {
    fn parked_too_much(&self) -> bool {
        self.parked.len() >= PARK_LINES
            || self
                .parked
                .iter()
                .map(|p| p.out.len() + p.text.len())
                .sum::<usize>()
                >= PARK_BYTES
    }

    /// Answer one frame: into `out`, writing it whenever it passes [`OUT_HIGH`] in
    /// the middle of a long answer; or, when it waits on an enricher or comes after
    /// one that does, into the parked queue. `Err` means the connection failed.
    async fn frame(&mut self, snap: &Rc<ThreadSnapshot>, frame: Frame<'_>) -> Result<(), ()> {
        let cfg = &self.worker.shared.config;
        let plain: Option<&[u8]> = match frame {
            Frame::Ping => Some(protocol::PONG),
            Frame::Overlong => {
                self.tally.requests += 1;
                Some(protocol::FINISHED)
            }
            Frame::Line(_) if cfg.bare => {
                self.tally.requests += 1;
                Some(protocol::FINISHED)
            }
            Frame::Line(_) => None,
        };
        if let Some(answer) = plain {
            match self.parked.back() {
                None => self.out.extend_from_slice(answer),
                Some(_) => self.parked.push_back(Parked {
                    text: Vec::new(),
                    state: LineState::default(),
                    out: answer.to_vec(),
                    snap: snap.clone(),
                    done: true,
                }),
            }
            return Ok(());
        }
        let Frame::Line(text) = frame else {
            return Ok(());
        };
        #[cfg(feature = "fault-injection")]
        if text == b"tracer-fault:panic" {
            panic!("fault injection: a panic while answering a request");
        }
        if !self.parked.is_empty() {
            // Behind a waiting line: look it up now, write it in turn.
            let mut p = Parked {
                text: text.to_vec(),
                state: LineState::default(),
                out: Vec::new(),
                snap: snap.clone(),
                done: false,
            };
            // Up to the output bound: the rest of a long answer is made when its
            // turn comes (`flush_parked` resumes it), so parked lines hold at most
            // about `PARK_BYTES` + `OUT_HIGH`.
            let progress = self.answer(&p.snap, &p.text, &mut p.state, &mut p.out, OUT_HIGH);
            p.done = progress == Progress::Done;
            if p.done {
                self.finish(&p.text, p.state.outcome(), p.out.len());
            }
            self.parked.push_back(p);
            return Ok(());
        }
        let start = self.out.len();
        self.line.reset();
        loop {
            let progress = {
                let (out, line) = (&mut *self.out, &mut *self.line);
                let categories = &snap.categories;
                self.worker.responder.borrow_mut().answer_part(
                    &snap.snapshot,
                    text,
                    line,
                    out,
                    OUT_HIGH,
                    |h| categories.hit(h.slot),
                )
            };
            match progress {
                Progress::Done => break,
                Progress::Full => write_out(self.io, self.out, self.peer).await?,
                Progress::Waiting => {
                    // What it has answered so far stays in `out`, in order; the rest
                    // waits in the queue.
                    self.parked.push_back(Parked {
                        text: text.to_vec(),
                        state: std::mem::take(self.line),
                        out: Vec::new(),
                        snap: snap.clone(),
                        done: false,
                    });
                    return Ok(());
                }
            }
        }
        self.finish(
            text,
            self.line.outcome(),
            self.out.len().saturating_sub(start),
        );
        Ok(())
    }

    /// One call to the thread's responder (borrowed only for this synchronous part,
    /// never across an await).
    fn answer(
        &self,
        snap: &ThreadSnapshot,
        text: &[u8],
        state: &mut LineState,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Progress {
        let categories = &snap.categories;
        self.worker.responder.borrow_mut().answer_part(
            &snap.snapshot,
            text,
            state,
            out,
            limit,
            |h| categories.hit(h.slot),
        )
    }

    /// Write what is answered, then the answers waiting on enrichers, in order: what
    /// came before a waiting line (and the part of it already answered) first.
    async fn settle(&mut self, drain: Option<Instant>) -> Result<(), ()> {
        if !self.out.is_empty() {
            write_out(self.io, self.out, self.peer).await?;
        }
        self.flush_parked(drain).await
    }

    /// Write the parked answers in order, waiting for each head's enrichers (within
    /// their timeouts, and the drain deadline).
    async fn flush_parked(&mut self, drain: Option<Instant>) -> Result<(), ()> {
        while let Some(mut head) = self.parked.pop_front() {
            while !head.done {
                match self.answer(
                    &head.snap,
                    &head.text,
                    &mut head.state,
                    &mut head.out,
                    OUT_HIGH,
                ) {
                    Progress::Done => {
                        head.done = true;
                        let bytes = head.out.len();
                        self.finish(&head.text, head.state.outcome(), bytes);
                    }
                    Progress::Full => write_out(self.io, &mut head.out, self.peer).await?,
                    Progress::Waiting => match drain {
                        Some(deadline) => {
                            let wait = head.state.wait();
                            if tokio::time::timeout_at(deadline.into(), wait)
                                .await
                                .is_err()
                            {
                                return Err(());
                            }
                        }
                        None => head.state.wait().await,
                    },
                }
            }
            write_out(self.io, &mut head.out, self.peer).await?;
        }
        Ok(())
    }

    /// Count and log a line whose answer is complete.
    fn finish(&mut self, text: &[u8], outcome: Outcome, answer_bytes: usize) {
        let cfg = &self.worker.shared.config;
        let (peer, tally, logged) = (self.peer, &mut *self.tally, &mut *self.logged);
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
            self.worker.stats.lines_truncated.add(1);
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
                answer_bytes,
                "request"
            );
        }
    }
}
