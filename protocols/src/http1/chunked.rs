//! The chunked transfer coding (RFC 9112 §7.1), decoded strictly and incrementally.
//!
//! Chunk sizes are hex digits only (no sign, no spaces; leading zeros as many as the line
//! limit allows, as nginx and hyper accept; a value past 60 bits is refused before it could
//! overflow), every line ends in CRLF (a bare CR or LF is an error), chunk extensions are
//! skipped up to a limit, and trailer fields are read up to a limit and ignored.

use super::Http1Error;

/// Longest chunk-size line (digits and extensions) accepted.
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Most trailer bytes accepted after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 8192;
/// Largest chunk size that can take one more hex digit without overflowing a u64.
const MAX_SIZE_BEFORE_DIGIT: u64 = u64::MAX >> 4;

/// Where the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: usize, value: u64 },
    /// Skipping a chunk extension until CR.
    Extension { size: u64 },
    /// Expecting LF after the size line's CR.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// Reading trailer lines after the last chunk; `line` bytes into the current one.
    Trailer { line: usize },
    /// Expecting LF after a trailer line's CR; `empty`: that line was empty (end of message).
    TrailerLf { empty: bool },
    /// The message body is complete.
    Done,
}

/// Incremental decoder of one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    line_bytes: usize,
    trailer_bytes: usize,
    body_bytes: u64,
    max_body: u64,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies longer than `max_body` bytes (413).
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            line_bytes: 0,
            trailer_bytes: 0,
            body_bytes: 0,
            max_body,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were
    /// consumed; stops at the end of the body (the rest of `input` belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Http1Error> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Size { digits, value } => {
                    self.line_bytes += 1;
                    if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                        return Err(Http1Error::BadRequest("chunk size line too long"));
                    }
                    if let Some(d) = hex(b) {
                        if value > MAX_SIZE_BEFORE_DIGIT {
                            return Err(Http1Error::BadRequest("chunk size too large"));
                        }
                        self.state = State::Size {
                            digits: digits + 1,
                            value: value << 4 | u64::from(d),
                        };
                    } else if digits == 0 {
                        return Err(Http1Error::BadRequest("chunk size missing"));
                    } else if b == b';' {
                        self.state = State::Extension { size: value };
                    } else if b == b'\r' {
                        self.state = State::SizeLf { size: value };
                    } else {
                        return Err(Http1Error::BadRequest("invalid chunk size"));
                    }
                    i += 1;
                }
                State::Extension { size } => {
                    self.line_bytes += 1;
                    if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                        return Err(Http1Error::BadRequest("chunk extension too long"));
                    }
                    match b {
                        b'\r' => self.state = State::SizeLf { size },
                        b'\n' => return Err(Http1Error::BadRequest("bare LF in chunk line")),
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(Http1Error::BadRequest("control byte in chunk extension")),
                    }
                    i += 1;
                }
                State::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(Http1Error::BadRequest("bare CR in chunk line"));
                    }
                    i += 1;
                    self.line_bytes = 0;
                    if size == 0 {
                        self.state = State::Trailer { line: 0 };
                    } else {
                        self.body_bytes = self.body_bytes.saturating_add(size);
                        if self.body_bytes > self.max_body {
                            return Err(Http1Error::BodyTooLarge);
                        }
                        self.state = State::Data { left: size };
                    }
                }
                State::Data { left } => {
                    let take = (left.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(Http1Error::BadRequest("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Http1Error::BadRequest("bare CR after chunk data"));
                    }
                    self.state = State::Size {
                        digits: 0,
                        value: 0,
                    };
                    i += 1;
                }
                State::Trailer { line } => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(Http1Error::HeadersTooLarge);
                    }
                    match b {
                        b'\r' => self.state = State::TrailerLf { empty: line == 0 },
                        b'\n' => return Err(Http1Error::BadRequest("bare LF in trailer")),
                        _ => self.state = State::Trailer { line: line + 1 },
                    }
                    i += 1;
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(Http1Error::BadRequest("bare CR in trailer"));
                    }
                    i += 1;
                    if empty {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    self.state = State::Trailer { line: 0 };
                }
            }
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize), Http1Error> {
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        assert!(d.is_done(), "not done after {input:?}");
        Ok((out, n))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (body, n) =
            decode_all(b"4;name=v\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(n, 39);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        for b in input.iter() {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"0123456789abcdefghij");
    }

    #[test]
    fn rejects_malformed_sizes_and_line_endings() {
        for bad in [
            &b"-1\r\n"[..],
            b"\r\n",
            b" 4\r\nWiki\r\n0\r\n\r\n",
            b"4 \r\nWiki\r\n0\r\n\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"0x4\r\nWiki\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\n\n",
            b"4;a\x01b\r\nWiki\r\n0\r\n\r\n",
        ] {
            let mut d = ChunkedDecoder::new(1 << 20);
            let r = d.decode(bad, &mut Vec::new());
            assert!(r.is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn leading_zeros_do_not_count_against_the_size() {
        let (body, _) =
            decode_all(b"00000000000000000004\r\nWiki\r\n000000000000000000\r\n\r\n").unwrap();
        assert_eq!(body, b"Wiki");
        // A value that would overflow is refused whatever the body limit.
        let mut d = ChunkedDecoder::new(u64::MAX);
        let r = d.decode(b"10000000000000000\r\n", &mut Vec::new());
        assert_eq!(r, Err(Http1Error::BadRequest("chunk size too large")));
        // Zeros without end hit the line limit.
        let zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES + 1];
        let r = ChunkedDecoder::new(1 << 20).decode(&zeros, &mut Vec::new());
        assert_eq!(r, Err(Http1Error::BadRequest("chunk size line too long")));
    }

    #[test]
    fn body_limit_is_checked_before_buffering() {
        let mut d = ChunkedDecoder::new(8);
        let r = d.decode(b"ffffff\r\n", &mut Vec::new());
        assert_eq!(r, Err(Http1Error::BodyTooLarge));
    }
}
