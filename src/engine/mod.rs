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
//! that waits on another system, within the largest timeout of the enrichers asked.
//! A wire format renders the hits in order; a line whose enrichment is pending waits
//! without holding up other connections, and a line that needs no waiting never
//! touches the asynchronous machinery.
//!
//! **Enrichers across reloads.** A reload that keeps an enricher's settings keeps the
//! enricher itself (its cache, its helper processes); only changed or new ones are
//! built.

pub mod sources;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use crate::enrich::EnrichHit;
use crate::enrich::{self, Answer, Enricher, Enrichers, Hits};
use crate::index::{Counts, Hit, IndexSet, Scratch};
use crate::indicator::Kind;
pub use sources::{LoadError, Sources};

/// Everything one generation answers from. Immutable once published.
pub struct Snapshot {
    generation: u64,
    index: IndexSet,
    enrichers: Arc<Enrichers>,
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

/// The enrichers' hits for one indicator, each enricher's in config order.
pub enum Enrichment {
    /// No enricher handles this kind.
    None,
    /// Known now: every enricher answered from what it knows or has cached.
    Ready(Vec<Hits>),
    /// Some enricher must ask another system; resolves within its timeout (without
    /// that enricher's hits if it is late). Runs on the calling thread's runtime.
    Pending(Pin<Box<dyn Future<Output = Vec<Hits>>>>),
}

impl Snapshot {
    pub fn new(generation: u64, index: IndexSet) -> Snapshot {
        Snapshot::with_enrichers(generation, index, Arc::new(Enrichers::default()))
    }

