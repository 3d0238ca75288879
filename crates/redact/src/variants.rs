//! The forms in which a secret can show up in a job's output.
//!
//! Each form becomes one pattern of the automaton. Forms that encode to the
//! same bytes are kept once (for a plain alphanumeric token, the URL, JSON
//! and shell forms all equal the exact bytes), and forms shorter than
//! [`MIN_SECRET_LEN`] are dropped: they would mask ordinary output.

use zeroize::Zeroizing;

use crate::MIN_SECRET_LEN;

/// One way a secret can be written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Form {
    /// The bytes themselves.
    Exact,
    /// One line of a multi-line secret (without its `\r\n` or `\n`), so that
    /// a secret printed line by line, or with other line endings, is caught.
    Line,
    /// The whole secret with its line endings changed: every `\n` written as
    /// `\r\n` (a terminal's output), or every `\r\n` as `\n`.
    LineEndings,
    /// The secret without its trailing line breaks, in an encoding: values
    /// read from files often end with a newline that the job strips before
    /// encoding.
    Trimmed(Encoding),
    /// The secret in an encoding.
    Encoded(Encoding),
}

/// An encoding of a whole secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// Base64 (RFC 4648), when the secret starts `skip` bytes (0, 1 or 2)
    /// into a 3-byte group of the encoded data, as in `user:` + password.
    /// Only the characters that depend on the secret alone are kept (the
    /// first characters of an unaligned encoding mix in the unknown prefix),
    /// and `end` says how the encoding ends.
    Base64 {
        /// Which alphabet.
        alphabet: Base64Alphabet,
        /// Bytes of unknown data before the secret in its 3-byte group.
        skip: u8,
        /// How the encoding ends.
        end: Base64End,
    },
    /// Every byte as two hexadecimal digits.
    Hex {
        /// `A-F` rather than `a-f`.
        upper: bool,
    },
    /// Percent-encoding (URLs): the bytes outside `set` as `%XX`.
    Percent {
        /// Which bytes stay as they are.
        set: PercentSet,
        /// `%2F` rather than `%2f`.
        upper: bool,
    },
    /// The secret inside a JSON string, escaped the way a common encoder
    /// does it.
    Json(JsonStyle),
    /// The secret quoted for a POSIX shell.
    Shell(ShellStyle),
}

/// The two base64 alphabets of RFC 4648.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base64Alphabet {
    /// `A-Z a-z 0-9 + /`.
    Standard,
    /// `A-Z a-z 0-9 - _` (base64url).
    UrlSafe,
}

/// How a base64 form ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base64End {
    /// More data follows the secret: the last character, which would mix
    /// the secret's last bits with the following data, is left out.
    Open,
    /// The data ends with the secret, without `=` padding.
    Unpadded,
    /// The data ends with the secret, with `=` padding.
    Padded,
}

/// Which bytes percent-encoding leaves as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PercentSet {
    /// RFC 3986 unreserved: `A-Z a-z 0-9 - . _ ~`.
    Unreserved,
    /// JavaScript's `encodeURIComponent`: unreserved and `! ' ( ) *`.
    Component,
    /// HTML form encoding (`application/x-www-form-urlencoded`, Python's
    /// `quote_plus`): unreserved, and space as `+`.
    Form,
}

/// How a JSON encoder escapes a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JsonStyle {
    /// serde_json and JavaScript: `\" \\ \b \f \n \r \t`, other control
    /// bytes as `\u00xx`, everything else as is.
    Serde,
    /// As [`JsonStyle::Serde`], and `/` as `\/`.
    EscapedSlash,
    /// Every control byte as `\u00xx` (lowercase hex), `\"` and `\\`.
    UnicodeControls,
    /// Every control byte as `\u00XX` (uppercase hex), `\"` and `\\`.
    UnicodeControlsUpper,
    /// Go's `encoding/json` (1.22 and later): as [`JsonStyle::Serde`], and
    /// `<`, `>`, `&`, U+2028, U+2029 as `\u003c`, `\u003e`, `\u0026`,
    /// `\u2028`, `\u2029` (UTF-8 secrets only).
    Go,
    /// Python's `json.dumps` (ASCII only): as [`JsonStyle::Serde`], and every
    /// non-ASCII character as `\uxxxx` (UTF-16, lowercase; UTF-8 secrets
    /// only).
    AsciiOnly,
    /// PHP's `json_encode`: as [`JsonStyle::AsciiOnly`], and `/` as `\/`.
    AsciiOnlyEscapedSlash,
}

