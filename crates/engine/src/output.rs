//! Redacting a job's output stream and cutting it into lines for the
//! subscribers.
//!
//! Output arrives in arbitrary chunks. Complete lines are passed on at once;
//! a partial line is passed on (marked partial) when the job has been quiet
//! for a tick or the line grows past [`MAX_LINE`], so progress output such
//! as `Compiling...` shows up live instead of waiting for its newline.
//!
//! Each step's output is delivered on a thread of its own: the job thread
//! reads the sandbox and hands the raw chunks through a bounded queue
//! ([`handoff`]) to the step's output thread, which reads the job's mask
//! channel, redacts ([`Stream`]) and cuts the redacted bytes into lines for
//! the subscribers ([`Pieces::deliver`]). No subscriber sees a byte before
//! the redactor has.
//!
//! Why redaction is on the output thread and not the job thread: a chatty
//! job's own processes (writing into the pipe) and the job thread (reading
//! it) wait on each other and end up sharing a core, which they keep busy,
//! while the output thread has time to spare on another. Redacting on the
//! job thread made a job writing 1 GiB about 6% slower with secrets than
//! without on two cores; on the output thread, see BENCHMARKS.md,
//! "Redaction end to end".

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use redact::Redactor;
use zeroize::Zeroizing;

use crate::event::{Bus, Event, Line};
use crate::masks::Masks;

/// Longest line passed on in one piece.
pub const MAX_LINE: usize = 16 * 1024;

/// Chunks that may wait for the output thread: enough to ride out a slow
/// subscriber for a moment, few enough to bound the memory a chatty job
/// can make the runner hold (about this many reads of the sandbox's output,
/// 4 MiB at most).
const QUEUE: usize = 16;

/// Capacity of a new chunk buffer: one read of the sandbox's output.
const CHUNK: usize = sandbox::READ_CHUNK;

/// A chunk of the job's output as read, not yet redacted: zeroed when it
/// is dropped, as it may hold a secret.
type Raw = Zeroizing<Vec<u8>>;

/// What the job thread hands a step's output thread, in the order it
/// happened.
pub(crate) enum Piece {
    /// Output bytes, as the job wrote them.
    Data(Raw),
    /// The job has been quiet: release what can no longer start a secret,
    /// pass on a partial line and flush.
    Idle,
}

/// The job thread's end of a step's output queue.
pub(crate) struct Handoff {
    queue: SyncSender<Piece>,
    /// Buffers the output thread is done with, to be filled again.
    spare: Receiver<Raw>,
}

/// The output thread's end of a step's output queue.
pub(crate) struct Pieces {
    queue: Receiver<Piece>,
    spare: Sender<Raw>,
}

/// A step's output queue: its job thread's end and its output thread's.
pub(crate) fn handoff() -> (Handoff, Pieces) {
    let (queue, pieces) = mpsc::sync_channel(QUEUE);
    let (give_back, spare) = mpsc::channel();
    (
        Handoff { queue, spare },
        Pieces {
            queue: pieces,
            spare: give_back,
        },
    )
}

impl Handoff {
    /// Hands `data`'s buffer on as it is, leaving in its place one the
    /// output thread is done with (or a new one), so a step allocates only
    /// as many as are in flight at once and the bytes are not copied.
    /// Blocks while the queue is full: a job cannot outrun its subscribers.
    pub fn data(&mut self, data: &mut Raw) {
        if data.is_empty() {
            return;
        }
        let spare = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Zeroizing::new(Vec::with_capacity(CHUNK)));
        let full = std::mem::replace(data, spare);
        self.send(Piece::Data(full));
    }

    /// The job has been quiet.
    pub fn idle(&mut self) {
        self.send(Piece::Idle);
    }

    fn send(&mut self, piece: Piece) {
        // Fails only if the output thread is gone, which happens only if
        // it panicked; joining it at the end of the step reports that.
        let _ = self.queue.send(piece);
    }
}

