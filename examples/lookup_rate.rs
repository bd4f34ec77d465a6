//! Single-thread lookup rate of an index, per indicator kind, for hits and misses.
//!
//! ```sh
//! cargo run --release --example lookup_rate -- INDEX.tracer… --hits hits.txt --misses misses.txt
//! ```
//!
//! `hits.txt` / `misses.txt` are `key=value` lines, as `tracer generate` writes them.
//! Every hit sample must hit and every miss sample must miss, or the run fails: a
//! rate measured on wrong answers means nothing. Prints one row per (kind, hit/miss).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracer::index::{Index, IndexSet, Scratch};
use tracer::protocol::cybertrace as protocol;

fn main() -> anyhow::Result<()> {
    let mut indexes = Vec::new();
    let mut hits = None;
    let mut misses = None;
    let mut passes = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hits" => hits = args.next().map(PathBuf::from),
            "--misses" => misses = args.next().map(PathBuf::from),
            // A fixed amount of work instead of one second, for instruction counts
            // (`valgrind --tool=callgrind`), which do not depend on the host's noise.
            "--passes" => passes = args.next().and_then(|n| n.parse::<u64>().ok()),
            _ => indexes.push(PathBuf::from(a)),
        }
    }
    let started = Instant::now();
    let parts: Vec<Index> = indexes
        .iter()
        .map(|p| Index::open(p).with_context(|| p.display().to_string()))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "opened {} index file(s) in {:.1} ms",
        parts.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let set = IndexSet::new(parts);
    println!("| kind | sample | lookups/s (1 thread) | ns/lookup |");
    println!("| --- | --- | --- | --- |");
    for (label, path, want_hit) in [("hit", hits, true), ("miss", misses, false)] {
        let Some(path) = path else { continue };
        let lines = tracer::generate::read_workload(&path)?;
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            let key = l.split('=').next().unwrap_or("").to_string();
            by_key.entry(key).or_default().push(l);
        }
        for (key, lines) in by_key {
            let rate = measure(&set, &lines, want_hit, passes)
                .with_context(|| format!("{key} {label}s"))?;
            println!("| {key} | {label} | {:.0} | {:.0} |", rate, 1e9 / rate);
        }
    }
    Ok(())
}

/// Look every line up repeatedly for about a second (or `passes` times over);
/// returns lookups per second.
fn measure(
    set: &IndexSet,
    lines: &[String],
    want_hit: bool,
    passes: Option<u64>,
) -> anyhow::Result<f64> {
    let mut inds = Vec::new();
    let mut parsed = Vec::new();
    for l in lines {
        protocol::parse_request(l.as_bytes(), &mut inds);
        let Some(i) = inds.first() else {
            bail!("no indicator in {l:?}")
        };
        parsed.push((i.kind, i.value.to_vec()));
    }
    let mut scratch = Scratch::default();
    let mut hits = Vec::new();
    // Check first: every sample behaves as its file says.
    for (kind, value) in &parsed {
        hits.clear();
        let n = set.lookup(*kind, value, &mut scratch, 32, &mut hits);
        if (n > 0) != want_hit {
            bail!(
                "{} {:?} {}",
                if want_hit { "missed" } else { "hit" },
                kind,
                String::from_utf8_lossy(value)
            );
        }
    }
    let mut done = 0u64;
    let mut sink = 0usize;
    let started = Instant::now();
    while match passes {
        Some(n) => done < n * parsed.len() as u64,
        None => started.elapsed() < Duration::from_secs(1),
    } {
        for (kind, value) in &parsed {
            hits.clear();
            set.lookup(*kind, value, &mut scratch, 32, &mut hits);
            for h in &hits {
                sink += record_len(set, *h);
            }
        }
        done += parsed.len() as u64;
    }
    std::hint::black_box(sink);
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn record_len(set: &IndexSet, h: tracer::index::Hit) -> usize {
    set.record(h).context.len()
}
