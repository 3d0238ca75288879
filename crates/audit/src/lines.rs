//! Reading a file line by line in large chunks, without a copy per line.

use std::io::{self, Read};

/// Size of the read buffer; a longer line makes it grow.
const CHUNK: usize = 1 << 20;

/// One line of a file.
pub(crate) struct Line<'a> {
    /// Byte offset of the line's first byte in the file.
    pub(crate) offset: u64,
    /// The line without its newline.
    pub(crate) bytes: &'a [u8],
    /// Whether a newline ended it (false only for a last, torn line).
    pub(crate) terminated: bool,
}

/// Splits what a reader yields into lines.
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    /// Lines of `inner`, whose first byte is at file offset `offset`.
    pub(crate) fn new(inner: R, offset: u64) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            offset,
            eof: false,
        }
    }

    /// The next line, or `None` at the end of the file.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let mut searched = self.start;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                let nl = searched + pos;
                let line_start = self.start;
                let offset = self.offset;
                self.start = nl + 1;
                self.offset += u64::try_from(nl + 1 - line_start).unwrap_or(u64::MAX);
                return Ok(Some(Line {
                    offset,
                    bytes: &self.buf[line_start..nl],
                    terminated: true,
                }));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let (line_start, offset) = (self.start, self.offset);
                self.offset += u64::try_from(self.end - self.start).unwrap_or(u64::MAX);
                self.start = self.end;
                return Ok(Some(Line {
                    offset,
                    bytes: &self.buf[line_start..self.end],
                    terminated: false,
                }));
            }
            // Move the partial line to the front, grow if it fills the
            // buffer, and read more.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            searched = self.end;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_reports_offsets() {
        let data = b"a\nbcd\n\nlast".to_vec();
        let mut r = LineReader::new(&data[..], 10);
        let mut got = Vec::new();
        while let Some(line) = r.next_line().expect("read") {
            got.push((line.offset, line.bytes.to_vec(), line.terminated));
        }
        assert_eq!(
            got,
            vec![
                (10, b"a".to_vec(), true),
                (12, b"bcd".to_vec(), true),
                (16, b"".to_vec(), true),
                (17, b"last".to_vec(), false),
            ]
        );
    }

    #[test]
    fn long_lines_grow_the_buffer() {
        let mut data = vec![b'x'; CHUNK * 3];
        data.push(b'\n');
        data.extend_from_slice(b"y\n");
        let mut r = LineReader::new(&data[..], 0);
        assert_eq!(
            r.next_line().expect("read").expect("line").bytes.len(),
            CHUNK * 3
        );
        assert_eq!(r.next_line().expect("read").expect("line").bytes, b"y");
        assert!(r.next_line().expect("read").is_none());
    }
}
