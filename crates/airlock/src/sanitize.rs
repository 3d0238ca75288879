//! Making job output safe to show on an operator's terminal.
//!
//! A job controls every byte it prints. Escape sequences could retitle the
//! window, write the clipboard (OSC 52), move the cursor to forge runner
//! output, or worse on old terminals. Only SGR colour sequences
//! (`ESC [ ... m`) pass; every other control character is shown escaped
//! (`\x1b`, `\r`, ...). Invalid UTF-8 is replaced.

/// Returns `line` fit for a terminal.
pub fn for_terminal(line: &[u8], keep_colour: bool) -> String {
    let mut out = Vec::new();
    push_for_terminal(line, keep_colour, &mut out);
    // Only ever UTF-8: bytes pass as they are only when they are.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends `line`, made fit for a terminal, to `out` (always UTF-8).
pub fn push_for_terminal(line: &[u8], keep_colour: bool, out: &mut Vec<u8>) {
    // Most output is printable ASCII: one pass proves it, and it is taken
    // as it is.
    if plain_ascii(line) {
        out.extend_from_slice(line);
        return;
    }
    // Then printable text in other scripts.
    if let Ok(text) = std::str::from_utf8(line) {
        if !any_needs_care(line) && !has_c1_control(text) {
            out.extend_from_slice(line);
            return;
        }
    }
    let text = String::from_utf8_lossy(line);
    let mut shown = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\x1b' && keep_colour {
            if let Some(len) = sgr_len(text.get(i..).unwrap_or_default()) {
                shown.push_str(text.get(i..i + len).unwrap_or_default());
                while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                    chars.next();
                }
                continue;
            }
        }
        if c == '\t' || !c.is_control() {
            shown.push(c);
        } else {
            shown.push_str(&c.escape_default().to_string().replace("\\u{1b}", "\\x1b"));
        }
    }
    out.extend_from_slice(shown.as_bytes());
}

/// Whether every byte is printable ASCII or a tab (so the line is UTF-8
/// with nothing to escape).
///
/// In blocks of 32 bytes (of 16 for a line of 16 to 31 bytes; a shorter
/// one byte by byte), each checked whole in a loop the compiler
/// vectorises. The last block overlaps the one before it instead of
/// leaving a tail to check byte by byte: on build-log lines, mostly under
/// 100 bytes long, that tail was most of the cost. On
/// `benches/output.sh`'s text this takes a third of the time that 32-byte
/// chunks with a byte-wise tail took.
fn plain_ascii(bytes: &[u8]) -> bool {
    match bytes.len() {
        32.. => in_blocks::<32>(bytes),
        16.. => in_blocks::<16>(bytes),
        _ => bytes.iter().fold(true, |acc, &b| acc & printable(b)),
    }
}

/// [`plain_ascii`] of a line of at least `N` bytes. Not inlined: one copy
/// per block size keeps each loop tight (inlined into `plain_ascii`, the
/// check took about 40% longer).
#[inline(never)]
fn in_blocks<const N: usize>(bytes: &[u8]) -> bool {
    let tail = bytes.len() - N;
    bytes
        .chunks_exact(N)
        .all(|block| all_printable::<N>(block.try_into().expect("N bytes")))
        && all_printable::<N>(bytes[tail..].try_into().expect("the last N bytes"))
}

/// Whether every byte of `block` is [`printable`], in one vectorised pass.
#[inline(always)]
fn all_printable<const N: usize>(block: &[u8; N]) -> bool {
    block.iter().fold(true, |acc, &b| acc & printable(b))
}

/// Printable ASCII or a tab.
#[inline(always)]
fn printable(b: u8) -> bool {
    (0x20..0x7f).contains(&b) | (b == b'\t')
}

/// A byte that may be (part of) a character [`for_terminal`] must escape:
/// a C0 control other than tab, or DEL.
fn needs_care(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Whether any byte [`needs_care`], in a loop the compiler vectorises (no
/// early exit inside a block).
fn any_needs_care(bytes: &[u8]) -> bool {
    bytes
        .chunks(32)
        .any(|block| block.iter().fold(false, |acc, &b| acc | needs_care(b)))
}

/// Whether `text` holds a C1 control character (U+0080..U+009F, encoded
/// as 0xC2 0x80..0x9F), which some terminals obey like ESC sequences.
fn has_c1_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr_iter(0xc2, bytes)
        .any(|i| bytes.get(i + 1).is_some_and(|b| (0x80..=0x9f).contains(b)))
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
    fn c1_controls_and_del_are_escaped() {
        assert_eq!(for_terminal("a\u{9b}2Jb".as_bytes(), true), "a\\u{9b}2Jb");
        assert_eq!(for_terminal(b"a\x7fb", true), "a\\u{7f}b");
        assert_eq!(for_terminal("plain é ✓".as_bytes(), true), "plain é ✓");
    }

    #[test]
    fn plain_ascii_passes_as_it_is() {
        let all: String = (0x20u8..0x7f).map(char::from).chain(['\t']).collect();
        assert_eq!(for_terminal(all.as_bytes(), false), all);
        for b in (0u8..0x20).filter(|b| *b != b'\t').chain([0x7f]) {
            let line = [b'a', b, b'b'];
            assert_ne!(for_terminal(&line, false).as_bytes(), line, "byte {b:#x}");
        }
    }

    #[test]
    fn plain_ascii_checks_every_byte_at_every_length() {
        // Lengths around the 16- and 32-byte blocks and their overlapping
        // last blocks; a byte of each kind at every position.
        let reference = |line: &[u8]| {
            line.iter()
                .all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
        };
        for len in 0..100 {
            let mut line = vec![b'a'; len];
            assert!(super::plain_ascii(&line), "len {len}");
            for at in 0..len {
                for b in [0, b'\t', b'\n', 0x1f, b' ', b'~', 0x7f, 0x80, 0xff] {
                    line[at] = b;
                    assert_eq!(
                        super::plain_ascii(&line),
                        reference(&line),
                        "len {len} at {at} byte {b:#x}"
                    );
                    line[at] = b'a';
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(for_terminal(b"ok\xff", true), "ok\u{fffd}");
    }
}
