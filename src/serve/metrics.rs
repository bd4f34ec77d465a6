//! `--metrics ADDR`: Prometheus text exposition (format 0.0.4) at `/metrics`.
//!
//! A plain blocking listener on its own thread: scrapes are rare (every few seconds),
//! so they never touch the worker runtimes. The text is produced by the
//! `prometheus-client` crate from a collector that, at each scrape, sums the workers'
//! counters ([`super::stats`]) and reads the engine's; the crate escapes label values
//! (category names come from feeds and may hold anything).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::{ErrorReason, BATCH_BUCKETS_US, HTTP_STATUSES};
use super::worker::Shared;
use crate::enrich::remote::{Failure, LATENCY_BUCKETS_MS};
use crate::enrich::Enricher;
use crate::indicator::Kind;

/// Bind `addr` and serve scrapes from a background thread; returns the bound address.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TracerCollector(shared)));
    std::thread::Builder::new()
        .name("tracer-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = scrape(conn, &registry) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })?;
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}

fn scrape(mut conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 1024];
    let n = conn.read(&mut req)?;
    let line = req[..n].split(|&b| b == b'\n').next().unwrap_or(&[]);
    let (status, content_type, body) =
        if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
            let mut body = String::with_capacity(8192);
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry)
                .map_err(|_| std::io::Error::other("metrics encoding failed"))?;
            (
                "200 OK",
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            )
        } else {
            (
                "404 Not Found",
                "text/plain",
                "only /metrics is served\n".to_string(),
            )
        };
    write!(
        conn,
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads the server's counters at each scrape.
struct TracerCollector(Arc<Shared>);

impl std::fmt::Debug for TracerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TracerCollector")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value as i64).encode(enc.encode_descriptor(
        name,
        help,
        None,
        MetricType::Gauge,
    )?)
}

impl Collector for TracerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let t = shared.stats.sum();
        let engine = &shared.engine;
        counter(
            &mut enc,
            "tracer_requests",
            "Request lines answered",
            t.requests,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "tracer_indicators",
                "Indicators looked up, by request kind",
                None,
                MetricType::Counter,
            )?;
            for k in Kind::ALL {
                let labels = [("kind", k.name())];
                ConstCounter::new(t.by_kind[k.index()]).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(&mut enc, "tracer_hits", "Hit lines sent", t.hits)?;
        {
            let mut m = enc.encode_descriptor(
                "tracer_category_hits",
                "Hit lines sent, by category (feed category, before any _2 suffix)",
                None,
                MetricType::Counter,
            )?;
            for (name, n) in &t.hits_by_category {
                let labels = [("category", String::from_utf8_lossy(name).into_owned())];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "tracer_connections",
            "Connections accepted",
            t.connections,
        )?;
        gauge(
            &mut enc,
            "tracer_connections_open",
            "Connections open now",
            shared.open.load(Ordering::Relaxed) as u64,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "tracer_errors",
                "Problems, by reason",
                None,
                MetricType::Counter,
            )?;
            for r in ErrorReason::ALL {
                let labels = [("reason", r.label())];
                ConstCounter::new(t.errors[r as usize]).encode(m.encode_family(&labels)?)?;
            }
            let labels = [("reason", "reload_failed")];
            ConstCounter::new(engine.stats.failures.load(Ordering::Relaxed))
                .encode(m.encode_family(&labels)?)?;
        }
        counter(
            &mut enc,
            "tracer_reloads",
            "Successful index reloads",
            engine.stats.reloads.load(Ordering::Relaxed),
        )?;
        let snapshot = engine.current();
        gauge(
            &mut enc,
            "tracer_index_generation",
            "Reloads published since start",
            snapshot.generation(),
        )?;
        let c = snapshot.counts();
        gauge(
            &mut enc,
            "tracer_index_records",
            "Feed records served",
            c.records,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "tracer_index_entries",
                "Index entries, by structure",
                None,
                MetricType::Gauge,
            )?;
            for (structure, n) in [
                ("exact_keys", c.exact_keys),
                ("url_masks", c.masks),
                ("md5", c.md5),
                ("sha1", c.sha1),
                ("sha256", c.sha256),
                ("ipv4_blocks", c.ipv4_blocks),
                ("ipv6_blocks", c.ipv6_blocks),
            ] {
                let labels = [("structure", structure)];
                ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tracer_batch_seconds",
                "Time to answer the complete lines of one read",
                None,
                MetricType::Histogram,
            )?;
            let mut buckets: Vec<(f64, u64)> = BATCH_BUCKETS_US
                .iter()
                .zip(&t.batch_buckets)
                .map(|(le, n)| (*le as f64 / 1e6, *n))
                .collect();
            buckets.push((f64::INFINITY, t.batch_buckets[BATCH_BUCKETS_US.len()]));
            let count = t.batch_buckets.iter().sum();
            m.encode_histogram::<NoLabelSet>(t.batch_sum_us as f64 / 1e6, count, &buckets, None)?;
        }
        let enrichers: Vec<&dyn Enricher> = snapshot.enrichers().iter().map(|e| &**e).collect();
        encode_enrichers(&mut enc, &enrichers)?;
        gauge(
            &mut enc,
            "tracer_ready",
            "1 once the index is loaded (before: connections wait, the HTTP API answers 425)",
            u64::from(engine.is_ready()),
        )?;
        if let Some(feeds) = shared.feeds.get() {
            encode_feeds(&mut enc, &feeds.snapshot())?;
        }
        if let Some(http) = &shared.http {
            {
                let mut m = enc.encode_descriptor(
                    "tracer_http_requests",
                    "HTTP API answers, by status",
                    None,
                    MetricType::Counter,
                )?;
                for (i, n) in t.http_status.iter().enumerate() {
                    let status = HTTP_STATUSES
                        .get(i)
                        .map_or_else(|| "other".to_string(), |s| s.to_string());
                    ConstCounter::new(*n).encode(m.encode_family(&[("status", status)])?)?;
                }
            }
            counter(
                &mut enc,
                "tracer_http_objects",
                "Objects looked up through the HTTP API",
                t.http_objects,
            )?;
            counter(
                &mut enc,
                "tracer_http_login_failures",
                "HTTP API requests refused for missing or wrong credentials",
                http.login_failures(),
            )?;
        }
        Ok(())
    }
}

