//! Why a rule file was refused: every problem is a [`RuleError`] that names
//! the file, the line and column, and what was expected.

use std::fmt;
use std::io;

use crate::observation::{FieldType, Kind};

/// A place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file's name as given to [`Rules::load`](super::Rules::load).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A rule file that cannot be read or holds an invalid rule.
///
/// Every variant but [`RuleError::Read`] and [`RuleError::TooLarge`] has a
/// [`Position`]; its message starts with `file:line:col: `.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file or directory could not be read.
    #[error("{file}: cannot read rules: {source}")]
    Read {
        /// The file or directory.
        file: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_FILE_SIZE`](super::MAX_FILE_SIZE).
    #[error("{file}: rule file is too large ({size} bytes; expected at most {max} bytes)", max = super::MAX_FILE_SIZE)]
    TooLarge {
        /// The file.
        file: String,
        /// Its size in bytes.
        size: u64,
    },
    /// Not YAML, or YAML that rule files do not use (tags, several
    /// documents, deep nesting, an alias bomb).
    #[error("{at}: {message}")]
    Yaml {
        /// Where.
        at: Position,
        /// What is wrong.
        message: String,
    },
    /// A key the mapping cannot have.
    #[error("{at}: unknown key {} in {context} (expected one of: {expected})", quote(.key))]
    UnknownKey {
        /// Where the key is.
        at: Position,
        /// The key.
        key: String,
        /// What the mapping is (`rule "x"`, `the predicate of field "argv"`).
        context: String,
        /// The keys it may have, comma-separated.
        expected: String,
    },
    /// A required key is missing.
    #[error("{at}: missing key {key:?} in {context}")]
    MissingKey {
        /// Where the mapping starts.
        at: Position,
        /// The key.
        key: &'static str,
        /// What the mapping is.
        context: String,
    },
    /// A condition names a field that observations of the rule's kind do
    /// not have.
    #[error("{at}: unknown field {} for `on: {kind}` (valid fields: {valid})", quote(.field))]
    UnknownField {
        /// Where the field is named.
        at: Position,
        /// The field.
        field: String,
        /// The rule's kind.
        kind: Kind,
        /// The kind's fields, comma-separated.
        valid: String,
    },
    /// A value of the wrong type (a list where text was expected, text
    /// compared with a number field, ...).
    #[error("{at}: expected {expected} for {what}, found {found}")]
    WrongType {
        /// Where the value is.
        at: Position,
        /// What was expected.
        expected: String,
        /// What the value is for.
        what: String,
        /// What was found.
        found: String,
    },
    /// A comparison that does not apply to the field's type (`matches` on
    /// a number, `gt` on text).
    #[error("{at}: {op:?} does not apply to {} (a {field_type} field; expected one of: {expected})", quote(.field))]
    WrongOperator {
        /// Where the comparison is.
        at: Position,
        /// The comparison.
        op: String,
        /// The field.
        field: String,
        /// The field's type.
        field_type: FieldType,
        /// The comparisons that apply, comma-separated.
        expected: String,
    },
    /// A rule id not of the form `[a-z0-9][a-z0-9-]*`.
    #[error("{at}: invalid rule id {} (expected lowercase letters, digits and '-', not starting with '-', at most {max} characters)", quote(.id), max = super::MAX_ID_CHARS)]
    BadId {
        /// Where the id is.
        at: Position,
        /// The id.
        id: String,
    },
    /// Two rules with the same id.
    #[error("{at}: duplicate rule id {} (first defined at {first})", quote(.id))]
    DuplicateId {
        /// Where the second one is.
        at: Position,
        /// The id.
        id: String,
        /// Where the first one is.
        first: Position,
    },
    /// `on:` names no observation kind.
    #[error("{at}: unknown kind {} (expected one of: {})", quote(.found), kind_names())]
    UnknownKind {
        /// Where the value is.
        at: Position,
        /// The value.
        found: String,
    },
    /// `severity:` names no severity.
    #[error("{at}: unknown severity {} (expected one of: info, low, medium, high, critical)", quote(.found))]
    BadSeverity {
        /// Where the value is.
        at: Position,
        /// The value.
        found: String,
    },
    /// `action:` names no action.
    #[error("{at}: unknown action {} (expected alert or kill)", quote(.found))]
    BadAction {
        /// Where the value is.
        at: Position,
        /// The value.
        found: String,
    },
    /// A `matches:` pattern that does not compile.
    #[error("{at}: bad regex for {}: {message}", quote(.field))]
    BadRegex {
        /// Where the pattern is.
        at: Position,
        /// The field it is matched against.
        field: String,
        /// What the regex compiler said.
        message: String,
    },
    /// Some other misuse of the grammar (an empty condition, two
    /// comparisons for one field, ...).
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Position,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl RuleError {
    /// Where in which file the problem is, if it has a position.
    pub fn position(&self) -> Option<&Position> {
        match self {
            RuleError::Read { .. } | RuleError::TooLarge { .. } => None,
            RuleError::Yaml { at, .. }
            | RuleError::UnknownKey { at, .. }
            | RuleError::MissingKey { at, .. }
            | RuleError::UnknownField { at, .. }
            | RuleError::WrongType { at, .. }
            | RuleError::WrongOperator { at, .. }
            | RuleError::BadId { at, .. }
            | RuleError::DuplicateId { at, .. }
            | RuleError::UnknownKind { at, .. }
            | RuleError::BadSeverity { at, .. }
            | RuleError::BadAction { at, .. }
            | RuleError::BadRegex { at, .. }
            | RuleError::Invalid { at, .. } => Some(at),
        }
    }
}

fn kind_names() -> String {
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    names.join(", ")
}

/// Shows user text in a message (shared with the YAML tree's messages).
pub(crate) use yamltree::quote;

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Position {
        Position {
            file: "r.yaml".into(),
            line: 3,
            col: 5,
        }
    }

    #[test]
    fn messages_start_with_the_position() {
        let e = RuleError::BadAction {
            at: at(),
            found: "drop".into(),
        };
        assert_eq!(
            e.to_string(),
            "r.yaml:3:5: unknown action \"drop\" (expected alert or kill)"
        );
        assert_eq!(e.position(), Some(&at()));
        let e = RuleError::UnknownKind {
            at: at(),
            found: "execve".into(),
        };
        assert_eq!(
            e.to_string(),
            "r.yaml:3:5: unknown kind \"execve\" (expected one of: exec, egress, sample, limit, file)"
        );
    }
}
