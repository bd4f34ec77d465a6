//! `exec` enrichers: long-running helper processes in any language, speaking JSON
//! lines on their standard input and output (SPEC §11).
//!
//! tracer writes `{"id":7,"kind":"url","value":"…"}`; the helper answers
//! `{"id":7,"hits":[{"category":"…","context":{…}}]}` or `{"id":7,"error":"…"}`, in
//! any order, with several requests in flight. A hit's `category` defaults to the
//! enricher's; its `context` is flattened as a feed record is. What a helper writes
//! on standard error goes to tracer's log.
//!
//! The helpers (`processes` of them, default 1) belong to a supervisor thread of
//! their own, shared by every worker thread: workers hand requests over a channel
//! and wait for the answer. A helper that exits or writes something that is not an
//! answer is restarted after a pause (1 s, doubling to 30 s while it keeps failing);
//! the requests it had in flight end without hits, except those it answered before
//! it went (its output is read to its end, briefly, before they are failed).
//!
//! Nothing a helper does can wedge tracer or grow its memory without bound:
//! - its output is read while its input is written (one task selects on both, and
//!   writes only what the pipe takes), so a helper blocked on writing answers is
//!   never left waiting on tracer blocked on writing requests;
//! - at most `concurrency` requests are written and unanswered over all the
//!   helpers (each helper has its share, see [`share`]); the others wait in the
//!   helper's queue, so the queue, not the helper's input pipe, is what grows behind
//!   a busy helper, and a request whose caller gave up (timeout) meanwhile is
//!   dropped, not written;
//! - each helper's queue holds `concurrency` requests (as many as can be waited on
//!   at once); when the queues of the helpers that are up are full, a lookup fails
//!   at once, counted as a helper failure;
//! - a helper with requests unanswered that has answered nothing for
//!   [`STALL_TIMEOUTS`] timeouts is wedged: it is killed and restarted. Progress,
//!   not the age of the oldest request, is what counts: a one-at-a-time helper
//!   under load has old requests and is healthy while it answers;
//! - a request the helper skipped (it answered later ones) and nobody waits for any
//!   more is forgotten after [`STALL_TIMEOUTS`] timeouts, so such requests do not
//!   take the helper's share for good;
//! - output lines are read up to [`MAX_ANSWER`] bytes (a longer one is garbage),
//!   standard error lines up to [`MAX_LOG_LINE`] (the rest of a longer one is not
//!   logged).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::http::RemoteEnricher;
use super::remote::{Error, Failure, Remote, Upstream};
use super::{BuildError, EnrichHit, Enricher, Spec, Type};
use crate::feed::fields::{self, Fields};
use crate::indicator::Kind;

/// Settings of an `exec` enricher.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecSpec {
    /// The program and its arguments.
    pub command: Vec<String>,
    pub processes: usize,
    /// The helpers' working directory (the config file's, so that relative paths in
    /// `command` mean what they say there); `None`: tracer's own.
    pub dir: Option<std::path::PathBuf>,
}

/// One request to a helper.
struct Job {
    kind: Kind,
    value: String,
    reply: oneshot::Sender<Result<Vec<EnrichHit>, Error>>,
}

/// Requests waiting in the channel to the supervisor at most (then: busy).
const QUEUE: usize = 4096;

/// A helper with requests unanswered that has answered nothing for this many
/// timeouts is killed and restarted; a request it skipped is forgotten after as
/// many.
const STALL_TIMEOUTS: u32 = 4;

/// ... but never sooner than this (a tiny `timeout` should not make every
/// hiccup a restart).
const MIN_STALL: Duration = Duration::from_secs(1);

/// Forgotten requests are logged at most once per this long per helper (with their
/// count since): a helper that skips requests all the time should not flood the log.
const FORGOT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a helper's output is still read, once it has exited or closed its
/// input, for answers it wrote before (its requests' callers may still wait). Short
/// and bounded: a child of the helper may hold the pipe open.
const DRAIN: Duration = Duration::from_secs(1);

/// The longest answer line read from a helper; a longer one is garbage.
const MAX_ANSWER: usize = 1024 * 1024;

/// The longest line of a helper's standard error logged; the rest of it is not.
const MAX_LOG_LINE: usize = 4 * 1024;