impl Pieces {
    /// Redacts the pieces with `stream`, cuts them into lines and publishes
    /// them on `bus` as `job`'s, until the job thread hangs up (the step
    /// ended); then releases and passes on what is left, and flushes.
    ///
    /// The job's mask channel is read before each chunk is redacted: a
    /// value the job registered before it wrote that output is masked in
    /// it.
    pub fn deliver(self, job: &str, bus: &Bus<'_>, stream: &mut Stream, masks: &Masks) {
        let mut out = Delivery {
            job,
            bus,
            lines: Lines::default(),
        };
        for piece in self.queue {
            stream.sync(masks, &out);
            match piece {
                Piece::Data(mut data) => {
                    stream.data(&data, &mut out);
                    data.clear();
                    // The job thread may have finished the step already.
                    let _ = self.spare.send(data);
                }
                Piece::Idle => {
                    // Release only what can no longer start a secret, so
                    // live output does not stall and nothing leaks.
                    stream.release(false, &mut out);
                    out.idle();
                }
            }
        }
        stream.sync(masks, &out);
        stream.release(true, &mut out);
        out.end();
        bus.flush();
    }
}

/// Where a step's redacted output goes: its lines, to the bus.
struct Delivery<'a> {
    job: &'a str,
    bus: &'a Bus<'a>,
    lines: Lines,
}

impl Delivery<'_> {
    /// Passes on redacted bytes.
    fn push(&mut self, clean: &[u8]) {
        let (job, bus) = (self.job, self.bus);
        self.lines.push(clean, &mut |batch| bus.output(job, batch));
    }

    /// The job has been quiet: passes on a pending partial line, and
    /// flushes.
    fn idle(&mut self) {
        let (job, bus) = (self.job, self.bus);
        self.lines.idle(&mut |batch| bus.output(job, batch));
        bus.flush();
    }

    /// No more output will be kept (its limit, or the step's end): passes
    /// on what is left as a whole line.
    fn end(&mut self) {
        let (job, bus) = (self.job, self.bus);
        self.lines.finish(&mut |batch| bus.output(job, batch));
    }
}

/// A job's output stream on its way to the subscribers, over all its
/// steps: the redactor, and the limit on what is kept.
pub(crate) struct Stream {
    /// Masks every form of the job's secrets and registered values; `None`
    /// while there are none.
    redactor: Option<Redactor>,
    /// The generation of the masks the redactor has ([`Masks::take`]).
    generation: u64,
    /// Most output bytes kept ([`crate::job::JobContext::max_output`]).
    limit: u64,
    /// Output bytes kept so far.
    kept: u64,
    /// Output bytes dropped past the limit.
    dropped: u64,
    /// The redactor's output on idle ticks and at a step's end, reused.
    clean: Vec<u8>,
}

impl Stream {
    pub(crate) fn new(redactor: Option<Redactor>, limit: u64) -> Stream {
        Stream {
            redactor,
            generation: 0,
            limit,
            kept: 0,
            dropped: 0,
            clean: Vec::new(),
        }
    }

    /// Output bytes dropped past the limit so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reads the job's mask channel and brings the redactor up to date,
    /// publishing what registering values gave.
    fn sync(&mut self, masks: &Masks, out: &Delivery<'_>) {
        let current = masks.take();
        for e in current.events {
            out.bus.emit(e);
        }
        if current.generation != self.generation {
            self.generation = current.generation;
            if let Some(p) = current.patterns {
                match self.redactor.as_mut() {
                    Some(r) => r.set_patterns(p),
                    None => self.redactor = Some(Redactor::new(p)),
                }
            }
        }
    }

    /// Redacts the part of `d` within the limit and passes it on; the rest
    /// is counted and dropped. At the limit the redactor's held-back bytes
    /// are dropped too, never released: they may be the first bytes of a
    /// secret whose last ones the limit cut off.
    fn data(&mut self, d: &[u8], out: &mut Delivery<'_>) {
        let room = self.limit.saturating_sub(self.kept);
        let keep = usize::try_from(room).map_or(d.len(), |room| room.min(d.len()));
        let (kept, dropped) = d.split_at(keep);
        if !kept.is_empty() {
            self.kept += len64(kept.len());
            match self.redactor.as_mut() {
                // The redacted bytes go on where they are, uncopied.
                Some(r) => r.push_each(kept, &mut |piece| out.push(piece)),
                None => out.push(kept),
            }
        }
        if dropped.is_empty() {
            return;
        }
        if self.dropped == 0 {
            if let Some(r) = self.redactor.as_mut() {
                let mut held = Zeroizing::new(Vec::new());
                r.finish(&mut held);
            }
            out.end();
            out.bus.emit(Event::OutputLimited {
                job: out.job.into(),
                limit: self.limit,
            });
        }
        self.dropped += len64(dropped.len());
    }

