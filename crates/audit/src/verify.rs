//! The verifier: re-reads the whole log, recomputes the tree, checks every
//! checkpoint and names the first bad entry.
//!
//! # What is checked
//!
//! Entries are streamed (memory stays O(log n) plus the checkpoints). For
//! every entry: it is a JSON object with a string `kind`, a `time`, an
//! `index` equal to its position and a `prev` equal to the previous
//! entry's leaf hash. For every checkpoint (in `checkpoints.jsonl`, and any
//! external ones, e.g. a witness's copy): its note is signed by the given
//! verifier key, its origin is the key's name, its size is at most the
//! number of entries, its root equals the recomputed root at that size,
//! and its `last-leaf` line equals the leaf hash of entry `size - 1`.
//! Checkpoint sizes in the file must not decrease. Every entry must be
//! covered by a validly signed checkpoint.
//!
//! # The first bad index
//!
//! The first bad index is the lowest index not proven good: the lowest
//! index at which the log stops being the sequence its signer committed
//! to. Each entry's `prev` commits to the previous entry and each
//! checkpoint's root and `last-leaf` line commit to the entries below its
//! size, so a change anywhere contradicts a commitment next to it, and the
//! verifier reads the contradiction back to the entry that caused it:
//!
//! | change | first bad index | reason |
//! | --- | --- | --- |
//! | entry `i` edited (not its `prev`) | `i` | [`BadReason::Altered`]: entry `i+1` records another hash for it; or [`BadReason::AlteredLast`] if a checkpoint ends at `i` |
//! | entry `i`'s `prev` edited | `i` | [`BadReason::WrongPrev`] |
//! | entry `i`'s `index` edited | `i` | [`BadReason::WrongIndex`] |
//! | entry `i` no longer JSON / fields missing | `i` | [`BadReason::Malformed`] |
//! | entry `i` deleted | `i` | [`BadReason::Missing`] |
//! | entries `i` and `i+1` swapped | `i` | [`BadReason::Missing`] (the entry at `i` is `i+1`) |
//! | an entry inserted at `i` | `i` | [`BadReason::Inserted`] |
//! | log cut to `n` entries below a checkpoint's size | `n` | [`BadReason::Truncated`] |
//! | entries from `m` on not covered by a valid checkpoint (unsigned, or signed by another key) | `m` (0 for a whole forged log) | [`BadReason::Unsigned`] |
//! | a root does not match but no entry-level check explains it | lowest index above the last matching checkpoint | [`BadReason::RootMismatch`] |
//!
//! Without the `last-leaf` line, an edit of the last entry below a
//! checkpoint would only show as a root mismatch, which cannot say which
//! of the entries since the previous checkpoint changed; with it, that
//! entry is named like any other. An entry whose `prev` does not match
//! could itself have been edited, or its predecessor could have: the
//! verifier looks one entry further, because an edited `prev` also changes
//! the entry's own hash, which its successor then contradicts.
//!
//! Everything below [`Report::verified_size`] is proven by a signed root;
//! the naming above is exact for any single change (the tests make each
//! one), and for several changes the lowest is named. A log cut back to an
//! earlier checkpoint together with its checkpoints file is a valid older
//! log; only a checkpoint kept elsewhere (a witness copy, passed with
//! [`verify_with_witnesses`]) exposes it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::entry::{self, Fields, NO_PREV};
use crate::lines::LineReader;
use crate::log::{CheckpointLine, CHECKPOINTS_FILE, ENTRIES_FILE};
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::note::NoteVerifier;

