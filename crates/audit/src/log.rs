//! The append-only audit log on disk, shared by threads and processes.
//!
//! # Files
//!
//! ```text
//! <dir>/                 0700
//!   entries.jsonl        0600  one entry per line (see crate::entry)
//!   checkpoints.jsonl    0600  one signed checkpoint per line:
//!                              {"note":"<note text>","resume":{...}}
//!   lock                 0600  flock(2) taken around every batch
//! ```
//!
//! Both data files only ever grow, except that a torn tail (the remains of
//! a crashed write) is cut off. Each checkpoint line holds one C2SP signed
//! note (a [`Checkpoint`] body and an Ed25519 signature line) as a JSON
//! string, so notes, which contain blank lines, need no other framing and a
//! torn checkpoint line is as easy to spot as a torn entry.
//!
//! # Opening without reading the whole log
//!
//! Each checkpoint line also carries `resume`: the byte offset in
//! `entries.jsonl` where the signed entries end and the tree's frontier
//! there (one hash per set bit of the size). [`AuditLog::open`] reads only
//! the last checkpoint line and the entry line before that offset, and
//! trusts the cache only if it agrees with the signed note: the signature
//! verifies, the frontier's root is the signed root, and the entry ending
//! at the offset hashes to the note's `last-leaf`. Otherwise, or if
//! anything is missing, it reads the whole log as before. Either way, what
//! follows the checkpoint is read and checked. `resume` is a cache, not
//! part of what is signed; the verifier ignores it.
//!
//! # Group commit
//!
//! [`AuditLog::append`] returns after the entries are written and
//! `fdatasync`ed. Concurrent callers share that work, leader/follower
//! style: each caller queues its batch; a caller that finds no leader
//! becomes one, takes every queued batch, writes them with one `write` and
//! one `fdatasync`, posts each caller's index range and wakes them. Callers
//! that queue while a leader is syncing are carried by the next leader, so
//! the more callers wait, the bigger each batch. Callers check and
//! serialize their entries before queuing, on their own threads, so the
//! leader only adds the log's fields, hashes and writes. No thread is
//! spawned.
//!
//! # Several processes
//!
//! Each batch is written under an exclusive `flock` on `lock`. Having the
//! lock, a process first catches up on what other processes appended since
//! its last batch: it reads from its cached byte offset, hashes the new
//! lines into its Merkle frontier and takes their last leaf hash as the
//! next `prev`. Catching up costs one `fstat` when nobody else wrote.
//!
//! # Torn tails and recovery
//!
//! Under the lock (at open, and whenever a batch catches up), lines after
//! the last checkpoint's size are checked: the first one that has no
//! newline, is not a JSON entry, or has the wrong `index` starts a torn
//! tail, which is cut off (`ftruncate` + `fsync`). A checkpoints file whose
//! last line is unterminated or not JSON is cut the same way. When that
//! happens the log itself appends an `audit_recovered` entry
//! (`dropped_bytes`, `dropped_checkpoint_bytes`, `size`) and, at open, a
//! checkpoint; [`AuditLog::open`] also returns the [`Recovery`] so that
//! the caller can report it. Entries covered by a checkpoint are never cut:
//! if fewer are left than a checkpoint signs, the log is damaged and
//! [`AuditLog::open`] refuses it ([`AuditError::Damaged`]).
//!
//! # Checkpoints
//!
//! A checkpoint is written every [`Options::checkpoint_every`] entries
//! (by the batch that crosses the mark), at open if entries are not yet
//! covered, and whenever [`AuditLog::checkpoint`] is called — callers do so
//! at the end of every run or command, so that the log at rest always ends
//! with a checkpoint. A failed automatic checkpoint does not fail the
//! batch (its entries are durable); the next batch tries again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::{Map, Value};

use crate::checkpoint::Checkpoint;
use crate::encode::Encoded;
use crate::entry::{self, NO_PREV};
use crate::key::AuditKey;
use crate::lines::LineReader;
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::note::{NoteError, NoteVerifier};
use durable::Timestamp;

