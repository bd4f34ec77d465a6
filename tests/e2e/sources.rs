//! Feeds that update themselves (SPEC §13), against a real HTTP server on 127.0.0.1
//! that serves a feed with an `ETag`, answers conditional requests with `304`, and can
//! be told to fail in the ways feed servers fail.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

use crate::util::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    /// The body gzip-compressed, as a `.gz` file would be.
    Gzip,
    /// `500 Internal Server Error`.
    Fail,
    /// The connection closed before any answer.
    Hangup,
    /// A gzip body cut in the middle.
    TruncatedGzip,
}

struct State {
    body: Mutex<Vec<u8>>,
    mode: Mutex<Mode>,
    requests: AtomicU64,
    conditional: AtomicU64,
    not_modified: AtomicU64,
    /// Headers a request must carry, else `401 Unauthorized`.
    required: Mutex<Vec<(&'static str, &'static str)>>,
    /// Answer `302 Found` to this URL instead (checked before `required`).
    redirect: Mutex<Option<String>>,
}

/// A feed server (lives as long as the test process).
struct FeedServer {
    addr: std::net::SocketAddr,
    state: Arc<State>,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn etag(body: &[u8]) -> String {
    format!(
        "\"{:x}-{}\"",
        body.iter()
            .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64)),
        body.len()
    )
}

