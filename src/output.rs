//! What commands print: the `--output` switch, and stdout writes that never panic.

/// `--output`: `text` for people, `json` for scripts (one document on stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `println!` that never panics: when stdout is closed (`opsd history | head`), the output is dropped
/// and the command goes on, so a run is still completed and recorded.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics; see [`outln!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Text from a host made safe for the operator's terminal: control characters (C0 but tab, DEL,
/// C1) are shown as escapes (`\x1b`, `\r`, `\u{9b}`), so remote output can neither move the cursor,
/// clear the screen, retitle the window nor hide a line behind a carriage return. Printable text,
/// UTF-8 included, is unchanged.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c != '\t' && (c.is_ascii_control() || ('\u{80}'..='\u{9f}').contains(&c));
    if !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if control(c) && c.is_ascii() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("plain — ünïcode\ttab"), "plain — ünïcode\ttab");
        assert_eq!(visible("\x1b[2J\x1b]0;title\x07ok"), "\\x1b[2J\\x1b]0;title\\x07ok");
        assert_eq!(visible("secret\rfake"), "secret\\rfake");
        assert_eq!(visible("\u{9b}31m\u{7f}"), "\\u{9b}31m\\x7f");
    }
}
