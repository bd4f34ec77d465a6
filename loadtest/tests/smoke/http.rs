//! `--http` against tracer's own HTTP API (in-process, demo feeds, plain and TLS),
//! and against fake `cybertrace-http` servers (hyper on 127.0.0.1, plain and TLS with
//! certificates made for the test): right ones it must pass, wrong ones it must
//! catch, and ones that hang up, whose requests it must count as lost.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use serde_json::{json, Value};

/// The workload: `key=value` lines, as `tracer generate` writes them.
const HITS: &[&str] = &[
    "url=http://hit.example/a/b",
    "ip=10.13.5.5",
    "hash=44D88612FEA8A8F36DE82E1278ABB02F",
    "domain=bad.example",
];
const MISSES: &[&str] = &[
    "url=http://miss.invalid/x?y=1",
    "ip=198.18.0.1",
    "hash=F0F00000000000000000000000000001",
    "domain=miss.invalid",
];
/// What the fake servers accept: `kuma` / `s3cret`.
const CREDENTIALS: &str = "Basic a3VtYTpzM2NyZXQ=";

/// How a fake server answers.
#[derive(Clone, Copy)]
enum Fake {
    /// As SPEC §12 says.
    Right,
    /// `not detected` for everything.
    NeverHits,
    /// The elements in reverse order.
    Reversed,
    /// This status, for every request.
    Status(u16),
    /// Answers this many requests on each connection, then closes it unanswered.
    HangsUpAfter(usize),
}

/// A running fake server: where, and how many connections it accepted.
struct Server {
    url: String,
    accepted: Arc<AtomicUsize>,
}

fn fake_server(kind: Fake, tls: Option<Arc<ServerConfig>>) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(TokioIo::new(stream), kind).await,
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(TokioIo::new(stream), kind).await;
                            }
                        }
                    }
                });
            }
        });
    });
    Server {
        url: format!("{scheme}://{addr}/api/1.1/lookup"),
        accepted,
    }
}

