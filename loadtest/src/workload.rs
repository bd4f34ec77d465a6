//! What the load generator sends: request lines of 1–3 indicators, each drawn as a
//! hit or a miss with a known probability, and what each answer must then contain.

use std::path::Path;

use tracer::generate::Rng;

/// Indicators known to hit and known to miss the served index.
pub struct Workload {
    pub hits: Vec<String>,
    pub misses: Vec<String>,
}

/// One indicator of a sent request: its value as sent, and whether it must hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub value: String,
    pub hit: bool,
}

impl Workload {
    /// `key=value` lines from `tracer generate`'s `hits.txt` / `misses.txt`.
    pub fn from_files(hits: &Path, misses: &Path) -> anyhow::Result<Workload> {
        let read = |p: &Path| -> anyhow::Result<Vec<String>> {
            let v = tracer::generate::read_workload(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            anyhow::ensure!(!v.is_empty(), "{}: no samples", p.display());
            Ok(v)
        };
        Ok(Workload {
            hits: read(hits)?,
            misses: read(misses)?,
        })
    }

    /// Samples for the bundled demo feeds (`tracer serve` with no arguments).
    pub fn demo() -> Workload {
        let hits = [
            "url=gmer.com",
            "url=https://www.GMER.com/",
            "url=http://login.phish-bank.com/x/y",
            "url=https://secure-login.example.org/account/reset",
            "url=http://paypal-verify.example.com/a/verify.php",
            "url=discord-nitro.gift/claim",
            "ip=198.51.100.77",
            "ip=10.13.5.5",
            "ip=2001:db8:bad:1::5",
            "hash=44d88612fea8a8f36de82e1278abb02f",
            "md5=0CC175B9C0F1B6A831C399E269772661",
            "domain=a.b.malvertising.example",
        ];
        let misses = (0..1000)
            .map(|i| match i % 4 {
                0 => format!("url=http://miss{i}.invalid/a/b?c={i}"),
                1 => format!("ip=198.18.{}.{}", i / 256, i % 256),
                2 => format!("hash={:032X}", 0xF0F0_0000u64 + i as u64),
                _ => format!("domain=m{i}.invalid"),
            })
            .collect();
        Workload {
            hits: hits.iter().map(|s| s.to_string()).collect(),
            misses,
        }
    }

    /// Append one request line (with LF) to `out` and return what it must produce.
    /// `per_request` 0 means 1–3 at random. With `bare`, nothing may hit (the bare
    /// responder looks nothing up).
    pub fn request(
        &self,
        rng: &mut Rng,
        per_request: usize,
        hit_ratio: f64,
        bare: bool,
        out: &mut Vec<u8>,
    ) -> Vec<Sent> {
        let n = if per_request == 0 {
            1 + rng.below(3) as usize
        } else {
            per_request
        };
        let mut sent = Vec::with_capacity(n);
        for i in 0..n {
            let hit = (rng.next_u64() as f64 / u64::MAX as f64) < hit_ratio;
            let pool = if hit { &self.hits } else { &self.misses };
            let line = &pool[rng.below(pool.len() as u64) as usize];
            if i > 0 {
                out.push(b'|');
            }
            out.extend_from_slice(line.as_bytes());
            let value = line
                .split_once('=')
                .map_or(line.as_str(), |(_, v)| v)
                .trim()
                .to_string();
            sent.push(Sent {
                value,
                hit: hit && !bare,
            });
        }
        out.push(b'\n');
        sent
    }
}
