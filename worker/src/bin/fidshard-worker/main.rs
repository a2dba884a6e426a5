//! `fidshard-worker`: the process that links libtorch. The `fidshard` coordinator starts it in
//! two ways (docs/architecture.md):
//!
//! - `fidshard-worker serve --id N --device D`: one long-lived worker per device, speaking the
//!   JSON-lines protocol of fidshard-core's `protocol.rs` on stdin/stdout;
//! - `fidshard-worker task`: one [`Task`](fidshard_core::task::Task) read as JSON from stdin
//!   (`sample`, `bench`, the model check, the probe of `doctor`), then exit.
//!
//! Users never type it; errors are printed as `fidshard: error: ...` because the user typed
//! `fidshard`.
mod bench;
mod device;
mod features;
mod probe;
mod reuse;
mod sample;
mod serve;
mod writer;

use clap::{Parser, Subcommand};
use fidshard_core::error::code_of_with;
use fidshard_core::task::Task;
use fidshard_core::Exit;
use std::io::Read;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fidshard-worker",
    version,
    about = "fidshard's libtorch worker (started by `fidshard`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The long-lived worker of `fidshard run`.
    Serve {
        #[arg(long)]
        id: u32,
        #[arg(long, value_parser = fidshard_core::DeviceSpec::parse)]
        device: fidshard_core::DeviceSpec,
    },
    /// One task, read as JSON from stdin.
    Task,
    /// Random Inception weights (torch-fidelity's layout) as safetensors, for tests and
    /// timings: `--spec` is a JSON `{"seed": S, "tensors": [[key, shape], ...]}` (the draw
    /// order), as tests/fixtures/inception/weights.json.
    #[command(hide = true)]
    RandomInception {
        #[arg(long)]
        spec: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// `random-inception`: see [`Command::RandomInception`].
fn random_inception(spec: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Spec {
        seed: i64,
        tensors: Vec<(String, Vec<i64>)>,
    }
    let spec: Spec = serde_json::from_slice(&std::fs::read(spec)?)?;
    let sd = fidshard_worker::inception::random::random_state_dict(spec.seed, &spec.tensors)
        .map_err(anyhow::Error::msg)?;
    let named: Vec<(&str, &tch::Tensor)> = sd.iter().map(|(k, t)| (k.as_str(), t)).collect();
    tch::Tensor::write_safetensors(&named, out)?;
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FIDSHARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("FIDSHARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Through `fidshard`, stderr may be a pipe it passes on to a terminal.
    let color = std::env::var_os("NO_COLOR").is_none()
        && (std::io::IsTerminal::is_terminal(&std::io::stderr())
            || std::env::var_os("FIDSHARD_WORKER_COLOR").is_some_and(|v| v == "1"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

fn run_task() -> anyhow::Result<()> {
    // A task dies with the fidshard that started it (which may run it in its own process
    // group, out of reach of the terminal's Ctrl-C).
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let task: Task = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("protocol error: the task on stdin does not parse: {e}"))?;
    match task {
        Task::Sample {
            settings,
            out,
            range,
            device,
            save_latents,
        } => sample::run(*settings, out, range, device, save_latents),
        Task::Bench(b) => bench::run(b),
        Task::Check { settings } => {
            fidshard_core::faults::maybe_slow_check();
            let _g = tch::no_grad_guard();
            fidshard_worker::Engine::load(*settings, tch::Device::Cpu)?;
            // The coordinator takes only this line as a passed check (never a bare exit 0).
            println!(
                "{}",
                serde_json::to_string(&fidshard_core::task::TaskAnswer::check())?
            );
            Ok(())
        }
        Task::Probe => probe::run(),
        Task::Features(f) => features::run(f),
    }
}

/// Exit codes: the engine's errors know theirs (input vs machine), as do fidshard-core's.
fn exit_of(err: &anyhow::Error) -> Exit {
    code_of_with(err, &|cause| {
        cause
            .downcast_ref::<fidshard_worker::EngineError>()
            .map(|e| e.exit())
    })
}

/// The one exit that cannot wait for `main` to return: stdin ended (the coordinator is gone or
/// wants this worker gone) or carried a line of another protocol version. A batch in flight must
/// not go on writing PNGs into an out dir that another coordinator may be resuming
/// (core/src/protocol.rs), so the reader thread ends the process through here when the server
/// has not ended within a second of it.
pub(crate) fn end_now(code: Exit) -> ! {
    std::process::exit(code as i32)
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
    init_logging();
    let _failpoints = fidshard_core::faults::setup();
    let result = match cli.command {
        Command::Serve { id, device } => device::to_tch(device).and_then(|d| serve::run(id, d)),
        Command::Task => run_task().map(|()| Exit::Complete),
        Command::RandomInception { spec, out } => {
            random_inception(&spec, &out).map(|()| Exit::Complete)
        }
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit_of(&e);
            let msg = format!("{e:#}").replace('\n', " ");
            if std::env::var("FIDSHARD_LOG_FORMAT").is_ok_and(|f| f == "json") {
                let line = serde_json::json!({
                    "level": "ERROR",
                    "fields": { "message": msg, "exit_code": code as i32 },
                });
                eprintln!("{line}");
            } else {
                eprintln!("{}", fidshard_core::error_line::error_line(&msg));
            }
            code.into()
        }
    }
}
