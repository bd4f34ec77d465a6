//! The operator commands other than `serve`: `compile`, `lookup`, `inspect`,
//! `generate`, `check-config`, `cert`, `passwd`, printing their results for a person
//! at a terminal.

use std::io::Write;
use std::time::Instant;

use anyhow::Context as _;

use super::{CertArgs, CheckConfigArgs, CompileArgs, GenerateArgs, InspectArgs, LookupArgs};
use tracer::engine::{Engine, Plan};
use tracer::index::compile::Compiler;
use tracer::index::Index;
use tracer::indicator::Kind;
use tracer::protocol::cybertrace::{Limits, Responder};

/// `tracer compile`.
pub fn compile(args: &CompileArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (spec, target) = args.spec().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut compiler = Compiler::new(args.strict)
        .allow_broad_masks(args.allow_broad_masks)
        .with_progress();
    let summary = compiler.add_feed(&spec)?;
    let read_secs = started.elapsed().as_secs_f64();
    let sections = compiler.finish()?;
    let bytes = tracer::index::storage::write_atomically(&target, &sections)?;
    writeln!(
        out,
        "compiled {} -> {}",
        spec.path.display(),
        target.display()
    )?;
    writeln!(out, "  category   {}", summary.category)?;
    writeln!(out, "  rows read  {}", summary.rows + summary.skipped)?;
    writeln!(out, "  records    {}", summary.records)?;
    for kind in Kind::ALL {
        let n = summary.entries[kind.index()];
        if n > 0 {
            let extra = if kind == Kind::Url {
                format!(" ({} masks)", summary.masks)
            } else {
                String::new()
            };
            writeln!(out, "  {:<10} {n}{extra}", kind.name())?;
        }
    }
    writeln!(out, "  skipped    {}", summary.skipped)?;
    for (reason, n) in &summary.skip_reasons {
        writeln!(out, "    {n:>8}  {reason}")?;
    }
    writeln!(
        out,
        "  index      {bytes} bytes in {:.2}s (reading {read_secs:.2}s)",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// `tracer lookup`: the arguments form one request line; print its answer.
pub fn lookup(args: &LookupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // The file is read once: its feeds and enrichers, and the server's limits.
    let (mut plan, config) = match &args.config {
        Some(path) => {
            let r = tracer::config::load(path)?;
            (r.plan, r.serve)
        }
        None => (
            Plan::default(),
            tracer::serve::Config::new(([127, 0, 0, 1], 0).into()),
        ),
    };
    let feeds = args.feeds.specs().map_err(anyhow::Error::msg)?;
    if !feeds.is_empty() {
        plan.sources.feeds = feeds;
    }
    if !args.indexes.is_empty() {
        plan.sources.indexes = args.indexes.clone();
    }
    plan.sources.strict |= args.feeds.strict;
    plan.sources.allow_broad_masks |= args.feeds.allow_broad_masks;
    if plan.sources.is_empty() && plan.enrichers.is_empty() {
        anyhow::bail!(
            "give an index with -l FILE.tracer, a feed with -f FILE -k KEY, or --config FILE"
        );
    }
    let mut limits = config.limits();
    limits.max_hits = args.max_hits.unwrap_or(limits.max_hits);
    limits.max_hits_per_line = args.max_hits_per_line.unwrap_or(limits.max_hits_per_line);
    let engine = Engine::start(plan)?;
    let line = args.indicators.join("|");
    let answer = answer_line(&engine, limits, &line)?;
    out.write_all(&answer)?;
    Ok(())
}

/// `tracer check-config FILE`.
pub fn check_config(args: &CheckConfigArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let resolved = tracer::config::load(&args.file)?;
    writeln!(
        out,
        "# {}: valid. The settings it gives, defaults included (secrets masked):",
        args.file.display()
    )?;
    out.write_all(resolved.describe().as_bytes())?;
    Ok(())
}

/// The server's answer to one line, byte for byte: enrichers included, so on a
/// runtime of its own, as a worker thread runs one.
fn answer_line(engine: &Engine, limits: Limits, line: &str) -> anyhow::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let snapshot = engine.current();
    Ok(local.block_on(&rt, async {
        let mut answer = Vec::new();
        Responder::new(limits)
            .answer(&snapshot, line.as_bytes(), &mut answer, |_| {})
            .await;
        answer
    }))
}

/// `tracer inspect`.
pub fn inspect(args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    for path in &args.indexes {
        let started = Instant::now();
        let index = Index::open(path)?;
        let open_ms = started.elapsed().as_secs_f64() * 1000.0;
        let meta = index.meta();
        let c = index.counts();
        writeln!(out, "{}", path.display())?;
        writeln!(out, "  format version  {}", index.header().version)?;
        writeln!(
            out,
            "  written by      tracer {} ({})",
            meta.tool_version,
            index.header().crate_versions
        )?;
        let built = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.built_unix);
        writeln!(
            out,
            "  built           {}",
            humantime::format_rfc3339_seconds(built)
        )?;
        writeln!(
            out,
            "  size            {} bytes, opened and verified in {open_ms:.1} ms",
            index.size()
        )?;
        writeln!(out, "  records         {}", c.records)?;
        writeln!(
            out,
            "  exact keys      {} (URLs, domains, raw)",
            c.exact_keys
        )?;
        writeln!(
            out,
            "  mask patterns   {} ({} by a literal inside the host, {} with none)",
            c.masks, c.infix_masks, c.any_masks
        )?;
        writeln!(
            out,
            "  hashes          md5 {}, sha1 {}, sha256 {}",
            c.md5, c.sha1, c.sha256
        )?;
        writeln!(
            out,
            "  IP blocks       v4 {}, v6 {}",
            c.ipv4_blocks, c.ipv6_blocks
        )?;
        writeln!(out, "  sections")?;
        for (id, range) in &index.header().sections {
            writeln!(
                out,
                "    {:<20} {:>12} bytes at {}",
                id.name(),
                range.len(),
                range.start
            )?;
        }
        writeln!(out, "  feeds")?;
        for f in &meta.feeds {
            let entries: Vec<String> = Kind::ALL
                .iter()
                .filter(|k| f.entries.get(k.index()).copied().unwrap_or(0) > 0)
                .map(|k| format!("{} {}", k.name(), f.entries[k.index()]))
                .collect();
            writeln!(
                out,
                "    {} ({}; key {}, kind {}): {} records; {}; {} rows skipped",
                f.category,
                f.source,
                f.key,
                f.kind,
                f.records,
                entries.join(", "),
                f.skipped
            )?;
        }
    }
    Ok(())
}

