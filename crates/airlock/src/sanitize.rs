//! Making job output safe to show on an operator's terminal.
//!
//! A job controls every byte it prints. Escape sequences could retitle the
//! window, write the clipboard (OSC 52), move the cursor to forge runner
//! output, or worse on old terminals. Only SGR colour sequences
//! (`ESC [ ... m`) pass; every other control character is shown escaped
//! (`\x1b`, `\r`, ...). Invalid UTF-8 is replaced.

/// Returns `line` fit for a terminal.
pub fn for_terminal(line: &[u8], keep_colour: bool) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\x1b' && keep_colour {
            if let Some(len) = sgr_len(text.get(i..).unwrap_or_default()) {
                out.push_str(text.get(i..i + len).unwrap_or_default());
                while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                    chars.next();
                }
                continue;
            }
        }
        if c == '\t' || !c.is_control() {
            out.push(c);
        } else {
            out.push_str(&c.escape_default().to_string().replace("\\u{1b}", "\\x1b"));
        }
    }
    out
}

/// Length of an SGR sequence at the start of `s`, if there is one.
fn sgr_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("\x1b[")?;
    let params = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (rest.as_bytes().get(params) == Some(&b'm') && params <= 32).then_some(2 + params + 1)
}

#[cfg(test)]
mod tests {
    use super::for_terminal;

    #[test]
    fn colours_pass_when_allowed() {
        assert_eq!(
            for_terminal(b"\x1b[1;31merror\x1b[0m", true),
            "\x1b[1;31merror\x1b[0m"
        );
        assert_eq!(for_terminal(b"\x1b[1;31merror", false), "\\x1b[1;31merror");
    }

    #[test]
    fn other_escapes_are_shown_not_obeyed() {
        // OSC 52 clipboard write, window title, cursor movement, carriage return.
        assert_eq!(
            for_terminal(b"\x1b]52;c;ZXZpbA==\x07", true),
            "\\x1b]52;c;ZXZpbA==\\u{7}"
        );
        assert_eq!(for_terminal(b"a\x1b[2Jb\rc", true), "a\\x1b[2Jb\\rc");
        assert_eq!(for_terminal(b"tab\there", true), "tab\there");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(for_terminal(b"ok\xff", true), "ok\u{fffd}");
    }
}