    pub fn with_enrichers(generation: u64, index: IndexSet, enrichers: Arc<Enrichers>) -> Snapshot {
        Snapshot {
            generation,
            index,
            enrichers,
        }
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

    /// Whether any enricher is configured (a line then starts its enrichers' lookups
    /// for all its indicators at once).
    #[inline]
    pub fn has_enrichers(&self) -> bool {
        !self.enrichers.is_empty()
    }

    pub fn enrichers(&self) -> &Enrichers {
        &self.enrichers
    }

    /// The enrichers' hits for one indicator.
    pub fn enrich(&self, kind: Kind, value: &[u8]) -> Enrichment {
        self.enrich_where(kind, value, |_| true)
    }

    /// The enrichers' hits for a value looked up as `kind` after being looked up as
    /// `asked`: only from enrichers that do not handle `asked` too, so none is asked
    /// twice about one value (nor answers it twice).
    pub fn enrich_again(&self, kind: Kind, asked: Kind, value: &[u8]) -> Enrichment {
        self.enrich_where(kind, value, |e| !e.handles(asked))
    }

    fn enrich_where(
        &self,
        kind: Kind,
        value: &[u8],
        ask: impl Fn(&dyn enrich::Enricher) -> bool,
    ) -> Enrichment {
        if !self.enrichers.handle(kind) {
            return Enrichment::None;
        }
        let value = value.trim_ascii();
        // In enricher order; a slot still waiting holds no hits until its answer comes.
        let mut hits: Vec<Hits> = Vec::new();
        let mut waits = Vec::new();
        for e in self
            .enrichers
            .iter()
            .filter(|e| e.handles(kind) && ask(e.as_ref()))
        {
            match e.lookup(kind, value) {
                Answer::Ready(h) => hits.push(h),
                Answer::Pending(f) => {
                    waits.push((hits.len(), f));
                    hits.push(enrich::none());
                }
            }
        }
        if waits.is_empty() {
            return Enrichment::Ready(hits);
        }
        Enrichment::Pending(Box::pin(async move {
            let (slots, futures): (Vec<usize>, Vec<_>) = waits.into_iter().unzip();
            let answers = futures_util::future::join_all(futures).await;
            for (slot, answer) in slots.into_iter().zip(answers) {
                hits[slot] = answer;
            }
            hits
        }))
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

/// What a snapshot is made from: the sources to load, and the enrichers' settings.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub sources: Sources,
    pub enrichers: Vec<enrich::Spec>,
}

/// The served snapshot and the means to replace it.
pub struct Engine {
    plan: Mutex<Plan>,
    /// The enrichers built so far, with the settings they were built from.
    built: Mutex<Vec<(enrich::Spec, Arc<dyn Enricher>)>>,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    /// Whether the first load is done (until then the snapshot is empty).
    ready: AtomicBool,
    reloading: Mutex<()>,
    pub stats: ReloadStats,
}

impl Engine {
    /// Load the sources into generation 0.
    pub fn load(sources: Sources) -> Result<Engine, LoadError> {
        Engine::start(Plan {
            sources,
            enrichers: Vec::new(),
        })
    }

    /// Load a plan (sources and enrichers): the engine is ready when this returns.
    pub fn start(plan: Plan) -> Result<Engine, LoadError> {
        let engine = Engine::loading(plan);
        engine.load_first()?;
        Ok(engine)
    }

    /// An engine that will serve `plan` once [`Engine::load_first`] has loaded it;
    /// until then it serves an empty snapshot (generation 0) and is not ready.
    pub fn loading(plan: Plan) -> Engine {
        Engine {
            plan: Mutex::new(plan),
            built: Mutex::new(Vec::new()),
            current: Mutex::new(Arc::new(Snapshot::new(0, IndexSet::new(Vec::new())))),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            reloading: Mutex::new(()),
            stats: ReloadStats::default(),
        }
    }

    /// Load the plan and publish it (generation 1, unless a reload waiting for the
    /// first load got there first); the engine is then ready.
    pub fn load_first(&self) -> Result<(), LoadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let index = plan.sources.load()?;
        let enrichers = self.enrichers_for(&plan.enrichers)?;
        self.publish(index, enrichers);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Make `index` and `enrichers` the served snapshot, as the next generation (the
    /// serving threads pick it up when they see the generation change).
    fn publish(&self, index: IndexSet, enrichers: Arc<Enrichers>) -> u64 {
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let generation = guard.generation + 1;
        *guard = Arc::new(Snapshot::with_enrichers(generation, index, enrichers));
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// Whether the first load is done.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The enrichers for `specs`: those built before with the same settings are kept
    /// (with their caches and helper processes), the others are built now.
    fn enrichers_for(&self, specs: &[enrich::Spec]) -> Result<Arc<Enrichers>, LoadError> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(specs.len());
        for spec in specs {
            let kept = built
                .iter()
                .find(|(s, _)| s == spec)
                .map(|(_, e)| e.clone());
            let e = match kept {
                Some(e) => e,
                None => Enrichers::build(std::slice::from_ref(spec))?
                    .iter()
                    .next()
                    .cloned()
                    .ok_or_else(|| {
                        LoadError::Enricher(enrich::BuildError::Invalid {
                            name: spec.name.clone(),
                            reason: "could not be built".into(),
                        })
                    })?,
            };
            next.push((spec.clone(), e));
        }
        let list = next.iter().map(|(_, e)| e.clone()).collect();
        *built = next;
        Ok(Arc::new(Enrichers::new(list)))
    }

    /// Replace the plan (a re-read config file) and reload from it. On error the old
    /// plan and snapshot stay.
    pub fn reconfigure(&self, plan: Plan) -> Result<u64, LoadError> {
        let old = std::mem::replace(
            &mut *self.plan.lock().unwrap_or_else(|p| p.into_inner()),
            plan,
        );
        let r = self.reload();
        if r.is_err() {
            *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = old;
        }
        r
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
    /// stays in service. One reload at a time; before the first load is done, a
    /// reload is that load.
    pub fn reload(&self) -> Result<u64, LoadError> {
        if !self.is_ready() {
            self.load_first()?;
            return Ok(self.generation.load(Ordering::Acquire));
        }
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let loaded = plan
            .sources
            .load()
            .and_then(|index| Ok((index, self.enrichers_for(&plan.enrichers)?)));
        match loaded {
            Ok((index, enrichers)) => {
                let records = index.record_count();
                let generation = self.publish(index, enrichers);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Plan {
        Plan {
            sources: Sources::demo(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
            ),
            enrichers: Vec::new(),
        }
    }

    #[test]
    fn every_load_publishes_a_new_generation() {
        // A reload asked for while the first load is still to come loads it itself;
        // the first load, coming after, must still publish a generation the serving
        // threads have not seen (they refresh only when it changes).
        let engine = Engine::loading(demo());
        assert_eq!(engine.reload().ok(), Some(1));
        assert!(engine.load_first().is_ok());
        assert_eq!(engine.generation(), 2);
        assert_eq!(engine.current().generation(), 2);
        assert_eq!(engine.reload().ok(), Some(3));
    }
}
