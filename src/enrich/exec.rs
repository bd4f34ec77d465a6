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
//! the requests it had in flight end without hits.
//!
//! Nothing a helper does can wedge tracer or grow its memory without bound:
//! - its output is read while its input is written (one task selects on both, and
//!   writes only what the pipe takes), so a helper blocked on writing answers is
//!   never left waiting on tracer blocked on writing requests;
//! - a request whose caller gave up (timeout) before it could be written is
//!   dropped, not written;
//! - each helper's queue holds `concurrency` requests (as many as can be waited on
//!   at once); when the queues of the helpers that are up are full, a lookup fails
//!   at once, counted as a helper failure;
//! - a helper whose oldest unanswered request is older than [`STALL_TIMEOUTS`]
//!   timeouts is killed and restarted: it is wedged, or answers so late that no one
//!   waits for its answers any more;
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

/// A helper whose oldest unanswered request is older than this many timeouts is
/// killed and restarted.
const STALL_TIMEOUTS: u32 = 4;

/// ... but never sooner than this (a tiny `timeout` should not make every
/// hiccup a restart).
const MIN_STALL: Duration = Duration::from_secs(1);

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
    let (tx, rx) = mpsc::channel(QUEUE);
    let supervisor = Supervisor {
        name: spec.name.clone(),
        command: exec.command.clone(),
        dir: exec.dir.clone(),
        processes: exec.processes.max(1),
        category: spec.category(),
        queue: spec.common.concurrency.max(1),
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
    /// A request left unanswered this long marks its helper as wedged.
    stall: Duration,
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
    // The table's hard bound; the stall check keeps it far below in practice.
    let max_pending = s.queue.saturating_mul(8);
    let mut next_id: u64 = 0;
    // Requests serialized but not yet (wholly) taken by the helper's input pipe.
    let mut outbox: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut check = tokio::time::interval((s.stall / 4).max(Duration::from_millis(10)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fail_all = |pending: &mut BTreeMap<u64, Waiting>, why: &str| {
        for (_, w) in std::mem::take(pending) {
            let _ = w.reply.send(Err(Error::new(Failure::Helper, why)));
        }
    };
    let why = loop {
        // New requests are taken only once the last ones are written: the queue, not
        // a buffer here, is what fills up behind a helper that does not read.
        let take = outbox.is_empty() && pending.len() < max_pending;
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
                        pending.insert(next_id, Waiting { since: Instant::now(), reply: j.reply });
                    }
                    if outbox.len() < WRITE_BATCH && pending.len() < max_pending {
                        job = jobs.try_recv().ok();
                    }
                }
            }
            n = stdin.write(&outbox[written..]), if written < outbox.len() => match n {
                Ok(0) => break "the helper's input is closed".to_string(),
                Ok(n) => {
                    written += n;
                    if written == outbox.len() {
                        outbox.clear();
                        written = 0;
                    }
                }
                Err(e) => break format!("writing to the helper failed: {e}"),
            },
            line = out.next() => match line {
                Ok(Line::Whole) => {
                    let answer = std::str::from_utf8(out.line())
                        .map_err(|e| e.to_string())
                        .and_then(|line| parse_answer(line, &s.category));
                    match answer {
                        Ok((id, result)) => {
                            if let Some(w) = pending.remove(&id) {
                                let _ = w.reply.send(result);
                            }
                        }
                        Err(e) => break format!(
                            "the helper wrote something that is not an answer ({e}): {:.200}",
                            String::from_utf8_lossy(out.line())
                        ),
                    }
                }
                Ok(Line::Cut) => break format!(
                    "the helper wrote something that is not an answer (a line longer than {MAX_ANSWER} bytes): {:.200}",
                    String::from_utf8_lossy(out.line())
                ),
                Ok(Line::End) => break "the helper closed its output".to_string(),
                Err(e) => break format!("reading the helper failed: {e}"),
            },
            status = child.wait() => {
                break match status {
                    Ok(st) => format!("the helper exited ({st})"),
                    Err(e) => format!("the helper failed: {e}"),
                };
            }
            _ = check.tick() => {
                if let Some((_, oldest)) = pending.first_key_value() {
                    let age = oldest.since.elapsed();
                    if age > s.stall {
                        break format!(
                            "the helper left a request unanswered for {age:.1?} (more than {STALL_TIMEOUTS} timeouts): killed"
                        );
                    }
                }
            }
        }
    };
    fail_all(&mut pending, &why);
    let _ = child.start_kill();
    Some(why)
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