/// How a shell quotes a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShellStyle {
    /// Inside single quotes, `'` written as `'\''` (bash `set -x`).
    SingleQuoted,
    /// Inside single quotes, `'` written as `'"'"'` (Python `shlex.quote`).
    SingleQuotedPython,
    /// Inside double quotes: `\`, `"`, `$` and `` ` `` escaped with `\`.
    DoubleQuoted,
    /// Unquoted, every shell-special byte escaped with `\` (bash
    /// `printf %q` of printable ASCII).
    Backslash,
}

/// One form of a secret, ready to be a pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Variant {
    form: Form,
    bytes: Zeroizing<Vec<u8>>,
}

impl Variant {
    /// Which form this is.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The bytes to look for in the output.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Variant({:?}, {} bytes)", self.form, self.bytes.len())
    }
}

/// Every form of `secret` that the redactor masks, each with distinct bytes
/// and at least [`MIN_SECRET_LEN`] bytes long. The first entry is the exact
/// secret (when it is long enough).
pub fn variants(secret: &[u8]) -> Vec<Variant> {
    let mut out = Variants(Vec::new());
    out.add(Form::Exact, secret.to_vec());

    if secret.contains(&b'\n') {
        for line in secret.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.add(Form::Line, line.to_vec());
        }
        out.add(Form::LineEndings, crlf(secret));
        out.add(Form::LineEndings, lf(secret));
    }

    for encoding in encodings() {
        if let Some(bytes) = encode(secret, encoding) {
            out.add(Form::Encoded(encoding), bytes);
        }
    }

    let trimmed = trim_line_breaks(secret);
    if trimmed.len() != secret.len() {
        out.add(Form::Line, trimmed.to_vec());
        for encoding in encodings() {
            if let Some(bytes) = encode(trimmed, encoding) {
                out.add(Form::Trimmed(encoding), bytes);
            }
        }
    }
    out.0
}

/// Collects variants, dropping duplicates and short ones.
struct Variants(Vec<Variant>);

impl Variants {
    fn add(&mut self, form: Form, bytes: Vec<u8>) {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() >= MIN_SECRET_LEN && !self.0.iter().any(|v| v.bytes == bytes) {
            self.0.push(Variant { form, bytes });
        }
    }
}

