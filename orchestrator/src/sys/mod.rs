//! The process's contact with the operating system (signals, the host, wall-clock time, the
//! terminal) and the plain text helpers every layer uses (durations, byte sizes).
pub(crate) mod access;
pub(crate) mod host;
pub(crate) mod log;
pub(crate) mod out;
pub(crate) mod sha256;
pub(crate) mod signals;
pub(crate) mod size;
pub(crate) mod text;
pub(crate) mod time;
