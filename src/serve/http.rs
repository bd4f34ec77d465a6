//! The HTTP API listener (KUMA source kind `cybertrace-http`, SPEC §12): hyper's
//! HTTP/1.1 server, over TLS (rustls) or plain TCP, on the same worker threads and
//! runtimes as the line protocol, answering from the same engine.
//!
//! Each worker thread has its own `SO_REUSEPORT` listener on the HTTP address, and
//! serves its connections as tasks beside the line protocol's, so an enricher's wait
//! holds up neither. What a request goes through, in order:
//!
//! | check | answer |
//! | --- | --- |
//! | path: `/api/<1.0–1.3>/lookup`, `/api/1.3/<tenant>/lookup`, `/health` | `404` |
//! | credentials (HTTP Basic), when users are configured | `401` + `WWW-Authenticate` |
//! | method `POST` | `405` + `Allow` |
//! | `Accept` admits JSON | `406` |
//! | the index is loaded | `425` |
//! | fewer than `max_inflight` lookups under way | `429` + `Retry-After` |
//! | the body fits in what is left of the bodies' budget | `429` + `Retry-After` |
//! | body within `max_body` (announced or sent) and within `request_timeout` | `413`, `408` |
//! | body is a JSON array of `{"object": "…"}` | `400` |
//!
//! Every error has a JSON body `{"error": "…"}`; bad input never gets a `500`.
//!
//! **Answers are streamed.** The answer is rendered [`CHUNK`] objects at a time, each
//! chunk once its enrichers have answered, and written as hyper asks for it: a
//! request of a million objects never has its whole answer in memory, and a client
//! that reads slowly slows only itself. An answer that fits in one chunk goes out
//! whole, with a `Content-Length`.
//!
//! **Connections** are kept alive. One that sends no complete request head within
//! `idle_timeout` (since it opened or since its last answer) is closed: idle clients
//! and slow-header clients alike; so is one that takes none of its answer for
//! `idle_timeout` (a client that stopped reading would otherwise hold its lookup's
//! `max_inflight` place, and the index it answers from, for ever). Heads are bounded
//! by hyper (`MAX_HEAD` bytes, 100 headers). On shutdown each connection finishes the
//! request under way and closes.
//!
//! **Memory.** Besides `max_body` per request, the bodies of all lookups under way
//! (received, then held as their objects until answered) share [`body_budget`]
//! bytes: a request that would go beyond is answered `429` with `Retry-After`, so
//! `max_inflight` clients sending `max_body` each cannot exhaust the machine.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::{Users, Verdict};
use super::config::HttpSettings;
use super::connection::Shutdown;
use super::stats::ErrorReason;
use super::worker::{ThreadSnapshot, Worker};
use crate::engine::{EnrichHit, Enrichment};
use crate::enrich::Hits;
use crate::index::Scratch;
use crate::protocol::cybertrace_http::{self as api, Route};

/// Objects rendered per piece of a streamed answer.
pub const CHUNK: usize = 512;
/// Largest request head (request line and headers), bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// What the HTTP listener shares across threads: its settings, and what a `SIGHUP`
/// may replace (the users, the certificate).
pub struct HttpShared {
    pub settings: HttpSettings,
    live: Mutex<Arc<Live>>,
    /// Lookup requests under way, over all threads.
    inflight: AtomicUsize,
    /// Body bytes the lookups under way hold, over all threads ([`body_budget`]).
    body_bytes: AtomicUsize,
    /// Failed logins since start, over every set of users.
    failures: Arc<std::sync::atomic::AtomicU64>,
}

/// The parts a reload replaces.
struct Live {
    users: Users,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP API certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("HTTP API: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP API: {0}")]
    Unsafe(String),
}

impl HttpShared {
    pub fn new(settings: HttpSettings) -> Result<HttpShared, HttpError> {
        let failures = Arc::default();
        let live = Live::load(&settings, &failures)?;
        Ok(HttpShared {
            settings,
            live: Mutex::new(Arc::new(live)),
            inflight: AtomicUsize::new(0),
            body_bytes: AtomicUsize::new(0),
            failures,
        })
    }

