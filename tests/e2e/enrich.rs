//! Enrichers over real sockets: a MISP-like HTTP upstream (`upstream.rs`) and real
//! helper processes (the bundled Python template, and a Rust helper that misbehaves
//! on request), configured through real config files.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::upstream::{Mode, Upstream, KNOWN_DOMAIN, KNOWN_MD5};
use crate::util::*;

const KEY: &str = "test-misp-key-0f3a";

/// Write a config file: the demo IOC feed, then `rest`.
fn config(dir: &TempDir, rest: &str) -> PathBuf {
    let path = dir.path("tracer.toml");
    let feed = fixtures().join("demo_ioc.csv");
    std::fs::write(
        &path,
        format!(
            "[[feed]]\npath = {:?}\nkey = \"ioc\"\n\n{rest}",
            feed.display().to_string()
        ),
    )
    .expect("write config");
    path
}

fn misp(upstream: &Upstream, extra: &str) -> String {
    format!(
        "[[enricher]]\nname = \"misp\"\ntype = \"misp\"\nurl = {:?}\nkey = \"${{TRACER_TEST_MISP_KEY}}\"\n{extra}\n",
        upstream.url()
    )
}

fn serve(cfg: &std::path::Path) -> Server {
    serve_with(cfg, &[])
}

fn serve_with(cfg: &std::path::Path, args: &[&str]) -> Server {
    let mut all = vec!["--config", cfg.to_str().expect("path")];
    all.extend_from_slice(args);
    Server::start_env(
        any_io(),
        "127.0.0.1:0",
        &all,
        &[("TRACER_TEST_MISP_KEY", KEY)],
    )
}

fn ask(srv: &Server, line: &str) -> String {
    exchange(srv, format!("{line}\n").as_bytes(), 1)
}

#[test]
fn feed_and_enricher_hits_share_one_answer_in_order() {
    let up = Upstream::start(KEY);
    let dir = TempDir::new("enrich-order");
    let cfg = config(
        &dir,
        &format!(
            "[[enricher]]\nname = \"decoder\"\ntype = \"urldecode\"\n\n{}",
            misp(&up, "")
        ),
    );
    let srv = serve(&cfg);
    let got = ask(
        &srv,
        &format!("hash=d41d8cd98f00b204e9800998ecf8427e|url=http://evil.example/%61|hash={KNOWN_MD5}|domain={KNOWN_DOMAIN}"),
    );
    let want = format!(
        "Category=demo_ioc|MatchedIndicator=d41d8cd98f00b204e9800998ecf8427e|ioc=d41d8cd98f00b204e9800998ecf8427e|context=empty_file_md5\n\
         Category=decoder|MatchedIndicator=http://evil.example/%61|decodedURL=http://evil.example/a\n\
         Category=misp|MatchedIndicator={KNOWN_MD5}|type=md5|category=Payload delivery|value={KNOWN_MD5}|to_ids=true|event_id=17|event_info=Campaign X: loader|tags=tlp:amber,malware:loader\n\
         Category=misp_2|MatchedIndicator={KNOWN_MD5}|type=md5|category=Artifacts dropped|value={KNOWN_MD5}|to_ids=false|event_id=21|event_info=Sandbox run %7C 2026-11|tags=\n\
         Category=misp_3|MatchedIndicator={KNOWN_DOMAIN}|type=domain|category=Network activity|value={KNOWN_DOMAIN}|to_ids=true|event_id=30|event_info=Phishing kit|tags=tlp:green\n\
         LookupFinished\n"
    );
    assert_eq!(got, want);
    assert_eq!(up.unauthorized(), 0, "the key came from the environment");
    // `tracer lookup --config` prints the same bytes.
    let o = std::process::Command::new(&*BIN)
        .args(["lookup", "--config", cfg.to_str().expect("path")])
        .arg(format!("hash=d41d8cd98f00b204e9800998ecf8427e|url=http://evil.example/%61|hash={KNOWN_MD5}|domain={KNOWN_DOMAIN}"))
        .env("TRACER_TEST_MISP_KEY", KEY)
        .output()
        .expect("lookup");
    assert_eq!(stdout(&o), want, "{}", stderr(&o));
}

