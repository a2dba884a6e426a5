//! `fidshard`: generates the samples of a diffusion-model evaluation (e.g. 50,000 images for
//! FID) from DiT checkpoints. See README.md and docs/.
mod bench;
mod config;
mod device;
mod exit;
mod sample;

use clap::{Parser, Subcommand, ValueEnum};
use exit::{code_of, Exit};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fidshard",
    version,
    about = "Fault-tolerant sharded sampling of DiT models for FID evaluation"
)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line (for cron).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Sample indices A..B of a job in this process and write DIR/{index:06}.png.
    Sample {
        /// The job's YAML file.
        config: PathBuf,
        /// Output folder for the PNGs.
        #[arg(long)]
        out: PathBuf,
        /// Half-open index range A..B (default: 0..num_samples).
        #[arg(long, value_parser = sample::parse_range)]
        range: Option<(u64, u64)>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = sample::parse_device)]
        device: tch::Device,
        /// Override the job's batch_size (images never depend on it).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Also write DIR/latents/{index}.safetensors (final latents and label) for inspection.
        #[arg(long)]
        save_latents: bool,
    },
    /// Measure seconds per image and where the time goes.
    Bench(bench::BenchArgs),
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FIDSHARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::Complete.into()
                }
                _ => Exit::InvalidInput.into(),
            };
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Sample {
            config,
            out,
            range,
            device,
            batch_size,
            save_latents,
        } => sample::run(sample::SampleArgs {
            config,
            out,
            range,
            device,
            batch_size,
            save_latents,
        }),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => Exit::Complete.into(),
        Err(e) => {
            let code = code_of(&e);
            eprintln!("fidshard: error: {e:#}");
            code.into()
        }
    }
}
