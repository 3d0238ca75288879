//! Cutting a job's output stream into lines for the subscribers.
//!
//! Output arrives in arbitrary chunks. Complete lines are passed on at once;
//! a partial line is passed on (marked partial) when the job has been quiet
//! for a tick or the line grows past [`MAX_LINE`], so progress output such
//! as `Compiling...` shows up live instead of waiting for its newline.

use crate::event::Line;

/// Longest line passed on in one piece.
pub const MAX_LINE: usize = 16 * 1024;

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
