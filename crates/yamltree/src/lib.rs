//! YAML text to a small node tree in which every node knows its position.
//!
//! Shared by Airlock's pipeline files (`spec`) and detection rule files
//! (`monitor`). Built from `yaml-rust2`'s event parser without recursion,
//! and strict about what a file may use of YAML: one document, no tags,
//! string keys, no duplicate keys, nesting at most [`MAX_DEPTH`] deep, and
//! aliases expanded within a budget ([`MAX_NODES`], [`MAX_BYTES`]) so that an
//! alias bomb is an error rather than an out-of-memory kill. Merge keys
//! (`<<: *defaults`) are supported when [`Options::merge_keys`] is set;
//! explicit keys win over merged ones. Without it `<<` is an ordinary key.
//!
//! Errors are a [`Error`] (position and message); callers add the file name
//! and wrap it into their own error type.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the text, 1-based like editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// A problem in the text, and where; the message is lowercase and names what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", at.line, at.col)]
pub struct Error {
    /// Where the problem is.
    pub at: Location,
    /// What is wrong.
    pub message: String,
}

/// What the caller's files allow, and how its messages name them.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// What a file holds, for "... too large" (`"pipeline"`, `"rule file"`).
    pub what: &'static str,
    /// What one document holds, for the second-document error
    /// (`"exactly one pipeline"`, `"one list of rules"`).
    pub document: &'static str,
    /// Whether `<<` merges mappings into the mapping it is a key of.
    pub merge_keys: bool,
}

/// Deepest nesting of lists and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes (scalars, lists, mappings) after expanding aliases.
pub const MAX_NODES: usize = 250_000;
/// Most scalar bytes after expanding aliases.
pub const MAX_BYTES: usize = 16 << 20;

/// A YAML value and where it starts in the file.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the value starts (for an empty value: its key).
    pub loc: Location,
    /// The value.
    pub value: Value,
}

/// The three kinds of YAML value.
#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar; its type (string, number, ...) is decided by [`Node::kind`].
    Scalar(Scalar),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping with string keys, in file order, without duplicates.
    Map(Vec<Entry>),
}

/// A scalar's text and whether it was written plain (unquoted).
#[derive(Debug, Clone)]
pub struct Scalar {
    /// The value (quotes removed, escapes resolved).
    pub text: String,
    /// Written without quotes or block indicators, so it may be a number,
    /// a boolean or null.
    pub plain: bool,
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key is.
    pub key_loc: Location,
    /// The value.
    pub value: Node,
}

/// The type of a scalar under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool,
    /// An integer.
    Int,
    /// A floating point number (including `.inf` and `.nan`).
    Float,
    /// Anything else, and every quoted or block scalar.
    Str,
}

impl Node {
    /// The entries if this is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items if this is a list.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar type, or `None` for lists and mappings.
    pub fn kind(&self) -> Option<Kind> {
        self.as_scalar().map(scalar_kind)
    }

    /// The scalar text if this is a scalar of kind `Str`, `Int` or `Float`
    /// (what a text value accepts: `name: 2024` is the text "2024").
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) if !matches!(scalar_kind(s), Kind::Null | Kind::Bool) => Some(&s.text),
            _ => None,
        }
    }

    /// The scalar text of any non-null scalar (booleans included).
    pub fn as_any_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) if scalar_kind(s) != Kind::Null => Some(&s.text),
            _ => None,
        }
    }

    /// How this value reads in a "found ..." message.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Scalar(s) => match scalar_kind(s) {
                Kind::Null => "nothing (null)".to_owned(),
                Kind::Bool => format!("the boolean {}", s.text),
                // Numbers are digits, signs, dots and letters: safe to show as is.
                Kind::Int | Kind::Float => format!("the number {}", s.text),
                Kind::Str => format!("the string {}", quote(&s.text)),
            },
        }
    }
}

/// The core-schema type of a scalar; quoted and block scalars are strings.
pub fn scalar_kind(s: &Scalar) -> Kind {
    if !s.plain {
        return Kind::Str;
    }
    let t = s.text.as_str();
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Kind::Bool,
        _ => {}
    }
    if is_int(t) {
        Kind::Int
    } else if is_float(t) {
        Kind::Float
    } else {
        Kind::Str
    }
}

