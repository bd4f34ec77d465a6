//! `--metrics ADDR`: Prometheus text exposition at `/metrics`.
//!
//! A plain blocking listener on its own thread: scrapes are rare (every few seconds),
//! so they never touch the worker runtimes. Everything exported is already counted by
//! the workers once per batch (`server::Stats`); a scrape only reads atomics and the
//! index's counts.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::indicator::Kind;
use crate::server::{Shared, BATCH_BUCKETS_US};

/// Bind `addr` and serve scrapes from a background thread; returns the bound address.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("tracer-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = scrape(conn, &shared) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}

fn scrape(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 1024];
    let n = conn.read(&mut req)?;
    let line = req[..n].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let (status, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
        ("200 OK", render(shared))
    } else {
        ("404 Not Found", "only /metrics is served\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exposition text.
pub fn render(shared: &Shared) -> String {
    let s = &shared.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "tracer_requests_total",
        "counter",
        "Request lines answered.",
        &one(get(&s.requests)),
    );
    let by_kind: Vec<(String, u64)> = Kind::ALL
        .iter()
        .map(|k| {
            (
                format!("{{kind=\"{}\"}}", k.name()),
                get(&s.by_kind[k.index()]),
            )
        })
        .collect();
    metric(
        "tracer_indicators_total",
        "counter",
        "Indicators looked up, by request kind.",
        &by_kind,
    );
    metric(
        "tracer_hits_total",
        "counter",
        "Hit lines sent.",
        &one(get(&s.hits)),
    );
    metric(
        "tracer_connections_total",
        "counter",
        "Connections accepted.",
        &one(get(&s.connections)),
    );
    metric(
        "tracer_connections_open",
        "gauge",
        "Connections open now.",
        &one(shared.open_connections() as u64),
    );
    metric(
        "tracer_errors_total",
        "counter",
        "Problems, by reason.",
        &[
            ("{reason=\"max_connections\"}".into(), get(&s.refused_limit)),
            ("{reason=\"not_allowed\"}".into(), get(&s.refused_allow)),
            ("{reason=\"line_too_long\"}".into(), get(&s.overlong)),
            ("{reason=\"reload_failed\"}".into(), get(&s.reload_failures)),
        ],
    );
    metric(
        "tracer_reloads_total",
        "counter",
        "Successful index reloads.",
        &one(get(&s.reloads)),
    );
    let (generation, set) = shared.current();
    metric(
        "tracer_index_generation",
        "gauge",
        "Reloads published since start.",
        &one(generation),
    );
    let counts = set.counts();
    metric(
        "tracer_index_records",
        "gauge",
        "Feed records served.",
        &one(counts.records),
    );
    metric(
        "tracer_index_entries",
        "gauge",
        "Index entries, by structure.",
        &[
            ("{structure=\"exact_keys\"}".into(), counts.exact_keys),
            ("{structure=\"url_masks\"}".into(), counts.masks),
            ("{structure=\"md5\"}".into(), counts.md5),
            ("{structure=\"sha1\"}".into(), counts.sha1),
            ("{structure=\"sha256\"}".into(), counts.sha256),
            ("{structure=\"ipv4_blocks\"}".into(), counts.ipv4_blocks),
            ("{structure=\"ipv6_blocks\"}".into(), counts.ipv6_blocks),
        ],
    );
    // Histogram: buckets are stored per bucket, exported cumulatively.
    let mut cumulative = 0;
    let mut buckets = Vec::new();
    for (i, le) in BATCH_BUCKETS_US.iter().enumerate() {
        cumulative += get(&s.batch_buckets[i]);
        buckets.push((
            format!("_bucket{{le=\"{}\"}}", *le as f64 / 1e6),
            cumulative,
        ));
    }
    cumulative += get(&s.batch_buckets[BATCH_BUCKETS_US.len()]);
    buckets.push(("_bucket{le=\"+Inf\"}".into(), cumulative));
    let _ = writeln!(
        out,
        "# HELP tracer_batch_seconds Time to answer the complete lines of one read.\n# TYPE tracer_batch_seconds histogram"
    );
    for (suffix, v) in buckets {
        let _ = writeln!(out, "tracer_batch_seconds{suffix} {v}");
    }
    let _ = writeln!(
        out,
        "tracer_batch_seconds_sum {}",
        get(&s.batch_sum_us) as f64 / 1e6
    );
    let _ = writeln!(out, "tracer_batch_seconds_count {cumulative}");
    out
}
