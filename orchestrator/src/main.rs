//! `fidshard`: generates the samples of a diffusion-model evaluation (e.g. 50,000 images for
//! FID) from DiT checkpoints. See README.md and docs/.
mod cmd;
mod coordinator;
mod evaluate;
mod exit_code;
mod fetch;
mod job;
mod notify;
mod npz;
mod outdir;
mod sys;
mod worker;

use clap::{CommandFactory, Parser, Subcommand};
use exit_code::code_of;
use fidshard_core::Exit;
use std::path::PathBuf;
use std::process::ExitCode;
use sys::log::LogFormat;

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
    /// Change one key of the job YAML for this command: `--set cfg_scale=1.5`, dotted keys
    /// such as `model.checkpoint=...`, values typed as YAML. Repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = job::config::overrides::parse)]
    set: Vec<job::config::overrides::Override>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole job: sample every index on all devices, resume what an earlier run
    /// recorded, retry what fails, then write OUT/samples.npz.
    Run {
        /// The job's YAML file.
        config: PathBuf,
        /// Delete this job's recorded state and samples and start over.
        #[arg(long)]
        restart: bool,
        /// Start even when the disk looks too small for the job.
        #[arg(long)]
        force: bool,
        /// Sample only partition K of N of the job (many nodes: one coordinator per node), or
        /// `slurm`: K and N from the Slurm array task or srun step (as `partitions: slurm` in
        /// the job file), or `k8s/N`: K from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX
        /// (`k8s` alone takes N from `partitions: k8s/N`). Without either, a Slurm array task
        /// runs the whole job.
        #[arg(long, value_name = "K/N|slurm|k8s/N", value_parser = job::partition::Requested::parse)]
        partition: Option<job::partition::Requested>,
        /// Seconds workers get after SIGTERM (preemption, hang) before SIGKILL (0 to 3600).
        #[arg(long, default_value = "20", value_parser = parse_grace)]
        grace: std::time::Duration,
    },
    /// Check the config, the checkpoint and the VAE without sampling.
    Validate { config: PathBuf },
    /// Download the weights the job names (Hugging Face repos, URLs) into the caches, as `run`
    /// does before it starts any worker; then `HF_HUB_OFFLINE=1` runs need no network.
    Fetch { config: PathBuf },
    /// Print the shards, each worker's share, and the disk the job needs; warn when the last
    /// shards leave workers idle, with a shard_size that keeps them busy.
    Plan {
        config: PathBuf,
        /// Also show which shards each of N partitions (nodes) would own.
        #[arg(long, value_name = "N")]
        partitions: Option<u32>,
        /// Plan for N GPUs per node instead of this machine's devices (from a login node).
        #[arg(long, value_name = "N")]
        devices: Option<u32>,
    },
    /// Redo only the last step: assemble OUT/samples.npz from the recorded shards.
    Assemble { config: PathBuf },
    /// Rebuild OUT/state.sled from the PNGs in OUT/samples (after the state was lost or
    /// damaged): complete, decodable shards are recorded done, the rest are left for `run`.
    /// The previous state folder is kept as state.sled.old-<time> / .broken-<time>.
    Repair { config: PathBuf },
    /// Sample indices A..B of a job in this process and write DIR/{index:06}.png.
    Sample {
        /// The job's YAML file.
        config: PathBuf,
        /// Output folder for the PNGs.
        #[arg(long)]
        out: PathBuf,
        /// Half-open index range A..B (default: 0..num_samples).
        #[arg(long, value_parser = cmd::sample::parse_range)]
        range: Option<(u64, u64)>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = fidshard_core::DeviceSpec::parse)]
        device: fidshard_core::DeviceSpec,
        /// Override the job's batch_size (images never depend on it).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Also write DIR/latents/{index}.safetensors (final latents and label) for inspection.
        #[arg(long)]
        save_latents: bool,
    },
    /// Print the job as it will run: every default filled in, paths resolved, --set applied.
    Config(cmd::config::ConfigArgs),
    /// One PNG of a job's samples in rows, labelled with index and class.
    Grid(cmd::grid::GridArgs),
    /// What this machine offers: libtorch and its CUDA build, the driver, each GPU, free disk;
    /// and the likely cause of each problem found.
    Doctor(cmd::doctor::DoctorArgs),
    /// Measure seconds per image and where the time goes.
    Bench(cmd::bench::BenchArgs),
    /// Show where a job stands (running, interrupted, failed, complete) from its YAML or out dir.
    Status(cmd::status::StatusArgs),
    /// FID, sFID, Inception Score, precision and recall of an npz against a reference batch,
    /// as the ADM evaluator computes them (features on the devices' workers, resumable).
    Eval(cmd::eval::EvalArgs),
    /// Print the shell completion script for bash, zsh or fish (`make install` installs them).
    Completions(cmd::completions::CompletionsArgs),
    /// The manual pages (fidshard.1 and one per command); `make install` installs them.
    #[command(hide = true)]
    Man(cmd::man::ManArgs),
}

/// `--grace`: a finite number of seconds in 0..=3600.
fn parse_grace(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{s} s is not between 0 and 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return sys::log::usage_error(&e).into(),
    };
    let format = cli.log_format;
    sys::log::init(format);
    job::config::overrides::set_global(cli.set);
    let _failpoints = fidshard_core::faults::setup();
    let result = match cli.command {
        Command::Run {
            config,
            restart,
            force,
            partition,
            grace,
        } => {
            let args = cmd::run::RunArgs {
                config,
                restart,
                force,
                partition,
                grace,
            };
            match cmd::run::run(args) {
                Ok(code) => return code.into(),
                Err(e) => Err(e),
            }
        }
        Command::Validate { config } => cmd::validate::run(&config),
        Command::Fetch { config } => cmd::fetch::run(&config),
        Command::Plan {
            config,
            partitions,
            devices,
        } => cmd::plan::run(
            &config,
            cmd::plan::PlanArgs {
                partitions,
                devices,
            },
        ),
        Command::Assemble { config } => cmd::assemble::run(&config),
        Command::Repair { config } => cmd::repair::run(&config),
        Command::Sample {
            config,
            out,
            range,
            device,
            batch_size,
            save_latents,
        } => cmd::sample::run(cmd::sample::SampleArgs {
            config,
            out,
            range,
            device,
            batch_size,
            save_latents,
        }),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Grid(args) => cmd::grid::run(args),
        Command::Config(args) => cmd::config::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Completions(args) => cmd::completions::run(args, Cli::command()),
        Command::Man(args) => cmd::man::run(args, Cli::command()),
    };
    match result {
        Ok(()) => Exit::Complete.into(),
        Err(e) => {
            if let Some(r) = e.downcast_ref::<worker::Reported>() {
                // The worker process printed the error line itself.
                return r.0.into();
            }
            let code = code_of(&e);
            sys::log::error(format, &format!("{e:#}"), code);
            code.into()
        }
    }
}