#[test]
fn one_upstream_call_for_repeated_and_concurrent_lookups() {
    let up = Upstream::start(KEY);
    let dir = TempDir::new("enrich-cache");
    let srv = serve(&config(&dir, &misp(&up, "kinds = [\"hash\", \"domain\"]")));
    for _ in 0..10 {
        assert!(ask(&srv, &format!("hash={KNOWN_MD5}")).contains("Category=misp_2|"));
    }
    assert_eq!(up.calls(), 1, "ten lookups of one value: one call");
    // Fifty clients at once, on both worker threads, asking one value not yet known.
    up.set(Mode::Slow(Duration::from_millis(300)));
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let mut s = srv.connect();
            std::thread::spawn(move || {
                s.write_all(format!("domain={KNOWN_DOMAIN}\n").as_bytes())
                    .expect("send");
                read_answers(&mut s, 1)
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().expect("client").starts_with("Category=misp|"));
    }
    assert_eq!(
        up.calls(),
        2,
        "fifty concurrent lookups of one value: one call"
    );
}

#[test]
fn nothing_found_is_cached_for_the_negative_ttl() {
    let up = Upstream::start(KEY);
    let dir = TempDir::new("enrich-negative");
    let srv = serve(&config(
        &dir,
        &misp(&up, "negative_ttl = \"1s\"\nttl = \"1h\""),
    ));
    assert_eq!(ask(&srv, "hash=00000000000000000000000000000001"), MISS);
    assert_eq!(ask(&srv, "hash=00000000000000000000000000000001"), MISS);
    assert_eq!(up.calls(), 1);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(ask(&srv, "hash=00000000000000000000000000000001"), MISS);
    assert_eq!(
        up.calls(),
        2,
        "asked again once the negative answer expired"
    );
    // A found answer stays for its (long) ttl.
    ask(&srv, &format!("hash={KNOWN_MD5}"));
    std::thread::sleep(Duration::from_millis(1300));
    ask(&srv, &format!("hash={KNOWN_MD5}"));
    assert_eq!(up.calls(), 3);
}

#[test]
fn a_slow_upstream_is_answered_at_the_timeout_with_the_feed_hits() {
    let up = Upstream::start(KEY);
    up.set(Mode::Slow(Duration::from_secs(3)));
    let dir = TempDir::new("enrich-timeout");
    let srv = serve(&config(&dir, &misp(&up, "timeout = \"400ms\"")));
    let started = Instant::now();
    let got = ask(
        &srv,
        &format!("hash=d41d8cd98f00b204e9800998ecf8427e|hash={KNOWN_MD5}"),
    );
    let took = started.elapsed();
    assert_eq!(
        got,
        "Category=demo_ioc|MatchedIndicator=d41d8cd98f00b204e9800998ecf8427e|ioc=d41d8cd98f00b204e9800998ecf8427e|context=empty_file_md5\nLookupFinished\n"
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "answered after {took:?} (timeout 400 ms)"
    );
}

