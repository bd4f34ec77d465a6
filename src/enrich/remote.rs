//! What every remote enricher shares: a bounded cache with time to live (shorter for
//! "nothing found"), one upstream call for concurrent lookups of one value, a limit
//! on calls in flight, a timeout, a circuit breaker, counters, and failure logging
//! that cannot flood the log.
//!
//! A lookup first reads the cache (no waiting, no lock but the cache shard's). On a
//! miss it joins the call already in flight for that value, or starts one as a task
//! of its own on this thread's runtime, and waits for it until the timeout. The call
//! goes on after its waiters give up, so a late answer still fills the cache. A call
//! that fails answers its waiters at once, with no hits.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{none, Answer, Common, EnrichHit, Hits};
use crate::indicator::Kind;

/// Why an upstream call failed, as `tracer_enricher_errors_total{reason}` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// No answer within the timeout.
    Timeout,
    /// An HTTP status other than 2xx.
    Status,
    /// An answer that is not what the protocol says (bad JSON, wrong shape).
    BadAnswer,
    /// A helper process is down, crashed or wrote garbage.
    Helper,
    /// No free slot (`concurrency`) within the timeout.
    Busy,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Status,
        Failure::BadAnswer,
        Failure::Helper,
        Failure::Busy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Status => "status",
            Failure::BadAnswer => "bad_answer",
            Failure::Helper => "helper",
            Failure::Busy => "busy",
        }
    }
}

/// A failed call and what to log about it.
#[derive(Debug)]
pub struct Error {
    pub failure: Failure,
    pub detail: String,
}

impl Error {
    pub fn new(failure: Failure, detail: impl std::fmt::Display) -> Error {
        Error {
            failure,
            detail: detail.to_string(),
        }
    }
}

/// The other system: ask it about one value.
pub trait Upstream: Send + Sync + 'static {
    /// Runs as a task on the calling thread's runtime, under the caller's timeout.
    fn call(
        &self,
        kind: Kind,
        value: &[u8],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<EnrichHit>, Error>>>>;
}

/// Upper bounds (ms) of the upstream latency histogram.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500];

/// One enricher's counters.
#[derive(Default, Debug)]
pub struct Stats {
    /// Upstream calls made.
    pub calls: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Indicators answered without this enricher's hits because its answer was late.
    pub timeouts: AtomicU64,
    /// Lookups not made because the breaker was open.
    pub skipped: AtomicU64,
    /// Failed calls, by `Failure as usize`.
    pub errors: [AtomicU64; Failure::ALL.len()],
    /// Upstream latency: counts per bucket (last = over the largest bound), sum (µs).
    pub latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    pub latency_sum_us: AtomicU64,
}

impl Stats {
    fn latency(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let b = LATENCY_BUCKETS_MS
            .iter()
            .position(|&le| ms < le)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One call is testing the upstream after the cooldown.
    Probing,
}

/// Stops calling an upstream that keeps failing, for a while.
struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    consecutive: AtomicU32,
    state: Mutex<BreakerState>,
}

impl Breaker {
    fn new(failures_to_open: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            consecutive: AtomicU32::new(0),
            state: Mutex::new(BreakerState::Closed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call be made now? After the cooldown, one call is let through to probe.
    fn admit(&self) -> bool {
        let mut s = self.lock();
        match *s {
            BreakerState::Closed => true,
            BreakerState::Open { until } if Instant::now() >= until => {
                *s = BreakerState::Probing;
                true
            }
            BreakerState::Open { .. } | BreakerState::Probing => false,
        }
    }

    /// A call succeeded. Returns whether this closed an open breaker.
    fn success(&self) -> bool {
        self.consecutive.store(0, Ordering::Relaxed);
        let mut s = self.lock();
        let was = *s;
        *s = BreakerState::Closed;
        was != BreakerState::Closed
    }

    /// A call failed. Returns whether this opened the breaker.
    fn failure(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.lock();
        let open = *s == BreakerState::Probing || n >= self.failures_to_open;
        if open {
            let opening = !matches!(*s, BreakerState::Open { .. });
            *s = BreakerState::Open {
                until: Instant::now() + self.cooldown,
            };
            return opening;
        }
        false
    }

    /// A probe that never reached the upstream: let the next lookup probe again.
    fn abandon_probe(&self) {
        let mut s = self.lock();
        if *s == BreakerState::Probing {
            *s = BreakerState::Open {
                until: Instant::now(),
            };
        }
    }

    fn state(&self) -> u8 {
        match *self.lock() {
            BreakerState::Closed => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::Probing => 2,
        }
    }
}

type Key = (Kind, Box<[u8]>);

/// A key borrowed from the request, to read the cache without allocating.
#[derive(Hash)]
struct KeyRef<'a>(Kind, &'a [u8]);

impl equivalent::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == &*key.1
    }
}

