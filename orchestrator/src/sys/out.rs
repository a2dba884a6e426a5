//! Standard output for reports (`plan`, `status`, `doctor`, ...). A reader that goes away
//! (`fidshard plan job.yaml | head`) is not an error: the rest of the output is dropped quietly
//! instead of panicking on a broken pipe. (SIGPIPE stays ignored, as Rust sets it, because the
//! coordinator writes to worker pipes and must see EPIPE as an error, not die of it.)
use std::io::Write;

/// Writes `text` to stdout; a closed pipe is ignored.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// `println!` through [`print`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::sys::out::print(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
