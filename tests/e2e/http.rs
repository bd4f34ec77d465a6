//! The HTTP API (SPEC §12) over real sockets: a raw HTTP/1.1 client for exact bytes
//! and malformed requests, and reqwest over real TLS (trusting a certificate made by
//! `tracer cert`) for what KUMA does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::upstream::{self, Mode, Upstream};
use crate::util::*;

/// A response read off a raw connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Read one response (Content-Length, chunked, or up to the close).
fn read_resp(r: &mut BufReader<TcpStream>) -> Option<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(n) = get("content-length") {
        body.resize(n.parse().ok()?, 0);
        r.read_exact(&mut body).ok()?;
    } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).ok()?;
    }
    Some(Resp {
        status,
        headers,
        body,
    })
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    BufReader::new(s)
}

/// One request on a new connection.
fn request(addr: &str, bytes: &[u8]) -> Resp {
    let mut c = connect(addr);
    c.get_mut().write_all(bytes).expect("send");
    read_resp(&mut c).expect("a response")
}

fn post(path: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: tracer\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn lookup(objects: &[&str]) -> String {
    let list: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| serde_json::json!({ "object": o }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The address in the `HTTP API on …` log line, once the index is loaded.
fn http_addr(srv: &Server) -> String {
    srv.wait_log("index ready");
    http_addr_now(srv)
}

/// The address in the `HTTP API on …` log line, loaded or not.
fn http_addr_now(srv: &Server) -> String {
    srv.wait_log("HTTP API on ");
    let log = srv.log();
    let rest = log.split("HTTP API on ").nth(1).expect("HTTP API line");
    let rest = rest.split("://").nth(1).expect("scheme");
    rest.split('/').next().expect("address").to_string()
}

fn config(dir: &TempDir, http: &str, rest: &str) -> PathBuf {
    let path = dir.path("tracer.toml");
    let fixtures = fixtures();
    let feeds: String = [
        ("demo_ioc.csv", "ioc", "auto"),
        ("Phishing_URL_Data_Feed.json", "mask", "url"),
        ("Malicious_Hash_Data_Feed.json", "MD5", "hash"),
        ("ip_reputation.csv", "ip", "ip"),
        ("bad_domains.txt", "domain", "domain"),
    ]
    .iter()
    .map(|(f, k, kind)| {
        format!(
            "[[feed]]\npath = {:?}\nkey = \"{k}\"\nkind = \"{kind}\"\n\n",
            fixtures.join(f).display().to_string()
        )
    })
    .collect();
    std::fs::write(
        &path,
        format!("{rest}\n{feeds}[http]\nlisten = \"127.0.0.1:0\"\n{http}\n"),
    )
    .expect("write config");
    path
}

/// A `misp` enricher asking `up` (key `k`), with `more` settings.
fn misp(up: &Upstream, more: &str) -> String {
    format!(
        "[[enricher]]\nname = \"misp\"\ntype = \"misp\"\nurl = {:?}\nkey = \"k\"\n{more}",
        up.url()
    )
}

/// The answer to `req` once its status is `wanted`, or the last one after 10 s: for
/// what the server does in its own time (a place taken or freed).
fn answer_once(addr: &str, req: &[u8], wanted: u16) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(addr, req);
        if r.status == wanted || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(cfg: &Path, args: &[&str]) -> Server {
    let mut all = vec!["--config", cfg.to_str().expect("path")];
    all.extend_from_slice(args);
    Server::start(any_io(), &all)
}

/// `tracer passwd` for `password`.
fn hash_of(password: &str) -> String {
    let mut child = std::process::Command::new(&*BIN)
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("passwd output");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

#[test]
fn every_error_status_is_answered_with_json_and_the_connection_stays_usable() {
    let dir = TempDir::new("http-statuses");
    let hash = hash_of("correct horse");
    let cfg = config(
        &dir,
        &format!("tls = false\nmax_body = 4096\n\n[[http.user]]\nname = \"kuma\"\npassword_hash = {hash:?}\n"),
        "",
    );
    let srv = serve(&cfg, &["--metrics", "127.0.0.1:0"]);
    let addr = http_addr(&srv);
    let auth = basic("kuma", "correct horse");
    let ok = lookup(&["gmer.com"]);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (post("/api/1.1/lookup", "", &ok), 401, "no credentials"),
        (
            post("/api/1.1/lookup", &basic("kuma", "wrong"), &ok),
            401,
            "wrong password",
        ),
        (
            post("/api/1.1/lookup", &basic("nobody", "x"), &ok),
            401,
            "unknown user",
        ),
        (
            post("/api/1.1/lookup", "Authorization: Bearer abc\r\n", &ok),
            401,
            "other scheme",
        ),
        (post("/api/9.9/lookup", &auth, &ok), 404, "unknown version"),
        (post("/nothing", &auth, &ok), 404, "other path"),
        (
            format!("GET /api/1.1/lookup HTTP/1.1\r\nHost: t\r\n{auth}\r\n").into_bytes(),
            405,
            "GET",
        ),
        (
            post(
                "/api/1.1/lookup",
                &format!("{auth}Accept: text/html\r\n"),
                &ok,
            ),
            406,
            "Accept",
        ),
        (post("/api/1.1/lookup", &auth, "not json"), 400, "not JSON"),
        (
            post("/api/1.1/lookup", &auth, "{\"object\":\"a\"}"),
            400,
            "an object",
        ),
        (post("/api/1.1/lookup", &auth, "[]"), 400, "empty array"),
        (
            post("/api/1.1/lookup", &auth, "[{\"obj\":\"a\"}]"),
            400,
            "no object",
        ),
        (
            post("/api/1.1/lookup", &auth, "[{\"object\":5}]"),
            400,
            "number object",
        ),
        (
            format!(
                "POST /api/1.1/lookup HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 5000\r\n\r\n"
            )
            .into_bytes(),
            413,
            "announced too large",
        ),
    ];
    for (bytes, status, what) in &cases {
        let r = request(&addr, bytes);
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].is_string(), "{what}: {:?}", r.body);
        if *status == 401 {
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic")),
                "{what}"
            );
        }
        if *status == 405 {
            assert_eq!(r.header("allow"), Some("POST"));
        }
    }
    // A body over the limit sent chunked, with no length announced.
    let mut c = connect(&addr);
    let head = format!(
        "POST /api/1.1/lookup HTTP/1.1\r\nHost: t\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    );
    c.get_mut().write_all(head.as_bytes()).expect("send");
    let piece = format!("[{}", "{\"object\":\"a.example\"},".repeat(40));
    for _ in 0..10 {
        let _ = c
            .get_mut()
            .write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
    }
    let r = read_resp(&mut c).expect("a response to the chunked body");
    assert_eq!(r.status, 413);
    // The same connection, after errors that leave it readable, answers a good request.
    let mut c = connect(&addr);
    for bytes in [
        post("/api/1.1/lookup", &auth, "[]"),
        post("/api/1.1/lookup", &auth, &ok),
    ] {
        c.get_mut().write_all(&bytes).expect("send");
    }
    assert_eq!(read_resp(&mut c).expect("first").status, 400);
    let r = read_resp(&mut c).expect("second");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["result"], "detected");
    let m = srv.metrics();
    assert!(m.contains("tracer_http_login_failures_total 4"), "{m}");
    assert!(
        m.contains("tracer_http_requests_total{status=\"401\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("tracer_http_requests_total{status=\"500\"} 0"),
        "{m}"
    );
}

#[test]
fn lookups_answer_in_order_with_categories_and_exact_contexts() {
    let dir = TempDir::new("http-answers");
    // A context that holds the line protocol's escapes literally, and a pipe.
    let feed = dir.path("odd.csv");
    std::fs::write(
        &feed,
        "ioc,note\nodd.example/a%7Cb,\"x|y %0A z\"\nodd.example,plain\n",
    )
    .expect("write feed");
    let cfg = config(
        &dir,
        "tls = false",
        &format!(
            "[[feed]]\npath = {:?}\nkey = \"ioc\"\n",
            feed.display().to_string()
        ),
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let r = request(
        &addr,
        &post(
            "/api/1.1/lookup",
            "Accept: application/json\r\n",
            &lookup(&[
                "https://www.GMER.com/",
                "c1153422c5f68e731347f6a33f791598",
                "nothing.example",
                "odd.example/a%7Cb",
                "185.220.101.1",
            ]),
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let a = v.as_array().expect("array");
    assert_eq!(a.len(), 5);
    assert_eq!(a[0]["object"], "https://www.GMER.com/");
    assert_eq!(a[0]["result"], "detected");
    assert_eq!(a[0]["categories"][0]["category"], "demo_ioc");
    assert_eq!(a[0]["categories"][0]["detected_indicator"], "gmer.com");
    assert_eq!(a[0]["categories"][0]["context"]["context"], "bad_URL");
    assert_eq!(a[2]["result"], "not detected");
    assert_eq!(a[2]["categories"], serde_json::json!([]));
    // The record of `odd.example/a%7Cb` keeps its literal escapes and its pipe.
    let odd = &a[3]["categories"][0];
    assert_eq!(odd["category"], "odd");
    assert_eq!(odd["detected_indicator"], "odd.example/a%7Cb");
    assert_eq!(odd["context"]["note"], "x|y %0A z");
    assert_eq!(a[4]["categories"][0]["category"], "demo_ioc");
    assert_eq!(a[4]["categories"][0]["context"]["context"], "tor_exit_c2");
}

#[test]
fn both_protocols_give_the_same_hits_for_the_demo_lookups() {
    let dir = TempDir::new("http-same");
    let cfg = config(&dir, "tls = false", "");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let objects = [
        "https://www.GMER.com/",
        "http://malware.example.net/payload.exe",
        "185.220.101.1",
        "d41d8cd98f00b204e9800998ecf8427e",
        "CORP-PC-0042",
        "198.51.100.9",
        "44d88612fea8a8f36de82e1278abb02f",
        "nothing.invalid",
    ];
    let r = request(
        &addr,
        &post("/api/1.3/tenant-a/lookup", "", &lookup(&objects)),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    for (i, object) in objects.iter().enumerate() {
        // The line protocol's answer to the same value, sent bare.
        let tcp = exchange(&srv, format!("{object}\n").as_bytes(), 1);
        let mut tcp_hits: Vec<(String, Vec<(String, String)>)> = tcp
            .lines()
            .filter(|l| l.starts_with("Category="))
            .map(|l| {
                let mut parts = l.split('|');
                let cat = parts.next().expect("category")["Category=".len()..].to_string();
                let _matched = parts.next();
                let ctx = parts
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (cat, ctx)
            })
            .collect();
        let mut http_hits: Vec<(String, Vec<(String, String)>)> = v[i]["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .map(|c| {
                let ctx = c["context"]
                    .as_object()
                    .expect("context")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
                    .collect();
                (c["category"].as_str().expect("category").to_string(), ctx)
            })
            .collect();
        tcp_hits.sort();
        http_hits.sort();
        assert_eq!(http_hits, tcp_hits, "{object}: HTTP {} vs TCP {tcp}", v[i]);
        assert_eq!(
            v[i]["result"],
            if tcp_hits.is_empty() {
                "not detected"
            } else {
                "detected"
            }
        );
    }
}

#[test]
fn a_domain_object_is_looked_up_as_url_and_as_domain() {
    let dir = TempDir::new("http-domain");
    let cfg = config(&dir, "tls = false", "");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let domains = std::fs::read_to_string(fixtures().join("bad_domains.txt")).expect("domains");
    let domain = domains
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a domain")
        .trim()
        .to_string();
    let sub = format!("login.{domain}");
    let r = request(&addr, &post("/api/1.1/lookup", "", &lookup(&[&sub])));
    let v = r.json();
    assert_eq!(v[0]["result"], "detected", "{v}");
    // Found once, though looked up as a URL (its host) and as a domain.
    let cats = v[0]["categories"].as_array().expect("categories");
    assert_eq!(cats.len(), 1, "{v}");
    assert_eq!(cats[0]["category"], "bad_domains");
    assert_eq!(cats[0]["detected_indicator"], domain.as_str());
}

#[test]
fn an_enricher_of_every_kind_is_asked_once_about_a_domain_object() {
    let up = Upstream::start("k");
    let dir = TempDir::new("http-domain-enricher");
    let cfg = config(&dir, "tls = false", &misp(&up, ""));
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    // Looked up as a URL and as a domain: MISP (all kinds) is asked once, as a URL,
    // and its one attribute is answered once.
    let r = request(
        &addr,
        &post("/api/1.1/lookup", "", &lookup(&[upstream::KNOWN_DOMAIN])),
    );
    let v = r.json();
    let cats = v[0]["categories"].as_array().expect("categories");
    assert_eq!(cats.len(), 1, "{v}");
    assert_eq!(cats[0]["context"]["value"], upstream::KNOWN_DOMAIN, "{v}");
    assert_eq!(up.calls(), 1);
}

#[test]
fn an_upstream_answer_too_large_to_keep_is_refused() {
    let up = Upstream::start("k");
    up.set(Mode::Huge);
    let dir = TempDir::new("http-huge-upstream");
    let cfg = config(&dir, "tls = false", &misp(&up, "timeout = \"10s\"\n"));
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let r = request(&addr, &post("/api/1.1/lookup", "", &lookup(&["gmer.com"])));
    let v = r.json();
    // The feed hit is there; the enricher's 32 MiB answer was refused, not read.
    let cats = v[0]["categories"].as_array().expect("categories");
    assert!(cats.iter().all(|c| c["category"] != "misp"), "{v}");
    assert!(!cats.is_empty(), "{v}");
    srv.wait_log("the answer is larger than 16 MiB");
}

#[test]
fn keep_alive_pipelining_http10_and_ten_thousand_objects() {
    let dir = TempDir::new("http-conn");
    let cfg = config(&dir, "tls = false", "");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    // Three pipelined requests in one write: three answers, in order.
    let mut c = connect(&addr);
    let mut all = Vec::new();
    for o in ["gmer.com", "nothing.invalid", "185.220.101.1"] {
        all.extend(post("/api/1.0/lookup", "", &lookup(&[o])));
    }
    c.get_mut().write_all(&all).expect("send");
    for (o, result) in [
        ("gmer.com", "detected"),
        ("nothing.invalid", "not detected"),
        ("185.220.101.1", "detected"),
    ] {
        let r = read_resp(&mut c).expect("pipelined answer");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()[0]["object"], o);
        assert_eq!(r.json()[0]["result"], result);
    }
    // HTTP/1.0: answered, then closed.
    let body = lookup(&["gmer.com"]);
    let r = request(
        &addr,
        format!(
            "POST /api/1.1/lookup HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["result"], "detected");
    // 10,000 objects: a streamed answer, every object in order.
    let objects: Vec<String> = (0..10_000)
        .map(|i| {
            if i % 1000 == 7 {
                "gmer.com".to_string()
            } else {
                format!("host{i}.invalid")
            }
        })
        .collect();
    let refs: Vec<&str> = objects.iter().map(String::as_str).collect();
    let r = request(&addr, &post("/api/1.2/lookup", "", &lookup(&refs)));
    assert_eq!(r.status, 200);
    let v = r.json();
    let a = v.as_array().expect("array");
    assert_eq!(a.len(), 10_000);
    for (i, o) in a.iter().enumerate() {
        assert_eq!(o["object"], objects[i].as_str());
        assert_eq!(
            o["result"],
            if i % 1000 == 7 {
                "detected"
            } else {
                "not detected"
            }
        );
    }
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let dir = TempDir::new("http-slow");
    let cfg = config(&dir, "tls = false\nidle_timeout = \"1s\"", "");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let started = Instant::now();
    let mut c = connect(&addr);
    c.get_mut()
        .write_all(b"POST /api/1.1/lookup HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .expect("send");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // An idle keep-alive connection too, after its answer.
    let mut c = connect(&addr);
    c.get_mut()
        .write_all(&post("/api/1.1/lookup", "", &lookup(&["gmer.com"])))
        .expect("send");
    assert_eq!(read_resp(&mut c).expect("answer").status, 200);
    let idle = Instant::now();
    assert!(read_resp(&mut c).is_none(), "closed, not answered");
    assert!(idle.elapsed() < Duration::from_secs(5));
    // The server is fine.
    assert_eq!(
        request(&addr, &post("/api/1.1/lookup", "", &lookup(&["gmer.com"]))).status,
        200
    );
}

#[test]
fn too_early_while_loading_then_health_and_answers() {
    let dir = TempDir::new("http-early");
    // A feed that is a pipe: the load waits until the test writes the feed into it.
    let fifo = dir.path("slow.csv");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok);
    std::fs::write(
        dir.path("tracer.toml"),
        format!(
            "[[feed]]\npath = {:?}\nkey = \"ioc\"\n\n[http]\nlisten = \"127.0.0.1:0\"\ntls = false\n",
            fifo.display().to_string()
        ),
    )
    .expect("config");
    let srv = serve(&dir.path("tracer.toml"), &[]);
    let addr = http_addr_now(&srv);
    let r = request(
        &addr,
        &post("/api/1.1/lookup", "", &lookup(&["late.example"])),
    );
    assert_eq!(r.status, 425, "{}", String::from_utf8_lossy(&r.body));
    let h = request(&addr, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(h.status, 503);
    // The line protocol's connection waits instead, and is answered once loaded.
    let mut tcp = srv.connect();
    tcp.write_all(b"url=late.example\n").expect("send");
    std::fs::write(&fifo, "ioc,context\nlate.example,arrived\n").expect("feed the pipe");
    assert!(read_answers(&mut tcp, 1).contains("context=arrived"));
    srv.wait_log("index ready");
    let h = request(&addr, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let r = request(
        &addr,
        &post("/api/1.1/lookup", "", &lookup(&["late.example"])),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()[0]["categories"][0]["context"]["context"],
        "arrived"
    );
}

#[test]
fn over_max_inflight_is_told_to_retry() {
    let up = Upstream::start("k");
    up.set(Mode::Slow(Duration::from_millis(1500)));
    let dir = TempDir::new("http-inflight");
    let cfg = config(
        &dir,
        "tls = false\nmax_inflight = 1",
        &misp(&up, "timeout = \"2s\"\n"),
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            request(
                &addr,
                &post("/api/1.1/lookup", "", &lookup(&["waits.example"])),
            )
        })
    };
    // Once the slow lookup holds the one place (its upstream call has begun):
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.calls() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = request(&addr, &post("/api/1.1/lookup", "", &lookup(&["gmer.com"])));
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.join().expect("slow request").status, 200);
    assert_eq!(
        request(&addr, &post("/api/1.1/lookup", "", &lookup(&["gmer.com"]))).status,
        200
    );
}

#[test]
fn a_client_that_stops_reading_its_answer_is_closed_and_frees_its_place() {
    let dir = TempDir::new("http-stall");
    let cfg = config(
        &dir,
        "tls = false\nmax_inflight = 1\nidle_timeout = \"1s\"",
        "",
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    // About 30 MB of answer (hits with their context), far more than the sockets
    // buffer: the server blocks writing it, as the client never reads. Made before
    // connecting: a head slower than idle_timeout would be refused for that.
    let objects = vec!["gmer.com"; 100_000];
    let big = post("/api/1.1/lookup", "", &lookup(&objects));
    let mut stalled = TcpStream::connect(&addr).expect("connect");
    stalled.write_all(&big).expect("send");
    let small = post("/api/1.1/lookup", "", &lookup(&["gmer.com"]));
    assert_eq!(
        answer_once(&addr, &small, 429).status,
        429,
        "the stalled lookup holds the one place"
    );
    // Past idle_timeout without progress the stalled connection is closed, and its
    // place is free again.
    assert_eq!(answer_once(&addr, &small, 200).status, 200);
    // What it was sent ends early: the connection was closed mid-answer.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < objects.len() * 100, "{} bytes", got.len());
}

#[test]
fn a_panicking_http_connection_is_closed_alone_and_counted() {
    let dir = TempDir::new("http-panic");
    let cfg = config(&dir, "tls = false", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let fine = post("/api/1.1/lookup", "", &lookup(&["gmer.com"]));
    let mut keep = connect(&addr);
    keep.get_mut().write_all(&fine).expect("send");
    assert_eq!(read_resp(&mut keep).expect("answer").status, 200);
    for _ in 0..3 {
        let mut c = connect(&addr);
        c.get_mut()
            .write_all(&post(
                "/api/1.1/lookup",
                "",
                &lookup(&["tracer-fault:panic"]),
            ))
            .expect("send");
        if let Some(r) = read_resp(&mut c) {
            panic!(
                "a panicking request was answered {} {}; log:\n{}",
                r.status,
                String::from_utf8_lossy(&r.body),
                srv.log()
            );
        }
    }
    // The kept-alive connection and new ones are still answered.
    keep.get_mut().write_all(&fine).expect("send");
    assert_eq!(read_resp(&mut keep).expect("answer").status, 200);
    assert_eq!(request(&addr, &fine).status, 200);
    srv.wait_log("a panic while answering this HTTP connection");
    let body = srv.metrics();
    assert!(
        body.contains("tracer_errors_total{reason=\"panic\"} 3"),
        "{body}"
    );
}

#[test]
fn bodies_held_at_once_are_bounded_in_all() {
    let dir = TempDir::new("http-budget");
    // Budget: 4 × max_body = 4,000 bytes.
    let cfg = config(&dir, "tls = false\nmax_body = 1000", "");
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let fine = post("/api/1.1/lookup", "", &lookup(&["gmer.com"]));
    // Four requests announce 1,000 bytes each and send none of them yet.
    let mut waiting: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).expect("connect");
            c.write_all(
                b"POST /api/1.1/lookup HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n[",
            )
            .expect("send");
            c
        })
        .collect();
    let r = answer_once(&addr, &fine, 429);
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    // One of them gives up: its share is free again.
    drop(waiting.pop());
    let r = answer_once(&addr, &fine, 200);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_reread_configuration_whose_feeds_fail_changes_nothing() {
    let dir = TempDir::new("http-partial-reload");
    let cfg = config(
        &dir,
        &format!(
            "tls = false\n\n[[http.user]]\nname = \"a\"\npassword_hash = {:?}\n",
            hash_of("first")
        ),
        "",
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let body = lookup(&["gmer.com"]);
    let as_b = post("/api/1.1/lookup", &basic("b", "second"), &body);
    assert_eq!(request(&addr, &as_b).status, 401);
    // A second user, and a feed that cannot be read: the reload fails as a whole.
    std::fs::write(dir.path("broken.json"), "[{\"ioc\": ").expect("feed");
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(
        &cfg,
        format!(
            "[[feed]]\npath = {:?}\nkey = \"ioc\"\n\n{text}\n[[http.user]]\nname = \"b\"\npassword_hash = {:?}\n",
            dir.path("broken.json").display().to_string(),
            hash_of("second")
        ),
    )
    .expect("rewrite");
    srv.signal("HUP");
    srv.wait_log("reload failed, still serving the previous index");
    assert_eq!(request(&addr, &as_b).status, 401);
    let as_a = post("/api/1.1/lookup", &basic("a", "first"), &body);
    assert_eq!(request(&addr, &as_a).status, 200);
}

#[test]
fn anonymous_beyond_loopback_is_refused_and_users_reload_on_sighup() {
    let dir = TempDir::new("http-users");
    std::fs::write(
        dir.path("open.toml"),
        "[http]\nlisten = \"0.0.0.0:0\"\ntls = false\n",
    )
    .expect("config");
    let o = tracer(&[
        "check-config",
        dir.path("open.toml").to_str().expect("path"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("allow_anonymous"), "{}", stderr(&o));
    // A password kept in a file; then a second user added by a reload.
    std::fs::write(dir.path("pw"), "file-secret\n").expect("pw");
    let cfg = config(
        &dir,
        "tls = false\n\n[[http.user]]\nname = \"a\"\npassword_file = \"pw\"\n",
        "",
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let body = lookup(&["gmer.com"]);
    assert_eq!(
        request(
            &addr,
            &post("/api/1.1/lookup", &basic("a", "file-secret"), &body)
        )
        .status,
        200
    );
    assert_eq!(
        request(
            &addr,
            &post("/api/1.1/lookup", &basic("b", "second"), &body)
        )
        .status,
        401
    );
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[[http.user]]\nname = \"b\"\npassword_hash = {:?}\n",
            hash_of("second")
        ),
    )
    .expect("rewrite");
    srv.signal("HUP");
    srv.wait_log("users and certificate re-read");
    assert_eq!(
        request(
            &addr,
            &post("/api/1.1/lookup", &basic("b", "second"), &body)
        )
        .status,
        200
    );
    assert_eq!(
        request(
            &addr,
            &post("/api/1.1/lookup", &basic("a", "file-secret"), &body)
        )
        .status,
        200
    );
}

/// A current-thread runtime for reqwest.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn https_client(cert_pem: &[u8]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem).expect("certificate")])
        .build()
        .expect("client")
}

#[test]
fn https_with_a_generated_certificate_and_a_user() {
    let dir = TempDir::new("http-tls");
    let certs = dir.path("tls");
    let o = tracer(&[
        "cert",
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
        "--out",
        certs.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hash = hash_of("kuma-pass");
    let cfg = config(
        &dir,
        &format!(
            "tls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n\n[[http.user]]\nname = \"kuma\"\npassword_hash = {hash:?}\n"
        ),
        "",
    );
    let srv = serve(&cfg, &[]);
    let addr = http_addr(&srv);
    let port = addr.rsplit(':').next().expect("port");
    let pem = std::fs::read(certs.join("cert.pem")).expect("cert.pem");
    let client = https_client(&pem);
    let url = format!("https://localhost:{port}/api/1.1/lookup");
    let (status, body) = block_on(async {
        let r = client
            .post(&url)
            .basic_auth("kuma", Some("kuma-pass"))
            .header("Accept", "application/json")
            .body(lookup(&["https://www.GMER.com/", "nothing.invalid"]))
            .send()
            .await
            .expect("HTTPS request");
        (r.status().as_u16(), r.text().await.expect("body"))
    });
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v[0]["result"], "detected");
    assert_eq!(v[1]["result"], "not detected");
    let wrong = block_on(async {
        client
            .post(&url)
            .basic_auth("kuma", Some("nope"))
            .body(lookup(&["gmer.com"]))
            .send()
            .await
            .expect("HTTPS request")
            .status()
            .as_u16()
    });
    assert_eq!(wrong, 401);
    // A new certificate in the same files, and SIGHUP: new connections get it.
    let fresh = dir.path("fresh");
    let o = tracer(&[
        "cert",
        "--host",
        "localhost",
        "--out",
        fresh.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(fresh.join(f), certs.join(f)).expect("replace");
    }
    srv.signal("HUP");
    srv.wait_log("users and certificate re-read");
    let ask = |client: reqwest::Client| {
        block_on(async {
            client
                .post(&url)
                .basic_auth("kuma", Some("kuma-pass"))
                .body(lookup(&["gmer.com"]))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let new_pem = std::fs::read(fresh.join("cert.pem")).expect("new cert");
    assert_eq!(ask(https_client(&new_pem)).expect("trusted"), 200);
    assert!(
        ask(https_client(&pem)).is_err(),
        "the old certificate is gone"
    );
    // Plain HTTP to the TLS port is not served.
    let mut c = connect(&addr);
    let _ = c
        .get_mut()
        .write_all(&post("/api/1.1/lookup", "", &lookup(&["gmer.com"])));
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn reload_under_http_load_answers_from_the_old_or_the_new_index() {
    let dir = TempDir::new("http-reload");
    let feed = dir.path("gen.csv");
    std::fs::write(&feed, "ioc,context\nreload.example,old\n").expect("feed");
    std::fs::write(
        dir.path("tracer.toml"),
        format!(
            "[[feed]]\npath = {:?}\nkey = \"ioc\"\n\n[http]\nlisten = \"127.0.0.1:0\"\ntls = false\n",
            feed.display().to_string()
        ),
    )
    .expect("config");
    let srv = serve(&dir.path("tracer.toml"), &[]);
    let addr = http_addr(&srv);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::<String, u32>::new();
                let mut c = connect(&addr);
                let body = post("/api/1.1/lookup", "", &lookup(&["reload.example"; 5]));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.get_mut().write_all(&body).expect("send");
                    let Some(r) = read_resp(&mut c) else {
                        let mut rest = Vec::new();
                        let _ = c.read_to_end(&mut rest);
                        panic!("no answer; then {:?}", String::from_utf8_lossy(&rest));
                    };
                    assert_eq!(r.status, 200);
                    let v = r.json();
                    // One answer comes from one index: all five objects alike.
                    let contexts: Vec<String> = (0..5)
                        .map(|i| {
                            v[i]["categories"][0]["context"]["context"]
                                .as_str()
                                .unwrap_or("none")
                                .to_string()
                        })
                        .collect();
                    assert!(contexts.iter().all(|c| c == &contexts[0]), "{contexts:?}");
                    *seen.entry(contexts[0].clone()).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        let ctx = if round % 2 == 0 { "new" } else { "old" };
        std::fs::write(&feed, format!("ioc,context\nreload.example,{ctx}\n")).expect("rewrite");
        srv.signal("HUP");
        srv.wait_log_more("index reloaded", round);
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = std::collections::BTreeMap::<String, u32>::new();
    for w in workers {
        for (k, n) in w.join().expect("client thread") {
            *total.entry(k).or_default() += n;
        }
    }
    assert!(total.keys().all(|k| k == "old" || k == "new"), "{total:?}");
    assert!(
        total.get("new").is_some_and(|&n| n > 0) && total.get("old").is_some_and(|&n| n > 0),
        "{total:?}"
    );
}
