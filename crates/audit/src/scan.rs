//! A fast recogniser for entry lines in the log's own compact form.
//!
//! Verifying a log reads every line's `index`, `kind`, `prev` and `time`
//! and checks that the line is a JSON object. serde_json does that in
//! about twice the time it takes to hash the line, so lines take this
//! path first: one pass over the bytes that validates the JSON grammar and
//! picks out the four fields. It only says yes to lines that serde_json
//! would read into the same fields; for anything unusual (whitespace,
//! escapes in the four fields or in keys, fractions and exponents, deep
//! nesting, a missing or repeated field, bad UTF-8) it answers `None` and
//! the caller asks serde_json, which gives the verdict and the message.
//! Being stricter than serde_json costs only speed; being laxer would let
//! a malformed line pass, so the property tests below compare the two.

/// Deeper values are left to serde_json.
const MAX_DEPTH: u32 = 64;

/// The log's fields of a line, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned<'a> {
    pub(crate) index: u64,
    pub(crate) kind: &'a str,
    pub(crate) prev: &'a str,
    /// Only its being a string is checked; the tests compare it.
    #[allow(dead_code)]
    pub(crate) time: &'a str,
}

/// Reads `line` if it is a compact JSON object that serde_json certainly
/// accepts as an entry head; `None` means "ask serde_json".
pub(crate) fn scan(line: &[u8]) -> Option<Scanned<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    p.eat(b'{')?;
    let (mut index, mut kind, mut prev, mut time) = (None, None, None, None);
    loop {
        let key = p.plain_string()?;
        p.eat(b':')?;
        match &text.as_bytes()[key.clone()] {
            b"index" => set(&mut index, p.index()?)?,
            b"kind" => set(&mut kind, p.plain_string()?)?,
            b"prev" => set(&mut prev, p.plain_string()?)?,
            b"time" => set(&mut time, p.plain_string()?)?,
            _ => p.value(0)?,
        }
        match p.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    if p.i != text.len() {
        return None;
    }
    Some(Scanned {
        index: index?,
        kind: text.get(kind?)?,
        prev: text.get(prev?)?,
        time: text.get(time?)?,
    })
}