/// Requests taken from a helper's queue at once, up to about this many bytes (one
/// write for many small requests). A request taken is written even if its caller
/// gives up meanwhile; small batches keep those few.
const WRITE_BATCH: usize = 8 * 1024;

pub fn build(spec: &Spec) -> Result<Arc<dyn Enricher>, BuildError> {
    let Type::Exec(exec) = &spec.kind else {
        return Err(BuildError::Invalid {
            name: spec.name.clone(),
            reason: "not an exec enricher".into(),
        });
    };
    if exec.command.is_empty() {
        return Err(BuildError::Invalid {
            name: spec.name.clone(),
            reason: "`command` is empty".into(),
        });
    }
    let concurrency = spec.common.concurrency.max(1);
    let mut processes = exec.processes.max(1);
    if processes > concurrency {
        // A helper's share of the requests in flight would be none.
        tracing::warn!(
            enricher = %spec.name,
            "`processes` = {processes} is more than `concurrency` = {concurrency}: \
             only {concurrency} helpers are started"
        );
        processes = concurrency;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let supervisor = Supervisor {
        name: spec.name.clone(),
        command: exec.command.clone(),
        dir: exec.dir.clone(),
        processes,
        category: spec.category(),
        queue: concurrency,
        concurrency,
        stall: (spec.common.timeout * STALL_TIMEOUTS).max(MIN_STALL),
    };
    std::thread::Builder::new()
        .name(format!("tracer-exec-{}", spec.name))
        .spawn(move || supervisor.run(rx))
        .map_err(|source| BuildError::Io {
            name: spec.name.clone(),
            source,
        })?;
    Ok(Arc::new(RemoteEnricher {
        name: spec.name.clone(),
        kind: "exec",
        kinds: spec.kinds.clone(),
        remote: Remote::new(&spec.name, &spec.common, Exec { jobs: tx }),
    }))
}

/// The worker threads' side: hand the request to the supervisor, wait for the answer.
struct Exec {
    jobs: mpsc::Sender<Job>,
}

impl Upstream for Exec {
    fn call(
        &self,
        kind: Kind,
        value: &[u8],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<EnrichHit>, Error>>>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            kind,
            value: String::from_utf8_lossy(value).into_owned(),
            reply,
        };
        let sent = self.jobs.try_send(job);
        Box::pin(async move {
            sent.map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Error::new(Failure::Busy, "too many requests queued for the helpers")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Error::new(Failure::Helper, "the helpers' supervisor is gone")
                }
            })?;
            answer
                .await
                .map_err(|_| Error::new(Failure::Helper, "the helper went away with the request"))?
        })
    }
}

struct Supervisor {
    name: String,
    command: Vec<String>,
    dir: Option<std::path::PathBuf>,
    processes: usize,
    category: String,
    /// Requests waiting for each helper at most (`concurrency`).
    queue: usize,
    /// Requests written and unanswered over all the helpers at most.
    concurrency: usize,
    /// A helper with requests unanswered that answers nothing for this long is
    /// wedged; a request it skipped is forgotten after as long.
    stall: Duration,
}

/// Requests helper `i` of `processes` may have written and unanswered: the helpers'
/// shares add up to `concurrency` (`processes` ≤ `concurrency`, so each has one at
/// least).
fn share(concurrency: usize, processes: usize, i: usize) -> usize {
    concurrency / processes + usize::from(i < concurrency % processes)
}

