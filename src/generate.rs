//! Synthetic feeds at production scale, for benchmarks and load tests (never committed).
//!
//! `tracer generate --out DIR` writes, deterministically from `--seed`:
//! - `urls.json`: Kaspersky-style phishing records keyed by `mask`, in the real shape
//!   mix (exact URLs 45 %, `host/path/*` 25 %, `*.host/*` 15 %, `host/*.ext` 10 %,
//!   `*` inside a host label 5 %), with `whois{…}` and other context fields;
//! - `hashes.csv`: `md5,sha256,threat,first_seen`, keyed by `md5`;
//! - `ips.csv`: `ip,threat,confidence`: v4 addresses, v4 CIDRs, v6 networks, ranges;
//! - `domains.txt`: one domain per line;
//! - with `--mixed N`, `mixed.csv`: `ioc,context` rows of every kind (MD5 30 %, SHA-256
//!   10 %, exact URLs 20 %, `*.host/*` 10 %, `host/*` 10 %, v4 addresses 10 %, /24s 10 %),
//!   and `mixed_hits.txt`, requests that must hit it;
//! - `hits.txt` and `misses.txt`: request values (`url=…`, `hash=…`, `ip=…`,
//!   `domain=…`) that must hit, and that must miss, the feeds above. Misses use hosts
//!   under `.invalid`, addresses in 198.18.0.0/15 and digests of a separate stream,
//!   none of which the feeds contain.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// What to generate: how many entries of each kind, where, from which seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory to write into (created if missing).
    pub out: std::path::PathBuf,
    pub urls: usize,
    pub hashes: usize,
    pub ips: usize,
    pub domains: usize,
    /// Rows of `mixed.csv`, every kind in one `ioc,context` feed (0: none).
    pub mixed: usize,
    pub seed: u64,
}

/// splitmix64: small, fast, good enough to spread keys; not for anything secret.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn word(&mut self, out: &mut String, min: usize, max: usize) {
        const SYL: [&str; 16] = [
            "ka", "lo", "mi", "ne", "tor", "pay", "sec", "log", "in", "ver", "acc", "up", "dat",
            "bank", "web", "cl",
        ];
        let n = min + self.below((max - min + 1) as u64) as usize;
        for _ in 0..n {
            out.push_str(SYL[self.below(16) as usize]);
        }
    }

    fn hex(&mut self, out: &mut String, digits: usize) {
        const HEX: &[u8] = b"0123456789ABCDEF";
        for _ in 0..digits {
            out.push(HEX[self.below(16) as usize] as char);
        }
    }
}

const TLDS: [&str; 8] = ["com", "net", "org", "ru", "info", "xyz", "top", "site"];
const EXTS: [&str; 5] = ["exe", "php", "zip", "apk", "js"];
const COUNTRIES: [&str; 6] = ["US", "RU", "NL", "DE", "CN", "BR"];

/// A host unique to record `i` (the number keeps hosts distinct at any scale).
fn host(rng: &mut Rng, i: usize) -> String {
    let mut h = String::new();
    rng.word(&mut h, 1, 3);
    h.push_str(&format!("{i}."));
    h.push_str(TLDS[rng.below(TLDS.len() as u64) as usize]);
    h
}

fn path(rng: &mut Rng, segments: usize) -> String {
    let mut p = String::new();
    for _ in 0..segments {
        p.push('/');
        rng.word(&mut p, 1, 3);
    }
    p
}