fn trim_line_breaks(secret: &[u8]) -> &[u8] {
    let mut s = secret;
    while let Some((&last, rest)) = s.split_last() {
        if last == b'\n' || last == b'\r' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Every `\n` not preceded by `\r` written as `\r\n`.
fn crlf(secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len() + 8);
    let mut prev = 0u8;
    for &b in secret {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Every `\r\n` written as `\n`.
fn lf(secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len());
    let mut i = 0;
    while i < secret.len() {
        if secret[i] == b'\r' && secret.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(secret[i]);
        i += 1;
    }
    out
}

/// The encodings tried for a secret, in a fixed order.
fn encodings() -> Vec<Encoding> {
    let mut list = Vec::with_capacity(40);
    for alphabet in [Base64Alphabet::Standard, Base64Alphabet::UrlSafe] {
        for skip in 0..3 {
            for end in [Base64End::Open, Base64End::Unpadded, Base64End::Padded] {
                list.push(Encoding::Base64 {
                    alphabet,
                    skip,
                    end,
                });
            }
        }
    }
    for upper in [false, true] {
        list.push(Encoding::Hex { upper });
    }
    for set in [
        PercentSet::Unreserved,
        PercentSet::Component,
        PercentSet::Form,
    ] {
        for upper in [true, false] {
            list.push(Encoding::Percent { set, upper });
        }
    }
    for style in [
        JsonStyle::Serde,
        JsonStyle::EscapedSlash,
        JsonStyle::UnicodeControls,
        JsonStyle::UnicodeControlsUpper,
        JsonStyle::Go,
        JsonStyle::AsciiOnly,
        JsonStyle::AsciiOnlyEscapedSlash,
    ] {
        list.push(Encoding::Json(style));
    }
    for style in [
        ShellStyle::SingleQuoted,
        ShellStyle::SingleQuotedPython,
        ShellStyle::DoubleQuoted,
        ShellStyle::Backslash,
    ] {
        list.push(Encoding::Shell(style));
    }
    list
}

/// `secret` in `encoding`, or `None` when the encoding does not apply to it
/// (a JSON style that needs UTF-8, shell escaping of control bytes).
pub(crate) fn encode(secret: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Base64 {
            alphabet,
            skip,
            end,
        } => Some(base64(secret, alphabet, skip, end)),
        Encoding::Hex { upper } => {
            let digits = if upper { HEX_UPPER } else { HEX_LOWER };
            let mut out = Vec::with_capacity(secret.len() * 2);
            for &b in secret {
                push_hex(&mut out, b, digits);
            }
            Some(out)
        }
        Encoding::Percent { set, upper } => Some(percent(secret, set, upper)),
        Encoding::Json(style) => json(secret, style),
        Encoding::Shell(style) => shell(secret, style),
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_hex(out: &mut Vec<u8>, b: u8, digits: &[u8; 16]) {
    out.push(digits[usize::from(b >> 4)]);
    out.push(digits[usize::from(b & 0x0f)]);
}

const B64_STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The part of the base64 encoding of `skip` unknown bytes + `secret` (+
/// maybe more data) that depends on the secret alone.
fn base64(secret: &[u8], alphabet: Base64Alphabet, skip: u8, end: Base64End) -> Vec<u8> {
    let table = match alphabet {
        Base64Alphabet::Standard => B64_STANDARD,
        Base64Alphabet::UrlSafe => B64_URL,
    };
    let skip = usize::from(skip % 3);
    // Encode with zero bytes standing for the unknown prefix; the characters
    // they touch are cut off below.
    let mut data = Zeroizing::new(vec![0u8; skip]);
    data.extend_from_slice(secret);
    let mut enc = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b0 = group[0];
        let b1 = group.get(1).copied().unwrap_or(0);
        let b2 = group.get(2).copied().unwrap_or(0);
        let sextets = [
            b0 >> 2,
            (b0 & 0x03) << 4 | b1 >> 4,
            (b1 & 0x0f) << 2 | b2 >> 6,
            b2 & 0x3f,
        ];
        // A group of n bytes gives n + 1 characters, then '=' padding.
        for (i, &s) in sextets.iter().enumerate() {
            if i <= group.len() {
                enc.push(table[usize::from(s)]);
            } else {
                enc.push(b'=');
            }
        }
    }
    // Characters mixing in the unknown prefix: 8 bits per unknown byte,
    // 6 bits per character.
    let front = (8 * skip).div_ceil(6);
    let full = data.len() / 3 * 4;
    let rest = data.len() % 3;
    // A trailing partial group of `rest` bytes has `rest` characters made of
    // the secret's bits alone; the next one mixes in whatever follows.
    let stable_end = full + rest;
    let end_at = match (end, rest) {
        (_, 0) | (Base64End::Open, _) => stable_end,
        (Base64End::Unpadded, _) => stable_end + 1,
        (Base64End::Padded, _) => enc.len(),
    };
    let out = enc
        .get(front..end_at)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    // `enc` holds the secret in encoded form too.
    drop(Zeroizing::new(enc));
    out
}

fn percent(secret: &[u8], set: PercentSet, upper: bool) -> Vec<u8> {
    let digits = if upper { HEX_UPPER } else { HEX_LOWER };
    let mut out = Vec::with_capacity(secret.len() * 3);
    for &b in secret {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        let keep = match set {
            PercentSet::Unreserved | PercentSet::Form => unreserved,
            PercentSet::Component => unreserved || matches!(b, b'!' | b'\'' | b'(' | b')' | b'*'),
        };
        if keep {
            out.push(b);
        } else if set == PercentSet::Form && b == b' ' {
            out.push(b'+');
        } else {
            out.push(b'%');
            push_hex(&mut out, b, digits);
        }
    }
    out
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16, digits: &[u8; 16]) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(digits[usize::from((unit >> shift) & 0x0f)]);
    }
}

fn json(secret: &[u8], style: JsonStyle) -> Option<Vec<u8>> {
    let needs_utf8 = matches!(
        style,
        JsonStyle::Go | JsonStyle::AsciiOnly | JsonStyle::AsciiOnlyEscapedSlash
    );
    let text = std::str::from_utf8(secret).ok();
    if needs_utf8 && text.is_none() {
        return None;
    }
    let digits = if style == JsonStyle::UnicodeControlsUpper {
        HEX_UPPER
    } else {
        HEX_LOWER
    };
    let short_escapes: &[u8] = match style {
        JsonStyle::Serde
        | JsonStyle::EscapedSlash
        | JsonStyle::Go
        | JsonStyle::AsciiOnly
        | JsonStyle::AsciiOnlyEscapedSlash => b"\x08\x0c\n\r\t",
        JsonStyle::UnicodeControls | JsonStyle::UnicodeControlsUpper => b"",
    };
    let escape_slash = matches!(
        style,
        JsonStyle::EscapedSlash | JsonStyle::AsciiOnlyEscapedSlash
    );
    let mut out = Vec::with_capacity(secret.len() + 16);
    let escape_byte = |out: &mut Vec<u8>, b: u8| match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'/' if escape_slash => out.extend_from_slice(b"\\/"),
        b'<' | b'>' | b'&' if style == JsonStyle::Go => {
            push_u_escape(out, u16::from(b), digits);
        }
        0x00..=0x1f if short_escapes.contains(&b) => {
            out.push(b'\\');
            out.push(match b {
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                _ => b't',
            });
        }
        0x00..=0x1f => push_u_escape(out, u16::from(b), digits),
        _ => out.push(b),
    };
    match text {
        Some(text) if needs_utf8 => {
            let mut units = [0u16; 2];
            for c in text.chars() {
                if c.is_ascii() {
                    let mut byte = [0u8; 1];
                    c.encode_utf8(&mut byte);
                    escape_byte(&mut out, byte[0]);
                } else if style == JsonStyle::Go && !matches!(c, '\u{2028}' | '\u{2029}') {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                } else {
                    for &unit in c.encode_utf16(&mut units).iter() {
                        push_u_escape(&mut out, unit, digits);
                    }
                }
            }
        }
        _ => {
            for &b in secret {
                escape_byte(&mut out, b);
            }
        }
    }
    Some(out)
}