/// The supervisor's handle on one helper.
struct Helper {
    jobs: mpsc::Sender<Job>,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl Supervisor {
    fn run(self, mut jobs: mpsc::Receiver<Job>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(enricher = %self.name, "cannot start the helpers' runtime: {e}");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        let me = Arc::new(self);
        local.block_on(&rt, async move {
            // One bounded queue per helper; requests go round the helpers that are up.
            let mut helpers = Vec::with_capacity(me.processes);
            for i in 0..me.processes {
                let (tx, rx) = mpsc::channel(me.queue);
                let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
                tokio::task::spawn_local(keep_running(me.clone(), i, rx, up.clone()));
                helpers.push(Helper { jobs: tx, up });
            }
            let mut next = 0;
            while let Some(job) = jobs.recv().await {
                if let Err(job) = dispatch(&helpers, &mut next, job) {
                    let _ = job.reply.send(Err(Error::new(
                        Failure::Helper,
                        "the helpers' queues are full (a helper is wedged or too slow)",
                    )));
                }
            }
            // The enricher was dropped (a reload replaced it): the helpers stop with
            // their channels.
        });
    }
}

/// Hand `job` to the next helper in turn that is up and has room in its queue; when
/// none is up, to the next in turn (a helper still starting answers it once it runs,
/// one waiting to be restarted answers it at once without hits). Gives the job back
/// when no queue takes it.
fn dispatch(helpers: &[Helper], next: &mut usize, mut job: Job) -> Result<(), Job> {
    use std::sync::atomic::Ordering;
    let n = helpers.len();
    let mut any_up = false;
    for i in (0..n).map(|k| (*next + k) % n) {
        if !helpers[i].up.load(Ordering::Relaxed) {
            continue;
        }
        any_up = true;
        match helpers[i].jobs.try_send(job) {
            Ok(()) => {
                *next = i + 1;
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j)) => {
                job = j
            }
        }
    }
    if any_up {
        return Err(job);
    }
    let i = *next % n;
    *next = i + 1;
    helpers[i].jobs.try_send(job).map_err(|e| match e {
        mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
    })
}

/// Run helper `i`, restarting it when it ends, until its channel closes.
async fn keep_running(
    s: Arc<Supervisor>,
    i: usize,
    mut jobs: mpsc::Receiver<Job>,
    up: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let why = run_once(&s, i, &mut jobs, &up).await;
        up.store(false, std::sync::atomic::Ordering::Relaxed);
        let Some(why) = why else { return };
        // A helper that ran well for a while gets the short pause again.
        if started.elapsed() > Duration::from_secs(60) {
            pause = Duration::from_secs(1);
        }
        tracing::warn!(enricher = %s.name, helper = i, "{why}; restarting in {pause:?}");
        // Requests that arrive meanwhile go to the other helpers, or end without hits.
        let deadline = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                job = jobs.recv() => match job {
                    Some(job) => {
                        let _ = job.reply.send(Err(Error::new(Failure::Helper, "the helper is restarting")));
                    }
                    None => return,
                },
            }
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// A request written to a helper, waiting for its answer.
struct Waiting {
    since: Instant,
    reply: oneshot::Sender<Result<Vec<EnrichHit>, Error>>,
}

