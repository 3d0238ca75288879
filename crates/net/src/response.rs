//! The response to a request sent on a connection the proxy may keep
//! ([`Persistent`](crate::http::Persistent)): where it ends, whether the
//! remote will take another request after it, and the head the job gets.
//!
//! A kept connection is only safe if the proxy and the remote agree on
//! where each response ends; otherwise the rest of one response would be
//! read as the start of the next (response splitting, RFC 9112 section
//! 11.2). So the framing rules are RFC 9112 section 6.3's, strictly: a
//! response with both `Transfer-Encoding` and `Content-Length`, or with
//! conflicting or invalid `Content-Length` values, is refused (502) and its
//! connection closed; a response framed by the close of the connection is
//! relayed as before, to the end, and the connection is not kept.
//!
//! Everything here is a pure function of the bytes received, so it can be
//! tested and fuzzed without sockets.

/// The largest response head read, in bytes (502 beyond).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The most header fields in a response head (502 beyond).
const MAX_HEADERS: usize = 256;

/// The longest chunk-size line or trailer section, in bytes.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// Response headers never given to the job as they came: the hop-by-hop
/// ones (the proxy writes its own `Connection: close`).
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection"];

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// No body: an answer to `HEAD`, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: see [`Chunks`].
    Chunked,
    /// Until the remote closes (the connection is not kept).
    UntilClose,
}

/// A complete response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    /// Length of the head in the buffer; the body follows.
    pub head_len: usize,
    pub body: Body,
    /// Whether the remote takes another request once this response ends:
    /// HTTP/1.1, no `Connection: close`, and a body with a known end.
    pub reusable: bool,
    /// The head to give the job: for an interim (1xx) response the head as
    /// received; otherwise without hop-by-hop headers (and those the
    /// `Connection` header names), with `Connection: close`.
    pub head: Vec<u8>,
}

impl Response {
    /// An interim response (1xx): the final one follows.
    pub(crate) fn interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Why a response cannot be relayed on a kept connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes or {MAX_HEADERS} header fields")]
    TooLarge,
    #[error("malformed response: {0}")]
    Malformed(String),
}

fn malformed(why: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(why.into())
}

/// Parses a response head from the start of `buf`; `None` while it is
/// incomplete. `head_request`: the request was `HEAD`.
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<Response>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(ResponseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
        Err(e) => return Err(malformed(e.to_string())),
    };
    if head_len > MAX_RESPONSE_HEAD {
        return Err(ResponseError::TooLarge);
    }
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Err(malformed("incomplete status line"));
    };
    if status == 101 {
        return Err(malformed(
            "101 Switching Protocols to a request without Upgrade",
        ));
    }
    let interim = (100..200).contains(&status);
    let mut listed: Vec<String> = Vec::new();
    let mut close = version == 0;
    let mut lengths: Option<u64> = None;
    let mut encodings: Option<String> = None;
    for h in res.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| malformed("non-UTF-8 framing header"));
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.unwrap_or_default().split(',') {
                let token = token.trim().to_ascii_lowercase();
                close |= token == "close";
                listed.push(token);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for item in value?.split(',') {
                let n = parse_length(item.trim())?;
                if lengths.is_some_and(|l| l != n) {
                    return Err(malformed("conflicting Content-Length values"));
                }
                lengths = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let all = encodings.get_or_insert_with(String::new);
            if !all.is_empty() {
                all.push(',');
            }
            all.push_str(&value?.to_ascii_lowercase());
        }
    }
    let body = if head_request || interim || status == 204 || status == 304 {
        Body::Empty
    } else if let Some(codings) = encodings {
        if lengths.is_some() {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        let last = codings.rsplit(',').next().unwrap_or_default().trim();
        if last == "chunked" {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else if let Some(n) = lengths {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let head = if interim {
        buf[..head_len].to_vec()
    } else {
        job_head(&buf[..head_len], res.headers, &listed)
    };
    Ok(Some(Response {
        status,
        head_len,
        body,
        reusable: !close && body != Body::UntilClose,
        head,
    }))
}

/// A `Content-Length` value: digits only, no sign, no overflow.
fn parse_length(text: &str) -> Result<u64, ResponseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("invalid Content-Length"));
    }
    text.parse()
        .map_err(|_| malformed("Content-Length out of range"))
}

/// The final response's head for the job.
fn job_head(raw: &[u8], headers: &[httparse::Header<'_>], listed: &[String]) -> Vec<u8> {
    let status_line = raw
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw, |end| &raw[..=end]);
    let mut out = Vec::with_capacity(raw.len() + 19);
    out.extend_from_slice(status_line);
    for h in headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) || listed.contains(&name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// Where a chunked body ends (RFC 9112 section 7.1), fed as it arrives.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    state: ChunkState,
    /// Bytes of the current chunk-size line, or of the trailers so far.
    line: usize,
}

