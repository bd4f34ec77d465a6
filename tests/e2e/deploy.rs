//! The deployment files in `deploy/`: they must be valid for the tools that read them.
//!
//! `deploy/tracer.service` is checked by `systemd-analyze verify` (where systemd is
//! installed) and for the settings tracer depends on; `deploy/haproxy.cfg` by
//! `haproxy -c` (where HAProxy is installed) and for its health checks, whose
//! line-protocol sequence is also run against a real server: it must pass on a
//! serving replica and fail on one that is stopping.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{any_io, stderr, stdout, tracer, Server, TempDir, BIN};

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `name` on `PATH` (and in the sbin directories, where distributions put haproxy).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A systemd unit file as (section, key, value), in file order; keys may repeat.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn service_values<'a>(entries: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn service_value<'a>(entries: &'a [(String, String, String)], key: &str) -> &'a str {
    match service_values(entries, key).as_slice() {
        [one] => one,
        other => panic!(
            "tracer.service: [Service] {key}= set {} times, expected once",
            other.len()
        ),
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: deploy/tracer.service not verified");
        return;
    };
    // verify checks that ExecStart's binary exists: point it at this build's.
    let text = read(&deploy("tracer.service"));
    assert!(
        text.contains("\nExecStart=/usr/bin/tracer "),
        "ExecStart no longer starts /usr/bin/tracer"
    );
    let dir = TempDir::new("deploy-unit");
    let unit = dir.path("tracer.service");
    std::fs::write(
        &unit,
        text.replace(
            "\nExecStart=/usr/bin/tracer ",
            &format!("\nExecStart={} ", &*BIN),
        ),
    )
    .expect("write unit");
    let o = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        o.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn unit_sets_what_tracer_relies_on() {
    let e = unit_entries(&read(&deploy("tracer.service")));
    assert_eq!(
        service_value(&e, "Type"),
        "notify",
        "READY=1 is sent once the index is served"
    );
    assert_eq!(
        service_value(&e, "ExecStart"),
        "/usr/bin/tracer serve --config /etc/tracer/tracer.toml"
    );
    assert_eq!(service_value(&e, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(service_value(&e, "User"), "tracer");
    assert_eq!(service_value(&e, "StateDirectory"), "tracer");
    assert_eq!(service_value(&e, "Restart"), "on-failure");
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ] {
        assert_eq!(service_value(&e, key), want, "{key}");
    }
    let nofile: u64 = service_value(&e, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE a number");
    assert!(
        nofile >= 65536,
        "LimitNOFILE={nofile}: KUMA opens many connections"
    );

    // systemd must not kill a drain that would have finished.
    let config: toml::Table = read(&deploy("tracer.toml"))
        .parse()
        .expect("deploy/tracer.toml");
    let drain = config
        .get("drain_timeout")
        .and_then(|v| v.as_str())
        .map(|s| humantime::parse_duration(s).expect("drain_timeout"))
        .unwrap_or(Duration::from_secs(5));
    let stop =
        humantime::parse_duration(service_value(&e, "TimeoutStopSec")).expect("TimeoutStopSec");
    assert!(
        stop > drain,
        "TimeoutStopSec {stop:?} must exceed drain_timeout {drain:?}"
    );

    // A system-call allow-list must keep io_uring (tracer falls back to epoll without
    // it, at a cost), and no deny-list may take it away.
    let filters = service_values(&e, "SystemCallFilter");
    let (deny, allow): (Vec<&str>, Vec<&str>) = filters.iter().partition(|f| f.starts_with('~'));
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        if !allow.is_empty() {
            assert!(
                allow
                    .iter()
                    .any(|f| f.split_whitespace().any(|w| w == call)),
                "SystemCallFilter allows a list without {call}"
            );
        }
        for d in &deny {
            assert!(
                !d.contains(call) && !d.contains("@aio") && !d.contains("@io-uring"),
                "SystemCallFilter={d} blocks io_uring"
            );
        }
    }
}

/// The sections of an HAProxy configuration: header line → directives.
fn haproxy_sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some((_, body)) = out.last_mut() {
                body.push(trimmed.to_string());
            }
        } else {
            out.push((trimmed.to_string(), Vec::new()));
        }
    }
    out
}

/// The one section of `kind` (`frontend`, `backend`) in `mode`, picked by `pick`.
fn section_with<'a>(
    sections: &'a [(String, Vec<String>)],
    kind: &str,
    mode: &str,
    pick: impl Fn(&str, &[String]) -> bool,
) -> (&'a str, &'a [String]) {
    let found: Vec<_> = sections
        .iter()
        .filter(|(h, body)| {
            h.starts_with(kind)
                && body.iter().any(|d| d == &format!("mode {mode}"))
                && pick(h, body)
        })
        .collect();
    assert_eq!(found.len(), 1, "haproxy.cfg: one {kind} in mode {mode}");
    let name = found[0].0.split_whitespace().nth(1).unwrap_or("");
    (name, &found[0].1)
}

/// The backend in `mode` and the frontend that sends to it.
fn proxy_pair<'a>(
    sections: &'a [(String, Vec<String>)],
    mode: &str,
) -> (&'a [String], &'a [String]) {
    let (name, backend) = section_with(sections, "backend", mode, |_, _| true);
    let (_, frontend) = section_with(sections, "frontend", mode, |_, body| {
        body.iter().any(|d| d == &format!("default_backend {name}"))
    });
    (frontend, backend)
}

fn directive_duration(body: &[String], prefix: &str) -> Duration {
    let v = body
        .iter()
        .find_map(|d| d.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("haproxy.cfg: no `{prefix}`"));
    humantime::parse_duration(v.trim()).unwrap_or_else(|e| panic!("`{prefix}{v}`: {e}"))
}