    /// Re-read the users and the certificate (`SIGHUP`) from `settings`, a re-read
    /// configuration. The listener itself stays as it was started (its address, TLS or
    /// not, `allow_anonymous`: they change at the next restart), so the new users are
    /// checked against it: no users on a listener beyond loopback is refused unless it
    /// was started with `allow_anonymous`. On error the old users and certificate stay.
    pub fn reload(&self, settings: &HttpSettings) -> Result<(), HttpError> {
        let running = &self.settings;
        if settings.users.is_empty()
            && !running.allow_anonymous
            && !running.listen.ip().is_loopback()
        {
            return Err(HttpError::Unsafe(format!(
                "the re-read configuration has no [[http.user]], and the listener on {} (beyond this machine) was not started with allow_anonymous",
                running.listen
            )));
        }
        // TLS or plain stays as started; a certificate is re-read only for TLS.
        let files = match (&running.tls, &settings.tls) {
            (Some(_), Some(new)) => Some(new.clone()),
            (Some(old), None) => Some(old.clone()),
            (None, _) => None,
        };
        let live = Live::load(
            &HttpSettings {
                tls: files,
                users: settings.users.clone(),
                ..running.clone()
            },
            &self.failures,
        )?;
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        tracing::info!(
            users = settings.users.len(),
            "HTTP API: users and certificate re-read"
        );
        Ok(())
    }