/// Run the helper once. `None`: its channel closed (stop for good); `Some(why)`: it
/// ended and should be restarted.
async fn run_once(
    s: &Supervisor,
    i: usize,
    jobs: &mut mpsc::Receiver<Job>,
    up: &std::sync::atomic::AtomicBool,
) -> Option<String> {
    let mut command = tokio::process::Command::new(&s.command[0]);
    if let Some(dir) = &s.dir {
        command.current_dir(dir);
    }
    let mut child = match command
        .args(&s.command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot start `{}`: {e}", s.command.join(" "))),
    };
    let pid = child.id().unwrap_or(0);
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Some("the helper's pipes are missing".into());
    };
    tracing::info!(enricher = %s.name, helper = i, pid, "helper started");
    up.store(true, std::sync::atomic::Ordering::Relaxed);
    let name = s.name.clone();
    tokio::task::spawn_local(async move {
        let mut lines = CappedLines::new(stderr, MAX_LOG_LINE);
        loop {
            match lines.next().await {
                Ok(Line::Whole) => {
                    let line = String::from_utf8_lossy(lines.line());
                    tracing::info!(enricher = %name, helper = i, pid, "helper: {line}");
                }
                Ok(Line::Cut) => {
                    let line = String::from_utf8_lossy(lines.line());
                    tracing::info!(enricher = %name, helper = i, pid, "helper: {line}… (cut at {MAX_LOG_LINE} bytes)");
                }
                Ok(Line::End) | Err(_) => break,
            }
        }
    });
    let mut out = CappedLines::new(stdout, MAX_ANSWER);
    // Ids grow with time: the first entry is the oldest request.
    let mut pending: BTreeMap<u64, Waiting> = BTreeMap::new();
    // This helper's share of the requests in flight; the others wait in its queue.
    let cap = share(s.concurrency, s.processes, i);
    let mut next_id: u64 = 0;
    // The last answer, or when the helper was last given work while it had none: a
    // helper with requests pending that answered nothing for `stall` is wedged.
    let mut last_progress = Instant::now();
    // The newest request answered: an older one still pending was skipped.
    let mut newest_answered: u64 = 0;
    // Skipped requests forgotten and not logged yet, and when that was last logged.
    let mut forgotten = 0;
    let mut forgot_logged: Option<Instant> = None;
    // Requests serialized but not yet (wholly) taken by the helper's input pipe.
    let mut outbox: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut check = tokio::time::interval((s.stall / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        // New requests are taken only once the last ones are written, and while the
        // helper has fewer than its share unanswered: the queue, not a buffer here
        // or the helper's input pipe, is what fills up behind a busy helper.
        let take = outbox.is_empty() && pending.len() < cap;
        tokio::select! {
            job = jobs.recv(), if take => {
                let Some(job) = job else {
                    fail_all(&mut pending, "the enricher was replaced");
                    return None;
                };
                let mut job = Some(job);
                while let Some(j) = job.take() {
                    // A request whose caller gave up is not written.
                    if !j.reply.is_closed() {
                        next_id += 1;
                        let line = serde_json::json!({
                            "id": next_id, "kind": j.kind.name(), "value": j.value,
                        })
                        .to_string();
                        outbox.extend_from_slice(line.as_bytes());
                        outbox.push(b'\n');
                        let now = Instant::now();
                        if pending.is_empty() {
                            last_progress = now;
                        }
                        pending.insert(next_id, Waiting { since: now, reply: j.reply });
                    }
                    if outbox.len() < WRITE_BATCH && pending.len() < cap {
                        job = jobs.try_recv().ok();
                    }
                }
            }
            n = stdin.write(&outbox[written..]), if written < outbox.len() => match n {
                Ok(0) => break Ended::Gone("the helper's input is closed".to_string()),
                Ok(n) => {
                    written += n;
                    if written == outbox.len() {
                        outbox.clear();
                        written = 0;
                    }
                }
                Err(e) => break Ended::Gone(format!("writing to the helper failed: {e}")),
            },
            line = out.next() => match line {
                Ok(Line::Whole) => match answer(&out, &s.category) {
                    Ok((id, result)) => {
                        last_progress = Instant::now();
                        if id <= next_id {
                            newest_answered = newest_answered.max(id);
                        }
                        if let Some(w) = pending.remove(&id) {
                            let _ = w.reply.send(result);
                        }
                    }
                    Err(why) => break Ended::Broken(why),
                },
                Ok(Line::Cut) => break Ended::Broken(format!(
                    "the helper wrote something that is not an answer (a line longer than {MAX_ANSWER} bytes): {:.200}",
                    String::from_utf8_lossy(out.line())
                )),
                Ok(Line::End) => break Ended::Broken("the helper closed its output".to_string()),
                Err(e) => break Ended::Broken(format!("reading the helper failed: {e}")),
            },
            status = child.wait() => {
                break Ended::Gone(match status {
                    Ok(st) => format!("the helper exited ({st})"),
                    Err(e) => format!("the helper failed: {e}"),
                });
            }
            _ = check.tick() => {
                let now = Instant::now();
                let quiet = now.duration_since(last_progress);
                if !pending.is_empty() && quiet > s.stall {
                    break Ended::Broken(format!(
                        "the helper answered nothing for {quiet:.1?} with {} requests unanswered (more than {STALL_TIMEOUTS} timeouts): killed",
                        pending.len()
                    ));
                }
                // Requests it skipped (it answered later ones) long ago, which no one
                // waits for any more: forgotten, so that they do not hold its share.
                let before = pending.len();
                pending.retain(|&id, w| {
                    id > newest_answered
                        || !w.reply.is_closed()
                        || now.duration_since(w.since) <= s.stall
                });
                forgotten += before - pending.len();
                let log_due = forgot_logged.is_none_or(|t| now.duration_since(t) >= FORGOT_LOG_EVERY);
                if forgotten > 0 && log_due {
                    tracing::info!(
                        enricher = %s.name, helper = i, pid,
                        "forgot {forgotten} request(s) the helper left unanswered for more than {STALL_TIMEOUTS} timeouts while it answered later ones"
                    );
                    forgotten = 0;
                    forgot_logged = Some(now);
                }
            }
        }
    };
    up.store(false, std::sync::atomic::Ordering::Relaxed);
    let why = match ended {
        Ended::Gone(why) => {
            // Answers written before it went may still sit in the pipe: `wait` or a
            // failed write can be seen before them.
            let _ = tokio::time::timeout(DRAIN, drain(&mut out, &mut pending, &s.category)).await;
            why
        }
        Ended::Broken(why) => why,
    };
    fail_all(&mut pending, &why);
    let _ = child.start_kill();
    Some(why)
}

