//! SPEC §2 compatibility corpus over real sockets, exact bytes, on both runtimes.

use std::io::Write;
use std::time::Duration;

use crate::util::*;

fn pause() {
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn header_alone_then_request() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        s.write_all(b"X-KF-ReplyBackX-KF-SendFinishedEventX-KF-SaveStatistic")
            .expect("send");
        pause();
        s.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), GMER, "{io}");
    }
}

#[test]
fn header_and_request_in_one_segment() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        assert_eq!(
            exchange(
                &srv,
                b"X-KF-SaveStatisticX-KF-ReplyBack\r\nurl=gmer.com\n",
                1
            ),
            GMER,
            "{io}"
        );
        assert_eq!(
            exchange(&srv, b"X-KF-ReplyBackurl=gmer.com\n", 1),
            GMER,
            "{io}"
        );
    }
}

#[test]
fn header_split_mid_token() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        for part in [
            &b"X-KF-Rep"[..],
            b"lyBackX-KF-Send",
            b"FinishedEv",
            b"enturl=gm",
            b"er.com\n",
        ] {
            s.write_all(part).expect("send");
            pause();
        }
        assert_eq!(read_answers(&mut s, 1), GMER, "{io}");
    }
}

#[test]
fn request_split_at_every_byte() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        let req = b"X-KF-ReplyBackurl=gmer.com|ip=198.51.100.9\r\n";
        for b in req {
            s.write_all(&[*b]).expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
        let want = "Category=demo_ioc|MatchedIndicator=gmer.com|ioc=gmer.com|context=bad_URL\n\
                    Category=ip_reputation|MatchedIndicator=198.51.100.9|ip=198.51.100.0/24|threat=scanner|confidence=70\n\
                    LookupFinished\n";
        assert_eq!(read_answers(&mut s, 1), want, "{io}");
    }
}

#[test]
fn five_hundred_pipelined_requests_in_one_write() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut req = Vec::new();
        let mut want = String::new();
        for i in 0..500 {
            if i % 3 == 0 {
                req.extend_from_slice(b"url=gmer.com\n");
                want.push_str(GMER);
            } else {
                req.extend_from_slice(format!("url=miss{i}.example\n").as_bytes());
                want.push_str(MISS);
            }
        }
        assert_eq!(exchange(&srv, &req, 500), want, "{io}");
    }
}

#[test]
fn crlf_trailing_pipe_leading_tokens_unknown_keys() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let req =
            b"url=gmer.com\r\nurl=gmer.com|\r\nx=1|y=2|url=gmer.com\nfoo=bar|URL=gmer.com|baz\n";
        assert_eq!(exchange(&srv, req, 4), GMER.repeat(4), "{io}");
    }
}

#[test]
fn repeated_keys_get_category_suffixes() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let got = exchange(
            &srv,
            b"url=gmer.com|url=http://www.gmer.com/|url=nothing.example\n",
            1,
        );
        let want = "Category=demo_ioc|MatchedIndicator=gmer.com|ioc=gmer.com|context=bad_URL\n\
                    Category=demo_ioc_2|MatchedIndicator=http://www.gmer.com/|ioc=gmer.com|context=bad_URL\n\
                    LookupFinished\n";
        assert_eq!(got, want, "{io}");
    }
}

#[test]
fn empty_lines_get_no_answer() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        s.write_all(b"\n\r\n\nurl=gmer.com\n\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), GMER, "{io}");
        // Nothing more arrives for the empty lines.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        assert!(
            std::io::Read::read(&mut s, &mut buf).is_err(),
            "{io}: unexpected bytes"
        );
    }
}

#[test]
fn bare_value_lines_are_detected() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let got = exchange(
            &srv,
            b"gmer.com\n203.0.113.7\n44D88612FEA8A8F36DE82E1278ABB02F\n",
            3,
        );
        assert!(got.starts_with(GMER), "{io}: {got}");
        assert!(
            got.contains("Category=ip_reputation|MatchedIndicator=203.0.113.7|ip=203.0.113.7"),
            "{io}: {got}"
        );
        assert!(got.contains("Category=Malicious_Hash_Data_Feed|MatchedIndicator=44D88612FEA8A8F36DE82E1278ABB02F|MD5="), "{io}: {got}");
    }
}

#[test]
fn ping_gets_pong_and_the_connection_stays() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        s.write_all(b"X-KF-ReplyBackPING").expect("send");
        assert_eq!(read_answers(&mut s, 1), "PONG\n", "{io}");
        s.write_all(b"url=gmer.com\nPING\n").expect("send");
        assert_eq!(read_answers(&mut s, 2), format!("{GMER}PONG\n"), "{io}");
    }
}

#[test]
fn final_line_without_lf_is_answered_on_half_close() {
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut s = srv.connect();
        s.write_all(b"url=gmer.com").expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        assert_eq!(
            String::from_utf8_lossy(&read_to_close(&mut s)),
            GMER,
            "{io}"
        );
    }
}

#[test]
fn answer_larger_than_the_socket_buffer() {
    for &io in io_modes() {
        let srv = Server::start(
            io,
            &[
                "--max-line",
                "1000000",
                "--max-hits",
                "32",
                "--max-hits-per-line",
                "100000",
            ],
        );
        let mut s = srv.connect();
        let tokens: Vec<&str> = std::iter::repeat_n("url=gmer.com", 20_000).collect();
        let mut line = tokens.join("|");
        line.push('\n');
        s.write_all(line.as_bytes()).expect("send");
        // Let the server hit a full socket buffer before we read anything.
        std::thread::sleep(Duration::from_millis(300));
        let got = read_answers(&mut s, 1);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 20_001, "{io}");
        assert!(got.len() > 1_500_000, "{io}: {} bytes", got.len());
        assert_eq!(
            lines[19_999],
            "Category=demo_ioc_20000|MatchedIndicator=gmer.com|ioc=gmer.com|context=bad_URL"
        );
        // The connection is still usable.
        s.write_all(b"url=gmer.com\n").expect("send");
        assert_eq!(read_answers(&mut s, 1), GMER, "{io}");
    }
}

#[test]
fn demo_answers_over_the_socket_match_the_expected_file() {
    let cases = expected_answers();
    for &io in io_modes() {
        let srv = Server::demo(io);
        let mut req = String::from("X-KF-ReplyBackX-KF-SendFinishedEvent");
        let mut want = String::new();
        for (line, answer) in &cases {
            req.push_str(line);
            req.push('\n');
            want.push_str(answer);
        }
        assert_eq!(exchange(&srv, req.as_bytes(), cases.len()), want, "{io}");
    }
}
