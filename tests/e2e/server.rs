//! Server behaviour under load, bad clients, limits, reload and shutdown, on both
//! runtimes.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn two_hundred_connections_of_five_hundred_pipelined_requests() {
    let cases = expected_answers();
    for &io in io_modes() {
        let srv = Server::demo(io);
        let threads: Vec<_> = (0..200)
            .map(|c| {
                let mut s = srv.connect();
                let cases = cases.clone();
                std::thread::spawn(move || {
                    let mut req = String::from("X-KF-ReplyBack");
                    let mut want = String::new();
                    for i in 0..500 {
                        let (line, answer) = &cases[(c + i) % cases.len()];
                        req.push_str(line);
                        req.push('\n');
                        want.push_str(answer);
                    }
                    s.write_all(req.as_bytes()).expect("send");
                    let got = read_answers(&mut s, 500);
                    assert!(got == want, "connection {c}: answers differ");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
        assert!(srv.log().contains("listening"), "{io}");
    }
}

/// One client misbehaves; another must be served normally meanwhile.
fn assert_others_served(srv: &Server) {
    assert_eq!(exchange(srv, b"url=gmer.com\n", 1), GMER);
}

#[test]
fn ten_megabytes_without_a_newline_are_discarded_and_memory_stays_bounded() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let before = srv.rss_kib();
        let mut s = srv.connect();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..10 {
            s.write_all(&block).expect("send");
        }
        assert_others_served(&srv);
        let grown = srv.rss_kib().saturating_sub(before);
        assert!(
            grown < 32 * 1024,
            "{io}: RSS grew {grown} KiB for a 10 MB line"
        );
        s.write_all(b"\nurl=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut s, 2), format!("{MISS}{GMER}"), "{io}");
        srv.wait_log("longer than --max-line");
    }
}

#[test]
fn random_bytes_get_answers_and_the_connection_stays_usable() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut junk = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push((x >> 24) as u8);
        }
        s.write_all(&junk).expect("send");
        s.write_all(b"\nurl=gmer.com\n").expect("send");
        // Every junk line gets some answer; the last answer is gmer's.
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(GMER.as_bytes()) {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "{io}: closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert_others_served(&srv);
    }
}

#[test]
fn a_client_that_never_reads_is_throttled_not_buffered() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let before = srv.rss_kib();
        let s = srv.connect();
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let line = b"url=gmer.com|url=gmer.com|url=gmer.com|url=gmer.com\n".repeat(1000);
            let mut sent = 0usize;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                match w.write_all(&line) {
                    Ok(()) => sent += line.len(),
                    Err(_) => break,
                }
            }
            sent
        });
        let sent = writer.join().expect("writer");
        // Answers are ~6x the requests: had the server kept reading, it would have
        // had to buffer far more than it did.
        assert!(
            sent < 200 << 20,
            "{io}: the server kept reading ({sent} bytes)"
        );
        assert_others_served(&srv);
        let grown = srv.rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "{io}: RSS grew {grown} KiB");
        drop(s);
        assert_others_served(&srv);
    }
}

#[test]
fn a_client_that_disconnects_mid_answer_does_not_hurt_the_server() {
    for &io in io_modes() {
        let srv = Server::start(io, &["--max-line", "1000000"]);
        for _ in 0..5 {
            let mut s = srv.connect();
            let line = format!("{}\n", vec!["url=gmer.com"; 20_000].join("|"));
            s.write_all(line.as_bytes()).expect("send");
            let mut buf = [0u8; 1000];
            let _ = s.read(&mut buf);
            drop(s);
        }
        assert_others_served(&srv);
    }
}

#[test]
fn max_connections_refuses_the_extra_ones() {
    for &io in io_modes() {
        let srv = Server::start(io, &["--max-connections", "2"]);
        let mut a = srv.connect();
        let mut b = srv.connect();
        a.write_all(b"url=gmer.com\n").expect("send");
        b.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut a, 1), GMER);
        assert_eq!(read_answers(&mut b, 1), GMER);
        let mut c = srv.connect();
        let _ = c.write_all(b"url=gmer.com\n");
        assert!(
            read_to_close(&mut c).is_empty(),
            "{io}: third connection was served"
        );
        srv.wait_log("--max-connections reached");
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        assert_others_served(&srv);
    }
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    for &io in io_modes() {
        let srv = Server::start(io, &["--idle-timeout", "1"]);
        let mut s = srv.connect();
        s.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), GMER);
        let started = Instant::now();
        assert!(read_to_close(&mut s).is_empty());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "{io}: closed after {waited:?}"
        );
    }
}