/// How a helper's run ended.
enum Ended {
    /// It exited or stopped taking input: its output is still worth reading.
    Gone(String),
    /// Its output is closed, broken or garbage, or it is wedged.
    Broken(String),
}

fn fail_all(pending: &mut BTreeMap<u64, Waiting>, why: &str) {
    for (_, w) in std::mem::take(pending) {
        let _ = w.reply.send(Err(Error::new(Failure::Helper, why)));
    }
}

/// The answer [`CappedLines::line`] holds, or why it is not one.
fn answer<R: AsyncRead + Unpin>(
    out: &CappedLines<R>,
    category: &str,
) -> Result<(u64, Result<Vec<EnrichHit>, Error>), String> {
    std::str::from_utf8(out.line())
        .map_err(|e| e.to_string())
        .and_then(|line| parse_answer(line, category))
        .map_err(|e| {
            format!(
                "the helper wrote something that is not an answer ({e}): {:.200}",
                String::from_utf8_lossy(out.line())
            )
        })
}

/// Answer `pending` requests from what is left in a helper's output, up to its end,
/// the first line that is not an answer, or the moment nothing is pending.
async fn drain<R: AsyncRead + Unpin>(
    out: &mut CappedLines<R>,
    pending: &mut BTreeMap<u64, Waiting>,
    category: &str,
) {
    while !pending.is_empty() {
        if !matches!(out.next().await, Ok(Line::Whole)) {
            return;
        }
        let Ok((id, result)) = answer(out, category) else {
            return;
        };
        if let Some(w) = pending.remove(&id) {
            let _ = w.reply.send(result);
        }
    }
}

/// What [`CappedLines::next`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (without its LF, or the last one before the end without one).
    Whole,
    /// The first `cap` bytes of a longer line; the rest of it is skipped.
    Cut,
    /// The end of the stream.
    End,
}

/// Lines of a pipe, each held up to `cap` bytes whatever the other side writes:
/// `BufReader::lines` would buffer a line without LF without limit.
struct CappedLines<R> {
    reader: BufReader<R>,
    cap: usize,
    line: Vec<u8>,
    /// `line` was handed over; cleared when the next one is read.
    handed: bool,
    /// In the rest of a line that was cut: skipped up to its LF.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> CappedLines<R> {
    fn new(reader: R, cap: usize) -> CappedLines<R> {
        CappedLines {
            reader: BufReader::new(reader),
            cap,
            line: Vec::new(),
            handed: false,
            skipping: false,
        }
    }

    /// The line [`CappedLines::next`] found last.
    fn line(&self) -> &[u8] {
        &self.line
    }

    /// Read the next line into [`CappedLines::line`]. Cancel-safe (a `select!`
    /// branch): it waits only on `fill_buf`, and what it took is kept in `self`.
    async fn next(&mut self) -> std::io::Result<Line> {
        if self.handed {
            self.line.clear();
            self.handed = false;
        }
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(Line::End);
                }
                self.handed = true;
                return Ok(Line::Whole);
            }
            let lf = buf.iter().position(|&b| b == b'\n');
            let end = lf.unwrap_or(buf.len());
            if self.skipping {
                self.reader.consume(lf.map_or(end, |p| p + 1));
                self.skipping = lf.is_none();
                continue;
            }
            let room = self.cap - self.line.len();
            if end > room {
                self.line.extend_from_slice(&buf[..room]);
                self.reader.consume(room);
                self.skipping = true;
                self.handed = true;
                return Ok(Line::Cut);
            }
            self.line.extend_from_slice(&buf[..end]);
            match lf {
                Some(p) => {
                    self.reader.consume(p + 1);
                    self.handed = true;
                    return Ok(Line::Whole);
                }
                None => self.reader.consume(end),
            }
        }
    }
}