/// The entries file inside the log directory.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The checkpoints file inside the log directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// The lock file inside the log directory.
pub const LOCK_FILE: &str = "lock";
/// The kind of the entry the log appends after cutting a torn tail.
pub const RECOVERED_KIND: &str = "audit_recovered";
/// A write buffer up to this size is kept for the next batch.
const KEEP_BUF: usize = 4 << 20;
/// Default of [`Options::checkpoint_every`].
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// Something went wrong appending to or opening the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file of the log could not be created, read, written or synced.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// An entry handed to `append` cannot be logged.
    #[error("audit entry {position} of the batch: {reason}")]
    InvalidEntry {
        /// Its position in the batch.
        position: usize,
        /// Why.
        reason: String,
    },
    /// A file of the log is shorter than what this process already read:
    /// someone removed entries.
    #[error("audit log {path} shrank from {expected} to {found} bytes while open; run `airlock audit verify`")]
    Shrank {
        /// The file.
        path: PathBuf,
        /// The size already read.
        expected: u64,
        /// The size now.
        found: u64,
    },
    /// The log is damaged in a way appending cannot repair.
    #[error("audit log {path} is damaged: {reason}; run `airlock audit verify`")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint could not be signed.
    #[error("cannot sign audit checkpoint: {0}")]
    Sign(#[from] NoteError),
    /// A thread panicked while holding the log's state.
    #[error("audit log state is poisoned by a panicked thread")]
    Poisoned,
    /// The batch this call was part of failed (the error is shared by
    /// every caller in the batch).
    #[error(transparent)]
    Batch(Arc<AuditError>),
}

/// Tunables of an [`AuditLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Sign a checkpoint whenever this many entries were appended since the
    /// last one (0: only on explicit [`AuditLog::checkpoint`] calls).
    pub checkpoint_every: u64,
    /// `fdatasync` every batch before [`AuditLog::append`] returns (the
    /// default). Without it, a batch is written but made durable only by
    /// the next checkpoint (which always syncs the entries it signs first):
    /// for a writer that checkpoints when its work ends and would rather
    /// not wait on the disk for each batch in between. A power loss can
    /// then lose the batches since the last checkpoint, which the next
    /// open detects; a crash of the process loses nothing.
    pub sync_batches: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            sync_batches: true,
        }
    }
}

/// A torn tail that opening (or catching up) cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of `entries.jsonl`.
    pub dropped_bytes: u64,
    /// Bytes cut from the end of `checkpoints.jsonl`.
    pub dropped_checkpoint_bytes: u64,
    /// Entries left in the log after the cut.
    pub size: u64,
}

/// A checkpoint and the signed note that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, as stored in `checkpoints.jsonl`.
    pub note: String,
}

/// The tamper-evident audit log. Cheap to clone; every clone appends to
/// the same log through the same group commit, so it can be handed to
/// background threads.
#[derive(Debug, Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    key: AuditKey,
    options: Options,
    /// The flock target. Threads of this process are serialized by
    /// `state`; processes by the flock.
    lock: File,
    state: Mutex<State>,
    queue: Mutex<Queue>,
    /// Signalled when a commit has posted its outcomes.
    ready: Condvar,
}

/// What this process knows about the files, as of its last batch.
#[derive(Debug)]
struct State {
    entries: File,
    checkpoints: File,
    /// Bytes of `entries.jsonl` read (always at a line boundary).
    offset: u64,
    /// Bytes of `checkpoints.jsonl` read.
    cp_offset: u64,
    /// Entries in the log.
    size: u64,
    frontier: Frontier,
    /// Leaf hash of the last entry ([`NO_PREV`] when empty).
    last: Hash,
    /// Size of the last checkpoint.
    checkpointed: u64,
    /// The last checkpoint line's note.
    last_note: Option<String>,
    /// The write buffer, kept between batches.
    buf: Vec<u8>,
}

