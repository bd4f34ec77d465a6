//! Shared helpers: temp dirs, running the binary, compiling the demo fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_tracer");

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
    Command::new(BIN).args(args).output().expect("run tracer")
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
