//! Pipeline files: parse, validate (every error with `file:line:col`), and
//! the job graph.
//!
//! ```no_run
//! let pipeline = spec::load(std::path::Path::new("airlock.yml"))?;
//! for index in pipeline.topo_order() {
//!     println!("{}", pipeline.jobs[index].id);
//! }
//! # Ok::<(), spec::SpecError>(())
//! ```
//!
//! The file format is version 1 of the pipeline file described in the
//! project brief. Parsing is strict: unknown keys, duplicate keys, wrong
//! types, YAML tags and multiple documents are errors, and so is anything
//! that would make the parser's work unbounded (deep nesting, alias bombs,
//! files over [`MAX_FILE_SIZE`]).
#![deny(missing_docs)]
// Tests may unwrap: a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod egress;
mod error;
mod graph;
mod model;
mod names;
mod paths;
mod units;
mod validate;

use std::io::{self, Read};
use std::path::Path;

pub use error::{SpecError, UnknownJob};
pub use model::*;
pub use units::{format_size, parse_duration, parse_size};

/// Whether `s` is a valid pipeline name or job id
/// (`[a-z0-9][a-z0-9_-]{0,63}`).
pub fn is_id(s: &str) -> bool {
    names::is_id(s)
}

/// Largest pipeline file accepted, in bytes (1 MiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// What a pipeline file may use of YAML: merge keys included.
const YAML: yamltree::Options = yamltree::Options {
    what: "pipeline",
    document: "exactly one pipeline",
    merge_keys: true,
};

/// Reads and validates the pipeline file at `path`.
///
/// Errors name the file; those about its content also carry the line and
/// column. A missing, unreadable, oversized (over [`MAX_FILE_SIZE`]) or
/// non-UTF-8 file is an error too.
pub fn load(path: &Path) -> Result<Pipeline, SpecError> {
    let whole = |message: String| SpecError::whole(path, message);
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => whole("pipeline file not found".to_owned()),
        _ => whole(format!("cannot open pipeline file: {e}")),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| whole(format!("cannot read pipeline file: {e}")))?;
    if meta.is_dir() {
        return Err(whole(
            "is a directory (expected a pipeline file)".to_owned(),
        ));
    }
    let too_large = |size: u64| {
        whole(format!(
            "pipeline file is too large ({size} bytes; expected at most {MAX_FILE_SIZE} bytes)"
        ))
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large(meta.len()));
    }
    // The file may grow between the check and the read: read at most one
    // byte past the limit.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole(format!("cannot read pipeline file: {e}")))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > MAX_FILE_SIZE {
        return Err(too_large(read));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or_default();
        let before = String::from_utf8_lossy(valid);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SpecError {
            file: path.to_path_buf(),
            line,
            col,
            message: "pipeline file is not valid UTF-8 (expected UTF-8 text)".to_owned(),
        }
    })?;
    parse(&text, path)
}

/// Validates pipeline text as if read from `file`.
///
/// `file` is used in messages, for the default pipeline name (its stem) and
/// to resolve `source` directories (relative to its directory, which is
/// also the default `source`). `source` directories must exist; they are
/// stored canonical.
pub fn parse(text: &str, file: &Path) -> Result<Pipeline, SpecError> {
    if u64::try_from(text.len()).map_or(true, |n| n > MAX_FILE_SIZE) {
        return Err(SpecError::whole(
            file,
            format!(
                "pipeline file is too large ({} bytes; expected at most {MAX_FILE_SIZE} bytes)",
                text.len()
            ),
        ));
    }
    // Editors do not count a byte order mark as a column.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = yamltree::parse(text, &YAML).map_err(|e| SpecError::at(file, e.at, e.message))?;
    validate::pipeline(root.as_ref(), file)
}
