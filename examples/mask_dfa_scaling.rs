//! How one combined `regex-automata` DFA over all URL masks scales: build time and
//! serialized size at 1k, 10k, 100k masks of the generator's real shape mix.
//!
//! ```sh
//! cargo run --release --example mask_dfa_scaling -- [SIZES…] [--limit-mib N]
//! ```
//!
//! Each build is capped by regex-automata's own size limits (default 2048 MiB), so a
//! blow-up shows as "over the limit after N s" rather than as a machine out of memory.

use std::time::Instant;

use regex_automata::dfa::dense;
use regex_automata::MatchKind;
use tracer::generate::Options;

/// One DFA matching any of `masks` (pattern i = mask i), anchored at the start, with
/// the semantics of `tracer::index::masks::matches` (`to_regex` spells them out).
fn build_dfa(masks: &[&[u8]], size_limit: Option<usize>) -> Result<dense::DFA<Vec<u32>>, String> {
    let patterns: Vec<String> = masks
        .iter()
        .map(|m| tracer::index::masks::to_regex(m))
        .collect();
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(size_limit)
                .determinize_size_limit(size_limit),
        )
        .syntax(
            regex_automata::util::syntax::Config::new()
                .unicode(false)
                .utf8(false),
        )
        .build_many(&patterns)
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    let mut limit_mib = 2048usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--limit-mib" {
            limit_mib = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(limit_mib);
        } else {
            sizes.push(a.parse::<usize>()?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 100_000];
    }
    let max = sizes.iter().copied().max().unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tracer-dfa-scaling-{}", std::process::id()));
    tracer::generate::run(&Options {
        out: dir.clone(),
        urls: max,
        hashes: 0,
        ips: 0,
        domains: 0,
        seed: 3,
        mixed: 0,
    })?;
    let feed: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("urls.json"))?)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut norm = Vec::new();
    let masks: Vec<Vec<u8>> = feed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["mask"].as_str())
                .map(|m| {
                    tracer::indicator::normalize_url(m.as_bytes(), &mut norm);
                    norm.clone()
                })
                .collect()
        })
        .unwrap_or_default();
    println!("| masks | build | DFA size |");
    println!("| --- | --- | --- |");
    for n in sizes {
        let some: Vec<&[u8]> = masks.iter().take(n).map(Vec::as_slice).collect();
        let started = Instant::now();
        let result = build_dfa(&some, Some(limit_mib << 20));
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(dfa) => {
                let (bytes, _) = dfa.to_bytes_little_endian();
                println!(
                    "| {n} | {secs:.2} s | {:.1} MiB |",
                    bytes.len() as f64 / (1 << 20) as f64
                );
            }
            Err(e) => {
                println!("| {n} | over the {limit_mib} MiB limit after {secs:.1} s | — ({e}) |")
            }
        }
    }
    Ok(())
}
