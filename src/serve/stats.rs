//! Counters, one set per worker thread.
//!
//! Each worker writes only its own [`WorkerStats`], with a plain load and store (no
//! locked instruction) on cache lines no other thread writes, so counting costs a few
//! cycles per batch and never bounces a line between cores. `/metrics` sums the
//! workers' counters when it is scraped ([`Registry::sum`]).
//!
//! Hits are also counted by category. A worker counts into a table with one slot per
//! feed of the snapshot it serves ([`CategoryTable`]); when it moves to a new
//! snapshot it folds that table into per-name totals, under a lock only it and a
//! scrape ever take.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A counter with one writer. Readers on other threads see a recent value.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // One writer: a load and a store, not a read-modify-write.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (µs) of the batch processing-time histogram buckets.
pub const BATCH_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Why something went wrong, as `tracer_errors_total{reason}` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    MaxConnections,
    NotAllowed,
    LineTooLong,
    /// A bug panicked while answering a connection; that connection was closed.
    Panic,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 4] = [
        ErrorReason::MaxConnections,
        ErrorReason::NotAllowed,
        ErrorReason::LineTooLong,
        ErrorReason::Panic,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorReason::MaxConnections => "max_connections",
            ErrorReason::NotAllowed => "not_allowed",
            ErrorReason::LineTooLong => "line_too_long",
            ErrorReason::Panic => "panic",
        }
    }
}

/// One worker's counters. Aligned so two workers' counters never share a cache line.
#[repr(align(128))]
#[derive(Default, Debug)]
pub struct WorkerStats {
    pub requests: Counter,
    /// Indicators by kind, indexed by `Kind::index()`.
    pub by_kind: [Counter; 5],
    pub hits: Counter,
    /// Time from a read's completion to its answers being ready, per batch: counts per
    /// bucket (last = over the largest bound), and the sum in µs.
    pub batch_buckets: [Counter; 11],
    pub batch_sum_us: Counter,
    pub connections: Counter,
    /// By `ErrorReason as usize`.
    pub errors: [Counter; 4],
    /// Answers cut at `--max-hits-per-line`.
    pub lines_truncated: Counter,
    /// The drain: requests answered after it began, connections it closed at an
    /// answer boundary, request lines that arrived after their connection's FIN,
    /// connections still open when `--drain-timeout` passed.
    pub drain_answered: Counter,
    pub drain_closed: Counter,
    pub drain_late: Counter,
    pub drain_cut: Counter,
    pub categories: CategoryCounts,
    /// HTTP API answers by status, indexed as [`HTTP_STATUSES`] (last: any other).
    pub http_status: [Counter; HTTP_STATUSES.len() + 1],
    /// HTTP API objects looked up.
    pub http_objects: Counter,
}

/// The statuses the HTTP API answers with, as `tracer_http_requests_total{status}`
/// counts them.
pub const HTTP_STATUSES: [u16; 12] = [200, 400, 401, 404, 405, 406, 408, 413, 425, 429, 500, 503];

impl WorkerStats {
    /// Count one batch of answered requests.
    #[inline]
    pub fn batch(&self, requests: u64, by_kind: &[u64; 5], hits: u64, took: Duration) {
        if requests == 0 {
            return;
        }
        self.requests.add(requests);
        for (counter, n) in self.by_kind.iter().zip(by_kind) {
            if *n > 0 {
                counter.add(*n);
            }
        }
        self.hits.add(hits);
        let us = took.as_micros() as u64;
        let bucket = BATCH_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BATCH_BUCKETS_US.len());
        self.batch_buckets[bucket].add(1);
        self.batch_sum_us.add(us);
    }

    /// Count one HTTP API answer.
    pub fn http_status(&self, status: u16) {
        let i = HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(HTTP_STATUSES.len());
        self.http_status[i].add(1);
    }

    /// Count the objects of one piece of an HTTP API answer: by kind, and their hits.
    pub fn http_objects(&self, by_kind: &[u64; 5], hits: u64) {
        let mut n = 0;
        for (counter, k) in self.by_kind.iter().zip(by_kind) {
            if *k > 0 {
                counter.add(*k);
                n += k;
            }
        }
        self.http_objects.add(n);
        self.hits.add(hits);
    }

    /// Count one problem; returns how many of this kind this worker has seen.
    pub fn error(&self, reason: ErrorReason) -> u64 {
        let c = &self.errors[reason as usize];
        c.add(1);
        c.get()
    }
}

/// Hit counts by slot for one snapshot: slot `i` is the `i`-th feed of the snapshot.
#[derive(Debug)]
pub struct CategoryTable {
    names: Vec<Box<[u8]>>,
    counts: Box<[Counter]>,
}