/// One step of the line-protocol health check, as HAProxy runs it.
#[derive(Debug)]
enum CheckStep {
    Send(Vec<u8>),
    Expect(String),
}

/// The `tcp-check send`/`expect string` steps of the line-protocol backend, with
/// HAProxy's escapes (`\n`, `\r`, `\ `) resolved.
fn line_check(body: &[String]) -> Vec<CheckStep> {
    let unescape = |s: &str| {
        s.replace("\\n", "\n")
            .replace("\\r", "\r")
            .replace("\\ ", " ")
    };
    let without_comment = |s: &str| s.split(" comment ").next().unwrap_or(s).to_string();
    body.iter()
        .filter_map(|d| {
            if let Some(data) = d.strip_prefix("tcp-check send ") {
                Some(CheckStep::Send(
                    unescape(&without_comment(data)).into_bytes(),
                ))
            } else {
                d.strip_prefix("tcp-check expect string ")
                    .map(|s| CheckStep::Expect(unescape(&without_comment(s))))
            }
        })
        .collect()
}

#[test]
fn haproxy_config_checks_both_protocols() {
    let sections = haproxy_sections(&read(&deploy("haproxy.cfg")));
    let (tcp_front, tcp) = proxy_pair(&sections, "tcp");
    assert!(tcp.iter().any(|d| d == "balance leastconn"));
    assert!(tcp.iter().any(|d| d == "option tcp-check"));
    let steps = line_check(tcp);
    assert!(
        matches!(&steps[..2], [CheckStep::Send(s), CheckStep::Expect(e)]
            if s.as_slice() == b"X-KF-ReplyBackPING\n" && e == "PONG"),
        "the line-protocol check must start with X-KF-ReplyBackPING → PONG: {steps:?}"
    );
    assert!(tcp
        .iter()
        .filter(|d| d.starts_with("server "))
        .all(|d| d.contains(" check")));
    assert!(
        tcp.iter().all(|d| !d.contains("shutdown-sessions")),
        "it would cut answers in flight"
    );
    // KUMA's connections are long-lived and may idle for hours.
    assert!(directive_duration(tcp_front, "timeout client ") >= Duration::from_secs(3600));
    assert!(directive_duration(tcp, "timeout server ") >= Duration::from_secs(3600));

    let (http_front, http) = proxy_pair(&sections, "http");
    assert!(http.iter().any(|d| d == "option httpchk GET /health"));
    assert!(http.iter().any(|d| d == "http-check expect status 200"));
    assert!(http
        .iter()
        .filter(|d| d.starts_with("server "))
        .all(|d| d.contains(" check")));
    assert!(
        http_front
            .iter()
            .any(|d| d.starts_with("bind ") && d.contains(" ssl crt ")),
        "TLS ends at HAProxy"
    );
}

/// Run the check steps against `addr` as HAProxy would: `Ok` when every expected
/// string arrived.
fn run_check(addr: std::net::SocketAddr, steps: &[CheckStep]) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    for step in steps {
        match step {
            CheckStep::Send(bytes) => s.write_all(bytes).map_err(|e| format!("send: {e}"))?,
            CheckStep::Expect(want) => {
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&got).contains(want.as_str()) {
                    match s.read(&mut buf) {
                        Ok(0) => return Err(format!("closed before {want:?}")),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(format!("waiting for {want:?}: {e}")),
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn haproxy_line_check_passes_on_a_serving_replica_and_fails_on_a_stopping_one() {
    let sections = haproxy_sections(&read(&deploy("haproxy.cfg")));
    let steps = line_check(proxy_pair(&sections, "tcp").1);
    let server = Server::demo(any_io());
    for _ in 0..3 {
        run_check(server.addr, &steps).expect("check against a serving replica");
    }
    // A connection held open keeps the drain going while the check runs. Once the
    // drain has begun, a new connection is refused (listener closed) or, taken in
    // from the accept queue, answers PING and closes: the lookup after PONG fails.
    // (A check connection opened just before the signal may pass once; HAProxy's
    // `fall 2` covers it.)
    let mut held = server.connect();
    held.write_all(b"X-KF-ReplyBack").expect("send preamble");
    server.signal("TERM");
    server.wait_log("shutting down");
    std::thread::sleep(Duration::from_millis(30));
    let result = run_check(server.addr, &steps);
    assert!(result.is_err(), "the check passed on a draining replica");
}

#[test]
fn haproxy_accepts_the_example_config() {
    let Some(haproxy) = which("haproxy") else {
        eprintln!("haproxy is not installed: deploy/haproxy.cfg not checked with haproxy -c");
        return;
    };
    // HAProxy reads the certificate while checking: a throwaway pair in a temp copy.
    let dir = TempDir::new("deploy-haproxy");
    let tls = dir.path("tls");
    let o = tracer(&[
        "cert",
        "--host",
        "localhost",
        "--out",
        tls.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "tracer cert: {}", stderr(&o));
    let pem = dir.path("tracer.pem");
    let pair = read(&tls.join("cert.pem")) + &read(&tls.join("key.pem"));
    std::fs::write(&pem, pair).expect("write pem");
    let text = read(&deploy("haproxy.cfg"));
    assert!(
        text.contains("/etc/haproxy/tracer.pem"),
        "the certificate path moved"
    );
    let cfg = dir.path("haproxy.cfg");
    std::fs::write(
        &cfg,
        text.replace("/etc/haproxy/tracer.pem", pem.to_str().expect("utf-8 path")),
    )
    .expect("write config");
    let o = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("run haproxy -c");
    assert!(
        o.status.success(),
        "haproxy -c:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}