/// Entries an `append` call queued (already serialized), keyed by a
/// ticket.
type Pending = (u64, Encoded);
/// The outcome of a queued batch.
type Outcome = Result<Range<u64>, Arc<AuditError>>;

#[derive(Debug, Default)]
struct Queue {
    next_id: u64,
    pending: Vec<Pending>,
    done: HashMap<u64, Outcome>,
    leading: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, AuditError> {
    mutex.lock().map_err(|_| AuditError::Poisoned)
}

/// An exclusive flock, released on drop.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn acquire(file: &'a File, path: &Path) -> Result<Flock<'a>, AuditError> {
        file.lock().map_err(|source| AuditError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // Closing the file or exiting releases it too.
        let _ = self.0.unlock();
    }
}

/// `Read` over a file from a position, with positional reads (no shared
/// seek offset).
pub(crate) struct ReadAt<'a> {
    pub(crate) file: &'a File,
    pub(crate) pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += u64::try_from(n).unwrap_or(0);
        Ok(n)
    }
}

/// The note of one `checkpoints.jsonl` line.
#[derive(serde::Deserialize, serde::Serialize)]
pub(crate) struct CheckpointLine {
    pub(crate) note: String,
    /// Where to resume appending (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resume: Option<Resume>,
}

/// The state after the entries a checkpoint signs: a cache for open.
#[derive(serde::Deserialize, serde::Serialize)]
pub(crate) struct Resume {
    /// Bytes of `entries.jsonl` holding the signed entries.
    pub(crate) offset: u64,
    /// The frontier's nodes, hex, largest subtree first.
    pub(crate) frontier: Vec<String>,
}

/// The last complete line of `file` (`len` bytes long), skipping a torn
/// tail after it.
fn line_before_end(file: &File, len: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    let from = len.saturating_sub(TAIL_WINDOW);
    let mut buf = vec![0u8; usize::try_from(len - from).unwrap_or(0)];
    file.read_exact_at(&mut buf, from)?;
    match memchr::memrchr(b'\n', &buf) {
        Some(i) => line_before(file, from + u64::try_from(i).unwrap_or(0) + 1),
        None => Ok(None),
    }
}

/// The most bytes read back from the end of a file to find its last line.
const TAIL_WINDOW: u64 = 1 << 20;