impl CategoryTable {
    fn new(names: Vec<Box<[u8]>>) -> CategoryTable {
        let counts = names.iter().map(|_| Counter::default()).collect();
        CategoryTable { names, counts }
    }

    #[inline]
    pub fn hit(&self, slot: usize) {
        if let Some(c) = self.counts.get(slot) {
            c.add(1);
        }
    }
}

#[derive(Debug, Default)]
struct CategoryState {
    folded: BTreeMap<Box<[u8]>, u64>,
    current: Option<Arc<CategoryTable>>,
}

/// A worker's hits by category, over every snapshot it has served.
#[derive(Debug, Default)]
pub struct CategoryCounts(Mutex<CategoryState>);

impl CategoryCounts {
    /// Start counting for a snapshot whose feeds' categories are `names` (in slot
    /// order); what the previous table counted is kept by name. Called by the worker
    /// itself, so no hit is counted into the old table after it is folded.
    pub fn switch(&self, names: Vec<Box<[u8]>>) -> Arc<CategoryTable> {
        let table = Arc::new(CategoryTable::new(names));
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = s.current.take() {
            for (name, c) in old.names.iter().zip(old.counts.iter()) {
                if c.get() > 0 {
                    *s.folded.entry(name.clone()).or_default() += c.get();
                }
            }
        }
        s.current = Some(table.clone());
        table
    }

    fn add_to(&self, out: &mut BTreeMap<Box<[u8]>, u64>) {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (name, n) in &s.folded {
            *out.entry(name.clone()).or_default() += n;
        }
        if let Some(t) = &s.current {
            for (name, c) in t.names.iter().zip(t.counts.iter()) {
                *out.entry(name.clone()).or_default() += c.get();
            }
        }
    }
}

/// Every worker's counters, for the scrape.
#[derive(Default, Debug)]
pub struct Registry {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
}

/// The workers' counters added up.
#[derive(Default, Debug)]
pub struct Totals {
    pub requests: u64,
    pub by_kind: [u64; 5],
    pub hits: u64,
    pub batch_buckets: [u64; 11],
    pub batch_sum_us: u64,
    pub connections: u64,
    pub errors: [u64; 4],
    pub lines_truncated: u64,
    pub drain_answered: u64,
    pub drain_closed: u64,
    pub drain_late: u64,
    pub drain_cut: u64,
    pub hits_by_category: BTreeMap<Box<[u8]>, u64>,
    pub http_status: [u64; HTTP_STATUSES.len() + 1],
    pub http_objects: u64,
}

impl Registry {
    /// A new worker's counters.
    pub fn register(&self) -> Arc<WorkerStats> {
        let w = Arc::new(WorkerStats::default());
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w.clone());
        w
    }

    pub fn sum(&self) -> Totals {
        let mut t = Totals::default();
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.requests += w.requests.get();
            for (a, c) in t.by_kind.iter_mut().zip(&w.by_kind) {
                *a += c.get();
            }
            t.hits += w.hits.get();
            for (a, c) in t.batch_buckets.iter_mut().zip(&w.batch_buckets) {
                *a += c.get();
            }
            t.batch_sum_us += w.batch_sum_us.get();
            t.connections += w.connections.get();
            for (a, c) in t.errors.iter_mut().zip(&w.errors) {
                *a += c.get();
            }
            t.lines_truncated += w.lines_truncated.get();
            t.drain_answered += w.drain_answered.get();
            t.drain_closed += w.drain_closed.get();
            t.drain_late += w.drain_late.get();
            t.drain_cut += w.drain_cut.get();
            w.categories.add_to(&mut t.hits_by_category);
            for (a, c) in t.http_status.iter_mut().zip(&w.http_status) {
                *a += c.get();
            }
            t.http_objects += w.http_objects.get();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_counts_survive_a_switch_and_merge_by_name() {
        let reg = Registry::default();
        let w = reg.register();
        let t = w
            .categories
            .switch(vec![b"a".as_slice().into(), b"b".as_slice().into()]);
        t.hit(0);
        t.hit(1);
        t.hit(1);
        let t2 = w
            .categories
            .switch(vec![b"b".as_slice().into(), b"c".as_slice().into()]);
        t2.hit(0);
        t2.hit(1);
        t2.hit(7); // no such slot: ignored
        let sum = reg.sum().hits_by_category;
        let got: Vec<(&[u8], u64)> = sum.iter().map(|(k, v)| (&k[..], *v)).collect();
        assert_eq!(got, vec![(&b"a"[..], 1), (&b"b"[..], 3), (&b"c"[..], 1)]);
    }
}