#[test]
fn clients_outside_allow_are_closed_at_once() {
    for &io in io_modes() {
        let srv = Server::start(io, &["--allow", "10.0.0.0/8,192.168.0.0/16"]);
        let mut s = srv.connect();
        let _ = s.write_all(b"url=gmer.com\n");
        assert!(read_to_close(&mut s).is_empty(), "{io}");
        srv.wait_log("outside --allow");
        let srv = Server::start(io, &["--allow", "127.0.0.0/8"]);
        assert_others_served(&srv);
    }
}

#[test]
fn reload_under_traffic_answers_every_request_from_a_or_b() {
    for &io in io_modes() {
        let dir = TempDir::new("reload");
        let a = compile_csv(&dir, "a", "from_A");
        let b = compile_csv(&dir, "b", "from_B");
        let served = dir.path("served.tracer");
        std::fs::copy(&a, &served).expect("copy");
        let srv = Server::start(io, &["-l", served.to_str().expect("path")]);
        let answer = reload_answer;
        let (ans_a, ans_b) = (answer("from_A"), answer("from_B"));

        let mut s = srv.connect();
        let client = std::thread::spawn(move || {
            let mut seen_b = 0;
            let mut total = 0;
            let started = Instant::now();
            let mut first_b: Option<Instant> = None;
            // Until B has answered for a while (however long the reload takes), or 20 s.
            while started.elapsed() < Duration::from_secs(20)
                && first_b.is_none_or(|t| t.elapsed() < Duration::from_millis(500))
            {
                s.write_all("url=reload.example\n".repeat(200).as_bytes())
                    .expect("send");
                let got = read_answers(&mut s, 200);
                let mut rest = got.as_str();
                while !rest.is_empty() {
                    if let Some(r) = rest.strip_prefix(ans_a.as_str()) {
                        rest = r;
                    } else if let Some(r) = rest.strip_prefix(ans_b.as_str()) {
                        rest = r;
                        seen_b += 1;
                        first_b.get_or_insert_with(Instant::now);
                    } else {
                        panic!("answer from neither index: {rest:.200}");
                    }
                    total += 1;
                }
            }
            (seen_b, total)
        });
        std::thread::sleep(Duration::from_millis(500));
        // Atomic replace, as `tracer compile` does.
        let tmp = dir.path("next.tracer");
        std::fs::copy(&b, &tmp).expect("copy");
        std::fs::rename(&tmp, &served).expect("rename");
        srv.signal("HUP");
        srv.wait_log("index reloaded");
        let (seen_b, total) = client.join().expect("client");
        assert!(
            seen_b > 0 && seen_b < total,
            "{io}: {seen_b} of {total} from B"
        );

        // A corrupted file: the reload fails, B keeps serving.
        std::fs::write(&tmp, b"TRACERIX but not really an index").expect("write");
        std::fs::rename(&tmp, &served).expect("rename");
        srv.signal("HUP");
        srv.wait_log("reload failed");
        assert_eq!(
            exchange(&srv, b"url=reload.example\n", 1),
            answer("from_B"),
            "{io}"
        );
    }
}

#[test]
fn sigterm_answers_every_request_already_sent_and_exits_zero() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut req = String::new();
        for i in 0..2000 {
            req.push_str(if i % 2 == 0 {
                "url=gmer.com\n"
            } else {
                "url=miss.example\n"
            });
        }
        // Some of these are still in the kernel's accept queue when the signal lands.
        let mut clients: Vec<_> = (0..20)
            .map(|_| {
                let mut s = srv.connect();
                s.write_all(req.as_bytes()).expect("send");
                s
            })
            .collect();
        srv.signal("TERM");
        for (i, s) in clients.iter_mut().enumerate() {
            let got = read_to_close(s);
            assert_eq!(count_answers(&got), 2000, "{io}: client {i}");
            assert_eq!(
                got,
                format!("{GMER}{MISS}").repeat(1000).into_bytes(),
                "{io}: client {i}"
            );
        }
        assert_eq!(srv.stop(), Some(0), "{io}");
    }
}

#[test]
fn feeds_given_with_f_and_k_are_served() {
    for &io in io_modes() {
        let feed = fixtures().join("demo_ioc.csv");
        let srv = Server::start(io, &["-f", feed.to_str().expect("path"), "-k", "ioc"]);
        assert_eq!(
            exchange(&srv, b"url=https://www.GMER.com/\n", 1),
            GMER.replace(
                "MatchedIndicator=gmer.com",
                "MatchedIndicator=https://www.GMER.com/"
            ),
            "{io}"
        );
    }
}

