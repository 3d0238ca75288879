//! Cutting a job's output stream into lines for the subscribers.
//!
//! Output arrives in arbitrary chunks. Complete lines are passed on at once;
//! a partial line is passed on (marked partial) when the job has been quiet
//! for a tick or the line grows past [`MAX_LINE`], so progress output such
//! as `Compiling...` shows up live instead of waiting for its newline.

/// Longest line passed on in one piece.
pub const MAX_LINE: usize = 16 * 1024;

/// Line assembler for one command's output.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Feeds bytes; calls `emit(line, partial)` for each line ready.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (line, rest) = data.split_at(nl);
            if self.buf.is_empty() {
                emit(strip_cr(line), false);
            } else {
                self.buf.extend_from_slice(line);
                emit(strip_cr(&self.buf), false);
                self.buf.clear();
            }
            data = rest.get(1..).unwrap_or_default();
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            emit(&self.buf, true);
            self.buf = rest;
        }
    }

    /// The job has been quiet: pass on a pending partial line.
    pub fn idle(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, true);
            self.buf.clear();
        }
    }

    /// The command ended: pass on what is left as a complete line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
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
        let mut emit = |l: &[u8], p: bool| out.push((String::from_utf8_lossy(l).into_owned(), p));
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
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = collect(&[&long], &[]);
        assert_eq!(got.len(), 3);
        assert!(got[0].1 && got[1].1 && !got[2].1);
        assert_eq!(got[2].0.len(), 5);
    }
}
