//! One request line → its answer bytes: parse the indicators, look each one up, write
//! a hit line per matched record and `LookupFinished`. The server's connections and
//! `tracer lookup` both go through [`Responder`], so the CLI prints exactly what the
//! server sends.

use crate::index::{Hit, IndexSet, Scratch};
use crate::protocol::{self, Categories};

/// What answering one line did, for logs and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Indicators by kind, indexed by `Kind::index()`.
    pub by_kind: [u32; 5],
    pub hits: u32,
    /// Some indicator had more than `max_hits` matches; the rest were dropped.
    pub truncated: bool,
}

/// Per-thread answering state: reusable buffers, so answering allocates nothing once
/// warm.
pub struct Responder {
    max_hits: usize,
    scratch: Scratch,
    hits: Vec<Hit>,
    categories: Categories,
}

impl Responder {
    pub fn new(max_hits: usize) -> Responder {
        Responder {
            max_hits,
            scratch: Scratch::default(),
            hits: Vec::new(),
            categories: Categories::default(),
        }
    }

    /// Append the whole answer to `line` to `out`.
    pub fn answer(&mut self, index: &IndexSet, line: &[u8], out: &mut Vec<u8>) -> Outcome {
        let Responder {
            max_hits,
            scratch,
            hits,
            categories,
        } = self;
        categories.clear();
        let mut outcome = Outcome::default();
        protocol::for_each_indicator(line, |ind| {
            outcome.by_kind[ind.kind.index()] += 1;
            hits.clear();
            let found = index.lookup(ind.kind, ind.value, scratch, *max_hits, hits);
            outcome.truncated |= found > *max_hits;
            for &hit in hits.iter() {
                let (category, context) = index.record(hit);
                let nth = categories.next(category);
                protocol::encode_hit(out, category, nth, ind.value, context);
                outcome.hits += 1;
            }
        });
        out.extend_from_slice(protocol::FINISHED);
        outcome
    }
}
