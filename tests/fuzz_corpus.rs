//! Replays every input kept in `fuzz/seeds/<target>/` (inputs made from `fixtures/`,
//! and every crash or timeout the fuzzers found, as regressions) through the same
//! target bodies the fuzzers run, so a regression shows in the normal test run. A
//! local `fuzz/corpus/<target>/`, grown by fuzzing and not committed, is replayed too
//! when present.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = root.join("seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|e| e.expect("seed entry").path())
        .collect();
    assert!(!files.is_empty(), "no seeds for {target}");
    if let Ok(local) = std::fs::read_dir(root.join("corpus").join(target)) {
        files.extend(local.flatten().map(|e| e.path()));
    }
    for path in files {
        // A file the fuzzer removes meanwhile (it minimizes its corpus) is skipped.
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
}

#[test]
fn cybertrace_corpus() {
    replay("cybertrace", tracer::fuzzing::cybertrace);
}

#[test]
fn feed_corpus() {
    replay("feed", tracer::fuzzing::feed);
}

#[test]
fn index_corpus() {
    replay("index", tracer::fuzzing::index);
}

#[test]
fn url_corpus() {
    replay("url", tracer::fuzzing::url);
}