#[test]
fn a_hanging_upstream_holds_neither_other_lines_nor_other_connections() {
    let up = Upstream::start(KEY);
    up.set(Mode::Hang);
    let dir = TempDir::new("enrich-hang");
    let srv = serve(&config(
        &dir,
        &misp(&up, "timeout = \"600ms\"\nkinds = [\"hash\"]"),
    ));
    // One connection: a line that waits, then feed-only lines behind it.
    let mut a = srv.connect();
    let started = Instant::now();
    a.write_all(format!("hash={KNOWN_MD5}\nurl=gmer.com\nurl=gmer.com\n").as_bytes())
        .expect("send");
    // Meanwhile another connection is answered at once.
    let b_started = Instant::now();
    assert_eq!(ask(&srv, "url=gmer.com"), GMER);
    assert!(
        b_started.elapsed() < Duration::from_millis(300),
        "{:?}",
        b_started.elapsed()
    );
    // The first connection's answers come in order, the waiting one first, at its
    // timeout.
    let got = read_answers(&mut a, 3);
    assert_eq!(got, format!("{MISS}{GMER}{GMER}"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(2000),
        "{took:?}"
    );
}

#[test]
fn lines_waiting_on_the_upstream_wait_together_and_answer_in_order() {
    let up = Upstream::start(KEY);
    up.set(Mode::Slow(Duration::from_millis(500)));
    let dir = TempDir::new("enrich-fifo");
    let srv = serve(&config(
        &dir,
        &misp(&up, "timeout = \"3s\"\nkinds = [\"hash\", \"domain\"]"),
    ));
    let mut s = srv.connect();
    let started = Instant::now();
    // Three lines that each wait 500 ms upstream, between feed-only lines.
    s.write_all(
        format!(
            "hash={KNOWN_MD5}\nurl=gmer.com\ndomain={KNOWN_DOMAIN}\nurl=gmer.com\nhash=00000000000000000000000000000002\n"
        )
        .as_bytes(),
    )
    .expect("send");
    let got = read_answers(&mut s, 5);
    let took = started.elapsed();
    let answers: Vec<&str> = got.split_inclusive("LookupFinished\n").collect();
    assert_eq!(answers.len(), 5, "{got}");
    assert!(
        answers[0].starts_with("Category=misp|MatchedIndicator=44d8"),
        "{got}"
    );
    assert_eq!(answers[1], GMER);
    assert!(
        answers[2].starts_with("Category=misp|MatchedIndicator=evil.example"),
        "{got}"
    );
    assert_eq!(answers[3], GMER);
    assert_eq!(answers[4], MISS);
    assert!(
        took < Duration::from_millis(1400),
        "the waits did not overlap: {took:?}"
    );
}

#[test]
fn a_failing_upstream_opens_the_breaker_then_recovers() {
    let up = Upstream::start(KEY);
    up.set(Mode::Fail);
    let dir = TempDir::new("enrich-breaker");
    let srv = serve_with(
        &config(
            &dir,
            &misp(
                &up,
                "breaker_failures = 3\nbreaker_cooldown = \"1s\"\nkinds = [\"hash\"]",
            ),
        ),
        &["--metrics", "127.0.0.1:0"],
    );
    for i in 0..8 {
        // Answered every time, with the feed's hits and without the upstream's. One
        // enriched indicator per request, so no call is in flight when the breaker opens.
        assert_eq!(ask(&srv, &format!("url=gmer.com|hash={i:032x}")), GMER);
    }
    assert_eq!(up.calls(), 3, "the breaker opened after three failures");
    srv.wait_log("breaker open");
    up.set(Mode::Normal);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(ask(&srv, &format!("hash={KNOWN_MD5}")).contains("Category=misp_2|"));
    assert_eq!(up.calls(), 4);
    srv.wait_log("breaker closed");
    // Bad JSON counts as a failure too, and never reaches the client.
    up.set(Mode::BadJson);
    assert_eq!(ask(&srv, "hash=000000000000000000000000000000bb"), MISS);
    let m = srv.metrics();
    for line in [
        "tracer_enricher_calls_total{enricher=\"misp\"} 5",
        "tracer_enricher_errors_total{enricher=\"misp\",reason=\"status\"} 3",
        "tracer_enricher_errors_total{enricher=\"misp\",reason=\"bad_answer\"} 1",
        "tracer_enricher_errors_total{enricher=\"misp\",reason=\"connect\"} 0",
        "tracer_enricher_skipped_total{enricher=\"misp\"} 5",
        "tracer_enricher_breaker_state{enricher=\"misp\"} 0",
        "tracer_enricher_upstream_seconds_count{enricher=\"misp\"} 5",
        "tracer_enricher_cache_hits_total{enricher=\"misp\"} 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    // Asked again: from the cache, no call.
    assert!(ask(&srv, &format!("hash={KNOWN_MD5}")).contains("Category=misp_2|"));
    let m = srv.metrics();
    assert!(
        m.contains("tracer_enricher_cache_hits_total{enricher=\"misp\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tracer_enricher_calls_total{enricher=\"misp\"} 5"),
        "{m}"
    );
}

/// The faulty helper with `args`, timeout 800 ms (a helper is wedged after 3.2 s).
/// The breaker stays out of the way: lookups while a helper restarts are failures.
fn faulty(dir: &TempDir, args: &str) -> PathBuf {
    faulty_with(
        dir,
        args,
        "timeout = \"800ms\"\nbreaker_failures = 100000\n",
    )
}

/// Ask `line` until the answer contains `want` (while a helper restarts, lookups
/// are answered without its hits); fail after `within`.
fn ask_until(srv: &Server, line: &str, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = ask(srv, line);
        if got.contains(want) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?} in the answer to {line:?} within {within:?}: {got:?}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `pid` a hit of the faulty helper carries.
fn helper_pid(answer: &str) -> String {
    answer
        .split("|pid=")
        .nth(1)
        .and_then(|r| r.split('\n').next())
        .unwrap_or_else(|| panic!("no helper hit in {answer:?}"))
        .to_string()
}

#[test]
fn a_helper_that_crashes_or_writes_garbage_is_restarted() {
    let dir = TempDir::new("enrich-crash");
    let srv = serve(&faulty(&dir, ""));
    let first = ask(&srv, "url=one.example");
    assert!(
        first.starts_with("Category=faulty|MatchedIndicator=one.example|seen=one.example|pid="),
        "{first}"
    );
    let pid = helper_pid(&first);
    // It dies with the request: answered without its hits.
    assert_eq!(ask(&srv, "url=crash|url=gmer.com"), GMER);
    srv.wait_log("restarting in");
    let again = ask_until(&srv, "url=two.example", "seen=two.example", TEN_S);
    let pid2 = helper_pid(&again);
    assert_ne!(pid, pid2, "a new helper process");
    // Garbage on its output: restarted too (after 2 s, the pause doubled).
    assert_eq!(ask(&srv, "url=garbage"), MISS);
    srv.wait_log("not an answer");
    let third = ask_until(&srv, "url=three.example", "seen=three.example", TEN_S);
    assert_ne!(helper_pid(&third), pid2);
    // A request the helper never answers ends at the timeout, the helper goes on.
    assert_eq!(ask(&srv, "url=quiet"), MISS);
    assert!(ask(&srv, "url=four.example").contains("seen=four.example"));
}

/// How long a test waits for a helper restarted after a 1 or 2 s pause.
const TEN_S: Duration = Duration::from_secs(10);

/// The faulty helper with `args`, and settings after the command.
fn faulty_with(dir: &TempDir, args: &str, settings: &str) -> PathBuf {
    let helper = example("exec_helper_faults");
    config(
        dir,
        &format!(
            "[[enricher]]\nname = \"helper\"\ntype = \"exec\"\ncommand = [{:?}{args}]\nnegative_ttl = \"1ms\"\nttl = \"1ms\"\n{settings}",
            helper.display().to_string()
        ),
    )
}

/// Send `lines` lookups of distinct 8 KB values (`url=<tag>-<i>.example/xx…`) on
/// each of `conns` connections at once; wait for all the answers. A connection looks
/// up in parallel the lines of one read (64 KiB): 7 lines at most, or they wait for
/// one another.
fn flood(srv: &Server, tag: &str, conns: usize, lines: usize) {
    let pad = "x".repeat(8 * 1024);
    let clients: Vec<_> = (0..conns)
        .map(|c| {
            let mut s = srv.connect();
            let req: String = (0..lines)
                .map(|k| format!("url={tag}-{c}-{k}.example/{pad}\n"))
                .collect();
            std::thread::spawn(move || {
                s.write_all(req.as_bytes()).expect("send");
                read_answers(&mut s, lines)
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
}

/// The value of a counter line `name{labels} N` in a scrape.
fn counter(metrics: &str, line: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line:?} in\n{metrics}"))
}

#[test]
fn a_helper_slower_than_the_lookups_is_read_while_written_and_never_wedged() {
    let dir = TempDir::new("enrich-slow");
    // One request at a time, 100 ms each; every answer is larger than a pipe holds.
    // The breaker stays out of the way (the lookups that time out are failures).
    let srv = serve(&faulty_with(
        &dir,
        ", \"--slow\", \"100\"",
        "timeout = \"1s\"\nconcurrency = 64\nbreaker_failures = 100000\n",
    ));
    let first = ask(&srv, "url=first.example");
    assert!(first.contains("|seen=first.example|answered=1|"), "{first}");
    let pid = helper_pid(&first);
    // 64 lookups at once, 8 KB each: the helper's input pipe holds 7, so tracer must
    // write while the helper blocks on writing its answers, and most callers give up
    // before the helper could read their requests.
    let flooded = Instant::now();
    flood(&srv, "slow", 16, 4);
    let flood_took = flooded.elapsed();
    // The helper finishes what was written to it, then answers a new lookup (one
    // asked before that gives up first).
    let mut asked = 0;
    let after = loop {
        asked += 1;
        let got = ask(&srv, &format!("url=after-{asked}.example"));
        if got.contains(&format!("|seen=after-{asked}.example|")) {
            break got;
        }
        assert!(
            asked < 200,
            "the helper answers no more: {got:?}\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(helper_pid(&after), pid, "the same helper, never restarted");
    assert!(!srv.log().contains("restarting in"), "{}", srv.log());
    // Requests whose callers had given up before they could be written were not
    // written. Once the flood's callers all gave up, no flood request was written
    // any more; by then the helper had read at most one per 100 ms, and at most 9
    // more waited in its input pipe (64 KiB), its input buffer (8 KiB) and tracer's
    // write buffer (8 KiB), 12 with the ones cut at the edges.
    // So it answered `first`, those, and the `after` lookups, not the 64.
    let answered: u128 = after
        .split("|answered=")
        .nth(1)
        .and_then(|r| r.split('|').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {after:?}"));
    let bound = 1 + (1 + flood_took.as_millis() / 100) + 12 + asked;
    assert!(
        answered <= bound,
        "the helper answered {answered} requests (at most {bound} could be written in time; the flood took {flood_took:?})"
    );
    assert!(
        bound < 64,
        "the flood took {flood_took:?}: too long to tell written requests from dropped ones"
    );
}

#[test]
fn a_helper_that_stops_answering_is_killed_and_restarted() {
    let dir = TempDir::new("enrich-wedged");
    // Timeout 800 ms.
    let srv = serve(&faulty(&dir, ""));
    let first = ask(&srv, "url=one.example");
    let pid = helper_pid(&first);
    let started = Instant::now();
    // Alive, but it reads and answers nothing more.
    assert_eq!(ask(&srv, "url=hang"), MISS);
    assert_eq!(ask(&srv, "url=two.example"), MISS);
    srv.wait_log("answered nothing for");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(3000) && took < Duration::from_secs(10),
        "killed after {took:?} (four timeouts: 3.2 s)"
    );
    srv.wait_log("restarting in");
    let again = ask_until(&srv, "url=three.example", "seen=three.example", TEN_S);
    assert_ne!(helper_pid(&again), pid, "a new helper process");
}

#[test]
fn a_wedged_helper_queues_a_bounded_number_of_requests_and_fails_the_rest_at_once() {
    let dir = TempDir::new("enrich-queue");
    // A helper's queue holds `concurrency` requests; the breaker stays out of the way.
    // Timeout 3 s: the helper is taken as wedged after 12 s, well after both floods.
    let srv = serve_with(
        &faulty_with(
            &dir,
            "",
            "timeout = \"3s\"\nconcurrency = 64\nbreaker_failures = 100000\n",
        ),
        &["--metrics", "127.0.0.1:0"],
    );
    assert!(ask(&srv, "url=one.example").contains("seen=one.example"));
    let errors = "tracer_enricher_errors_total{enricher=\"helper\",reason=\"helper\"}";
    assert_eq!(counter(&srv.metrics(), errors), 0);
    let started = Instant::now();
    let mut wedge = srv.connect();
    wedge.write_all(b"url=hang\n").expect("send");
    srv.wait_log("hang: reading no more");
    // 63 requests: 7 fit in the helper's input pipe, the rest wait in its queue,
    // all past their timeout once answered.
    flood(&srv, "first", 9, 7);
    // As many again: the queue is full of requests nobody waits for; those that do
    // not fit fail at once.
    flood(&srv, "second", 9, 7);
    let failed = counter(&srv.metrics(), errors);
    assert!(
        !srv.log().contains("answered nothing for"),
        "the helper was killed too soon to tell ({:?}):\n{}",
        started.elapsed(),
        srv.log()
    );
    assert!(
        failed >= 32,
        "{failed} lookups failed at once for a full queue"
    );
    assert_eq!(read_answers(&mut wedge, 1), MISS);
}

#[test]
fn a_busy_one_at_a_time_helper_is_not_taken_as_wedged() {
    let dir = TempDir::new("enrich-busy");
    // One request at a time, 100 ms each; 32 lookups kept in flight for 5 s, each
    // given up after 500 ms: the helper is behind all along, its oldest request
    // seconds old, but it answers every 100 ms. It is wedged only after 2 s without
    // an answer.
    let srv = serve(&faulty_with(
        &dir,
        ", \"--slow\", \"100\"",
        "timeout = \"500ms\"\nconcurrency = 32\nbreaker_failures = 100000\n",
    ));
    let pid = helper_pid(&ask(&srv, "url=first.example"));
    let until = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let mut s = srv.connect();
            std::thread::spawn(move || {
                let mut n = 0;
                while Instant::now() < until {
                    let req: String = (0..4)
                        .map(|k| format!("url=busy-{c}-{n}-{k}.example\n"))
                        .collect();
                    s.write_all(req.as_bytes()).expect("send");
                    read_answers(&mut s, 4);
                    n += 1;
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    // At most 32 requests were written to it (3.2 s of work): then it answers.
    let after = ask_until(
        &srv,
        "url=after.example",
        "|seen=after.example|",
        Duration::from_secs(20),
    );
    let log = srv.log();
    assert!(
        !log.contains("answered nothing for") && !log.contains("restarting in"),
        "{log}"
    );
    assert_eq!(helper_pid(&after), pid, "the same helper, never restarted");
}

#[test]
fn at_most_concurrency_requests_are_in_flight_over_all_helpers() {
    let dir = TempDir::new("enrich-inflight");
    // Two helpers, four requests in flight: two each.
    let srv = serve(&faulty_with(
        &dir,
        "",
        "processes = 2\nconcurrency = 4\ntimeout = \"1s\"\nbreaker_failures = 100000\n",
    ));
    srv.wait_log_more("helper started", 1);
    // Four lookups the helpers never answer: each helper gets two.
    let quiet = |from: usize| {
        (from..from + 4)
            .map(|i| format!("url=quiet-{i}"))
            .collect::<Vec<_>>()
            .join("|")
    };
    assert_eq!(ask(&srv, &quiet(1)), MISS);
    srv.wait_log_more("not answering quiet-", 3);
    // Four more once those were given up: the helpers still have four requests
    // unanswered, so these wait in their queues until their callers give up, and
    // are never written.
    assert_eq!(ask(&srv, &quiet(5)), MISS);
    assert_eq!(
        srv.log_count("not answering quiet-"),
        4,
        "more than `concurrency` requests written:\n{}",
        srv.log()
    );
}

#[test]
fn a_helper_that_skips_a_request_goes_on_and_forgets_it() {
    let dir = TempDir::new("enrich-skip");
    // Two requests in flight at most; timeout 800 ms, so four timeouts are 3.2 s.
    let srv = serve(&faulty_with(
        &dir,
        "",
        "timeout = \"800ms\"\nconcurrency = 2\nbreaker_failures = 100000\n",
    ));
    let pid = helper_pid(&ask(&srv, "url=one.example"));
    assert_eq!(ask(&srv, "url=quiet-1"), MISS);
    // It answers everything else, well past four timeouts: it goes on, and the
    // request it skipped is forgotten.
    let mut n = 0;
    while !srv.log().contains("forgot 1 request(s)") {
        n += 1;
        let got = ask(&srv, &format!("url=v{n}.example"));
        assert!(
            got.contains(&format!("|seen=v{n}.example|")),
            "{got:?}\n{}",
            srv.log()
        );
        assert_eq!(helper_pid(&got), pid, "the same helper");
        assert!(n < 400, "never forgotten:\n{}", srv.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its place is free again: with a second request skipped, one more fits.
    assert_eq!(ask(&srv, "url=quiet-2"), MISS);
    let got = ask(&srv, "url=last.example");
    assert!(
        got.contains("|seen=last.example|"),
        "{got:?}\n{}",
        srv.log()
    );
    assert_eq!(helper_pid(&got), pid, "the same helper");
    assert!(!srv.log().contains("restarting in"), "{}", srv.log());
}

#[test]
fn answers_written_as_a_helper_exits_are_delivered() {
    let dir = TempDir::new("enrich-bye");
    let srv = serve(&faulty(&dir, ""));
    let pid = helper_pid(&ask(&srv, "url=one.example"));
    // The helper exits; its answer reaches tracer 100 ms later, through a child that
    // holds its output.
    let got = ask(&srv, "url=bye");
    assert!(got.contains("|seen=bye|"), "{got:?}\n{}", srv.log());
    assert_eq!(helper_pid(&got), pid);
    srv.wait_log("the helper exited");
    srv.wait_log("restarting in");
    let again = ask_until(&srv, "url=two.example", "seen=two.example", TEN_S);
    assert_ne!(helper_pid(&again), pid, "a new helper process");
}

#[test]
fn a_helper_output_line_without_end_is_garbage_and_bounded() {
    let dir = TempDir::new("enrich-endless");
    let srv = serve(&faulty(&dir, ""));
    let first = ask(&srv, "url=one.example");
    let pid = helper_pid(&first);
    let rss = srv.rss_kib();
    // 64 MiB without a newline.
    assert_eq!(ask(&srv, "url=endless"), MISS);
    srv.wait_log("not an answer");
    srv.wait_log("restarting in");
    let grown = srv.rss_kib().saturating_sub(rss);
    assert!(grown < 16 * 1024, "tracer grew by {grown} KiB");
    let again = ask_until(&srv, "url=two.example", "seen=two.example", TEN_S);
    assert_ne!(helper_pid(&again), pid, "a new helper process");
}

#[test]
fn a_long_helper_stderr_line_is_logged_cut() {
    let dir = TempDir::new("enrich-shout");
    let srv = serve(&faulty(&dir, ""));
    // 2 MiB on one line of its standard error, then a short line, then the answer.
    let got = ask(&srv, "url=shout");
    assert!(got.contains("seen=shout"), "{got}");
    srv.wait_log("helper: still talking");
    let log = srv.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 16 * 1024, "a log line of {longest} bytes");
    assert!(
        log.contains("helper: yyyyyyyy") && log.contains("(cut at "),
        "{log:.2000}"
    );
}

#[test]
fn answers_out_of_order_reach_the_right_lines() {
    let dir = TempDir::new("enrich-reverse");
    let srv = serve(&faulty(&dir, ", \"--reverse\""));
    let mut s = srv.connect();
    let values: Vec<String> = (0..8).map(|i| format!("v{i}.example")).collect();
    let mut req = String::new();
    for v in &values {
        req.push_str(&format!("url={v}\n"));
    }
    s.write_all(req.as_bytes()).expect("send");
    let got = read_answers(&mut s, values.len());
    let answers: Vec<&str> = got.split_inclusive("LookupFinished\n").collect();
    for (v, a) in values.iter().zip(&answers) {
        assert!(a.contains(&format!("|seen={v}|")), "{v}: {a}");
    }
}

#[test]
fn the_bundled_python_helper_enriches_like_the_python_tool() {
    let cfg =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/enrichers/tracer.toml");
    let srv = Server::start(any_io(), &["--config", cfg.to_str().expect("path")]);
    let line = "url=http://evil.example/%61dmin|hash=d41d8cd98f00b204e9800998ecf8427e";
    let got = ask(&srv, line);
    let want = "Category=Tracer_URL_Decoder|MatchedIndicator=http://evil.example/%61dmin|decodedURL=http://evil.example/admin\n\
                Category=demo_ioc|MatchedIndicator=d41d8cd98f00b204e9800998ecf8427e|ioc=d41d8cd98f00b204e9800998ecf8427e|context=empty_file_md5\n\
                Category=Tracer_Hash_Info|MatchedIndicator=d41d8cd98f00b204e9800998ecf8427e|algorithm=MD5|normalized=D41D8CD98F00B204E9800998ECF8427E\n\
                LookupFinished\n";
    assert_eq!(got, want);
}

#[test]
fn the_deploy_config_is_valid_with_and_without_its_examples() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tracer.toml");
    let text = std::fs::read_to_string(&deploy).expect("deploy/tracer.toml");
    let o = tracer(&["check-config", deploy.to_str().expect("path")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every commented key and table line switched on at once.
    let dir = TempDir::new("deploy-config");
    let all: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(all.contains("\n[[index]]\n") && all.contains("\ntype = \"misp\"\n"));
    let uncommented = dir.path("tracer.toml");
    std::fs::write(&uncommented, all).expect("write");
    let o = std::process::Command::new(&*BIN)
        .args(["check-config", uncommented.to_str().expect("path")])
        .env("MISP_KEY", "k")
        .env("INTEL_TOKEN", "t")
        .env("FEED_API_KEY", "a")
        .env("FEED_PASSWORD", "p")
        .env(
            "TRACER_KUMA_PASSWORD_HASH",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$2f1iRzPeW7a0Uv4w8Ue2fV3xk2qfKqPz2dQ0cKxk2tE",
        )
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&o);
    for key in [
        "name = \"misp\"",
        "name = \"intel\"",
        "name = \"python\"",
        "idle_timeout = \"10m\"",
        "log_file = ",
        "[http]",
        "name = \"kuma\"",
        "url = \"https://feeds.example/tip/Phishing_URL_Data_Feed.json.gz\"",
        "state_dir = \"/var/lib/tracer\"",
    ] {
        assert!(shown.contains(key), "missing {key:?} in\n{shown}");
    }
}

#[test]
fn config_mistakes_are_named_with_their_line() {
    let dir = TempDir::new("enrich-config");
    let bad = dir.path("bad.toml");
    std::fs::write(
        &bad,
        "max_hits = 8\n\n[[enricher]]\nname = \"m\"\ntype = \"misp\"\nurl = \"https://misp.example\"\nkey = \"k\"\ntimout = \"2s\"\n",
    )
    .expect("write");
    let o = tracer(&["check-config", bad.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml") && err.contains("line 8") && err.contains("timout"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "[[enricher]]\nname = \"m\"\ntype = \"misp\"\nkey = \"k\"\n",
    )
    .expect("write");
    let err = stderr(&tracer(&["check-config", bad.to_str().expect("path")]));
    assert!(
        err.contains("line 1") && err.contains("`url` is required"),
        "{err}"
    );
    // serve refuses it the same way.
    let o = std::process::Command::new(&*BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            bad.to_str().expect("path"),
        ])
        .output()
        .expect("serve");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`url` is required"), "{}", stderr(&o));
}

#[test]
fn secrets_come_from_the_environment_or_from_files_and_are_masked() {
    let up = Upstream::start(KEY);
    let dir = TempDir::new("enrich-secret");
    let key_file = dir.path("misp.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key");
    let cfg = config(
        &dir,
        &format!(
            "[[enricher]]\nname = \"misp\"\ntype = \"misp\"\nurl = {:?}\nkey_file = \"misp.key\"\n",
            up.url()
        ),
    );
    let o = tracer(&["check-config", cfg.to_str().expect("path")]);
    let shown = stdout(&o);
    assert!(
        o.status.success() && shown.contains("key = \"********\"") && !shown.contains(KEY),
        "{shown}"
    );
    let srv = Server::start(any_io(), &["--config", cfg.to_str().expect("path")]);
    assert!(ask(&srv, &format!("hash={KNOWN_MD5}")).contains("Category=misp|"));
    assert_eq!(up.unauthorized(), 0);
    // An unset variable is an error naming it.
    let env_cfg = config(&dir, &misp(&up, ""));
    let o = tracer(&["check-config", env_cfg.to_str().expect("path")]);
    assert!(
        !o.status.success() && stderr(&o).contains("TRACER_TEST_MISP_KEY"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sighup_rereads_the_config_file() {
    let up = Upstream::start(KEY);
    let dir = TempDir::new("enrich-reread");
    let cfg = config(&dir, &misp(&up, "category = \"first\""));
    let srv = serve(&cfg);
    assert!(ask(&srv, &format!("domain={KNOWN_DOMAIN}")).starts_with("Category=first|"));
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(
        &cfg,
        format!(
            "max_hits = 7\n{}",
            text.replace("category = \"first\"", "category = \"second\"")
        ),
    )
    .expect("rewrite");
    srv.signal("HUP");
    srv.wait_log("index reloaded");
    srv.wait_log("`max_hits` changed");
    assert!(ask(&srv, &format!("domain={KNOWN_DOMAIN}")).starts_with("Category=second|"));
    // Moving the state directory needs a restart: the whole file waits for it.
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n{}",
            dir.path("elsewhere").display().to_string(),
            text.replace("category = \"second\"", "category = \"third\"")
        ),
    )
    .expect("rewrite");
    srv.signal("HUP");
    srv.wait_log("`state_dir` changed (from none to ");
    assert!(ask(&srv, &format!("domain={KNOWN_DOMAIN}")).starts_with("Category=second|"));
    // A broken file changes nothing.
    std::fs::write(&cfg, "threads = \"many\"\n").expect("break");
    srv.signal("HUP");
    srv.wait_log("the configuration cannot be used");
    assert!(ask(&srv, &format!("domain={KNOWN_DOMAIN}")).starts_with("Category=second|"));
    let mut s = srv.connect();
    s.write_all(b"url=gmer.com\n").expect("send");
    let mut buf = [0u8; 256];
    assert!(s.read(&mut buf).expect("read") > 0);
}

#[test]
fn a_last_line_without_lf_that_waits_is_answered_in_order_at_half_close() {
    let up = Upstream::start(KEY);
    up.set(Mode::Slow(Duration::from_millis(300)));
    let dir = TempDir::new("enrich-halfclose");
    let srv = serve(&config(&dir, &misp(&up, "timeout = \"3s\"")));
    // A feed hit, then a value that waits on the upstream.
    let line = format!("hash=d41d8cd98f00b204e9800998ecf8427e|hash={KNOWN_MD5}");
    let mut s = srv.connect();
    s.write_all(line.as_bytes()).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let got = String::from_utf8(read_to_close(&mut s)).expect("utf-8");
    // The same bytes as when the line ends with LF (the feed hit first,
    // LookupFinished last).
    assert_eq!(got, ask(&srv, &line));
    assert!(got.starts_with("Category=demo_ioc|"), "{got}");
}
