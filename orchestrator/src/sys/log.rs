//! What `fidshard` writes on stderr: tracing logs, the final error line, usage errors and
//! panics, all in one format: human text (colour only on a terminal, never with NO_COLOR), or
//! with `--log-format json` one JSON object per line with numbers as numbers.
use fidshard_core::error_line::error_line;
use fidshard_core::Exit;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format asked for on a command line that clap could not parse.
    pub fn from_raw_args() -> LogFormat {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let json = args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json")
            || args.iter().any(|a| a == "--log-format=json");
        if json {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

pub(crate) fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FIDSHARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let color = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BarAware)
        .with_ansi(color)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    install_panic_hook(format);
    // Worker processes started by this one log in the same format.
    std::env::set_var("FIDSHARD_LOG_FORMAT", format.as_str());
}

/// The progress bars on screen, if any: log lines are printed above them, not onto them.
static BARS: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

/// Routes log lines through `bars` while they are drawn (`None` when they are gone).
pub(crate) fn route_through(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// The tracing writer: one buffer per log line, written out whole (above the bars, if any).
struct BarAware;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarAware {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::with_capacity(256))
    }
}

struct LineWriter(Vec<u8>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        use std::io::Write as _;
        let write = |bytes: &[u8]| {
            let _ = std::io::stderr().lock().write_all(bytes);
        };
        match &*BARS.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(bars) => bars.suspend(|| write(&self.0)),
            None => write(&self.0),
        }
    }
}

fn json_line(level: &str, message: &str, exit_code: Option<i32>) -> String {
    let mut obj = serde_json::json!({
        "timestamp": crate::sys::time::rfc3339_now(),
        "level": level,
        "fields": { "message": message },
    });
    if let Some(code) = exit_code {
        obj["fields"]["exit_code"] = code.into();
    }
    obj.to_string()
}

/// The last line of a failed command: `fidshard: error: ...` (one line), or one JSON object.
pub(crate) fn error(format: LogFormat, message: &str, code: Exit) {
    let message = message.replace('\n', " ");
    match format {
        LogFormat::Text => eprintln!("{}", error_line(&message)),
        LogFormat::Json => eprintln!("{}", json_line("ERROR", &message, Some(code as i32))),
    }
}

/// A command line clap rejected (exit 2), or `--help` / `--version` (exit 0, on stdout).
pub(crate) fn usage_error(e: &clap::Error) -> Exit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Exit::Complete
        }
        _ => {
            // One line, like every other error: clap's first line, and where to read more.
            let text = e.to_string();
            // The message up to clap's usage block, on one line.
            let first = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            let message = format!("{first} (see `fidshard --help`)");
            match LogFormat::from_raw_args() {
                LogFormat::Text => eprintln!("{}", error_line(&message)),
                LogFormat::Json => {
                    eprintln!(
                        "{}",
                        json_line("ERROR", &message, Some(Exit::InvalidInput as i32))
                    )
                }
            }
            Exit::InvalidInput
        }
    }
}

/// A panic is a bug: one line (or one JSON object) naming where, instead of Rust's default
/// multi-line report.
fn install_panic_hook(format: LogFormat) {
    std::panic::set_hook(Box::new(move |info| {
        let msg = fidshard_core::error::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text =
            format!("internal error (a bug; please report it): {msg}{at}").replace('\n', " ");
        match format {
            LogFormat::Text => eprintln!("fidshard: {text}"),
            LogFormat::Json => eprintln!("{}", json_line("ERROR", &text, Some(101))),
        }
    }));
}
