//! `loadtest`: a KUMA-like load generator for tracer (SPEC §9).
//!
//! Opens connections that behave like KUMA's `cybertrace` enrichment (preamble, then
//! request lines of 1–3 indicators on long-lived connections), checks every answer
//! against a workload whose hits and misses are known, and reports throughput,
//! latency percentiles and errors. `--ceiling` also runs the same load against an
//! in-process bare responder (same runtimes and connection code as the server, no
//! lookups), so a run states the server's rate as a share of what the transport
//! allows on this machine. `--http URL` drives the HTTP API instead (SPEC §12), as
//! KUMA's `cybertrace-http` source does: one request of N objects at a time on each
//! keep-alive connection, TLS for `https://`. Traffic goes to loopback only, and every
//! run ends by itself.

mod check;
mod http;
mod run;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use http::{Endpoint, Trust};
use run::{Plan, Protocol, Report};
use workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "KUMA-like load generator for tracer (loopback only)"
)]
struct Args {
    /// Server address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:16666")]
    addr: SocketAddr,
    /// Drive the HTTP API at this URL instead of the TCP protocol, e.g.
    /// https://127.0.0.1:9443/api/1.1/lookup (the host must be loopback).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["addr", "depth", "reconnect_each", "idle", "ceiling",
            "ceiling_only", "ceiling_io", "ceiling_threads"]
    )]
    http: Option<String>,
    /// `--http`: HTTP Basic auth user.
    #[arg(long, requires_all = ["http", "password"])]
    user: Option<String>,
    /// `--http`: HTTP Basic auth password.
    #[arg(long, requires_all = ["http", "user"])]
    password: Option<String>,
    /// `--http`: objects per request (default: 1–3 at random).
    #[arg(
        long,
        value_name = "N",
        requires = "http",
        conflicts_with = "per_request"
    )]
    objects_per_request: Option<usize>,
    /// `--http` with https: accept any server certificate (handshake signatures are
    /// still checked).
    #[arg(long, requires = "http", conflicts_with = "ca_file")]
    insecure: bool,
    /// `--http` with https: trust the certificates in this PEM file (the server's
    /// self-signed certificate, or its CA).
    #[arg(long, value_name = "PEM", requires = "http")]
    ca_file: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests in flight per connection (1 = KUMA's behaviour).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Open loop: total requests per second over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// A new connection per request, like clients of the old Python server.
    #[arg(long)]
    reconnect_each: bool,
    /// When a connection breaks, count its outstanding requests as lost, open a new
    /// connection and go on, as KUMA does (`false`: the connection stays down and its
    /// requests count as errors).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    reconnect_on_error: bool,
    /// Replace this many of the connections every `--churn-every` seconds (closed
    /// between answers, a new one opened): clients that come and go.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    #[arg(long, default_value_t = 5.0)]
    churn_every: f64,
    /// Indicators per request line (default: 1–3 at random).
    #[arg(long)]
    per_request: Option<usize>,
    /// Share of indicators drawn from the known hits.
    #[arg(long, default_value_t = 0.05)]
    hit_ratio: f64,
    /// Indicators that must hit (`key=value` lines, as `tracer generate` writes).
    #[arg(long, requires = "misses")]
    hits: Option<PathBuf>,
    /// Indicators that must miss.
    #[arg(long, requires = "hits")]
    misses: Option<PathBuf>,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Extra connections that only send the preamble and stay idle.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also measure an in-process bare responder with the same load.
    #[arg(long)]
    ceiling: bool,
    /// Runtime of the bare responder.
    #[arg(long, value_enum, default_value = "auto")]
    ceiling_io: CeilingIo,
    /// Worker threads of the bare responder.
    #[arg(long)]
    ceiling_threads: Option<usize>,
    /// Only run the bare responder (no server needed).
    #[arg(long)]
    ceiling_only: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress line each second (on stderr, with or without `--json`).
    #[arg(long)]
    quiet: bool,
}

