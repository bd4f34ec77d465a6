//! `tracer` entry point: parse the command line, set up logging, run the subcommand,
//! turn errors into a message and a non-zero exit.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::rewrite_legacy(std::env::args().collect());
    let cli = Cli::parse_from(args);
    let default = match cli.command {
        Command::Serve(_) | Command::Compile(_) => "info",
        _ => "warn",
    };
    let wanted = cli.log.as_deref().unwrap_or(default);
    let filter = EnvFilter::try_new(wanted).unwrap_or_else(|_| EnvFilter::new(default));
    let stdout = &mut std::io::stdout().lock();
    let result = match &cli.command {
        Command::Serve(args) => serve(args, filter),
        Command::Compile(args) => {
            init_stderr_logging(filter);
            cli::commands::compile(args, stdout)
        }
        Command::Lookup(args) => {
            init_stderr_logging(filter);
            cli::commands::lookup(args, stdout)
        }
        Command::Inspect(args) => {
            init_stderr_logging(filter);
            cli::commands::inspect(args, stdout)
        }
        Command::Generate(args) => {
            init_stderr_logging(filter);
            cli::commands::generate(args)
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

fn init_stderr_logging(filter: EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn serve(args: &cli::ServeArgs, filter: EnvFilter) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let config = args.config().map_err(anyhow::Error::msg)?;
    let mut sources = args.sources().map_err(anyhow::Error::msg)?;
    // The file writer's guard flushes on drop: keep it for the life of the server.
    let mut _guard = None;
    let file_layer = match &args.log_file {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("--log-file needs a file name"))?;
            let (writer, guard) =
                tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, name));
            _guard = Some(guard);
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(file_layer)
        .init();
    if sources.is_empty() {
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
        sources = tracer::engine::Sources::demo(&root);
    }
    tracer::serve::run(config, sources)?;
    Ok(())
}