#[derive(Clone)]
struct Cached {
    hits: Hits,
    expires: Instant,
}

/// Failures logged at most once per this long per enricher (with the count since).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Calls started and not finished (waiting for one of `concurrency` slots, or
/// under way), at most this many per slot: beyond, a lookup that would start one more
/// is answered at once without this enricher's hits (counted as `busy`). One line of
/// thousands of indicators, or a flood of new values, cannot queue tasks without
/// bound; they would time out waiting anyway.
const QUEUED_PER_SLOT: usize = 64;

/// Hits kept per cached answer at most (the answer shows at most `--max-hits` of them
/// anyway): bounds what one upstream answer can make the cache hold.
const MAX_CACHED_HITS: usize = 1024;

struct Shared<U> {
    name: String,
    common: Common,
    upstream: U,
    cache: quick_cache::sync::Cache<Key, Cached>,
    inflight: Mutex<HashMap<Key, tokio::sync::watch::Receiver<Option<Hits>>>>,
    permits: Arc<tokio::sync::Semaphore>,
    breaker: Breaker,
    stats: Stats,
    /// When a failure was last logged, and how many went unlogged since.
    logged: Mutex<(Option<Instant>, u64)>,
}

/// A remote enricher's shared machinery around its [`Upstream`].
pub struct Remote<U> {
    shared: Arc<Shared<U>>,
}

impl<U: Upstream> Remote<U> {
    pub fn new(name: &str, common: &Common, upstream: U) -> Remote<U> {
        Remote {
            shared: Arc::new(Shared {
                name: name.to_string(),
                common: common.clone(),
                upstream,
                cache: quick_cache::sync::Cache::new(common.cache_size.max(1)),
                inflight: Mutex::new(HashMap::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(common.concurrency.max(1))),
                breaker: Breaker::new(common.breaker_failures, common.breaker_cooldown),
                stats: Stats::default(),
                logged: Mutex::new((None, 0)),
            }),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn breaker(&self) -> u8 {
        self.shared.breaker.state()
    }

    /// Look `value` up: from the cache, or by (joining) a call upstream.
    pub fn lookup(&self, kind: Kind, value: &[u8]) -> Answer {
        let s = &self.shared;
        let now = Instant::now();
        if let Some(c) = s.cache.get(&KeyRef(kind, value)) {
            if c.expires > now {
                s.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Answer::Ready(c.hits);
            }
        }
        s.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let key: Key = (kind, value.into());
        let rx = {
            let mut inflight = s.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    if inflight.len() >= s.common.concurrency.max(1) * QUEUED_PER_SLOT {
                        s.stats.errors[Failure::Busy as usize].fetch_add(1, Ordering::Relaxed);
                        return Answer::Ready(none());
                    }
                    if !s.breaker.admit() {
                        s.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        return Answer::Ready(none());
                    }
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    inflight.insert(key.clone(), rx.clone());
                    tokio::task::spawn_local(call(self.shared.clone(), key, tx));
                    rx
                }
            }
        };
        let deadline = now + s.common.timeout;
        let shared = self.shared.clone();
        Answer::Pending(Box::pin(async move {
            let mut rx = rx;
            let wait = async {
                loop {
                    if let Some(h) = rx.borrow_and_update().clone() {
                        return h;
                    }
                    if rx.changed().await.is_err() {
                        return none();
                    }
                }
            };
            match tokio::time::timeout_at(deadline.into(), wait).await {
                Ok(h) => h,
                Err(_) => {
                    shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    none()
                }
            }
        }))
    }
}

/// A call's place in the in-flight table, left however the call ends: answered, or
/// cancelled or panicking (then its waiters see the channel close, and a probe it
/// was lets the next lookup probe again), so no value is left joining a dead call.
struct Place<U: Upstream> {
    s: Arc<Shared<U>>,
    key: Key,
    answered: bool,
}

impl<U: Upstream> Drop for Place<U> {
    fn drop(&mut self) {
        self.s
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if !self.answered {
            self.s.breaker.abandon_probe();
        }
    }
}