impl FeedServer {
    fn start(body: &str) -> FeedServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            body: Mutex::new(body.as_bytes().to_vec()),
            mode: Mutex::new(Mode::Normal),
            requests: AtomicU64::new(0),
            conditional: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            required: Mutex::new(Vec::new()),
            redirect: Mutex::new(None),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    if *st.mode.lock().expect("mode") == Mode::Hangup {
                        st.requests.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    let st = st.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| answer(st.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        FeedServer { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/feeds/feed.csv", self.addr)
    }

    fn set_body(&self, body: &str) {
        *self.state.body.lock().expect("body") = body.as_bytes().to_vec();
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

async fn answer(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let body = st.body.lock().expect("body").clone();
    let tag = etag(&body);
    let mode = *st.mode.lock().expect("mode");
    let reply = |status: u16, bytes: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(bytes)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
        r
    };
    if let Some(to) = st.redirect.lock().expect("redirect").clone() {
        let mut r = reply(302, Vec::new());
        r.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_str(&to).expect("location"),
        );
        return Ok(r);
    }
    let required = st.required.lock().expect("required").clone();
    if required.iter().any(|(k, v)| {
        req.headers()
            .get(*k)
            .is_none_or(|got| got.as_bytes() != v.as_bytes())
    }) {
        return Ok(reply(401, b"who are you?".to_vec()));
    }
    if let Some(v) = req.headers().get(hyper::header::IF_NONE_MATCH) {
        st.conditional.fetch_add(1, Ordering::SeqCst);
        if v.as_bytes() == tag.as_bytes() && mode != Mode::Fail {
            st.not_modified.fetch_add(1, Ordering::SeqCst);
            return Ok(reply(304, Vec::new()));
        }
    }
    let mut r = match mode {
        Mode::Fail => return Ok(reply(500, b"feed database is down".to_vec())),
        Mode::Normal | Mode::Hangup => reply(200, body),
        Mode::Gzip => reply(200, gzip(&body)),
        Mode::TruncatedGzip => {
            let z = gzip(&body);
            reply(200, z[..z.len() / 2].to_vec())
        }
    };
    r.headers_mut().insert(
        hyper::header::ETAG,
        hyper::header::HeaderValue::from_str(&tag).expect("etag"),
    );
    Ok(r)
}

fn config(dir: &TempDir, feeds: &FeedServer, extra: &str) -> std::path::PathBuf {
    config_for(dir, &feeds.url(), "1s", extra)
}

/// A configuration with one feed from `url`, refreshed every `refresh`.
fn config_for(dir: &TempDir, url: &str, refresh: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.path("tracer.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"state\"\n\n[[feed]]\nurl = {url:?}\nkey = \"ioc\"\nrefresh = \"{refresh}\"\n{extra}\n"
        ),
    )
    .expect("config");
    path
}

fn serve(cfg: &std::path::Path) -> Server {
    let srv = Server::start(
        any_io(),
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    srv.wait_log("index ready");
    srv
}

/// The `context` the server answers for `feed.example` (`None`: a miss).
fn context(srv: &Server) -> Option<String> {
    context_of(srv, "feed.example")
}

/// The `context` the server answers for `url=<value>` (`None`: a miss).
fn context_of(srv: &Server, value: &str) -> Option<String> {
    let a = exchange(srv, format!("url={value}\n").as_bytes(), 1);
    a.split("|context=")
        .nth(1)
        .map(|r| r.trim_end_matches("\nLookupFinished\n").to_string())
}

fn metric(srv: &Server, name: &str) -> Option<u64> {
    let m = srv.metrics();
    m.lines()
        .find(|l| l.starts_with(&format!("{name}{{feed=\"feed\"}} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_feed_is_downloaded_served_and_revalidated_with_its_etag() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,v1\n");
    let dir = TempDir::new("sources-first");
    let srv = serve(&config(&dir, &feeds, ""));
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    assert_eq!(metric(&srv, "tracer_feed_updates_total"), Some(1));
    assert!(metric(&srv, "tracer_feed_age_seconds").is_some_and(|a| a < 30));
    // The next refreshes ask with the ETag and get 304: nothing is recompiled.
    wait_until("a 304", || {
        feeds.state.not_modified.load(Ordering::SeqCst) >= 2
    });
    srv.wait_log("feed not modified (304)");
    assert_eq!(metric(&srv, "tracer_feed_updates_total"), Some(1));
    assert_eq!(srv.log_count("index reloaded"), 0);
    // Where it came from, in the index the state directory holds.
    let o = tracer(&[
        "inspect",
        dir.path("state/feed.tracer").to_str().expect("path"),
    ]);
    let shown = stdout(&o);
    assert!(
        shown.contains(&feeds.url()) && shown.contains("downloaded "),
        "{shown}"
    );
    assert!(dir.path("state/feed.csv").exists() && dir.path("state/feed.meta.json").exists());
}

#[test]
fn changes_swap_in_under_load_and_every_failure_keeps_the_data_served() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,v1\n");
    let dir = TempDir::new("sources-failures");
    let srv = Arc::new(serve(&config(&dir, &feeds, "max_skipped = 5")));
    // A client asking all along: every answer is a hit, from one version or another.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let client = {
        let (srv, stop, seen) = (srv.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut s = srv.connect();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.write_all(b"url=feed.example\n").expect("send");
                let a = read_answers(&mut s, 1);
                let ctx = a
                    .split("|context=")
                    .nth(1)
                    .map(|r| r.trim_end_matches("\nLookupFinished\n").to_string());
                let ctx = ctx.unwrap_or_else(|| panic!("a miss while feeds update: {a:?}"));
                seen.lock().expect("seen").insert(ctx);
                n += 1;
            }
            n
        })
    };
    feeds.set_body("ioc,context\nfeed.example,v2\n");
    wait_until("v2 served", || context(&srv).as_deref() == Some("v2"));
    // Each failure: counted, logged with the age of what is served, v2 stays. The
    // server fails before it has v3 (a refresh in between would serve it), and each
    // mode below fails whatever the body, so the next body is set before its mode.
    let failures = || metric(&srv, "tracer_feed_update_failures_total").unwrap_or(0);
    feeds.set(Mode::Fail);
    feeds.set_body("ioc,context\nfeed.example,v3\n");
    for (mode, body, says) in [
        (Mode::Fail, None, "feed update failed: HTTP status 500"),
        (Mode::Hangup, None, "feed update failed: request:"),
        (Mode::TruncatedGzip, None, "gzip"),
        // Most rows suddenly without an indicator: more skipped than max_skipped.
        (
            Mode::Normal,
            Some(format!(
                "ioc,context\nfeed.example,v3\n{}",
                ",broken\n".repeat(20)
            )),
            "max_skipped",
        ),
    ] {
        let before = failures();
        if let Some(b) = &body {
            feeds.set_body(b);
        }
        feeds.set(mode);
        // Its own message: an attempt made in this mode, not one still under way
        // from the mode before.
        srv.wait_log(says);
        wait_until(&format!("a failure with {mode:?}"), || failures() > before);
        assert_eq!(context(&srv).as_deref(), Some("v2"), "after {mode:?}");
    }
    srv.wait_log("still serving the data confirmed");
    assert!(metric(&srv, "tracer_feed_age_seconds").is_some_and(|a| a >= 1));
    // Back to a good feed, compressed this time.
    feeds.set_body("ioc,context\nfeed.example,v4\n");
    feeds.set(Mode::Gzip);
    wait_until("v4 served", || context(&srv).as_deref() == Some("v4"));
    stop.store(true, Ordering::Relaxed);
    let asked = client.join().expect("client");
    assert!(asked > 10);
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .all(|c| ["v1", "v2", "v4"].contains(&c.as_str())),
        "{seen:?}"
    );
    assert!(feeds.requests() > 6);
}

