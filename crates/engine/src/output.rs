//! Cutting a job's output stream into lines for the subscribers.
//!
//! Output arrives in arbitrary chunks. Complete lines are passed on at once;
//! a partial line is passed on (marked partial) when the job has been quiet
//! for a tick or the line grows past [`MAX_LINE`], so progress output such
//! as `Compiling...` shows up live instead of waiting for its newline.
//!
//! Each step's output is delivered on a thread of its own: the job thread
//! reads the sandbox and redacts, then hands the redacted chunks through a
//! bounded queue ([`handoff`]) to the step's output thread, which cuts them
//! into lines for the subscribers ([`Pieces::deliver`]). The two halves run
//! on two cores at once, so redaction does not add to the time a job's
//! output takes to reach its subscribers.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use crate::event::{Bus, Event, Line};

/// Longest line passed on in one piece.
pub const MAX_LINE: usize = 16 * 1024;

/// Redacted chunks that may wait for the output thread: enough to ride out
/// a slow subscriber for a moment, few enough to bound the memory a chatty
/// job can make the runner hold (about this many reads of the sandbox's
/// output, 4 MiB at most).
const QUEUE: usize = 16;

/// Capacity of a new chunk buffer: one read of the sandbox's output.
const CHUNK: usize = sandbox::READ_CHUNK;

/// What the job thread hands a step's output thread, in the order it
/// happened.
pub(crate) enum Piece {
    /// Output bytes, already redacted.
    Data(Vec<u8>),
    /// The job has been quiet: pass on a partial line and flush.
    Idle,
    /// No more output will be kept (its limit): pass on what is left as a
    /// whole line.
    End,
    /// An event that belongs between the output around it (e.g. a refused
    /// mask), so the subscribers see it there.
    Event(Event),
}

/// The job thread's end of a step's output queue.
pub(crate) struct Handoff {
    queue: SyncSender<Piece>,
    /// Buffers the output thread is done with, to be filled again.
    spare: Receiver<Vec<u8>>,
    /// A buffer that went unsent (the redactor held everything back).
    unsent: Option<Vec<u8>>,
}

/// The output thread's end of a step's output queue.
pub(crate) struct Pieces {
    queue: Receiver<Piece>,
    spare: Sender<Vec<u8>>,
}

/// A step's output queue: its job thread's end and its output thread's.
pub(crate) fn handoff() -> (Handoff, Pieces) {
    let (queue, pieces) = mpsc::sync_channel(QUEUE);
    let (give_back, spare) = mpsc::channel();
    (
        Handoff {
            queue,
            spare,
            unsent: None,
        },
        Pieces {
            queue: pieces,
            spare: give_back,
        },
    )
}

impl Handoff {
    /// An empty buffer to fill with redacted output; reused, so a step
    /// allocates only as many as are in flight at once.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.unsent
            .take()
            .or_else(|| self.spare.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// Hands `data` on (keeping the buffer for next time if it is empty).
    /// Blocks while the queue is full: a job cannot outrun its subscribers.
    pub fn data(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            self.unsent = Some(data);
        } else {
            self.send(Piece::Data(data));
        }
    }

    /// The job has been quiet.
    pub fn idle(&mut self) {
        self.send(Piece::Idle);
    }

    /// No more output will be kept.
    pub fn end(&mut self) {
        self.send(Piece::End);
    }

    /// Publishes `event` after the output handed on so far.
    pub fn event(&mut self, event: Event) {
        self.send(Piece::Event(event));
    }

    fn send(&mut self, piece: Piece) {
        // Fails only if the output thread is gone, which happens only if
        // it panicked; joining it at the end of the step reports that.
        let _ = self.queue.send(piece);
    }
}

impl Pieces {
    /// Cuts the pieces into lines and publishes them on `bus` as `job`'s,
    /// until the job thread hangs up (the step ended); then passes on what
    /// is left and flushes.
    pub fn deliver(self, job: &str, bus: &Bus<'_>) {
        let mut lines = Lines::default();
        let mut emit = |batch: &[Line<'_>]| bus.output(job, batch);
        for piece in self.queue {
            match piece {
                Piece::Data(mut data) => {
                    lines.push(&data, &mut emit);
                    data.clear();
                    // The job thread may have finished the step already.
                    let _ = self.spare.send(data);
                }
                Piece::Idle => {
                    lines.idle(&mut emit);
                    bus.flush();
                }
                Piece::End => lines.finish(&mut emit),
                Piece::Event(event) => bus.emit(event),
            }
        }
        lines.finish(&mut emit);
        bus.flush();
    }
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
