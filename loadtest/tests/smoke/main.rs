//! The load generator against a real server (in-process, on 127.0.0.1), and against
//! deliberately wrong responders it must catch. Short runs: seconds, not minutes.
//! `--http` has its own module (http.rs), against fake HTTP servers.

mod http;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

use tracer::engine::Sources;
use tracer::serve::{Config, IoMode, Server};

fn demo_server(io: IoMode) -> Server {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"));
    config.threads = 2;
    config.io = io;
    config.max_connections = 10_000;
    Server::start(config, Sources::demo(&fixtures)).expect("server starts")
}

fn loadtest(addr: SocketAddr, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args([
        "--addr",
        &addr.to_string(),
        "--duration",
        "1.5",
        "--warmup",
        "0.3",
        "--json",
    ]);
    if !extra.contains(&"--hit-ratio") {
        cmd.args(["--hit-ratio", "0.4"]);
    }
    let out = cmd.args(extra).output().expect("run loadtest");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn errors(json: &serde_json::Value) -> serde_json::Value {
    json["runs"][0]["errors"].clone()
}

#[test]
fn smoke_runs_against_the_demo_server_have_no_errors() {
    let modes: &[IoMode] = match tracer::serve::runtime::uring_available() {
        Ok(()) => &[IoMode::Uring, IoMode::Epoll],
        Err(e) => {
            eprintln!("io_uring is not available here ({e}): the io_uring runs are skipped");
            &[IoMode::Epoll]
        }
    };
    for &io in modes {
        let server = demo_server(io);
        for extra in [
            &["--connections", "8"][..],
            &["--connections", "4", "--depth", "32"],
            &["--connections", "2", "--reconnect-each"],
            &["--connections", "4", "--rate", "2000"],
            &["--connections", "4", "--churn", "2", "--churn-every", "0.2"],
        ] {
            let (code, json) = loadtest(server.local_addr(), extra);
            assert_eq!(
                errors(&json),
                serde_json::json!({}),
                "{io:?} {extra:?}: {json}"
            );
            assert!(
                json["runs"][0]["requests"].as_u64().unwrap_or(0) > 100,
                "{io:?} {extra:?}: {json}"
            );
            assert_eq!(json["runs"][0]["lost"], 0, "{io:?} {extra:?}: {json}");
            assert_eq!(code, Some(0), "{io:?} {extra:?}");
            if extra.contains(&"--churn") {
                assert!(
                    json["runs"][0]["reconnects"].as_u64().unwrap_or(0) >= 4,
                    "{io:?}: churned connections were not replaced: {json}"
                );
            }
        }
        server.shutdown();
    }
}

#[test]
fn ceiling_mode_reports_both_runs() {
    let server = demo_server(IoMode::Auto);
    let (code, json) = loadtest(
        server.local_addr(),
        &["--connections", "4", "--ceiling", "--ceiling-threads", "1"],
    );
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(
        json["server_share_of_ceiling"].as_f64().unwrap_or(0.0) > 0.0,
        "{json}"
    );
    server.shutdown();
}

/// How a fake server answers each request line.
#[derive(Clone, Copy)]
enum Wrong {
    /// `LookupFinished` only: every hit is missed.
    NeverHits,
    /// Claims a hit for the first indicator of every line.
    AlwaysHits,
    /// Answers 20 requests, then closes.
    HangsUp,
}

fn wrong_responder(kind: Wrong) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                let r = BufReader::new(conn);
                for (n, line) in r.lines().map_while(Result::ok).enumerate() {
                    let line = line
                        .trim_start_matches("X-KF-ReplyBack")
                        .trim_start_matches("X-KF-SendFinishedEvent");
                    let answer = match kind {
                        Wrong::NeverHits => "LookupFinished\n".to_string(),
                        Wrong::AlwaysHits => {
                            let first = line.split('|').next().unwrap_or("");
                            let value = first.split_once('=').map_or(first, |(_, v)| v);
                            format!("Category=fake|MatchedIndicator={value}|x=1\nLookupFinished\n")
                        }
                        Wrong::HangsUp if n >= 20 => return,
                        Wrong::HangsUp => "LookupFinished\n".to_string(),
                    };
                    if w.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn wrong_answers_are_counted_and_fail_the_run() {
    let (code, json) = loadtest(wrong_responder(Wrong::NeverHits), &["--connections", "2"]);
    assert_eq!(code, Some(1), "{json}");
    assert!(
        errors(&json)["missed hit"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );

    let (code, json) = loadtest(
        wrong_responder(Wrong::AlwaysHits),
        &[
            "--connections",
            "2",
            "--per-request",
            "1",
            "--hit-ratio",
            "0.2",
        ],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(
        errors(&json)["false hit"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );

    // A server that hangs up: its outstanding requests are lost (reported apart from
    // wrong answers), the connections are made again, the run fails.
    let (code, json) = loadtest(
        wrong_responder(Wrong::HangsUp),
        &["--connections", "2", "--hit-ratio", "0", "--depth", "4"],
    );
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(errors(&json), serde_json::json!({}), "{json}");
    assert!(json["runs"][0]["lost"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(
        json["runs"][0]["reconnects"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    // Without reconnecting, they count as dropped-connection errors.
    let (code, json) = loadtest(
        wrong_responder(Wrong::HangsUp),
        &[
            "--connections",
            "2",
            "--hit-ratio",
            "0",
            "--depth",
            "4",
            "--reconnect-on-error",
            "false",
        ],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(
        errors(&json)["dropped connection"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
}

#[test]
fn non_loopback_targets_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--addr", "192.0.2.1:16666", "--duration", "1"])
        .output()
        .expect("run loadtest");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}