/// The last complete (newline-terminated) line of `file` before byte
/// `end`, and where it starts; `None` if there is none within
/// [`TAIL_WINDOW`] bytes.
fn line_before(file: &File, end: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    let from = end.saturating_sub(TAIL_WINDOW);
    let mut buf = vec![0u8; usize::try_from(end - from).unwrap_or(0)];
    file.read_exact_at(&mut buf, from)?;
    if buf.last() != Some(&b'\n') {
        return Ok(None);
    }
    buf.pop();
    let start = match memchr::memrchr(b'\n', &buf) {
        Some(i) => i + 1,
        None if from == 0 => 0,
        None => return Ok(None),
    };
    Ok(Some((
        from + u64::try_from(start).unwrap_or(0),
        buf.split_off(start),
    )))
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, signing checkpoints
    /// with `key`, with default [`Options`].
    pub fn open(dir: &Path, key: AuditKey) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        AuditLog::open_with(dir, key, Options::default())
    }

    /// Opens (creating if needed) the log in `dir`. A torn tail is cut
    /// off, an `audit_recovered` entry appended and the [`Recovery`]
    /// returned; entries not yet covered by a checkpoint get one.
    pub fn open_with(
        dir: &Path,
        key: AuditKey,
        options: Options,
    ) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        durable::fs::create_private_dir_all(dir).map_err(io_err(dir))?;
        let open = |name: &str| {
            let path = dir.join(name);
            durable::fs::open_private_append(&path).map_err(io_err(&path))
        };
        let (lock_file, c1) = open(LOCK_FILE)?;
        let (entries, c2) = open(ENTRIES_FILE)?;
        let (checkpoints, c3) = open(CHECKPOINTS_FILE)?;
        if c1 || c2 || c3 {
            durable::fs::sync_dir(dir).map_err(io_err(dir))?;
        }
        let log = AuditLog {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                key,
                options,
                lock: lock_file,
                state: Mutex::new(State {
                    entries,
                    checkpoints,
                    offset: 0,
                    cp_offset: 0,
                    size: 0,
                    frontier: Frontier::new(),
                    last: NO_PREV,
                    checkpointed: 0,
                    last_note: None,
                    buf: Vec::new(),
                }),
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
            }),
        };
        let recovery = log.shared.open_locked()?;
        Ok((log, recovery))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The verifier of the log's checkpoints.
    pub fn verifier(&self) -> NoteVerifier {
        self.shared.key.verifier()
    }

    /// Entries in the log as of this process's last batch.
    pub fn size(&self) -> Result<u64, AuditError> {
        Ok(lock(&self.shared.state)?.size)
    }

    /// Appends one entry; see [`AuditLog::append`].
    pub fn append_one(&self, entry: Value) -> Result<u64, AuditError> {
        self.append(vec![entry]).map(|range| range.start)
    }

    /// Appends `entries` and returns their indexes once they are durable.
    ///
    /// Each entry must be a JSON object with a non-empty string `kind`,
    /// without the fields the log sets (`index`, `time`, `prev`) and
    /// without floating-point numbers. An invalid entry fails the call
    /// before anything is written. The entries of one call get consecutive
    /// indexes.
    pub fn append(&self, entries: Vec<Value>) -> Result<Range<u64>, AuditError> {
        // Checking and serializing happen here, on the caller's thread and
        // outside the locks, while another batch may be syncing.
        let mut encoded = Encoded::with_capacity(entries.len());
        for (position, value) in entries.into_iter().enumerate() {
            let map = validate(position, value)?;
            encoded.push(&map).map_err(|e| AuditError::InvalidEntry {
                position,
                reason: e.to_string(),
            })?;
        }
        let sh = &self.shared;
        if encoded.len() == 0 {
            let size = lock(&sh.state)?.size;
            return Ok(size..size);
        }
        let mut queue = lock(&sh.queue)?;
        let id = queue.next_id;
        queue.next_id += 1;
        queue.pending.push((id, encoded));
        loop {
            if let Some(outcome) = queue.done.remove(&id) {
                return outcome.map_err(AuditError::Batch);
            }
            if !queue.leading {
                queue.leading = true;
                let batch = std::mem::take(&mut queue.pending);
                drop(queue);
                let outcomes = sh.commit(batch);
                queue = lock(&sh.queue)?;
                queue.leading = false;
                queue.done.extend(outcomes);
                sh.ready.notify_all();
                continue;
            }
            queue = sh.ready.wait(queue).map_err(|_| AuditError::Poisoned)?;
        }
    }

    /// Signs a checkpoint of the log as it is now (after catching up on
    /// other processes' entries) and appends it durably. If the last
    /// checkpoint already covers every entry it is returned instead.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let sh = &self.shared;
        let mut st = lock(&sh.state)?;
        let _flock = Flock::acquire(&sh.lock, &sh.dir.join(LOCK_FILE))?;
        if let Some(rec) = sh.catch_up(&mut st)? {
            sh.write_batch(&mut st, Some(rec), &[])?;
        }
        if st.size == st.checkpointed {
            if let Some(note) = &st.last_note {
                let parsed = crate::note::parse(note)
                    .ok()
                    .and_then(|(text, _)| Checkpoint::parse(&text).ok());
                if let Some(checkpoint) = parsed.filter(|c| c.origin == sh.key.name()) {
                    return Ok(SignedCheckpoint {
                        checkpoint,
                        note: note.clone(),
                    });
                }
            }
        }
        sh.write_checkpoint(&mut st)
    }
}