    /// Releases what the redactor holds back that can no longer start a
    /// secret (an idle tick), or everything (`end`, a step's end).
    fn release(&mut self, end: bool, out: &mut Delivery<'_>) {
        if let Some(r) = self.redactor.as_mut() {
            if end {
                r.finish(&mut self.clean);
            } else {
                r.flush_safe(&mut self.clean);
            }
            out.push(&self.clean);
            self.clean.clear();
        }
    }
}

/// A length as a byte count.
fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Line assembler for one command's output.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

/// Most lines handed to `emit` in one batch.
const BATCH: usize = 256;

impl Lines {
    /// Feeds bytes; calls `emit` with each batch of lines ready, in order.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[Line<'_>])) {
        if !self.buf.is_empty() {
            // The line begun in an earlier chunk ends first.
            let Some(nl) = memchr::memchr(b'\n', data) else {
                self.buf.extend_from_slice(data);
                self.cut_long(emit);
                return;
            };
            self.buf
                .extend_from_slice(data.get(..nl).unwrap_or_default());
            emit(&[complete(&self.buf)]);
            self.buf.clear();
            data = data.get(nl + 1..).unwrap_or_default();
        }
        let mut batch = [Line::default(); BATCH];
        let mut ready = 0;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            if let Some(slot) = batch.get_mut(ready) {
                *slot = complete(data.get(start..nl).unwrap_or_default());
                ready += 1;
            }
            start = nl + 1;
            if ready == BATCH {
                emit(&batch);
                ready = 0;
            }
        }
        if let Some(lines) = batch.get(..ready).filter(|l| !l.is_empty()) {
            emit(lines);
        }
        self.buf
            .extend_from_slice(data.get(start..).unwrap_or_default());
        self.cut_long(emit);
    }

    /// Passes on the start of a pending line that grew past [`MAX_LINE`].
    fn cut_long(&mut self, emit: &mut dyn FnMut(&[Line<'_>])) {
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            emit(&[partial(&self.buf)]);
            self.buf = rest;
        }
    }

    /// The job has been quiet: pass on a pending partial line.
    pub fn idle(&mut self, emit: &mut dyn FnMut(&[Line<'_>])) {
        if !self.buf.is_empty() {
            emit(&[partial(&self.buf)]);
            self.buf.clear();
        }
    }

    /// The command ended: pass on what is left as a complete line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[Line<'_>])) {
        if !self.buf.is_empty() {
            emit(&[complete(&self.buf)]);
            self.buf.clear();
        }
    }
}

/// A line the job ended (a `\r` before its line break is dropped).
fn complete(text: &[u8]) -> Line<'_> {
    Line {
        text: strip_cr(text),
        partial: false,
    }
}

/// A line the job has not ended yet.
fn partial(text: &[u8]) -> Line<'_> {
    Line {
        text,
        partial: true,
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]], idle_after: &[usize]) -> Vec<(String, bool)> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut emit = |batch: &[Line<'_>]| {
            for l in batch {
                out.push((String::from_utf8_lossy(l.text).into_owned(), l.partial));
            }
        };
        for (i, c) in chunks.iter().enumerate() {
            lines.push(c, &mut emit);
            if idle_after.contains(&i) {
                lines.idle(&mut emit);
            }
        }
        lines.finish(&mut emit);
        out
    }

    #[test]
    fn joins_lines_split_across_chunks() {
        let got = collect(&[b"he", b"llo\nwor", b"ld\r\n", b"tail"], &[]);
        assert_eq!(
            got,
            [
                ("hello".into(), false),
                ("world".into(), false),
                ("tail".into(), false)
            ]
        );
    }

    #[test]
    fn idle_flushes_a_partial_line() {
        let got = collect(&[b"Compiling...", b" done\n"], &[0]);
        assert_eq!(
            got,
            [("Compiling...".into(), true), (" done".into(), false)]
        );
    }

    #[test]
    fn many_lines_keep_their_order_across_batches_and_chunks() {
        let text: String = (0..1000).map(|i| format!("line {i}\r\n")).collect();
        let want: Vec<(String, bool)> = (0..1000).map(|i| (format!("line {i}"), false)).collect();
        // Whole, and cut at odd places (inside lines and between \r and \n).
        for cut in [text.len(), 7, 100, 4099] {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(cut).collect();
            assert_eq!(collect(&chunks, &[]), want, "chunks of {cut}");
        }
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = collect(&[&long], &[]);
        assert_eq!(got.len(), 3);
        assert!(got[0].1 && got[1].1 && !got[2].1);
        assert_eq!(got[2].0.len(), 5);
    }
}
