//! Text from outside (status.json, logs, host names, paths) made safe to print: a control
//! character in it (ESC, `\r`, a line break) could clear or rewrite the user's terminal or
//! forge a line of the report, so it is shown escaped instead (`\e`, `\r`, `\n`, `\x07`).
//! Also shell quoting for the command lines fidshard suggests.
use std::borrow::Cow;

/// `s` with every control character escaped (`\e`, `\r`, `\n`, `\t`, `\xNN`, `\u{..}`).
pub(crate) fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as one word of a POSIX shell command line (quoted only when it needs it).
pub(crate) fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_kept() {
        assert_eq!(escape_control("node-7.cluster"), "node-7.cluster");
        assert_eq!(
            escape_control("a\x1b[2Jb\rc\nd\x07é"),
            "a\\e[2Jb\\rc\\nd\\x07é"
        );
        assert_eq!(escape_control("\u{9b}x"), "\\x9bx");
        assert_eq!(shell_quote("seed=3"), "seed=3");
        assert_eq!(shell_quote("devices={cpu: 2}"), "'devices={cpu: 2}'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
