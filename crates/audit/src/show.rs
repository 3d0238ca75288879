//! Reading entries back, for `airlock audit show`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::lines::LineReader;
use crate::log::ENTRIES_FILE;

/// An entry cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShowError {
    /// The entries file could not be read.
    #[error("cannot read audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A line is not JSON (`airlock audit verify` says more).
    #[error("audit log {path}: entry {index} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The entry's position.
        index: u64,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

/// One entry as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownEntry {
    /// Its position in the log.
    pub index: u64,
    /// Its line, without the newline.
    pub line: String,
    /// The line parsed.
    pub value: Value,
}

/// The entries of a log, in order, optionally only those whose `run`
/// field is a given string.
pub struct Entries {
    path: PathBuf,
    reader: Option<LineReader<File>>,
    index: u64,
    run: Option<String>,
}

/// The entries of the log in `dir`; with `run`, only those whose `"run"`
/// field equals it. A missing log has no entries.
pub fn entries(dir: &Path, run: Option<&str>) -> Result<Entries, ShowError> {
    let path = dir.join(ENTRIES_FILE);
    let reader = match File::open(&path) {
        Ok(file) => Some(LineReader::new(file, 0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(ShowError::Io { path, source }),
    };
    Ok(Entries {
        path,
        reader,
        index: 0,
        run: run.map(str::to_owned),
    })
}

impl Iterator for Entries {
    type Item = Result<ShownEntry, ShowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = self.reader.as_mut()?;
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(source) => {
                    self.reader = None;
                    return Some(Err(ShowError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            let index = self.index;
            self.index += 1;
            let value: Value = match serde_json::from_slice(line.bytes) {
                Ok(value) => value,
                Err(source) => {
                    return Some(Err(ShowError::Json {
                        path: self.path.clone(),
                        index,
                        source,
                    }))
                }
            };
            if let Some(run) = &self.run {
                if value.get("run").and_then(Value::as_str) != Some(run.as_str()) {
                    continue;
                }
            }
            let line = String::from_utf8_lossy(line.bytes).into_owned();
            return Some(Ok(ShownEntry { index, line, value }));
        }
    }
}