#[test]
fn a_restart_serves_the_state_directory_while_the_feed_server_is_down() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,kept\n");
    let dir = TempDir::new("sources-restart");
    let cfg = config(&dir, &feeds, "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    drop(srv);
    feeds.set(Mode::Hangup);
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    srv.wait_log("feed update failed");
    assert_eq!(context(&srv).as_deref(), Some("kept"));
}

#[test]
fn credentials_and_headers_are_sent_and_never_shown() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,secret-feed\n");
    *feeds.state.required.lock().expect("required") = vec![
        // feeder:s3cret-pw
        ("authorization", "Basic ZmVlZGVyOnMzY3JldC1wdw=="),
        ("x-api-key", "k3y-from-config"),
    ];
    let dir = TempDir::new("sources-auth");
    std::fs::write(dir.path("feed.pw"), "s3cret-pw\n").expect("password file");
    let cfg = config(
        &dir,
        &feeds,
        &format!(
            "username = \"feeder\"\npassword_file = {:?}\nheaders = {{ \"X-Api-Key\" = \"k3y-from-config\" }}\n",
            dir.path("feed.pw")
        ),
    );
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("secret-feed"));
    // A wrong password is a failed update: 401, the data kept.
    *feeds.state.required.lock().expect("required") = vec![("authorization", "Basic bm90OnRoaXM=")];
    feeds.set_body("ioc,context\nfeed.example,changed\n");
    srv.wait_log("feed update failed: HTTP status 401");
    assert_eq!(context(&srv).as_deref(), Some("secret-feed"));
    let log = srv.log();
    assert!(
        !log.contains("s3cret-pw") && !log.contains("k3y-from-config"),
        "{log}"
    );
    assert!(!srv.metrics().contains("s3cret-pw"));
}

#[test]
fn feed_source_settings_are_checked() {
    let dir = TempDir::new("sources-config");
    let bad = [
        ("[[feed]]\nurl = \"http://127.0.0.1:1/f.csv\"\nkey = \"ioc\"\n", "state_dir"),
        ("[[feed]]\npath = \"f.csv\"\nkey = \"ioc\"\nrefresh = \"1m\"\n", "`refresh` is for feeds with a `url`"),
        ("state_dir = \"s\"\n[[feed]]\nurl = \"ftp://x/f.csv\"\nkey = \"ioc\"\n", "not an http(s) URL"),
        (
            "state_dir = \"s\"\n[[feed]]\nurl = \"http://a/f.csv\"\nkey = \"ioc\"\n[[feed]]\nurl = \"http://b/f.csv\"\nkey = \"ioc\"\n",
            "also called `f`",
        ),
    ];
    for (i, (text, want)) in bad.iter().enumerate() {
        let p = dir.path(&format!("bad{i}.toml"));
        std::fs::write(&p, text).expect("write");
        let o = tracer(&["check-config", p.to_str().expect("path")]);
        assert!(!o.status.success(), "{text}");
        assert!(
            stderr(&o).contains(want) && stderr(&o).contains("line "),
            "{text}: {}",
            stderr(&o)
        );
    }
    let p = dir.path("good.toml");
    std::fs::write(
        &p,
        "state_dir = \"s\"\n[[feed]]\nurl = \"https://u:pw-s3cr3t@feeds.example/x/f.json.gz\"\nkey = \"mask\"\nheaders = { Authorization = \"Bearer t0k\" }\n",
    )
    .expect("write");
    let o = tracer(&["check-config", p.to_str().expect("path")]);
    let shown = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        shown.contains("url = \"https://feeds.example/x/f.json.gz\"")
            && shown.contains("refresh = \"30m\""),
        "{shown}"
    );
    assert!(
        !shown.contains("pw-s3cr3t") && !shown.contains("t0k"),
        "{shown}"
    );
}

