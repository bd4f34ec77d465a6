//! `tracer` entry point: parse the command line, set up logging, run the subcommand,
//! turn errors into a message and a non-zero exit.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracer::config::LogFormat;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::rewrite_legacy(std::env::args().collect());
    let cli = Cli::parse_from(args);
    // A panic is a bug: say where, through the log (and its file), not only stderr.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("?"), "panic: {info}");
    }));
    let default = match cli.command {
        Command::Serve(_) | Command::Compile(_) => "info",
        _ => "warn",
    };
    let wanted = cli.log.as_deref().unwrap_or(default);
    let filter = EnvFilter::try_new(wanted).unwrap_or_else(|_| EnvFilter::new(default));
    let stdout = &mut std::io::stdout().lock();
    let format = cli.log_format.map_or(LogFormat::Text, |f| f.format());
    let result = match &cli.command {
        Command::Serve(args) => serve(args, &cli),
        Command::CheckConfig(args) => {
            init_stderr_logging(filter, format);
            cli::commands::check_config(args, stdout)
        }
        Command::Compile(args) => {
            init_stderr_logging(filter, format);
            cli::commands::compile(args, stdout)
        }
        Command::Lookup(args) => {
            init_stderr_logging(filter, format);
            cli::commands::lookup(args, stdout)
        }
        Command::Inspect(args) => {
            init_stderr_logging(filter, format);
            cli::commands::inspect(args, stdout)
        }
        Command::Generate(args) => {
            init_stderr_logging(filter, format);
            cli::commands::generate(args)
        }
        Command::Cert(args) => {
            init_stderr_logging(filter, format);
            cli::commands::cert(args, stdout)
        }
        Command::Passwd => {
            init_stderr_logging(filter, format);
            cli::commands::passwd(&mut std::io::stdin().lock(), stdout)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A log layer writing to `writer`: text (colour only on a terminal) or JSON lines.
fn layer<S, W>(
    writer: W,
    format: LogFormat,
    ansi: bool,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).boxed(),
        LogFormat::Json => fmt.json().with_current_span(false).boxed(),
    }
}

fn init_stderr_logging(filter: EnvFilter, format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(std::io::stderr, format, ansi))
        .init();
}

fn serve(args: &cli::ServeArgs, cli: &Cli) -> anyhow::Result<()> {
    let mut resolved = args.resolve(cli).map_err(anyhow::Error::msg)?;
    let log = &resolved.log;
    let filter = log
        .filter
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let format = log.format;
    // The file writer's guard flushes on drop: keep it for the life of the server.
    let mut _guard = None;
    let file_layer = match &log.file {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("the log file needs a file name"))?;
            let (writer, guard) =
                tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, name));
            _guard = Some(guard);
            Some(layer(writer, format, false))
        }
        None => None,
    };
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(std::io::stderr, format, ansi))
        .with(file_layer)
        .init();
    let sources = &mut resolved.plan.sources;
    if args.config.is_none() && sources.is_empty() {
        let here = std::path::Path::new("fixtures");
        let root = if here.is_dir() {
            here.to_path_buf()
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
        };
        tracing::info!(
            "no feeds given: serving the demo feeds in {}",
            root.display()
        );
        *sources = tracer::engine::Sources::demo(&root);
    } else if sources.is_empty() {
        tracing::warn!(
            "the configuration names no feed and no index: only enrichers can answer, every other lookup misses"
        );
    }
    // SIGHUP re-reads the config file, with the same flags laid over it.
    let reread: Option<tracer::serve::Reread> = args.config.clone().map(|path| {
        let (args, cli) = (args.clone(), cli.clone());
        let logging = resolved.log.clone();
        Box::new(move || {
            let mut r = tracer::config::load(&path).map_err(|e| e.to_string())?;
            args.apply(&cli, &mut r)?;
            // Logging is set up once, at start.
            if r.log != logging {
                tracing::warn!("`log`, `log_file` or `log_format` changed in the configuration: it takes effect at the next restart");
            }
            Ok((r.serve, r.plan))
        }) as tracer::serve::Reread
    });
    tracer::serve::run(resolved.serve, resolved.plan, reread)?;
    Ok(())
}
