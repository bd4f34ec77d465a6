//! A MISP-like upstream on loopback for measuring enrichers: the same server the
//! end-to-end tests use (`tests/e2e/upstream.rs`), run from the command line.
//!
//! ```text
//! cargo run --release --example mock_misp -- --listen 127.0.0.1:18080 --key k \
//!     [--delay-ms 5] [--hang] [--fail] [--known hits.txt] [--exit-after 600]
//! ```
//!
//! `--known` takes `key=value` lines (as `tracer generate` writes them): those values
//! are answered with one attribute, every other value with "nothing found". It exits
//! by itself after `--exit-after` seconds (default 600).

#[allow(dead_code)]
#[path = "../tests/e2e/upstream.rs"]
mod upstream;

use std::collections::HashSet;
use std::time::Duration;

fn main() {
    let mut listen = "127.0.0.1:18080".to_string();
    let mut key = String::new();
    let mut mode = upstream::Mode::Normal;
    let mut known = HashSet::new();
    let mut exit_after = 600u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--listen" => listen = value(),
            "--key" => key = value(),
            "--delay-ms" => {
                let ms = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--delay-ms: milliseconds"));
                mode = upstream::Mode::Slow(Duration::from_millis(ms));
            }
            "--hang" => mode = upstream::Mode::Hang,
            "--fail" => mode = upstream::Mode::Fail,
            "--known" => {
                let path = value();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| usage(&format!("--known {path}: {e}")));
                known.extend(
                    text.lines()
                        .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_string())),
                );
            }
            "--exit-after" => {
                exit_after = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--exit-after: seconds"))
            }
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    let ip: std::net::SocketAddr = listen
        .parse()
        .unwrap_or_else(|_| usage("--listen: address:port"));
    if !ip.ip().is_loopback() {
        usage("--listen must be a loopback address");
    }
    let up = upstream::Upstream::start_on(&listen, &key, known);
    up.set(mode);
    eprintln!("mock MISP on {} ({mode:?})", up.url());
    std::thread::sleep(Duration::from_secs(exit_after));
    eprintln!("mock MISP: {} calls", up.calls());
}

fn usage(problem: &str) -> ! {
    eprintln!("mock_misp: {problem}");
    eprintln!("usage: mock_misp --listen 127.0.0.1:PORT --key KEY [--delay-ms N] [--hang] [--fail] [--known FILE] [--exit-after SECS]");
    std::process::exit(2)
}