/// The verifier could not read the log (problems with its contents are
/// reported in the [`Report`], not as errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file of the log could not be read.
    #[error("cannot read audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Why an entry is the first bad one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BadReason {
    /// The line is not a log entry (not JSON, a field missing or of the
    /// wrong type, or no newline at the end).
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// The entry's `index` field is not its position.
    WrongIndex {
        /// The `index` it has.
        found: u64,
    },
    /// The entry's `prev` is not the previous entry's leaf hash, and its
    /// own hash is not what the next entry (or checkpoint) recorded: the
    /// entry was changed.
    WrongPrev,
    /// The entry's leaf hash is not the one the next entry's `prev`
    /// recorded: the entry was changed after it was logged.
    Altered,
    /// The entry's leaf hash is not the `last-leaf` a checkpoint signed.
    AlteredLast {
        /// That checkpoint's size.
        checkpoint_size: u64,
    },
    /// The entry at this position is a later one: entries are missing here.
    Missing {
        /// The `index` of the entry found at this position.
        found: u64,
    },
    /// The entry at this position is not part of the signed log: the next
    /// entry recorded another predecessor and an earlier index.
    Inserted,
    /// The entries from here up to a checkpoint's size do not hash to its
    /// signed root, and no entry-level check says which one changed.
    RootMismatch {
        /// That checkpoint's size.
        checkpoint_size: u64,
    },
    /// The log ends here, but a valid checkpoint signs more entries.
    Truncated {
        /// That checkpoint's size.
        checkpoint_size: u64,
    },
    /// No validly signed checkpoint covers this entry and the ones after.
    Unsigned,
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReason::Malformed { detail } => write!(f, "not a valid entry: {detail}"),
            BadReason::WrongIndex { found } => write!(f, "its index field says {found}"),
            BadReason::WrongPrev => f.write_str(
                "its prev does not match the previous entry, and the next entry recorded another hash for it",
            ),
            BadReason::Altered => {
                f.write_str("it was changed: the next entry recorded another hash for it")
            }
            BadReason::AlteredLast { checkpoint_size } => write!(
                f,
                "it was changed: the checkpoint of size {checkpoint_size} signed another hash for it"
            ),
            BadReason::Missing { found } => {
                write!(f, "entries are missing: the entry here has index {found}")
            }
            BadReason::Inserted => f.write_str(
                "it was inserted: the next entry recorded another predecessor",
            ),
            BadReason::RootMismatch { checkpoint_size } => write!(
                f,
                "the entries from here on do not match the signed root of the checkpoint of size {checkpoint_size}"
            ),
            BadReason::Truncated { checkpoint_size } => write!(
                f,
                "the log ends here but a checkpoint signs {checkpoint_size} entries"
            ),
            BadReason::Unsigned => {
                f.write_str("no validly signed checkpoint covers it or any later entry")
            }
        }
    }
}

/// The first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    /// Its index.
    pub index: u64,
    /// Why.
    #[serde(flatten)]
    pub reason: BadReason,
}

/// Where a checkpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A line of `checkpoints.jsonl`.
    Log,
    /// A checkpoint passed by the caller (a witness copy).
    External,
}

/// A checkpoint that is not valid or does not match the entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    /// Where it is.
    pub source: Source,
    /// Its line number in `checkpoints.jsonl` (from 1), or its position in
    /// the external list (from 1).
    pub number: u64,
    /// Its size, if it could be read.
    pub size: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Lines in `entries.jsonl`.
    pub entries: u64,
    /// Validly signed checkpoints.
    pub checkpoints: u64,
    /// The largest size of a validly signed checkpoint whose root and
    /// last leaf match: every entry below it is proven.
    pub verified_size: u64,
    /// The recomputed root over every entry, hex.
    pub root: String,
    /// The first bad entry, if any.
    pub first_bad: Option<BadEntry>,
    /// Every checkpoint problem.
    pub problems: Vec<CheckpointProblem>,
}

impl Report {
    /// Whether the log verified: no bad entry and no checkpoint problem.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none() && self.problems.is_empty()
    }
}

/// Verifies the log in `dir` against `verifier`.
pub fn verify(dir: &Path, verifier: &NoteVerifier) -> Result<Report, VerifyError> {
    verify_with_witnesses(dir, verifier, &[])
}

