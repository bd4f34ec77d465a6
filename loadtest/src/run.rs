//! Running the load: connections, pacing, answer checking, latency histograms.
//!
//! Each connection is a writer task and a reader task on one current-thread runtime
//! per client thread. The writer sends request lines, gated by `depth` (requests in
//! flight) or paced by a per-connection rate (open loop); it queues what each request
//! must produce and when it was written. The reader splits the byte stream into answers,
//! checks each against the head of the queue, and records latency from the moment the
//! request was written. In open-loop runs the writer also records how late each send
//! was against its schedule: tokio's timers tick in milliseconds, and a server that
//! stalls the writer (backpressure) shows up there rather than vanishing
//! (coordinated omission).
//!
//! `--http` connections ([`crate::http`] opens them and makes each exchange) share all
//! of this but the session: one request at a time on a keep-alive connection, the
//! next when the answer is checked (closed loop) or when it is due (open loop).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use tracer::protocol::cybertrace::{Answer, AnswerSplitter, FINISHED, PREAMBLE};

use crate::check::{check, check_http, ErrorKind};
use crate::http::Endpoint;
use crate::workload::{Sent, Workload};

/// How long an answer (or an HTTP connection's handshakes) may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Plan {
    /// Where connections go (for `--http`, the URL's resolved address).
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub connections: usize,
    pub threads: usize,
    pub depth: usize,
    /// Total requests per second over all connections (open loop); 0 = closed loop.
    pub rate: f64,
    pub reconnect_each: bool,
    pub per_request: usize,
    pub hit_ratio: f64,
    pub warmup: Duration,
    pub duration: Duration,
    pub idle: usize,
    /// The target is a bare responder: nothing may hit.
    pub bare: bool,
    /// After a connection breaks, open a new one and go on (as KUMA does).
    pub reconnect_on_error: bool,
    /// How many of the connections are replaced every `churn_every`.
    pub churn: usize,
    pub churn_every: Duration,
    pub progress: bool,
}

/// What the connections speak.
#[derive(Clone, Debug)]
pub enum Protocol {
    /// The CyberTrace line protocol (SPEC §2).
    Tcp,
    /// The HTTP API (SPEC §12): one request in flight per keep-alive connection.
    Http(Arc<Endpoint>),
}

/// What one client thread measured.
#[derive(Default)]
struct Tally {
    requests: u64,
    indicators: u64,
    errors: BTreeMap<ErrorKind, u64>,
    first_errors: Vec<String>,
    /// Requests outstanding on connections that broke.
    lost: u64,
    first_lost: Vec<String>,
    /// Connections that broke under us, and new connections made.
    broken: u64,
    reconnects: u64,
    connect_failures: u64,
}

