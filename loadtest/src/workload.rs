//! What the load generator sends: request lines of 1–3 indicators (or the objects of
//! one HTTP request), each drawn as a hit or a miss with a known probability, and what
//! each answer must then contain.

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
        let n = count(rng, per_request);
        let mut sent = Vec::with_capacity(n);
        for i in 0..n {
            let (line, hit) = self.pick(rng, hit_ratio);
            if i > 0 {
                out.push(b'|');
            }
            out.extend_from_slice(line.as_bytes());
            sent.push(Sent {
                value: value_of(line).to_string(),
                hit: hit && !bare,
            });
        }
        out.push(b'\n');
        sent
    }

    /// The objects of one HTTP request (SPEC §12): bare values, no `key=`, drawn as
    /// [`Workload::request`] draws them. `per_request` 0 means 1–3 at random.
    pub fn objects(&self, rng: &mut Rng, per_request: usize, hit_ratio: f64) -> Vec<Sent> {
        let n = count(rng, per_request);
        (0..n)
            .map(|_| {
                let (line, hit) = self.pick(rng, hit_ratio);
                Sent {
                    value: value_of(line).to_string(),
                    hit,
                }
            })
            .collect()
    }

    /// One indicator line, drawn from the hits with probability `hit_ratio`.
    fn pick(&self, rng: &mut Rng, hit_ratio: f64) -> (&str, bool) {
        let hit = (rng.next_u64() as f64 / u64::MAX as f64) < hit_ratio;
        let pool = if hit { &self.hits } else { &self.misses };
        (&pool[rng.below(pool.len() as u64) as usize], hit)
    }
}

/// How many indicators one request holds: `per_request`, or 1–3 at random for 0.
fn count(rng: &mut Rng, per_request: usize) -> usize {
    if per_request == 0 {
        1 + rng.below(3) as usize
    } else {
        per_request
    }
}

/// The value of a `key=value` workload line (the whole line if it has no key).
fn value_of(line: &str) -> &str {
    line.split_once('=').map_or(line, |(_, v)| v).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_objects_are_bare_values_with_known_outcomes() {
        let w = Workload {
            hits: vec!["url=http://example.com/x".into()],
            misses: vec!["hash=C1153422C5F68E731347F6A33F791598".into()],
        };
        let mut rng = Rng::new(7);
        let all_hits = w.objects(&mut rng, 4, 1.0);
        assert_eq!(all_hits.len(), 4);
        assert!(all_hits
            .iter()
            .all(|s| s.hit && s.value == "http://example.com/x"));
        let all_misses = w.objects(&mut rng, 0, 0.0);
        assert!((1..=3).contains(&all_misses.len()));
        assert!(all_misses
            .iter()
            .all(|s| !s.hit && s.value == "C1153422C5F68E731347F6A33F791598"));
    }
}
