//! The bodies of the fuzz targets (`fuzz/`), here so the normal test run can replay
//! their corpus (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes, must never
//! panic, and checks what must hold whatever the input: answers keep their framing,
//! normalization is idempotent, a damaged index is an error or a working index.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::engine::{Engine, Snapshot, Sources};
use crate::feed::{self, Format, ReadOptions};
use crate::index::compile::{Compiler, FeedSpec};
use crate::index::{format, masks, Index, IndexSet, Scratch};
use crate::indicator::{self, Kind};
use crate::protocol::cybertrace::{self, Decoder, Frame, Limits, LineState, Progress, Responder};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// The demo feeds, served.
fn demo() -> Arc<Snapshot> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::load(Sources::demo(fixtures())).expect("the demo feeds load"))
        .current()
}

/// The demo feeds compiled into one index image.
fn demo_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut c = Compiler::new(false);
        for spec in &Sources::demo(fixtures()).feeds {
            c.add_feed(spec).expect("a demo feed compiles");
        }
        c.finish_to_vec().expect("the demo index builds")
    })
}

/// Bytes from a client, split into reads at sizes the input picks, through the
/// decoder and the answering of every line in small pieces.
pub fn cybertrace(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let snapshot = demo();
    let mut decoder = Decoder::new(96);
    let mut responder = Responder::new(Limits {
        max_hits: 3,
        max_hits_per_line: 7,
    });
    let mut state = LineState::default();
    let mut buf = Vec::new();
    let mut answer = |line: &[u8]| {
        // Pieces of at most about 150 bytes, "written" (moved to `whole`) in turn.
        let (mut out, mut whole) = (Vec::new(), Vec::new());
        state.reset();
        let mut pieces = 0;
        while responder.answer_part(&snapshot, line, &mut state, &mut out, 150, |_| {})
            != Progress::Done
        {
            assert!(!out.is_empty(), "a piece with nothing in it");
            whole.append(&mut out);
            pieces += 1;
            assert!(pieces < 10_000, "an answer that never ends");
        }
        whole.append(&mut out);
        check_answer(&whole);
    };
    for chunk in data.chunks(1 + split as usize % 48) {
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let (n, frame) = decoder.next(&buf[pos..]);
            pos += n;
            match frame {
                Some(Frame::Line(line)) => answer(line),
                Some(_) => {}
                None if n == 0 => break,
                None => {}
            }
        }
        buf.drain(..pos);
    }
    if let Some(Frame::Line(line)) = decoder.finish(&buf) {
        answer(line);
    }
}

/// An answer is hit lines, each `Category=…|MatchedIndicator=…`, then
/// `LookupFinished`: whatever the request held, nothing in it can break that.
fn check_answer(out: &[u8]) {
    let body = out
        .strip_suffix(cybertrace::FINISHED)
        .expect("every answer ends with LookupFinished");
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(!line.contains(&b'\r'), "a CR inside a hit line");
        assert!(
            cybertrace::parse_hit(line).is_some(),
            "not a hit line: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// A feed file's bytes. The first byte picks the format (bits 0–1), the key field
/// (2–4), the kind (5–6) and whether records sit at `response.Attribute` (7); the
/// second allows broad masks (bit 0). The rest is read, compiled into an index,
/// opened and looked up.
pub fn feed(data: &[u8]) {
    let [pick, flags, body @ ..] = data else {
        return;
    };
    let (pick, flags) = (*pick as usize, *flags);
    let format = Format::ALL[pick % 4];
    let key = [
        "ioc",
        "mask",
        "MD5",
        "ip",
        "domain",
        "files.MD5",
        "value",
        "indicator",
    ][(pick / 4) % 8];
    let mut spec = FeedSpec::new("fuzz-input", key);
    spec.records = (pick & 0x80 != 0).then(|| "response.Attribute".to_string());
    spec.kind = match (pick / 32) % 4 {
        0 => None,
        1 => Some(Kind::Url),
        2 => Some(Kind::Domain),
        _ => Some(Kind::Ip),
    };
    spec.format = Some(format);
    let _ = feed::read_from(
        Path::new("fuzz-input"),
        body,
        format,
        &ReadOptions {
            format: Some(format),
            key: key.to_string(),
            records: spec.records.clone(),
        },
        &mut CountingSink,
    );
    let mut compiler = Compiler::new(false).allow_broad_masks(flags & 1 != 0);
    if compiler.add_feed_from(&spec, format, body).is_err() {
        return;
    }
    let Ok(image) = compiler.finish_to_vec() else {
        return;
    };
    let index = Index::from_bytes(Path::new("fuzz-index"), &image)
        .expect("an index the compiler wrote opens");
    look_up_samples(&IndexSet::new(vec![index]));
}

struct CountingSink;

impl feed::Sink for CountingSink {
    fn record(&mut self, r: feed::RawRecord<'_>) -> Result<Option<String>, feed::FeedError> {
        for (k, v) in r.fields.iter() {
            std::hint::black_box((k, v));
        }
        Ok(None)
    }
    fn skip(&mut self, _: feed::Skip) -> Result<(), feed::FeedError> {
        Ok(())
    }
}

/// Edits (3 bytes each: offset, offset, xor) to a valid index image, whose checksums
/// are then recomputed, so the damage reaches the section parsers: opening must
/// fail cleanly or give an index that answers.
pub fn index(data: &[u8]) {
    let mut image = demo_image().to_vec();
    for edit in data.chunks_exact(3) {
        let at = u16::from_le_bytes([edit[0], edit[1]]) as usize % image.len();
        image[at] ^= edit[2];
    }
    format::reseal(&mut image);
    if let Ok(index) = Index::from_bytes(Path::new("fuzz-index"), &image) {
        look_up_samples(&IndexSet::new(vec![index]));
    }
}

fn look_up_samples(set: &IndexSet) {
    let mut scratch = Scratch::default();
    let mut hits = Vec::new();
    for (kind, value) in [
        (Kind::Url, &b"http://login.phish-bank.com/x/y"[..]),
        (Kind::Url, b"gmer.com"),
        (Kind::Url, b"discord-nitro.gift/claim"),
        (Kind::Domain, b"a.b.malvertising.example"),
        (Kind::Ip, b"10.13.5.5"),
        (Kind::Ip, b"2001:db8:bad:1::5"),
        (Kind::Hash, b"44d88612fea8a8f36de82e1278abb02f"),
        (Kind::Raw, b"x"),
    ] {
        hits.clear();
        set.lookup(kind, value, &mut scratch, 32, &mut hits);
        for h in &hits {
            std::hint::black_box(set.record(*h));
        }
    }
}

/// A URL, mask, domain, address or digest: the normalizers never panic, URL
/// normalization is idempotent, and a mask matches what its own normal form names.
pub fn url(data: &[u8]) {
    let mut once = Vec::new();
    indicator::normalize_url(data, &mut once);
    let mut twice = Vec::new();
    indicator::normalize_url(&once, &mut twice);
    assert_eq!(once, twice, "URL normalization is not idempotent");
    let mut domain = Vec::new();
    let _ = indicator::normalize_domain(data, &mut domain);
    if let Some(range) = indicator::parse_ip_entry(data) {
        let blocks = indicator::range_to_cidrs(range);
        assert!(!blocks.is_empty() && blocks.len() <= 256);
    }
    let _ = indicator::detect(data);
    let _ = indicator::hash_digest(data, &mut [0u8; 32]);
    let _ = masks::is_broad(&once);
    let _ = masks::anchor(&once);
    if !once.contains(&b'*') {
        assert!(
            masks::matches(&once, &once),
            "a literal does not match itself"
        );
    }
}