/// Checks an entry handed to `append` and returns its object.
fn validate(position: usize, value: Value) -> Result<Map<String, Value>, AuditError> {
    let invalid = |reason: &str| AuditError::InvalidEntry {
        position,
        reason: reason.to_owned(),
    };
    let Value::Object(map) = value else {
        return Err(invalid("not a JSON object"));
    };
    match map.get(entry::KIND) {
        Some(Value::String(kind)) if !kind.is_empty() => {}
        _ => return Err(invalid("needs a non-empty string \"kind\"")),
    }
    for field in [entry::INDEX, entry::TIME, entry::PREV] {
        if map.contains_key(field) {
            return Err(invalid(&format!("{field:?} is set by the log")));
        }
    }
    fn has_float(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_float),
            Value::Object(map) => map.values().any(has_float),
            _ => false,
        }
    }
    if map.values().any(has_float) {
        return Err(invalid(
            "floating-point numbers are not allowed (they have no canonical form)",
        ));
    }
    Ok(map)
}

impl Shared {
    /// The part of opening done under the flock: catch up from the start,
    /// recover, and cover every entry with a checkpoint.
    fn open_locked(&self) -> Result<Option<Recovery>, AuditError> {
        let mut st = lock(&self.state)?;
        let _flock = Flock::acquire(&self.lock, &self.path(LOCK_FILE))?;
        if st.offset == 0 && st.cp_offset == 0 {
            // Any failure leaves the state untouched: read everything.
            let _ = self.resume(&mut st);
        }
        let recovery = self.catch_up(&mut st)?;
        if let Some(rec) = recovery {
            self.write_batch(&mut st, Some(rec), &[])?;
        }
        if st.size > st.checkpointed || st.last_note.is_none() {
            self.write_checkpoint(&mut st)?;
        }
        Ok(recovery)
    }