/// `tracer generate`.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let (entries, hits, misses) = tracer::generate::run(&args.options())
        .with_context(|| format!("writing to {}", args.out.display()))?;
    eprintln!(
        "wrote {entries} feed entries, {hits} hit and {misses} miss samples to {}",
        args.out.display()
    );
    Ok(())
}

/// `tracer cert`: a self-signed certificate and its key, for a first run of the HTTP
/// API (operators replace them with their CA's).
pub fn cert(args: &CertArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let cert_path = args.out.join("cert.pem");
    let key_path = args.out.join("key.pem");
    for p in [&cert_path, &key_path] {
        if p.exists() && !args.force {
            anyhow::bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    for host in &args.hosts {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("--host {host}: {e}"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, args.hosts[0].clone());
    name.push(rcgen::DnType::OrganizationName, "tracer (self-signed)");
    params.distinguished_name = name;
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    params.not_before = (now - day).into();
    params.not_after = (now + day * args.days).into();
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    writeln!(
        out,
        "wrote {} and {} (self-signed, for {}, valid {} days)",
        cert_path.display(),
        key_path.display(),
        args.hosts.join(", "),
        args.days
    )?;
    Ok(())
}

/// Write a file only its owner may read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `tracer passwd`: the argon2id hash of the password on standard input (one line),
/// for `[[http.user]] password_hash`.
pub fn passwd(input: &mut dyn std::io::BufRead, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut line = String::new();
    input.read_line(&mut line).context("reading the password")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!(
            "no password on standard input (e.g. `read -rs pw; echo \"$pw\" | tracer passwd`)"
        );
    }
    let hash = tracer::serve::auth::hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    writeln!(out, "{hash}")?;
    Ok(())
}