/// Verifies the log in `dir` against `verifier`, also checking the signed
/// checkpoint notes in `witnesses` (copies kept outside the log) like the
/// log's own.
pub fn verify_with_witnesses(
    dir: &Path,
    verifier: &NoteVerifier,
    witnesses: &[String],
) -> Result<Report, VerifyError> {
    let mut problems = Vec::new();
    let mut checkpoints = load_checkpoints(dir, verifier, &mut problems)?;
    for (i, note) in witnesses.iter().enumerate() {
        let number = u64::try_from(i + 1).unwrap_or(u64::MAX);
        match open_checkpoint(note, verifier) {
            Ok(cp) => checkpoints.push(Known {
                source: Source::External,
                number,
                cp,
            }),
            Err(problem) => problems.push(CheckpointProblem {
                source: Source::External,
                number,
                size: None,
                problem,
            }),
        }
    }
    let valid = u64::try_from(checkpoints.len()).unwrap_or(u64::MAX);
    checkpoints.sort_by_key(|k| k.cp.size);
    let mut stream = Stream {
        checkpoints: &checkpoints,
        next_cp: 0,
        frontier: Frontier::new(),
        window: VecDeque::with_capacity(4),
        base: 0,
        verified: 0,
        root_fail: None,
        local: None,
        problems,
    };
    stream.check_checkpoints(NO_PREV);
    let path = dir.join(ENTRIES_FILE);
    let io_err = |source| VerifyError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(e)),
    };
    // This thread reads blocks of lines and hashes and parses them (split
    // across the CPUs); a second thread builds the tree and runs the
    // checks in order, overlapping with the next block.
    let stream = std::thread::scope(|s| -> Result<Stream<'_>, VerifyError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<LineFacts>>(2);
        let consumer = s.spawn(move || {
            for batch in rx {
                for (hash, fields) in batch {
                    stream.entry(hash, fields);
                }
            }
            stream
        });
        if let Some(file) = file {
            let mut reader = LineReader::new(file, 0);
            let mut block = Block::default();
            while let Some(line) = reader.next_line().map_err(io_err)? {
                block.push(line.bytes, line.terminated);
                if block.bytes.len() >= BLOCK_BYTES && tx.send(block.compute()).is_err() {
                    break;
                }
            }
            // A send fails only if the consumer panicked; join says so.
            let _ = tx.send(block.compute());
        }
        drop(tx);
        Ok(consumer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(stream.finish(valid))
}

/// Lines are hashed and parsed in blocks of about this many bytes, split
/// across the CPUs; the tree and the checks then run in order.
const BLOCK_BYTES: usize = 2 << 20;

/// A line's leaf hash and log fields.
type LineFacts = (Hash, Result<Fields, String>);

/// A block of lines, copied out of the reader.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    /// (end offset in `bytes`, terminated) of each line.
    lines: Vec<(usize, bool)>,
}

impl Block {
    fn push(&mut self, line: &[u8], terminated: bool) {
        self.bytes.extend_from_slice(line);
        self.lines.push((self.bytes.len(), terminated));
    }

