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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
            // One channel per helper; requests go round the helpers that are up.
            let mut helpers = Vec::with_capacity(me.processes);
            for i in 0..me.processes {
                let (tx, rx) = mpsc::unbounded_channel();
                let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
                tokio::task::spawn_local(keep_running(me.clone(), i, rx, up.clone()));
                helpers.push((tx, up));
            }
            let mut next = 0;
            while let Some(job) = jobs.recv().await {
                // Round the helpers that are up; when none is, the next in turn takes
                // it: a helper still starting answers it once it runs, one waiting to
                // be restarted answers it at once without hits.
                let n = helpers.len();
                let i = (0..n)
                    .map(|k| (next + k) % n)
                    .find(|&i| helpers[i].1.load(std::sync::atomic::Ordering::Relaxed))
                    .unwrap_or(next % n);
                next = i + 1;
                if let Err(mpsc::error::SendError(job)) = helpers[i].0.send(job) {
                    let _ = job
                        .reply
                        .send(Err(Error::new(Failure::Helper, "the helper is gone")));
                }
            }
            // The enricher was dropped (a reload replaced it): the helpers stop with
            // their channels.
        });
    }
}

/// Run helper `i`, restarting it when it ends, until its channel closes.
async fn keep_running(
    s: Arc<Supervisor>,
    i: usize,
    mut jobs: mpsc::UnboundedReceiver<Job>,
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

/// Run the helper once. `None`: its channel closed (stop for good); `Some(why)`: it
/// ended and should be restarted.
async fn run_once(
    s: &Supervisor,
    i: usize,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
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
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(enricher = %name, helper = i, pid, "helper: {line}");
        }
    });
    let mut out = BufReader::new(stdout).lines();
    let mut pending: HashMap<u64, oneshot::Sender<Result<Vec<EnrichHit>, Error>>> = HashMap::new();
    let mut next_id: u64 = 0;
    let fail_all = |pending: &mut HashMap<u64, oneshot::Sender<_>>, why: &str| {
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(Error::new(Failure::Helper, why)));
        }
    };
    let why = loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else {
                    fail_all(&mut pending, "the enricher was replaced");
                    return None;
                };
                next_id += 1;
                let mut line = serde_json::json!({
                    "id": next_id, "kind": job.kind.name(), "value": job.value,
                })
                .to_string();
                line.push('\n');
                if let Err(e) = stdin.write_all(line.as_bytes()).await {
                    let _ = job.reply.send(Err(Error::new(Failure::Helper, "the helper does not read")));
                    break format!("writing to the helper failed: {e}");
                }
                // Requests whose callers gave up are forgotten, so a helper that
                // never answers some ids does not make the table grow.
                if pending.len() >= 1024 {
                    pending.retain(|_, r| !r.is_closed());
                }
                pending.insert(next_id, job.reply);
            }
            line = out.next_line() => match line {
                Ok(Some(line)) => {
                    match parse_answer(&line, &s.category) {
                        Ok((id, result)) => {
                            if let Some(reply) = pending.remove(&id) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => break format!("the helper wrote something that is not an answer ({e}): {:.200}", line),
                    }
                }
                Ok(None) => break "the helper closed its output".to_string(),
                Err(e) => break format!("reading the helper failed: {e}"),
            },
            status = child.wait() => {
                break match status {
                    Ok(st) => format!("the helper exited ({st})"),
                    Err(e) => format!("the helper failed: {e}"),
                };
            }
        }
    };
    fail_all(&mut pending, &why);
    let _ = child.start_kill();
    Some(why)
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
}
