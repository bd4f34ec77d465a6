//! What answers an indicator: the served [`Snapshot`] (today the index set; the
//! enrichers of SPEC §11 plug in here), how it is swapped on reload, and the answer
//! model both wire formats render.
//!
//! **Snapshots and reload.** An [`Engine`] publishes one immutable snapshot at a time
//! and a generation number. A reload builds the next snapshot completely (off the
//! serving threads: on the signal or watcher thread that asked for it), then
//! publishes it under a mutex and bumps the generation; serving threads notice the
//! new generation with one atomic load per batch and pick the snapshot up, while
//! answers already under way finish on the one they started with (kept alive by
//! their `Arc`). A failed reload changes nothing.
//!
//! **Answers.** Looking an indicator up yields feed hits synchronously
//! ([`Snapshot::feed_hits`], [`Snapshot::hit`]), then the enrichers' hits through
//! [`Snapshot::enrich`], which is either ready (nothing to ask, or cached) or a future
//! that waits on another system. A wire format renders the hits in order; a line
//! whose enrichment is pending waits without holding up other connections, and a
//! line that needs no waiting never touches the asynchronous machinery. No enricher
//! exists yet, so `enrich` is always ready and empty.

pub mod sources;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::index::{Counts, Hit, IndexSet, Scratch};
use crate::indicator::Kind;
pub use sources::{LoadError, Sources};

/// Everything one generation answers from. Immutable once published.
pub struct Snapshot {
    generation: u64,
    index: IndexSet,
}

/// One hit as both wire formats need it.
#[derive(Clone, Copy, Debug)]
pub struct AnswerHit<'a> {
    /// The feed's (or enricher's) category, before any `_2` suffix.
    pub category: &'a [u8],
    /// The record's fields in the context encoding of [`crate::index::records`].
    pub context: &'a [u8],
    /// Which of the snapshot's categories (see [`Snapshot::categories`]) this is,
    /// for counting; `usize::MAX` for none.
    pub slot: usize,
}

/// A hit an enricher produced (owned: it outlives the call that made it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichHit {
    pub category: Box<[u8]>,
    pub context: Box<[u8]>,
}

impl EnrichHit {
    pub fn as_answer(&self) -> AnswerHit<'_> {
        AnswerHit {
            category: &self.category,
            context: &self.context,
            slot: usize::MAX,
        }
    }
}

/// The enrichers' hits for one indicator.
pub enum Enrichment {
    /// Known now: nothing applies, or every applicable enricher answered from cache.
    Ready(Vec<EnrichHit>),
    /// Some enricher must ask another system; resolves within its timeout (without
    /// that enricher's hits if it is late). Runs on the calling thread's runtime.
    Pending(Pin<Box<dyn Future<Output = Vec<EnrichHit>>>>),
}

impl Snapshot {
    pub fn new(generation: u64, index: IndexSet) -> Snapshot {
        Snapshot { generation, index }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn index(&self) -> &IndexSet {
        &self.index
    }

    /// Look one indicator up in the feeds: appends at most `max_hits` hits to `hits`,
    /// in answer order, and returns how many there were before truncation.
    #[inline]
    pub fn feed_hits(
        &self,
        kind: Kind,
        value: &[u8],
        scratch: &mut Scratch,
        max_hits: usize,
        hits: &mut Vec<Hit>,
    ) -> usize {
        self.index.lookup(kind, value, scratch, max_hits, hits)
    }

    /// What to print for a feed hit.
    #[inline]
    pub fn hit(&self, hit: Hit) -> AnswerHit<'_> {
        let r = self.index.record(hit);
        AnswerHit {
            category: r.category,
            context: r.context,
            slot: r.slot,
        }
    }

    /// The category names hits are counted under, by slot.
    pub fn categories(&self) -> Vec<Box<[u8]>> {
        self.index.categories()
    }

    /// The enrichers' hits for one indicator (none are configured yet).
    pub fn enrich(&self, _kind: Kind, _value: &[u8]) -> Enrichment {
        Enrichment::Ready(Vec::new())
    }

    pub fn record_count(&self) -> usize {
        self.index.record_count()
    }

    pub fn counts(&self) -> Counts {
        self.index.counts()
    }
}

/// Reload counters, read by the metrics.
#[derive(Default, Debug)]
pub struct ReloadStats {
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
}

/// The served snapshot and the means to replace it.
pub struct Engine {
    sources: Sources,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    reloading: Mutex<()>,
    pub stats: ReloadStats,
}

impl Engine {
    /// Load the sources into generation 0.
    pub fn load(sources: Sources) -> Result<Engine, LoadError> {
        let index = sources.load()?;
        Ok(Engine::with_index(sources, index))
    }

    /// An engine serving `index` as generation 0; reloads use `sources`.
    pub fn with_index(sources: Sources, index: IndexSet) -> Engine {
        Engine {
            sources,
            current: Mutex::new(Arc::new(Snapshot::new(0, index))),
            generation: AtomicU64::new(0),
            reloading: Mutex::new(()),
            stats: ReloadStats::default(),
        }
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The generation published last: one atomic load, for the serving threads'
    /// per-batch check.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The published snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuild the snapshot from the sources and publish it. On error the old one
    /// stays in service. One reload at a time.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        match self.sources.load() {
            Ok(index) => {
                let records = index.record_count();
                let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
                let generation = guard.generation + 1;
                *guard = Arc::new(Snapshot::new(generation, index));
                self.generation.store(generation, Ordering::Release);
                drop(guard);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    generation,
                    records,
                    ms = started.elapsed().as_millis() as u64,
                    "index reloaded"
                );
                Ok(generation)
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed, still serving the previous index: {e}");
                Err(e)
            }
        }
    }
}