/// Per downloaded feed (SPEC §13): the age of the data served, updates, failures.
fn encode_feeds(
    enc: &mut DescriptorEncoder,
    feeds: &[(String, crate::update::FeedStatus)],
) -> Result<(), std::fmt::Error> {
    let now = std::time::SystemTime::now();
    {
        let mut m = enc.encode_descriptor(
            "tracer_feed_age_seconds",
            "Time since the data served was last confirmed current (downloaded, or 304 Not Modified); absent until a first download",
            None,
            MetricType::Gauge,
        )?;
        for (name, s) in feeds {
            if let Some(checked) = s.checked {
                let age = now.duration_since(checked).unwrap_or_default().as_secs();
                ConstGauge::new(age as i64).encode(m.encode_family(&[("feed", name.clone())])?)?;
            }
        }
    }
    type Read = fn(&crate::update::FeedStatus) -> u64;
    let counters: [(&str, &str, Read); 2] = [
        (
            "tracer_feed_updates",
            "New data downloaded, compiled and swapped in",
            |s| s.updates,
        ),
        (
            "tracer_feed_update_failures",
            "Update attempts that failed (the data served before stays)",
            |s| s.failures,
        ),
    ];
    for (metric, help, read) in counters {
        let mut m = enc.encode_descriptor(metric, help, None, MetricType::Counter)?;
        for (name, s) in feeds {
            ConstCounter::new(read(s)).encode(m.encode_family(&[("feed", name.clone())])?)?;
        }
    }
    Ok(())
}

/// Per enricher (SPEC §11): calls, cache hits and misses, upstream latency, errors by
/// reason, timeouts, lookups skipped by the breaker, breaker state.
fn encode_enrichers(
    enc: &mut DescriptorEncoder,
    enrichers: &[&dyn Enricher],
) -> Result<(), std::fmt::Error> {
    let remote: Vec<(&dyn Enricher, &crate::enrich::Stats)> = enrichers
        .iter()
        .filter_map(|e| e.stats().map(|s| (*e, s)))
        .collect();
    type Read = fn(&crate::enrich::Stats) -> u64;
    let counters: [(&str, &str, Read); 5] = [
        ("tracer_enricher_calls", "Upstream calls made", |s| {
            s.calls.load(Ordering::Relaxed)
        }),
        (
            "tracer_enricher_cache_hits",
            "Lookups answered from the cache",
            |s| s.cache_hits.load(Ordering::Relaxed),
        ),
        (
            "tracer_enricher_cache_misses",
            "Lookups not in the cache (answered by a call, shared or new)",
            |s| s.cache_misses.load(Ordering::Relaxed),
        ),
        (
            "tracer_enricher_timeouts",
            "Indicators answered without this enricher's hits because its answer was late",
            |s| s.timeouts.load(Ordering::Relaxed),
        ),
        (
            "tracer_enricher_skipped",
            "Lookups not made because the breaker was open",
            |s| s.skipped.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for &(e, s) in &remote {
            let labels = [("enricher", e.name().to_string())];
            ConstCounter::new(read(s)).encode(m.encode_family(&labels)?)?;
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "tracer_enricher_errors",
            "Failed upstream calls, by reason",
            None,
            MetricType::Counter,
        )?;
        for &(e, s) in &remote {
            for f in Failure::ALL {
                let labels = [
                    ("enricher", e.name().to_string()),
                    ("reason", f.label().to_string()),
                ];
                ConstCounter::new(s.errors[f as usize].load(Ordering::Relaxed))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
    }
    {
        let mut m = enc.encode_descriptor(
            "tracer_enricher_breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 probing",
            None,
            MetricType::Gauge,
        )?;
        for &(e, _) in &remote {
            let labels = [("enricher", e.name().to_string())];
            ConstGauge::new(i64::from(e.breaker())).encode(m.encode_family(&labels)?)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "tracer_enricher_upstream_seconds",
        "Upstream call latency",
        None,
        MetricType::Histogram,
    )?;
    for &(e, s) in &remote {
        let counts: Vec<u64> = s
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
            .iter()
            .zip(&counts)
            .map(|(le, n)| (*le as f64 / 1e3, *n))
            .collect();
        buckets.push((f64::INFINITY, counts[LATENCY_BUCKETS_MS.len()]));
        let labels = [("enricher", e.name().to_string())];
        let sum = s.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            sum,
            counts.iter().sum(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}
