//! Shared helpers: temp dirs, running the binary, compiling the demo fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: this build's, or another one named by `TRACER_E2E_BIN`
/// (to check that a test fails on a build without the fix it pins).
pub static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("TRACER_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tracer").to_string())
});

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tracer-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tracer(args: &[&str]) -> Output {
    Command::new(&*BIN).args(args).output().expect("run tracer")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The demo feeds as the server loads them by default: (file, key, kind).
pub const DEMO: [(&str, &str, &str); 5] = [
    ("demo_ioc.csv", "ioc", "auto"),
    ("Phishing_URL_Data_Feed.json", "mask", "url"),
    ("Malicious_Hash_Data_Feed.json", "MD5", "hash"),
    ("ip_reputation.csv", "ip", "ip"),
    ("bad_domains.txt", "domain", "domain"),
];

/// Compile every demo feed into `dir` with the binary; returns the index paths in order.
pub fn compile_demo(dir: &TempDir) -> Vec<PathBuf> {
    DEMO.iter()
        .map(|(file, key, kind)| {
            let out = dir.path(&format!("{file}.tracer"));
            let feed = fixtures().join(file);
            let o = tracer(&[
                "compile",
                feed.to_str().expect("utf-8 path"),
                "-k",
                key,
                "--kind",
                kind,
                "-o",
                out.to_str().expect("utf-8 path"),
            ]);
            assert!(o.status.success(), "compile {file}: {}", stderr(&o));
            out
        })
        .collect()
}

/// `fixtures/expected.txt` as (request line, expected answer bytes).
pub fn expected_answers() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixtures().join("expected.txt")).expect("read expected.txt");
    let mut cases: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(req) = line.strip_prefix("> ") {
            cases.push((req.to_string(), String::new()));
        } else if line.starts_with('#') {
            continue;
        } else if let Some((_, answer)) = cases.last_mut() {
            answer.push_str(line);
            answer.push('\n');
        }
    }
    cases
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The runtimes every server test runs on: both, or epoll alone where the kernel
/// refuses io_uring (`kernel.io_uring_disabled`, a seccomp profile), which is said
/// once per test run.
pub fn io_modes() -> &'static [&'static str] {
    static MODES: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    // The probe creates and drops a ring. Its teardown notifies the thread that made
    // it, which interrupts a blocking read with a socket timeout (EINTR with no
    // signal): probe on a thread of its own, not on the test's.
    MODES.get_or_init(|| match std::thread::spawn(tracer::serve::runtime::uring_available)
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the probe panicked")))
    {
        Ok(()) => &["uring", "epoll"],
        Err(e) => {
            eprintln!("io_uring is not available here ({e}): io_uring cases are skipped, epoll runs alone");
            &["epoll"]
        }
    })
}

/// `uring` where the kernel allows it, else `epoll` (for tests about something else
/// than the runtime).
pub fn any_io() -> &'static str {
    io_modes()[0]
}

/// A `tracer serve` child process on 127.0.0.1, stopped (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// The address `--metrics 127.0.0.1:0` bound, from the log.
    pub fn metrics_addr(&self) -> String {
        self.wait_log("metrics on http://");
        let log = self.log();
        log.split("metrics on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("metrics address in the log")
            .to_string()
    }

    /// A scrape of `/metrics`, from a server started with `--metrics 127.0.0.1:0`.
    pub fn metrics(&self) -> String {
        scrape(&self.metrics_addr())
    }

    /// Start with `args` after `serve --listen 127.0.0.1:0 --threads 2 --io <io>`.
    pub fn start(io: &str, args: &[&str]) -> Server {
        Server::start_on(io, "127.0.0.1:0", args)
    }

    /// Start on a given address.
    pub fn start_on(io: &str, listen: &str, args: &[&str]) -> Server {
        Server::start_env(io, listen, args, &[])
    }

    /// Start with extra environment variables.
    pub fn start_env(io: &str, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(&*BIN)
            .args(["serve", "--listen", listen, "--threads", "2", "--io", io])
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("server did not start: {}", log.lock().expect("log").clone())
            });
        Server {
            child,
            addr: addr.parse().expect("listen address"),
            log,
        }
    }

    pub fn demo(io: &str) -> Server {
        Server::start(io, &[])
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Wait until the log contains `needle` (or fail after 20 s).
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// How many times the log says `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Wait until the log says `needle` more than `n` times (or fail after 30 s).
    pub fn wait_log_more(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log_count(needle) <= n {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?} a {}th time:\n{}",
                n + 1,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit by itself; its exit code (`None`: still running
    /// after `within`, then killed).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop with SIGTERM; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Read until `finished` answers (`LookupFinished` or `PONG` lines) have arrived.
pub fn read_answers(s: &mut TcpStream, finished: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let mut count = 0;
    while count < finished {
        let n = s.read(&mut buf).expect("read answers");
        assert!(
            n > 0,
            "connection closed after {count} of {finished} answers: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        count = count_answers(&got);
    }
    String::from_utf8_lossy(&got).into_owned()
}

pub fn count_answers(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| *l == b"LookupFinished" || *l == b"PONG")
        .count()
}

/// Send `bytes` and read the answers of `finished` requests.
pub fn exchange(server: &Server, bytes: &[u8], finished: usize) -> String {
    let mut s = server.connect();
    s.write_all(bytes).expect("send");
    read_answers(&mut s, finished)
}

/// Read to EOF (the server closed), failing after the read timeout.
/// `GET /metrics` from `addr`: the whole HTTP response.
pub fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
    String::from_utf8(read_to_close(&mut s)).expect("utf-8")
}

pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e} after {} bytes", got.len()),
        }
    }
}

/// A port free right now on 127.0.0.1 (for tests that need a fixed address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Compile a one-record CSV feed (`reload.example`, context `ctx`, category
/// `reload`) into `dir/<name>.tracer`.
pub fn compile_csv(dir: &TempDir, name: &str, context: &str) -> PathBuf {
    let feed = dir.path(&format!("{name}.csv"));
    std::fs::write(&feed, format!("ioc,context\nreload.example,{context}\n")).expect("write");
    let out = dir.path(&format!("{name}.tracer"));
    let o = tracer(&[
        "compile",
        feed.to_str().expect("path"),
        "-k",
        "ioc",
        "--category",
        "reload",
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

/// The answer to `url=reload.example` from an index made by [`compile_csv`].
pub fn reload_answer(context: &str) -> String {
    format!("Category=reload|MatchedIndicator=reload.example|ioc=reload.example|context={context}\nLookupFinished\n")
}

/// An example binary built beside the tests (`cargo test` builds the examples).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} is not built", path.display());
    path
}

pub const GMER: &str =
    "Category=demo_ioc|MatchedIndicator=gmer.com|ioc=gmer.com|context=bad_URL\nLookupFinished\n";
pub const MISS: &str = "LookupFinished\n";