    /// Takes the state after the last checkpoint from its `resume` cache,
    /// if the cache agrees with the signed note and the entries file (see
    /// the module documentation). Returns whether it did.
    fn resume(&self, st: &mut State) -> io::Result<bool> {
        let cp_len = st.checkpoints.metadata()?.len();
        let Some((cp_start, line)) = line_before_end(&st.checkpoints, cp_len)? else {
            return Ok(false);
        };
        let Ok(CheckpointLine {
            note,
            resume: Some(resume),
        }) = serde_json::from_slice::<CheckpointLine>(&line)
        else {
            return Ok(false);
        };
        let verifier = self.key.verifier();
        let Ok(opened) = crate::note::open(&note, std::slice::from_ref(&verifier)) else {
            return Ok(false);
        };
        let Ok(cp) = Checkpoint::parse(&opened.text) else {
            return Ok(false);
        };
        let nodes: Option<Vec<Hash>> = resume
            .frontier
            .iter()
            .map(|h| crate::hex::decode_array::<32>(h.as_bytes()))
            .collect();
        let Some(frontier) = nodes.and_then(|n| Frontier::from_parts(cp.size, n)) else {
            return Ok(false);
        };
        if frontier.root() != cp.root {
            return Ok(false);
        }
        let last = match cp.last_leaf() {
            Some(last) => {
                let entries_len = st.entries.metadata()?.len();
                if resume.offset == 0 || resume.offset > entries_len {
                    return Ok(false);
                }
                let Some((_, entry)) = line_before(&st.entries, resume.offset)? else {
                    return Ok(false);
                };
                if leaf_hash(&entry) != last {
                    return Ok(false);
                }
                last
            }
            None if cp.size == 0 && resume.offset == 0 => NO_PREV,
            None => return Ok(false),
        };
        st.offset = resume.offset;
        st.size = cp.size;
        st.frontier = frontier;
        st.last = last;
        st.checkpointed = cp.size;
        st.last_note = Some(note);
        st.cp_offset = cp_start + u64::try_from(line.len()).unwrap_or(0) + 1;
        Ok(true)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn io_err(&self, name: &str) -> impl FnOnce(io::Error) -> AuditError {
        let path = self.path(name);
        move |source| AuditError::Io { path, source }
    }

    /// Writes one leader's batch; every ticket gets its range or the
    /// shared error.
    fn commit(&self, batch: Vec<Pending>) -> Vec<(u64, Outcome)> {
        let result = (|| -> Result<Vec<Range<u64>>, AuditError> {
            let mut st = lock(&self.state)?;
            let _flock = Flock::acquire(&self.lock, &self.path(LOCK_FILE))?;
            let recovery = self.catch_up(&mut st)?;
            let ranges = self.write_batch(&mut st, recovery, &batch)?;
            let every = self.options.checkpoint_every;
            if every > 0 && st.size - st.checkpointed >= every {
                // The entries are durable; a failed checkpoint is retried
                // by the next batch.
                let _ = self.write_checkpoint(&mut st);
            }
            Ok(ranges)
        })();
        match result {
            Ok(ranges) => batch
                .iter()
                .map(|(id, _)| *id)
                .zip(ranges.into_iter().map(Ok))
                .collect(),
            Err(e) => {
                let e = Arc::new(e);
                batch.iter().map(|(id, _)| (*id, Err(e.clone()))).collect()
            }
        }
    }

    /// Writes the recovery entry (if any) and the batch's entries, and
    /// syncs them; returns each pending call's index range.
    fn write_batch(
        &self,
        st: &mut State,
        recovery: Option<Recovery>,
        batch: &[Pending],
    ) -> Result<Vec<Range<u64>>, AuditError> {
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        let result = self
            .encode_batch(st, &mut buf, recovery, batch)
            .and_then(|ranges| self.write_entries(st, &buf).map(|()| ranges));
        // Keep the buffer for the next batch, unless a huge batch grew it.
        if buf.capacity() <= KEEP_BUF {
            st.buf = buf;
        }
        result
    }

    /// Encodes the recovery entry (if any) and the batch's entries into
    /// `buf`, advancing the frontier. On error the caller must not write.
    fn encode_batch(
        &self,
        st: &mut State,
        buf: &mut Vec<u8>,
        recovery: Option<Recovery>,
        batch: &[Pending],
    ) -> Result<Vec<Range<u64>>, AuditError> {
        let time = serde_json::to_vec(&Timestamp::now().to_string()).map_err(|e| {
            AuditError::InvalidEntry {
                position: 0,
                reason: e.to_string(),
            }
        })?;
        buf.reserve(batch.iter().map(|(_, e)| e.len() * 384).sum());
        if let Some(rec) = recovery {
            let mut map = Map::new();
            map.insert(entry::KIND.into(), RECOVERED_KIND.into());
            map.insert("dropped_bytes".into(), rec.dropped_bytes.into());
            map.insert(
                "dropped_checkpoint_bytes".into(),
                rec.dropped_checkpoint_bytes.into(),
            );
            map.insert("size".into(), rec.size.into());
            let mut encoded = Encoded::with_capacity(1);
            encoded.push(&map).map_err(|e| AuditError::InvalidEntry {
                position: 0,
                reason: e.to_string(),
            })?;
            encode_entry(st, buf, &encoded, 0, &time);
        }
        let mut ranges = Vec::with_capacity(batch.len());
        for (_, encoded) in batch {
            let start = st.size;
            for i in 0..encoded.len() {
                encode_entry(st, buf, encoded, i, &time);
            }
            ranges.push(start..st.size);
        }
        Ok(ranges)
    }

    /// Appends `buf` (whole lines already accounted in `st`) and syncs it.
    /// On failure the file is cut back and the state rewound by a re-read.
    fn write_entries(&self, st: &mut State, buf: &[u8]) -> Result<(), AuditError> {
        let sync = self.options.sync_batches;
        let result =
            st.entries
                .write_all(buf)
                .and_then(|()| if sync { st.entries.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                st.offset += u64::try_from(buf.len()).unwrap_or(u64::MAX);
                Ok(())
            }
            Err(e) => {
                // Best effort: drop what may have been written, and forget
                // the entries encoded into the state.
                let _ = st
                    .entries
                    .set_len(st.offset)
                    .and_then(|()| st.entries.sync_all());
                let (offset, checkpointed) = (st.offset, st.checkpointed);
                st.offset = 0;
                st.size = 0;
                st.frontier = Frontier::new();
                st.last = NO_PREV;
                st.checkpointed = 0;
                let _ = self.reread_to(st, offset, checkpointed);
                Err(self.io_err(ENTRIES_FILE)(e))
            }
        }
    }

    /// Rebuilds the entry state from the start of the file up to `offset`.
    fn reread_to(&self, st: &mut State, offset: u64, checkpointed: u64) -> Result<(), AuditError> {
        let mut reader = LineReader::new(
            ReadAt {
                file: &st.entries,
                pos: 0,
            },
            0,
        );
        let mut frontier = Frontier::new();
        let (mut size, mut last, mut end) = (0, NO_PREV, 0);
        while let Some(line) = reader.next_line().map_err(self.io_err(ENTRIES_FILE))? {
            if !line.terminated || line.offset >= offset {
                break;
            }
            last = leaf_hash(line.bytes);
            frontier.push(last);
            size += 1;
            end = line.offset + u64::try_from(line.bytes.len()).unwrap_or(0) + 1;
        }
        st.frontier = frontier;
        st.size = size;
        st.last = last;
        st.offset = end;
        st.checkpointed = checkpointed;
        Ok(())
    }

    /// Signs and appends a checkpoint of the current state.
    ///
    /// The entries it signs are synced first (this or another process may
    /// have written them without syncing), so a checkpoint never reaches
    /// the disk before its entries. The checkpoint line itself is not
    /// synced: if a power loss takes it, the entries are there and the
    /// next open signs them again, and since Ed25519 signatures are
    /// deterministic, the same size gives the same note, so a copy a
    /// witness already holds stays valid.
    fn write_checkpoint(&self, st: &mut State) -> Result<SignedCheckpoint, AuditError> {
        st.entries.sync_data().map_err(self.io_err(ENTRIES_FILE))?;
        let last = (st.size > 0).then_some(&st.last);
        let checkpoint = Checkpoint::new(self.key.name(), st.size, st.frontier.root(), last);
        let note = self.key.signer().sign(&checkpoint.body())?;
        let resume = Resume {
            offset: st.offset,
            frontier: st
                .frontier
                .nodes()
                .iter()
                .map(|h| crate::hex::encode(h))
                .collect(),
        };
        let mut line = serde_json::to_vec(&CheckpointLine {
            note: note.clone(),
            resume: Some(resume),
        })
        .map_err(|e| AuditError::Damaged {
            path: self.path(CHECKPOINTS_FILE),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        if let Err(e) = st.checkpoints.write_all(&line) {
            let _ = st.checkpoints.set_len(st.cp_offset);
            return Err(self.io_err(CHECKPOINTS_FILE)(e));
        }
        st.cp_offset += u64::try_from(line.len()).unwrap_or(u64::MAX);
        st.checkpointed = st.size;
        st.last_note = Some(note.clone());
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// Reads what other processes appended since this one last looked,
    /// cutting torn tails (the flock must be held).
    fn catch_up(&self, st: &mut State) -> Result<Option<Recovery>, AuditError> {
        let dropped_checkpoint_bytes = self.catch_up_checkpoints(st)?;
        let dropped_bytes = self.catch_up_entries(st)?;
        if st.size < st.checkpointed {
            return Err(AuditError::Damaged {
                path: self.path(ENTRIES_FILE),
                reason: format!(
                    "a checkpoint signs {} entries but only {} are left",
                    st.checkpointed, st.size
                ),
            });
        }
        Ok(
            (dropped_bytes > 0 || dropped_checkpoint_bytes > 0).then_some(Recovery {
                dropped_bytes,
                dropped_checkpoint_bytes,
                size: st.size,
            }),
        )
    }

    fn catch_up_checkpoints(&self, st: &mut State) -> Result<u64, AuditError> {
        let len = self.file_len(&st.checkpoints, st.cp_offset, CHECKPOINTS_FILE)?;
        if len == st.cp_offset {
            return Ok(0);
        }
        let mut reader = LineReader::new(
            ReadAt {
                file: &st.checkpoints,
                pos: st.cp_offset,
            },
            st.cp_offset,
        );
        let mut good_end = st.cp_offset;
        while let Some(line) = reader.next_line().map_err(self.io_err(CHECKPOINTS_FILE))? {
            let Some(parsed) = line
                .terminated
                .then(|| serde_json::from_slice::<CheckpointLine>(line.bytes).ok())
                .flatten()
            else {
                break;
            };
            good_end = line.offset + u64::try_from(line.bytes.len()).unwrap_or(0) + 1;
            // A well-framed line that is not a checkpoint is left for the
            // verifier to report; it does not move the checkpointed size.
            let cp = crate::note::parse(&parsed.note)
                .ok()
                .and_then(|(text, _)| Checkpoint::parse(&text).ok());
            if let Some(cp) = cp {
                st.checkpointed = st.checkpointed.max(cp.size);
                st.last_note = Some(parsed.note);
            }
        }
        st.cp_offset = good_end;
        self.cut(&st.checkpoints, good_end, len, CHECKPOINTS_FILE)
    }

    fn catch_up_entries(&self, st: &mut State) -> Result<u64, AuditError> {
        let len = self.file_len(&st.entries, st.offset, ENTRIES_FILE)?;
        if len == st.offset {
            return Ok(0);
        }
        let mut reader = LineReader::new(
            ReadAt {
                file: &st.entries,
                pos: st.offset,
            },
            st.offset,
        );
        let mut good_end = st.offset;
        while let Some(line) = reader.next_line().map_err(self.io_err(ENTRIES_FILE))? {
            if !line.terminated {
                break;
            }
            // Checkpointed entries are known to be whole; later ones may be
            // the remains of a crashed write.
            if st.size >= st.checkpointed
                && !entry::parse_fields(line.bytes).is_ok_and(|f| f.index == st.size)
            {
                break;
            }
            let hash = leaf_hash(line.bytes);
            st.frontier.push(hash);
            st.last = hash;
            st.size += 1;
            good_end = line.offset + u64::try_from(line.bytes.len()).unwrap_or(0) + 1;
        }
        st.offset = good_end;
        self.cut(&st.entries, good_end, len, ENTRIES_FILE)
    }

    fn file_len(&self, file: &File, read: u64, name: &str) -> Result<u64, AuditError> {
        let len = file.metadata().map_err(self.io_err(name))?.len();
        if len < read {
            return Err(AuditError::Shrank {
                path: self.path(name),
                expected: read,
                found: len,
            });
        }
        Ok(len)
    }

    /// Cuts `file` from `good_end` to `len`, durably; returns the bytes cut.
    fn cut(&self, file: &File, good_end: u64, len: u64, name: &str) -> Result<u64, AuditError> {
        if good_end == len {
            return Ok(0);
        }
        file.set_len(good_end)
            .and_then(|()| file.sync_all())
            .map_err(self.io_err(name))?;
        Ok(len - good_end)
    }
}

/// Appends entry `i` of `encoded` with the log's fields to `buf` as a
/// line and advances the state.
fn encode_entry(st: &mut State, buf: &mut Vec<u8>, encoded: &Encoded, i: usize, time: &[u8]) {
    let start = buf.len();
    let prev = (st.size > 0).then_some(&st.last);
    encoded.write_line(i, buf, st.size, prev, time);
    let hash = leaf_hash(&buf[start..]);
    buf.push(b'\n');
    st.frontier.push(hash);
    st.last = hash;
    st.size += 1;
}
