//! Errors of this crate: every problem in a pipeline file is a [`SpecError`]
//! that names the file, the line and column, and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::model::Location;

/// A pipeline file that cannot be read or is not a valid pipeline.
///
/// Displays as `{file}:{line}:{col}: {message}`, or `{file}: {message}` when
/// the problem has no position in the file (the file is missing, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", Prefix(self))]
pub struct SpecError {
    /// The pipeline file as given.
    pub file: PathBuf,
    /// 1-based line of the offending key or value; 0 when there is none.
    pub line: usize,
    /// 1-based column of the offending key or value; 0 when there is none.
    pub col: usize,
    /// What is wrong and what was expected (lowercase, no trailing period).
    pub message: String,
}

impl SpecError {
    /// An error at `loc` in `file`.
    pub(crate) fn at(file: &Path, loc: Location, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_path_buf(),
            line: loc.line,
            col: loc.col,
            message: message.into(),
        }
    }

    /// An error about `file` as a whole (no position).
    pub(crate) fn whole(file: &Path, message: impl Into<String>) -> Self {
        SpecError::at(file, Location { line: 0, col: 0 }, message)
    }

    /// Where in the file the problem is, if it has a position.
    pub fn location(&self) -> Option<Location> {
        (self.line > 0).then_some(Location {
            line: self.line,
            col: self.col,
        })
    }
}

/// The `file:line:col` (or `file`) part of a [`SpecError`]'s message.
struct Prefix<'a>(&'a SpecError);

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{}", e.file.display())?;
        if e.line > 0 {
            write!(f, ":{}:{}", e.line, e.col)?;
        }
        Ok(())
    }
}

/// `--job` named a job the pipeline does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job {id:?} (known jobs: {})", .known.join(", "))]
pub struct UnknownJob {
    /// The id that was asked for.
    pub id: String,
    /// The ids the pipeline has, in file order.
    pub known: Vec<String>,
}

/// Shows user text in a message (shared with the YAML tree's messages).
pub(crate) use yamltree::quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let f = Path::new("ci/airlock.yml");
        let e = SpecError::at(f, Location { line: 3, col: 5 }, "boom");
        assert_eq!(e.to_string(), "ci/airlock.yml:3:5: boom");
        assert_eq!(e.location(), Some(Location { line: 3, col: 5 }));
        let e = SpecError::whole(f, "not found");
        assert_eq!(e.to_string(), "ci/airlock.yml: not found");
        assert_eq!(e.location(), None);
    }
}