/// Make `state/feed.tracer` unreadable to this build: another format version, as an
/// index written by an older build has.
fn age_the_index(dir: &TempDir) {
    let path = dir.path("state/feed.tracer");
    let mut bytes = std::fs::read(&path).expect("index");
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, bytes).expect("write index");
}

#[test]
fn an_index_that_does_not_open_is_rebuilt_from_the_kept_download() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,kept\n");
    let dir = TempDir::new("sources-rebuild");
    let cfg = config(&dir, &feeds, "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    drop(srv);
    age_the_index(&dir);
    // No network: the feed file kept in the state directory is all there is.
    feeds.set(Mode::Hangup);
    let srv = serve(&cfg);
    srv.wait_log("recompiled from its kept download");
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    let o = tracer(&[
        "inspect",
        dir.path("state/feed.tracer").to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_meta_file_time_after_the_year_9999_does_not_stop_the_start() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,kept\n");
    let dir = TempDir::new("sources-far-time");
    let cfg = config(&dir, &feeds, "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    drop(srv);
    // A damaged meta file, and an index to rebuild from the kept download.
    let path = dir.path("state/feed.meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("meta")).expect("json");
    meta["fetched_unix"] = serde_json::json!(300_000_000_000u64);
    meta["checked_unix"] = serde_json::json!(300_000_000_000u64);
    std::fs::write(&path, meta.to_string()).expect("write meta");
    age_the_index(&dir);
    feeds.set(Mode::Hangup);
    let srv = serve(&cfg);
    srv.wait_log("recompiled from its kept download");
    assert_eq!(context(&srv).as_deref(), Some("kept"));
    // Its age unknown: none in the metrics, and a refresh is due at once.
    assert_eq!(metric(&srv, "tracer_feed_age_seconds"), None);
    srv.wait_log("feed update failed");
    let o = tracer(&[
        "inspect",
        dir.path("state/feed.tracer").to_str().expect("path"),
    ]);
    assert!(
        stdout(&o).contains("download time unknown"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_index_that_does_not_open_without_its_download_is_downloaded_again_unconditionally() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,v1\n");
    let dir = TempDir::new("sources-redownload");
    let cfg = config_for(&dir, &feeds.url(), "1h", "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    drop(srv);
    std::fs::write(dir.path("state/feed.tracer"), b"damaged").expect("damage");
    std::fs::remove_file(dir.path("state/feed.csv")).expect("remove the kept download");
    let (asked, conditional) = (
        feeds.requests(),
        feeds.state.conditional.load(Ordering::SeqCst),
    );
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    // Asked again, without the ETag that would have got a 304.
    assert_eq!(feeds.requests(), asked + 1);
    assert_eq!(feeds.state.conditional.load(Ordering::SeqCst), conditional);
}

#[test]
fn a_downloaded_index_that_does_not_open_is_skipped_and_the_other_feeds_served() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,v1\n");
    let dir = TempDir::new("sources-skip");
    let local = dir.path("local.csv");
    std::fs::write(&local, "ioc,context\nlocal.example,local\n").expect("local feed");
    let cfg = config(
        &dir,
        &feeds,
        &format!("\n[[feed]]\npath = {local:?}\nkey = \"ioc\"\n"),
    );
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    drop(srv);
    std::fs::write(dir.path("state/feed.tracer"), b"damaged").expect("damage");
    std::fs::remove_file(dir.path("state/feed.csv")).expect("remove the kept download");
    feeds.set(Mode::Hangup);
    let srv = serve(&cfg);
    assert_eq!(context_of(&srv, "local.example").as_deref(), Some("local"));
    assert_eq!(context(&srv), None);
    srv.wait_log("feed.tracer");
    srv.wait_log("does not open");
    // Back once the feed server answers again.
    feeds.set(Mode::Normal);
    wait_until("v1 served again", || context(&srv).as_deref() == Some("v1"));
    assert_eq!(context_of(&srv, "local.example").as_deref(), Some("local"));
}

#[test]
fn changed_compile_settings_apply_at_once_on_sighup_and_at_a_restart() {
    // A server that answers 304 to the ETag it gave: a change must not wait for it.
    let feeds = FeedServer::start("ioc,alt,context\nfeed.example,other.example,v1\n");
    let dir = TempDir::new("sources-settings");
    let cfg = config_for(&dir, &feeds.url(), "1h", "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    assert_eq!(context_of(&srv, "other.example"), None);
    let asked = feeds.requests();
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(&cfg, text.replace("key = \"ioc\"", "key = \"alt\"")).expect("rewrite");
    srv.signal("HUP");
    wait_until("the new key served", || {
        context_of(&srv, "other.example").as_deref() == Some("v1")
    });
    assert_eq!(context(&srv), None);
    // Recompiled from the kept download, not downloaded again.
    assert_eq!(feeds.requests(), asked);
    drop(srv);
    // A restart with other settings, the feed server down.
    std::fs::write(&cfg, text).expect("rewrite");
    feeds.set(Mode::Hangup);
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("v1"));
    assert_eq!(context_of(&srv, "other.example"), None);
}

#[test]
fn a_changed_url_is_downloaded_at_once_on_sighup() {
    let first = FeedServer::start("ioc,context\nfeed.example,first\n");
    let second = FeedServer::start("ioc,context\nfeed.example,second\n");
    let dir = TempDir::new("sources-new-url");
    let cfg = config_for(&dir, &first.url(), "1h", "");
    let srv = serve(&cfg);
    assert_eq!(context(&srv).as_deref(), Some("first"));
    config_for(&dir, &second.url(), "1h", "");
    srv.signal("HUP");
    wait_until("the new URL served", || {
        context(&srv).as_deref() == Some("second")
    });
    assert_eq!(second.state.conditional.load(Ordering::SeqCst), 0);
}

#[test]
fn credentials_in_the_url_are_not_written_to_the_state_directory() {
    let feeds = FeedServer::start("ioc,context\nfeed.example,secret-feed\n");
    // feeder:s3cret-pw
    *feeds.state.required.lock().expect("required") =
        vec![("authorization", "Basic ZmVlZGVyOnMzY3JldC1wdw==")];
    let dir = TempDir::new("sources-url-secret");
    let url = format!("http://feeder:s3cret-pw@{}/feeds/feed.csv", feeds.addr);
    let srv = serve(&config_for(&dir, &url, "1h", ""));
    assert_eq!(context(&srv).as_deref(), Some("secret-feed"));
    let meta = std::fs::read_to_string(dir.path("state/feed.meta.json")).expect("meta");
    assert!(
        meta.contains(&feeds.url()) && !meta.contains("s3cret-pw"),
        "{meta}"
    );
    let index = std::fs::read(dir.path("state/feed.tracer")).expect("index");
    assert!(!index.windows(9).any(|w| w == b"s3cret-pw"));
}

#[test]
fn headers_are_not_sent_along_a_redirect_to_another_host() {
    let elsewhere = FeedServer::start("ioc,context\nfeed.example,elsewhere\n");
    let feeds = FeedServer::start("");
    *feeds.state.redirect.lock().expect("redirect") = Some(elsewhere.url());
    let dir = TempDir::new("sources-redirect");
    let cfg = config(
        &dir,
        &feeds,
        "headers = { \"X-Api-Key\" = \"k3y-from-config\" }",
    );
    let srv = serve(&cfg);
    srv.wait_log("feed update failed");
    let log = srv.log();
    assert!(
        log.contains(&format!("redirect to {} refused", elsewhere.url())),
        "{log}"
    );
    assert_eq!(elsewhere.requests(), 0);
    assert_eq!(context(&srv), None);
    // Without headers or credentials the redirect is followed.
    config(&dir, &feeds, "");
    srv.signal("HUP");
    wait_until("the redirect followed", || {
        context(&srv).as_deref() == Some("elsewhere")
    });
}
