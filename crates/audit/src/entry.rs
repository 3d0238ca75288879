//! The fields the log adds to every entry, and how a line is read back.
//!
//! An entry is one line of `entries.jsonl`: a compact JSON object with
//! sorted keys (serde_json's `Map` is a `BTreeMap` in this workspace),
//! holding the caller's fields (at least a string `kind`) and:
//!
//! - `index`: its position in the log, from 0;
//! - `time`: when it was appended, RFC 3339 UTC with milliseconds;
//! - `prev`: the hex leaf hash of the previous entry, `""` for entry 0.
//!
//! The entry's leaf data is exactly the line's bytes without the newline.

use std::borrow::Cow;

use serde::Deserialize;

use crate::merkle::Hash;

/// The field holding the entry's position.
pub const INDEX: &str = "index";
/// The field holding the append time.
pub const TIME: &str = "time";
/// The field holding the previous entry's leaf hash.
pub const PREV: &str = "prev";
/// The field naming what happened.
pub const KIND: &str = "kind";

/// The `prev` of entry 0: no previous entry.
pub(crate) const NO_PREV: Hash = [0; 32];

/// The fields of an entry the log checks, as serde_json reads them.
#[derive(Debug, Deserialize)]
pub(crate) struct Head<'a> {
    pub(crate) index: u64,
    #[serde(borrow)]
    pub(crate) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) prev: Cow<'a, str>,
    /// Only its being a string is checked; the tests read it.
    #[serde(borrow)]
    #[allow(dead_code)]
    pub(crate) time: Cow<'a, str>,
}

/// What the log's fields of one line say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    /// The `index` field.
    pub(crate) index: u64,
    /// The `prev` field; [`NO_PREV`] for `""` (and for all zeros).
    pub(crate) prev: Hash,
}

/// Reads a line's log fields; `Err` says why the line is not an entry.
///
/// Lines in the log's own compact form take a fast path
/// ([`crate::scan`]); anything else, and every malformed line, is read by
/// serde_json, which has the last word.
pub(crate) fn parse_fields(line: &[u8]) -> Result<Fields, String> {
    if let Some(head) = crate::scan::scan(line) {
        return check(head.index, head.kind, head.prev);
    }
    let head: Head<'_> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    check(head.index, &head.kind, &head.prev)
}

fn check(index: u64, kind: &str, prev: &str) -> Result<Fields, String> {
    if kind.is_empty() {
        return Err("empty \"kind\"".to_owned());
    }
    let prev = if prev.is_empty() {
        NO_PREV
    } else {
        crate::hex::decode_array::<32>(prev.as_bytes())
            .ok_or_else(|| "\"prev\" is not 64 hex digits".to_owned())?
    };
    Ok(Fields { index, prev })
}