    /// Hashes and parses the block's lines in parallel and empties the
    /// block.
    fn compute(&mut self) -> Vec<LineFacts> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let per = self.lines.len().div_ceil(threads).max(1);
        let bytes = &self.bytes;
        let work = |from: usize, lines: &[(usize, bool)]| -> Vec<LineFacts> {
            let mut start = from;
            lines
                .iter()
                .map(|&(end, terminated)| {
                    let line = &bytes[start..end];
                    start = end;
                    (leaf_hash(line), parse_line(line, terminated))
                })
                .collect()
        };
        let results: Vec<Vec<LineFacts>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .lines
                .chunks(per)
                .enumerate()
                .map(|(i, chunk)| {
                    let from = if i == 0 { 0 } else { self.lines[i * per - 1].0 };
                    s.spawn(move || work(from, chunk))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        self.bytes.clear();
        self.lines.clear();
        results.into_iter().flatten().collect()
    }
}

fn parse_line(line: &[u8], terminated: bool) -> Result<Fields, String> {
    if terminated {
        entry::parse_fields(line)
    } else {
        Err("torn line (no newline at the end)".to_owned())
    }
}

/// A validly signed checkpoint.
struct Known {
    source: Source,
    number: u64,
    cp: Checkpoint,
}

/// Opens a checkpoint note: signature, origin, body.
fn open_checkpoint(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, String> {
    let opened =
        crate::note::open(note, std::slice::from_ref(verifier)).map_err(|e| e.to_string())?;
    let cp = Checkpoint::parse(&opened.text).map_err(|e| e.to_string())?;
    if cp.origin != verifier.name() {
        return Err(format!(
            "origin {:?} is not the key's name {:?}",
            cp.origin,
            verifier.name()
        ));
    }
    Ok(cp)
}

fn load_checkpoints(
    dir: &Path,
    verifier: &NoteVerifier,
    problems: &mut Vec<CheckpointProblem>,
) -> Result<Vec<Known>, VerifyError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let io_err = |source| VerifyError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut reader = LineReader::new(file, 0);
    let mut out: Vec<Known> = Vec::new();
    let mut number = 0;
    while let Some(line) = reader.next_line().map_err(io_err)? {
        number += 1;
        let mut problem = |size, problem: String| {
            problems.push(CheckpointProblem {
                source: Source::Log,
                number,
                size,
                problem,
            });
        };
        if !line.terminated {
            problem(None, "torn line (no newline at the end)".to_owned());
            continue;
        }
        let note = match serde_json::from_slice::<CheckpointLine>(line.bytes) {
            Ok(parsed) => parsed.note,
            Err(e) => {
                problem(None, format!("not a checkpoint line: {e}"));
                continue;
            }
        };
        match open_checkpoint(&note, verifier) {
            Ok(cp) => {
                if let Some(prev) = out.last().filter(|k| k.cp.size > cp.size) {
                    problem(
                        Some(cp.size),
                        format!(
                            "size {} is smaller than the previous checkpoint's {}",
                            cp.size, prev.cp.size
                        ),
                    );
                }
                out.push(Known {
                    source: Source::Log,
                    number,
                    cp,
                });
            }
            Err(e) => problem(None, e),
        }
    }
    Ok(out)
}

/// What the verifier knows about one entry while it waits to decide.
struct Facts {
    hash: Hash,
    /// The log fields, or why the line is not an entry.
    fields: Result<Fields, String>,
    /// A checkpoint's `last-leaf` contradicts this entry's hash.
    ext_bad: Option<u64>,
}

struct Stream<'a> {
    checkpoints: &'a [Known],
    next_cp: usize,
    frontier: Frontier,
    /// Entries `base..` not yet decided (at most three).
    window: VecDeque<Facts>,
    base: u64,
    verified: u64,
    /// (lowest unproven index, checkpoint size) of the first root mismatch.
    root_fail: Option<(u64, u64)>,
    local: Option<BadEntry>,
    problems: Vec<CheckpointProblem>,
}