fn is_int(t: &str) -> bool {
    let all = |s: &str, f: fn(&char) -> bool| !s.is_empty() && s.chars().all(|c| f(&c));
    if let Some(oct) = t.strip_prefix("0o") {
        return all(oct, |c| ('0'..='7').contains(c));
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return all(hex, char::is_ascii_hexdigit);
    }
    all(
        t.strip_prefix(['-', '+']).unwrap_or(t),
        char::is_ascii_digit,
    )
}

fn is_float(t: &str) -> bool {
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(t, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (unsigned.get(..i).unwrap_or(""), unsigned.get(i + 1..)),
        None => (unsigned, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// The value of a plain `Int` or `Float` scalar (YAML spelling: `0x1F`,
/// `0o17`, `1e3`, `.inf`); `None` for anything else and for NaN, which no
/// comparison can use.
pub fn number(s: &Scalar) -> Option<f64> {
    let t = s.text.as_str();
    match scalar_kind(s) {
        Kind::Int => {
            let (negative, unsigned) = match t.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, t.strip_prefix('+').unwrap_or(t)),
            };
            let magnitude = if let Some(hex) = unsigned.strip_prefix("0x") {
                u128::from_str_radix(hex, 16).ok()
            } else if let Some(oct) = unsigned.strip_prefix("0o") {
                u128::from_str_radix(oct, 8).ok()
            } else {
                unsigned.parse::<u128>().ok()
            };
            // Too many digits for u128: the decimal parser still gets it
            // roughly right, which is all a threshold needs.
            #[allow(clippy::cast_precision_loss)]
            let value = match magnitude {
                Some(m) => m as f64,
                None => unsigned.parse::<f64>().ok()?,
            };
            Some(if negative { -value } else { value })
        }
        Kind::Float => {
            let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
            let value = if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
                f64::INFINITY
            } else {
                unsigned.parse::<f64>().ok()?
            };
            if value.is_nan() {
                return None;
            }
            Some(if t.starts_with('-') { -value } else { value })
        }
        Kind::Null | Kind::Bool | Kind::Str => None,
    }
}

/// The value of a plain `Bool` scalar.
pub fn boolean(s: &Scalar) -> Option<bool> {
    match scalar_kind(s) {
        Kind::Bool => Some(s.text.eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// Size of a finished node, for the alias budget and depth limit.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    /// Nodes in the subtree, itself included.
    nodes: usize,
    /// Scalar bytes in the subtree.
    bytes: usize,
    /// 0 for a scalar, 1 + the deepest child for a collection.
    depth: usize,
}

impl Stats {
    fn add_child(&mut self, child: Stats) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.depth = self.depth.max(child.depth.saturating_add(1));
    }
}

/// A list or mapping still being read.
struct Frame {
    loc: Location,
    anchor: usize,
    stats: Stats,
    open: Open,
}

enum Open {
    Seq(Vec<Node>),
    Map(OpenMap),
}

#[derive(Default)]
struct OpenMap {
    entries: Vec<Entry>,
    /// Keys seen so far and where.
    seen: HashMap<String, Location>,
    /// The key whose value comes next: text, position, is a merge key.
    key: Option<(String, Location, bool)>,
    /// Values of `<<` keys, applied when the mapping ends.
    merges: Vec<Node>,
    /// Where the first key is.
    first_key: Option<Location>,
}

/// Reads `text` into a node tree.
///
/// The root is `None` for a file without a document (empty or comments
/// only).
pub fn parse(text: &str, options: &Options) -> Result<Option<Node>, Error> {
    Builder {
        options: *options,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        nodes: 0,
        bytes: 0,
    }
    .run(text)
}

struct Builder {
    options: Options,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Stats)>,
    root: Option<Node>,
    /// Nodes so far, aliases expanded.
    nodes: usize,
    /// Scalar bytes so far, aliases expanded.
    bytes: usize,
}

fn location(mark: &Marker) -> Location {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Location {
        line: mark.line().max(1),
        col: mark.col().saturating_add(1),
    }
}

fn earlier(a: Location, b: Location) -> Location {
    if (b.line, b.col) < (a.line, a.col) {
        b
    } else {
        a
    }
}

