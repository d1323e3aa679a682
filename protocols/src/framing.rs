//! Framing for custom protocols over byte streams, sans-IO: a [`Decoder`] takes frames off
//! the front of the received bytes (or says the next one is [`Decode::Partial`]), an
//! [`Encoder`] appends one to the caller's buffer. Frames come out as [`Bytes`] split off the
//! receive buffer, without a copy.
//!
//! The framings users reach for: [`LengthPrefixed`] (a big-endian `u16` or `u32`, or a LEB128
//! varint, before each payload) and [`Lines`] (`\n`-terminated, a `\r` before it dropped), each
//! with a maximum frame size checked before anything is buffered for it. Run one on a socket
//! with `framed::Framed` (feature `engine`).
//!
//! ```
//! use bytes::BytesMut;
//! use coring_protocols::framing::{Decode, Decoder, Encoder, LengthPrefixed, Prefix};
//!
//! let mut codec = LengthPrefixed::new(Prefix::U32, 1 << 20);
//! let mut wire = Vec::new();
//! codec.encode(b"hello", &mut wire).unwrap();
//! let mut received = BytesMut::from(&wire[..3]); // the first three bytes only
//! assert_eq!(codec.decode(&mut received).unwrap(), Decode::Partial);
//! received.extend_from_slice(&wire[3..]);
//! assert_eq!(codec.decode(&mut received).unwrap(), Decode::Frame("hello".into()));
//! ```

use bytes::{Buf, Bytes, BytesMut};

/// What a decoder found at the front of the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<T> {
    /// One whole frame, taken off the buffer.
    Frame(T),
    /// Not yet a whole frame: receive more and call again (nothing was taken).
    Partial,
}

/// Why a stream's bytes cannot be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame longer than the codec's maximum was announced or is being received.
    #[error("frame of {len} bytes or more, over the limit of {max}")]
    TooLong {
        /// Its length, or how much of it has come so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A varint length prefix longer than 10 bytes, or over 64 bits.
    #[error("malformed varint length prefix")]
    BadVarint,
    /// A frame to send is longer than the prefix can say.
    #[error("frame of {len} bytes does not fit a {prefix:?} length prefix")]
    Unrepresentable {
        /// Its length.
        len: usize,
        /// The prefix.
        prefix: Prefix,
    },
    /// A line to send holds a line break.
    #[error("a line to send holds a line break")]
    LineBreakInLine,
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame ({0} bytes of it came)")]
    Truncated(usize),
    /// A whole frame whose payload a typed codec could not read (see `serialize`).
    #[error("frame payload: {0}")]
    Payload(String),
}

/// Takes frames off the front of received bytes.
pub trait Decoder {
    /// A decoded frame.
    type Item;
    /// The next frame at the front of `src`, taken off it; `Partial` leaves `src` as it was
    /// (the codec may remember how far it looked).
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decode<Self::Item>, FrameError>;
    /// The stream ended with `src` left over: a last frame, or `Truncated` if a partial one
    /// remains. By default, only an empty `src` ends cleanly.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.decode(src)? {
            Decode::Frame(item) => Ok(Some(item)),
            Decode::Partial if src.is_empty() => Ok(None),
            Decode::Partial => Err(FrameError::Truncated(src.len())),
        }
    }
}

/// Appends frames to the caller's buffer.
pub trait Encoder<I: ?Sized> {
    /// Appends `item`, framed, to `dst`.
    fn encode(&mut self, item: &I, dst: &mut Vec<u8>) -> Result<(), FrameError>;
}

/// How a [`LengthPrefixed`] frame gives its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Two bytes, big-endian.
    U16,
    /// Four bytes, big-endian.
    U32,
    /// LEB128: seven bits a byte, low first, the top bit set on all but the last (protobuf's).
    Varint,
}

/// Frames that start with their payload's length.
#[derive(Debug, Clone)]
pub struct LengthPrefixed {
    prefix: Prefix,
    max: usize,
}

impl LengthPrefixed {
    /// Frames with `prefix`, payloads of at most `max` bytes.
    pub fn new(prefix: Prefix, max: usize) -> LengthPrefixed {
        LengthPrefixed { prefix, max }
    }

