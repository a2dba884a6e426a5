//! The process's contact with the operating system: exit codes, signals, wall-clock time.
pub(crate) mod access;
pub(crate) mod exit;
pub(crate) mod log;
pub(crate) mod out;
pub(crate) mod signals;
pub(crate) mod text;
pub(crate) mod time;
