//! The redactor of one output stream: bytes in, masked bytes out.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::patterns::Patterns;
use crate::scan::{len64, Scanner};
use crate::{RedactError, MASK};

/// Masks every form of every secret in one output stream (a job's stdout
/// or stderr), whatever the chunks it arrives in.
///
/// Feed it with [`push`](Redactor::push); call
/// [`flush_safe`](Redactor::flush_safe) when the stream has been idle for a
/// while, and [`finish`](Redactor::finish) when it ends. The output is
/// exactly what masking the whole stream at once would give: every
/// occurrence of every pattern found, overlapping and adjacent occurrences
/// merged, each merged run replaced by one [`MASK`].
///
/// The redactor holds back only bytes that could still be the start of an
/// occurrence: at most `patterns.longest() - 1` of them. It does no I/O and
/// allocates only to grow its small buffers and the caller's output.
pub struct Redactor {
    patterns: Arc<Patterns>,
    scanner: Scanner,
    /// Bytes pushed so far.
    pos: u64,
    /// Bytes accounted for in the output so far (written, or masked).
    released: u64,
    /// Bytes `released..pos`, held back.
    held: Zeroizing<Vec<u8>>,
    /// Ranges to mask, sorted, neither overlapping nor touching; the first
    /// may end at or before `released` (a later occurrence could still
    /// touch it and make one run with it).
    runs: VecDeque<(u64, u64)>,
    /// The mask of the first range has been written.
    mask_written: bool,
}

impl Redactor {
    /// A redactor for a new stream.
    pub fn new(patterns: Arc<Patterns>) -> Redactor {
        let scanner = Scanner::new(patterns.matcher(), 0);
        Redactor {
            patterns,
            scanner,
            pos: 0,
            released: 0,
            held: Zeroizing::new(Vec::new()),
            runs: VecDeque::new(),
            mask_written: false,
        }
    }

    /// The patterns in use.
    pub fn patterns(&self) -> &Arc<Patterns> {
        &self.patterns
    }

    /// How many bytes are held back right now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Feeds the next bytes of the stream, and appends to `out` everything
    /// that is now known to be safe, with every occurrence replaced by
    /// [`MASK`]. Only the bytes that could still begin an occurrence stay
    /// held back: the longest suffix of the stream, shorter than the
    /// longest pattern, that begins some pattern (usually nothing after a
    /// line break).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.push_each(input, &mut |piece| append(out, piece));
    }

    /// [`push`](Redactor::push), handing the safe bytes to `emit` in
    /// pieces instead of copying them into a buffer: slices of the bytes
    /// held back, of `input`, and [`MASK`], in order. Saves a copy of the
    /// stream when the caller can take the pieces where they are.
    pub fn push_each(&mut self, input: &[u8], emit: &mut impl FnMut(&[u8])) {
        if input.is_empty() {
            return;
        }
        let base = self.pos;
        let runs = &mut self.runs;
        self.scanner
            .scan(self.patterns.matcher(), input, &mut |s, e| {
                add_run(runs, s, e)
            });
        self.pos += len64(input.len());
        let safe = self.safe(input);
        self.release(input, base, safe, emit);
    }

    /// Releases the held-back bytes that cannot be part of an occurrence,
    /// whatever comes next (the bytes that do not begin a prefix of some
    /// pattern), masking the occurrences among them. It never lets a
    /// secret through, even one whose first bytes are already here and
    /// whose last bytes come later.
    ///
    /// [`push`](Redactor::push) already releases everything that is safe,
    /// so this releases nothing more; it is cheap, and the engine calls it
    /// when a stream has been idle, so that releasing on idle stays part of
    /// the contract whatever `push` holds back.
    ///
    /// There is deliberately no flush that releases everything in the
    /// middle of a stream: a secret whose first half was released that way
    /// would leak when its second half arrived.
    pub fn flush_safe(&mut self, out: &mut Vec<u8>) {
        let safe = self.safe(&[]);
        let base = self.pos;
        self.release(&[], base, safe, &mut |piece| append(out, piece));
    }

    /// Ends the stream: releases everything held back, masking the
    /// occurrences in it, and makes the redactor ready for a new stream
    /// with the same patterns.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let runs = &mut self.runs;
        self.scanner
            .finish(self.patterns.matcher(), &mut |s, e| add_run(runs, s, e));
        let end = self.pos;
        self.release(&[], end, end, &mut |piece| append(out, piece));
        self.runs.clear();
        self.mask_written = false;
        self.held.clear();
        self.pos = 0;
        self.released = 0;
        self.scanner = Scanner::new(self.patterns.matcher(), 0);
    }

    /// Adds values to mask from now on (a job registering a value while it
    /// runs). The bytes still held back are scanned again with the new
    /// patterns; bytes already released are not revisited. Fails, changing
    /// nothing, if a value is refused (see [`Patterns::new`]).
    pub fn add(&mut self, secrets: &[&[u8]]) -> Result<(), RedactError> {
        let patterns = self.patterns.with(secrets)?;
        self.set_patterns(Arc::new(patterns));
        Ok(())
    }

    /// Switches to another set of patterns (normally a superset of the
    /// current one, made with [`Patterns::with`] and shared by the job's
    /// streams). The bytes still held back are scanned again; bytes already
    /// released are not revisited.
    pub fn set_patterns(&mut self, patterns: Arc<Patterns>) {
        self.patterns = patterns;
        let mut scanner = Scanner::new(self.patterns.matcher(), self.released);
        let runs = &mut self.runs;
        scanner.scan(self.patterns.matcher(), &self.held, &mut |s, e| {
            add_run(runs, s, e);
        });
        self.scanner = scanner;
    }

    /// Where the bytes that can be released end: before the longest suffix
    /// of the stream, shorter than the longest pattern, that begins some
    /// pattern. `input` is what was just pushed (the held bytes are before
    /// it).
    fn safe(&self, input: &[u8]) -> u64 {
        let Some(m) = self.patterns.matcher() else {
            return self.pos;
        };
        let mut pending = self.scanner.depth(Some(m));
        if pending >= m.longest {
            // The suffix is a whole pattern, the longest one: it cannot grow,
            // but a shorter suffix of it may begin another pattern. Find the
            // longest such among the last `longest - 1` bytes (they all come
            // after `released`: no possible beginning is released).
            let want = (m.longest - 1).min(self.held.len() + input.len());
            let from_input = want.min(input.len());
            let from_held = want - from_input;
            let held = &self.held[self.held.len() - from_held..];
            let input = &input[input.len() - from_input..];
            pending = m.depth(m.state_after(&[held, input]));
        }
        self.pos - len64(pending)
    }

    /// Hands `emit` bytes `released..safe`, from `self.held` (which starts
    /// at `released`) and `chunk` (which starts at `chunk_base`, where the
    /// held bytes end), masked, and keeps the rest held back.
    fn release(&mut self, chunk: &[u8], chunk_base: u64, safe: u64, emit: &mut impl FnMut(&[u8])) {
        let held_base = self.released;
        let copy = |emit: &mut dyn FnMut(&[u8]), from: u64, to: u64| {
            let (from, to) = (offset(from, held_base), offset(to, held_base));
            let split = offset(chunk_base, held_base);
            if from < split {
                emit(&self.held[from..to.min(split)]);
            }
            if to > split {
                emit(&chunk[from.max(split) - split..to - split]);
            }
        };
        let mut at = self.released;
        while at < safe {
            match self.runs.front().copied() {
                Some((s, e)) if s <= at => {
                    if e <= at {
                        // Finished, and the next byte is not masked.
                        self.runs.pop_front();
                        self.mask_written = false;
                        continue;
                    }
                    if !self.mask_written {
                        emit(MASK);
                        self.mask_written = true;
                    }
                    at = e.min(safe);
                }
                Some((s, _)) => {
                    let to = s.min(safe);
                    copy(emit, at, to);
                    at = to;
                }
                None => {
                    copy(emit, at, safe);
                    at = safe;
                }
            }
        }
        // A run that starts where the released bytes end will be masked
        // whatever comes next: its mask can be written now, so that a
        // finished secret shows as masked without waiting for more output.
        if self.runs.front().is_some_and(|&(s, _)| s == at) && !self.mask_written {
            emit(MASK);
            self.mask_written = true;
        }
        // Keep `at..pos` held back.
        let keep = offset(at, held_base);
        let split = offset(chunk_base, held_base);
        if keep >= split {
            self.held.clear();
            self.held.extend_from_slice(&chunk[keep - split..]);
        } else {
            self.held.drain(..keep);
            append(&mut self.held, chunk);
        }
        self.released = at;
    }
}

