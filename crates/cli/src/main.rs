//! `pagedattn`: PagedAttention on the CPU — benchmarks, generation, serving.

mod bench_kv;
mod bench_serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "pagedattn", version, about = "PagedAttention on the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

// Parsed once at start-up; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Bench {
    /// The serving benchmark: paged vs contiguous KV at equal memory.
    Serve(bench_serve::ServeArgs),
    /// Block manager vs contiguous allocator on a synthetic serving workload (no model).
    Kv(bench_kv::KvArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench { which } => match which {
            Bench::Serve(args) => bench_serve::run(args),
            Bench::Kv(args) => bench_kv::run(args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
