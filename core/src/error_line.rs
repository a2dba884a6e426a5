//! The last line a failed `fidshard` or `fidshard-worker` writes on stderr in text format:
//! `fidshard: error: <message>`. Both binaries write it and the coordinator finds a worker's
//! line by it, so the format is defined here, once.

/// What starts every error line.
pub const PREFIX: &str = "fidshard: error: ";

/// The error line for `message`, always one line: a line break in the message becomes a space,
/// so that scripts reading the last line of stderr get the whole message.
pub fn error_line(message: &str) -> String {
    format!("{PREFIX}{}", message.replace('\n', " "))
}

/// The message of an error line written by [`error_line`]; `None` for any other line.
pub fn parse_error_line(line: &str) -> Option<&str> {
    line.strip_prefix(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_on_one_line() {
        let line = error_line("job.yaml: `steps`: not a number\nfix it");
        assert_eq!(
            line,
            "fidshard: error: job.yaml: `steps`: not a number fix it"
        );
        assert!(!line.contains('\n'));
        assert_eq!(
            parse_error_line(&line),
            Some("job.yaml: `steps`: not a number fix it")
        );
        assert_eq!(parse_error_line("fidshard: warning: x"), None);
        assert_eq!(parse_error_line("  fidshard: error: x"), None);
    }
}
