//! `pagedattn`: PagedAttention on the CPU — benchmarks, generation and serving.

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

mod bench_kernels;
mod bench_kv;
mod bench_model;
mod bench_serve;
mod flags;
mod generate;
mod machine;
mod model_file;
mod perplexity;
mod roofline;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "pagedattn", version, about = "PagedAttention on the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Generate text with a model (streams tokens to stdout).
    Generate(generate::GenerateArgs),
    /// Perplexity of a model on a text file, by llama.cpp's method (windows of --ctx
    /// tokens, the second half of each scored).
    Perplexity(perplexity::PerplexityArgs),
    /// Serve a model over HTTP: an OpenAI-compatible API (completions, chat, streaming),
    /// /health and /metrics.
    Serve(serve::ServeArgs),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Bench {
    /// The serving benchmark: paged vs contiguous KV at equal memory.
    Serve(bench_serve::ServeArgs),
    /// Attention kernels: paged vs contiguous vs padded, against this machine's roofline.
    Kernels(bench_kernels::KernelsArgs),
    /// Block manager vs contiguous allocator on a synthetic serving workload (no model).
    Kv(bench_kv::KvArgs),
    /// The model step, as llama-bench measures it: prefill (pp128, pp512) and decode at
    /// batch 1, 4 and 16 (tg128), tokens/s.
    Model(bench_model::ModelArgs),
}

/// Log lines to stderr (`RUST_LOG` filters; default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A clap error as one line: its message, and the values it would have taken or the flag
/// it suggests (clap's own rendering spans several lines).
fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use std::fmt::Write;
    let text = e.to_string();
    let mut line = text
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    if let Some(ContextValue::Strings(values)) = e.get(ContextKind::ValidValue) {
        let _ = write!(line, " (possible values: {})", values.join(", "));
    }
    if let Some(ContextValue::String(arg)) = e.get(ContextKind::SuggestedArg) {
        let _ = write!(line, " (did you mean {arg}?)");
    }
    if let Some(ContextValue::Strings(subs)) = e.get(ContextKind::SuggestedSubcommand) {
        let _ = write!(line, " (did you mean {}?)", subs.join(" or "));
    }
    line.push_str("; see --help");
    line
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    // Benchmarks exit 2 on bad input, like a bad flag; generation, perplexity and serving
    // exit 1 on any failure.
    let (result, code) = match &cli.command {
        Command::Bench { which } => (
            match which {
                Bench::Serve(args) => bench_serve::run(args),
                Bench::Kernels(args) => bench_kernels::run(args),
                Bench::Kv(args) => bench_kv::run(args),
                Bench::Model(args) => bench_model::run(args),
            },
            2,
        ),
        Command::Generate(args) => (generate::run(args), 1),
        Command::Perplexity(args) => (perplexity::run(args), 1),
        Command::Serve(args) => {
            init_logging();
            (serve::run(args), 1)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