#[test]
fn metrics_count_hits_by_category_with_escaped_labels() {
    let dir = TempDir::new("metrics-labels");
    let feed = dir.path("odd.csv");
    std::fs::write(&feed, "ioc,context\nodd.example,x\n").expect("write");
    // A category holding a quote, a backslash and a newline must not break the format.
    let srv = Server::start(
        "epoll",
        &[
            "--metrics",
            "127.0.0.1:0",
            "-f",
            feed.to_str().expect("path"),
            "-k",
            "ioc",
            "--category",
            "we\"ird\\cat\nx",
        ],
    );
    let addr = srv.metrics_addr();
    let got = exchange(
        &srv,
        b"url=odd.example\nurl=odd.example|url=odd.example\n",
        2,
    );
    assert_eq!(count_answers(got.as_bytes()), 2);
    let body = scrape(&addr);
    let want = "tracer_category_hits_total{category=\"we\\\"ird\\\\cat\\nx\"} 3";
    assert!(body.contains(want), "missing {want:?} in\n{body}");
}

#[test]
fn metrics_endpoint_counts_requests_by_kind() {
    let srv = Server::start(any_io(), &["--metrics", "127.0.0.1:0"]);
    let addr = srv.metrics_addr();
    let got = exchange(
        &srv,
        b"url=gmer.com|ip=10.13.0.1\nhash=44d88612fea8a8f36de82e1278abb02f\nurl=miss.example\n",
        3,
    );
    assert_eq!(count_answers(got.as_bytes()), 3);
    let body = scrape(&addr);
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    for line in [
        "tracer_requests_total 3",
        "tracer_indicators_total{kind=\"url\"} 2",
        "tracer_indicators_total{kind=\"ip\"} 1",
        "tracer_indicators_total{kind=\"hash\"} 1",
        "tracer_hits_total 3",
        "tracer_category_hits_total{category=\"demo_ioc\"} 1",
        "tracer_category_hits_total{category=\"ip_reputation\"} 1",
        "tracer_category_hits_total{category=\"Malicious_Hash_Data_Feed\"} 1",
        "tracer_index_records 20",
        "tracer_batch_seconds_count ",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    let mut s = std::net::TcpStream::connect(&addr).expect("connect metrics");
    s.write_all(b"GET /other HTTP/1.0\r\n\r\n").expect("send");
    assert!(String::from_utf8_lossy(&read_to_close(&mut s)).starts_with("HTTP/1.0 404"));
}

#[test]
fn watch_reloads_when_a_feed_file_changes() {
    let dir = TempDir::new("watch");
    let feed = dir.path("watched.csv");
    std::fs::write(&feed, "ioc,context\nwatch.example,first\n").expect("write");
    let log_file = dir.path("tracer.log");
    let srv = Server::start(
        any_io(),
        &[
            "-f",
            feed.to_str().expect("path"),
            "-k",
            "ioc",
            "--watch",
            "--log-file",
            log_file.to_str().expect("path"),
        ],
    );
    let answer = |ctx: &str| {
        format!("Category=watched|MatchedIndicator=watch.example|ioc=watch.example|context={ctx}\nLookupFinished\n")
    };
    assert_eq!(exchange(&srv, b"url=watch.example\n", 1), answer("first"));
    // A different size, so the change shows even within one mtime tick.
    std::fs::write(&feed, "ioc,context\nwatch.example,second_version\n").expect("write");
    srv.wait_log("index reloaded");
    assert_eq!(
        exchange(&srv, b"url=watch.example\n", 1),
        answer("second_version")
    );
    // --log-file: the same lines land in a daily-rotated file next to the given name.
    // The file writer is asynchronous, so give it a moment to flush.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged: String = std::fs::read_dir(&dir.0)
            .expect("read dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("tracer.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if logged.contains("index reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "log file: {logged:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_arriving_while_draining_is_still_answered() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        s.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), GMER, "{io}");
        // The connection now waits in a read. Shutdown must not cancel that read
        // (under io_uring a cancelled read stays armed and would swallow these bytes).
        // A request on its way when the signal lands (within the drain's idle grace).
        srv.signal("TERM");
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(
            String::from_utf8_lossy(&read_to_close(&mut s)),
            GMER,
            "{io}"
        );
        assert_eq!(srv.stop(), Some(0), "{io}");
    }
}
