//! `tracer` entry point: parse the command line, set up logging, run the subcommand,
//! turn errors into a message and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use tracer::cli::{self, Cli, Command};
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
        Command::Serve(_) => Err(anyhow::anyhow!("serve: not built yet")),
        Command::Compile(args) => {
            init_stderr_logging(filter);
            tracer::commands::compile(args, stdout)
        }
        Command::Lookup(args) => {
            init_stderr_logging(filter);
            tracer::commands::lookup(args, stdout)
        }
        Command::Inspect(args) => {
            init_stderr_logging(filter);
            tracer::commands::inspect(args, stdout)
        }
        Command::Generate(args) => {
            init_stderr_logging(filter);
            tracer::generate::run(args)
                .map(|(entries, hits, misses)| {
                    eprintln!(
                        "wrote {entries} feed entries, {hits} hit and {misses} miss samples to {}",
                        args.out.display()
                    );
                })
                .map_err(anyhow::Error::from)
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
