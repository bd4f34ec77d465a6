//! Data shared by the benches: feeds written by the project's own generator into a
//! temp dir, and indexes compiled from them in memory.

#![allow(dead_code)]

use std::path::PathBuf;

use tracer::generate::Options;
use tracer::index::compile::{Compiler, FeedSpec};
use tracer::index::{Index, IndexSet};
use tracer::indicator::Kind;

pub struct Data {
    pub dir: PathBuf,
}

/// Generate feeds of the given sizes (deterministic, seed 7).
pub fn generate(tag: &str, urls: usize, hashes: usize, ips: usize) -> Data {
    let dir = std::env::temp_dir().join(format!("tracer-bench-{tag}-{}", std::process::id()));
    let args = Options {
        out: dir.clone(),
        urls,
        hashes,
        ips,
        domains: 1000,
        seed: 7,
        mixed: 0,
    };
    tracer::generate::run(&args).expect("generate bench feeds");
    Data { dir }
}

impl Data {
    pub fn index(&self) -> IndexSet {
        let mut c = Compiler::new(false);
        for (file, key, kind) in [
            ("urls.json", "mask", Kind::Url),
            ("hashes.csv", "md5", Kind::Hash),
            ("ips.csv", "ip", Kind::Ip),
            ("domains.txt", "domain", Kind::Domain),
        ] {
            let mut spec = FeedSpec::new(self.dir.join(file), key);
            spec.kind = Some(kind);
            c.add_feed(&spec).expect("compile bench feed");
        }
        let image = c.finish_to_vec().expect("finish");
        IndexSet::new(vec![Index::from_bytes(
            std::path::Path::new("bench"),
            &image,
        )
        .expect("open")])
    }

    /// `key=value` samples of the given key from the hit or miss workload.
    pub fn samples(&self, key: &str, hits: bool) -> Vec<String> {
        let file = self.dir.join(if hits { "hits.txt" } else { "misses.txt" });
        tracer::generate::read_workload(&file)
            .expect("workload")
            .into_iter()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .collect()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
