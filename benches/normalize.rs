//! URL normalization: the shared normalizer vs a naive allocating one (lowercase the
//! whole string, strip a scheme and `www.` with string operations), the kind of code
//! the Python tool ran per request.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;

fn naive(url: &str) -> String {
    let lower = url.to_lowercase();
    let no_scheme = lower.split_once("://").map_or(lower.as_str(), |(_, r)| r);
    let no_frag = no_scheme.split('#').next().unwrap_or("");
    let no_www = no_frag.strip_prefix("www.").unwrap_or(no_frag);
    no_www.trim_end_matches('/').to_string()
}

fn bench(c: &mut Criterion) {
    let data = common::generate("normalize", 20_000, 0, 0);
    let urls = data.samples("url", true);
    let mut g = c.benchmark_group("normalize_url");
    g.throughput(Throughput::Elements(urls.len() as u64));
    g.bench_function("tracer", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for u in &urls {
                tracer::indicator::normalize_url(u.as_bytes(), &mut out);
                std::hint::black_box(&out);
            }
        })
    });
    g.bench_function("naive_string_ops", |b| {
        b.iter(|| {
            for u in &urls {
                std::hint::black_box(naive(u));
            }
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
