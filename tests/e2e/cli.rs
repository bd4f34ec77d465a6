//! `tracer compile`, `lookup` and `inspect` through the binary.

use crate::util::*;

#[test]
fn compiled_demo_feeds_give_the_expected_answers() {
    let dir = TempDir::new("expected");
    let indexes = compile_demo(&dir);
    let cases = expected_answers();
    assert!(cases.len() >= 20, "expected.txt has {} cases", cases.len());
    for (request, answer) in cases {
        let mut args: Vec<String> = vec!["lookup".into()];
        for i in &indexes {
            args.push("-l".into());
            args.push(i.display().to_string());
        }
        args.push(request.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = tracer(&argv);
        assert!(o.status.success(), "{request}: {}", stderr(&o));
        assert_eq!(stdout(&o), answer, "request {request}");
    }
}

#[test]
fn lookup_straight_from_a_feed_matches_the_compiled_index() {
    let feed = fixtures().join("demo_ioc.csv");
    let o = tracer(&[
        "lookup",
        "-f",
        feed.to_str().expect("path"),
        "-k",
        "ioc",
        "url=https://www.GMER.com/",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Category=demo_ioc|MatchedIndicator=https://www.GMER.com/|ioc=gmer.com|context=bad_URL\nLookupFinished\n"
    );
}

#[test]
fn compile_reports_skipped_rows_with_file_and_line() {
    let dir = TempDir::new("skips");
    let feed = dir.path("ips.csv");
    std::fs::write(
        &feed,
        "ip,threat\n10.0.0.1,a\nnot-an-ip,b\n10.0.0.2\n10.0.0.3,d\n",
    )
    .expect("write");
    let out = dir.path("ips.tracer");
    let o = tracer(&[
        "compile",
        feed.to_str().expect("path"),
        "-k",
        "ip",
        "--kind",
        "ip",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ips.csv: line 3") && err.contains("not-an-ip"),
        "{err}"
    );
    assert!(err.contains("ips.csv: line 4"), "{err}");
    let summary = stdout(&o);
    assert!(summary.contains("records    2"), "{summary}");
    assert!(summary.contains("skipped    2"), "{summary}");
    assert!(
        summary.contains("1  not an IP address, CIDR or range"),
        "{summary}"
    );

    let strict = tracer(&[
        "compile",
        feed.to_str().expect("path"),
        "-k",
        "ip",
        "--kind",
        "ip",
        "--strict",
        "-o",
        dir.path("s.tracer").to_str().expect("path"),
    ]);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("ips.csv: line 3"),
        "{}",
        stderr(&strict)
    );
    assert!(
        !dir.path("s.tracer").exists(),
        "a failed compile must not leave an index"
    );
}

#[test]
fn legacy_dump_spelling_compiles_next_to_the_feed() {
    let dir = TempDir::new("legacy");
    let feed = dir.path("list.txt");
    std::fs::write(&feed, "evil.example\n").expect("write");
    let o = tracer(&["-d", feed.to_str().expect("path"), "-k", "host"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path("list.txt.tracer").exists());
}

#[test]
fn inspect_shows_feeds_and_counts() {
    let dir = TempDir::new("inspect");
    let indexes = compile_demo(&dir);
    let o = tracer(&["inspect", indexes[1].to_str().expect("path")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("format version  3"), "{text}");
    assert!(text.contains("Phishing_URL_Data_Feed"), "{text}");
    // 4 masks, plus the bare variants of the two ending in `/*` (SPEC §3).
    assert!(text.contains("mask patterns   6"), "{text}");
}

#[test]
fn raw_feeds_match_the_value_as_sent_from_any_key() {
    let dir = TempDir::new("raw");
    let feed = dir.path("hosts.txt");
    std::fs::write(&feed, "CORP\\PC-0042 (Finance)\n").expect("write");
    let f = feed.to_str().expect("path");
    let o = tracer(&[
        "lookup",
        "-f",
        f,
        "-k",
        "asset",
        "--kind",
        "raw",
        "url=CORP\\PC-0042 (Finance)",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Category=hosts|MatchedIndicator=CORP\\PC-0042 (Finance)|asset=CORP\\PC-0042 (Finance)\nLookupFinished\n"
    );
    // Raw means no normalization: a different case is a different value.
    let o = tracer(&[
        "lookup",
        "-f",
        f,
        "-k",
        "asset",
        "--kind",
        "raw",
        "url=corp\\pc-0042 (finance)",
    ]);
    assert_eq!(stdout(&o), "LookupFinished\n");
}