/// Write every file; returns (feed entries written, hit lines, miss lines).
pub fn run(args: &Options) -> std::io::Result<(usize, usize, usize)> {
    std::fs::create_dir_all(&args.out)?;
    let mut rng = Rng::new(args.seed);
    let create = |name: &str| {
        File::create(args.out.join(name)).map(|f| BufWriter::with_capacity(1 << 20, f))
    };
    let mut hits = create("hits.txt")?;
    let mut hit_count = 0;
    // Keep about 100k hit samples whatever the feed sizes.
    let keep = |n: usize| (n / 25_000).max(1);

    let mut f = create("urls.json")?;
    f.write_all(b"[\n")?;
    let step = keep(args.urls);
    for i in 0..args.urls {
        let h = host(&mut rng, i);
        let shape = rng.below(100);
        let segments = 1 + rng.below(3) as usize;
        let p = path(&mut rng, segments);
        let ext = EXTS[rng.below(EXTS.len() as u64) as usize];
        let (mask, sample) = match shape {
            0..=44 => (format!("{h}{p}"), format!("http://{h}{p}")),
            45..=69 => (
                format!("{h}{p}/*"),
                format!("https://www.{h}{p}/x/y?id={i}"),
            ),
            70..=84 => (format!("*.{h}/*"), format!("http://cdn.{h}/a/b")),
            85..=94 => (format!("{h}/*.{ext}"), format!("http://{h}/dl/f{i}.{ext}")),
            _ => {
                let (label, rest) = h.split_once('.').unwrap_or((&h, "com"));
                (
                    format!("{label}*.{rest}/*"),
                    format!("http://{label}-login.{rest}/p"),
                )
            }
        };
        if i > 0 {
            f.write_all(b",\n")?;
        }
        let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
        write!(
            f,
            r#"{{"id":{i},"mask":"{mask}","type":{},"popularity":{},"first_seen":"2026-0{}-1{} 10:00","whois":{{"country":"{country}","registrar":"Registrar {}","created":"2025-1{}-0{}"}},"category":"phishing"}}"#,
            1 + shape % 3,
            1 + rng.below(5),
            1 + rng.below(9),
            rng.below(10),
            rng.below(50),
            rng.below(3),
            1 + rng.below(9),
        )?;
        if i % step == 0 {
            writeln!(hits, "url={sample}")?;
            hit_count += 1;
        }
    }
    f.write_all(b"\n]\n")?;
    f.flush()?;

    let mut f = create("hashes.csv")?;
    writeln!(f, "md5,sha256,threat,first_seen")?;
    let step = keep(args.hashes);
    for i in 0..args.hashes {
        let mut md5 = String::with_capacity(32);
        rng.hex(&mut md5, 32);
        let mut sha = String::with_capacity(64);
        rng.hex(&mut sha, 64);
        writeln!(
            f,
            "{md5},{sha},Trojan.Win32.Gen.{},2026-0{}-01",
            rng.below(1000),
            1 + rng.below(9)
        )?;
        if i % step == 0 {
            // Requests carry digests in any case.
            writeln!(
                hits,
                "hash={}",
                if i % 2 == 0 {
                    md5.to_ascii_lowercase()
                } else {
                    md5
                }
            )?;
            hit_count += 1;
        }
    }
    f.flush()?;

    let mut f = create("ips.csv")?;
    writeln!(f, "ip,threat,confidence")?;
    let step = keep(args.ips);
    for i in 0..args.ips {
        // 10.0.0.0/8 … 126.x: never 198.18.0.0/15, where misses live.
        let a = 10 + (i as u64 * 7 + rng.below(7)) % 110;
        let (b, c, d) = (rng.below(256), rng.below(256), 1 + rng.below(254));
        let kind = rng.below(100);
        let (entry, sample) = match kind {
            0..=79 => (format!("{a}.{b}.{c}.{d}"), format!("{a}.{b}.{c}.{d}")),
            80..=94 => (format!("{a}.{b}.{c}.0/24"), format!("{a}.{b}.{c}.{d}")),
            95..=97 => (
                format!("2001:db8:{:x}:{:x}::/64", i % 65536, rng.below(65536)),
                String::new(),
            ),
            _ => (
                format!("{a}.{b}.{c}.10-{a}.{b}.{c}.20"),
                format!("{a}.{b}.{c}.15"),
            ),
        };
        let sample = if sample.is_empty() {
            let net = entry.trim_end_matches("::/64");
            format!("{net}::{:x}", 1 + rng.below(65535))
        } else {
            sample
        };
        writeln!(
            f,
            "{entry},{},{}",
            ["scanner", "c2", "bruteforce", "spam"][rng.below(4) as usize],
            50 + rng.below(50)
        )?;
        if i % step == 0 {
            writeln!(hits, "ip={sample}")?;
            hit_count += 1;
        }
    }
    f.flush()?;

    let mut f = create("domains.txt")?;
    writeln!(f, "# generated domain list")?;
    let step = keep(args.domains);
    for i in 0..args.domains {
        let mut d = String::from("dom");
        rng.word(&mut d, 1, 2);
        let d = format!("{d}{i}.{}", TLDS[rng.below(TLDS.len() as u64) as usize]);
        writeln!(f, "{d}")?;
        if i % step == 0 {
            writeln!(hits, "domain=mail.{d}")?;
            hit_count += 1;
        }
    }
    f.flush()?;
    hits.flush()?;

    if args.mixed > 0 {
        // Hit samples of this feed go to their own file, so its runs can be measured
        // apart from the per-kind feeds above.
        let mut f = create("mixed.csv")?;
        let mut mixed_hits = create("mixed_hits.txt")?;
        writeln!(f, "ioc,context")?;
        let step = keep(args.mixed);
        for i in 0..args.mixed {
            let (ioc, sample) = match i % 10 {
                0..=2 => {
                    let mut v = String::new();
                    rng.hex(&mut v, 32);
                    (v.clone(), format!("hash={v}"))
                }
                3 => {
                    let mut v = String::new();
                    rng.hex(&mut v, 64);
                    (v.clone(), format!("hash={}", v.to_ascii_lowercase()))
                }
                4..=5 => {
                    let h = host(&mut rng, i);
                    let p = path(&mut rng, 2);
                    (format!("{h}{p}"), format!("url=http://{h}{p}"))
                }
                6 => {
                    let h = host(&mut rng, i);
                    (format!("*.{h}/*"), format!("url=https://a.{h}/x"))
                }
                7 => {
                    let h = host(&mut rng, i);
                    (format!("{h}/*"), format!("url={h}/login?u=1"))
                }
                8 => {
                    let ip = format!(
                        "{}.{}.{}.{}",
                        10 + rng.below(100),
                        rng.below(256),
                        rng.below(256),
                        rng.below(256)
                    );
                    (ip.clone(), format!("ip={ip}"))
                }
                _ => {
                    let net = format!(
                        "{}.{}.{}",
                        10 + rng.below(100),
                        rng.below(256),
                        rng.below(256)
                    );
                    (format!("{net}.0/24"), format!("ip={net}.77"))
                }
            };
            writeln!(f, "{ioc},mixed_{}", i % 97)?;
            // Whole blocks of ten rows, so every kind is sampled.
            if (i / 10) % (step / 10).max(1) == 0 {
                writeln!(mixed_hits, "{sample}")?;
            }
        }
        f.flush()?;
        mixed_hits.flush()?;
    }

    let mut misses = create("misses.txt")?;
    let mut miss_rng = Rng::new(args.seed.wrapping_add(0xDEAD_BEEF));
    let miss_count = 100_000;
    for i in 0..miss_count {
        match i % 4 {
            0 => {
                let mut w = String::new();
                miss_rng.word(&mut w, 2, 4);
                writeln!(misses, "url=http://{w}{i}.invalid/a/b?c={i}")?;
            }
            1 => {
                let mut h = String::new();
                miss_rng.hex(&mut h, 32);
                // From an independent stream: a collision with a feed digest has
                // probability ~n/2^128.
                writeln!(misses, "hash={h}")?;
            }
            2 => writeln!(
                misses,
                "ip=198.{}.{}.{}",
                18 + miss_rng.below(2),
                miss_rng.below(256),
                miss_rng.below(256)
            )?,
            _ => writeln!(misses, "domain=m{i}.invalid")?,
        }
    }
    misses.flush()?;
    let entries = args.urls + args.hashes + args.ips + args.domains + args.mixed;
    Ok((entries, hit_count, miss_count))
}

/// Load a workload file (`key=value` per line).
pub fn read_workload(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