/// Sets a field seen for the first time; `None` for a repeat (serde
/// rejects duplicate fields).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The bytes [`Parser::skip_plain`] stops at.
static STOPS: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = true;
        c += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Skips bytes that need no attention inside a string: stops at a
    /// quote, a backslash, a control character or the end.
    fn skip_plain(&mut self) {
        let rest = self.b.get(self.i..).unwrap_or_default();
        self.i += rest
            .iter()
            .position(|&c| STOPS[usize::from(c)])
            .unwrap_or(rest.len());
    }

    /// A string without escapes; returns the range of its contents.
    fn plain_string(&mut self) -> Option<std::ops::Range<usize>> {
        self.eat(b'"')?;
        let start = self.i;
        self.skip_plain();
        let end = self.i;
        self.eat(b'"')?;
        Some(start..end)
    }

    /// Any string, with escapes checked as serde_json checks them in
    /// values it skips.
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.b.get(self.i..self.i + 4)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 4;
                    }
                    _ => return None,
                },
                // A control character.
                _ => return None,
            }
        }
    }

    /// The `index`: a plain non-negative integer that fits a u64.
    fn index(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        // No digits, or a leading zero.
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        Some(n)
    }

    /// An integer (the log has no fractions or exponents; lines with them
    /// go to serde_json).
    fn integer(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..)?.starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Any JSON value, without whitespace.
    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' => {
                self.i += 1;
                let depth = (depth < MAX_DEPTH).then_some(depth + 1)?;
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.eat(b':')?;
                    self.value(depth)?;
                    match self.next()? {
                        b',' => {}
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let depth = (depth < MAX_DEPTH).then_some(depth + 1)?;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth)?;
                    match self.next()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.integer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &str = r#"{"argv":["a","b\n\u00e9"],"index":7,"kind":"exec","n":-3,"o":{"x":[true,false,null,{}],"y":[]},"prev":"ab","time":"t"}"#;

    #[test]
    fn reads_a_canonical_line() {
        assert_eq!(
            scan(LINE.as_bytes()),
            Some(Scanned {
                index: 7,
                kind: "exec",
                prev: "ab",
                time: "t"
            })
        );
    }

    #[test]
    fn leaves_everything_unusual_to_serde() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"index":7,"kind":"exec","prev":"ab"}"#,
            r#"{"index":7,"index":7,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":07,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":7.0,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":-7,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":18446744073709551616,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":7,"kind":"ex\"ec","prev":"ab","time":"t"}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t"} "#,
            r#" {"index":7,"kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":7, "kind":"exec","prev":"ab","time":"t"}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":1e5}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":"\x"}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":"\u00g0"}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":tru}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":[1,]}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":{"a"}}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t","x":1}}"#,
            r#"{"index":7,"kind":"exec","prev":"ab","time":"t""#,
            r#"{"ind\u0065x":7,"kind":"exec","prev":"ab","time":"t"}"#,
        ] {
            assert_eq!(scan(bad.as_bytes()), None, "{bad}");
        }
        let deep = format!(
            r#"{{"index":7,"kind":"exec","prev":"ab","time":"t","x":{}{}}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        assert_eq!(scan(deep.as_bytes()), None);
        let mut raw = LINE.as_bytes().to_vec();
        raw[3] = 0xff;
        assert_eq!(scan(&raw), None);
    }

    /// What serde_json reads from a line, as the fast path would say it.
    fn serde(line: &[u8]) -> Option<(u64, String, String, String)> {
        let head: crate::entry::Head<'_> = serde_json::from_slice(line).ok()?;
        Some((
            head.index,
            head.kind.into_owned(),
            head.prev.into_owned(),
            head.time.into_owned(),
        ))
    }

    fn owned(s: Scanned<'_>) -> (u64, String, String, String) {
        (s.index, s.kind.into(), s.prev.into(), s.time.into())
    }

    /// JSON values without floats, as callers log them.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[a-z\"\\\\\u{0}-\u{1f}é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"\\\\\u{0}]{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A line as the log writes it: the caller's fields and the log's
    /// (a `kind` or `time` that needs escapes is left to serde_json).
    fn line() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::btree_map("[a-z_]{1,8}", value(), 0..8),
            any::<u64>(),
            "[a-z_.é]{0,12}",
            "[0-9a-f]{64}|",
            "[0-9T:.Z-]{0,24}",
        )
            .prop_map(|(fields, index, kind, prev, time)| {
                let mut map: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().collect();
                map.insert("index".into(), index.into());
                map.insert("kind".into(), kind.into());
                map.insert("prev".into(), prev.into());
                map.insert("time".into(), time.into());
                serde_json::to_vec(&map).expect("serializes")
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(1000))]

        /// The log's own lines always take the fast path, and it reads
        /// what serde_json reads.
        #[test]
        fn canonical_lines_are_read_like_serde(line in line()) {
            let fast = scan(&line).map(owned);
            proptest::prop_assert!(fast.is_some(), "{}", String::from_utf8_lossy(&line));
            proptest::prop_assert_eq!(fast, serde(&line));
        }

        /// Whatever the fast path accepts, serde_json accepts alike, for
        /// lines damaged by edits of bytes.
        #[test]
        fn never_laxer_than_serde(
            line in line(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0_u8..3, any::<u8>()), 1..4),
        ) {
            let mut line = line;
            for (at, op, byte) in edits {
                let i = at.index(line.len() + 1);
                let byte = b"{}[]\",:\\ 0-.eE1tfnul\x00\x1f\xff"[usize::from(byte) % 23].max(byte & 0x7f);
                match op {
                    0 if i < line.len() => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ if i < line.len() => { line.remove(i); }
                    _ => {}
                }
            }
            if let Some(fast) = scan(&line) {
                proptest::prop_assert_eq!(Some(owned(fast)), serde(&line));
            }
        }
    }
}