/// Where in a chunk-size line (`1f`, optional whitespace, `;ext...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    Digits,
    Space,
    Extension,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At the start of a chunk-size line.
    #[default]
    SizeStart,
    /// In a chunk-size line: the size so far, and where in the line.
    Size {
        size: u64,
        part: SizePart,
    },
    /// The line's CR was read; LF next.
    SizeLf {
        size: u64,
    },
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CR after chunk data, then its LF.
    DataCr,
    DataLf,
    /// In the trailer section: `empty` when at the start of a line.
    Trailer {
        empty: bool,
    },
    /// The CR of a trailer line was read; LF next.
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl Chunks {
    /// Whether the body ended.
    pub(crate) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads `bytes`, which follow what was fed before; returns how many of
    /// them belong to the body (all of them unless it ended inside).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, ResponseError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    i += take;
                    let left = left.saturating_sub(u64::try_from(take).unwrap_or(left));
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::SizeStart => {
                    self.line = 0;
                    ChunkState::Size {
                        size: u64::from(hex(b).ok_or_else(|| malformed("invalid chunk size"))?),
                        part: SizePart::Digits,
                    }
                }
                ChunkState::Size { size, part } => match (part, b) {
                    (_, b'\r') => ChunkState::SizeLf { size },
                    (_, b'\n') => return Err(malformed("chunk-size line without CRLF")),
                    (SizePart::Extension, _) | (_, b';') => ChunkState::Size {
                        size,
                        part: SizePart::Extension,
                    },
                    (SizePart::Digits | SizePart::Space, b' ' | b'\t') => ChunkState::Size {
                        size,
                        part: SizePart::Space,
                    },
                    (SizePart::Digits, _) => {
                        let digit = hex(b).ok_or_else(|| malformed("invalid chunk size"))?;
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or_else(|| malformed("chunk size out of range"))?;
                        ChunkState::Size { size, part }
                    }
                    (SizePart::Space, _) => return Err(malformed("invalid chunk size")),
                },
                ChunkState::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => {
                        self.line = 0;
                        ChunkState::Trailer { empty: true }
                    }
                    (b'\n', size) => ChunkState::Data(size),
                    _ => return Err(malformed("chunk-size line without CRLF")),
                },
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => ChunkState::SizeStart,
                ChunkState::DataCr | ChunkState::DataLf => {
                    return Err(malformed("chunk data without CRLF"))
                }
                ChunkState::Trailer { empty } => match b {
                    b'\r' => ChunkState::TrailerLf { empty },
                    _ => ChunkState::Trailer { empty: false },
                },
                ChunkState::TrailerLf { empty } => match (b, empty) {
                    (b'\n', true) => ChunkState::Done,
                    (b'\n', false) => ChunkState::Trailer { empty: true },
                    _ => return Err(malformed("trailer line without CRLF")),
                },
            };
            i += 1;
            self.line += 1;
            let limit = match self.state {
                ChunkState::Trailer { .. } | ChunkState::TrailerLf { .. } => MAX_TRAILERS,
                _ => MAX_CHUNK_LINE,
            };
            if self.line > limit {
                return Err(malformed("chunk-size line or trailers too long"));
            }
        }
        Ok(i)
    }
}

/// The value of a hexadecimal digit.
fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Response {
        match parse_response(head.as_bytes(), false) {
            Ok(Some(res)) => res,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn refused(head: &str) -> String {
        match parse_response(head.as_bytes(), false) {
            Err(e) => e.to_string(),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let res = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (res.status, res.body, res.reusable),
            (200, Body::Length(5), true)
        );
        assert_eq!(res.head_len, 38);
        let res = parse("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(res.body, Body::Length(7));
        let res = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((res.body, res.reusable), (Body::Chunked, true));
        let res = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((res.body, res.reusable), (Body::UntilClose, false));
        let res = parse("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((res.body, res.reusable), (Body::UntilClose, false));
        let res = parse("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert_eq!((res.body, res.reusable), (Body::Empty, true));
        let res = parse("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(res.body, Body::Empty);
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        let res = parse_response(head.as_bytes(), true)
            .expect("parses")
            .expect("complete");
        assert_eq!(res.body, Body::Empty);
        let res = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert_eq!((res.body, res.reusable), (Body::Length(1), false));
        let res = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!res.reusable);
        let res = parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        assert!(res.interim());
        assert_eq!(res.head, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            Ok(None)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (head, why) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "out of range",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                "both",
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
            ("HTTP/1.1 2x0 OK\r\n\r\n", "malformed"),
        ] {
            let error = refused(head);
            assert!(error.contains(why), "{head:?}: {error}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nA: {}", "x".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(
            parse_response(huge.as_bytes(), false),
            Err(ResponseError::TooLarge)
        );
    }

    #[test]
    fn the_job_gets_connection_close_and_no_hop_by_hop_headers() {
        let res = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: 1\r\nContent-Length: 2\r\nX-Kept: 2\r\n\r\nok",
        );
        assert_eq!(
            String::from_utf8_lossy(&res.head),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 2\r\nConnection: close\r\n\r\n"
        );
    }

    /// Feeds `body` in pieces of `step` bytes; returns how many bytes
    /// belonged to the body, or the error.
    fn chunked(body: &[u8], step: usize) -> Result<usize, ResponseError> {
        let mut chunks = Chunks::default();
        let mut used = 0;
        for piece in body.chunks(step) {
            let n = chunks.feed(piece)?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        assert!(
            chunks.done(),
            "{:?} in steps of {step}",
            String::from_utf8_lossy(body)
        );
        Ok(used)
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\nA;name=value\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..=body.len() {
            let mut next = body.to_vec();
            next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            assert_eq!(chunked(&next, step), Ok(body.len()), "step {step}");
        }
        assert_eq!(chunked(b"0\r\n\r\n", 2), Ok(5));
    }

    #[test]
    fn a_malformed_chunked_body_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\n",
            b"5\r\nhello\rX",
            b"0\r\nX-T: 1\rX",
            b"10000000000000000\r\n",
            b"5 6\r\n",
            b"5;a\nhello",
        ] {
            let mut chunks = Chunks::default();
            assert!(
                chunks.feed(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut chunks = Chunks::default();
        let long = format!("1;{}", "e".repeat(MAX_CHUNK_LINE));
        assert!(chunks.feed(long.as_bytes()).is_err());
        let mut chunks = Chunks::default();
        assert_eq!(chunks.feed(b"5\r\nhel"), Ok(6));
        assert!(!chunks.done());
    }
}