    /// The length at the front of `src` and the prefix's size, if the prefix is whole.
    fn length(&self, src: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
        Ok(match self.prefix {
            Prefix::U16 => {
                (src.len() >= 2).then(|| (u64::from(u16::from_be_bytes([src[0], src[1]])), 2))
            }
            Prefix::U32 => (src.len() >= 4).then(|| {
                (
                    u64::from(u32::from_be_bytes([src[0], src[1], src[2], src[3]])),
                    4,
                )
            }),
            Prefix::Varint => {
                let mut value: u64 = 0;
                for (i, &b) in src.iter().enumerate().take(10) {
                    let bits = u64::from(b & 0x7f);
                    if i == 9 && b > 1 {
                        return Err(FrameError::BadVarint);
                    }
                    value |= bits << (7 * i);
                    if b & 0x80 == 0 {
                        return Ok(Some((value, i + 1)));
                    }
                }
                if src.len() >= 10 {
                    return Err(FrameError::BadVarint);
                }
                None
            }
        })
    }
}

impl Decoder for LengthPrefixed {
    type Item = Bytes;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Decode<Bytes>, FrameError> {
        let Some((len, head)) = self.length(src)? else {
            return Ok(Decode::Partial);
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        if src.len() - head < len {
            // Room for the rest of it, once: the reads that follow land in place.
            src.reserve(head + len - src.len());
            return Ok(Decode::Partial);
        }
        src.advance(head);
        Ok(Decode::Frame(src.split_to(len).freeze()))
    }
}

impl<I: AsRef<[u8]> + ?Sized> Encoder<I> for LengthPrefixed {
    fn encode(&mut self, item: &I, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        let payload = item.as_ref();
        let len = payload.len();
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        let unrepresentable = FrameError::Unrepresentable {
            len,
            prefix: self.prefix,
        };
        match self.prefix {
            Prefix::U16 => {
                let n = u16::try_from(len).map_err(|_| unrepresentable)?;
                dst.extend_from_slice(&n.to_be_bytes());
            }
            Prefix::U32 => {
                let n = u32::try_from(len).map_err(|_| unrepresentable)?;
                dst.extend_from_slice(&n.to_be_bytes());
            }
            Prefix::Varint => {
                let mut n = len as u64;
                loop {
                    let b = (n & 0x7f) as u8;
                    n >>= 7;
                    if n == 0 {
                        dst.push(b);
                        break;
                    }
                    dst.push(b | 0x80);
                }
            }
        }
        dst.extend_from_slice(payload);
        Ok(())
    }
}

/// Lines ending in `\n`; a `\r` before it is dropped too. Frames are the lines without their
/// ending; encoding appends `\r\n` or `\n` (as set).
#[derive(Debug, Clone)]
pub struct Lines {
    max: usize,
    crlf: bool,
    /// How far the last `Partial` looked: the next call searches only the new bytes.
    searched: usize,
}

impl Lines {
    /// Lines of at most `max` bytes (without their ending), sent ending in `\n`.
    pub fn new(max: usize) -> Lines {
        Lines {
            max,
            crlf: false,
            searched: 0,
        }
    }

    /// Lines sent ending in `\r\n` (RESP, SMTP, the PROXY protocol's first version).
    pub fn crlf(mut self) -> Lines {
        self.crlf = true;
        self
    }
}

impl Decoder for Lines {
    type Item = Bytes;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Decode<Bytes>, FrameError> {
        let from = self.searched.min(src.len());
        match src[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = from + i;
                let line_len = if end > 0 && src[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                if line_len > self.max {
                    return Err(FrameError::TooLong {
                        len: line_len,
                        max: self.max,
                    });
                }
                self.searched = 0;
                let mut line = src.split_to(end + 1);
                line.truncate(line_len);
                Ok(Decode::Frame(line.freeze()))
            }
            None => {
                // A `\r` may end the line once the `\n` comes: allowed one byte over.
                if src.len() > self.max + 1 {
                    return Err(FrameError::TooLong {
                        len: src.len(),
                        max: self.max,
                    });
                }
                self.searched = src.len();
                Ok(Decode::Partial)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Decode::Frame(line) => Ok(Some(line)),
            Decode::Partial if src.is_empty() => Ok(None),
            // A last line without its ending.
            Decode::Partial => {
                self.searched = 0;
                Ok(Some(src.split().freeze()))
            }
        }
    }
}

impl<I: AsRef<[u8]> + ?Sized> Encoder<I> for Lines {
    fn encode(&mut self, item: &I, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        let line = item.as_ref();
        if line.len() > self.max {
            return Err(FrameError::TooLong {
                len: line.len(),
                max: self.max,
            });
        }
        if line.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err(FrameError::LineBreakInLine);
        }
        dst.extend_from_slice(line);
        dst.extend_from_slice(if self.crlf { b"\r\n" } else { b"\n" });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every split of `wire` into two receives decodes to `frames`, leaving nothing behind.
    pub(crate) fn every_split<C>(codec: &C, wire: &[u8], frames: &[C::Item])
    where
        C: Decoder + Clone,
        C::Item: PartialEq + std::fmt::Debug,
    {
        for cut in 0..=wire.len() {
            let mut codec = codec.clone();
            let mut src = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            let mut fed = false;
            loop {
                match codec.decode(&mut src).unwrap() {
                    Decode::Frame(f) => got.push(f),
                    Decode::Partial if !fed => {
                        src.extend_from_slice(&wire[cut..]);
                        fed = true;
                    }
                    Decode::Partial => break,
                }
            }
            assert_eq!(got, frames, "cut at {cut}");
            assert!(src.is_empty(), "{} bytes left at cut {cut}", src.len());
        }
    }

