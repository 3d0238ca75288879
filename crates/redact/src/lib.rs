//! Airlock's streaming redactor: it sits between a job's output and every
//! sink, and masks every form of every secret the job was given, whatever
//! chunks the output arrives in.
//!
//! ```
//! use std::sync::Arc;
//! use redact::{Patterns, Redactor};
//!
//! let patterns = Arc::new(Patterns::new(&[b"hunter2-hunter2"])?);
//! let mut redactor = Redactor::new(patterns);
//! let mut out = Vec::new();
//! // The secret arrives split across two writes, the second one also
//! // carrying its base64 form (of "admin:" + secret, as in HTTP basic auth).
//! redactor.push(b"password=hunter2-", &mut out);
//! redactor.push(b"hunter2\nauth: dXNlcjpodW50ZXIyLWh1bnRlcjI=\n", &mut out);
//! redactor.finish(&mut out);
//! assert_eq!(out, b"password=***\nauth: dXNlcjp***\n");
//! # Ok::<(), redact::RedactError>(())
//! ```
//!
//! # What is masked
//!
//! For every secret, each of these forms is a pattern (see [`variants()`] and
//! [`Form`]); forms with the same bytes are kept once, and forms shorter
//! than [`MIN_SECRET_LEN`] are dropped:
//!
//! - the exact bytes;
//! - each line of a multi-line secret, without its `\r`, if the line is at
//!   least [`MIN_SECRET_LEN`] bytes (a secret printed line by line, or
//!   re-wrapped, is still caught line by line); the whole secret with `\n`
//!   line endings turned into `\r\n` and back;
//! - base64, standard and URL-safe alphabets, at the three byte alignments:
//!   the secret encoded on its own, and after 1 and 2 bytes of unknown data
//!   (`user:` + password, say). Only the characters that depend on the
//!   secret alone are kept; each alignment comes in three endings: open
//!   (more data follows: the last character, mixed with the next data, is
//!   left out), unpadded, and `=`-padded;
//! - hexadecimal, lower and upper case;
//! - percent-encoding of every byte outside the RFC 3986 unreserved set
//!   (`%2F` and `%2f`), the same for JavaScript's `encodeURIComponent` set,
//!   and form encoding (space as `+`);
//! - JSON string escaping as serde_json and JavaScript do it, with `\/`,
//!   with every control byte as `\u00xx` (and `\u00XX`), as Go does it
//!   (`\u003c` for `<` ...), and with non-ASCII characters as `\uxxxx`
//!   (Python's `json.dumps`, PHP's `json_encode`);
//! - shell quoting: inside single quotes (`'\''` and `'"'"'` for a quote),
//!   inside double quotes, and backslash-escaped (`printf %q`);
//! - for a secret ending in line breaks (read from a file), the same
//!   encodings of the secret without them.
//!
//! # How
//!
//! One Aho-Corasick automaton (the `aho-corasick` crate, standard semantics,
//! so that every occurrence of every pattern is reported, overlapping ones
//! included) holds all the patterns. A q-gram filter checks the text at
//! every few bytes for a window that could begin a pattern and lets the
//! automaton run only there, which keeps the redactor fast with thousands of
//! patterns. Occurrences are merged into runs (overlapping or adjacent
//! occurrences make one run), and each run is written as one [`MASK`].
//!
//! The output is exactly that of masking the whole stream at once, however
//! it is chunked: `tests/prop.rs` checks this against a naive reference on
//! 100,000 random inputs, and `fuzz/fuzz_targets/redact_stream.rs` does the
//! same under cargo-fuzz. After each [`Redactor::push`] the redactor holds
//! back only the bytes that could still begin an occurrence: the longest
//! suffix of the stream that is a proper prefix of some pattern (fewer than
//! [`Patterns::longest`] bytes, usually none after a line break). It knows
//! that suffix exactly without running the automaton over every byte: a
//! byte the filter let it skip cannot begin an occurrence. Nothing ever
//! releases part of a possible secret before the stream ends
//! ([`Redactor::finish`]); [`Redactor::flush_safe`], for idle streams,
//! releases only what is safe.
//!
//! Throughput is measured by `benches/redact.rs` (16 MiB of build log in
//! 64 KiB chunks, 10 to 1,000 secrets, next to a per-line replace); the
//! figures are in BENCHMARKS.md.
//!
//! # Limits
//!
//! - A value registered at runtime ([`Redactor::add`]) is masked in the
//!   bytes still held back and in everything after; bytes already released
//!   are not revisited. So a job must register a value through a channel
//!   other than its output (a file or descriptor the engine reads), and the
//!   engine must call `add` (or [`Redactor::set_patterns`] on every stream
//!   of the job) before it pushes any output read after the registration;
//!   a registration written to the output stream itself would be released
//!   before it is understood.
//! - Encodings are matched as written by the encoders above; a secret
//!   encoded some other way (line-wrapped base64, mixed-case hex, an
//!   encryption) is not recognised.
//! - Secret bytes are zeroed when the [`Secret`]s, variants and held-back
//!   buffers are dropped; the automaton's tables, which encode the patterns
//!   too, are freed without being zeroed.
#![deny(missing_docs)]
// Tests may unwrap: a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod filter;
mod patterns;
mod scan;
mod secret;
mod stream;
pub mod variants;

pub use error::RedactError;
pub use patterns::Patterns;
pub use secret::{check, Secret};
pub use stream::Redactor;
pub use variants::{variants, Form, Variant};

/// What every run of masked bytes is replaced with.
pub const MASK: &[u8] = b"***";

/// Shortest value the redactor masks, in bytes. Shorter values are refused:
/// masking them would hide ordinary output (and they are guessable).
pub const MIN_SECRET_LEN: usize = 6;

/// Longest value the redactor masks, in bytes (16 KiB, four times a PEM
/// RSA-4096 private key). The redactor holds back up to the length of a
/// secret's longest form, so this bounds what it holds back.
pub const MAX_SECRET_LEN: usize = 16 * 1024;

#[cfg(test)]
mod tests;