/// One upstream call: answers its waiters, fills the cache, leaves the in-flight table.
async fn call<U: Upstream>(
    s: Arc<Shared<U>>,
    key: Key,
    tx: tokio::sync::watch::Sender<Option<Hits>>,
) {
    let mut place = Place {
        s: s.clone(),
        key,
        answered: false,
    };
    let key = &place.key;
    let deadline = Instant::now() + s.common.timeout;
    let result = async {
        let _permit = tokio::time::timeout_at(deadline.into(), s.permits.clone().acquire_owned())
            .await
            .map_err(|_| Error::new(Failure::Busy, "no free slot within the timeout"))?
            .map_err(|_| Error::new(Failure::Busy, "closed"))?;
        s.stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = tokio::time::timeout_at(deadline.into(), s.upstream.call(key.0, &key.1)).await;
        s.stats.latency(started.elapsed());
        r.map_err(|_| {
            Error::new(
                Failure::Timeout,
                format!("no answer within {:?}", s.common.timeout),
            )
        })?
    }
    .await;
    let hits = match result {
        Ok(mut hits) => {
            if s.breaker.success() {
                tracing::info!(enricher = %s.name, "upstream answers again: breaker closed");
            }
            hits.truncate(MAX_CACHED_HITS);
            let hits: Hits = hits.into();
            let ttl = if hits.is_empty() {
                s.common.negative_ttl
            } else {
                s.common.ttl
            };
            s.cache.insert(
                key.clone(),
                Cached {
                    hits: hits.clone(),
                    expires: Instant::now() + ttl,
                },
            );
            hits
        }
        Err(e) => {
            s.stats.errors[e.failure as usize].fetch_add(1, Ordering::Relaxed);
            if e.failure == Failure::Busy {
                s.breaker.abandon_probe();
            } else if s.breaker.failure() {
                tracing::warn!(
                    enricher = %s.name,
                    failures = s.common.breaker_failures,
                    cooldown_s = s.common.breaker_cooldown.as_secs_f64(),
                    "upstream keeps failing: breaker open, answering without this enricher's hits"
                );
            }
            log_failure(&s, &e);
            none()
        }
    };
    let _ = tx.send(Some(hits));
    place.answered = true;
}

fn log_failure<U>(s: &Shared<U>, e: &Error) {
    let mut logged = s.logged.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if logged.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
        logged.1 += 1;
        return;
    }
    let since = std::mem::take(&mut logged.1);
    logged.0 = Some(now);
    tracing::warn!(
        enricher = %s.name,
        reason = e.failure.label(),
        unlogged_since_last = since,
        "upstream call failed: {}",
        e.detail
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that panics on `boom` and never answers anything else.
    struct Odd;

    impl Upstream for Odd {
        fn call(
            &self,
            _: Kind,
            value: &[u8],
        ) -> Pin<Box<dyn Future<Output = Result<Vec<EnrichHit>, Error>>>> {
            let boom = value == b"boom";
            Box::pin(async move {
                assert!(!boom, "an upstream bug");
                std::future::pending().await
            })
        }
    }

    fn on_one_thread(f: impl Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    async fn wait(a: Answer) -> Hits {
        match a {
            Answer::Ready(h) => h,
            Answer::Pending(f) => f.await,
        }
    }

    #[test]
    fn a_call_that_panics_leaves_no_dead_entry_behind() {
        on_one_thread(async {
            let common = Common {
                timeout: Duration::from_millis(50),
                ..Common::default()
            };
            let r = Remote::new("odd", &common, Odd);
            for n in 1..=2 {
                assert!(wait(r.lookup(Kind::Url, b"boom")).await.is_empty());
                // A second lookup starts a new call: it does not join the dead one.
                assert_eq!(r.stats().calls.load(Ordering::Relaxed), n);
            }
        });
    }

    #[test]
    fn calls_queued_for_a_slot_are_bounded() {
        on_one_thread(async {
            let common = Common {
                concurrency: 1,
                timeout: Duration::from_secs(30),
                ..Common::default()
            };
            let r = Remote::new("slow", &common, Odd);
            let mut waiting = Vec::new();
            for i in 0..QUEUED_PER_SLOT {
                match r.lookup(Kind::Url, format!("v{i}").as_bytes()) {
                    Answer::Pending(f) => waiting.push(f),
                    Answer::Ready(_) => panic!("call {i} was not started"),
                }
            }
            // One more new value: answered at once, without hits, counted as busy.
            match r.lookup(Kind::Url, b"one more") {
                Answer::Ready(h) => assert!(h.is_empty()),
                Answer::Pending(_) => panic!("queued beyond the bound"),
            }
            let busy = &r.stats().errors[Failure::Busy as usize];
            assert_eq!(busy.load(Ordering::Relaxed), 1);
            // A value already asked about joins its call, bound or not.
            assert!(matches!(r.lookup(Kind::Url, b"v0"), Answer::Pending(_)));
        });
    }

    #[test]
    fn breaker_opens_after_failures_probes_after_cooldown_and_closes() {
        let b = Breaker::new(3, Duration::from_millis(50));
        assert!(b.admit());
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "the third failure opens it");
        assert!(!b.admit());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit(), "one probe after the cooldown");
        assert!(!b.admit(), "only one");
        assert!(b.failure(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit());
        assert!(b.success(), "a good probe closes it");
        assert!(b.admit() && b.admit());
    }
}