impl Tally {
    fn error(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        *self.errors.entry(kind).or_default() += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(format!("{}: {}", kind, detail()));
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub indicators: u64,
    pub requests_per_sec: f64,
    pub lookups_per_sec: f64,
    pub latency_us: Latency,
    /// Open loop only: how late sends were against their schedule.
    pub send_lateness_us: Option<Latency>,
    pub errors: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    /// Requests that got no answer because their connection broke (a server killed,
    /// a connection reset): not wrong answers, but not answered either.
    pub lost: u64,
    pub first_lost: Vec<String>,
    /// Connections that broke under the run, new connections made after a break or a
    /// `--churn` replacement, and connection attempts refused.
    pub connections_broken: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether the run failed: a wrong answer, a request left unanswered, or nothing
    /// answered at all.
    pub fn failed(&self) -> bool {
        self.error_count() > 0 || self.lost > 0 || self.requests == 0
    }
}

/// Shared across the threads: live counts for the progress line.
#[derive(Default)]
struct Live {
    requests: std::sync::atomic::AtomicU64,
    indicators: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

pub fn run(plan: &Plan, workload: Arc<Workload>) -> anyhow::Result<Report> {
    if let Protocol::Http(_) = plan.protocol {
        // One request in flight on a long-lived connection is all `--http` does.
        anyhow::ensure!(
            plan.depth == 1 && !plan.reconnect_each && plan.idle == 0 && !plan.bare,
            "--http runs one request at a time per connection, with no idle connections"
        );
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop_at = measure_from + plan.duration;
    let threads = plan.threads.max(1).min(plan.connections.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let plan = plan.clone();
        let workload = workload.clone();
        let live = live.clone();
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<(Tally, Histogram<u64>, Histogram<u64>)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                local.block_on(
                    &rt,
                    client_thread(t, threads, plan, workload, live, measure_from, stop_at),
                )
            },
        ));
    }
    if plan.progress {
        let live = live.clone();
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let (mut last_r, mut last_i) = (0, 0);
            let mut t = 0;
            while Instant::now() < stop_at {
                std::thread::sleep(Duration::from_secs(1));
                t += 1;
                let (r, i) = (live.requests.load(Relaxed), live.indicators.load(Relaxed));
                eprintln!(
                    "t={t:>3}s  {:>9} req/s  {:>9} lookups/s  errors {}",
                    r - last_r,
                    i - last_i,
                    live.errors.load(Relaxed)
                );
                (last_r, last_i) = (r, i);
            }
        });
    }
    let mut total = Tally::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in handles {
        let (t, hh, ll) = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        total.requests += t.requests;
        total.indicators += t.indicators;
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.first_errors.extend(t.first_errors);
        total.lost += t.lost;
        total.first_lost.extend(t.first_lost);
        total.broken += t.broken;
        total.reconnects += t.reconnects;
        total.connect_failures += t.connect_failures;
        hist.add(hh)?;
        late.add(ll)?;
    }
    let seconds = plan.duration.as_secs_f64();
    let (target, mode) = match &plan.protocol {
        Protocol::Tcp => (plan.addr.to_string(), tcp_mode(plan)),
        Protocol::Http(ep) => {
            let objects = match plan.per_request {
                0 => "1–3".to_string(),
                n => n.to_string(),
            };
            let pacing = if plan.rate > 0.0 {
                format!("open loop at {:.0} req/s", plan.rate)
            } else {
                "closed loop".to_string()
            };
            (
                ep.url.clone(),
                format!("HTTP keep-alive, {pacing}, 1 in flight, {objects} objects per request"),
            )
        }
    };
    Ok(Report {
        target,
        mode,
        connections: plan.connections,
        seconds,
        requests: total.requests,
        indicators: total.indicators,
        requests_per_sec: total.requests as f64 / seconds,
        lookups_per_sec: total.indicators as f64 / seconds,
        latency_us: Latency::of(&hist),
        send_lateness_us: (plan.rate > 0.0).then(|| Latency::of(&late)),
        errors: total
            .errors
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        first_errors: total.first_errors.into_iter().take(5).collect(),
        lost: total.lost,
        first_lost: total.first_lost.into_iter().take(5).collect(),
        connections_broken: total.broken,
        reconnects: total.reconnects,
        connect_failures: total.connect_failures,
    })
}

/// How the TCP mode's load is described in the report.
fn tcp_mode(plan: &Plan) -> String {
    if plan.reconnect_each {
        "reconnect per request".to_string()
    } else if plan.rate > 0.0 {
        format!("open loop at {:.0} req/s", plan.rate)
    } else if plan.depth > 1 {
        format!("pipelined, depth {}", plan.depth)
    } else {
        "closed loop, 1 in flight".to_string()
    }
}

struct Conn {
    plan: Plan,
    /// `--churn`: replace this connection this often.
    churn_every: Option<Duration>,
    workload: Arc<Workload>,
    live: Arc<Live>,
    tally: Rc<RefCell<Tally>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    late: Rc<RefCell<Histogram<u64>>>,
    measure_from: Instant,
    stop_at: Instant,
}