impl Stream<'_> {
    fn entry(&mut self, hash: Hash, fields: Result<Fields, String>) {
        self.frontier.push(hash);
        if self.local.is_some() {
            self.check_checkpoints(hash);
            return;
        }
        self.window.push_back(Facts {
            hash,
            fields,
            ext_bad: None,
        });
        self.check_checkpoints(hash);
        while self.local.is_none() && self.window.len() >= 3 {
            self.decide();
        }
    }

    /// Checks the checkpoints whose size is the number of entries read.
    fn check_checkpoints(&mut self, last: Hash) {
        let size = self.frontier.size();
        while let Some(known) = self.checkpoints.get(self.next_cp) {
            if known.cp.size != size {
                break;
            }
            self.next_cp += 1;
            let root_ok = self.frontier.root() == known.cp.root;
            let ext_ok = match (known.cp.last_leaf(), size) {
                (None, _) => true,
                (Some(_), 0) => false,
                (Some(ext), _) => ext == last,
            };
            let mut problem = |text: String| {
                self.problems.push(CheckpointProblem {
                    source: known.source,
                    number: known.number,
                    size: Some(size),
                    problem: text,
                });
            };
            if !root_ok {
                problem("root does not match the entries".to_owned());
                self.root_fail.get_or_insert((self.verified, size));
            }
            if !ext_ok {
                problem("last-leaf does not match the last entry".to_owned());
                if let Some(facts) = self.window.back_mut() {
                    facts.ext_bad = Some(size);
                }
            }
            if root_ok && ext_ok && known.cp.size > 0 {
                self.verified = self.verified.max(size);
            }
        }
    }

    /// Decides about the entry at `base`, given what follows it.
    fn decide(&mut self) {
        let k = self.base;
        let verdict = {
            let a = &self.window[0];
            let b = self.window.get(1);
            let c = self.window.get(2);
            judge(k, a, b, c, self.verified)
        };
        self.window.pop_front();
        self.base += 1;
        if let Some(bad) = verdict {
            self.local = Some(bad);
            self.window.clear();
        }
    }

    fn finish(mut self, valid: u64) -> Report {
        while self.local.is_none() && !self.window.is_empty() {
            self.decide();
        }
        let n = self.frontier.size();
        let mut candidates: Vec<BadEntry> = self.local.iter().cloned().collect();
        if let Some((floor, size)) = self.root_fail {
            if self.local.as_ref().is_none_or(|b| b.index >= size) {
                candidates.push(BadEntry {
                    index: floor,
                    reason: BadReason::RootMismatch {
                        checkpoint_size: size,
                    },
                });
            }
        }
        for known in &self.checkpoints[self.next_cp..] {
            self.problems.push(CheckpointProblem {
                source: known.source,
                number: known.number,
                size: Some(known.cp.size),
                problem: format!("signs {} entries but the log has {n}", known.cp.size),
            });
        }
        if let Some(known) = self.checkpoints.get(self.next_cp) {
            candidates.push(BadEntry {
                index: n,
                reason: BadReason::Truncated {
                    checkpoint_size: known.cp.size,
                },
            });
        }
        let covered = self.checkpoints.last().map_or(0, |k| k.cp.size);
        if covered < n {
            candidates.push(BadEntry {
                index: covered,
                reason: BadReason::Unsigned,
            });
        }
        let mut first_bad: Option<BadEntry> = None;
        for c in candidates {
            if first_bad.as_ref().is_none_or(|f| c.index < f.index) {
                first_bad = Some(c);
            }
        }
        Report {
            entries: n,
            checkpoints: valid,
            verified_size: self.verified,
            root: crate::hex::encode(&self.frontier.root()),
            first_bad,
            problems: self.problems,
        }
    }
}

/// Whether `next` (a parsed entry) records another hash for `this`.
fn contradicts(this: &Facts, next: Option<&Facts>) -> bool {
    next.and_then(|n| n.fields.as_ref().ok())
        .is_some_and(|f| f.prev != this.hash)
}

/// The verdict on entry `k` (`a`), given the two entries after it.
fn judge(k: u64, a: &Facts, b: Option<&Facts>, c: Option<&Facts>, floor: u64) -> Option<BadEntry> {
    let bad = |index, reason| Some(BadEntry { index, reason });
    let fields = match &a.fields {
        Ok(fields) => fields,
        Err(detail) => {
            return bad(
                k,
                BadReason::Malformed {
                    detail: detail.clone(),
                },
            )
        }
    };
    if fields.index != k {
        return bad(
            k,
            BadReason::WrongIndex {
                found: fields.index,
            },
        );
    }
    if k == 0 && fields.prev != NO_PREV {
        return bad(0, BadReason::WrongPrev);
    }
    if contradicts(a, b) {
        let (Some(b), Some(Ok(next))) = (b, b.map(|b| b.fields.as_ref())) else {
            return None;
        };
        if next.index > k + 1 {
            return bad(k + 1, BadReason::Missing { found: next.index });
        }
        if next.index < k + 1 {
            return bad(next.index.max(floor.min(k)), BadReason::Inserted);
        }
        if contradicts(b, c) || b.ext_bad.is_some() {
            return bad(k + 1, BadReason::WrongPrev);
        }
        return bad(k, BadReason::Altered);
    }
    if let Some(checkpoint_size) = a.ext_bad {
        return bad(k, BadReason::AlteredLast { checkpoint_size });
    }
    None
}
