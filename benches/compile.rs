//! Compile throughput: feed → index image in memory, beside the naive way of loading
//! a feed (parse the whole JSON, put every record in a `HashMap` by key: what the
//! Python tool's pickled dict amounted to).

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracer::index::compile::{Compiler, FeedSpec};
use tracer::indicator::Kind;

mod common;

fn bench(c: &mut Criterion) {
    let data = common::generate("compile", 100_000, 0, 0);
    let feed = data.dir.join("urls.json");
    let mut g = c.benchmark_group("compile_100k_url_records");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("tracer_compile", |b| {
        b.iter(|| {
            let mut c = Compiler::new(false);
            let mut spec = FeedSpec::new(&feed, "mask");
            spec.kind = Some(Kind::Url);
            c.add_feed(&spec).expect("compile");
            c.finish_to_vec().expect("finish").len()
        })
    });
    g.bench_function("naive_json_to_hashmap", |b| {
        b.iter(|| {
            let v: Vec<serde_json::Value> =
                serde_json::from_slice(&std::fs::read(&feed).expect("read")).expect("json");
            let mut m: HashMap<String, serde_json::Value> = HashMap::new();
            for r in v {
                if let Some(k) = r["mask"].as_str() {
                    m.insert(k.to_string(), r);
                }
            }
            m.len()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
