//! A damaged index file is an error naming the file and the reason, never a crash.

use std::path::Path;

use tracer::index::{Index, IndexError};

use crate::util::*;

fn demo_index(dir: &TempDir) -> Vec<u8> {
    let path = compile_demo(dir).remove(1);
    std::fs::read(path).expect("read index")
}

fn open_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> Result<Index, IndexError> {
    let p = dir.path(name);
    std::fs::write(&p, bytes).expect("write");
    Index::open(&p)
}

#[test]
fn truncated_files_are_refused_at_every_offset() {
    let dir = TempDir::new("trunc");
    let bytes = demo_index(&dir);
    for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let err = open_bytes(&dir, "t.tracer", &bytes[..cut])
            .err()
            .unwrap_or_else(|| panic!("cut at {cut} opened"));
        let msg = err.to_string();
        assert!(msg.contains("t.tracer"), "{msg}");
        assert!(
            matches!(err, IndexError::Truncated { .. } | IndexError::Magic { .. }),
            "cut at {cut}: {msg}"
        );
    }
}

#[test]
fn flipped_bytes_are_caught() {
    let dir = TempDir::new("flip");
    let bytes = demo_index(&dir);
    for at in (0..bytes.len()).step_by(5) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        match open_bytes(&dir, "f.tracer", &bad) {
            Ok(_) => panic!("flip at {at} opened"),
            Err(e) => assert!(e.to_string().contains("f.tracer"), "{e}"),
        }
    }
}

#[test]
fn wrong_magic_and_future_version_say_so() {
    let dir = TempDir::new("magic");
    let bytes = demo_index(&dir);
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(b"NOTINDEX");
    assert!(matches!(
        open_bytes(&dir, "m.tracer", &bad),
        Err(IndexError::Magic { .. })
    ));
    let mut future = bytes.clone();
    let next = tracer::index::format::FORMAT_VERSION + 1;
    future[8..12].copy_from_slice(&next.to_le_bytes());
    match open_bytes(&dir, "v.tracer", &future) {
        Err(IndexError::Version {
            expected: tracer::index::format::FORMAT_VERSION,
            found,
            ..
        }) if found == next => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("future version opened"),
    }
    // A feed file given where an index belongs.
    let csv = fixtures().join("demo_ioc.csv");
    assert!(matches!(Index::open(&csv), Err(IndexError::Magic { .. })));
    assert!(matches!(
        Index::open(Path::new("/nonexistent/x.tracer")),
        Err(IndexError::Io { .. })
    ));
}

#[test]
fn the_binary_reports_a_damaged_index_and_exits_non_zero() {
    let dir = TempDir::new("bin");
    let bytes = demo_index(&dir);
    let p = dir.path("damaged.tracer");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    let o = tracer(&["lookup", "-l", p.to_str().expect("path"), "url=gmer.com"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("damaged.tracer") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