/// Appends `src` to `out`, as `extend_from_slice` does, but in blocks of
/// 256 bytes.
///
/// `extend_from_slice` ends in `memcpy`, which copies large slices with
/// `rep movsb`; on the AMD EPYC machine of BENCHMARKS.md that runs at
/// 1.6-2 GB/s instead of 30 when the source and the destination are not
/// equally aligned (modulo 32). The redactor's output is usually that: the
/// held-back bytes go first and shift the chunk by a few bytes, which made
/// this copy cost more than finding the secrets (0.4-0.6 s per GiB). Fixed
/// blocks compile to vector loads and stores, at over 20 GB/s whatever the
/// alignment.
fn append(out: &mut Vec<u8>, src: &[u8]) {
    const BLOCK: usize = 256;
    out.reserve(src.len());
    let (blocks, rest) = src.as_chunks::<BLOCK>();
    for block in blocks {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(rest);
}

/// `pos - base` as an index into a buffer that holds both.
fn offset(pos: u64, base: u64) -> usize {
    usize::try_from(pos - base).expect("held and chunk bytes fit in memory")
}

/// Adds the range `s..e` to `runs`, merging it with the ranges it overlaps
/// or touches.
fn add_run(runs: &mut VecDeque<(u64, u64)>, mut s: u64, mut e: u64) {
    // Ranges come in the order of their ends, so the new one usually goes
    // last, or merges with the last.
    let first = runs.partition_point(|&(_, end)| end < s);
    let mut last = first;
    while let Some(&(rs, re)) = runs.get(last) {
        if rs > e {
            break;
        }
        s = s.min(rs);
        e = e.max(re);
        last += 1;
    }
    if last == first {
        runs.insert(first, (s, e));
    } else {
        runs[first] = (s, e);
        runs.drain(first + 1..last);
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns)
            .field("pos", &self.pos)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::append;

    #[test]
    fn append_copies_every_length_at_every_alignment() {
        let src: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
        for lead in [0, 1, 31, 32, 33] {
            for len in [0, 1, 255, 256, 257, 511, 512, 1000, 2000] {
                let mut out = vec![9u8; lead];
                append(&mut out, &src[..len]);
                assert_eq!(out.len(), lead + len);
                assert!(out[..lead].iter().all(|&b| b == 9));
                assert_eq!(&out[lead..], &src[..len], "lead {lead}, len {len}");
            }
        }
    }
}
