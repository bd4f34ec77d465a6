//! What an operator, a hostile client or an odd kernel can do to a running server:
//! two servers on one port, index files rewritten under the server, a bug that
//! panics, a line that asks for a gigantic answer, a shutdown under load.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// A `serve` that must refuse to start: its exit code and stderr (fails if it runs
/// for 20 s).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(&*BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`tracer {}` started instead of refusing", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gmer_as_sent() -> String {
    GMER.replace(
        "MatchedIndicator=gmer.com",
        "MatchedIndicator=https://www.GMER.com/",
    )
}

#[test]
fn a_second_server_on_the_same_port_refuses_to_start() {
    let addr = format!("127.0.0.1:{}", free_port());
    let first = Server::start_on(any_io(), &addr, &[]);
    let dir = TempDir::new("second");
    let other = dir.path("other.csv");
    std::fs::write(&other, "ioc,context\ngmer.com,the_other_feed\n").expect("write");
    let (code, err) = refused(&[
        "serve",
        "--listen",
        &addr,
        "-f",
        other.to_str().expect("path"),
        "-k",
        "ioc",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("already served by another tracer")
            && err.contains(&format!("pid {}", first.pid()))
            && err.contains("--takeover"),
        "{err}"
    );
    // Every fresh connection still reaches the first server's feeds.
    for _ in 0..10 {
        assert_eq!(
            exchange(&first, b"url=https://www.GMER.com/\n", 1),
            gmer_as_sent()
        );
    }
    // A port held by a process that is not a tracer is refused too.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = foreign.local_addr().expect("addr").to_string();
    let (code, err) = refused(&["serve", "--listen", &taken]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("another process already listens"), "{err}");
}

#[test]
fn takeover_hands_the_port_over_and_the_old_server_drains_and_exits() {
    let dir = TempDir::new("takeover");
    let a = compile_csv(&dir, "a", "from_A");
    let b = compile_csv(&dir, "b", "from_B");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut old = Server::start_on(any_io(), &addr, &["-l", a.to_str().expect("path")]);
    let mut held = old.connect();
    held.write_all(b"url=reload.example\n").expect("send");
    assert_eq!(read_answers(&mut held, 1), reload_answer("from_A"));

    let new = Server::start_on(
        any_io(),
        &addr,
        &["--takeover", "-l", b.to_str().expect("path")],
    );
    old.wait_log("handing the port over");
    assert_eq!(
        old.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        old.log()
    );
    // The old server closed its idle connection cleanly, between answers.
    assert!(read_to_close(&mut held).is_empty());
    for _ in 0..10 {
        assert_eq!(
            exchange(&new, b"url=reload.example\n", 1),
            reload_answer("from_B")
        );
    }
    new.wait_log("released port");
    // Now the new server holds the port: a third one is refused.
    let (code, err) = refused(&["serve", "--listen", &addr]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", new.pid())), "{err}");
}

/// Clients that keep asking `url=reload.example` and fail on any answer that is not
/// exactly index A's or index B's.
struct Checker {
    stop: Arc<AtomicBool>,
    answers: Arc<AtomicUsize>,
    from_b: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Checker {
    fn start(srv: &Server, clients: usize) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(AtomicUsize::new(0));
        let from_b = Arc::new(AtomicUsize::new(0));
        let (ans_a, ans_b) = (reload_answer("from_A"), reload_answer("from_B"));
        let threads = (0..clients)
            .map(|_| {
                let mut s = srv.connect();
                let (stop, answers, from_b) = (stop.clone(), answers.clone(), from_b.clone());
                let (ans_a, ans_b) = (ans_a.clone(), ans_b.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        s.write_all("url=reload.example\n".repeat(20).as_bytes())
                            .expect("send");
                        let got = read_answers(&mut s, 20);
                        let mut rest = got.as_str();
                        while !rest.is_empty() {
                            if let Some(r) = rest.strip_prefix(ans_a.as_str()) {
                                rest = r;
                            } else if let Some(r) = rest.strip_prefix(ans_b.as_str()) {
                                rest = r;
                                from_b.fetch_add(1, Ordering::Relaxed);
                            } else {
                                panic!("an answer from neither index: {rest:.300}");
                            }
                            answers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Checker {
            stop,
            answers,
            from_b,
            threads,
        }
    }

    /// Wait until answers from B start (`true`) or stop (`false`) arriving.
    fn wait_for(&self, from_b: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b0 = self.from_b.load(Ordering::Relaxed);
            let n0 = self.answers.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            let db = self.from_b.load(Ordering::Relaxed) - b0;
            let dn = self.answers.load(Ordering::Relaxed) - n0;
            if dn > 0 && (db == dn) == from_b {
                return;
            }
            assert!(Instant::now() < deadline, "answers never switched");
        }
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a client saw a wrong answer");
        }
        self.answers.load(Ordering::Relaxed)
    }
}

/// Rewrite the served index file in every way an operator does, under load; with
/// `--watch` the server notices by itself, else it gets SIGHUP.
fn index_rewritten_in_place(io: &str, extra: &[&str]) {
    let watch = extra.contains(&"--watch");
    let dir = TempDir::new("inplace");
    let a = compile_csv(&dir, "a", "from_A");
    let b = compile_csv(&dir, "b", "from_B");
    let served = dir.path("served.tracer");
    std::fs::copy(&a, &served).expect("copy");
    let mut args = vec!["-l", served.to_str().expect("path")];
    args.extend_from_slice(extra);
    let mut srv = Server::start(io, &args);
    let checker = Checker::start(&srv, 4);
    let reload = |srv: &Server| {
        if !watch {
            srv.signal("HUP");
        }
    };
    std::thread::sleep(Duration::from_millis(300));

    // `cp b served`: the same file, rewritten in place.
    std::fs::copy(&b, &served).expect("cp over the served file");
    reload(&srv);
    checker.wait_for(true);

    // `truncate -s 1000 served`: the reload fails, B goes on.
    let failed = srv.log_count("reload failed");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&served)
        .and_then(|f| f.set_len(1000))
        .expect("truncate");
    reload(&srv);
    srv.wait_log_more("reload failed", failed);
    checker.wait_for(true);

    // Deleted: the reload fails, B goes on.
    let failed = srv.log_count("reload failed");
    std::fs::remove_file(&served).expect("rm");
    reload(&srv);
    srv.wait_log_more("reload failed", failed);
    checker.wait_for(true);

    // Recreated (a new file): served again.
    std::fs::copy(&a, &served).expect("recreate");
    reload(&srv);
    checker.wait_for(false);

    let answers = checker.finish();
    assert!(answers > 100, "{io} {extra:?}: only {answers} answers");
    assert!(
        !srv.exited(),
        "{io} {extra:?}: the server died:\n{}",
        srv.log()
    );
    assert_eq!(srv.stop(), Some(0), "{io} {extra:?}");
}

#[test]
fn an_index_rewritten_in_place_is_never_served_half_old_half_new() {
    for &io in io_modes() {
        index_rewritten_in_place(io, &[]);
        index_rewritten_in_place(io, &["--index-mode", "map"]);
    }
    index_rewritten_in_place(any_io(), &["--watch"]);
}

#[test]
fn a_panicking_connection_is_closed_alone_and_counted() {
    for &io in io_modes() {
        let srv = Server::start(io, &["--max-connections", "3", "--metrics", "127.0.0.1:0"]);
        let mut keep = srv.connect();
        keep.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut keep, 1), GMER, "{io}");
        for _ in 0..10 {
            let mut s = srv.connect();
            s.write_all(b"url=gmer.com\ntracer-fault:panic\n")
                .expect("send");
            // Closed (whatever it had answered before the panic was not written).
            let _ = read_to_close(&mut s);
        }
        // Each panicked connection is counted, and gives its place back, as its task
        // ends: a moment after its client sees the close.
        let settled = |b: &str| {
            b.contains("tracer_errors_total{reason=\"panic\"} 10")
                && b.contains("tracer_connections_open 1\n")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut body = srv.metrics();
        while !settled(&body) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            body = srv.metrics();
        }
        assert!(settled(&body), "{io}: {body}");
        // The connection counter did not leak: two more fit beside `keep` (max 3).
        let (mut x, mut y) = (srv.connect(), srv.connect());
        for s in [&mut x, &mut y, &mut keep] {
            s.write_all(b"url=gmer.com\n").expect("send");
            assert_eq!(read_answers(s, 1), GMER, "{io}");
        }
        srv.wait_log("panic: ");
        srv.wait_log("a panic while answering this connection");
    }
}

/// A feed of 32 records for one host, 1 KB of context each.
fn big_feed(dir: &TempDir) -> std::path::PathBuf {
    let feed = dir.path("big.csv");
    let mut text = String::from("ioc,context\n");
    for i in 0..32 {
        text.push_str(&format!("bh.example,{i}-{}\n", "x".repeat(1000)));
    }
    std::fs::write(&feed, text).expect("write");
    feed
}

#[test]
fn lines_asking_for_huge_answers_keep_memory_bounded() {
    // 4,000 tokens for that host in one line under 64 KiB: 128,000 hits, 128 MB of
    // answer if it were built whole.
    let line = format!("{}\n", vec!["url=bh.example"; 4000].join("|"));
    assert!(line.len() < 64 * 1024);
    for &io in io_modes() {
        let dir = TempDir::new("huge");
        let feed = big_feed(&dir);
        let srv = Server::start(io, &["-f", feed.to_str().expect("path"), "-k", "ioc"]);
        let before = srv.rss_kib();
        // Twenty clients send the line and never read.
        let idle: Vec<_> = (0..20)
            .map(|_| {
                let mut s = srv.connect();
                s.write_all(line.as_bytes()).expect("send");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let grown = srv.rss_kib().saturating_sub(before);
        assert!(grown < 48 * 1024, "{io}: RSS grew by {grown} KiB");
        // A client that reads gets --max-hits-per-line (1,024) hits, then the end.
        let mut s = srv.connect();
        s.write_all(line.as_bytes()).expect("send");
        let got = read_answers(&mut s, 1);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 1025, "{io}");
        assert!(
            lines[1023].starts_with("Category=big_"),
            "{io}: {}",
            lines[1023]
        );
        assert_eq!(lines[1024], "LookupFinished", "{io}");
        // And the connection goes on.
        s.write_all(b"url=nothing.example\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), MISS, "{io}");
        srv.wait_log("--max-hits-per-line");
        drop(idle);
    }
}

#[test]
fn sigterm_under_continuous_load_closes_between_answers_well_before_the_cap() {
    // (Also: the drain begins only once the listeners are closed.)
    for &io in io_modes() {
        let mut srv = Server::start(io, &["--drain-timeout", "20"]);
        let started = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let mut s = srv.connect();
                let started = started.clone();
                let addr = srv.addr;
                std::thread::spawn(move || {
                    // KUMA's way: one request in flight, the next as soon as the answer
                    // is in; a client that sees the connection end stops sending.
                    let mut answered = 0;
                    let mut buf = [0u8; 4096];
                    loop {
                        s.write_all(b"url=gmer.com\n").expect("send");
                        let mut got = Vec::new();
                        while !got.ends_with(b"LookupFinished\n") {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    return (
                                        answered,
                                        Some(String::from_utf8_lossy(&got).into_owned()),
                                    )
                                }
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        assert_eq!(String::from_utf8_lossy(&got), GMER);
                        answered += 1;
                        if answered == 50 {
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                        // Did the end of the connection come with that answer?
                        s.set_nonblocking(true).expect("nonblocking");
                        let peeked = s.peek(&mut buf[..1]);
                        s.set_nonblocking(false).expect("blocking");
                        if let Ok(0) = peeked {
                            // Every listener closed before any connection was: the
                            // client's reconnect is refused (a balancer would send it
                            // to another replica), never taken in to be closed again.
                            let again = std::net::TcpStream::connect(addr);
                            assert!(again.is_err(), "reconnect accepted during the drain");
                            return (answered, None);
                        }
                    }
                })
            })
            .collect();
        while started.load(Ordering::Relaxed) < 8 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        let signalled = Instant::now();
        srv.signal("TERM");
        let code = srv.wait_exit(Duration::from_secs(25));
        let took = signalled.elapsed();
        assert_eq!(code, Some(0), "{io}: {}", srv.log());
        assert!(
            took < Duration::from_secs(5),
            "{io}: exit took {took:?} (cap 20 s)"
        );
        for (i, c) in clients.into_iter().enumerate() {
            let (answered, unanswered) = c.join().expect("client");
            assert!(answered >= 50, "{io}: client {i}");
            // The close came between answers, with the last one: never a request
            // sent into a closing connection, never half an answer.
            assert_eq!(
                unanswered, None,
                "{io}: client {i} after {answered} answers"
            );
        }
        let log = srv.log();
        assert!(
            log.contains("drained: 8 connections closed at an answer boundary"),
            "{io}: {log}"
        );
    }
}

#[test]
fn broad_masks_are_skipped_at_compile_unless_allowed() {
    let dir = TempDir::new("broad");
    let feed = dir.path("adblock.json");
    std::fs::write(
        &feed,
        r#"[{"mask":"*.evil.example/*"},{"mask":"*"},{"mask":"*/*"},{"mask":"/*"},
           {"mask":"scheme:/*"},{"mask":"http://*.*/*"},{"mask":"evil2.example/*"}]"#,
    )
    .expect("write");
    let out = dir.path("adblock.tracer");
    let compile = |extra: &[&str]| {
        let mut args = vec![
            "compile",
            feed.to_str().expect("path"),
            "-k",
            "mask",
            "--kind",
            "url",
            "-o",
            out.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let o = tracer(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = compile(&[]);
    let (summary, err) = (stdout(&o), stderr(&o));
    assert!(summary.contains("records    2"), "{summary}");
    assert!(summary.contains("skipped    5"), "{summary}");
    assert!(
        summary.contains("5  URL mask would match every URL"),
        "{summary}"
    );
    for record in 2..=6 {
        assert!(
            err.contains(&format!("adblock.json: record {record} ")),
            "record {record}: {err}"
        );
    }
    let lookup = |url: &str| stdout(&tracer(&["lookup", "-l", out.to_str().expect("path"), url]));
    assert_eq!(lookup("url=http://innocent.example/a"), MISS);
    assert_eq!(lookup("domain=innocent.example"), MISS);
    assert!(lookup("url=http://a.evil.example/x").contains("Category=adblock|"));

    compile(&["--allow-broad-masks"]);
    assert!(lookup("url=http://innocent.example/a").contains("Category=adblock|"));
}

#[test]
fn text_feeds_compile_without_a_key_and_inspect_shows_a_date() {
    let dir = TempDir::new("textkey");
    let feed = dir.path("hosts.txt");
    std::fs::write(&feed, "# bad hosts\nbad.example\n").expect("write");
    let out = dir.path("hosts.tracer");
    let o = tracer(&[
        "compile",
        feed.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tracer(&[
        "lookup",
        "-l",
        out.to_str().expect("path"),
        "url=bad.example",
    ]);
    assert_eq!(
        stdout(&o),
        "Category=hosts|MatchedIndicator=bad.example|indicator=bad.example\nLookupFinished\n"
    );
    // Other formats still need the field named.
    let csv = dir.path("x.csv");
    std::fs::write(&csv, "ioc,context\nbad.example,x\n").expect("write");
    let o = tracer(&["compile", csv.to_str().expect("path")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs its indicator field named (-k FIELD)"),
        "{}",
        stderr(&o)
    );

    let o = tracer(&["inspect", out.to_str().expect("path")]);
    let text = stdout(&o);
    let built = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("built"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{text}"));
    // RFC 3339, e.g. 2026-11-28T09:30:00Z
    let b = built.as_bytes();
    assert!(
        built.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z',
        "{built}"
    );
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes_and_json_logs_are_json() {
    let dir = TempDir::new("logs");
    let feed = dir.path("bad.txt");
    std::fs::write(&feed, "*\nok.example\n").expect("write");
    let out = dir.path("bad.tracer");
    let o = tracer(&[
        "compile",
        feed.to_str().expect("path"),
        "--kind",
        "url",
        "-o",
        out.to_str().expect("path"),
    ]);
    let err = stderr(&o);
    assert!(err.contains("WARN") && !err.contains('\u{1b}'), "{err:?}");
    let o = tracer(&[
        "--log-format",
        "json",
        "compile",
        feed.to_str().expect("path"),
        "--kind",
        "url",
        "-o",
        out.to_str().expect("path"),
    ]);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
}
