//! Writing entry lines in two steps, so that most of the work happens
//! outside the log's lock.
//!
//! A line is the compact JSON of the caller's object plus the log's
//! `index`, `prev` and `time`, keys sorted (see [`crate::entry`]). The
//! caller's members do not depend on the log's state, so `append`
//! serializes them on the caller's thread, before queuing: [`Encoded`]
//! holds them in key order, split where the log's three fields go. The
//! group-commit leader, which holds the lock, then only copies those
//! pieces around the three fields ([`Encoded::write_line`]), hashes the
//! line and pushes it into the tree.

use serde_json::{Map, Value};

use crate::entry;
use crate::merkle::Hash;

/// The log's fields in key order: members sort into the four gaps
/// around them.
const LOG_FIELDS: [&str; 3] = [entry::INDEX, entry::PREV, entry::TIME];

/// Entries whose own members are serialized, waiting for the log's
/// fields.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    bytes: Vec<u8>,
    /// Per entry, the end offsets in `bytes` of its four gaps: the
    /// members (comma-separated) before `index`, between `index` and
    /// `prev`, between `prev` and `time`, and after `time`.
    entries: Vec<[usize; 4]>,
}

impl Encoded {
    /// Room for `n` entries of a typical size.
    pub(crate) fn with_capacity(n: usize) -> Encoded {
        Encoded {
            bytes: Vec::with_capacity(n * 256),
            entries: Vec::with_capacity(n),
        }
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Serializes the members of `map`, which must not hold the log's
    /// fields.
    pub(crate) fn push(&mut self, map: &Map<String, Value>) -> serde_json::Result<()> {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        // serde_json's map is sorted in this workspace; should a feature
        // make it keep insertion order, sort here, as the format needs.
        if !members.is_sorted_by(|a, b| a.0 < b.0) {
            members.sort_by(|a, b| a.0.cmp(b.0));
        }
        let mut ends = [0; 4];
        let mut gap = 0;
        let mut gap_start = self.bytes.len();
        for (key, value) in members {
            while gap < 3 && key.as_str() > LOG_FIELDS[gap] {
                ends[gap] = self.bytes.len();
                gap += 1;
                gap_start = self.bytes.len();
            }
            if self.bytes.len() > gap_start {
                self.bytes.push(b',');
            }
            serde_json::to_writer(&mut self.bytes, key)?;
            self.bytes.push(b':');
            serde_json::to_writer(&mut self.bytes, value)?;
        }
        for end in &mut ends[gap..] {
            *end = self.bytes.len();
        }
        self.entries.push(ends);
        Ok(())
    }

    /// The gaps of entry `i`.
    fn gaps(&self, i: usize) -> [&[u8]; 4] {
        let start = if i == 0 { 0 } else { self.entries[i - 1][3] };
        let [a, b, c, d] = self.entries[i];
        [
            &self.bytes[start..a],
            &self.bytes[a..b],
            &self.bytes[b..c],
            &self.bytes[c..d],
        ]
    }

    /// Appends entry `i`'s line (without the newline) to `out`, with the
    /// log's fields: `index`, `prev` (`None`: `""`) and `time` (already
    /// JSON, quotes included).
    pub(crate) fn write_line(
        &self,
        i: usize,
        out: &mut Vec<u8>,
        index: u64,
        prev: Option<&Hash>,
        time_json: &[u8],
    ) {
        let [before_index, before_prev, before_time, after] = self.gaps(i);
        let gap = |out: &mut Vec<u8>, members: &[u8]| {
            if !members.is_empty() {
                out.push(b',');
                out.extend_from_slice(members);
            }
        };
        out.push(b'{');
        if !before_index.is_empty() {
            out.extend_from_slice(before_index);
            out.push(b',');
        }
        out.extend_from_slice(b"\"index\":");
        out.extend_from_slice(itoa(index, &mut [0; 20]));
        gap(out, before_prev);
        out.extend_from_slice(b",\"prev\":\"");
        if let Some(prev) = prev {
            hex_into(out, prev);
        }
        out.push(b'"');
        gap(out, before_time);
        out.extend_from_slice(b",\"time\":");
        out.extend_from_slice(time_json);
        gap(out, after);
        out.push(b'}');
    }
}

/// The decimal digits of `n`, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        // A digit: n % 10 < 10.
        buf[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends lowercase hex of `bytes`.
fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The line as the log wrote it before: the fields inserted into the
    /// map and the map serialized.
    fn reference(map: &Map<String, Value>, index: u64, prev: Option<&Hash>, time: &str) -> Vec<u8> {
        let mut map = map.clone();
        map.insert(entry::INDEX.into(), index.into());
        map.insert(entry::TIME.into(), time.into());
        map.insert(
            entry::PREV.into(),
            prev.map(|p| crate::hex::encode(p))
                .unwrap_or_default()
                .into(),
        );
        serde_json::to_vec(&map).expect("serializes")
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Keys around and next to the log's fields' names.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{0,7}",
            Just("i".to_owned()),
            Just("index0".to_owned()),
            Just("indew".to_owned()),
            Just("pre".to_owned()),
            Just("prev_".to_owned()),
            Just("tim".to_owned()),
            Just("timf".to_owned()),
            Just("\u{e9}".to_owned()),
            Just("\"q\\".to_owned()),
        ]
        .prop_filter("not a log field", |k| !LOG_FIELDS.contains(&k.as_str()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn lines_match_the_inserted_map(
            maps in prop::collection::vec(prop::collection::btree_map(key(), value(), 0..8), 1..4),
            index in any::<u64>(),
            prev in proptest::option::of(any::<[u8; 32]>()),
            time in "[0-9T:.Z-]{0,24}",
        ) {
            let maps: Vec<Map<String, Value>> =
                maps.into_iter().map(|m| m.into_iter().collect()).collect();
            let mut encoded = Encoded::default();
            for map in &maps {
                encoded.push(map).expect("encodes");
            }
            let time_json = serde_json::to_vec(&time).expect("json");
            for (i, map) in maps.iter().enumerate() {
                let mut line = Vec::new();
                encoded.write_line(i, &mut line, index, prev.as_ref(), &time_json);
                prop_assert_eq!(
                    String::from_utf8(line).expect("utf-8"),
                    String::from_utf8(reference(map, index, prev.as_ref(), &time)).expect("utf-8")
                );
            }
        }
    }
}
