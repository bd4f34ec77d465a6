//! Lookups against a generated index (200k URL masks, 200k MD5s, 50k IP entries),
//! each beside a naive baseline on the same data:
//! - exact URL: the index vs a `HashMap` of normalized URLs;
//! - URL masks: the index vs a loop over `regex::Regex` (the Python tool's approach,
//!   on 1,000 masks; the index is measured on all of them and on the same 1,000);
//! - IP: the index vs a linear scan over (start, end) ranges;
//! - MD5: the index vs a `HashMap` of digests.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracer::index::{IndexSet, Scratch};
use tracer::indicator::{self, Kind};

mod common;

fn run(set: &IndexSet, kind: Kind, values: &[String]) -> usize {
    let mut scratch = Scratch::default();
    let mut hits = Vec::new();
    let mut n = 0;
    for v in values {
        hits.clear();
        n += set.lookup(kind, v.as_bytes(), &mut scratch, 32, &mut hits);
    }
    n
}

fn bench(c: &mut Criterion) {
    let data = common::generate("lookup", 200_000, 200_000, 50_000);
    let set = data.index();
    let url_hits = data.samples("url", true);
    let url_misses = data.samples("url", false);

    // Baselines built from the same feed.
    let feed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.dir.join("urls.json")).expect("read"))
            .expect("json");
    let masks: Vec<String> = feed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["mask"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut norm = Vec::new();
    let mut exact: HashMap<Vec<u8>, u32> = HashMap::new();
    for (i, m) in masks.iter().enumerate() {
        if !m.contains('*') {
            indicator::normalize_url(m.as_bytes(), &mut norm);
            exact.insert(norm.clone(), i as u32);
        }
    }

    let mut g = c.benchmark_group("url_lookup");
    g.throughput(Throughput::Elements(url_hits.len() as u64));
    g.bench_function("tracer_hits", |b| {
        b.iter(|| run(&set, Kind::Url, &url_hits))
    });
    g.bench_function("tracer_misses", |b| {
        b.iter(|| run(&set, Kind::Url, &url_misses))
    });
    g.finish();

    // Exact URLs only, the one thing a HashMap can answer: same samples for both.
    let exact_hits: Vec<String> = url_hits
        .iter()
        .filter(|u| {
            indicator::normalize_url(u.as_bytes(), &mut norm);
            exact.contains_key(&norm)
        })
        .cloned()
        .collect();
    let mut g = c.benchmark_group("exact_url_lookup");
    g.throughput(Throughput::Elements(exact_hits.len() as u64));
    g.bench_function("tracer", |b| b.iter(|| run(&set, Kind::Url, &exact_hits)));
    g.bench_function("hashmap", |b| {
        b.iter(|| {
            let mut n = 0;
            for u in &exact_hits {
                indicator::normalize_url(u.as_bytes(), &mut norm);
                if let Some(v) = exact.get(&norm) {
                    n += 1;
                    std::hint::black_box(v);
                }
            }
            n
        })
    });
    g.finish();

    // The regex loop: 1,000 masks, each a regex, tried in turn.
    let few: Vec<&String> = masks
        .iter()
        .filter(|m| m.contains('*'))
        .take(1000)
        .collect();
    let regexes: Vec<regex::Regex> = few
        .iter()
        .map(|m| {
            regex::Regex::new(&format!("^{}$", regex::escape(m).replace("\\*", ".*")))
                .expect("regex")
        })
        .collect();
    let few_urls: Vec<String> = url_hits.iter().take(200).cloned().collect();
    let mut g = c.benchmark_group("mask_match_1000_masks");
    g.throughput(Throughput::Elements(few_urls.len() as u64));
    g.bench_function("tracer_index_all_masks", |b| {
        b.iter(|| run(&set, Kind::Url, &few_urls))
    });
    g.bench_function("regex_loop", |b| {
        b.iter(|| {
            let mut n = 0;
            for u in &few_urls {
                indicator::normalize_url(u.as_bytes(), &mut norm);
                let s = String::from_utf8_lossy(&norm);
                n += regexes.iter().filter(|r| r.is_match(&s)).count();
            }
            n
        })
    });
    g.finish();

    let ip_hits = data.samples("ip", true);
    let csv = std::fs::read_to_string(data.dir.join("ips.csv")).expect("read");
    let ranges: Vec<(u128, u128)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| indicator::parse_ip_entry(l.split(',').next()?.as_bytes()))
        .map(|r| (r.start, r.end))
        .collect();
    // The linear scan is slow: both sides get the same 200 addresses.
    let ip_hits: Vec<String> = ip_hits.into_iter().take(200).collect();
    let mut g = c.benchmark_group("ip_lookup");
    g.throughput(Throughput::Elements(ip_hits.len() as u64));
    g.bench_function("tracer", |b| b.iter(|| run(&set, Kind::Ip, &ip_hits)));
    g.bench_function("linear_scan", |b| {
        b.iter(|| {
            let mut n = 0;
            for ip in &ip_hits {
                if let Some((_, a)) = indicator::parse_ip(ip.as_bytes()) {
                    n += ranges.iter().filter(|(s, e)| *s <= a && a <= *e).count();
                }
            }
            n
        })
    });
    g.finish();

    let md5_hits = data.samples("hash", true);
    let mut digests: HashMap<[u8; 16], u32> = HashMap::new();
    let hashes = std::fs::read_to_string(data.dir.join("hashes.csv")).expect("read");
    for (i, l) in hashes.lines().skip(1).enumerate() {
        let mut d = [0u8; 32];
        if let Some(16) =
            indicator::hash_digest(l.split(',').next().unwrap_or("").as_bytes(), &mut d)
        {
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            digests.insert(k, i as u32);
        }
    }
    let mut g = c.benchmark_group("md5_lookup");
    g.throughput(Throughput::Elements(md5_hits.len() as u64));
    g.bench_function("tracer", |b| b.iter(|| run(&set, Kind::Hash, &md5_hits)));
    g.bench_function("hashmap", |b| {
        b.iter(|| {
            let mut n = 0;
            for h in &md5_hits {
                let mut d = [0u8; 32];
                if let Some(16) = indicator::hash_digest(h.as_bytes(), &mut d) {
                    let mut k = [0u8; 16];
                    k.copy_from_slice(&d[..16]);
                    if let Some(v) = digests.get(&k) {
                        n += 1;
                        std::hint::black_box(v);
                    }
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