async fn client_thread(
    thread: usize,
    threads: usize,
    plan: Plan,
    workload: Arc<Workload>,
    live: Arc<Live>,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<(Tally, Histogram<u64>, Histogram<u64>)> {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let late = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    // Idle connections: preamble only, held open for the whole run.
    let mut idle = Vec::new();
    for i in (thread..plan.idle).step_by(threads) {
        let mut s = tokio::net::TcpStream::connect(plan.addr)
            .await
            .map_err(|e| anyhow::anyhow!("idle connection {i}: {e}"))?;
        s.write_all(PREAMBLE).await?;
        idle.push(s);
    }
    let mut tasks = Vec::new();
    for c in (thread..plan.connections).step_by(threads) {
        let conn = Rc::new(Conn {
            churn_every: (c < plan.churn).then_some(plan.churn_every),
            plan: plan.clone(),
            workload: workload.clone(),
            live: live.clone(),
            tally: tally.clone(),
            hist: hist.clone(),
            late: late.clone(),
            measure_from,
            stop_at,
        });
        let seed = 0x5EED ^ (c as u64).wrapping_mul(0x9E37_79B9);
        tasks.push(tokio::task::spawn_local(async move {
            if conn.plan.reconnect_each {
                reconnecting(conn, seed).await;
            } else {
                persistent(conn, seed).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(idle);
    let t = std::mem::take(&mut *tally.borrow_mut());
    let h = hist.borrow().clone();
    let l = late.borrow().clone();
    Ok((t, h, l))
}

/// One request in flight: what it must produce, and when it was written.
struct Pending {
    sent: Vec<Sent>,
    at: Instant,
}

impl Conn {
    /// A TCP answer (its lines before `LookupFinished`) to `p`.
    fn record(&self, p: &Pending, lines: &[&[u8]]) {
        self.answered(p, check(&p.sent, lines), || {
            let got: Vec<String> = lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).chars().take(120).collect())
                .collect();
            format!("{got:?}")
        });
    }

    /// `p` was answered, and the answer checked: count it (latency included, if it
    /// falls in the measured window), and the error if it was wrong, described as
    /// what was sent and `got()`.
    fn answered(&self, p: &Pending, verdict: Result<(), ErrorKind>, got: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut t = self.tally.borrow_mut();
        if let Err(kind) = verdict {
            self.live
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            t.error(kind, || {
                let sent: Vec<String> = p
                    .sent
                    .iter()
                    .map(|s| format!("{}{}", s.value, if s.hit { " (hit)" } else { "" }))
                    .collect();
                format!("sent [{}], got {}", sent.join(", "), got())
            });
        }
        if p.at >= self.measure_from && now <= self.stop_at + ANSWER_TIMEOUT {
            t.requests += 1;
            t.indicators += p.sent.len() as u64;
            let us = now.saturating_duration_since(p.at).as_micros().max(1) as u64;
            let _ = self.hist.borrow_mut().record(us.min(60_000_000));
        }
        self.live
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live
            .indicators
            .fetch_add(p.sent.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// `n` requests got no answer because their connection broke.
    fn lose(&self, n: usize, why: &str) {
        let mut t = self.tally.borrow_mut();
        t.lost += n as u64;
        t.broken += 1;
        if n > 0 && t.first_lost.len() < 5 {
            t.first_lost
                .push(format!("{n} requests outstanding: {why}"));
        }
    }

    fn fail(&self, kind: ErrorKind, n: usize, why: &str) {
        if n == 0 {
            return;
        }
        self.live
            .errors
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let mut t = self.tally.borrow_mut();
        *t.errors.entry(kind).or_default() += n as u64 - 1;
        t.error(kind, || format!("{n} requests outstanding: {why}"));
    }
}

/// A long-lived connection, as KUMA keeps one: preamble (TCP), then requests until
/// the run ends. When the connection breaks (or, with `--churn`, is due to be
/// replaced), a new one takes its place; requests that were outstanding on a broken
/// connection are counted as lost, apart from wrong answers.
async fn persistent(conn: Rc<Conn>, seed: u64) {
    let mut rng = tracer::generate::Rng::new(seed);
    let mut first = true;
    while Instant::now() < conn.stop_at {
        if !first {
            conn.tally.borrow_mut().reconnects += 1;
        }
        first = false;
        let (end, back) = match &conn.plan.protocol {
            Protocol::Tcp => match tokio::net::TcpStream::connect(conn.plan.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    session(&conn, stream, rng).await
                }
                Err(e) => (SessionEnd::Refused(e.to_string()), rng),
            },
            Protocol::Http(endpoint) => http_session(&conn, endpoint, rng).await,
        };
        rng = back;
        match end {
            SessionEnd::Done => return,
            SessionEnd::Replaced => {}
            SessionEnd::Refused(why) => {
                {
                    let mut t = conn.tally.borrow_mut();
                    t.connect_failures += 1;
                    if t.connect_failures == 1 {
                        t.first_lost.push(format!("connect: {why}"));
                    }
                }
                if !conn.plan.reconnect_on_error {
                    return;
                }
                // Like a pool refilling itself: try again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            SessionEnd::Broken { outstanding, why } => {
                if !conn.plan.reconnect_on_error {
                    conn.fail(ErrorKind::Dropped, outstanding, &why);
                    return;
                }
                conn.lose(outstanding, &why);
            }
            SessionEnd::TimedOut { outstanding } => {
                conn.fail(ErrorKind::Timeout, outstanding, "no answer within 10 s");
                if !conn.plan.reconnect_on_error {
                    return;
                }
            }
        }
    }
}

/// How one connection's life ended.
enum SessionEnd {
    /// The run is over.
    Done,
    /// `--churn`: closed by us between answers, to be replaced.
    Replaced,
    /// The connection could not be made (refused, or for `--http` a failed TLS or
    /// HTTP handshake); nothing was sent.
    Refused(String),
    /// Closed or failed under us; `outstanding` requests got no answer.
    Broken { outstanding: usize, why: String },
    /// No answer came for 10 s.
    TimedOut { outstanding: usize },
}

/// One connection: a writer task sends requests (gated by depth or paced by rate),
/// the reader here checks the answers. Returns how it ended, and the random source.
async fn session(
    conn: &Rc<Conn>,
    stream: tokio::net::TcpStream,
    rng: tracer::generate::Rng,
) -> (SessionEnd, tracer::generate::Rng) {
    let (mut rd, mut wr) = stream.into_split();
    let queue: Rc<RefCell<VecDeque<Pending>>> = Rc::default();
    let answered = Rc::new(Notify::new());
    let done = Rc::new(std::cell::Cell::new(false));
    let replace_at = conn.churn_every.map(|d| Instant::now() + d);

    let writer = {
        let (conn, queue, answered, done) =
            (conn.clone(), queue.clone(), answered.clone(), done.clone());
        tokio::task::spawn_local(async move {
            let mut rng = rng;
            let mut buf = Vec::with_capacity(4096);
            buf.extend_from_slice(PREAMBLE);
            let plan = &conn.plan;
            let per_conn_rate = if plan.rate > 0.0 {
                plan.rate / plan.connections as f64
            } else {
                0.0
            };
            let interval =
                (per_conn_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_conn_rate));
            // Spread connections' schedules over one interval.
            let seed_spread = rng.next_u64() % 1000;
            let mut next_due = Instant::now()
                + interval.map_or(Duration::ZERO, |i| i.mul_f64(seed_spread as f64 / 1000.0));
            // Append one request to the write buffer and queue what it must produce.
            let enqueue = |rng: &mut tracer::generate::Rng, buf: &mut Vec<u8>, at: Instant| {
                let sent =
                    conn.workload
                        .request(rng, plan.per_request, plan.hit_ratio, plan.bare, buf);
                queue.borrow_mut().push_back(Pending { sent, at });
            };
            let depth = if interval.is_some() {
                usize::MAX
            } else {
                plan.depth.max(1)
            };
            loop {
                let now = Instant::now();
                if now >= conn.stop_at || done.get() || replace_at.is_some_and(|t| now >= t) {
                    break;
                }
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next_due.into()).await;
                    if done.get() {
                        break;
                    }
                    // Send every request that is due by now (timers tick in ms).
                    let now = Instant::now();
                    while next_due <= now {
                        enqueue(&mut rng, &mut buf, now);
                        if next_due >= conn.measure_from {
                            let us =
                                now.saturating_duration_since(next_due).as_micros().max(1) as u64;
                            let _ = conn.late.borrow_mut().record(us.min(60_000_000));
                        }
                        next_due += iv;
                    }
                } else {
                    while queue.borrow().len() >= depth {
                        answered.notified().await;
                        if done.get() {
                            return rng;
                        }
                    }
                    let now = Instant::now();
                    while queue.borrow().len() < depth {
                        enqueue(&mut rng, &mut buf, now);
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
            }
            let _ = wr.shutdown().await;
            rng
        })
    };

    // Reader: split the stream into answers and check each.
    let mut answers = AnswerSplitter::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        let outstanding = queue.borrow().len();
        if outstanding == 0 && (Instant::now() >= conn.stop_at || writer.is_finished()) {
            break if Instant::now() >= conn.stop_at {
                SessionEnd::Done
            } else {
                SessionEnd::Replaced
            };
        }
        let read = tokio::time::timeout(ANSWER_TIMEOUT, rd.read(&mut chunk)).await;
        // The writer may have sent more while the read waited: count those too.
        let outstanding = queue.borrow().len();
        let n = match read {
            Err(_) => break SessionEnd::TimedOut { outstanding },
            Ok(Err(e)) => {
                break SessionEnd::Broken {
                    outstanding,
                    why: e.to_string(),
                }
            }
            Ok(Ok(0)) => {
                let why = if answers.partial() > 0 {
                    "the server closed the connection in the middle of an answer"
                } else {
                    "the server closed the connection"
                };
                break SessionEnd::Broken {
                    outstanding,
                    why: why.to_string(),
                };
            }
            Ok(Ok(n)) => n,
        };
        answers.push(&chunk[..n]);
        answers.drain(|answer| {
            let p = queue.borrow_mut().pop_front();
            match (p, answer) {
                (Some(p), Answer::Lookup(lines)) => conn.record(&p, &lines),
                (None, _) => {
                    let mut t = conn.tally.borrow_mut();
                    t.error(ErrorKind::Malformed, || "an answer to no request".into());
                }
                (Some(_), Answer::Pong) => {
                    let mut t = conn.tally.borrow_mut();
                    t.error(ErrorKind::Malformed, || "PONG to a lookup".into());
                }
            }
            answered.notify_one();
        });
    };
    done.set(true);
    answered.notify_one();
    let rng = match writer.await {
        Ok(rng) => rng,
        Err(_) => tracer::generate::Rng::new(0),
    };
    (end, rng)
}

/// One `--http` connection: connect, then requests one at a time until the run ends,
/// the connection is due to be replaced (`--churn`), or it breaks. Returns how it
/// ended, and the random source.
async fn http_session(
    conn: &Rc<Conn>,
    endpoint: &Endpoint,
    mut rng: tracer::generate::Rng,
) -> (SessionEnd, tracer::generate::Rng) {
    let mut http = match tokio::time::timeout(ANSWER_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(why)) => return (SessionEnd::Refused(why), rng),
        Err(_) => {
            let why = format!("not connected within {} s", ANSWER_TIMEOUT.as_secs());
            return (SessionEnd::Refused(why), rng);
        }
    };
    let plan = &conn.plan;
    let replace_at = conn.churn_every.map(|d| Instant::now() + d);
    // Open loop: a per-connection schedule, spread over one interval. HTTP/1.1 has no
    // pipelining, so a request that comes due while an answer is outstanding goes
    // when it arrives, and how late it went is recorded.
    let interval =
        (plan.rate > 0.0).then(|| Duration::from_secs_f64(plan.connections as f64 / plan.rate));
    let spread = rng.next_u64() % 1000;
    let mut next_due =
        Instant::now() + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(spread as f64 / 1000.0));
    let end = loop {
        if interval.is_some() {
            tokio::time::sleep_until(next_due.min(conn.stop_at).into()).await;
        }
        let now = Instant::now();
        if now >= conn.stop_at {
            break SessionEnd::Done;
        }
        if replace_at.is_some_and(|t| now >= t) {
            break SessionEnd::Replaced;
        }
        if let Some(iv) = interval {
            if next_due >= conn.measure_from {
                let us = now.saturating_duration_since(next_due).as_micros().max(1) as u64;
                let _ = conn.late.borrow_mut().record(us.min(60_000_000));
            }
            next_due += iv;
        }
        if let Err(why) = http.ready().await {
            break SessionEnd::Broken {
                outstanding: 0,
                why,
            };
        }
        let sent = conn
            .workload
            .objects(&mut rng, plan.per_request, plan.hit_ratio);
        let p = Pending {
            sent,
            at: Instant::now(),
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, http.lookup(endpoint, &p.sent)).await {
            Err(_) => break SessionEnd::TimedOut { outstanding: 1 },
            Ok(Err(why)) => {
                break SessionEnd::Broken {
                    outstanding: 1,
                    why,
                }
            }
            Ok(Ok((status, body))) => {
                conn.answered(&p, check_http(&p.sent, status, &body), || {
                    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                    format!("{status} {text:?}")
                });
            }
        }
    };
    (end, rng)
}

/// The old client behaviour: a new connection per request.
async fn reconnecting(conn: Rc<Conn>, seed: u64) {
    let mut rng = tracer::generate::Rng::new(seed);
    let mut buf = Vec::new();
    while Instant::now() < conn.stop_at {
        buf.clear();
        buf.extend_from_slice(PREAMBLE);
        let at = Instant::now();
        let sent = conn.workload.request(
            &mut rng,
            conn.plan.per_request,
            conn.plan.hit_ratio,
            conn.plan.bare,
            &mut buf,
        );
        let pending = Pending { sent, at };
        let result = async {
            let mut s = tokio::net::TcpStream::connect(conn.plan.addr).await?;
            s.set_nodelay(true)?;
            s.write_all(&buf).await?;
            s.shutdown().await?;
            let mut got = Vec::new();
            tokio::time::timeout(ANSWER_TIMEOUT, s.read_to_end(&mut got))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
            Ok::<_, std::io::Error>(got)
        }
        .await;
        match result {
            Ok(got) if got.ends_with(FINISHED) => {
                let mut answers = AnswerSplitter::default();
                answers.push(&got);
                answers.drain(|answer| match answer {
                    Answer::Lookup(lines) => conn.record(&pending, &lines),
                    Answer::Pong => conn.fail(ErrorKind::Malformed, 1, "PONG to a lookup"),
                });
            }
            Ok(_) => conn.fail(ErrorKind::Malformed, 1, "answer without LookupFinished"),
            Err(e) => conn.fail(ErrorKind::Dropped, 1, &e.to_string()),
        }
    }
}
