//! Errors of the redactor. None of them carries a secret's bytes.

use crate::{MAX_SECRET_LEN, MIN_SECRET_LEN};

/// Why a value cannot be masked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// The value is too short to be masked safely: masking it would hide
    /// ordinary words and numbers all over the output, and a short value is
    /// guessable anyway.
    #[error(
        "value to mask is {len} bytes long; values must be at least {MIN_SECRET_LEN} bytes, \
         because a shorter one would mask ordinary output and is too easy to guess"
    )]
    TooShort {
        /// Length of the refused value, in bytes.
        len: usize,
    },
    /// The value is too long to be masked in a stream: the redactor would
    /// have to hold back that much output (times the size of its longest
    /// encoding) before releasing any of it.
    #[error(
        "value to mask is {len} bytes long; values must be at most {MAX_SECRET_LEN} bytes \
         (store large files as several smaller secrets, or mask their individual lines)"
    )]
    TooLong {
        /// Length of the refused value, in bytes.
        len: usize,
    },
    /// The automaton over every form of every secret could not be built
    /// (it would exceed the automaton's size limits).
    #[error("cannot build the redaction automaton over {patterns} patterns: {source}")]
    Automaton {
        /// How many patterns the automaton was to hold.
        patterns: usize,
        /// What the automaton builder reported.
        #[source]
        source: aho_corasick::BuildError,
    },
}