fn err(at: Location, message: impl Into<String>) -> Error {
    Error {
        at,
        message: message.into(),
    }
}

impl Builder {
    fn run(mut self, text: &str) -> Result<Option<Node>, Error> {
        let mut parser = Parser::new_from_str(text);
        let mut documents = 0usize;
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e| err(location(e.marker()), format!("invalid yaml: {}", e.info())))?;
            let loc = location(&mark);
            match event {
                Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart => {
                    documents += 1;
                    if documents > 1 {
                        return Err(err(
                            loc,
                            format!(
                                "a second yaml document (expected {} per file; remove the '---')",
                                self.options.document
                            ),
                        ));
                    }
                }
                Event::Alias(id) => self.alias(id, loc)?,
                Event::Scalar(text, style, anchor, tag) => {
                    self.no_tag(tag.as_ref(), loc)?;
                    if text.contains('\0') {
                        return Err(err(loc, "value contains a nul byte"));
                    }
                    let stats = Stats {
                        nodes: 1,
                        bytes: text.len(),
                        depth: 0,
                    };
                    self.spend(stats, loc)?;
                    let node = Node {
                        loc,
                        value: Value::Scalar(Scalar {
                            text,
                            plain: style == TScalarStyle::Plain,
                        }),
                    };
                    self.remember(anchor, &node, stats);
                    self.finish(node, stats)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.open(anchor, tag.as_ref(), loc, Open::Seq(Vec::new()))?;
                }
                Event::MappingStart(anchor, tag) => {
                    self.open(anchor, tag.as_ref(), loc, Open::Map(OpenMap::default()))?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.close(loc)?,
            }
        }
        Ok(self.root)
    }

    fn no_tag(&self, tag: Option<&Tag>, loc: Location) -> Result<(), Error> {
        match tag {
            None => Ok(()),
            Some(tag) => Err(err(
                loc,
                format!(
                    "yaml tags are not supported (found {}; expected a plain value)",
                    quote(&format!("{}{}", tag.handle, tag.suffix))
                ),
            )),
        }
    }

    /// Counts a new node (or an expanded alias) against the budget.
    fn spend(&mut self, stats: Stats, loc: Location) -> Result<(), Error> {
        self.nodes = self.nodes.saturating_add(stats.nodes);
        self.bytes = self.bytes.saturating_add(stats.bytes);
        if self.nodes > MAX_NODES || self.bytes > MAX_BYTES {
            return Err(err(
                loc,
                format!(
                    "{} too large: more than {MAX_NODES} values or {} MiB of text once aliases are expanded (an alias bomb?)",
                    self.options.what,
                    MAX_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn too_deep(&self, loc: Location) -> Error {
        err(
            loc,
            format!("values nested too deeply (at most {MAX_DEPTH} levels of lists and mappings)"),
        )
    }

    fn remember(&mut self, anchor: usize, node: &Node, stats: Stats) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), stats));
        }
    }

    fn alias(&mut self, id: usize, loc: Location) -> Result<(), Error> {
        let Some(stats) = self.anchors.get(&id).map(|(_, stats)| *stats) else {
            return Err(err(
                loc,
                "alias refers to a value that contains it (expected an alias to a finished anchor)",
            ));
        };
        if self.stack.len().saturating_add(stats.depth) > MAX_DEPTH {
            return Err(self.too_deep(loc));
        }
        self.spend(stats, loc)?;
        let Some((node, _)) = self.anchors.get(&id) else {
            return Ok(());
        };
        let node = node.clone();
        self.finish(node, stats)
    }

    fn open(
        &mut self,
        anchor: usize,
        tag: Option<&Tag>,
        loc: Location,
        open: Open,
    ) -> Result<(), Error> {
        self.no_tag(tag, loc)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.too_deep(loc));
        }
        let stats = Stats {
            nodes: 1,
            bytes: 0,
            depth: 1,
        };
        self.spend(stats, loc)?;
        self.stack.push(Frame {
            loc,
            anchor,
            stats,
            open,
        });
        Ok(())
    }

    fn close(&mut self, loc: Location) -> Result<(), Error> {
        let Some(frame) = self.stack.pop() else {
            return Err(err(
                loc,
                "invalid yaml: unbalanced end of a list or mapping",
            ));
        };
        let node = match frame.open {
            Open::Seq(items) => Node {
                loc: frame.loc,
                value: Value::Seq(items),
            },
            Open::Map(map) => {
                let mut at = frame.loc;
                if let Some(first) = map.first_key {
                    // Block mappings are reported where their first key is.
                    at = earlier(at, first);
                }
                Node {
                    loc: at,
                    value: Value::Map(merge(map)),
                }
            }
        };
        self.remember(frame.anchor, &node, frame.stats);
        self.finish(node, frame.stats)
    }

    /// Puts a finished node where it belongs: the root, a list item, a
    /// mapping key or a mapping value.
    fn finish(&mut self, node: Node, stats: Stats) -> Result<(), Error> {
        let merge_keys = self.options.merge_keys;
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.stats.add_child(stats);
        match &mut frame.open {
            Open::Seq(items) => items.push(node),
            Open::Map(map) => match map.key.take() {
                None => {
                    let loc = node.loc;
                    let key = match node.value {
                        // Numbers are fine as keys (a job may be called
                        // `1`); null and booleans are not.
                        Value::Scalar(s) if !matches!(scalar_kind(&s), Kind::Null | Kind::Bool) => {
                            s
                        }
                        _ => {
                            return Err(err(
                                loc,
                                format!("expected a string key, found {}", node.describe()),
                            ))
                        }
                    };
                    if let Some(first) = map.seen.get(&key.text) {
                        return Err(err(
                            loc,
                            format!(
                                "duplicate key {} (first defined at line {})",
                                quote(&key.text),
                                first.line
                            ),
                        ));
                    }
                    map.seen.insert(key.text.clone(), loc);
                    map.first_key.get_or_insert(loc);
                    let merge = merge_keys && key.plain && key.text == "<<";
                    map.key = Some((key.text, loc, merge));
                }
                Some((key, key_loc, merge)) => {
                    let mut value = node;
                    if matches!(&value.value, Value::Scalar(s) if s.plain && s.text.is_empty()) {
                        // An empty value is reported at its key.
                        value.loc = key_loc;
                    }
                    if merge {
                        let ok = match &value.value {
                            Value::Map(_) => true,
                            Value::Seq(items) => {
                                items.iter().all(|i| matches!(i.value, Value::Map(_)))
                            }
                            Value::Scalar(_) => false,
                        };
                        if !ok {
                            return Err(err(
                                value.loc,
                                format!(
                                    "expected a mapping or a list of mappings to merge with \"<<\", found {}",
                                    value.describe()
                                ),
                            ));
                        }
                        map.merges.push(value);
                    } else {
                        map.entries.push(Entry {
                            key,
                            key_loc,
                            value,
                        });
                    }
                }
            },
        }
        Ok(())
    }
}