/// One answer line: its id, and the hits or the helper's error.
fn parse_answer(
    line: &str,
    category: &str,
) -> Result<(u64, Result<Vec<EnrichHit>, Error>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let id = v
        .get("id")
        .and_then(Value::as_u64)
        .ok_or("no numeric `id`")?;
    if let Some(err) = v.get("error") {
        let text = err.as_str().map_or_else(|| err.to_string(), String::from);
        return Ok((
            id,
            Err(Error::new(
                Failure::BadAnswer,
                format!("the helper says: {text}"),
            )),
        ));
    }
    let hits = v
        .get("hits")
        .and_then(Value::as_array)
        .ok_or("no `hits` array")?;
    let mut fields = Fields::default();
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        let cat = hit
            .get("category")
            .and_then(Value::as_str)
            .unwrap_or(category);
        match hit.get("context") {
            Some(ctx) => fields::flatten_json(&mut fields, ctx),
            None => fields.clear(),
        }
        out.push(EnrichHit::new(cat.as_bytes(), fields.iter()));
    }
    Ok((id, Ok(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_and_garbage_is_refused() {
        let (id, hits) = parse_answer(
            r#"{"id":7,"hits":[{"category":"Decoder","context":{"decodedURL":"a b","n":[1,2]}},{"context":{"x":"y"}}]}"#,
            "default",
        )
        .expect("an answer");
        assert_eq!(id, 7);
        let hits = hits.expect("hits");
        assert_eq!(&*hits[0].category, b"Decoder");
        assert_eq!(&*hits[0].context, b"decodedURL=a b|n=1,2");
        assert_eq!(&*hits[1].category, b"default");
        let (_, err) = parse_answer(r#"{"id":8,"error":"no such value"}"#, "d").expect("an answer");
        assert_eq!(err.map_err(|e| e.failure).err(), Some(Failure::BadAnswer));
        assert!(parse_answer("hello", "d").is_err());
        assert!(parse_answer(r#"{"hits":[]}"#, "d").is_err());
    }

    #[test]
    fn the_helpers_shares_add_up_to_the_concurrency() {
        for concurrency in 1..40 {
            for processes in 1..=concurrency {
                let shares: Vec<usize> = (0..processes)
                    .map(|i| share(concurrency, processes, i))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), concurrency);
                assert!(shares
                    .iter()
                    .all(|&n| n >= 1 && n <= concurrency.div_ceil(processes)));
            }
        }
    }

    /// Every line [`CappedLines`] finds in `input`, with what it found.
    fn capped(input: &[u8], cap: usize) -> Vec<(Line, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut lines = CappedLines::new(input, cap);
            let mut got = Vec::new();
            loop {
                let found = lines.next().await.expect("read");
                if found == Line::End {
                    return got;
                }
                got.push((found, String::from_utf8_lossy(lines.line()).into_owned()));
            }
        })
    }

    #[test]
    fn long_lines_are_cut_at_the_cap_and_their_rest_skipped() {
        let long = "y".repeat(20_000);
        let input = format!("short\n{long}\nabcd\nabcde\n\nlast");
        assert_eq!(
            capped(input.as_bytes(), 4),
            [
                (Line::Cut, "shor".into()),
                (Line::Cut, "yyyy".into()),
                (Line::Whole, "abcd".into()),
                (Line::Cut, "abcd".into()),
                (Line::Whole, String::new()),
                (Line::Whole, "last".into()),
            ]
        );
        // A line without LF to the end is cut once, then the stream ends.
        assert_eq!(
            capped(long.as_bytes(), 1000),
            [(Line::Cut, "y".repeat(1000))]
        );
        assert_eq!(
            capped(format!("{long}\nok\n").as_bytes(), 100_000)[1],
            (Line::Whole, "ok".into())
        );
    }
}