    fn live(&self) -> Arc<Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Logins refused since start.
    pub fn login_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Live {
    fn load(
        settings: &HttpSettings,
        failures: &Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Live, HttpError> {
        let tls = match &settings.tls {
            Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
            None => None,
        };
        Ok(Live {
            users: Users::new(&settings.users, failures.clone())?,
            tls,
        })
    }
}

/// A TLS 1.2/1.3 acceptor for a PEM certificate chain and key.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, reason: String| HttpError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(
                cert,
                format!("the key does not go with the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accept HTTP connections on one worker's listener until shutdown; then let those
/// open finish the request under way.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    worker: Rc<Worker>,
    mut shutdown: Shutdown,
) {
    let Some(http) = worker.shared.http.clone() else {
        return;
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot register the HTTP listener: {e}");
            return;
        }
    };
    if shutdown.borrow().is_none() {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        if super::accept::admission(&worker, peer) {
                            let _ = stream.set_nodelay(true);
                            let (w, h, rx) = (worker.clone(), http.clone(), shutdown.clone());
                            tokio::task::spawn_local(async move {
                                // Counted with the line protocol's connections: the
                                // thread's drain waits for these too.
                                let _slot = super::accept::Slot::take(&w);
                                let served = AssertUnwindSafe(serve_connection(stream, peer, w.clone(), h, rx))
                                    .catch_unwind()
                                    .await;
                                if served.is_err() {
                                    // The panic hook logged the panic itself.
                                    let n = w.stats.error(ErrorReason::Panic);
                                    tracing::error!(%peer, panics = n, "a panic while answering this HTTP connection; it was closed, the server goes on");
                                }
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
    }
    drop(listener);
    worker.shared.listeners.fetch_sub(1, Ordering::AcqRel);
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    worker: Rc<Worker>,
    http: Arc<HttpShared>,
    shutdown: Shutdown,
) {
    let settings = &http.settings;
    // The acceptor only: the users are looked up per request, so a reload's reach
    // every connection, and the replaced ones are freed.
    let tls = http.live().tls.clone();
    match &tls {
        Some(acceptor) => {
            match tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, peer, worker, http.clone(), shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        None => serve_http(stream, peer, worker, http.clone(), shutdown).await,
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    worker: Rc<Worker>,
    http: Arc<HttpShared>,
    mut shutdown: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let idle = http.settings.idle_timeout;
    let service = {
        let http = http.clone();
        hyper::service::service_fn(move |req| {
            let (worker, http) = (worker.clone(), http.clone());
            async move { Ok::<_, Infallible>(handle(req, peer, &worker, &http).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD.max(8192))
        .max_headers(100)
        .serve_connection(
            hyper_util::rt::TokioIo::new(WriteStall::new(io, idle)),
            service,
        );
    let mut conn = std::pin::pin!(conn);
    let already = shutdown.borrow().is_some();
    if already {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
            return;
        }
        _ = shutdown.changed(), if !already => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

type Answer = Response<Body>;

fn json(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Answer {
    json(status, api::error_body(message))
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    worker: &Rc<Worker>,
    http: &Arc<HttpShared>,
) -> Answer {
    let answer = route(req, peer, worker, http).await;
    worker.stats.http_status(answer.status().as_u16());
    answer
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    worker: &Rc<Worker>,
    http: &Arc<HttpShared>,
) -> Answer {
    let settings = &http.settings;
    let lookup =
        match api::route(req.uri().path()) {
            Route::NotFound => return error(
                StatusCode::NOT_FOUND,
                "no such path: the API is POST /api/<1.0–1.3>/lookup (or /api/1.3/<tenant>/lookup)",
            ),
            Route::Health => return health(&req, worker),
            Route::Lookup { version, tenant } => (version.to_string(), tenant.map(str::to_string)),
        };
    let live = http.live();
    match live
        .users
        .check(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            peer,
        )
        .await
    {
        Verdict::Allowed => {}
        Verdict::Denied => {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tracer\", charset=\"UTF-8\""),
            );
            return r;
        }
        Verdict::Busy => return retry_later("too many logins being checked"),
    }
    if req.method() != Method::POST {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "lookups are POST requests");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !accepts_json(req.headers().get_all(header::ACCEPT).iter()) {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "the answer is JSON (application/json), which Accept excludes",
        );
    }
    if !worker.shared.engine.is_ready() {
        let mut r = error(StatusCode::TOO_EARLY, "the index is still loading");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let Some(mut inflight) = Inflight::take(http) else {
        return retry_later("too many lookups under way (max_inflight)");
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the body is larger than {} bytes (max_body)",
                settings.max_body
            ),
        )
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > settings.max_body as u64) {
        return too_large();
    }
    // What is announced is reserved at once, so a request that cannot fit is told
    // before it is read.
    if !inflight.reserve(announced.unwrap_or(0) as usize) {
        return retry_later(OVER_BUDGET);
    }
    let body = match tokio::time::timeout(
        settings.request_timeout,
        read_body(req.into_body(), settings.max_body, &mut inflight),
    )
    .await
    {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive within request_timeout",
            )
        }
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::OverBudget)) => return retry_later(OVER_BUDGET),
        Ok(Err(BodyError::Read(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read: {e}"),
            )
        }
        Ok(Ok(b)) => b,
    };
    let objects = match api::parse_objects(&body) {
        Ok(o) => o,
        Err(api::BadRequest(message)) => return error(StatusCode::BAD_REQUEST, &message),
    };
    #[cfg(feature = "fault-injection")]
    if objects.iter().any(|o| o == "tracer-fault:panic") {
        panic!("fault injection: a panic while answering an HTTP request");
    }
    if worker.shared.config.log_requests {
        tracing::debug!(%peer, version = lookup.0, tenant = ?lookup.1, objects = objects.len(), "HTTP lookup");
    }
    let objects: Vec<Box<str>> = objects.into_iter().map(|o| o.into()).collect();
    answer(objects, worker.clone(), inflight).await
}

/// A connection's byte stream, failing a write that cannot make progress for
/// `limit`: the peer stopped reading.
struct WriteStall<I> {
    io: I,
    limit: Duration,
    /// When the write waiting now gives up; `None` while writes go through.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteStall<I> {
    fn new(io: I, limit: Duration) -> WriteStall<I> {
        WriteStall {
            io,
            limit,
            deadline: None,
        }
    }

    /// `r`, a write's result: progress disarms the deadline; waiting arms it, and
    /// past it the write fails.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.deadline = None;
            return r;
        }
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took none of its answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteStall<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteStall<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

fn retry_later(message: &str) -> Answer {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn health(req: &Request<Incoming>, worker: &Worker) -> Answer {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "health is a GET request");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let engine = &worker.shared.engine;
    if !engine.is_ready() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"status\":\"loading\"}".to_vec(),
        );
    }
    let snap = engine.current();
    json(
        StatusCode::OK,
        format!(
            "{{\"status\":\"ok\",\"generation\":{},\"records\":{}}}",
            snap.generation(),
            snap.record_count()
        )
        .into_bytes(),
    )
}

/// Whether `Accept` admits `application/json` (no header admits anything).
/// Whether `Accept` admits `application/json`: no header does; otherwise the most
/// specific range that matches it (`application/json`, then `application/*`, then
/// `*/*`) decides, and admits it unless its `q` is 0 (RFC 9110 §12.5.1).
fn accepts_json<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut any = false;
    // (specificity, admitted) of the most specific matching range so far.
    let mut best: Option<(u8, bool)> = None;
    for v in values {
        any = true;
        let Ok(v) = v.to_str() else { continue };
        for range in v.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let specificity = if media.eq_ignore_ascii_case("application/json") {
                3
            } else if media.eq_ignore_ascii_case("application/*") {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(name, q)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            match best {
                // Of equally specific ranges, one that admits it wins.
                Some((b, admitted)) if b > specificity || (b == specificity && admitted) => {}
                _ => best = Some((specificity, !refused)),
            }
        }
    }
    match best {
        Some((_, admitted)) => admitted,
        None => !any,
    }
}

const OVER_BUDGET: &str = "too many request bodies held at once (4 × max_body in all)";

/// All lookups' bodies at once, at most: four of the largest allowed.
pub fn body_budget(settings: &HttpSettings) -> usize {
    settings.max_body.saturating_mul(4)
}

/// One lookup request counted in `inflight` while it lives (until its answer is
/// written, for a streamed one), with the body bytes it holds.
struct Inflight {
    http: Arc<HttpShared>,
    bytes: usize,
}

impl Inflight {
    fn take(http: &Arc<HttpShared>) -> Option<Inflight> {
        if http.inflight.fetch_add(1, Ordering::AcqRel) >= http.settings.max_inflight {
            http.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Inflight {
            http: http.clone(),
            bytes: 0,
        })
    }

    /// Hold at least `total` body bytes in all (what is held already counts); false
    /// when the bodies' budget has no room for them.
    fn reserve(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        let budget = body_budget(&self.http.settings);
        let held = self.http.body_bytes.fetch_add(more, Ordering::AcqRel);
        if held.saturating_add(more) > budget {
            self.http.body_bytes.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        self.bytes = total;
        true
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.http.inflight.fetch_sub(1, Ordering::AcqRel);
        self.http.body_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

enum BodyError {
    TooLarge,
    OverBudget,
    Read(hyper::Error),
}

/// A request body, whole: at most `max`, each frame's bytes reserved first.
async fn read_body(
    mut body: Incoming,
    max: usize,
    inflight: &mut Inflight,
) -> Result<Vec<u8>, BodyError> {
    let mut all = Vec::with_capacity(inflight.bytes.min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = all.len() + data.len();
        if total > max {
            return Err(BodyError::TooLarge);
        }
        if !inflight.reserve(total) {
            return Err(BodyError::OverBudget);
        }
        all.extend_from_slice(&data);
    }
    Ok(all)
}

/// An answer being rendered: the objects, how far it got, the snapshot it answers
/// from (all of it from one), and the counters.
struct Answering {
    objects: Vec<Box<str>>,
    next: usize,
    snapshot: Rc<ThreadSnapshot>,
    worker: Rc<Worker>,
    writer: api::Writer,
    scratch: Scratch,
    _inflight: Inflight,
}

impl Answering {
    /// The next piece of the answer (the opening `[` with the first, `]` with the
    /// last), after its enrichers have answered; `None` when all is written.
    async fn piece(mut self) -> (Self, Option<Bytes>) {
        if self.next > self.objects.len() {
            return (self, None);
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if self.next == 0 {
            self.writer.begin(&mut out);
        }
        let end = (self.next + CHUNK).min(self.objects.len());
        let snap = self.snapshot.clone();
        let max_hits = self.worker.shared.config.max_hits;
        let mut looked = Vec::with_capacity(end - self.next);
        for object in &self.objects[self.next..end] {
            looked.push(api::look_up(
                &snap.snapshot,
                object,
                &mut self.scratch,
                max_hits,
            ));
        }
        // The enrichers' answers of this piece, waited for together.
        let mut waits = Vec::new();
        let mut enriched: Vec<Vec<Hits>> = Vec::with_capacity(looked.len());
        for (i, p) in looked.iter_mut().enumerate() {
            let mut ready = Vec::new();
            for e in std::mem::take(&mut p.enrichment) {
                match e {
                    Enrichment::None => {}
                    Enrichment::Ready(h) => ready.extend(h),
                    Enrichment::Pending(f) => waits.push((i, f)),
                }
            }
            enriched.push(ready);
        }
        if !waits.is_empty() {
            let (slots, futures): (Vec<usize>, Vec<_>) = waits.into_iter().unzip();
            for (i, hits) in slots
                .into_iter()
                .zip(futures_util::future::join_all(futures).await)
            {
                enriched[i].extend(hits);
            }
        }
        let stats = &self.worker.stats;
        let mut by_kind = [0u64; 5];
        let mut hits = 0u64;
        for (k, (object, p)) in self.objects[self.next..end].iter().zip(&looked).enumerate() {
            let lists: Vec<&[EnrichHit]> = enriched[k].iter().map(|h| &h[..]).collect();
            self.writer
                .object(&mut out, &snap.snapshot, object, &p.feed, &lists, max_hits);
            by_kind[p.kind.index()] += 1;
            for &h in &p.feed {
                snap.categories.hit(snap.snapshot.hit(h).slot);
            }
            hits +=
                (p.feed.len() + lists.iter().map(|l| l.len()).sum::<usize>()).min(max_hits) as u64;
        }
        stats.http_objects(&by_kind, hits);
        self.next = end;
        if self.next == self.objects.len() {
            self.writer.end(&mut out);
            self.next += 1;
        }
        (self, Some(Bytes::from(out)))
    }
}

async fn answer(objects: Vec<Box<str>>, worker: Rc<Worker>, inflight: Inflight) -> Answer {
    let snapshot = worker.snapshot();
    let answering = Answering {
        objects,
        next: 0,
        snapshot,
        worker,
        writer: api::Writer::default(),
        scratch: Scratch::default(),
        _inflight: inflight,
    };
    let (answering, first) = answering.piece().await;
    let first = first.unwrap_or_default();
    if answering.next > answering.objects.len() {
        return json(StatusCode::OK, first.to_vec());
    }
    let mut r = Response::new(Body::Stream {
        first: Some(first),
        pending: None,
        state: Some(Box::new(answering)),
    });
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

type Piece = Pin<Box<dyn Future<Output = (Answering, Option<Bytes>)>>>;

/// A response body: whole, or an answer rendered piece by piece as it is written.
enum Body {
    Full(Option<Bytes>),
    Stream {
        first: Option<Bytes>,
        pending: Option<Piece>,
        state: Option<Box<Answering>>,
    },
}

impl Body {
    fn full(bytes: Vec<u8>) -> Body {
        Body::Full(Some(Bytes::from(bytes)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream {
                first,
                pending,
                state,
            } => {
                if let Some(b) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                loop {
                    if let Some(p) = pending.as_mut() {
                        return match p.as_mut().poll(cx) {
                            Poll::Pending => Poll::Pending,
                            Poll::Ready((s, piece)) => {
                                *pending = None;
                                *state = Some(Box::new(s));
                                Poll::Ready(piece.map(|b| Ok(Frame::data(b))))
                            }
                        };
                    }
                    match state.take() {
                        Some(s) => *pending = Some(Box::pin((*s).piece())),
                        None => return Poll::Ready(None),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Stream {
                first,
                pending,
                state,
            } => {
                first.is_none()
                    && pending.is_none()
                    && state.as_ref().is_none_or(|s| s.next > s.objects.len())
            }
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Stream { .. } => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Credential, HttpUser, TlsFiles};
    use super::*;

    fn accepts(values: &[&'static str]) -> bool {
        let v: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
        accepts_json(v.iter())
    }

    #[test]
    fn the_most_specific_accept_range_decides() {
        assert!(accepts(&[]));
        assert!(accepts(&["application/json"]));
        assert!(accepts(&["text/html, */*;q=0.1"]));
        assert!(accepts(&["Application/JSON; charset=utf-8"]));
        assert!(accepts(&["text/html", "application/*"]));
        assert!(accepts(&["*/*;q=0, application/json"]));
        assert!(!accepts(&["text/html"]));
        assert!(!accepts(&["application/json;q=0, */*"]));
        assert!(!accepts(&["application/json;q=0, application/*"]));
        assert!(!accepts(&["application/json; Q=0"]));
        assert!(!accepts(&["*/*;q=0.0"]));
    }

    fn user(name: &str) -> HttpUser {
        HttpUser {
            name: name.into(),
            credential: Credential::Password("pw".into()),
        }
    }

    #[test]
    fn a_reload_keeps_the_listener_as_it_was_started() {
        // Started beyond loopback with a user; the re-read file moves the listener
        // to loopback and drops the users: that would serve anyone on the running
        // listener, which still listens where it started.
        let mut started = HttpSettings::new("0.0.0.0:9443".parse().expect("addr"));
        started.users = vec![user("a")];
        let http = HttpShared::new(started.clone()).expect("start");
        let mut reread = HttpSettings::new("127.0.0.1:9443".parse().expect("addr"));
        reread.allow_anonymous = true;
        let e = http.reload(&reread).expect_err("no users beyond loopback");
        assert!(e.to_string().contains("allow_anonymous"), "{e}");
        assert!(http.live().users.required());
        // Users may change; TLS stays off on a plain listener whatever the file says.
        reread.users = vec![user("b")];
        reread.tls = Some(TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        });
        http.reload(&reread).expect("users re-read");
        assert!(http.live().tls.is_none());
        // Started with allow_anonymous, beyond loopback: no users is what it was.
        started.users.clear();
        started.allow_anonymous = true;
        let open = HttpShared::new(started).expect("start");
        open.reload(&HttpSettings::new("0.0.0.0:9443".parse().expect("addr")))
            .expect("anonymous as started");
        assert!(!open.live().users.required());
    }
}