/// `--ceiling-io` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CeilingIo {
    Auto,
    Uring,
    Epoll,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "{} is not a loopback address: loadtest only targets this machine",
        args.addr
    );
    anyhow::ensure!(
        args.objects_per_request != Some(0),
        "--objects-per-request must be at least 1"
    );
    let protocol = match &args.http {
        None => Protocol::Tcp,
        Some(url) => {
            let trust = match (&args.ca_file, args.insecure) {
                (Some(path), _) => Some(Trust::CaFile(path.clone())),
                (None, true) => Some(Trust::Any),
                (None, false) => None,
            };
            let credentials = args.user.as_deref().zip(args.password.as_deref());
            Protocol::Http(Arc::new(Endpoint::new(url, credentials, trust)?))
        }
    };
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.hit_ratio),
        "--hit-ratio must be within 0..1"
    );
    let workload = Arc::new(match (&args.hits, &args.misses) {
        (Some(h), Some(m)) => Workload::from_files(h, m)?,
        _ => Workload::demo(),
    });
    let plan = Plan {
        addr: match &protocol {
            Protocol::Tcp => args.addr,
            Protocol::Http(endpoint) => endpoint.addr,
        },
        protocol,
        connections: args.connections.max(1),
        threads: args.threads,
        depth: args.depth.max(1),
        rate: args.rate.unwrap_or(0.0),
        reconnect_each: args.reconnect_each,
        per_request: args.objects_per_request.or(args.per_request).unwrap_or(0),
        hit_ratio: args.hit_ratio,
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        duration: Duration::from_secs_f64(args.duration),
        idle: args.idle,
        bare: false,
        reconnect_on_error: args.reconnect_on_error,
        churn: args.churn,
        churn_every: Duration::from_secs_f64(args.churn_every.max(0.1)),
        progress: !args.quiet,
    };
    let mut reports = Vec::new();
    if !args.ceiling_only {
        reports.push(run::run(&plan, workload.clone())?);
    }
    if args.ceiling || args.ceiling_only {
        reports.push(ceiling(&args, &plan, workload)?);
    }
    let failed = reports.iter().any(Report::failed);
    if args.json {
        let ratio =
            (reports.len() == 2).then(|| reports[0].lookups_per_sec / reports[1].lookups_per_sec);
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "runs": reports, "server_share_of_ceiling": ratio })
            )?
        );
    } else {
        for r in &reports {
            print_report(r);
        }
        if reports.len() == 2 && reports[1].lookups_per_sec > 0.0 {
            println!(
                "server = {:.1}% of the bare responder's rate on this machine",
                100.0 * reports[0].lookups_per_sec / reports[1].lookups_per_sec
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Start a bare responder on 127.0.0.1:0 in this process and run the same plan on it.
fn ceiling(args: &Args, plan: &Plan, workload: Arc<Workload>) -> anyhow::Result<Report> {
    use tracer::serve::{Config, IoMode, Server};
    let mut config = Config::new("127.0.0.1:0".parse()?);
    config.io = match args.ceiling_io {
        CeilingIo::Auto => IoMode::Auto,
        CeilingIo::Uring => IoMode::Uring,
        CeilingIo::Epoll => IoMode::Epoll,
    };
    if let Some(n) = args.ceiling_threads {
        config.threads = n;
    }
    config.max_connections = 1 << 20;
    config.bare = true;
    let server = Server::start(config, tracer::engine::Sources::default())?;
    let mut p = plan.clone();
    p.addr = server.local_addr();
    p.bare = true;
    let mut report = run::run(&p, workload)?;
    report.target = format!("bare responder ({:?}) at {}", server.runtime(), p.addr);
    server.shutdown();
    Ok(report)
}

fn print_report(r: &Report) {
    println!(
        "{} — {}, {} connections, {:.0} s measured",
        r.target, r.mode, r.connections, r.seconds
    );
    println!(
        "  throughput  {:.0} requests/s, {:.0} lookups/s ({} requests, {} lookups)",
        r.requests_per_sec, r.lookups_per_sec, r.requests, r.indicators
    );
    let l = &r.latency_us;
    println!(
        "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let Some(l) = &r.send_lateness_us {
        println!(
            "  send lateness µs (client pacing)  p50 {}  p99 {}  p99.9 {}  max {}",
            l.p50, l.p99, l.p999, l.max
        );
    }
    if r.errors.is_empty() {
        println!("  errors      none");
    } else {
        for (k, v) in &r.errors {
            println!("  errors      {v} {k}");
        }
        for e in &r.first_errors {
            println!("    {e}");
        }
    }
    println!(
        "  lost        {} requests on {} broken connections ({} reconnects, {} refused connection attempts)",
        r.lost, r.connections_broken, r.reconnects, r.connect_failures
    );
    for e in &r.first_lost {
        println!("    {e}");
    }
}