/// Applies the `<<` merge keys of a finished mapping: merged entries are
/// added after the explicit ones unless the key is already there; among
/// merged mappings, the first one listed wins.
fn merge(mut map: OpenMap) -> Vec<Entry> {
    for source in std::mem::take(&mut map.merges) {
        let sources = match source.value {
            Value::Map(entries) => vec![entries],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|i| match i.value {
                    Value::Map(entries) => Some(entries),
                    _ => None,
                })
                .collect(),
            Value::Scalar(_) => Vec::new(),
        };
        for entry in sources.into_iter().flatten() {
            if !map.seen.contains_key(&entry.key) {
                map.seen.insert(entry.key.clone(), entry.key_loc);
                map.entries.push(entry);
            }
        }
    }
    map.entries
}

/// Shows user text in a message: quoted, escaped, and cut to a readable
/// length so that a huge or hostile value cannot flood a terminal.
pub fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => {
            let head = text.get(..cut).unwrap_or_default();
            format!("{:?}", format!("{head}…"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGING: Options = Options {
        what: "pipeline",
        document: "exactly one pipeline",
        merge_keys: true,
    };

    const PLAIN: Options = Options {
        what: "rule file",
        document: "one list of rules",
        merge_keys: false,
    };

    fn parse_with(text: &str, options: &Options) -> Result<Node, String> {
        match parse(text, options) {
            Ok(Some(node)) => Ok(node),
            Ok(None) => Err("no document".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn tree(text: &str) -> Result<Node, String> {
        parse_with(text, &MERGING)
    }

    fn scalar(text: &str, plain: bool) -> Scalar {
        Scalar {
            text: text.into(),
            plain,
        }
    }

    fn keys(node: &Node) -> Vec<&str> {
        node.as_map()
            .unwrap_or_default()
            .iter()
            .map(|e| e.key.as_str())
            .collect()
    }

    #[test]
    fn positions_are_one_based() {
        let root = tree("a: 1\nb:\n  c: [x, 'y']\nd:\n").unwrap();
        let map = root.as_map().unwrap();
        assert_eq!(root.loc, Location { line: 1, col: 1 });
        assert_eq!(map[0].key_loc, Location { line: 1, col: 1 });
        assert_eq!(map[0].value.loc, Location { line: 1, col: 4 });
        let b = &map[1].value;
        assert_eq!(b.loc, Location { line: 3, col: 3 });
        let c = &b.as_map().unwrap()[0].value;
        assert_eq!(c.loc, Location { line: 3, col: 6 });
        assert_eq!(c.as_seq().unwrap()[1].loc, Location { line: 3, col: 10 });
        // An empty value is reported at its key.
        assert_eq!(map[2].value.loc, Location { line: 4, col: 1 });
        assert_eq!(map[2].value.kind(), Some(Kind::Null));
    }

    #[test]
    fn scalar_kinds() {
        let kind = |t: &str, plain| {
            scalar_kind(&Scalar {
                text: t.into(),
                plain,
            })
        };
        for t in ["1", "-1", "+7", "0x1F", "0o17"] {
            assert_eq!(kind(t, true), Kind::Int, "{t}");
        }
        for t in ["1.5", ".5", "1.", "1e3", "-2.5E-3", ".inf", "-.Inf", ".nan"] {
            assert_eq!(kind(t, true), Kind::Float, "{t}");
        }
        for t in [
            "1.2.3", ".", "e3", "1e", "0x", "1h", "-", "+.", "nan", "yes",
        ] {
            assert_eq!(kind(t, true), Kind::Str, "{t}");
        }
        assert_eq!(kind("true", true), Kind::Bool);
        assert_eq!(kind("~", true), Kind::Null);
        assert_eq!(kind("1", false), Kind::Str);
        assert_eq!(kind("", false), Kind::Str);
    }

    #[test]
    fn merge_keys() {
        let root = tree("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n  z: 4\n").unwrap();
        let m = &root.as_map().unwrap()[1].value;
        assert_eq!(keys(m), ["y", "z", "x"]);
        let y = &m.as_map().unwrap()[0].value;
        assert_eq!(y.as_text(), Some("3"));
        // A mapping that starts with a merge key is where that key is.
        assert_eq!(m.loc, Location { line: 3, col: 3 });
        let root = tree("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm: {<<: [*a, *b]}\n").unwrap();
        let m = &root.as_map().unwrap()[2].value;
        assert_eq!(keys(m), ["x", "y"]);
        let x = &m.as_map().unwrap()[0].value;
        assert_eq!(x.as_text(), Some("1"), "the first mapping listed wins");
    }

    #[test]
    fn numbers_and_booleans() {
        let n = |t: &str| number(&scalar(t, true));
        assert_eq!(n("3333"), Some(3333.0));
        assert_eq!(n("-7"), Some(-7.0));
        assert_eq!(n("0x1F"), Some(31.0));
        assert_eq!(n("0o17"), Some(15.0));
        assert_eq!(n("1.5e3"), Some(1500.0));
        assert_eq!(n("-.inf"), Some(f64::NEG_INFINITY));
        assert_eq!(n(".nan"), None);
        assert_eq!(n("1h"), None);
        assert_eq!(n(&"9".repeat(50)), Some(1e50));
        assert_eq!(number(&scalar("3", false)), None, "quoted is text");
        assert_eq!(boolean(&scalar("True", true)), Some(true));
        assert_eq!(boolean(&scalar("false", true)), Some(false));
        assert_eq!(boolean(&scalar("true", false)), None);
        assert_eq!(boolean(&scalar("yes", true)), None);
    }

    #[test]
    fn anchors_are_shared() {
        let root = tree("a: &l [x, y]\nb: *l\n").unwrap();
        let b = &root.as_map().unwrap()[1].value;
        assert_eq!(b.as_seq().unwrap().len(), 2);
    }

    #[test]
    fn merge_keys_are_optional() {
        let text = "a: &a {x: 1}\nb:\n  <<: *a\n  y: 2\n";
        let root = parse_with(text, &PLAIN).unwrap();
        let b = &root.as_map().unwrap()[1].value;
        assert_eq!(keys(b), ["<<", "y"], "without merge keys, << is a key");
        assert_eq!(b.loc, Location { line: 3, col: 3 });
        let root = parse_with("<<: 1\n", &PLAIN).unwrap();
        assert_eq!(keys(&root), ["<<"]);
    }

    #[test]
    fn messages_name_the_file_kind() {
        let second = "a: 1\n---\nb: 2\n";
        assert_eq!(
            parse_with(second, &PLAIN).unwrap_err(),
            "2:1: a second yaml document (expected one list of rules per file; remove the '---')"
        );
        assert_eq!(
            tree(second).unwrap_err(),
            "2:1: a second yaml document (expected exactly one pipeline per file; remove the '---')"
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(parse_with(&bomb, &PLAIN)
            .unwrap_err()
            .contains(": rule file too large: "));
        assert!(tree(&bomb).unwrap_err().contains(": pipeline too large: "));
    }

    #[test]
    fn quote_escapes_and_cuts() {
        assert_eq!(quote("a\u{1b}[31m"), "\"a\\u{1b}[31m\"");
        let q = quote(&"é".repeat(100));
        assert_eq!(q.chars().count(), 64 + 3);
        assert!(q.ends_with("…\""));
    }

    #[test]
    fn rejects() {
        let cases = [
            (
                "a: 1\na: 2\n",
                "2:1: duplicate key \"a\" (first defined at line 1)",
            ),
            ("a: !!str 1\n", "1:10: yaml tags are not supported"),
            ("[a]: 1\n", "1:1: expected a string key, found a list"),
            ("~: 1\n", "1:1: expected a string key, found nothing"),
            (
                "true: 1\n",
                "1:1: expected a string key, found the boolean true",
            ),
            ("a: 1\n---\nb: 2\n", "2:1: a second yaml document"),
            (
                "a: &x [*x]\n",
                "1:8: alias refers to a value that contains it",
            ),
            ("a: \"\\0\"\n", "1:4: value contains a nul byte"),
            ("a:\n\tb: 1\n", "2:2: invalid yaml: tabs disallowed"),
            (
                "a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n",
                "4:3: duplicate key \"<<\"",
            ),
            (
                "<<: 1\n",
                "1:5: expected a mapping or a list of mappings to merge",
            ),
        ];
        for (text, want) in cases {
            let got = tree(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(tree(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(tree(&deep).unwrap_err().contains("nested too deeply"));
        let very_deep = "[".repeat(100_000);
        // yaml-rust2's scanner has its own limit for flow collections.
        let err = tree(&very_deep).unwrap_err();
        assert!(
            err.contains("nested too deeply") || err.contains("recursion limit exceeded"),
            "{err}"
        );
        let mut block = String::new();
        for level in 0..1000 {
            block.push_str(&" ".repeat(level));
            block.push_str("k:\n");
        }
        let err = tree(&block).unwrap_err();
        assert!(err.starts_with("65:"), "{err}");
        assert!(err.contains("nested too deeply"), "{err}");
        // Aliases cannot be used to get around the limit.
        let half = MAX_DEPTH / 2 + 1;
        let via_alias = format!(
            "a: &a {}{}\nb: {}*a{}\n",
            "[".repeat(half),
            "]".repeat(half),
            "[".repeat(half),
            "]".repeat(half)
        );
        assert!(tree(&via_alias).unwrap_err().contains("nested too deeply"));
    }

    #[test]
    fn alias_bomb() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = tree(&text).unwrap_err();
        assert!(err.contains("once aliases are expanded"), "{err}");
    }

    #[test]
    fn empty_documents() {
        assert_eq!(tree("").unwrap_err(), "no document");
        assert_eq!(tree("# only a comment\n").unwrap_err(), "no document");
        assert_eq!(tree("---\n").unwrap().kind(), Some(Kind::Null));
    }
}