fn shell(secret: &[u8], style: ShellStyle) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(secret.len() + 8);
    match style {
        ShellStyle::SingleQuoted | ShellStyle::SingleQuotedPython => {
            let quote: &[u8] = if style == ShellStyle::SingleQuoted {
                b"'\\''"
            } else {
                b"'\"'\"'"
            };
            for &b in secret {
                if b == b'\'' {
                    out.extend_from_slice(quote);
                } else {
                    out.push(b);
                }
            }
        }
        ShellStyle::DoubleQuoted => {
            for &b in secret {
                if matches!(b, b'\\' | b'"' | b'$' | b'`') {
                    out.push(b'\\');
                }
                out.push(b);
            }
        }
        ShellStyle::Backslash => {
            if !secret.iter().all(|&b| (0x20..0x7f).contains(&b)) {
                return None;
            }
            for (i, &b) in secret.iter().enumerate() {
                let special = b" !\"$&'()*,;<>?[\\]^`{|}".contains(&b)
                    || (i == 0 && matches!(b, b'#' | b'~'));
                if special {
                    out.push(b'\\');
                }
                out.push(b);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;

    fn forms(secret: &[u8]) -> Vec<(Form, Vec<u8>)> {
        variants(secret)
            .into_iter()
            .map(|v| (v.form(), v.bytes().to_vec()))
            .collect()
    }

    fn has(secret: &[u8], bytes: &[u8]) -> bool {
        variants(secret).iter().any(|v| v.bytes() == bytes)
    }

    /// Some variant of `secret` occurs in `text`.
    fn caught(secret: &[u8], text: &[u8]) -> bool {
        variants(secret)
            .iter()
            .any(|v| text.windows(v.bytes().len()).any(|w| w == v.bytes()))
    }

    #[test]
    fn exact_first_and_no_duplicates() {
        let v = forms(b"s3cr3t-t0ken");
        assert_eq!(v[0], (Form::Exact, b"s3cr3t-t0ken".to_vec()));
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                assert_ne!(a.1, b.1, "{:?} and {:?} are equal", a.0, b.0);
            }
            assert!(a.1.len() >= MIN_SECRET_LEN);
        }
    }

    #[test]
    fn base64_at_every_alignment_matches_the_base64_crate() {
        let secret = b"correct horse battery staple?>";
        for len in MIN_SECRET_LEN..secret.len() {
            let secret = &secret[..len];
            for prefix in [&b""[..], b"u", b"us", b"usr", b"user:", b"x\xff\x00"] {
                for suffix in [&b""[..], b"\n", b"!!", b"abc"] {
                    let mut data = prefix.to_vec();
                    data.extend_from_slice(secret);
                    data.extend_from_slice(suffix);
                    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                        let text = engine.encode(&data);
                        assert!(
                            caught(secret, text.as_bytes()),
                            "len {len} prefix {prefix:?} suffix {suffix:?}: {text}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn base64_whole_encodings_are_patterns() {
        let secret = b"abcdefg";
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            assert!(has(secret, engine.encode(secret).as_bytes()));
        }
        // With one byte of prefix: "xabcdefg" -> eGFiY2RlZmc=, the first two
        // characters depend on the "x".
        let full = STANDARD.encode(b"xabcdefg");
        assert_eq!(full, "eGFiY2RlZmc=");
        assert!(has(secret, b"FiY2RlZmc="));
        assert!(has(secret, b"FiY2RlZmc"));
        assert!(has(secret, b"FiY2RlZm"));
        assert!(!has(secret, b"GFiY2RlZmc="));
    }

    #[test]
    fn base64_near_miss_is_not_caught() {
        let secret = b"abcdefgh";
        let mut other = *secret;
        other[3] ^= 1;
        for engine in [&STANDARD, &URL_SAFE] {
            assert!(!caught(secret, engine.encode(other).as_bytes()));
        }
    }

    #[test]
    fn hex_both_cases() {
        let secret = b"\x01\xab\xcd\xef\x10\x99z";
        assert!(has(secret, b"01abcdef10997a"));
        assert!(has(secret, b"01ABCDEF10997A"));
        assert!(!has(secret, b"01abcdef109970"));
    }

    #[test]
    fn percent_and_form_encoding() {
        let secret = b"p@ss w/rd~!*";
        assert!(has(secret, b"p%40ss%20w%2Frd~%21%2A"));
        assert!(has(secret, b"p%40ss%20w%2frd~%21%2a"));
        assert!(has(secret, b"p%40ss+w%2Frd~%21%2A"));
        assert!(has(secret, b"p%40ss+w%2frd~%21%2a"));
        // encodeURIComponent keeps ! and *.
        assert!(has(secret, b"p%40ss%20w%2Frd~!*"));
        // Non-UTF-8 bytes are encoded byte by byte.
        assert!(has(b"\xff\xfe\x00abc", b"%FF%FE%00abc"));
    }

    #[test]
    fn json_like_serde_json() {
        for secret in [
            "quote\" back\\slash",
            "tab\tnew\nline\rcr",
            "ctl\u{1}\u{1f}\u{8}\u{c}",
            "slash/and unicode é ☃ 😀",
            "del\u{7f}byte",
        ] {
            let encoded = serde_json::to_string(secret).unwrap();
            let inner = &encoded.as_bytes()[1..encoded.len() - 1];
            assert!(has(secret.as_bytes(), inner), "{encoded}");
        }
    }

    #[test]
    fn json_other_encoders() {
        let secret = "a/b<c>&\n\u{1}é😀";
        let has_str = |text: &str| has(secret.as_bytes(), text.as_bytes());
        // \u00XX for every control byte, both cases.
        assert!(has_str(r"a/b<c>&\u000a\u0001é😀"));
        assert!(has_str(r"a/b<c>&\u000A\u0001é😀"));
        // Escaped slash.
        assert!(has_str(r"a\/b<c>&\n\u0001é😀"));
        // Go.
        assert!(has_str(r"a/b\u003cc\u003e\u0026\n\u0001é😀"));
        // Python json.dumps: non-ASCII as UTF-16 escapes.
        assert!(has_str(r"a/b<c>&\n\u0001\u00e9\ud83d\ude00"));
        // PHP json_encode.
        assert!(has_str(r"a\/b<c>&\n\u0001\u00e9\ud83d\ude00"));
        // Not UTF-8: only the byte-wise styles apply.
        let v = variants(b"\xff\xfe\"abcdef");
        assert!(v.iter().any(|v| v.bytes() == b"\xff\xfe\\\"abcdef"));
        assert!(v.iter().all(|v| !matches!(
            v.form(),
            Form::Encoded(Encoding::Json(JsonStyle::Go | JsonStyle::AsciiOnly))
        )));
    }

    #[test]
    fn shell_quoting() {
        let secret = b"it's $HOME `x` \"q\" \\";
        assert!(has(secret, br#"it'\''s $HOME `x` "q" \"#));
        assert!(has(secret, br#"it'"'"'s $HOME `x` "q" \"#));
        assert!(has(secret, br#"it's \$HOME \`x\` \"q\" \\"#));
        assert!(has(secret, br#"it\'s\ \$HOME\ \`x\`\ \"q\"\ \\"#));
        assert!(has(b"~abc def#", br"\~abc\ def#"));
    }

    #[test]
    fn multi_line_secret_gives_lines_and_line_endings() {
        let secret = b"-----BEGIN KEY-----\nMIIEvQIBADANBg\nab\r\nkqhkiG9w0BAQEFAASC\n";
        let v = forms(secret);
        let lines: Vec<&[u8]> = v
            .iter()
            .filter(|(f, b)| *f == Form::Line && !b.contains(&b'\n'))
            .map(|(_, b)| b.as_slice())
            .collect();
        assert_eq!(
            lines,
            vec![
                &b"-----BEGIN KEY-----"[..],
                b"MIIEvQIBADANBg",
                b"kqhkiG9w0BAQEFAASC"
            ]
        );
        assert!(has(
            secret,
            b"-----BEGIN KEY-----\r\nMIIEvQIBADANBg\r\nab\r\nkqhkiG9w0BAQEFAASC\r\n"
        ));
        assert!(has(
            secret,
            b"-----BEGIN KEY-----\nMIIEvQIBADANBg\nab\nkqhkiG9w0BAQEFAASC\n"
        ));
    }

    #[test]
    fn trailing_newline_is_trimmed_for_encodings() {
        let secret = b"token-from-a-file\n";
        assert!(has(secret, b"token-from-a-file"));
        assert!(has(
            secret,
            STANDARD.encode(b"token-from-a-file").as_bytes()
        ));
        assert!(has(secret, STANDARD.encode(secret).as_bytes()));
        assert!(has(secret, b"746f6b656e2d66726f6d2d612d66696c65"));
    }

    #[test]
    fn short_forms_are_dropped() {
        for v in variants(b"abcdef") {
            assert!(v.bytes().len() >= MIN_SECRET_LEN);
        }
        // A multi-line secret with short lines: no pattern for them.
        let v = forms(b"ab\ncd\nefghij");
        assert!(!v.iter().any(|(_, b)| b == b"ab" || b == b"cd"));
        assert!(v.iter().any(|(f, b)| *f == Form::Line && b == b"efghij"));
    }
}