async fn serve<I>(io: I, kind: Fake)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let answered = Arc::new(AtomicUsize::new(0));
    let service = hyper::service::service_fn(move |req| {
        let n = answered.fetch_add(1, Ordering::Relaxed);
        answer(kind, n, req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// The answer to the `n`th request on a connection. An error closes the connection
/// without an answer.
async fn answer(
    kind: Fake,
    n: usize,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let status = |code: u16| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        Ok(r)
    };
    match kind {
        Fake::HangsUpAfter(limit) if n >= limit => return Err(std::io::Error::other("hanging up")),
        Fake::Status(code) => return status(code),
        _ => {}
    }
    let headers = req.headers();
    if headers.get(AUTHORIZATION).map(|v| v.as_bytes()) != Some(CREDENTIALS.as_bytes()) {
        return status(401);
    }
    if req.method() != Method::POST || req.uri().path() != "/api/1.1/lookup" {
        return status(404);
    }
    if headers.get(CONTENT_TYPE).map(|v| v.as_bytes()) != Some(b"application/json")
        || headers.get(ACCEPT).map(|v| v.as_bytes()) != Some(b"application/json")
    {
        return status(406);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let Ok(Value::Array(objects)) = serde_json::from_slice(&body) else {
        return status(400);
    };
    let hits: HashSet<&str> = HITS
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v)
        .collect();
    let mut elements = Vec::new();
    for o in &objects {
        let Some(value) = o["object"].as_str() else {
            return status(400);
        };
        elements.push(
            if hits.contains(value) && !matches!(kind, Fake::NeverHits) {
                json!({"object": value, "result": "detected", "categories": [
                {"category": "Fake", "detected_indicator": value, "context": {"k": "v"}}]})
            } else {
                json!({"object": value, "result": "not detected", "categories": []})
            },
        );
    }
    if let Fake::Reversed = kind {
        elements.reverse();
    }
    let mut r = Response::new(Full::new(Bytes::from(Value::Array(elements).to_string())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// A directory of its own for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-http-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The workload files, written once per test.
fn workload(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (hits, misses) = (dir.join("hits.txt"), dir.join("misses.txt"));
    std::fs::write(&hits, HITS.join("\n")).expect("hits");
    std::fs::write(&misses, MISSES.join("\n")).expect("misses");
    (hits, misses)
}

/// The certificate a TLS fake server shows, and what `--ca-file` then holds.
#[derive(Clone, Copy)]
enum Cert {
    /// Self-signed for 127.0.0.1 and localhost; the file holds it.
    SelfSigned,
    /// The same, marked `CA:TRUE` (as `openssl req -x509` makes it); the file holds it.
    SelfSignedCa,
    /// Issued by a CA, for 127.0.0.1 and localhost or (`right_name` false) for
    /// another name only; the file holds the CA.
    FromCa { right_name: bool },
}

/// Make `cert`, write the PEM file for `--ca-file` in `dir`, and return it with a
/// server config showing the certificate (`tls12_only`: TLS 1.2, else the defaults).
fn tls(dir: &std::path::Path, cert: Cert, tls12_only: bool) -> (PathBuf, Arc<ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let names = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let key = KeyPair::generate().expect("key");
    let (shown, trusted) = match cert {
        Cert::SelfSigned | Cert::SelfSignedCa => {
            let mut params = CertificateParams::new(names()).expect("params");
            if let Cert::SelfSignedCa = cert {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            let c = params.self_signed(&key).expect("certificate");
            (c.der().clone(), c.pem())
        }
        Cert::FromCa { right_name } => {
            let ca_key = KeyPair::generate().expect("CA key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
            let issuer = Issuer::new(ca_params, ca_key);
            let leaf_names = if right_name {
                names()
            } else {
                vec!["other.example".to_string()]
            };
            let leaf = CertificateParams::new(leaf_names)
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("leaf certificate");
            (leaf.der().clone(), ca.pem())
        }
    };
    let pem = dir.join("cert.pem");
    std::fs::write(&pem, trusted).expect("write cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .expect("versions");
    let config = builder
        .with_no_client_auth()
        .with_single_cert(vec![shown], key)
        .expect("server config");
    (pem, Arc::new(config))
}

/// Run loadtest against `url` with the demo workload; its exit code and JSON report.
fn loadtest_demo(url: &str, extra: &[&str]) -> (Option<i32>, Value) {
    run_loadtest(None, url, extra)
}

/// Run loadtest against `url` with the test workload, written in `dir`.
fn loadtest(dir: &std::path::Path, url: &str, extra: &[&str]) -> (Option<i32>, Value) {
    run_loadtest(Some(dir), url, extra)
}

fn run_loadtest(dir: Option<&std::path::Path>, url: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    if let Some(dir) = dir {
        let (hits, misses) = workload(dir);
        cmd.arg("--hits").arg(&hits).arg("--misses").arg(&misses);
    }
    cmd.args([
        "--http",
        url,
        "--duration",
        "1.5",
        "--warmup",
        "0.3",
        "--json",
    ]);
    if !extra.contains(&"--hit-ratio") {
        cmd.args(["--hit-ratio", "0.4"]);
    }
    if !extra.contains(&"--user") {
        cmd.args(["--user", "kuma", "--password", "s3cret"]);
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

fn run0(json: &Value) -> &Value {
    &json["runs"][0]
}

/// A clean run: no errors, nothing lost, a fair number of requests, exit 0.
fn assert_clean(code: Option<i32>, json: &Value) {
    let r = run0(json);
    assert_eq!(r["errors"], json!({}), "{json}");
    assert_eq!(r["lost"], 0, "{json}");
    assert!(r["requests"].as_u64().unwrap_or(0) > 50, "{json}");
    assert_eq!(code, Some(0), "{json}");
}

/// tracer with the demo feeds and its HTTP API on 127.0.0.1 (TLS with a certificate
/// made as `tracer cert` makes it, written in `dir`), one user `kuma` / `s3cret`.
fn demo_server(dir: Option<&std::path::Path>) -> (Server, tracer::serve::Server) {
    use tracer::serve::config::{Credential, HttpSettings, HttpUser, TlsFiles};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut config = tracer::serve::Config::new("127.0.0.1:0".parse().expect("addr"));
    config.threads = 2;
    let mut http = HttpSettings::new("127.0.0.1:0".parse().expect("addr"));
    http.users = vec![HttpUser {
        name: "kuma".into(),
        credential: Credential::Password("s3cret".into()),
    }];
    if let Some(dir) = dir {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        http.tls = Some(files);
    }
    config.http = Some(http);
    let server = tracer::serve::Server::start(config, tracer::engine::Sources::demo(&fixtures))
        .expect("server starts");
    let addr = server.http_addr().expect("HTTP listener");
    let scheme = if dir.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/api/1.1/lookup");
    (
        Server {
            url,
            accepted: Arc::default(),
        },
        server,
    )
}

#[test]
fn http_runs_against_tracers_http_api_have_no_errors() {
    let dir = scratch("demo");
    for (name, tls) in [("plain", None), ("tls", Some(dir.as_path()))] {
        let (server, tracer) = demo_server(tls);
        let ca = dir.join("cert.pem");
        let ca = ca.to_str().expect("utf-8");
        let trust: &[&str] = if tls.is_some() {
            &["--ca-file", ca]
        } else {
            &[]
        };
        for extra in [
            &["--connections", "4"][..],
            &["--connections", "4", "--objects-per-request", "10"],
            &["--connections", "4", "--rate", "400"],
        ] {
            let args: Vec<&str> = extra.iter().chain(trust).copied().collect();
            let (code, json) = loadtest_demo(&server.url, &args);
            assert_clean(code, &json);
            assert_eq!(run0(&json)["reconnects"], 0, "{name} {extra:?}: {json}");
        }
        let mut args = vec![
            "--connections",
            "2",
            "--user",
            "kuma",
            "--password",
            "wrong",
        ];
        args.extend(trust);
        let (code, json) = loadtest_demo(&server.url, &args);
        assert_eq!(code, Some(1), "{json}");
        assert!(
            run0(&json)["errors"]["HTTP status 401"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{name}: {json}"
        );
        tracer.shutdown();
    }
}

#[test]
fn http_runs_against_a_right_server_pass_on_kept_alive_connections() {
    let dir = scratch("right");
    let server = fake_server(Fake::Right, None);
    let (code, json) = loadtest(
        &dir,
        &server.url,
        &["--connections", "4", "--objects-per-request", "5"],
    );
    assert_clean(code, &json);
    let r = run0(&json);
    assert_eq!(r["target"], server.url.as_str(), "{json}");
    assert_eq!(
        r["indicators"].as_u64(),
        r["requests"].as_u64().map(|n| 5 * n),
        "objects count as lookups: {json}"
    );
    assert!(
        r["mode"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP keep-alive, closed loop"),
        "{json}"
    );
    // Every request went over the four connections made at the start.
    assert_eq!(server.accepted.load(Ordering::Relaxed), 4, "{json}");
    assert_eq!(r["reconnects"], 0, "{json}");

    // --churn replaces connections between answers, losing nothing.
    let server = fake_server(Fake::Right, None);
    let (code, json) = loadtest(
        &dir,
        &server.url,
        &["--connections", "4", "--churn", "2", "--churn-every", "0.2"],
    );
    assert_clean(code, &json);
    assert!(
        run0(&json)["reconnects"].as_u64().unwrap_or(0) >= 4,
        "{json}"
    );
    assert!(server.accepted.load(Ordering::Relaxed) >= 8, "{json}");
}

#[test]
fn http_open_loop_paces_requests_and_reports_send_lateness() {
    let dir = scratch("rate");
    let server = fake_server(Fake::Right, None);
    let (code, json) = loadtest(&dir, &server.url, &["--connections", "4", "--rate", "400"]);
    assert_clean(code, &json);
    let r = run0(&json);
    let rate = r["requests_per_sec"].as_f64().unwrap_or(0.0);
    assert!((300.0..=450.0).contains(&rate), "{json}");
    assert!(r["send_lateness_us"]["p50"].as_u64().is_some(), "{json}");
}

#[test]
fn https_with_the_servers_certificate_its_ca_or_insecure_passes() {
    for (name, cert) in [
        ("self-signed", Cert::SelfSigned),
        ("self-signed-ca", Cert::SelfSignedCa),
        ("from-ca", Cert::FromCa { right_name: true }),
    ] {
        let dir = scratch(name);
        let (pem, config) = tls(&dir, cert, false);
        let server = fake_server(Fake::Right, Some(config));
        let ca_file = pem.to_str().expect("utf-8 path");
        let (code, json) = loadtest(
            &dir,
            &server.url,
            &["--connections", "2", "--ca-file", ca_file],
        );
        assert_clean(code, &json);
        assert_eq!(server.accepted.load(Ordering::Relaxed), 2, "{name}: {json}");
        if let Cert::FromCa { .. } = cert {
            // The certificate also names localhost, which resolves to loopback.
            let by_name = server.url.replace("127.0.0.1", "localhost");
            let (code, json) = loadtest(
                &dir,
                &by_name,
                &["--connections", "2", "--ca-file", ca_file],
            );
            assert_clean(code, &json);
        }
    }

    // --insecure, and TLS 1.2 (its own signature check in the accept-any verifier).
    let dir = scratch("insecure");
    let (_, config) = tls(&dir, Cert::FromCa { right_name: false }, true);
    let server = fake_server(Fake::Right, Some(config));
    let (code, json) = loadtest(&dir, &server.url, &["--connections", "2", "--insecure"]);
    assert_clean(code, &json);
}

#[test]
fn https_with_an_untrusted_certificate_fails_to_connect() {
    let other = scratch("untrusted-other");
    let (other_pem, _) = tls(&other, Cert::SelfSigned, false);
    for (name, cert, ca_file, why) in [
        (
            "unknown",
            Cert::SelfSigned,
            Some(other_pem),
            "invalid peer certificate",
        ),
        (
            "wrong-name",
            Cert::FromCa { right_name: false },
            None,
            "not valid for name",
        ),
    ] {
        let dir = scratch(name);
        let (pem, config) = tls(&dir, cert, false);
        let ca_file = ca_file.unwrap_or(pem);
        let server = fake_server(Fake::Right, Some(config));
        let (code, json) = loadtest(
            &dir,
            &server.url,
            &[
                "--connections",
                "1",
                "--ca-file",
                ca_file.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(code, Some(1), "{name}: {json}");
        let r = run0(&json);
        assert_eq!(r["requests"], 0, "{name}: {json}");
        assert!(
            r["connect_failures"].as_u64().unwrap_or(0) > 0,
            "{name}: {json}"
        );
        assert!(
            r["first_lost"].to_string().contains(why),
            "{name}: the TLS error is shown: {json}"
        );
    }
}

#[test]
fn http_error_statuses_and_wrong_answers_fail_the_run() {
    let dir = scratch("wrong");
    let server = fake_server(Fake::Right, None);
    let (code, json) = loadtest(
        &dir,
        &server.url,
        &[
            "--connections",
            "2",
            "--user",
            "kuma",
            "--password",
            "wrong",
        ],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(
        run0(&json)["errors"]["HTTP status 401"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{json}"
    );

    for (kind, error) in [
        (Fake::Status(429), "HTTP status 429"),
        (Fake::Status(503), "HTTP status 503"),
        (Fake::NeverHits, "missed hit"),
    ] {
        let server = fake_server(kind, None);
        let (code, json) = loadtest(&dir, &server.url, &["--connections", "2"]);
        assert_eq!(code, Some(1), "{error}: {json}");
        assert!(
            run0(&json)["errors"][error].as_u64().unwrap_or(0) > 0,
            "{error}: {json}"
        );
    }

    // Two different objects answered in reverse order.
    let server = fake_server(Fake::Reversed, None);
    let (code, json) = loadtest(
        &dir,
        &server.url,
        &[
            "--connections",
            "2",
            "--objects-per-request",
            "2",
            "--hit-ratio",
            "0.5",
        ],
    );
    assert_eq!(code, Some(1), "{json}");
    assert!(
        run0(&json)["errors"]["out of order"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
}

#[test]
fn http_connections_that_hang_up_lose_their_request_and_are_made_again() {
    let dir = scratch("hangup");
    let server = fake_server(Fake::HangsUpAfter(20), None);
    let (code, json) = loadtest(&dir, &server.url, &["--connections", "2"]);
    assert_eq!(code, Some(1), "{json}");
    let r = run0(&json);
    assert_eq!(r["errors"], json!({}), "{json}");
    assert!(r["lost"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(r["reconnects"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(server.accepted.load(Ordering::Relaxed) > 2, "{json}");

    // Without reconnecting, the request counts as a dropped-connection error.
    let server = fake_server(Fake::HangsUpAfter(20), None);
    let (code, json) = loadtest(
        &dir,
        &server.url,
        &["--connections", "2", "--reconnect-on-error", "false"],
    );
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(run0(&json)["errors"]["dropped connection"], 2, "{json}");
    assert_eq!(server.accepted.load(Ordering::Relaxed), 2, "{json}");
}

#[test]
fn http_refuses_non_loopback_hosts_and_https_without_trust() {
    for (args, message) in [
        (
            &["--http", "http://192.0.2.1:9443/api/1.1/lookup"][..],
            "not a loopback address",
        ),
        (
            &["--http", "https://127.0.0.1:9443/api/1.1/lookup"],
            "--ca-file",
        ),
        (
            &[
                "--http",
                "http://127.0.0.1:9443/api/1.1/lookup",
                "--depth",
                "4",
            ],
            "--depth",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(args)
            .args(["--duration", "1"])
            .output()
            .expect("run loadtest");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