    #[test]
    fn length_prefixes_round_trip_over_any_split() {
        for prefix in [Prefix::U16, Prefix::U32, Prefix::Varint] {
            let mut codec = LengthPrefixed::new(prefix, 1000);
            let frames: [&[u8]; 4] = [b"", b"a", &[7u8; 300], b"last"];
            let mut wire = Vec::new();
            for f in frames {
                codec.encode(f, &mut wire).unwrap();
            }
            every_split(&codec, &wire, &frames.map(Bytes::copy_from_slice));
        }
    }

    #[test]
    fn lengths_over_the_limit_are_refused_before_they_are_buffered() {
        let mut codec = LengthPrefixed::new(Prefix::U32, 16);
        let mut src = BytesMut::from(&[0, 0, 0, 17][..]);
        assert_eq!(
            codec.decode(&mut src),
            Err(FrameError::TooLong { len: 17, max: 16 })
        );
        assert_eq!(
            Encoder::<[u8]>::encode(&mut codec, &[0; 17], &mut Vec::new()),
            Err(FrameError::TooLong { len: 17, max: 16 })
        );
        let mut wide = LengthPrefixed::new(Prefix::U16, usize::MAX);
        assert!(matches!(
            Encoder::<[u8]>::encode(&mut wide, &vec![0; 70_000], &mut Vec::new()),
            Err(FrameError::Unrepresentable { .. })
        ));
        // A varint of eleven continuation bytes, or one past 64 bits.
        let mut varint = LengthPrefixed::new(Prefix::Varint, usize::MAX);
        let mut src = BytesMut::from(&[0xff; 11][..]);
        assert_eq!(varint.decode(&mut src), Err(FrameError::BadVarint));
        let mut src =
            BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..]);
        assert_eq!(varint.decode(&mut src), Err(FrameError::BadVarint));
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let mut codec = LengthPrefixed::new(Prefix::U16, 100);
        let mut src = BytesMut::from(&[0, 5, b'a'][..]);
        assert_eq!(codec.decode_eof(&mut src), Err(FrameError::Truncated(3)));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()), Ok(None));
    }

    #[test]
    fn lines_split_anywhere_and_drop_their_endings() {
        let codec = Lines::new(64);
        every_split(
            &codec,
            b"PING\r\n+PONG\n\r\nlast\n",
            &["PING", "+PONG", "", "last"].map(Bytes::from),
        );
        let mut codec = Lines::new(4);
        let mut src = BytesMut::from(&b"12345"[..]);
        // Four bytes and a `\r` may still be a line; a sixth byte cannot.
        assert_eq!(codec.decode(&mut src), Ok(Decode::Partial));
        src.extend_from_slice(b"6");
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::TooLong { .. })
        ));
        let mut out = Vec::new();
        Lines::new(10).crlf().encode("SET", &mut out).unwrap();
        assert_eq!(out, b"SET\r\n");
        assert_eq!(
            Lines::new(10).encode("a\nb", &mut out),
            Err(FrameError::LineBreakInLine)
        );
        let mut src = BytesMut::from(&b"tail"[..]);
        assert_eq!(Lines::new(10).decode_eof(&mut src), Ok(Some("tail".into())));
    }
}
